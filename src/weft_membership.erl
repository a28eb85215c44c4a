%% @doc A membership protocol written in Erlang: the behaviour, and the
%% process that runs it (the `{callback, Module, Args}' overlay).
%%
%% The protocol decides who the members are (the nodes this node keeps
%% connections to) and what to tell whom; weft does the rest, exactly as for
%% its built-in overlays: it dials the members and redials them while they
%% are down, keeps their lanes and heartbeats, tells the protocol when a
%% peer comes up or goes down, sends `nodeup'/`nodedown' to `monitor_nodes'
%% subscribers and runs `on_up'/`on_down' callbacks, and carries the
%% protocol's messages on the control channel (encoded with
%% `term_to_binary/1' and decoded with `binary_to_term/1': the sender passed
%% the cookie check, and is trusted as a distribution peer is). Keep them
%% small, a few KiB: one over 1 MiB encoded, or over the receiver's
%% `max_frame_size', is not sent (a warning says so). A node that refuses
%% this one for good (it runs another overlay, or does not take this node
%% as a member) is reported with `handle_down/2' and left out of the
%% members for 60 s whatever the callbacks return, so that the two do not
%% keep connecting and disconnecting.
%% Every node of a cluster runs the same overlay and, here, the same
%% protocol module: each message carries the module's name, and a node of
%% another overlay or module is refused (see the README's Overlays).
%%
%% == Callbacks ==
%%
%% Every callback but `init/1' returns `{ok, Members, Messages, State}':
%% <ul>
%% <li>`Members': the node specs (as {@link weft:join/1} takes them:
%% `#{name := Node, listen_addrs := [#{ip := Ip, port := Port}]}') this node
%% wants connections to, all of them each time. Nodes added are dialed;
%% nodes taken out are disconnected. This node's own spec is ignored. A
%% spec that is not valid is skipped, with a warning (at the 1st, 10th,
%% 100th, ... one, the spec cut short: a protocol may keep returning what
%% a peer sent it). Check what a peer sends before it becomes a member:
%% `weft_config:check_spec/1' is what {@link weft:join/1} checks.</li>
%% <li>`Messages': `[{Node, Msg}]', protocol messages to send. A message to
%% a node without a connection is dropped (send to members, or to the node
%% a message came from: its connection is up while it lasts).</li>
%% </ul>
%% <ul>
%% <li>`init(Args) -> {ok, State}': when weft starts; an error, anything
%% else, or taking more than 5 s makes `weft:start/1' fail with
%% `{error, {membership_init, Reason}}' (`Reason' `timeout' for the last).</li>
%% <li>`join(Spec, State)': a user called {@link weft:join/1} (or
%% `sync_join/2') with the spec of a node of the cluster to join.</li>
%% <li>`leave(State)': a user called {@link weft:leave/0}; weft has already
%% dropped every connection and started a new incarnation.</li>
%% <li>`periodic(State)': every `gossip_interval' milliseconds.</li>
%% <li>`handle_up(Node, Spec, State)': `Node' (described by `Spec', its
%% real description from the handshake) is up: a member it dialed, or a
%% node that dialed this one (admitted because it knows the cookie; its
%% connection lasts while that node keeps it).</li>
%% <li>`handle_down(Node, State)': `Node' went down.</li>
%% <li>`handle_message(From, Msg, State)': a protocol message from `From'.</li>
%% </ul>
%% A callback that raises, or returns something else, is logged as an
%% error and its call has no effect (the previous state is kept): a
%% protocol bug never takes weft down. Such errors are logged at the 1st,
%% 10th, 100th, ... time of each callback, with the count and the terms
%% cut short (a peer could make a protocol raise at every message).
%%
%% `weft_cyclon' is a complete protocol written with it (Cyclon's shuffle),
%% to read as an example.
-module(weft_membership).

-include_lib("kernel/include/logger.hrl").

-export([start_link/3, init/4]).

%% How long `init/1' may take before `weft:start/1' gives up on it.
-define(INIT_TIMEOUT, 5000).
%% The largest protocol message sent, encoded (bytes).
-define(MAX_MESSAGE, 1024 * 1024).

-type result(State) :: {ok, Members :: [weft:join_spec()], Messages :: [{node(), term()}], State}.
-export_type([result/1]).

-callback init(Args :: term()) -> {ok, State :: term()}.
-callback join(Spec :: map(), State) -> result(State).
-callback leave(State) -> result(State).
-callback periodic(State) -> result(State).
-callback handle_up(Node :: node(), Spec :: map(), State) -> result(State).
-callback handle_down(Node :: node(), State) -> result(State).
-callback handle_message(From :: node(), Msg :: term(), State) -> result(State).

%% The callbacks a module must export to be used as an overlay.
-define(CALLBACKS, [{init, 1}, {join, 2}, {leave, 1}, {periodic, 1}, {handle_up, 3},
                    {handle_down, 2}, {handle_message, 3}]).

-export([callbacks_exported/1]).

