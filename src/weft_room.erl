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
%% For each destination whose route has no woken sender still to send,
%% while some wait, this process asks the transport to tell it when there
%% is room for the smallest waiting message (`weft_nif:watch_room/2'): the
%% transport sends `{weft_nif, room}' from the thread that gave the bytes
%% back, so a sender goes on as soon as its room comes, without a timer.
%% (Destinations behind one route, a client's relayed ones, share its
%% bound and its count of woken senders' bytes.) While anyone waits, it
%% also looks every ?SAFETY_MS milliseconds, and a woken sender that has
%% not said it sent ?SAFETY_MS after it was woken (suspended, or starved
%% of CPU) counts no more from the next look on, so it holds back nobody
%% for long.
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
               sizes = gb_sets:empty() :: gb_sets:set({non_neg_integer(), reference()}),
               %% the peer whose route messages to it take, last seen
               via :: node() | binary() | undefined}).

-record(state, {dests = #{} :: #{node() => #dest{}},
                %% each waiting sender: where it is, its message's size, and
                %% a monitor of it
                waiting = #{} :: #{reference() => {node(), key(), non_neg_integer(), reference()}},
                %% each woken sender that has not said it sent yet: its
                %% route, message, monitor, and when it was woken
                woken = #{} :: #{reference() => {node() | binary(), non_neg_integer(), reference(), integer()}},
                %% the bytes of those, per route
                pending = #{} :: #{node() | binary() => non_neg_integer()},
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
done(Alias, #state{woken = Wk, pending = P} = S) ->
    case maps:take(Alias, Wk) of
        {{Via, N, Mon, _}, Wk1} ->
            erlang:demonitor(Mon, [flush]),
            Left = maps:get(Via, P) - N,
            P1 = case Left of 0 -> maps:remove(Via, P); _ -> P#{Via := Left} end,
            pass_soon(S#state{woken = Wk1, pending = P1});
        error ->
            S
    end.

%% Woken senders that have not said they sent for ?SAFETY_MS count no more
%% (forgotten: what they say later is ignored).
expire(#state{woken = Wk} = S) ->
    Old = erlang:monotonic_time(millisecond) - ?SAFETY_MS,
    maps:fold(fun(Alias, {_, _, _, At}, Acc) when At =< Old -> done(Alias, Acc);
                 (_, _, Acc) -> Acc
              end, S, Wk).

add(Key = {_, Alias}, Size, #dest{order = O, sizes = Z} = Dest) ->
    Dest#dest{order = gb_trees:insert(Key, Size, O), sizes = gb_sets:add({Size, Alias}, Z)}.

remove(Key = {_, Alias}, Size, #dest{order = O, sizes = Z} = Dest) ->
    Dest#dest{order = gb_trees:delete_any(Key, O), sizes = gb_sets:delete_any({Size, Alias}, Z)}.

put_dest(Node, #dest{order = O} = Dest, D) ->
    case gb_trees:is_empty(O) of
        true -> maps:remove(Node, D);
        false -> D#{Node => Dest}
    end.

%% Wake, per destination, the senders that fit now; the total bound's room
%% is shared by all destinations in one pass. Then ask the transport to
%% say when there is room for those still waiting (where no woken sender
%% is still to send); and look again in ?SAFETY_MS anyway.
pass(S0) ->
    #state{dests = D} = S1 = expire(S0),
    S = maps:fold(fun wake_node/3, S1, D),
    safety(watch(S)).

wake_node(Node, Dest, #state{pending = P} = S) ->
    case nif(fun() -> weft_nif:queue_state(Node) end) of
        {PQ, PL, TQ, TL, Via} ->
            %% (bytes woken senders are still to send count as queued)
            Mine = maps:get(Via, P, 0),
            {Dest1, S1} = pop_fitting(Node, Dest#dest{via = Via}, PQ + Mine, PL, TQ + all(P), TL, S),
            S1#state{dests = put_dest(Node, Dest1, S1#state.dests)};
        _ ->
            %% No route (their sends are dropped and counted) or weft not
            %% running (they get `not_started'): all go on.
            S1 = lists:foldl(fun({_, Alias}, Acc) -> woken(Alias, Node, Acc) end,
                             S, gb_trees:keys(Dest#dest.order)),
            S1#state{dests = maps:remove(Node, S1#state.dests)}
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

take(Node, {_, Alias} = Key, Size, #dest{via = Via} = Dest, PQ, PL, TQ, TL, S, Skipped) ->
    N = Size + ?PER_MESSAGE,
    pop_fitting(Node, remove(Key, Size, Dest), PQ + N, PL, TQ + N, TL, woken(Alias, Via, S), Skipped).

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

%% Wake `Alias': its message counts as queued on route `Via' until it says
%% it sent.
woken(Alias, Via, #state{waiting = W, woken = Wk, pending = P} = S) ->
    Alias ! {Alias, room},
    case maps:take(Alias, W) of
        {{_, _, Size, Mon}, W1} ->
            N = Size + ?PER_MESSAGE,
            At = erlang:monotonic_time(millisecond),
            S#state{waiting = W1, woken = Wk#{Alias => {Via, N, Mon, At}},
                    pending = P#{Via => maps:get(Via, P, 0) + N}};
        error ->
            S
    end.

%% The transport says when there is room for each destination's smallest
%% waiting message, for the destinations whose route has no woken sender
%% still to send (there, what they send or say comes first). If there is
%% room already, look again at once; but not while woken senders elsewhere
%% count in the total (the transport does not count them, and would say
%% so again and again): what they send or say comes first then too.
watch(#state{dests = D} = S) ->
    maps:fold(fun(Node, #dest{sizes = Z, via = Via}, #state{pending = P} = Acc) ->
                      case maps:is_key(Via, P) of
                          true ->
                              Acc;
                          false ->
                              {Min, _} = gb_sets:smallest(Z),
                              case nif(fun() -> weft_nif:watch_room(Node, Min) end) of
                                  watched -> Acc;
                                  fits when P =/= #{} -> fits_with_woken(Node, Min, all(P), Acc);
                                  _ -> pass_soon(Acc)
                              end
                      end
              end, S, D).

%% Room for `Min' to `Node' now, as the transport counts: look again
%% unless the woken senders' bytes take it.
fits_with_woken(Node, Min, All, S) ->
    case nif(fun() -> weft_nif:queue_state(Node) end) of
        {PQ, PL, TQ, TL, _} ->
            case fits(Min, PQ, PL, TQ + All, TL) of
                true -> pass_soon(S);
                false -> S
            end;
        _ ->
            pass_soon(S)
    end.

%% While senders wait or woken ones are still to send.
safety(#state{safety = true} = S) ->
    S;
safety(#state{dests = D, woken = Wk} = S) when map_size(D) =:= 0, map_size(Wk) =:= 0 ->
    S;
safety(S) ->
    erlang:send_after(?SAFETY_MS, self(), safety),
    S#state{safety = true}.

%% Bytes woken senders are still to send, over all routes.
all(Pending) ->
    lists:sum(maps:values(Pending)).

nif(F) ->
    try
        F()
    catch
        error:nif_not_loaded -> {error, not_started};
        error:undef -> {error, not_started}
    end.
