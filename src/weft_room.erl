%% @private Wakes the senders that wait for room in a full send queue
%% (channels with `overload => wait'; see {@link weft:forward/4}).
%%
%% A sender that found the queue for `Node' full registers here with the
%% size of its message and an alias (`erlang:monitor/3' with `{alias,
%% demonitor}'), and waits for `{Alias, room}'. This process then looks at
%% the queues (`weft_nif:queue_state/1', one call per destination with
%% senders waiting, however many there are) and wakes, per destination and
%% in a random order (see `pop_fitting/6'), senders while the next one
%% fits the room there is, counting each woken one's message as taken (a
%% message always fits an empty queue, as the transport counts). A woken
%% sender sends and says so (`sent/1'); until then its message counts as
%% taken here too. If another took the room first, it registers again.
%%
%% When nobody that was woken is still to send and some still wait, this
%% process asks the transport to tell it when there is room for the
%% smallest waiting message of each destination (`weft_nif:watch_room/2'):
%% the transport sends `{weft_nif, room}' from the thread that gave the
%% bytes back, so a sender goes on as soon as its room comes, without a
%% timer. Besides, while anyone waits, it looks every ?SAFETY_MS
%% milliseconds (a safety net: nothing is known to need it).
%%
%% A sender that gives up deactivates its alias, so a late wake-up never
%% reaches its mailbox, and says so here (its entry goes at once); one that
%% dies while it waits, or after it was woken and before it said it sent,
%% goes too (this process monitors it). With nothing waiting this process
%% does nothing.
-module(weft_room).
-behaviour(gen_server).

-export([start_link/0, wait/3, sent/1, cancel/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% Bytes a queued message's entry counts besides its body
%% (weft_transport::counters::PER_MESSAGE).
-define(PER_MESSAGE, 128).
-define(SAFETY_MS, 100).
%% Senders whose messages do not fit passed over per destination and pass.
-define(SKIPS, 8).

-type key() :: {float(), reference()}.

%% The senders waiting for room to one destination: in the order they are
%% to be tried (each a random key), and by size (the smallest first).
-record(dest, {order = gb_trees:empty() :: gb_trees:tree(key(), non_neg_integer()),
               sizes = gb_sets:empty() :: gb_sets:set({non_neg_integer(), reference()})}).

-record(state, {dests = #{} :: #{node() => #dest{}},
                %% each waiting sender: where it is, its message's size, and
                %% a monitor of it
                waiting = #{} :: #{reference() => {node(), key(), non_neg_integer(), reference()}},
                %% each woken sender that has not said it sent yet
                woken = #{} :: #{reference() => {node(), non_neg_integer(), reference()}},
                %% the bytes of those, per destination and in all
                pending = #{} :: #{node() => non_neg_integer()},
                pending_all = 0 :: non_neg_integer(),
                %% a `pass' message is on its way to this process
                pass_due = false :: boolean(),
                safety = false :: boolean()}).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Register the calling process, by `Alias' (a monitor of this
%% process made with `{alias, demonitor}'), as waiting for room for `Size'
%% bytes to `Node'.
-spec wait(reference(), node(), non_neg_integer()) -> ok.
wait(Alias, Node, Size) ->
    gen_server:cast(?MODULE, {wait, Alias, self(), Node, Size}).

%% @doc The sender woken by `Alias' has sent (or tried to: it registers
%% again if it did not fit).
-spec sent(reference()) -> ok.
sent(Alias) ->
    gen_server:cast(?MODULE, {sent, Alias}).

