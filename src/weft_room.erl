%% @private Wakes the senders that wait for room in a full send queue
%% (channels with `overload => wait'; see {@link weft:forward/4}).
%%
%% A sender that found the queue for `Node' full registers here with the
%% size of its message and an alias (`erlang:monitor/3' with `{alias,
%% demonitor}'), and waits for `{Alias, room}'. While any sender waits, this
%% process looks at the queues once a millisecond
%% (`weft_nif:queue_state/1': one call per destination, whatever the number
%% of senders) and wakes, per destination and in a random order (see
%% `pop_fitting/6'), senders while the next one fits the room there is,
%% counting each woken one's message as taken (a message always fits an
%% empty queue, as the transport counts). A woken sender then sends; if
%% another took the room first, it registers again. A sender that gives
%% up deactivates its alias, so a late wake-up never reaches its mailbox,
%% and says so here (its entry goes at once); one that dies while it
%% waits goes too (this process monitors it). With nothing waiting this
%% process does nothing.
-module(weft_room).
-behaviour(gen_server).

-export([start_link/0, wait/3, cancel/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% Bytes a queued message's entry counts besides its body
%% (weft_transport::counters::PER_MESSAGE).
-define(PER_MESSAGE, 128).
-define(TICK_MS, 1).
%% Senders whose messages do not fit passed over per destination and pass.
-define(SKIPS, 8).

-record(state, {waiting = #{} :: #{node() => gb_trees:tree({float(), reference()}, non_neg_integer())},
                %% each waiting sender: where it is, and a monitor of it
                %% (a sender that dies while it waits leaves no entry)
                index = #{} :: #{reference() => {node(), {float(), reference()}, reference()}},
                ticking = false :: boolean()}).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Register the calling process, by `Alias' (a monitor of this
%% process made with `{alias, demonitor}'), as waiting for room for `Size'
%% bytes to `Node'.
-spec wait(reference(), node(), non_neg_integer()) -> ok.
wait(Alias, Node, Size) ->
    gen_server:cast(?MODULE, {wait, Alias, self(), Node, Size}).

%% @doc `Alias' waits no more.
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
handle_cast({wait, Alias, Pid, Node, Size}, #state{waiting = W, index = I} = S) ->
    Key = {rand:uniform(), Alias},
    Q = gb_trees:insert(Key, Size, maps:get(Node, W, gb_trees:empty())),
    Mon = erlang:monitor(process, Pid, [{tag, {'DOWN', Alias}}]),
    {noreply, tick_soon(S#state{waiting = W#{Node => Q}, index = I#{Alias => {Node, Key, Mon}}})};
handle_cast({cancel, Alias}, S) ->
    {noreply, forget(Alias, S)};
handle_cast(_Msg, S) ->
    {noreply, S}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info(tick, S0) ->
    S = wake(S0#state{ticking = false}),
    {noreply, case map_size(S#state.waiting) of
                  0 -> S;
                  _ -> tick_soon(S)
              end};
handle_info({{'DOWN', Alias}, _Mon, process, _Pid, _Reason}, S) ->
    {noreply, forget(Alias, S)};
handle_info(_Msg, S) ->
    {noreply, S}.

%% A sender that gave up or died: out of its destination's tree.
forget(Alias, #state{waiting = W, index = I} = S) ->
    case maps:take(Alias, I) of
        {{Node, Key, Mon}, I1} ->
            erlang:demonitor(Mon, [flush]),
            Q = gb_trees:delete_any(Key, maps:get(Node, W, gb_trees:empty())),
            W1 = case gb_trees:is_empty(Q) of
                     true -> maps:remove(Node, W);
                     false -> W#{Node => Q}
                 end,
            S#state{waiting = W1, index = I1};
        error ->
            S
    end.

tick_soon(#state{ticking = true} = S) ->
    S;
tick_soon(S) ->
    erlang:send_after(?TICK_MS, self(), tick),
    S#state{ticking = true}.

%% Per destination, the senders that fit now; the total bound's room is
%% shared by all destinations in one pass.
wake(#state{waiting = W, index = I0} = S) ->
    {W1, I1, _} =
        maps:fold(fun(Node, Q, {Acc, I, Total}) ->
                          {Q1, I2, Total1} = wake_node(Node, Q, I, Total),
                          case gb_trees:is_empty(Q1) of
                              true -> {Acc, I2, Total1};
                              false -> {Acc#{Node => Q1}, I2, Total1}
                          end
                  end, {#{}, I0, undefined}, W),
    S#state{waiting = W1, index = I1}.

wake_node(Node, Q, I, Total) ->
    case weft_nif_state(Node) of
        {PQ, PL, TQ, TL} ->
            %% (the total as this pass has counted it so far)
            T = case Total of undefined -> TQ; _ -> max(Total, TQ) end,
            pop_fitting(Q, I, PQ, PL, T, TL);
        _ ->
            %% No route (their sends are dropped and counted) or weft not
            %% running (they get `not_started'): all go on.
            I1 = lists:foldl(fun({{_, Alias}, _}, Acc) -> woken(Alias, Acc) end, I, gb_trees:to_list(Q)),
            {gb_trees:empty(), I1, Total}
    end.

%% Senders taken in a random order (each gets a random key when it
%% registers; the smallest key goes first) while they fit: the order in
%% which senders to one destination go on is not the order they came in,
%% as the senders that Distributed Erlang resumes when a busy connection
%% drains race each other. (In the order they came, two replicas that got
%% the same requests in the same order would answer them in the same order
%% again: `bench/RESULTS.md', 2026-12-07 19:37.) A sender whose message
%% does not fit is passed over, with a new key, so that it holds back
%% nobody behind it; at most ?SKIPS of them per destination and pass, so
%% that a pass costs O((woken + ?SKIPS) log n). A sender that registers
%% again (another took the room first) draws a new key too.
pop_fitting(Q, I, PQ, PL, TQ, TL) ->
    pop_fitting(Q, I, PQ, PL, TQ, TL, []).

pop_fitting(Q, I, PQ, PL, TQ, TL, Skipped) ->
    case gb_trees:is_empty(Q) orelse length(Skipped) >= ?SKIPS of
        true ->
            redraw(Skipped, Q, I, TQ);
        false ->
            {{_, Alias} = Key, Size, Rest} = gb_trees:take_smallest(Q),
            N = Size + ?PER_MESSAGE,
            case (PQ =:= 0 orelse PQ + N =< PL) andalso (TQ =:= 0 orelse TQ + N =< TL) of
                true -> pop_fitting(Rest, woken(Alias, I), PQ + N, PL, TQ + N, TL, Skipped);
                false -> pop_fitting(Rest, I, PQ, PL, TQ, TL, [{Key, Size} | Skipped])
            end
    end.

%% The senders passed over go back, each with a new key.
redraw(Skipped, Q, I, TQ) ->
    lists:foldl(fun({{_, Alias}, Size}, {QAcc, IAcc, T}) ->
                        Key = {rand:uniform(), Alias},
                        #{Alias := {Node, _, Mon}} = IAcc,
                        {gb_trees:insert(Key, Size, QAcc), IAcc#{Alias := {Node, Key, Mon}}, T}
                end, {Q, I, TQ}, Skipped).

woken(Alias, I) ->
    Alias ! {Alias, room},
    case maps:take(Alias, I) of
        {{_, _, Mon}, I1} ->
            erlang:demonitor(Mon, [flush]),
            I1;
        error ->
            I
    end.

weft_nif_state(Node) ->
    try
        weft_nif:queue_state(Node)
    catch
        error:nif_not_loaded -> {error, not_started};
        error:undef -> {error, not_started}
    end.