%% @private Whether `Module' exports every callback.
-spec callbacks_exported(module()) -> boolean().
callbacks_exported(Module) ->
    is_atom(Module)
        andalso code:ensure_loaded(Module) =:= {module, Module}
        andalso lists:all(fun({F, A}) -> erlang:function_exported(Module, F, A) end, ?CALLBACKS).

%% @private Start the process running `Module' (started and linked by
%% `weft_server'): `{ok, Pid}' once `Module:init(Args)' returned, or
%% `{error, {membership_init, Reason}}'.
-spec start_link(module(), term(), pos_integer()) -> {ok, pid()} | {error, term()}.
start_link(Module, Args, Interval) ->
    case proc_lib:start_link(?MODULE, init, [self(), Module, Args, Interval], ?INIT_TIMEOUT) of
        {error, timeout} -> {error, {membership_init, timeout}};
        Other -> Other
    end.

%% @private
init(Parent, Module, Args, Interval) ->
    Result = try Module:init(Args)
             catch Class:Reason -> {Class, Reason}
             end,
    case Result of
        {ok, State} ->
            proc_lib:init_ack(Parent, {ok, self()}),
            erlang:send_after(Interval, self(), periodic),
            loop(Module, State, Interval);
        Other ->
            proc_lib:init_ack(Parent, {error, {membership_init, Other}})
    end.

loop(Module, State, Interval) ->
    receive
        periodic ->
            erlang:send_after(Interval, self(), periodic),
            loop(Module, run(Module, periodic, [State], State), Interval);
        {weft_nif, membership, Event} ->
            loop(Module, event(Module, Event, State), Interval);
        _ ->
            loop(Module, State, Interval)
    end.

event(Module, {join, Spec}, State) ->
    run(Module, join, [Spec, State], State);
event(Module, leave, State) ->
    run(Module, leave, [State], State);
event(Module, {up, Node, Spec}, State) ->
    run(Module, handle_up, [Node, Spec, State], State);
event(Module, {down, Node}, State) ->
    run(Module, handle_down, [Node, State], State);
event(Module, {message, From, {term, Msg}}, State) ->
    %% Decoded by the transport, under the bounds of data messages: atoms
    %% (node names in a membership message are often new here) and external
    %% funs new to this node only while their tables have room.
    run(Module, handle_message, [From, Msg, State], State);
event(_Module, {message, From, {refused, Why, Size}}, State) ->
    %% At the 1st, 10th, 100th, ... such message: a peer sending them
    %% cannot flood the log.
    rarely(refused_messages, warning,
           "weft: ~p: membership message of ~p bytes ignored (~ts); ~p so far",
           [From, Size, bounded(Why)]),
    State;
event(_Module, _Other, State) ->
    State.

%%% Warnings a peer can cause again and again (a protocol that keeps a
%%% bad spec a peer sent, or raises on a message it does not expect) are
%%% logged at the 1st, 10th, 100th, ... time of each kind, with the count,
%%% and print the terms involved cut short (see bounded/1): no peer can
%%% flood the log, however often it tries or however large its terms.

%% One more `Kind': logged (`Format' given `Args' and the count so far)
%% if it is the 1st, 10th, 100th, ... of its kind.
rarely(Kind, Level, Format, Args) ->
    N = case get({weft_count, Kind}) of undefined -> 1; M -> M + 1 end,
    put({weft_count, Kind}, N),
    case is_power_of_ten(N) of
        true -> ?LOG(Level, Format, Args ++ [N], #{weft => true});
        false -> ok
    end.

is_power_of_ten(1) -> true;
is_power_of_ten(N) when N rem 10 =:= 0 -> is_power_of_ten(N div 10);
is_power_of_ten(_) -> false.

%% `Term' printed in a few hundred characters at most, whatever it holds:
%% at most 4 levels deep, 8 elements a level and 64 in all; binaries cut
%% at 32 bytes, integers past 2^64 not printed (their digits could take
%% megabytes, and time).
-define(PRINT_DEPTH, 4).
-define(PRINT_WIDTH, 8).
-define(PRINT_BUDGET, 64).
-define(PRINT_CHARS, 600).

bounded(Term) ->
    {Cut, _} = cut(Term, ?PRINT_DEPTH, ?PRINT_BUDGET),
    io_lib:format("~0tP", [Cut, 4 * ?PRINT_WIDTH], [{chars_limit, ?PRINT_CHARS}]).

