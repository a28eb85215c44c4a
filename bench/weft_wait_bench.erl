%% @doc What a channel with `overload => wait' carries through a small send
%% queue bound, and what senders waiting on a stopped peer cost.
%%
%% `stream': two nodes on loopback (no proxy), `send_queue_limit' of
%% `Limit' bytes, `Senders' processes on A forwarding `Size'-byte binaries
%% to a sink on B for `Seconds'; prints MB/s, the sends that waited, the
%% reductions of `weft_room' (the process that wakes them) and the longest
%% `forward' call.
%%
%% `idle': B stopped with SIGSTOP, `Senders' processes on A each waiting
%% in `forward' with one `Size'-byte message; prints the CPU that A's VM
%% used in `Seconds' (% of one core), and whether every sender returned
%% `ok' with an empty mailbox once B runs again.
%%
%% `pulse': as `stream', while B runs only 2 ms of every 50 (SIGSTOP and
%% SIGCONT from this node): most sends find the queue full. Prints also
%% the longest `forward' call of any sender, the fewest and most messages
%% one sender sent, and the CPU A's VM used (% of one core).
%%
%% erl -sname weft_wait -noshell -pa _build/default/lib/weft/ebin -pa _build/bench \
%%     -eval 'weft_wait_bench:main([stream, 262144, 65536, 1, 3])' -s init stop
%%
%% (The node needs a name: the peers send their results to it.)
-module(weft_wait_bench).
-export([main/1, stream/5, sink/0, waiter/3]).

main([stream, Limit, Size, Senders, Secs]) ->
    with_pair(Limit, fun(A, _B, NodeB, _OsPidB) ->
        Room = call(A, erlang, whereis, [weft_room]),
        {_, R0} = call(A, erlang, process_info, [Room, reductions]),
        T0 = erlang:monotonic_time(millisecond),
        start_streams(A, NodeB, Size, Secs, Senders),
        {Sent, _, _, Longest} = streamed(Senders),
        T1 = erlang:monotonic_time(millisecond),
        {_, R1} = call(A, erlang, process_info, [Room, reductions]),
        #{queued := #{waited := W}} = call(A, weft, info, []),
        io:format("stream: limit ~p B, ~p B messages, ~p senders: ~p messages in ~p ms = ~.1f MB/s; "
                  "~p sends waited; weft_room ~p reductions; longest forward ~.1f ms~n",
                  [Limit, Size, Senders, Sent, T1 - T0, Sent * Size / 1000 / (T1 - T0), W, R1 - R0,
                   Longest / 1000])
    end);
main([pulse, Limit, Size, Senders, Secs]) ->
    with_pair(Limit, fun(A, _B, NodeB, OsPidB) ->
        OsPidA = call(A, os, getpid, []),
        C0 = cpu_ticks(OsPidA),
        T0 = erlang:monotonic_time(millisecond),
        start_streams(A, NodeB, Size, Secs, Senders),
        pulse(OsPidB, T0 + Secs * 1000),
        {Sent, Fewest, Most, Longest} = streamed(Senders),
        T1 = erlang:monotonic_time(millisecond),
        C1 = cpu_ticks(OsPidA),
        #{queued := #{waited := W}} = call(A, weft, info, []),
        io:format("pulse: limit ~p B, ~p B messages, ~p senders, B running 2 ms of 50: ~p messages in ~p ms; "
                  "~p sends waited; longest forward ~.1f ms; per sender ~p..~p messages; "
                  "A's VM ~.1f % of a core~n",
                  [Limit, Size, Senders, Sent, T1 - T0, W, Longest / 1000, Fewest, Most,
                   core_percent(C1 - C0, T1 - T0)])
    end);
main([idle, Limit, Size, Senders, Secs]) ->
    with_pair(Limit, fun(A, _B, NodeB, OsPidB) ->
        OsPidA = call(A, os, getpid, []),
        [] = os:cmd("kill -STOP " ++ OsPidB),
        Self = self(),
        try
            %% fill the bound (and the kernel's buffers) first
            [call(A, erlang, spawn, [?MODULE, waiter, [NodeB, Size, Self]]) || _ <- lists:seq(1, Senders)],
            wait_waiting(A, Senders, 600),
            C0 = cpu_ticks(OsPidA),
            timer:sleep(Secs * 1000),
            C1 = cpu_ticks(OsPidA),
            io:format("idle: ~p senders waiting with ~p B each on a stopped peer (limit ~p B): "
                      "A's VM used ~.1f % of a core over ~p s~n",
                      [Senders, Size, Limit, core_percent(C1 - C0, Secs * 1000), Secs])
        after
            os:cmd("kill -CONT " ++ OsPidB)
        end,
        Results = [receive {waited, R} -> R after 60000 -> timeout end || _ <- lists:seq(1, Senders)],
        Ok = length([R || {ok, 0} = R <- Results]),
        io:format("idle: after SIGCONT ~p of ~p returned ok with an empty mailbox~n", [Ok, Senders])
    end).

%% `Senders' processes on A, each forwarding to B's sink for `Secs'.
start_streams(A, NodeB, Size, Secs, Senders) ->
    Self = self(),
    [call(A, erlang, spawn, [?MODULE, stream, [NodeB, Size, Secs * 1000, Self, I]])
     || I <- lists:seq(1, Senders)],
    ok.

%% What the streams reported: messages sent in all, by the sender that sent
%% fewest and most, and the longest `forward' call (microseconds).
streamed(Senders) ->
    Done = [receive {done, I, N, Max} -> {N, Max} end || I <- lists:seq(1, Senders)],
    Ns = [N || {N, _} <- Done],
    {lists:sum(Ns), lists:min(Ns), lists:max(Ns), lists:max([M || {_, M} <- Done])}.

