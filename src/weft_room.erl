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
%% empty queue, as the transport counts). A woken sender then sends; if another took the room first, it
%% registers again. A sender that gives up deactivates its alias, so a late
%% wake-up never reaches its mailbox, and says so here. With nothing
%% waiting this process does nothing.
-module(weft_room).
-behaviour(gen_server).

-export([start_link/0, wait/3, cancel/1]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

%% Bytes a queued message's entry counts besides its body
%% (weft_transport::counters::PER_MESSAGE).
-define(PER_MESSAGE, 128).
-define(TICK_MS, 1).

-record(state, {waiting = #{} :: #{node() => gb_trees:tree({float(), reference()}, non_neg_integer())},
                cancelled = #{} :: #{reference() => true},
                ticking = false :: boolean()}).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Register `Alias' (a monitor of this process made with `{alias,
%% demonitor}') as waiting for room for `Size' bytes to `Node'.
-spec wait(reference(), node(), non_neg_integer()) -> ok.
wait(Alias, Node, Size) ->
    gen_server:cast(?MODULE, {wait, Alias, Node, Size}).

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
handle_cast({wait, Alias, Node, Size}, #state{waiting = W} = S) ->
    Q = maps:get(Node, W, gb_trees:empty()),
    Q1 = gb_trees:insert({rand:uniform(), Alias}, Size, Q),
    {noreply, tick_soon(S#state{waiting = W#{Node => Q1}})};
handle_cast({cancel, Alias}, #state{cancelled = C} = S) ->
    %% (dropped when its turn comes)
    {noreply, S#state{cancelled = C#{Alias => true}}};
handle_cast(_Msg, S) ->
    {noreply, S}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info(tick, S0) ->
    S = wake(S0#state{ticking = false}),
    {noreply, case map_size(S#state.waiting) of
                  0 -> S#state{cancelled = #{}};
                  _ -> tick_soon(S)
              end};
handle_info(_Msg, S) ->
    {noreply, S}.

tick_soon(#state{ticking = true} = S) ->
    S;
tick_soon(S) ->
    erlang:send_after(?TICK_MS, self(), tick),
    S#state{ticking = true}.

%% Per destination, the senders that fit now, in order; the total bound's
%% room is shared by all destinations in one pass.
wake(#state{waiting = W, cancelled = C0} = S) ->
    {W1, C1, _} =
        maps:fold(fun(Node, Q, {Acc, C, Total}) ->
                          {Q1, C2, Total1} = wake_node(Node, Q, C, Total),
                          case gb_trees:is_empty(Q1) of
                              true -> {Acc, C2, Total1};
                              false -> {Acc#{Node => Q1}, C2, Total1}
                          end
                  end, {#{}, C0, undefined}, W),
    S#state{waiting = W1, cancelled = C1}.

wake_node(Node, Q, C, Total) ->
    case weft_nif_state(Node) of
        {PQ, PL, TQ, TL} ->
            %% (the total as this pass has counted it so far)
            T = case Total of undefined -> TQ; _ -> max(Total, TQ) end,
            {Q1, C1, T1} = pop_fitting(Q, C, PQ, PL, T, TL),
            {Q1, C1, T1};
        _ ->
            %% No route (their sends are dropped and counted) or weft not
            %% running (they get `not_started'): all go on.
            {gb_trees:empty(), wake_all(Q, C), Total}
    end.

%% Senders taken in a random order (each gets a random key when it
%% registers; the smallest key goes first) while the next one fits: the
%% order in which senders to one destination go on is not the order they
%% came in, as the senders that Distributed Erlang resumes when a busy
%% connection drains race each other. (In the order they came, two
%% replicas that got the same requests in the same order would answer
%% them in the same order again: `bench/RESULTS.md', 2026-12-07 19:45.)
%% A sender that registers again (another took the room first) draws a
%% new key. O(log n) per sender registered and woken.
pop_fitting(Q, C, PQ, PL, TQ, TL) ->
    case gb_trees:is_empty(Q) of
        true ->
            {Q, C, TQ};
        false ->
            case gb_trees:take_smallest(Q) of
                {{_, Alias}, _, Rest} when is_map_key(Alias, C) ->
                    pop_fitting(Rest, maps:remove(Alias, C), PQ, PL, TQ, TL);
                {{_, Alias}, Size, Rest} ->
                    N = Size + ?PER_MESSAGE,
                    case (PQ =:= 0 orelse PQ + N =< PL) andalso (TQ =:= 0 orelse TQ + N =< TL) of
                        true ->
                            Alias ! {Alias, room},
                            pop_fitting(Rest, C, PQ + N, PL, TQ + N, TL);
                        false ->
                            {Q, C, TQ}
                    end
            end
    end.

wake_all(Q, C) ->
    lists:foldl(fun({{_, Alias}, _}, Acc) when is_map_key(Alias, Acc) -> maps:remove(Alias, Acc);
                   ({{_, Alias}, _}, Acc) -> Alias ! {Alias, room}, Acc
                end, C, gb_trees:to_list(Q)).

weft_nif_state(Node) ->
    try
        weft_nif:queue_state(Node)
    catch
        error:nif_not_loaded -> {error, not_started};
        error:undef -> {error, not_started}
    end.