%% @doc `Alias' waits no more (and, if it was woken, sends nothing).
-spec cancel(reference()) -> ok.
cancel(Alias) ->
    gen_server:cast(?MODULE, {cancel, Alias}).

-spec init([]) -> {ok, #state{}}.
init([]) ->
    {ok, #state{}}.

-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, {error, unknown_call}, #state{}}.
handle_call(_Req, _From, S) ->
    {reply, {error, unknown_call}, S}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast({wait, Alias, Pid, Node, Size}, #state{dests = D, waiting = W} = S) ->
    Key = {rand:uniform(), Alias},
    Dest = add(Key, Size, maps:get(Node, D, #dest{})),
    Mon = erlang:monitor(process, Pid, [{tag, {'DOWN', Alias}}]),
    {noreply, pass_soon(S#state{dests = D#{Node => Dest}, waiting = W#{Alias => {Node, Key, Size, Mon}}})};
handle_cast({sent, Alias}, S) ->
    {noreply, done(Alias, S)};
handle_cast({cancel, Alias}, S) ->
    {noreply, done(Alias, forget(Alias, S))};
handle_cast(_Msg, S) ->
    {noreply, S}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info(pass, S) ->
    {noreply, pass(S#state{pass_due = false})};
handle_info({weft_nif, room}, S) ->
    {noreply, pass_soon(S)};
handle_info(safety, S) ->
    {noreply, pass(S#state{safety = false})};
handle_info({{'DOWN', Alias}, _Mon, process, _Pid, _Reason}, S) ->
    {noreply, done(Alias, forget(Alias, S))};
handle_info(_Msg, S) ->
    {noreply, S}.

%% Look once the messages already here are handled (a burst of
%% registrations costs one look).
pass_soon(#state{pass_due = true} = S) ->
    S;
pass_soon(S) ->
    self() ! pass,
    S#state{pass_due = true}.

%% A waiting sender that gave up or died: out of its destination's queue.
forget(Alias, #state{dests = D, waiting = W} = S) ->
    case maps:take(Alias, W) of
        {{Node, Key, Size, Mon}, W1} ->
            erlang:demonitor(Mon, [flush]),
            Dest = remove(Key, Size, maps:get(Node, D)),
            S#state{dests = put_dest(Node, Dest, D), waiting = W1};
        error ->
            S
    end.

%% A woken sender sent, gave up or died: its message counts no more, and
%% the others may fit now.
done(Alias, #state{woken = Wk, pending = P, pending_all = All} = S) ->
    case maps:take(Alias, Wk) of
        {{Node, N, Mon}, Wk1} ->
            erlang:demonitor(Mon, [flush]),
            Left = maps:get(Node, P) - N,
            P1 = case Left of 0 -> maps:remove(Node, P); _ -> P#{Node := Left} end,
            pass_soon(S#state{woken = Wk1, pending = P1, pending_all = All - N});
        error ->
            S
    end.

add(Key = {_, Alias}, Size, #dest{order = O, sizes = Z}) ->
    #dest{order = gb_trees:insert(Key, Size, O), sizes = gb_sets:add({Size, Alias}, Z)}.

remove(Key = {_, Alias}, Size, #dest{order = O, sizes = Z}) ->
    #dest{order = gb_trees:delete_any(Key, O), sizes = gb_sets:delete_any({Size, Alias}, Z)}.

put_dest(Node, #dest{order = O} = Dest, D) ->
    case gb_trees:is_empty(O) of
        true -> maps:remove(Node, D);
        false -> D#{Node => Dest}
    end.

%% Wake, per destination, the senders that fit now; the total bound's room
%% is shared by all destinations in one pass. Then, if nobody woken is
%% still to send, ask the transport to say when there is room for those
%% still waiting; and look again in ?SAFETY_MS anyway.
pass(#state{dests = D} = S0) ->
    S = maps:fold(fun wake_node/3, S0, D),
    safety(watch(S)).

wake_node(Node, Dest, #state{dests = D, pending = P, pending_all = All} = S) ->
    case weft_nif_state(Node) of
        {PQ, PL, TQ, TL} ->
            %% (bytes woken senders are still to send count as queued)
            Mine = maps:get(Node, P, 0),
            {Dest1, S1} = pop_fitting(Node, Dest, PQ + Mine, PL, TQ + All, TL, S),
            S1#state{dests = put_dest(Node, Dest1, D)};
        _ ->
            %% No route (their sends are dropped and counted) or weft not
            %% running (they get `not_started'): all go on.
            S1 = lists:foldl(fun({_, Alias}, Acc) -> woken(Alias, Acc) end,
                             S, gb_trees:keys(Dest#dest.order)),
            S1#state{dests = maps:remove(Node, D)}
    end.

%% Senders taken in a random order (each gets a random key when it
%% registers; the smallest key goes first) while the smallest waiting
%% message fits: the order in which senders to one destination go on is
%% not the order they came in, as the senders that Distributed Erlang
%% resumes when a busy connection drains race each other. (In the order
%% they came, two replicas that got the same requests in the same order
%% would answer them in the same order again: `bench/RESULTS.md',
%% 2026-12-07 19:37.) A sender whose message does not fit is passed over,
%% with a new key, so that it holds back nobody behind it; after ?SKIPS of
%% them the smallest message goes, so that a pass costs O((woken + ?SKIPS)
%% log n). A sender that registers again (another took the room first)
%% draws a new key too.
pop_fitting(Node, Dest, PQ, PL, TQ, TL, S) ->
    pop_fitting(Node, Dest, PQ, PL, TQ, TL, S, []).

pop_fitting(Node, #dest{order = O, sizes = Z} = Dest, PQ, PL, TQ, TL, S, Skipped) ->
    Smallest = case gb_sets:is_empty(Z) of
                   true -> none;
                   false -> gb_sets:smallest(Z)
               end,
    case Smallest of
        {Min, MinAlias} ->
            case fits(Min, PQ, PL, TQ, TL) of
                false ->
                    redraw(Node, Skipped, Dest, S);
                true when length(Skipped) >= ?SKIPS ->
                    #{MinAlias := {Node, MinKey, Min, _}} = S#state.waiting,
                    take(Node, MinKey, Min, Dest, PQ, PL, TQ, TL, S, Skipped);
                true ->
                    {Key, Size} = gb_trees:smallest(O),
                    case fits(Size, PQ, PL, TQ, TL) of
                        true -> take(Node, Key, Size, Dest, PQ, PL, TQ, TL, S, Skipped);
                        false -> pop_fitting(Node, remove(Key, Size, Dest), PQ, PL, TQ, TL, S,
                                             [{Key, Size} | Skipped])
                    end
            end;
        none ->
            redraw(Node, Skipped, Dest, S)
    end.

take(Node, {_, Alias} = Key, Size, Dest, PQ, PL, TQ, TL, S, Skipped) ->
    N = Size + ?PER_MESSAGE,
    pop_fitting(Node, remove(Key, Size, Dest), PQ + N, PL, TQ + N, TL, woken(Alias, S), Skipped).

fits(Size, PQ, PL, TQ, TL) ->
    N = Size + ?PER_MESSAGE,
    (PQ =:= 0 orelse PQ + N =< PL) andalso (TQ =:= 0 orelse TQ + N =< TL).

%% The senders passed over go back, each with a new key.
redraw(Node, Skipped, Dest, S) ->
    lists:foldl(fun({{_, Alias}, Size}, {DAcc, #state{waiting = W} = SAcc}) ->
                        Key = {rand:uniform(), Alias},
                        #{Alias := {Node, _, Size, Mon}} = W,
                        {add(Key, Size, DAcc), SAcc#state{waiting = W#{Alias := {Node, Key, Size, Mon}}}}
                end, {Dest, S}, Skipped).

%% Wake `Alias': its message counts as queued until it says it sent.
woken(Alias, #state{waiting = W, woken = Wk, pending = P, pending_all = All} = S) ->
    Alias ! {Alias, room},
    case maps:take(Alias, W) of
        {{Node, _, Size, Mon}, W1} ->
            N = Size + ?PER_MESSAGE,
            S#state{waiting = W1, woken = Wk#{Alias => {Node, N, Mon}},
                    pending = P#{Node => maps:get(Node, P, 0) + N}, pending_all = All + N};
        error ->
            S
    end.

%% With nobody woken still to send, the transport says when there is room
%% for each destination's smallest waiting message (or at once, if there
%% is room already). With senders woken, what they send or say comes first.
watch(#state{pending_all = 0, dests = D} = S) ->
    maps:fold(fun(Node, #dest{sizes = Z}, Acc) ->
                      {Min, _} = gb_sets:smallest(Z),
                      case weft_nif_watch(Node, Min) of
                          watched -> Acc;
                          _ -> pass_soon(Acc)
                      end
              end, S, D);
watch(S) ->
    S.

safety(#state{safety = true} = S) ->
    S;
safety(#state{dests = D} = S) when map_size(D) =:= 0 ->
    S;
safety(S) ->
    erlang:send_after(?SAFETY_MS, self(), safety),
    S#state{safety = true}.

weft_nif_state(Node) ->
    try
        weft_nif:queue_state(Node)
    catch
        error:nif_not_loaded -> {error, not_started};
        error:undef -> {error, not_started}
    end.

weft_nif_watch(Node, Size) ->
    try
        weft_nif:watch_room(Node, Size)
    catch
        error:nif_not_loaded -> {error, not_started};
        error:undef -> {error, not_started}
    end.