%% CPU clock ticks over `Ms' milliseconds, as % of one core.
core_percent(Ticks, Ms) ->
    Hz = list_to_integer(string:trim(os:cmd("getconf CLK_TCK"))),
    100 * Ticks / Hz / (Ms / 1000).

%% B stopped 48 ms, running 2 ms, until `Until'.
pulse(OsPidB, Until) ->
    case erlang:monotonic_time(millisecond) >= Until of
        true ->
            os:cmd("kill -CONT " ++ OsPidB);
        false ->
            os:cmd("kill -STOP " ++ OsPidB),
            timer:sleep(48),
            os:cmd("kill -CONT " ++ OsPidB),
            timer:sleep(2),
            pulse(OsPidB, Until)
    end.

%% Senders waiting, as `weft:info()' counts them (each waits once).
wait_waiting(A, Want, Tries) ->
    #{queued := #{waited := W}} = call(A, weft, info, []),
    case W >= Want orelse Tries =:= 0 of
        true -> ok;
        false -> timer:sleep(50), wait_waiting(A, Want, Tries - 1)
    end.

cpu_ticks(OsPid) ->
    {ok, Stat} = file:read_file("/proc/" ++ OsPid ++ "/stat"),
    %% after the command's closing parenthesis: fields 3.. ; utime and
    %% stime are fields 14 and 15
    [_, Rest] = binary:split(Stat, <<") ">>),
    Fields = binary:split(Rest, <<" ">>, [global]),
    binary_to_integer(lists:nth(12, Fields)) + binary_to_integer(lists:nth(13, Fields)).

with_pair(Limit, Fun) ->
    Opts = #{cookie => <<"wait-bench">>, heartbeat_timeout => 60000,
             send_queue_limit => Limit,
             channels => [#{name => default, overload => wait, wait_timeout => infinity}]},
    A = start(Opts),
    B = start(Opts),
    try
        ok = call(B, weft, sync_join, [call(A, weft, node_spec, []), 10000]),
        ok = call(B, ?MODULE, sink, []),
        Fun(A, B, call(B, erlang, node, []), call(B, os, getpid, []))
    after
        [catch peer:stop(P) || P <- [A, B]]
    end.

start(Opts) ->
    Paths = [filename:dirname(code:which(weft)), filename:dirname(code:which(?MODULE))],
    {ok, Peer, _Node} = peer:start(#{name => peer:random_name(weft_wait),
                                     args => lists:append([["-pa", P] || P <- Paths]),
                                     connection => standard_io}),
    ok = peer:call(Peer, weft, start, [Opts]),
    Peer.

call(Peer, M, F, A) ->
    peer:call(Peer, M, F, A, 120000).

%% @doc Forward `Size'-byte messages to B's sink for `Ms' milliseconds.
stream(Node, Size, Ms, Parent, I) ->
    Bin = binary:copy(<<"x">>, Size),
    loop(Node, Bin, erlang:monotonic_time(millisecond) + Ms, Parent, I, 0, 0).

%% (`Max': the longest `forward' call so far, in microseconds)
loop(Node, Bin, Deadline, Parent, I, N, Max) ->
    case N rem 64 =:= 0 andalso erlang:monotonic_time(millisecond) > Deadline of
        true ->
            Parent ! {done, I, N, Max};
        false ->
            T0 = erlang:monotonic_time(microsecond),
            ok = weft:forward(Node, weft_wait_sink, Bin, #{}),
            T = erlang:monotonic_time(microsecond) - T0,
            loop(Node, Bin, Deadline, Parent, I, N + 1, max(Max, T))
    end.

%% @doc One message; reports the result and the mailbox's length after.
waiter(Node, Size, Parent) ->
    R = weft:forward(Node, weft_wait_sink, binary:copy(<<"w">>, Size), #{}),
    {message_queue_len, Q} = process_info(self(), message_queue_len),
    Parent ! {waited, {R, Q}}.

%% @doc A registered process that drops what it gets.
sink() ->
    register(weft_wait_sink, spawn(fun Drop() -> receive _ -> Drop() end end)),
    ok.
