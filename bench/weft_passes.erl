%% @doc Many short passes of one echo cell, configurations in turn on nodes
%% started once, with where each pass's CPU went: what `make bench' runs
%% five times per configuration in its 128-client cells, run as often as
%% asked, to tell a transport's own spread from the machine's.
%%
%% ```
%% make bench-build
%% erl -noshell -pa _build/default/lib/weft/ebin -pa _build/bench \
%%     -eval 'weft_passes:main([8, 1, 128, [weft_16, limit]])' -s init stop
%% '''
%%
%% Arguments: passes (at least 1), RTT in ms (at least 1: the cell goes
%% through the latency proxy), clients, configurations (as `weft_bench''s:
%% `weft_16', `weft_1', `disterl', `limit', `weft_16_sbct', ...), and
%% optionally the proxy's rate cap per flow and direction in Mbit/s (0: no
%% cap; default: `make bench''s). Each pass is the 512 KB echo for 5 s.
%% Printed per pass:
%% - round trips per second, p50 and p99 (ms);
%% - CPU per round trip (us) of each node's threads by kind (`a.scheduler':
%%   node A's VM schedulers, `a.weft-poll-': its weft pollers, `a.aux', ...)
%%   and of the nodes' latency proxy (`proxy.netem-conn'), from
%%   `/proc/PID/task/*/stat' (10 ms ticks, so a kind under 5 us is left
%%   out); the CPU is counted from the clients' start to their last reply,
%%   a little more than the 5 s whose round trips are counted;
%% - the same threads' context switches per round trip, voluntary /
%%   involuntary;
%% - machine-wide steal, irq+softirq and idle ticks during the pass, and
%%   the TCP segments received per round trip and their mean size (every
%%   connection of the machine, the proxy's included; the size is IP bytes
%%   received over TCP segments received, headers included: close, not
%%   exact);
%% - for weft: the MB/s each lane of its channel (`vnode', or `default'
%%   for `weft_1') sent, and whether a thread (`t') or a scheduler (`s')
%%   served it; a channel of 2 lanes or more lists its shared lane last;
%% - with `WEFT_PASSES_PERF=1': context switches, wake-ups, inter-processor
%%   interrupts and page faults per round trip over the whole machine
%%   (`perf stat -a', software events and tracepoints only);
%% - with `WEFT_PASSES_RECORD=DIR': a `perf record -a' profile of each
%%   pass into DIR (`perf report --sort comm,sym' reads it);
%% - each node's receive pool: buffers allocated and reused in the pass;
%%   with `WEFT_PASSES_SAMPLE=1' also, sampled every 250 ms (a `weft:info/0'
%%   call on each node, so some load of its own), its bytes in use, its
%%   send queues' bytes and the echo server's mailbox length.
%% The `limit' runs as one program with its own proxy, whose CPU this
%% does not measure (only the machine-wide lines); its profiles split it.
-module(weft_passes).

-export([main/1, sample_here/0]).

-define(PASS_MS, 5000).
-define(PAYLOAD, 524288).

main([Passes, Rtt, Clients, Configs]) when is_integer(Rtt) ->
    main([Passes, Rtt, Clients, Configs, weft_bench:cap(echo, Rtt)]);
main([Passes, Rtt, Clients, [_ | _] = Configs, Cap])
  when is_integer(Passes), Passes >= 1, is_integer(Rtt), Rtt >= 1, is_integer(Clients), Clients >= 1,
       is_integer(Cap), Cap >= 0 ->
    Netem = filename:join([root(), "target", "release", "weft-netem"]),
    Cell = {echo, Rtt, ?PAYLOAD, Clients, ?PASS_MS / 1000},
    io:format("~p passes of ~p, configurations ~p in turn, ~s~n",
              [Passes, Cell, Configs, case Cap of 0 -> "no rate cap"; _ -> io_lib:format("cap ~p Mbit/s per flow", [Cap]) end]),
    %% (what is started is torn down, even when a later setup fails)
    Started = ets:new(weft_passes_setups, [set]),
    try
        [ets:insert(Started, {C, setup(Netem, C, Rtt, Cap)}) || C <- Configs, C =/= limit],
        Rows = [[{C, pass(Netem, C, setup_of(Started, C), Cell, Cap, I)} || C <- Configs]
                || I <- lists:seq(1, Passes)],
        summary(Configs, lists:append(Rows))
    after
        [weft_bench:teardown(S) || {_, {S, _}} <- ets:tab2list(Started)],
        weft_bench:remove_cpu_group()
    end;
main(Args) ->
    erlang:error({bad_args, Args, "[Passes >= 1, RttMs >= 1, Clients >= 1, [Config, ...]], and optionally CapMbit >= 0"}).

setup_of(_, limit) -> undefined;
setup_of(Started, C) -> [{C, Setup}] = ets:lookup(Started, C), Setup.

setup(Netem, Config, Rtt, Cap) ->
    {[{A, _}, {B, _}], Proxy} = S = weft_bench:setup_echo(Netem, Config, Rtt, Cap),
    {os_pid, P} = erlang:port_info(Proxy, os_pid),
    Procs = [{a, peer:call(A, os, getpid, [])}, {b, peer:call(B, os, getpid, [])},
             {proxy, integer_to_list(P)}],
    {S, Procs}.

pass(Netem, Config, Setup, Cell, Cap, I) ->
    {S, Procs} = case Setup of undefined -> {undefined, []}; _ -> Setup end,
    Me = self(),
    Perf = case os:getenv("WEFT_PASSES_PERF") of
               false -> none;
               _ -> spawn_cmd(Me, "perf stat -a -x, -e context-switches,cpu-migrations,page-faults,"
                                  "sched:sched_wakeup,ipi:ipi_send_cpu,irq_vectors:reschedule_entry,"
                                  "irq_vectors:call_function_single_entry -- sleep 4.5 2>&1")
           end,
    Record = case os:getenv("WEFT_PASSES_RECORD") of
                 false -> none;
                 Dir -> spawn_cmd(Me, lists:flatten(io_lib:format("perf record -a -F 499 -o ~s/~p-~p.data -- sleep 4 >/dev/null 2>&1",
                                                                  [Dir, Config, I])))
             end,
    Threads0 = threads(Procs), Stat0 = stat(), Infos0 = infos(S),
    Sampler = pool_sampler(S),
    {Ops, P50, P99} = case Config of
                          limit ->
                              {echo, Rtt, Payload, Clients, Seconds} = Cell,
                              weft_bench:limit_run(Netem, Rtt, Cap, Clients, Payload, Seconds, 0);
                          _ -> weft_bench:rep(Netem, Config, S, Cell, ?PASS_MS)
                      end,
    Threads1 = threads(Procs), Stat1 = stat(), Infos1 = infos(S),
    Samples = pool_samples(Sampler),
    {Lanes0, Lanes1} = {[lanes(Info) || Info <- Infos0], [lanes(Info) || Info <- Infos1]},
    N = Ops * ?PASS_MS / 1000,
    %% per round trip, by kind: {us of CPU (a tick is 10 ms), voluntary and
    %% involuntary context switches}
    PerOp = [{K, {Ticks * 10000 / N, V / N, Inv / N}}
             || {K, C1} <- lists:sort(maps:to_list(Threads1)),
                {Ticks, V, Inv} <- [sub(C1, maps:get(K, Threads0, {0, 0, 0}))]],
    io:format("~2w ~-16s ~7.1f ops/s  p50 ~6.1f  p99 ~6.1f ms | us of CPU per round trip: ~s~n",
              [I, Config, Ops, P50, P99,
               lists:join(" ", [io_lib:format("~s ~w", [K, round(Us)]) || {K, {Us, _, _}} <- PerOp, Us >= 5])]),
    Procs =:= [] orelse
        io:format("   context switches per round trip, voluntary/involuntary: ~s~n",
                  [lists:join(" ", [io_lib:format("~s ~.1f/~.1f", [K, V, Inv]) || {K, {_, V, Inv}} <- PerOp, V + Inv >= 0.1])]),
    D = fun(K) -> maps:get(K, Stat1) - maps:get(K, Stat0) end,
    io:format("   machine: steal ~p, irq+softirq ~p, idle ~p ticks; TCP segments received per round trip ~.1f, ~.1f KB each~n",
              [D(steal), D(irq), D(idle), D(segs) / max(N, 1), D(octets) / max(D(segs), 1) / 1000]),
    [io:format("   ~s's lanes, MB/s: ~s~n",
               [Side, lists:join(" ", [io_lib:format("~.1f~c", [(Sent - element(1, proplists:get_value(Idx, L0, {0, x}))) * 1000 / ?PASS_MS / 1.0e6, Io])
                                       || {Idx, {Sent, Io}} <- L1])])
     || {Side, L0, L1} <- case Lanes0 of [] -> []; _ -> lists:zip3(["A", "B"], Lanes0, Lanes1) end],
    [io:format("   ~s: receive pool ~p buffers allocated, ~p reused~s~n",
               [Side, Al1 - Al0, Re1 - Re0, sampled(Ss)])
     || {Side, {{Al0, Re0}, {Al1, Re1}}, Ss} <- case Infos0 of
                                                   [] -> [];
                                                   _ -> lists:zip3(["A", "B"], lists:zip([pool(Info) || Info <- Infos0],
                                                                                         [pool(Info) || Info <- Infos1]),
                                                                   Samples)
                                               end],
    Perf =:= none orelse
        receive {Perf, Out} ->
                %% (lines that are not counts, e.g. perf's errors, are left out)
                Vals = [{lists:last(string:split(E, ":", all)), V}
                        || {E, V} <- lists:sort(maps:to_list(weft_bench:parse_perf(Out)))],
                io:format("   per round trip: ~s~n",
                          [lists:join(" ", [io_lib:format("~s ~.1f", [E, V / (Ops * 4.5)]) || {E, V} <- Vals])])
        end,
    Record =:= none orelse receive {Record, _} -> ok end,
    Ops.

spawn_cmd(To, Cmd) ->
    spawn(fun() -> To ! {self(), os:cmd(Cmd)} end).

summary(Configs, Rows) ->
    Mean = fun(C) -> Os = [O || {C1, O} <- Rows, C1 =:= C], lists:sum(Os) / length(Os) end,
    [begin
         Os = [O || {C1, O} <- Rows, C1 =:= C],
         io:format("~-16s mean ~7.1f ops/s (~.1f-~.1f)~s~n",
                   [C, Mean(C), lists:min(Os), lists:max(Os),
                    case lists:member(limit, Configs) andalso C =/= limit andalso Mean(limit) > 0 of
                        true -> io_lib:format(", ~.3f of the limit's mean", [Mean(C) / Mean(limit)]);
                        false -> ""
                    end])
     end || C <- Configs],
    ok.

%% CPU ticks and context switches (voluntary, involuntary) of each node's
%% and the proxy's threads, summed by kind: #{Kind => {Ticks, V, I}}.
threads(Procs) ->
    lists:foldl(fun({Name, Pid}, Acc) ->
                        Dir = "/proc/" ++ Pid ++ "/task/",
                        Tids = case file:list_dir(Dir) of {ok, Ts} -> Ts; _ -> [] end,
                        lists:foldl(fun(T, A) ->
                                            case thread(Dir ++ T) of
                                                {Kind, Counts} ->
                                                    K = atom_to_list(Name) ++ "." ++ Kind,
                                                    maps:update_with(K, fun(X) -> add(X, Counts) end, Counts, A);
                                                none -> A
                                            end
                                    end, Acc, Tids)
                end, #{}, Procs).

%% A thread's kind and {Ticks, V, I}; none if it is gone.
thread(Dir) ->
    case {file:read_file(Dir ++ "/stat"), file:read_file(Dir ++ "/status")} of
        {{ok, Stat}, {ok, Status}} ->
            [_, Rest] = binary:split(Stat, <<"(">>),
            [Comm, Tail] = binary:split(Rest, <<") ">>),
            F = binary:split(Tail, <<" ">>, [global]),
            Ticks = binary_to_integer(lists:nth(12, F)) + binary_to_integer(lists:nth(13, F)),
            {kind(binary_to_list(Comm)),
             {Ticks, weft_bench:status_value(Status, <<"voluntary_ctxt_switches:">>),
              weft_bench:status_value(Status, <<"nonvoluntary_ctxt_switches:">>)}};
        _ ->
            none
    end.

add({A, B, C}, {X, Y, Z}) -> {A + X, B + Y, C + Z}.

sub({A, B, C}, {X, Y, Z}) -> {A - X, B - Y, C - Z}.

kind(Comm) ->
    case re:run(Comm, "^[0-9]+_(.*)$", [{capture, all_but_first, list}]) of
        {match, [Rest]} -> Rest;
        nomatch -> re:replace(Comm, "[0-9]+", "", [global, {return, list}])
    end.

stat() ->
    {ok, B} = file:read_file("/proc/stat"),
    [L | _] = binary:split(B, <<"\n">>),
    [_User, _Nice, _Sys, Idle, _Iowait, Irq, Soft, Steal | _] =
        [list_to_integer(X) || X <- tl(string:lexemes(binary_to_list(L), " "))],
    Tcp = net_counters("/proc/net/snmp", "Tcp:"),
    IpExt = net_counters("/proc/net/netstat", "IpExt:"),
    #{irq => Irq + Soft, steal => Steal, idle => Idle,
      segs => maps:get("InSegs", Tcp, 0), octets => maps:get("InOctets", IpExt, 0)}.

%% The counters of one protocol in a /proc/net file (a line of names, then
%% a line of values, both starting with Prefix).
net_counters(File, Prefix) ->
    {ok, B} = file:read_file(File),
    case [string:lexemes(L, " ") || L <- string:lexemes(binary_to_list(B), "\n"),
                                   lists:prefix(Prefix, L)] of
        [[_ | Names], [_ | Values]] ->
            maps:from_list([{N, list_to_integer(V)} || {N, V} <- lists:zip(Names, Values)]);
        _ -> #{}
    end.

%% Bytes sent so far on each lane of the channel (`vnode', else `default')
%% by A and by B, and
%% how each lane is served now.
%% Each node's `weft:info()' (A, B), or [] without weft nodes.
infos(undefined) -> [];
infos({[{A, _}, {B, _}], _}) -> [catch peer:call(P, weft, info, []) || P <- [A, B]].

