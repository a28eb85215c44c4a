%% @private
%% @doc Owner of the running transport, and the Erlang end of its events.
%%
%% It validates the configuration, starts the transport (keeping the guard
%% whose collection stops it), and turns the transport's events into what
%% applications see: `{nodeup, Node}' / `{nodedown, Node}' for
%% `monitor_nodes' subscribers, `on_up' / `on_down' callbacks, replies to
%% `sync_join', and `logger' events. It is not on the message path: the
%% transport delivers application messages itself.
%%
%% A `sync_join' waits here. On the overlays whose joins the contact
%% confirms (`full_mesh', `client_server': the full mesh's join check), it
%% is answered `ok' when the contact has confirmed this node's current
%% incarnation as a member (`joined'), even when the contact was up
%% already; on the `callback' overlay, when the contact is up (at once if
%% it is). When this node leaves or is removed while joins wait, it is a
%% new incarnation, which the removal does not cover: the waiting joins are
%% made again, so that a removal that was on its way when the user asked
%% to join does not undo the join. The user's own `weft:leave/0' goes
%% through here and answers the waiting joins `{error, left}' first, so
%% that it is not undone either.
%%
%% Events from the transport:
%% <ul>
%% <li>`{weft_nif, nodeup, Node}';</li>
%% <li>`{weft_nif, nodedown, Node, Reason}': `Reason' a term (an atom or a
%% tuple; older transports sent a string);</li>
%% <li>`{weft_nif, joined, Node}': `Node', a contact this node joined,
%% confirmed this node's current incarnation as a member; `sync_join'
%% waiters for `Node' get `ok';</li>
%% <li>`{weft_nif, this_node_left}': this node left the cluster or was
%% removed, and is a new incarnation: the waiting `sync_join's join
%% again;</li>
%% <li>`{weft_nif, refused, Node, Reason}': a dial to `Node' was refused;
%% `sync_join' waiters for `Node' get `{error, {refused, Reason}}' (but for
%% `left' on the overlays that confirm joins: this node's incarnation was
%% removed there, it leaves, and the join is made again, as for
%% `this_node_left');</li>
%% <li>`{weft_nif, log, Level, Text, Meta}';</li>
%% <li>`{weft_nif, membership, Event}' (the `callback' overlay): passed to
%% the `weft_membership' process.</li>
%% </ul>
%% The transport logs nodeup and nodedown itself; this process does not.
%% No call to the NIF may crash this process: each is guarded.
-module(weft_server).
-behaviour(gen_server).

-include_lib("kernel/include/logger.hrl").

-export([start_link/0, sync_join/3, leave/0, monitor_nodes/3, on_event/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-define(ATOM_ROOM_INTERVAL, 1000).

-record(state, {
    guard :: reference(),
    %% Each subscriber's monitor and its subscriptions: `plain' ({nodeup,
    %% Node}) and/or `reason' ({nodeup, Node, []}, with nodedown reasons).
    subscribers = #{} :: #{pid() => {reference(), [plain | reason]}},
    callbacks = [] :: [{up | down, node() | any, fun()}],
    %% Each waiting sync_join: the contact, the caller, its timer, and the
    %% spec to join again with if this node is removed meanwhile (`first':
    %% not joined again yet; `again': joined again once, see
    %% `this_node_left').
    waiters = [] :: [{node(), gen_server:from(), reference() | infinity, {map(), first | again}}],
    %% The `callback' overlay: the process running the protocol, and how to
    %% start it again.
    membership :: undefined | {pid(), {module(), term(), pos_integer()}},
    %% Whether the contact confirms joins (`joined' events): the full mesh
    %% and client-server overlays.
    confirms = false :: boolean()
}).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Join and wait until the spec's node has confirmed this node as a
%% member (or, on the `callback' overlay, is up).
-spec sync_join(map(), node(), timeout()) -> ok | {error, term()}.
sync_join(Spec, Node, Timeout) ->
    call({sync_join, Spec, Node, Timeout}).

%% @doc Leave the cluster (`weft:leave/0'): the waiting `sync_join's are
%% answered `{error, left}' first.
-spec leave() -> ok | {error, not_started}.
leave() ->
    call(leave).

%% @doc Subscribe `Pid' to (or unsubscribe it from) nodeup/nodedown
%% messages of one kind: `plain' or `reason' (with nodedown reasons).
-spec monitor_nodes(pid(), boolean(), plain | reason) -> ok | {error, not_started}.
monitor_nodes(Pid, Flag, Kind) ->
    call({monitor_nodes, Pid, Flag, Kind}).

%% @doc Register a callback for `up' or `down' of `Node' (or `any').
-spec on_event(up | down, node() | any, fun()) -> ok | {error, not_started}.
on_event(Kind, Node, Fun) ->
    call({on_event, Kind, Node, Fun}).

%% The server is not running, or stops (weft:stop/0) or is killed while
%% the call waits: `not_started', as for every other function of the API.
%% Any other exit (a fault of the server) is raised as it is. (The calls
%% wait without a time limit: `sync_join' keeps its own timer.)
call(Request) ->
    try
        gen_server:call(?MODULE, Request, infinity)
    catch
        exit:{Reason, {gen_server, call, _}} = Exit:Stack ->
            case gone(Reason) of
                true -> {error, not_started};
                false -> erlang:raise(exit, Exit, Stack)
            end
    end.

%% Exit reasons of a call whose server was not there or went away.
gone(noproc) -> true;
gone(normal) -> true;
gone(shutdown) -> true;
gone({shutdown, _}) -> true;
gone(killed) -> true;
gone({nodedown, _}) -> true;
gone(_) -> false.

%% gen_server

-spec init([]) -> {ok, #state{}} | {stop, term()}.
init([]) ->
    process_flag(trap_exit, true),
    case weft_config:from_env() of
        {ok, Opts} ->
            measure_atom_room(),
            %% (before the transport: a send that finds a queue full from
            %% its first moment waits on a waiting channel)
            weft_config:set_wait_timeouts(maps:get(wait_timeouts, Opts)),
            case start_transport(Opts) of
                {ok, Guard, Pollers} ->
                    remember_port(Opts),
                    [{ok, _} = weft_poller_sup:start_poller(P) || P <- Pollers],
                    case start_membership(Opts) of
                        {ok, Membership} ->
                            Overlay = maps:get(overlay, Opts),
                            weft_config:set_overlay(Overlay),
                            {ok, #state{guard = Guard, membership = Membership,
                                        confirms = confirms(Overlay)}};
                        {error, Reason} ->
                            nif(fun weft_nif:stop/0),
                            weft_config:set_wait_timeouts(#{}),
                            {stop, Reason}
                    end;
                {error, Reason} ->
                    weft_config:set_wait_timeouts(#{}),
                    {stop, Reason}
            end;
        {error, Reason} ->
            {stop, Reason}
    end.

%% A transport started again after a crash (of this process, or of the
%% poller supervisor) listens on the port the previous one had bound when
%% the configuration says "any port" (0): the other members still dial
%% that port, so the node is back in the cluster as soon as they redial,
%% instead of listening where nobody looks. If the port is still taken
%% after a second (by the previous transport, still closing), any port.
start_transport(Opts) ->
    Start = fun(O) -> nif(fun() -> weft_nif:start(O#{event_pid => self()}) end) end,
    case {Opts, weft_sup:previous_port()} of
        {#{listen := {Ip, 0}}, {ok, Port}} ->
            case start_on_port(Start, Opts#{listen := {Ip, Port}}, 10) of
                {ok, _, _} = Ok -> Ok;
                {error, _} -> Start(Opts)
            end;
        _ ->
            Start(Opts)
    end.

start_on_port(Start, Opts, Tries) ->
    case Start(Opts) of
        {error, {listen, _, eaddrinuse}} when Tries > 1 ->
            timer:sleep(100),
            start_on_port(Start, Opts, Tries - 1);
        Result ->
            Result
    end.

%% The `callback' overlay's protocol process.
start_membership(#{callback := {Module, Args}, gossip_interval := Interval}) ->
    case weft_membership:start_link(Module, Args, Interval) of
        {ok, Pid} -> {ok, {Pid, {Module, Args, Interval}}};
        {error, _} = Error -> Error
    end;
start_membership(_) ->
    {ok, undefined}.

%% Whether the overlay's contacts confirm joins: its membership runs the
%% full mesh's join check.
confirms(full_mesh) -> true;
confirms({client_server, _}) -> true;
confirms(_) -> false.

remember_port(#{listen := {_, 0}}) ->
    case nif(fun weft_nif:node_spec/0) of
        #{listen_addrs := [#{port := Port} | _]} -> weft_sup:remember_port(Port);
        _ -> ok
    end;
remember_port(_) ->
    ok.

-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, term(), #state{}} | {noreply, #state{}}.
handle_call({sync_join, Spec, Node, Timeout}, From, State) ->
    %% A contact that confirms joins is asked even when it is up: it may
    %% have removed this node, and the removal still be on its way here.
    Up = not State#state.confirms andalso
        case nif(fun weft_nif:nodes/0) of
            Nodes when is_list(Nodes) -> lists:member(Node, Nodes);
            _ -> false
        end,
    case Up of
        true ->
            {reply, ok, State};
        false ->
            case nif(fun() -> weft_nif:join(Spec) end) of
                ok ->
                    Timer = case Timeout of
                                infinity -> infinity;
                                _ -> erlang:start_timer(Timeout, self(), {sync_join, From})
                            end,
                    Waiter = {Node, From, Timer, {Spec, first}},
                    {noreply, State#state{waiters = [Waiter | State#state.waiters]}};
                {error, {nif_raised, _, _}} ->
                    {reply, {error, {bad_spec, Spec}}, State};
                Error ->
                    {reply, Error, State}
            end
    end;
handle_call(leave, _From, #state{waiters = Waiters} = State) ->
    %% The user's own leave: the joins that wait end here, and are not made
    %% again when the transport says this node left.
    answer(Waiters, {error, left}),
    {reply, nif(fun weft_nif:leave/0), State#state{waiters = []}};
handle_call({monitor_nodes, Pid, true, Kind}, _From, #state{subscribers = Subs} = State) ->
    Sub = case maps:find(Pid, Subs) of
              {ok, {Ref, Kinds}} -> {Ref, lists:usort([Kind | Kinds])};
              error -> {monitor(process, Pid), [Kind]}
          end,
    {reply, ok, State#state{subscribers = Subs#{Pid => Sub}}};
handle_call({monitor_nodes, Pid, false, Kind}, _From, #state{subscribers = Subs} = State) ->
    case maps:find(Pid, Subs) of
        {ok, {Ref, Kinds}} ->
            case Kinds -- [Kind] of
                [] ->
                    demonitor(Ref, [flush]),
                    {reply, ok, State#state{subscribers = maps:remove(Pid, Subs)}};
                Left ->
                    {reply, ok, State#state{subscribers = Subs#{Pid => {Ref, Left}}}}
            end;
        error ->
            {reply, ok, State}
    end;
handle_call({on_event, Kind, Node, Fun}, _From, #state{callbacks = Cbs} = State) ->
    {reply, ok, State#state{callbacks = Cbs ++ [{Kind, Node, Fun}]}};
handle_call(_Other, _From, State) ->
    {reply, {error, unknown_call}, State}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast(_Msg, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info({weft_nif, nodeup, Node}, #state{confirms = Confirms} = State) ->
    notify(up, Node, [], State),
    case Confirms of
        true -> {noreply, State};
        false -> {noreply, reply_waiters(Node, ok, State)}
    end;
handle_info({weft_nif, joined, Node}, State) ->
    {noreply, reply_waiters(Node, ok, State)};
handle_info({weft_nif, this_node_left}, #state{waiters = Waiters} = State) ->
    %% Removed (the user's own leave answered the waiters already): this
    %% node is a new incarnation, which the removal does not cover, and
    %% joins again for those who wait (once per contact). A call joins
    %% again once: the removal it was made for. Removed once more while it
    %% waits (the cluster keeps removing this node, or a contact that
    %% knows the cookie keeps answering a signed `left'), it is answered
    %% `{error, removed}', rather than looping.
    {Again, Removed} = lists:partition(fun({_, _, _, {_, W}}) -> W =:= first end, Waiters),
    answer(Removed, {error, removed}),
    Specs = maps:from_list([{Node, Spec} || {Node, _, _, {Spec, _}} <- Again]),
    [nif(fun() -> weft_nif:join(Spec) end) || Spec <- maps:values(Specs)],
    {noreply, State#state{waiters = [{N, F, T, {Spec, again}} || {N, F, T, {Spec, _}} <- Again]}};
handle_info({weft_nif, nodedown, Node, Reason}, State) ->
    %% The transport logs it; `Reason' is a term (a string from older ones).
    notify(down, Node, [{nodedown_reason, Reason}], State),
    {noreply, State};
handle_info({weft_nif, refused, _Node, unavailable}, State) ->
    %% The peer is stopping: a transient refusal, keep waiting.
    {noreply, State};
handle_info({weft_nif, refused, _Node, left}, #state{confirms = true} = State) ->
    %% The peer holds a tombstone of the incarnation that dialed it: this
    %% node was removed, and leaves (or has left) as a new incarnation;
    %% `this_node_left' makes the waiting joins again.
    {noreply, State};
handle_info({weft_nif, refused, Node, Reason}, State) ->
    {noreply, reply_waiters(Node, {error, {refused, Reason}}, State)};
handle_info({weft_nif, log, Level, Text, Meta}, State) ->
    log(Level, Text, Meta),
    {noreply, State};
handle_info({timeout, Timer, {sync_join, From}}, State) ->
    case lists:keytake(Timer, 3, State#state.waiters) of
        {value, _, Rest} ->
            gen_server:reply(From, {error, timeout}),
            {noreply, State#state{waiters = Rest}};
        false ->
            {noreply, State}
    end;
handle_info({weft_nif, membership, _} = Event, #state{membership = {Pid, _}} = State) ->
    Pid ! Event,
    {noreply, State};
handle_info({'EXIT', Pid, Reason}, #state{membership = {Pid, {M, A, I} = How}} = State) ->
    %% (callbacks are caught: this is a fault of weft_membership itself)
    ?LOG_ERROR("weft: membership process of ~p ended (~tp); starting it again", [M, Reason],
               #{weft => true}),
    case weft_membership:start_link(M, A, I) of
        {ok, New} -> {noreply, State#state{membership = {New, How}}};
        {error, Why} -> {stop, Why, State}
    end;
handle_info({'DOWN', _Ref, process, Pid, _}, #state{subscribers = Subs} = State) ->
    {noreply, State#state{subscribers = maps:remove(Pid, Subs)}};
handle_info(atom_room, State) ->
    measure_atom_room(),
    {noreply, State};
handle_info(_Other, State) ->
    {noreply, State}.

%% Tell the NIF how many atoms received messages may still create (see
%% weft_nif:atom_room/2), now and then every ?ATOM_ROOM_INTERVAL ms. The
%% reserve (a twentieth of the table, at least 1,000 entries) is left for
%% the node's own code. The mark comes first: decodes that finish while
%% the table is counted keep the room they took.
measure_atom_room() ->
    Limit = erlang:system_info(atom_limit),
    Reserve = max(Limit div 20, 1000),
    _ = nif(fun() ->
                    Mark = weft_nif:atom_room_mark(),
                    Free = Limit - erlang:system_info(atom_count) - Reserve,
                    weft_nif:atom_room(Free, Mark)
            end),
    erlang:send_after(?ATOM_ROOM_INTERVAL, self(), atom_room),
    ok.

log(Level, Text, Meta) ->
    case lists:member(Level, [emergency, alert, critical, error, warning, notice, info, debug])
        andalso is_map(Meta) of
        %% The text names the peer and lane too: the default formatter
        %% does not print metadata.
        true -> ?LOG(Level, "weft: ~ts~ts", [where(Meta), Text], Meta#{weft => true});
        false -> ?LOG_WARNING("weft: ~tp", [{Level, Text, Meta}], #{weft => true})
    end.

logs_while_stopping() ->
    receive
        {weft_nif, log, Level, Text, Meta} ->
            log(Level, Text, Meta),
            logs_while_stopping()
    after 0 ->
            ok
    end.

where(#{peer := Peer, channel := Ch, lane := Lane}) ->
    io_lib:format("~tp (~tp/~p): ", [Peer, Ch, Lane]);
where(#{peer := Peer}) ->
    io_lib:format("~tp: ", [Peer]);
where(_) ->
    "".

-spec terminate(term(), #state{}) -> ok.
terminate(_Reason, _State) ->
    %% Stopped pollers end their processes (normally: not restarted).
    nif(fun weft_nif:stop/0),
    %% What the transport said while it stopped (such as messages it could
    %% not write out in time) came after this process stopped reading.
    logs_while_stopping(),
    %% join/leave answer `not_started' again, not the static overlay's error
    weft_config:set_overlay(none),
    weft_config:set_wait_timeouts(#{}),
    ok.

%% A NIF call that cannot crash this process.
nif(F) ->
    try
        F()
    catch
        error:nif_not_loaded -> {error, not_started};
        error:undef -> {error, not_started};
        Class:Reason ->
            ?LOG_ERROR("weft: native call failed: ~p:~p", [Class, Reason], #{weft => true}),
            {error, {nif_raised, Class, Reason}}
    end.

%% Answer the sync_join waiters for `Node'.
reply_waiters(Node, Reply, State) ->
    {Ready, Waiting} = lists:partition(fun({N, _, _, _}) -> N =:= Node end, State#state.waiters),
    answer(Ready, Reply),
    State#state{waiters = Waiting}.

%% Answer these sync_join waiters `Reply', and cancel their timers.
answer(Waiters, Reply) ->
    [begin cancel(T), gen_server:reply(From, Reply) end || {_, From, T, _} <- Waiters],
    ok.

cancel(infinity) -> ok;
cancel(Timer) -> erlang:cancel_timer(Timer, [{async, true}, {info, false}]).

notify(Kind, Node, Info, #state{subscribers = Subs, callbacks = Cbs}) ->
    Tag = case Kind of up -> nodeup; down -> nodedown end,
    [Pid ! case K of
               plain -> {Tag, Node};
               reason when Kind =:= up -> {nodeup, Node, []};
               reason -> {nodedown, Node, Info}
           end
     || {Pid, {_, Kinds}} <- maps:to_list(Subs), K <- Kinds],
    [run_callback(Fun, Node) || {K, N, Fun} <- Cbs, K =:= Kind, N =:= any orelse N =:= Node],
    ok.

%% Callbacks run in their own process: a crash there is logged, not fatal.
run_callback(Fun, Node) ->
    spawn(fun() ->
                  try
                      case erlang:fun_info(Fun, arity) of
                          {arity, 0} -> Fun();
                          {arity, 1} -> Fun(Node)
                      end
                  catch
                      Class:Reason:Stack ->
                          ?LOG_ERROR("weft: on_up/on_down callback for ~p failed: ~p:~p ~p",
                                     [Node, Class, Reason, Stack], #{weft => true})
                  end
          end).