%% An invalid member: its name if it has one that prints short, else the
%% whole of it, cut.
bounded_spec(#{name := Name}) when is_atom(Name) ->
    io_lib:format("~tp", [Name]);
bounded_spec(Spec) ->
    bounded(Spec).

cut(_, _, Budget) when Budget =< 0 ->
    {'...', 0};
cut(I, _, Budget) when is_integer(I), (I > 1 bsl 64 orelse I < -(1 bsl 64)) ->
    {'<big integer>', Budget - 1};
cut(B, _, Budget) when is_bitstring(B), bit_size(B) > 256 ->
    <<Head:32/binary, _/bitstring>> = B,
    {<<Head/binary, "...">>, Budget - 1};
cut(T, 0, Budget) when is_tuple(T), tuple_size(T) > 0; is_map(T), map_size(T) > 0;
                       is_list(T), T =/= [] ->
    {'...', Budget - 1};
cut(T, Depth, Budget) when is_tuple(T) ->
    Elements = [element(I, T) || I <- lists:seq(1, min(tuple_size(T), ?PRINT_WIDTH))],
    {Cut, B} = lists:mapfoldl(fun(E, B0) -> cut(E, Depth - 1, B0) end, Budget - 1, Elements),
    {list_to_tuple(more(Cut, tuple_size(T) > ?PRINT_WIDTH)), B};
cut(M, Depth, Budget) when is_map(M) ->
    Pairs = first_pairs(maps:next(maps:iterator(M)), ?PRINT_WIDTH),
    {Cut, B} = lists:mapfoldl(fun({K, V}, B0) ->
                                      {CK, B1} = cut(K, Depth - 1, B0),
                                      {CV, B2} = cut(V, Depth - 1, B1),
                                      {{CK, CV}, B2}
                              end, Budget - 1, Pairs),
    Map = maps:from_list(more(Cut, map_size(M) > ?PRINT_WIDTH, {'...', '...'})),
    {Map, B};
cut(L, Depth, Budget) when is_list(L) ->
    cut_list(L, ?PRINT_WIDTH, Depth - 1, Budget - 1);
cut(T, _, Budget) ->
    {T, Budget - 1}.

cut_list([], _, _, Budget) ->
    {[], Budget};
cut_list([_ | _], 0, _, Budget) ->
    {['...'], Budget};
cut_list([H | T], Width, Depth, Budget) ->
    {CH, B1} = cut(H, Depth, Budget),
    {CT, B2} = cut_list(T, Width - 1, Depth, B1),
    {[CH | CT], B2};
cut_list(Tail, _, Depth, Budget) ->
    cut(Tail, Depth, Budget).

first_pairs(none, _) -> [];
first_pairs(_, 0) -> [];
first_pairs({K, V, I}, N) -> [{K, V} | first_pairs(maps:next(I), N - 1)].

more(L, More) ->
    more(L, More, '...').

more(L, true, Mark) -> L ++ [Mark];
more(L, false, _) -> L.

%% Call back; carry out the result; the new state (the old one if the call
%% failed).
run(Module, Fun, Args, State) ->
    try apply(Module, Fun, Args) of
        {ok, Members, Messages, NewState} = Result ->
            case is_proper_list(Members) andalso is_proper_list(Messages) of
                true ->
                    decide(Module, Fun, Members, Messages),
                    NewState;
                false ->
                    bad_result(Module, Fun, Result),
                    State
            end;
        Other ->
            bad_result(Module, Fun, Other),
            State
    catch
        Class:Reason:Stack ->
            %% (a protocol that raises on what a peer sends would log it
            %% at every message, the message in the stack's arguments)
            rarely({failed, Fun}, error,
                   "weft: membership ~p:~p failed: ~p:~ts~n~ts; the call is ignored (~p such failures so far)",
                   [Module, Fun, Class, bounded(Reason), bounded(Stack)]),
            State
    end.

bad_result(Module, Fun, Result) ->
    rarely({bad_result, Fun}, error,
           "weft: membership ~p:~p returned ~ts, not {ok, Members, Messages, State} "
           "with two proper lists; ignored (~p such results so far)",
           [Module, Fun, bounded(Result)]).

is_proper_list(L) when is_list(L) ->
    try length(L) of _ -> true
    catch error:badarg -> false
    end;
is_proper_list(_) ->
    false.

decide(Module, Fun, Members, Messages) ->
    Checked = lists:filtermap(
                fun(Spec) ->
                        case weft_config:check_spec(Spec) of
                            {ok, C} -> {true, C};
                            self -> false;
                            {error, _} ->
                                %% (a protocol may keep a spec a peer sent it,
                                %% and return it at every call)
                                rarely(invalid_member, warning,
                                       "weft: membership ~p:~p named an invalid member ~ts; skipped "
                                       "(~p invalid members so far)",
                                       [Module, Fun, bounded_spec(Spec)]),
                                false
                        end
                end, Members),
    %% (the size is checked before anything is encoded)
    Encoded = [{Node, term_to_binary(Msg)} || {Node, Msg} <- Messages, is_atom(Node),
                                              weft_config:is_latin1(Node),
                                              erlang:external_size(Msg) =< ?MAX_MESSAGE],
    length(Encoded) =:= length(Messages)
        orelse rarely(bad_messages, warning,
                      "weft: membership ~p:~p sent messages that are not {Node, Msg} (Node an atom "
                      "in Latin-1) or are over ~p bytes encoded; skipped (~p times so far)",
                      [Module, Fun, ?MAX_MESSAGE]),
    try weft_nif:membership_decision(Checked, Encoded) of
        ok -> ok;
        Error -> rarely(decision_refused, error, "weft: membership decision refused: ~ts (~p times so far)",
                        [bounded(Error)])
    catch
        error:nif_not_loaded -> ok;
        error:undef -> ok
    end.