%% A node's lanes of its one peer: [{Index, {SentBytes, $t | $s}}].
lanes(#{peers := Peers}) when map_size(Peers) =:= 1 ->
    [#{channels := Chs}] = maps:values(Peers),
    Ls = maps:get(vnode, Chs, maps:get(default, Chs, [])),
    lists:sort([{maps:get(lane, L), {maps:get(sent_bytes, L), case maps:get(io, L) of thread -> $t; _ -> $s end}}
                || L <- Ls]);
lanes(_) ->
    [].

%% A node's receive pool: {Allocated, Reused}.
pool(#{receiving := #{pool := #{allocated := Al, reused := Re}}}) -> {Al, Re};
pool(_) -> {0, 0}.

%% A process that samples, every 250 ms until asked, each node's pool bytes
%% in use, bytes in its send queues and the echo server's mailbox length:
%% [[{InUse, Queued, Mailbox}]] (A, B).
pool_sampler(undefined) -> none;
pool_sampler({[{A, _}, {B, _}], _}) ->
    case os:getenv("WEFT_PASSES_SAMPLE", "") of
        "" -> none;
        _ -> spawn_link(fun() -> pool_sample([A, B], [[], []]) end)
    end.

pool_sample(Peers, Acc) ->
    receive
        {stop, To} -> To ! {self(), [lists:reverse(L) || L <- Acc]}
    after 250 ->
            Now = [sample(P) || P <- Peers],
            pool_sample(Peers, [[U | L] || {U, L} <- lists:zip(Now, Acc)])
    end.

sample(P) ->
    case catch peer:call(P, ?MODULE, sample_here, []) of
        {_, _, _} = T -> T;
        _ -> {0, 0, 0}
    end.

%% @doc (on a node) Its pool bytes in use, bytes queued to send, and the
%% echo server's mailbox length.
sample_here() ->
    #{receiving := #{pool := #{in_use_bytes := U}}, queued := #{queued_bytes := Q}} = weft:info(),
    M = case whereis(bench_echo) of
            undefined -> 0;
            E -> element(2, process_info(E, message_queue_len))
        end,
    {U, Q, M}.

%% Both nodes' samples, [none, none] when not sampled.
pool_samples(none) -> [none, none];
pool_samples(Pid) ->
    Pid ! {stop, self()},
    receive {Pid, Samples} -> Samples end.

%% One node's samples as text: mean and max of each kind.
sampled(none) -> "";
sampled(Samples) ->
    {U, Q, M} = lists:unzip3(Samples),
    io_lib:format("; sampled each 250 ms, mean / max: pool in use ~.1f / ~.1f MB, send queue ~.1f / ~.1f MB, echo server's mailbox ~.1f / ~p",
                  lists:append([[lists:sum(L) / max(1, length(L)) / D, lists:max([0 | L]) / D]
                                || {L, D} <- [{U, 1.0e6}, {Q, 1.0e6}, {M, 1}]])).

root() ->
    filename:dirname(filename:dirname(filename:dirname(code:which(?MODULE)))).
