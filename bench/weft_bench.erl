%% @doc weft's benchmarks, side by side with Distributed Erlang and with the
%% limit of the emulated network, in one run.
%%
%% Each cell starts two fresh nodes (OTP's `peer', controlled over standard
%% I/O), puts the `weft-netem' proxy in front of each, connects them through
%% the proxies, runs a workload, and stops everything it started. Results go
%% to a CSV file and to a Markdown table with the ratios.
%%
%% Run with `make bench' (a quick subset) or `make bench-full'.
-module(weft_bench).

-export([main/1]).
%% Run on the benchmark nodes:
-export([echo_server/1, echo_clients/5, hol_run/4, keyhol_run/5, latency_run/5, kvs_server/2, kvs_clients/6,
         kvs_count/1]).
-export([flood_counter/3, flood_run/5, sink/0, sink_count/0, memory_run/5]).
%% For the other benchmark drivers (weft_callgrind, weft_passes):
-export([lanes_up/2, wait/2, setup_echo/4, teardown/1, rep/5, cap/2, limit_run/7, remove_cpu_group/0,
         parse_perf/1, status_value/2]).

-define(CAP_MBIT, 500).

%% Echo cells through the proxy with this many clients or more are bound by
%% two cores that run both nodes, the proxy and the limit's program, where
%% one 5-second pass moved by 15-25 % (bench/RESULTS.md, 2026-12-06 23:03
%% and 2026-12-07 05:46): their configurations alternate ?CAPPED_REPS
%% times on nodes started once, and each row is the median run. Five, not
%% three: the machine's slower periods last 10-30 s (2026-12-07 08:18),
%% about one configuration's three passes, so a median of three often
%% measured one configuration in such a period and the other outside.
%% `echo_uncapped' cells are bound by the same cores by design and get the
%% same treatment (one pass each had ranged 0.68-1.47x Distributed
%% Erlang's between runs, bench/RESULTS.md 2026-12-07).
-define(MANY_CLIENTS, 128).
-define(CAPPED_REPS, 5).

%% System calls counted one by one in a profile (the others only in the
%% total).
-define(PROFILE_SYSCALLS, ["writev", "write", "sendmsg", "sendto", "read", "readv", "recvfrom",
                           "recvmsg", "epoll_wait", "epoll_pwait", "epoll_ctl", "poll", "ppoll",
                           "futex", "sched_yield", "ioctl", "nanosleep", "clock_nanosleep",
                           "mmap", "munmap", "madvise", "mremap"]).

main([Plan]) when not is_tuple(Plan) ->
    main(Plan);
main(Plan) ->
    try run(Plan) of
        ok -> halt(0)
    catch
        Class:Reason:Stack ->
            io:format("benchmark failed: ~p:~p~n~p~n", [Class, Reason, Stack]),
            halt(1)
    end.

%% {Workload, RttMs, PayloadBytes, Clients, Seconds}. RTT 0: no proxy at
%% all, plain loopback (the small-message cells, where the cost of each
%% transport's own path shows).
%% `hol': one small-message ping-pong on one channel while 4 senders stream
%% PayloadBytes messages on another (on the same connection for disterl and
%% weft N=1).
%% `keyhol': one small-message ping-pong on key 0 of a channel while
%% Clients senders flood PayloadBytes messages on keys 1..Clients of the
%% same channel (each with at most ?KEYHOL_BATCH * ?KEYHOL_ACKS messages
%% unacknowledged): other lanes of the channel for weft N=16, the same
%% connection for disterl and weft N=1.
%% `latency': each of Clients actors makes a fixed number of round trips
%% (Seconds is then that count); reports the time for all to finish.
%% `kvs': 16 vnode processes on B hold 512 KB / 8 MB values; clients do 90 %
%% gets, 10 % puts.
%% `kvs3': the same on 3 nodes, each a replica of every key; each request
%% goes to all three and completes on two replies (quorum 2 of 3).
%% `echo_uncapped': echo through the proxies with the round trip but no
%% bandwidth cap, so the machine's copy bandwidth is the ceiling of every
%% transport: what weft's own path costs with large payloads.
cells(quick) ->
    [{echo, Rtt, Payload, 16, 5} || Rtt <- [1, 20], Payload <- [512 * 1024, 8 * 1024 * 1024]]
        ++ [{echo, Rtt, 512 * 1024, 128, 5} || Rtt <- [1, 20]]
        ++ [{echo, 0, 100, Pairs, 5} || Pairs <- [1, 16]]
        ++ [{hol, 1, 8 * 1024 * 1024, 1, 5}]
        ++ [{keyhol, 1, 1024, 15, 5}]
        ++ [{latency, 20, 512 * 1024, 128, 10}]
        ++ [{kvs, 20, 512 * 1024, 16, 5}]
        ++ [{kvs3, 20, 512 * 1024, 16, 5}];
cells(flood) ->
    [{flood, 0, 100, Senders, 1000000} || Senders <- [1, 8]];
cells(memory) ->
    [{memory, 0, Size, 1, 10} || Size <- [100, 1024, 1024 * 1024]];
cells(small) ->
    [{echo, 0, 100, Pairs, 5} || Pairs <- [1, 16]];
cells(hol) ->
    [{hol, 1, 8 * 1024 * 1024, 1, 5}];
cells(more) ->
    [{latency, 20, 512 * 1024, 128, 10}, {kvs, 20, 512 * 1024, 16, 5}];
cells(full) ->
    [{echo, Rtt, Payload, Clients, 5}
     || Rtt <- [1, 20], Payload <- [512 * 1024, 8 * 1024 * 1024], Clients <- [16, 32, 64, 128]]
        ++ [{echo, 0, 100, Pairs, 5} || Pairs <- [1, 16]]
        ++ [{hol, Rtt, 8 * 1024 * 1024, 1, 5} || Rtt <- [1, 20]]
        ++ [{keyhol, Rtt, 1024, 15, 5} || Rtt <- [1, 20]]
        ++ [{latency, Rtt, Payload, Actors, Count}
            || Rtt <- [1, 20], {Payload, Count} <- [{512 * 1024, 10}, {8 * 1024 * 1024, 2}],
               Actors <- [16, 32, 64, 128]]
        ++ [{kvs, Rtt, Payload, 16, 5} || Rtt <- [1, 20], Payload <- [512 * 1024, 8 * 1024 * 1024]]
        ++ [{kvs3, Rtt, Payload, 16, 5} || Rtt <- [1, 20], Payload <- [512 * 1024, 8 * 1024 * 1024]]
        ++ [{echo_uncapped, 1, Payload, 16, 5} || Payload <- [512 * 1024, 8 * 1024 * 1024]]
        ++ cells(flood) ++ cells(memory).

%% A cell may name its configurations as a sixth element.
cell_configs({W, _, _, _, _}) -> configs(W);
cell_configs({_, _, _, _, _, Configs}) -> Configs.

configs(echo) -> [disterl, weft_1, weft_16, limit];
configs(echo_uncapped) -> configs(echo);
configs(hol) -> [disterl, weft_1, weft_16];
configs(keyhol) -> [disterl, weft_1, weft_16, weft_16_own];
configs(latency) -> [disterl, weft_1, weft_16, limit];
configs(kvs) -> [disterl, weft_1, weft_16];
%% (`kvs3' also with weft's back-pressure, `weft_1_wait': a quorum read's
%% replicas then answer in different orders, as Distributed Erlang's do;
%% bench/RESULTS.md, 2026-12-07 19:37 and 21:16)
configs(kvs3) -> [disterl, weft_1, weft_1_wait, weft_16];
configs(flood) -> [local, disterl, weft_1, weft_16];
configs(memory) -> [weft_1];
configs(profile) -> [disterl, weft_1, weft_16].

run(Cells) when is_list(Cells), is_tuple(hd(Cells)) ->
    run(custom, Cells);
run(Plan0) ->
    Plan = to_atom(Plan0),
    run(Plan, cells(Plan)).

%% `Cells' of a named plan, or a list of cell tuples given on the command
%% line (`weft_bench:main([{echo, 1, 524288, 16, 5}])'), e.g. to profile one.
run(Plan, Cells) ->
    Root = root(),
    Netem = filename:join([Root, "target", "release", "weft-netem"]),
    Stamp = calendar:system_time_to_rfc3339(erlang:system_time(second)),
    {{Y, Mo, D}, {H, Mi, S}} = calendar:local_time(),
    FileStamp = io_lib:format("~4..0b~2..0b~2..0b-~2..0b~2..0b~2..0b", [Y, Mo, D, H, Mi, S]),
    ResultsDir = filename:join([Root, "bench", "results"]),
    ok = filelib:ensure_dir(filename:join(ResultsDir, "x")),
    Csv = filename:join(ResultsDir, lists:flatten([plan_name(Plan), "-", FileStamp, ".csv"])),
    Header = "workload,config,rtt_ms,cap_mbit,payload_bytes,clients,seconds,ops_per_sec,p50_ms,p99_ms\n",
    ok = file:write_file(Csv, Header),
    Command = case Plan of quick -> "make bench"; full -> "make bench-full";
                           flood -> "make bench-flood"; memory -> "make bench-memory"; _ -> "erl ... -eval 'weft_bench:main(" ++ atom_to_list(Plan) ++ ")'" end,
    io:format("~s: ~p cells, emulator flags ~p, weft options ~s, CPU group ~s; results in ~s~n",
              [Command, length(Cells), vm_flags(), os:getenv("WEFT_BENCH_OPTS", "#{}"), cpu_group_label(), Csv]),
    Emit = fun(#{workload := profile} = Row) ->
                   File = extra_csv(Csv, profile),
                   filelib:is_file(File) orelse (ok = file:write_file(File, extra_header(profile))),
                   ok = file:write_file(File, extra_line(Row), [append]),
                   io:format("  ~s~n", [pretty_profile(Row)]),
                   Row;
              (#{workload := W} = Row) when W =:= flood; W =:= memory ->
                   %% Their own columns, in a file of their own (printed by the cell).
                   File = extra_csv(Csv, W),
                   filelib:is_file(File) orelse (ok = file:write_file(File, extra_header(W))),
                   ok = file:write_file(File, extra_line(Row), [append]),
                   W =:= memory andalso write_samples(extra_csv(Csv, samples), Row),
                   Row;
              (Row) ->
                   ok = file:write_file(Csv, csv(Row), [append]),
                   io:format("  ~s~n", [pretty(Row)]),
                   Row
           end,
    Rows = lists:append(
             [case Cell of
                  {flood, _, _, _, _} ->
                      [Emit(R) || R <- flood_cell(cell_configs(Cell), Cell)];
                  {flood, _, _, _, _, _} ->
                      [Emit(R) || R <- flood_cell(cell_configs(Cell), erlang:delete_element(6, Cell))];
                  {memory, _, _, _, _} ->
                      [Emit(memory_cell(C, Cell)) || C <- cell_configs(Cell)];
                  {profile, _, _, _, _} ->
                      [Emit(profile_cell(C, Cell)) || C <- cell_configs(Cell)];
                  {profile, _, _, _, _, _} ->
                      [Emit(profile_cell(C, erlang:delete_element(6, Cell))) || C <- cell_configs(Cell)];
                  {echo, Rtt, _, Clients, _} when Rtt =:= 0; Clients >= ?MANY_CLIENTS ->
                      [Emit(R) || R <- repeated_cell(Netem, cell_configs(Cell), Cell)];
                  {echo, Rtt, _, Clients, _, _} when Rtt =:= 0; Clients >= ?MANY_CLIENTS ->
                      [Emit(R) || R <- repeated_cell(Netem, cell_configs(Cell), erlang:delete_element(6, Cell))];
                  {echo_uncapped, _, _, _, _} ->
                      [Emit(R) || R <- repeated_cell(Netem, cell_configs(Cell), Cell)];
                  {echo_uncapped, _, _, _, _, _} ->
                      [Emit(R) || R <- repeated_cell(Netem, cell_configs(Cell), erlang:delete_element(6, Cell))];
                  _ ->
                      [Emit(cell(Netem, Config, {element(1, Cell), element(2, Cell), element(3, Cell),
                                                 element(4, Cell), element(5, Cell)}))
                       || Config <- cell_configs(Cell)]
              end || Cell <- Cells]),
    Table = table(Rows),
    io:format("~n~s", [Table]),
    Md = filename:join(ResultsDir, plan_name(Plan) ++ "-latest.md"),
    Flags = [[Var, "=\"", V, "\" "] || Var <- ["WEFT_BENCH_ERL_FLAGS", "WEFT_BENCH_OPTS", "WEFT_BENCH_CPU_GROUP"],
                                        V <- [os:getenv(Var, "")], V =/= ""],
    ok = file:write_file(Md, ["Command: `", Flags, Command, "` (", Stamp, "; CPU group ", cpu_group_label(), ")\n\n", Table]),
    Latest = filename:join(ResultsDir, plan_name(Plan) ++ "-latest.csv"),
    case [R || #{workload := W} = R <- Rows, W =/= flood, W =/= memory, W =/= profile] of
        [] ->
            %% Only flood / memory rows: they are in their own files.
            ok = file:delete(Csv),
            io:format("table written to ~s, rows to ~s-*.csv~n", [Md, filename:rootname(Csv)]);
        _ ->
            {ok, _} = file:copy(Csv, Latest),
            io:format("table written to ~s, rows to ~s~n", [Md, Latest])
    end,
    remove_cpu_group().

%% Remove the bench's cgroup (with `shared'), once its processes are gone.
remove_cpu_group() ->
    cpu_group() =:= shared andalso remove_cpu_group(cpu_group_dir(), 50),
    ok.

%% Remove the bench's cgroup once its last node's OS process has exited
%% (they exit a moment after `peer:stop/1' returns); a cgroup that stays
%% non-empty for 5 s is left, with a note.
remove_cpu_group(Dir, 0) ->
    io:format("note: ~s still holds processes; not removed~n", [Dir]);
remove_cpu_group(Dir, Tries) ->
    case file:del_dir(Dir) of
        ok -> ok;
        {error, enoent} -> ok;
        {error, _} -> receive after 100 -> remove_cpu_group(Dir, Tries - 1) end
    end.

%% The name of a plan's result files: `-own' after the plan's when the
%% nodes kept a CPU group each (see cpu_group/0).
plan_name(Plan) ->
    atom_to_list(Plan) ++ case cpu_group() of shared -> ""; own -> "-own" end.

root() ->
    filename:dirname(filename:dirname(filename:dirname(code:which(?MODULE)))).

to_atom(A) when is_atom(A) -> A;
to_atom(L) when is_list(L) -> list_to_atom(L).

%%% One cell

cell(Netem, limit, {Workload, Rtt, Payload, Clients, Seconds} = Cell) ->
    %% The latency workload makes a fixed count of round trips per actor.
    Count = case Workload of latency -> Seconds; _ -> 0 end,
    {Ops, P50, P99} = limit_run(Netem, Rtt, cap(Workload, Rtt), Clients, Payload, Seconds, Count),
    row(limit, Cell, Ops, P50, P99);
cell(Netem, Config, {Workload, Rtt, Payload, Clients, Seconds} = Cell) ->
    {Started, Proxy} = start_nodes(Netem, Config, node_count(Workload), Rtt, cap(Workload, Rtt)),
    [{A, _NodeA} | Others] = Started,
    [{_B, NodeB} | _] = Others,
    try
        connect_all(Config, Started),
        [ok = peer:call(P, ?MODULE, echo_server, [Config]) || {P, _} <- Others],
        Workload =:= kvs andalso (ok = peer:call(element(1, hd(Others)), ?MODULE, kvs_server, [Config, Payload])),
        Workload =:= kvs3 andalso [ok = peer:call(P, ?MODULE, kvs_server, [Config, Payload]) || {P, _} <- Started],
        Replicas = [N || {_, N} <- Started],
        {Fun, Args} = case Workload of
                          E when E =:= echo; E =:= echo_uncapped ->
                              {echo_clients, [Config, NodeB, Clients, Payload, Seconds * 1000]};
                          hol -> {hol_run, [Config, NodeB, Payload, Seconds * 1000]};
                          keyhol -> {keyhol_run, [Config, NodeB, Clients, Payload, Seconds * 1000]};
                          latency -> {latency_run, [Config, NodeB, Clients, Payload, Seconds]};
                          kvs -> {kvs_clients, [Config, [NodeB], 1, Clients, Payload, Seconds * 1000]};
                          kvs3 -> {kvs_clients, [Config, Replicas, 2, Clients, Payload, Seconds * 1000]}
                      end,
        {Ops, Secs, Rtts} = peer:call(A, ?MODULE, Fun, Args, (Seconds + 120) * 1000),
        report_overloaded(Config, Started),
        lists:member(Workload, [kvs, kvs3]) andalso report_in_flight(Config, A, Started),
        row(Config, Cell, Ops / Secs, quantile(Rtts, 0.5), quantile(Rtts, 0.99))
    after
        [catch peer:stop(P) || {P, _} <- Started],
        Proxy =:= none orelse port_close(Proxy)
    end.

%% `Count' fresh nodes of `Config', each behind the latency proxy (none
%% with `Rtt' 0: plain loopback). Returns them and the proxy's port.
start_nodes(Netem, Config, Count, Rtt, Cap) ->
    %% Each node listens on a port of its own; the others reach it through
    %% its proxy (or directly, without emulation).
    Listen = free_ports(Count),
    %% (ports other than Listen: the proxy binds these while the nodes
    %% bind those; seen: a node failed to start with eaddrinuse)
    Advertised = case Rtt of 0 -> Listen; _ -> lists:sublist(free_ports(Count, Listen), Count) end,
    Proxy = start_proxy(Netem, Rtt, Cap, lists:zip(Advertised, Listen)),
    Tag = integer_to_list(erlang:unique_integer([positive])),
    Names = ["bench_" ++ [$a + I - 1] ++ Tag || I <- lists:seq(1, Count)],
    Ports = lists:join(",", [N ++ "=" ++ integer_to_list(X) || {N, X} <- lists:zip(Names, Advertised)]),
    Started = [start_node(N, Config, L, X, lists:flatten(Ports))
               || {N, L, X} <- lists:zip3(Names, Listen, Advertised)],
    {Started, Proxy}.

%% The limit's program (a plain TCP echo through a proxy of its own, capped
%% at `Cap' Mbit/s per flow, 0: none): {Ops per second, p50, p99 in ms}.
limit_run(Netem, Rtt, Cap, Clients, Payload, Seconds, Count) ->
    Out = os:cmd(lists:flatten(io_lib:format("~sexec ~s limit --rtt-ms ~p --rate-mbit ~p --clients ~p --payload ~p --seconds ~p --count ~p",
                                             [cpu_group_shell(), Netem, Rtt, Cap, Clients, Payload, Seconds, Count]))),
    [Ops, P50, P99] = [limit_value(string:trim(X)) || X <- string:split(string:trim(Out), ",", all)],
    Ops == 0 andalso
        io:format("  limit: no round trip completed in the window (~p clients of ~p bytes, ~p s): 0 ops/s, no quantiles~n",
                  [Clients, Payload, Seconds]),
    {Ops, P50, P99}.

%% A figure of the limit's program; its quantiles are "NaN" when no round
%% trip completed in the window (seen: 8 MB with 128 clients in 5 s), kept
%% as 0.0 (ratios against 0 print as n/a).
limit_value(X) ->
    case lists:member(string:lowercase(X), ["nan", "-nan", "inf", "-inf"]) of
        true -> 0.0;
        false -> list_to_float(X)
    end.

%% Small messages without emulation: what is measured is each transport's
%% own path on a shared 2-core machine, where one run of a few seconds can
%% be 30 % off the next. So every configuration's nodes start once, and
%% ?REPS short runs of each alternate; each row is the median run (by ops/s).
-define(REPS, 5).
-define(REP_MS, 1500).
%% Echo through the proxy with ?MANY_CLIENTS clients or more: the same,
%% with ?CAPPED_REPS runs of the cell's length (see ?MANY_CLIENTS).

repeated_cell(Netem, Configs, {Workload, Rtt, _Payload, _Clients, Seconds} = Cell) ->
    {Reps, Ms} = case Rtt of
                     0 -> {?REPS, ?REP_MS};
                     _ -> {?CAPPED_REPS, round(Seconds * 1000)}
                 end,
    Setups = [{C, setup_echo(Netem, C, Rtt, cap(Workload, Rtt))} || C <- Configs, C =/= limit],
    try
        Runs = [[{C, rep(Netem, C, proplists:get_value(C, Setups), Cell, Ms)} || C <- Configs]
                || _ <- lists:seq(1, Reps)],
        [report_overloaded(C, S) || {C, {S, _Proxy}} <- Setups],
        [begin
             Mine = lists:sort([R || Rep <- Runs, {C1, R} <- Rep, C1 =:= C]),
             {Ops, P50, P99} = lists:nth((length(Mine) + 1) div 2, Mine),
             Reps > 1 andalso io:format("  ~p: ~s ops/s in the ~p runs, the median kept~n",
                                        [C, lists:join(", ", [io_lib:format("~.1f", [O]) || {O, _, _} <- Mine]),
                                         Reps]),
             row(C, setelement(5, Cell, Ms / 1000), Ops, P50, P99)
         end || C <- Configs]
    after
        [teardown(S) || {_, S} <- Setups]
    end.

%% Two nodes of `Config', connected (behind the proxy unless `Rtt' is 0),
%% B running the echo server. Returns the nodes.
setup_pair(Config) ->
    {Started, none} = setup_echo(none, Config, 0, 0),
    Started.

setup_echo(Netem, Config, Rtt, Cap) ->
    {Started, _Proxy} = Setup = start_nodes(Netem, Config, 2, Rtt, Cap),
    try
        connect_all(Config, Started),
        [_, {B, _}] = Started,
        ok = peer:call(B, ?MODULE, echo_server, [Config]),
        Setup
    catch
        Class:Reason:Stack ->
            teardown(Setup),
            erlang:raise(Class, Reason, Stack)
    end.

teardown({Started, Proxy}) ->
    teardown(Started),
    Proxy =:= none orelse port_close(Proxy);
teardown(Started) ->
    [catch peer:stop(P) || {P, _} <- Started].

rep(Netem, limit, undefined, {Workload, Rtt, Payload, Clients, _}, Ms) ->
    #{ops := Ops, p50 := P50, p99 := P99} = cell(Netem, limit, {Workload, Rtt, Payload, Clients, Ms / 1000}),
    {Ops, P50, P99};
rep(_Netem, Config, {[{A, _}, {_, NodeB}], _Proxy}, {_Echo, _, Payload, Clients, _}, Ms) ->
    {Ops, Secs, Rtts} = peer:call(A, ?MODULE, echo_clients, [Config, NodeB, Clients, Payload, Ms], Ms + 120000),
    {Ops / Secs, quantile(Rtts, 0.5), quantile(Rtts, 0.99)}.

%% Sends that weft refused as overloaded (and `fwd' retried) on the nodes of
%% a cell: none is expected with the bench's bounds; say so when there were.
report_overloaded(disterl, _Started) ->
    ok;
report_overloaded(Config, Started) ->
    [case catch peer:call(P, weft, info, []) of
         #{refused := #{overloaded := N}} when N > 0 ->
             io:format("  ~p on ~s: ~p sends refused as overloaded (retried after 1 ms)~n", [Config, Node, N]);
         _ -> ok
     end || {P, Node} <- Started],
    ok.

%% The get replies the replicas had sent and the clients had not received
%% when the window ended (a backlog the window's rate does not pay for).
report_in_flight(Config, A, Started) ->
    Sent = lists:sum([peer:call(P, ?MODULE, kvs_count, [sent]) || {P, _} <- Started]),
    Got = peer:call(A, ?MODULE, kvs_count, [got]),
    io:format("  ~p: ~p get replies sent, ~p received, ~p on their way when the window ended~n",
              [Config, Sent, Got, Sent - Got]).

node_count(kvs3) -> 3;
node_count(_) -> 2.

row(Config, {Workload, Rtt, Payload, Clients, Seconds}, Ops, P50, P99) ->
    #{workload => Workload, config => Config, rtt => Rtt, cap => cap(Workload, Rtt), payload => Payload,
      clients => Clients, seconds => Seconds, ops => Ops, p50 => P50, p99 => P99}.

%% The per-connection cap (Mbit/s) of a cell's emulation; 0: none.
cap(_, 0) -> 0;
cap(echo_uncapped, _) -> 0;
cap(_, _) -> ?CAP_MBIT.

%% `N' distinct ports free on 127.0.0.1 a moment ago, taken below the
%% kernel's ephemeral range (32768-60999 by default): a port the kernel
%% handed out (listen(0)) could be handed out again, as the local port of
%% some outgoing connection, before the node binds it (seen: a cell failed
%% with eaddrinuse).
free_ports(N) ->
    free_ports(N, []).

free_ports(0, Ports) ->
    Ports;
free_ports(N, Ports) ->
    P = 20000 + rand:uniform(12000),
    case not lists:member(P, Ports) andalso gen_tcp:listen(P, [{ip, {127, 0, 0, 1}}]) of
        {ok, S} ->
            gen_tcp:close(S),
            free_ports(N - 1, [P | Ports]);
        _ ->
            free_ports(N, Ports)
    end.

%% The proxy runs until its standard input (this port) closes.
start_proxy(_Netem, 0, _Cap, _Maps) ->
    none;
start_proxy(Netem, Rtt, Cap, Maps) ->
    Args = ["proxy", "--rtt-ms", integer_to_list(Rtt), "--rate-mbit", integer_to_list(Cap)]
        ++ lists:append([["--map", "127.0.0.1:" ++ integer_to_list(X) ++ "=127.0.0.1:" ++ integer_to_list(P)]
                         || {X, P} <- Maps]),
    Port = open_port({spawn_executable, Netem}, [{args, Args}, {line, 256}, binary, exit_status]),
    {os_pid, OsPid} = erlang:port_info(Port, os_pid),
    ok = join_cpu_group_pid(integer_to_list(OsPid)),
    receive
        {Port, {data, {eol, <<"ready">>}}} -> Port;
        {Port, Other} -> error({netem, Other})
    after 10000 -> error(netem_timeout)
    end.

start_node(Name, Config, Listen, Advertise, Ports) ->
    start_node(Name, Config, Listen, Advertise, Ports, #{}).

%% `Extra': weft options of this cell, over the bench's and WEFT_BENCH_OPTS.
start_node(Name, Config, Listen, Advertise, Ports, Extra) ->
    Bench = filename:dirname(code:which(?MODULE)),
    Ebin = filename:dirname(code:which(weft)),
    Dist = case Config of
               disterl ->
                   ["-epmd_module", "weft_bench_epmd", "-start_epmd", "false",
                    "-kernel", "inet_dist_listen_min", integer_to_list(Listen),
                    "-kernel", "inet_dist_listen_max", integer_to_list(Listen),
                    "-weft_bench_ports", Ports];
               _ ->
                   %% weft nodes still have names, but nothing dials their
                   %% distribution: epmd is not needed either.
                   ["-epmd_module", "weft_bench_epmd", "-start_epmd", "false",
                    "-weft_bench_ports", ""]
           end,
    {ok, Peer, Node} = peer:start(#{name => Name, connection => standard_io,
                                    args => ["-pa", Bench, "-pa", Ebin | Dist] ++ vm_flags() ++ config_flags(Config),
                                    wait_boot => 30000}),
    ok = join_cpu_group(Peer),
    case Config of
        disterl -> ok;
        _ ->
            Opts = maps:merge(maps:merge(weft_opts(Config, Listen, Advertise), extra_weft_opts()), Extra),
            ok = peer:call(Peer, weft, start, [Opts])
    end,
    {Peer, Node}.

%% How the OS shares the CPU between the bench's nodes (they all run on
%% this machine), from WEFT_BENCH_CPU_GROUP (`auto', the default: `shared'
%% where the bench can make the cgroup, else `own'):
%% - `own': as `peer' starts them, each node in a session of
%%   its own. Where the kernel's autogroup is on (Linux's
%%   `kernel.sched_autogroup_enabled', the default of most distributions),
%%   each session is a scheduling group of its own: while both nodes are
%%   busy, each gets about half of the CPU whatever its number of threads,
%%   and a node that wants more takes turns between its own threads.
%% - `shared': the bench moves every node it starts, the latency proxy and
%%   the limit's program into one cpu cgroup, `weft-bench' (where the
%%   kernel's autogroup does not apply), so the kernel shares the CPU
%%   between all their threads alike, as between the threads of one
%%   program. Needs a writable cgroup file system (root);
%%   the bench stops with a clear error when it cannot.
%% The flood cell's longest sends depend on it, and so does every
%% comparison with the limit, which runs as one program: with `own', it
%% had the whole CPU to itself where a transport's nodes and proxy had a
%% share each (bench/RESULTS.md, 2026-12-06 "the kernel's autogroup").
%% `make bench-flood' runs both.
cpu_group() ->
    case os:getenv("WEFT_BENCH_CPU_GROUP", "") of
        "own" -> own;
        "shared" -> shared;
        "" -> cpu_group_auto();
        "auto" -> cpu_group_auto();
        Other -> erlang:error({bad_env, "WEFT_BENCH_CPU_GROUP", Other, "auto | own | shared"})
    end.

%% `auto': `shared' where the bench can make its cgroup, else `own' (said
%% once, with the reason).
cpu_group_auto() ->
    case persistent_term:get({?MODULE, cpu_group}, undefined) of
        undefined ->
            G = try cpu_group_dir() of
                    _ -> shared
                catch
                    error:Reason ->
                        io:format("note: nodes keep a CPU group each (WEFT_BENCH_CPU_GROUP=own): ~p~n", [Reason]),
                        own
                end,
            persistent_term:put({?MODULE, cpu_group}, G),
            G;
        G ->
            G
    end.

%% The setting, for the run's header.
cpu_group_label() ->
    case cpu_group() of
        own ->
            Auto = case file:read_file("/proc/sys/kernel/sched_autogroup_enabled") of
                       {ok, <<"1", _/binary>>} -> "on";
                       {ok, <<"0", _/binary>>} -> "off";
                       _ -> "unknown"
                   end,
            "own (a session per node; the kernel's autogroup is " ++ Auto ++ ")";
        shared ->
            "shared (the nodes, the proxy and the limit in the cpu cgroup " ++ cpu_group_dir() ++ ")"
    end.

%% The cgroup of `shared', made when missing: cgroup v1's cpu hierarchy,
%% else v2 (with the cpu controller enabled below the root).
cpu_group_dir() ->
    V1 = "/sys/fs/cgroup/cpu",
    V2 = "/sys/fs/cgroup",
    {Dir, Prepare} =
        case filelib:is_file(filename:join(V1, "cgroup.procs")) of
            true -> {filename:join(V1, "weft-bench"), fun() -> ok end};
            false ->
                {filename:join(V2, "weft-bench"),
                 fun() -> file:write_file(filename:join(V2, "cgroup.subtree_control"), "+cpu") end}
        end,
    case filelib:is_dir(Dir) of
        true -> Dir;
        false ->
            R = case Prepare() of
                    ok -> file:make_dir(Dir);
                    Error -> Error
                end,
            R =:= ok orelse erlang:error({cpu_group, Dir, R, "a CPU group needs a writable cgroup file system (root)"}),
            Dir
    end.

%% With `shared': move the OS process of the node `Peer' (all its threads)
%% into the bench's cgroup; likewise the latency proxy
%% (`join_cpu_group_pid/1') and the limit's program (`cpu_group_shell/0'),
%% so that every process of a cell shares the CPU alike.
join_cpu_group(Peer) ->
    case cpu_group() of
        own -> ok;
        shared -> join_cpu_group_pid(peer:call(Peer, os, getpid, []))
    end.

join_cpu_group_pid(OsPid) ->
    case cpu_group() of
        own -> ok;
        shared ->
            Procs = filename:join(cpu_group_dir(), "cgroup.procs"),
            case file:write_file(Procs, OsPid) of
                ok -> ok;
                Error -> erlang:error({cpu_group, Procs, Error})
            end
    end.

%% A shell prefix that moves the shell into the bench's cgroup (the
%% program it then execs stays there).
cpu_group_shell() ->
    case cpu_group() of
        own -> "";
        shared -> "echo $$ > " ++ filename:join(cpu_group_dir(), "cgroup.procs") ++ " && "
    end.

%% Extra weft options for every weft node, as an Erlang map, e.g.
%% WEFT_BENCH_OPTS="#{io => threads}".
extra_weft_opts() ->
    case os:getenv("WEFT_BENCH_OPTS", "") of
        "" -> #{};
        Text ->
            {ok, Tokens, _} = erl_scan:string(Text ++ "."),
            {ok, Map} = erl_parse:parse_term(Tokens),
            Map
    end.

%% Extra emulator flags for every benchmark node, disterl and weft alike,
%% e.g. WEFT_BENCH_ERL_FLAGS="+sbwt none".
vm_flags() ->
    string:lexemes(os:getenv("WEFT_BENCH_ERL_FLAGS", ""), " ").

%% Emulator flags of a configuration, for custom cells that compare in
%% one run nodes with the VM's defaults (weft_16) and nodes with a flag:
%% schedulers that do not busy-wait before they sleep (weft_16_nospin), or
%% binaries up to 4 MB in the binary allocator's multiblock carriers
%% (weft_16_sbct; the README's advice for large messages).
config_flags(weft_16_nospin) -> ["+sbwt", "none", "+sbwtdcpu", "none", "+sbwtdio", "none"];
config_flags(weft_16_sbct) -> ["+MBsbct", "4096"];
config_flags(_) -> [].

%% Send queues: weft bounds them (128 MiB per peer, 512 MiB in all, by
%% default) and refuses more with `{error, overloaded}'. The echo and
%% latency cells queue up to 128 clients x 8 MB = 1 GiB toward one peer, so
%% the bench raises both bounds, as a user with such a workload would.
-define(BENCH_QUEUE_LIMIT, 4 * 1024 * 1024 * 1024).
-define(BENCH_QUEUE_TOTAL_LIMIT, 8 * 1024 * 1024 * 1024).

weft_opts(weft_1, Listen, Advertise) ->
    #{listen => {{127, 0, 0, 1}, Listen}, advertise => [{{127, 0, 0, 1}, Advertise}],
      channels => [default], parallelism => 1, cookie => <<"bench">>,
      send_queue_limit => ?BENCH_QUEUE_LIMIT, send_queue_total_limit => ?BENCH_QUEUE_TOTAL_LIMIT};
weft_opts(weft_16, Listen, Advertise) ->
    #{listen => {{127, 0, 0, 1}, Listen}, advertise => [{{127, 0, 0, 1}, Advertise}],
      channels => [default, gossip, #{name => vnode, parallelism => 16}],
      affinity => true, cookie => <<"bench">>,
      send_queue_limit => ?BENCH_QUEUE_LIMIT, send_queue_total_limit => ?BENCH_QUEUE_TOTAL_LIMIT};
%% weft_1_wait: weft_1 whose channel waits for room (`overload => wait')
%% past 16 MiB queued for a peer, as Distributed Erlang suspends a sender
%% on a busy connection (its `dist_buf_busy_limit' is 1 MiB).
weft_opts(weft_1_wait, Listen, Advertise) ->
    maps:merge(weft_opts(weft_1, Listen, Advertise),
               #{channels => [#{name => default, overload => wait, wait_timeout => infinity}],
                 send_queue_limit => 16 * 1024 * 1024});
%% Variants of 16 lanes, for custom cells: weft_16's options and these.
weft_opts(Config, Listen, Advertise) ->
    maps:merge(weft_opts(weft_16, Listen, Advertise), variant(Config)).

%% weft_16_own: without the shared lane (every lane's small messages on its
%% own connection, as before it). weft_16_nopool: received large frames in
%% binaries from the VM's allocator rather than in weft's pool of buffers.
%% weft_16_p1 / _p4 / _p8: that many pollers per node; weft_16_sched:
%% pollers on the schedulers only. weft_16_nospin, weft_16_sbct: nodes
%% started with other emulator flags (config_flags/1).
variant(weft_16_own) -> #{shared_lane => false};
variant(weft_16_nopool) -> #{large_frame_pool => 0};
variant(weft_16_p1) -> #{pollers => 1};
variant(weft_16_p4) -> #{pollers => 4};
variant(weft_16_p8) -> #{pollers => 8};
variant(weft_16_sched) -> #{io => schedulers};
variant(weft_16_nospin) -> #{};
variant(weft_16_sbct) -> #{}.

%% Connect the first node to every other (for weft: join them all, and
%% wait until every node has all its lanes to every other).
connect_all(disterl, [{A, _} | Others]) ->
    [true = peer:call(A, net_kernel, connect_node, [N]) || {_, N} <- Others],
    ok;
connect_all(_Weft, [{A, _} | Others] = All) ->
    [begin
         Spec = peer:call(P, weft, node_spec, []),
         ok = peer:call(A, weft, sync_join, [Spec, 10000])
     end || {P, _} <- Others],
    [wait(fun() -> lanes_up(peer:call(P, weft, info, []), N) end, 200)
     || {P, M} <- All, {_, N} <- All, M =/= N],
    ok.

lanes_up(#{peers := Peers}, Node) ->
    case Peers of
        #{Node := #{state := up, channels := Chs}} ->
            lists:all(fun(#{state := S}) -> S =:= connected end, lists:append(maps:values(Chs)));
        _ -> false
    end.

wait(F, 0) -> F() orelse error(timeout);
wait(F, N) ->
    case F() of
        true -> ok;
        false -> timer:sleep(50), wait(F, N - 1)
    end.

%%% On the benchmark nodes

%% weft:forward/3,4, retried after 1 ms while the send queue is full
%% (`{error, overloaded}'), as an application would; any other error
%% crashes the cell. The bench's bounds (?BENCH_QUEUE_LIMIT) are above what
%% any cell queues, so a retry should not happen: `overloaded/1' reads
%% weft's count of them after each cell.
fwd(Dest, Msg, Opts) ->
    case weft:forward(Dest, Msg, Opts) of
        ok -> ok;
        {error, overloaded} -> timer:sleep(1), fwd(Dest, Msg, Opts)
    end.

fwd(Node, Name, Msg, Opts) ->
    fwd({Name, Node}, Msg, Opts).

channel(disterl) -> default;
channel(weft_1) -> default;
channel(weft_1_wait) -> default;
%% (weft_16 and its variants: variant/1)
channel(_Weft16) -> vnode.

%% @doc Register `bench_echo': answers each request with its payload.
echo_server(Config) ->
    Pid = spawn(fun() -> echo_loop(Config) end),
    register(bench_echo, Pid),
    register(bench_key_sink, spawn(fun() -> key_sink_loop(Config) end)),
    ok.

echo_loop(disterl) ->
    receive
        {From, Ref, Payload} -> From ! {Ref, Payload};
        {ack, From, Ref, _Bulk} -> From ! {Ref, ack}
    end,
    echo_loop(disterl);
echo_loop(Config) ->
    receive
        {From, Ref, Payload, Key, Channel} ->
            ok = fwd(From, {Ref, Payload}, #{channel => Channel, partition_key => Key});
        {ack, From, Ref, _Bulk, Key, Channel} ->
            ok = fwd(From, {Ref, ack}, #{channel => Channel, partition_key => Key})
    end,
    echo_loop(Config).

%% @doc `Clients' processes echo `Payload' bytes off `Node' for `Ms'
%% milliseconds. Returns {Ops, Seconds, RoundTripsMsSorted}.
echo_clients(Config, Node, Clients, PayloadSize, Ms) ->
    Payload = binary:copy(<<"w">>, PayloadSize),
    Self = self(),
    Channel = channel(Config),
    Pids = [spawn_link(fun() -> client(Config, Channel, Node, Payload, I, Self) end)
            || I <- lists:seq(1, Clients)],
    T0 = erlang:monotonic_time(microsecond),
    timer:sleep(Ms),
    [P ! stop || P <- Pids],
    Results = [receive {done, P, Rtts} -> Rtts end || P <- Pids],
    Secs = (erlang:monotonic_time(microsecond) - T0) / 1.0e6,
    Rtts = lists:sort(lists:append(Results)),
    {length(Rtts), Secs, Rtts}.

client(Config, Channel, Node, Payload, Key, Parent) ->
    client(Config, Channel, Node, Payload, Key, Parent, []).

client(Config, Channel, Node, Payload, Key, Parent, Acc) ->
    receive
        stop -> Parent ! {done, self(), Acc}
    after 0 ->
            T = erlang:monotonic_time(microsecond),
            Ref = make_ref(),
            case Config of
                disterl -> {bench_echo, Node} ! {self(), Ref, Payload};
                _ -> ok = fwd(Node, bench_echo, {self(), Ref, Payload, Key, Channel},
                                       #{channel => Channel, partition_key => Key})
            end,
            receive
                {Ref, _} ->
                    client(Config, Channel, Node, Payload, Key, Parent,
                           [(erlang:monotonic_time(microsecond) - T) / 1000 | Acc]);
                stop ->
                    Parent ! {done, self(), Acc}
            end
    end.

%% @doc Head-of-line blocking: one client pings `Node' with 100-byte
%% messages on the `default' channel while 4 senders stream `BulkSize'
%% messages (each acknowledged before the next) on the bulk channel. Returns
%% the pings as {Ops, Seconds, RoundTripsMsSorted}.
hol_run(Config, Node, BulkSize, Ms) ->
    Bulk = binary:copy(<<"b">>, BulkSize),
    BulkChannel = channel(Config),
    Bulkers = [spawn_link(fun() -> bulk(Config, BulkChannel, Node, Bulk, K) end) || K <- lists:seq(1, 4)],
    ping_while(Config, default, Node, Bulkers, Ms).

%% One client pings `Node' with 100-byte messages on key 0 of `Channel'
%% for `Ms', half a second after `Background' started; then they are
%% killed. Returns the pings as {Ops, Seconds, RoundTripsMsSorted}.
ping_while(Config, Channel, Node, Background, Ms) ->
    timer:sleep(500),
    Self = self(),
    Pinger = spawn_link(fun() -> client(Config, Channel, Node, binary:copy(<<"p">>, 100), 0, Self) end),
    T0 = erlang:monotonic_time(microsecond),
    timer:sleep(Ms),
    Pinger ! stop,
    Rtts = receive {done, Pinger, R} -> lists:sort(R) end,
    Secs = (erlang:monotonic_time(microsecond) - T0) / 1.0e6,
    [begin unlink(B), exit(B, kill) end || B <- Background],
    {length(Rtts), Secs, Rtts}.

-define(KEYHOL_BATCH, 100).
-define(KEYHOL_ACKS, 10).

%% @doc Head-of-line blocking across keys: one client pings `Node' with
%% 100-byte messages on key 0 of the bench's channel while `Flooders'
%% senders flood `Size'-byte messages to `bench_key_sink' on keys
%% 1..`Flooders' of the same channel, each asking for an acknowledgement
%% every ?KEYHOL_BATCH messages and waiting while ?KEYHOL_ACKS are missing.
%% Returns the pings as {Ops, Seconds, RoundTripsMsSorted}.
keyhol_run(Config, Node, Flooders, Size, Ms) ->
    Msg = binary:copy(<<"k">>, Size),
    Channel = channel(Config),
    Floods = [spawn_link(fun() -> key_flood(Config, Channel, Node, Msg, K, queue:new()) end)
              || K <- lists:seq(1, Flooders)],
    ping_while(Config, Channel, Node, Floods, Ms).

key_flood(Config, Channel, Node, Msg, Key, Out) ->
    [to_sink(Config, Channel, Node, {sink, Msg}, Key) || _ <- lists:seq(1, ?KEYHOL_BATCH)],
    Ref = make_ref(),
    to_sink(Config, Channel, Node, {ack, self(), Ref, Key, Channel}, Key),
    Waiting = queue:in(Ref, Out),
    case queue:len(Waiting) > ?KEYHOL_ACKS of
        true ->
            {{value, Oldest}, Rest} = queue:out(Waiting),
            receive {Oldest, ack} -> ok end,
            key_flood(Config, Channel, Node, Msg, Key, Rest);
        false ->
            key_flood(Config, Channel, Node, Msg, Key, Waiting)
    end.

to_sink(disterl, _Channel, Node, Msg, _Key) -> {bench_key_sink, Node} ! Msg;
to_sink(_, Channel, Node, Msg, Key) -> ok = fwd(Node, bench_key_sink, Msg, #{channel => Channel, partition_key => Key}).

key_sink_loop(Config) ->
    receive
        {sink, _} -> ok;
        {ack, From, Ref, _Key, _Channel} when Config =:= disterl -> From ! {Ref, ack};
        {ack, From, Ref, Key, Channel} -> ok = fwd(From, {Ref, ack}, #{channel => Channel, partition_key => Key})
    end,
    key_sink_loop(Config).

%% @doc `Actors' processes each make `Count' round trips of `PayloadSize'
%% bytes, as fast as they can. Returns {Ops, SecondsForAllToFinish, Rtts}.
latency_run(Config, Node, Actors, PayloadSize, Count) ->
    Payload = binary:copy(<<"l">>, PayloadSize),
    Self = self(),
    Channel = channel(Config),
    T0 = erlang:monotonic_time(microsecond),
    Pids = [spawn_link(fun() -> counted(Config, Channel, Node, Payload, I, Count, Self, []) end)
            || I <- lists:seq(1, Actors)],
    Rtts = lists:sort(lists:append([receive {done, P, R} -> R end || P <- Pids])),
    Secs = (erlang:monotonic_time(microsecond) - T0) / 1.0e6,
    {length(Rtts), Secs, Rtts}.

counted(_Config, _Channel, _Node, _Payload, _Key, 0, Parent, Acc) ->
    Parent ! {done, self(), Acc};
counted(Config, Channel, Node, Payload, Key, Left, Parent, Acc) ->
    T = erlang:monotonic_time(microsecond),
    Ref = make_ref(),
    case Config of
        disterl -> {bench_echo, Node} ! {self(), Ref, Payload};
        _ -> ok = fwd(Node, bench_echo, {self(), Ref, Payload, Key, Channel},
                               #{channel => Channel, partition_key => Key})
    end,
    receive {Ref, _} -> ok end,
    counted(Config, Channel, Node, Payload, Key, Left - 1, Parent,
            [(erlang:monotonic_time(microsecond) - T) / 1000 | Acc]).

-define(KVS_VNODES, 16).
-define(KVS_KEYS, 256).

kvs_name(Key) ->
    list_to_atom("bench_kvs_" ++ integer_to_list(Key rem ?KVS_VNODES)).

%% @doc 16 registered vnode processes, each holding its share of 256 keys,
%% every value `ValueSize' bytes.
kvs_server(Config, ValueSize) ->
    Value = binary:copy(<<"v">>, ValueSize),
    persistent_term:put({?MODULE, kvs_sent}, counters:new(1, [write_concurrency])),
    [begin
         Keys = [K || K <- lists:seq(0, ?KVS_KEYS - 1), K rem ?KVS_VNODES =:= V],
         Pid = spawn(fun() -> kvs_loop(Config, maps:from_list([{K, Value} || K <- Keys])) end),
         register(kvs_name(V), Pid)
     end || V <- lists:seq(0, ?KVS_VNODES - 1)],
    ok.

kvs_loop(Config, Store) ->
    receive
        {get, From, Ref, Key, Channel} ->
            kvs_reply(Config, From, {Ref, maps:get(Key, Store)}, Key, Channel),
            counters:add(persistent_term:get({?MODULE, kvs_sent}), 1, 1),
            kvs_loop(Config, Store);
        {put, From, Ref, Key, Value, Channel} ->
            kvs_reply(Config, From, {Ref, ok}, Key, Channel),
            kvs_loop(Config, Store#{Key => Value})
    end.

kvs_reply(disterl, From, Msg, _Key, _Channel) -> From ! Msg;
kvs_reply(_, From, Msg, Key, Channel) -> ok = fwd(From, Msg, #{channel => Channel, partition_key => Key}).

%% @doc `Clients' processes run 90 % gets / 10 % puts for `Ms' milliseconds.
%% Each request goes to the key's vnode on every node of `Nodes' and is done
%% when `Quorum' of them have answered: one node and a quorum of 1 for
%% `kvs'; 3 replicas (this node first, reached by a local send) and a quorum
%% of 2 for `kvs3', as in the paper's KVS.
kvs_clients(Config, Nodes, Quorum, Clients, ValueSize, Ms) ->
    Value = binary:copy(<<"n">>, ValueSize),
    persistent_term:put({?MODULE, kvs_got}, counters:new(1, [write_concurrency])),
    Self = self(),
    Channel = channel(Config),
    Pids = [spawn_link(fun() ->
                               rand:seed(exsss, {I, I, I}),
                               kvs_client(Config, Channel, {Nodes, Quorum}, Value, Self, [])
                       end)
            || I <- lists:seq(1, Clients)],
    T0 = erlang:monotonic_time(microsecond),
    timer:sleep(Ms),
    [P ! stop || P <- Pids],
    Rtts = lists:sort(lists:append([receive {done, P, R} -> R end || P <- Pids])),
    Secs = (erlang:monotonic_time(microsecond) - T0) / 1.0e6,
    {length(Rtts), Secs, Rtts}.

kvs_client(Config, Channel, {Nodes, Quorum} = Replicas, Value, Parent, Acc) ->
    receive
        stop -> kvs_done(Parent, Acc)
    after 0 ->
            Key = rand:uniform(?KVS_KEYS) - 1,
            Ref = make_ref(),
            Msg = case rand:uniform(10) of
                      1 -> {put, self(), Ref, Key, Value, Channel};
                      _ -> {get, self(), Ref, Key, Channel}
                  end,
            T = erlang:monotonic_time(microsecond),
            [case Config of
                 disterl -> {kvs_name(Key), N} ! Msg;
                 _ -> ok = fwd(N, kvs_name(Key), Msg, #{channel => Channel, partition_key => Key})
             end || N <- Nodes],
            case quorum(Ref, Quorum) of
                ok ->
                    kvs_client(Config, Channel, Replicas, Value, Parent,
                               [(erlang:monotonic_time(microsecond) - T) / 1000 | Acc]);
                stop ->
                    kvs_done(Parent, Acc)
            end
    end.

%% Count the get replies still in the mailbox, then report.
kvs_done(Parent, Acc) ->
    receive
        {R, V} when is_reference(R) -> got_reply(V), kvs_done(Parent, Acc)
    after 0 ->
            Parent ! {done, self(), Acc}
    end.

got_reply(V) when is_binary(V) -> counters:add(persistent_term:get({?MODULE, kvs_got}), 1, 1);
got_reply(_) -> ok.

%% @doc Get replies sent by this node's vnodes (`sent') or received by its
%% clients (`got') in the last kvs cell.
kvs_count(What) ->
    Key = case What of sent -> kvs_sent; got -> kvs_got end,
    case persistent_term:get({?MODULE, Key}, undefined) of
        undefined -> 0;
        C -> counters:get(C, 1)
    end.

%% Wait for `N' replies to `Ref'; late replies to earlier requests are
%% dropped on the way, so the mailbox does not grow.
quorum(_Ref, 0) ->
    ok;
quorum(Ref, N) ->
    receive
        {Ref, V} -> got_reply(V), quorum(Ref, N - 1);
        {R, V} when is_reference(R) -> got_reply(V), quorum(Ref, N);
        stop -> stop
    end.

bulk(Config, Channel, Node, Bulk, Key) ->
    Ref = make_ref(),
    case Config of
        disterl -> {bench_echo, Node} ! {ack, self(), Ref, Bulk};
        _ -> ok = fwd(Node, bench_echo, {ack, self(), Ref, Bulk, Key, Channel},
                               #{channel => Channel, partition_key => Key})
    end,
    receive {Ref, ack} -> bulk(Config, Channel, Node, Bulk, Key) end.

quantile([], _) -> 0.0;
quantile(Sorted, Q) ->
    lists:nth(max(1, round(length(Sorted) * Q)), Sorted).

%%% Output

csv(#{workload := W, config := C, rtt := R, cap := Cap, payload := P, clients := N,
      seconds := S, ops := Ops, p50 := P50, p99 := P99}) ->
    io_lib:format("~p,~p,~p,~p,~p,~p,~p,~.2f,~.3f,~.3f~n", [W, C, R, Cap, P, N, S, Ops, P50 * 1.0, P99 * 1.0]).

pretty(#{config := C, rtt := R, payload := P, clients := N, ops := Ops, p50 := P50, p99 := P99}) ->
    io_lib:format("~-8s rtt ~2b ms  ~7s x ~3b: ~9.2f ops/s  p50 ~8.2f ms  p99 ~8.2f ms",
                  [C, R, size_label(P), N, Ops * 1.0, P50 * 1.0, P99 * 1.0]).

size_label(P) when P >= 1024 * 1024 -> integer_to_list(P div (1024 * 1024)) ++ " MB";
size_label(P) when P >= 1024 -> integer_to_list(P div 1024) ++ " KB";
size_label(P) -> integer_to_list(P) ++ " B".

%% One line per cell: ops/s of each configuration and the ratios of weft
%% over Distributed Erlang and over the limit.
table(Rows) ->
    Echo = [R || #{workload := W} = R <- Rows, lists:member(W, [echo, kvs, kvs3, echo_uncapped])],
    Hol = [R || #{workload := hol} = R <- Rows],
    KeyHol = [R || #{workload := keyhol} = R <- Rows],
    Lat = [R || #{workload := latency} = R <- Rows],
    Flood = [R || #{workload := flood} = R <- Rows],
    Mem = [R || #{workload := memory} = R <- Rows],
    Wait = [R || #{config := weft_1_wait} = R <- Rows],
    [echo_table(Echo) || Echo =/= []] ++ [["\n", wait_table(Wait, Echo)] || Wait =/= []]
        ++ [["\n", hol_table(Hol)] || Hol =/= []]
        ++ [["\n", keyhol_table(KeyHol)] || KeyHol =/= []]
        ++ [["\n", latency_table(Lat)] || Lat =/= []]
        ++ [["\n", flood_table(Flood)] || Flood =/= []]
        ++ [["\n", memory_table(Mem)] || Mem =/= []].

%% The flood's and the memory cell's own CSV files, next to the run's.
extra_csv(Csv, What) ->
    filename:rootname(Csv) ++ "-" ++ atom_to_list(What) ++ ".csv".

extra_header(flood) ->
    "config,senders,run,payload_bytes,messages,send_s,delivered_s,call_p50_us,call_p99_us,call_p999_us,"
    "call_p9999_us,call_max_us,calls_over_1ms,calls_over_8ms,long_schedules,long_schedule_max_ms,"
    "long_schedule_by,long_gcs,long_gc_max_ms,busy_dist_port,overloaded,long_gc_by,recv_sched_util_pct,"
    "recv_sched_switches\n";
extra_header(profile) ->
    ["config,payload_bytes,clients,window_s,round_trips_per_s,cpu_us_per_rt,context_switches_per_rt,"
     "page_faults_per_rt,ipis_per_rt,syscalls_per_rt", [[",", S, "_per_rt"] || S <- ?PROFILE_SYSCALLS], "\n"];
extra_header(memory) ->
    "config,payload_bytes,seconds,bound_bytes,base_rss_bytes,peak_rss_bytes,base_erlang_bytes,peak_erlang_bytes,"
    "peak_queued_bytes,accepted,overloaded,refused_overloaded,received,drain_ms\n".

extra_line(#{workload := flood} = R) ->
    io_lib:format("~p,~p,~p,~p,~p,~.3f,~s,~p,~p,~p,~p,~p,~p,~p,~p,~p,\"~s\",~p,~p,~p,~p,\"~s\",~s,~p~n",
                  [maps:get(K, R) || K <- [config, clients, rep, payload, messages, send_s]]
                  ++ [secs_csv(maps:get(delivered_s, R))]
                  ++ [maps:get(K, R) || K <- [p50_us, p99_us, p999_us, p9999_us, call_max_us, over_1ms,
                                              over_10ms, long_schedules, long_schedule_max_ms]]
                  ++ [who_label(maps:get(long_schedule_by, R))]
                  ++ [maps:get(K, R) || K <- [long_gcs, long_gc_max_ms, busy_dist_port, overloaded]]
                  ++ [who_label(maps:get(long_gc_by, R)), util_label(maps:get(recv_sched_util, R)),
                      maps:get(recv_sched_switches, R)]);
extra_line(#{workload := profile, per_rt := Per} = R) ->
    [io_lib:format("~p,~p,~p,~p,~.1f", [maps:get(K, R) || K <- [config, payload, clients, window]] ++ [maps:get(rate, R)]),
     [io_lib:format(",~.3f", [maps:get(E, Per, 0.0)]) || E <- [cpu_us, context_switches, page_faults, ipis, syscalls | ?PROFILE_SYSCALLS]],
     "\n"];
extra_line(#{workload := memory, base := B} = R) ->
    io_lib:format("~p,~p,~p,~p,~p,~p,~p,~p,~p,~p,~p,~p,~p,~p~n",
                  [maps:get(config, R), maps:get(payload, R), maps:get(seconds, R), maps:get(bound, R),
                   maps:get(rss, B), maps:get(peak_rss, R), maps:get(erlang, B), maps:get(peak_erlang, R),
                   maps:get(peak_queued, R), maps:get(accepted, R), maps:get(overloaded, R),
                   maps:get(refused_overloaded, R), maps:get(received, R), maps:get(drain_ms, R)]).

secs_csv(timeout) -> "timeout";
secs_csv(S) -> io_lib:format("~.3f", [S]).

write_samples(File, #{payload := P, samples := Samples}) ->
    filelib:is_file(File)
        orelse (ok = file:write_file(File, "payload_bytes,t_ms,rss_bytes,erlang_bytes,queued_bytes,accepted,overloaded\n")),
    ok = file:write_file(File, [io_lib:format("~p,~p,~p,~p,~p,~p,~p~n", [P, T, Rss, E, Q, A, O])
                                || #{t := T, rss := Rss, erlang := E, queued := Q, accepted := A,
                                     overloaded := O} <- Samples], [append]).

who_label(By) ->
    lists:join("; ", [io_lib:format("~s: ~p (max ~p ms)", [who_name(W), N, M]) || {W, N, M} <- By]).

who_name(W) when is_atom(W) -> atom_to_list(W);
who_name({port, Name}) -> "port " ++ Name;
who_name({M, F, A}) -> io_lib:format("~p:~p/~p", [M, F, A]);
who_name(W) -> io_lib:format("~p", [W]).

flood_table(Rows) ->
    Head = "| config | senders | run | messages sent in | all delivered in | forward/send p50 / p99 / p99.9 / p99.99 us "
           "| longest call ms | calls > 1 ms | calls >= 8.2 ms | long_schedule >= 10 ms: count, max ms (who) "
           "| long_gc >= 10 ms | busy_dist_port | receiver's schedulers busy % | receiver's scheduler thread switches |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    Lines = [io_lib:format("| ~p | ~p | ~p | ~.2f s | ~s | ~p / ~p / ~p / ~p | ~.1f | ~p | ~p | ~p, ~p (~s) | ~p | ~p | ~s | ~p |~n",
                           [C, S, Rep, Ts, secs(Td), P50, P99, P999, P9999, Max / 1000, O1, O8, Nls, LsMax,
                            who_label(By), Ngc, Bdp, util_label(U), Sw])
             || #{config := C, clients := S, rep := Rep, send_s := Ts, delivered_s := Td, p50_us := P50,
                  p99_us := P99, p999_us := P999, p9999_us := P9999, call_max_us := Max, over_1ms := O1,
                  over_10ms := O8, long_schedules := Nls, long_schedule_max_ms := LsMax,
                  long_schedule_by := By, long_gcs := Ngc, busy_dist_port := Bdp, recv_sched_util := U,
                  recv_sched_switches := Sw}
                 <- lists:sort(fun(A, B) -> flood_key(A) =< flood_key(B) end, Rows)],
    [Head | Lines].

flood_key(#{clients := S, config := C, rep := R}) -> {S, C, R}.

%% Per-scheduler utilisation, "58/0".
util_label(Util) -> lists:join("/", [integer_to_list(U) || U <- Util]).

memory_table(Rows) ->
    Head = "| payload | send_queue_limit MiB | A's RSS before MiB | peak RSS above it MiB | peak erlang:memory(total) above MiB "
           "| peak queued MiB | accepted | {error, overloaded} | received by B after SIGCONT | drained in ms |\n"
           "|---|---|---|---|---|---|---|---|---|---|\n",
    Lines = [io_lib:format("| ~s | ~.1f | ~.1f | ~.1f | ~.1f | ~.1f | ~p | ~p | ~p | ~p |~n",
                           [size_label(P), mb(Bound), mb(R0), mb(R - R0), mb(E - E0), mb(Q), Acc, Over, Rec, Drain])
             || #{payload := P, bound := Bound, base := #{rss := R0, erlang := E0}, peak_rss := R,
                  peak_erlang := E, peak_queued := Q, accepted := Acc, overloaded := Over, received := Rec,
                  drain_ms := Drain} <- Rows],
    [Head | Lines].

%% Fixed work per actor: the time for all to finish, and per-request latency.
latency_table(Rows) ->
    Cells = lists:usort([{R, P, N} || #{rtt := R, payload := P, clients := N} <- Rows]),
    Get = fun(Key, Config) ->
                  case [X || #{rtt := R, payload := P, clients := N, config := C} = X <- Rows,
                             {R, P, N} =:= Key, C =:= Config] of
                      [Row | _] -> Row;  % (a cell run twice in one custom run: the first)
                      [] -> none
                  end
          end,
    Head = "| workload | RTT | payload | actors | requests each | disterl s (p50 / p99 ms) "
           "| weft N=1 s (p50 / p99 ms) | weft N=16 s (p50 / p99 ms) | limit s (p50 / p99 ms) "
           "| disterl time / N=16 time | N=16 / limit |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|\n",
    Lines = [begin
                 [D, W1, W16, L] = [Get(Key, C) || C <- [disterl, weft_1, weft_16, limit]],
                 %% For latency rows `seconds' holds the requests per actor and
                 %% `ops' is all requests over the time for all to finish.
                 Fin = fun(none) -> "n/a";
                          (#{ops := Ops, p50 := A, p99 := B, clients := Act, seconds := Each}) ->
                               io_lib:format("~.2f (~.1f / ~.1f)", [Act * Each / Ops, A * 1.0, B * 1.0])
                       end,
                 Ops = fun(none) -> 0.0; (#{ops := O}) -> O end,
                 [#{seconds := Each} | _] = [X || X <- [D, W1, W16, L], X =/= none],
                 io_lib:format("| latency | ~s | ~s | ~p | ~p | ~s | ~s | ~s | ~s | ~s | ~s |~n",
                               [rtt_label(R), size_label(P), N, Each, Fin(D), Fin(W1), Fin(W16), Fin(L),
                                ratio(Ops(W16), Ops(D)), ratio(Ops(W16), Ops(L))])
             end || {R, P, N} = Key <- Cells],
    [Head | Lines].

%% Small-message round-trip latency while bulk transfers run: on another
%% channel (weft N=16) or on the same connection (disterl, weft N=1).
hol_table(Rows) ->
    Cells = lists:usort([{R, P} || #{rtt := R, payload := P} <- Rows]),
    Get = fun(Key, Config) ->
                  [Row] = [X || #{rtt := R, payload := P, config := C} = X <- Rows, {R, P} =:= Key, C =:= Config],
                  Row
          end,
    Head = "| workload | RTT | bulk payload | disterl ping p50 / p99 ms | weft N=1 p50 / p99 ms "
           "| weft N=16 p50 / p99 ms | N=16 p99 vs disterl |\n"
           "|---|---|---|---|---|---|---|\n",
    Lines = [begin
                 [D, W1, W16] = [Get(Key, C) || C <- [disterl, weft_1, weft_16]],
                 Lat = fun(#{p50 := A, p99 := B}) -> io_lib:format("~.2f / ~.2f", [A * 1.0, B * 1.0]) end,
                 io_lib:format("| hol | ~s | ~s | ~s | ~s | ~s | ~s lower |~n",
                               [rtt_label(R), size_label(P), Lat(D), Lat(W1), Lat(W16),
                                ratio(maps:get(p99, D), maps:get(p99, W16))])
             end || {R, P} = Key <- Cells],
    [Head | Lines].

keyhol_table(Rows) ->
    Cells = lists:usort([{R, P, N} || #{rtt := R, payload := P, clients := N} <- Rows]),
    Configs = [disterl, weft_1, weft_16, weft_16_own],
    Head = "| workload | RTT | flood | disterl ping p50 / p99 ms | weft N=1 p50 / p99 ms "
           "| weft N=16 p50 / p99 ms | weft N=16 without the shared lane p50 / p99 ms |\n"
           "|---|---|---|---|---|---|---|\n",
    Lines = [begin
                 Lat = fun(C) ->
                               case [X || #{rtt := R1, payload := P1, clients := N1, config := C1} = X <- Rows,
                                          {R1, P1, N1} =:= Key, C1 =:= C] of
                                   [#{p50 := A, p99 := B} | _] -> io_lib:format("~.2f / ~.2f", [A * 1.0, B * 1.0]);
                                   [] -> "n/a"
                               end
                       end,
                 io_lib:format("| keyhol | ~s | ~p keys x ~s | ~s | ~s | ~s | ~s |~n",
                               [rtt_label(R), N, size_label(P) | [Lat(C) || C <- Configs]])
             end || {R, P, N} = Key <- Cells],
    [Head | Lines].

echo_table(Rows) ->
    Cells = lists:usort([{W, R, P, N} || #{workload := W, rtt := R, payload := P, clients := N} <- Rows]),
    Get = fun(Key, Config) ->
                  case [X || #{workload := W, rtt := R, payload := P, clients := N, config := C} = X <- Rows,
                             {W, R, P, N} =:= Key, C =:= Config] of
                      [] -> 0.0;
                      %% (a cell run more than once in one custom run: the median)
                      Found -> lists:nth((length(Found) + 1) div 2, lists:sort([maps:get(ops, X) || X <- Found]))
                  end
          end,
    Head = "| workload | RTT | payload | clients | disterl ops/s | weft N=1 ops/s | weft N=16 ops/s | limit ops/s "
           "| N=1 / disterl | N=16 / disterl | N=16 / limit |\n"
           "|---|---|---|---|---|---|---|---|---|---|---|\n",
    Lines = [begin
                 D = Get(Key, disterl), W1 = Get(Key, weft_1), W16 = Get(Key, weft_16), L = Get(Key, limit),
                 io_lib:format("| ~p | ~s | ~s | ~p | ~s | ~s | ~s | ~s | ~s | ~s | ~s |~n",
                               [W, rtt_label(R), size_label(P), N, ops(D), ops(W1), ops(W16), ops(L),
                                ratio(W1, D), ratio(W16, D), ratio(W16, L)])
             end || {W, R, P, N} = Key <- Cells],
    [Head | Lines].

%% The cells also run with a channel that waits for room (`weft_1_wait'):
%% against Distributed Erlang and weft's default on 1 lane.
wait_table(Wait, Rows) ->
    Head = "| workload | RTT | payload | clients | disterl ops/s | weft N=1 ops/s "
           "| weft N=1, `overload => wait` ops/s | N=1 / disterl | N=1 wait / disterl |\n"
           "|---|---|---|---|---|---|---|---|---|\n",
    Get = fun(Key, Config) ->
                  case [maps:get(ops, X) || #{workload := W, rtt := R, payload := P, clients := N, config := C} = X <- Rows,
                                            {W, R, P, N} =:= Key, C =:= Config] of
                      [Ops] -> Ops;
                      _ -> 0.0
                  end
          end,
    Lines = [begin
                 Key = {W, R, P, N},
                 D = Get(Key, disterl), W1 = Get(Key, weft_1),
                 io_lib:format("| ~p | ~s | ~s | ~p | ~s | ~s | ~s | ~s | ~s |~n",
                               [W, rtt_label(R), size_label(P), N, ops(D), ops(W1), ops(Ops),
                                ratio(W1, D), ratio(Ops, D)])
             end || #{workload := W, rtt := R, payload := P, clients := N, ops := Ops} <- Wait],
    [Head | Lines].

%% A configuration the cell does not run (no limit for KVS) shows as n/a.
ops(Zero) when Zero == 0 -> "n/a";
ops(Ops) -> io_lib:format("~.1f", [Ops * 1.0]).

rtt_label(0) -> "none (loopback)";
rtt_label(R) -> integer_to_list(R) ++ " ms".

ratio(Zero, _) when Zero == 0 -> "n/a";
ratio(_, Zero) when Zero == 0 -> "n/a";
ratio(A, B) -> io_lib:format("~.2fx", [A / B]).

%%% Flood: how long one send blocks its caller and its scheduler

%% `{flood, 0, PayloadBytes, Senders, Messages}': `Senders' processes on A
%% send `Messages' messages in all (each a `PayloadBytes' binary) to one
%% counting process on B, as fast as each send returns, over plain loopback.
%% Each send is timed with erlang:monotonic_time(microsecond) around it
%% (weft:forward/3, or erlang:send/2 for disterl); the longest and a
%% histogram are kept. Meanwhile erlang:system_monitor/2 on A reports
%% `long_schedule' (10 ms), `long_gc' (10 ms) and `busy_dist_port'. The
%% nodes of each configuration start once; ?FLOOD_REPS runs alternate
%% between the configurations.
-define(FLOOD_REPS, 3).
%% Histogram buckets: 1 us each below 1024 us, then one per power of 2.
-define(HIST_LINEAR, 1024).
-define(HIST_BUCKETS, (?HIST_LINEAR + 40)).

flood_cell(Configs, {flood, 0, Payload, Senders, Count}) ->
    %% `local': the same loop, sending to a process on A itself: what the
    %% machine alone does to the figures (other load, preemption).
    Setups = [{C, setup_pair(case C of local -> disterl; _ -> C end)} || C <- Configs],
    try
        Runs = [[begin
                     [{A, NodeA}, {B, NodeB}] = proplists:get_value(C, Setups),
                     {Counter, To} = case C of local -> {A, NodeA}; _ -> {B, NodeB} end,
                     ok = peer:call(Counter, ?MODULE, flood_counter, [C, Count, NodeA]),
                     R = peer:call(A, ?MODULE, flood_run, [C, To, Senders, Count, Payload], 300000),
                     Row = maps:merge(R, #{workload => flood, config => C, rtt => 0, cap => 0,
                                           payload => Payload, clients => Senders, seconds => Count,
                                           rep => Rep}),
                     io:format("  ~s~n", [pretty_flood(Row)]),
                     Row
                 end || C <- Configs]
                || Rep <- lists:seq(1, ?FLOOD_REPS)],
        [report_overloaded(C, S) || {C, S} <- Setups],
        lists:append(Runs)
    after
        [teardown(S) || {_, S} <- Setups]
    end.

%% @doc On B: a fresh `bench_count' that counts `Count' messages, then
%% tells `bench_flood_done' on `NodeA' (by the same transport) what the
%% receiving node did meanwhile (see count_run/3).
flood_counter(Config, Count, NodeA) ->
    case whereis(bench_count) of
        undefined -> ok;
        Old -> unregister(bench_count), exit(Old, kill)
    end,
    Pid = spawn(fun() -> count_run(Config, Count, NodeA) end),
    true = register(bench_count, Pid),
    ok.

%% The counter also measures its own node, the receiver, from the first
%% message to the last: each normal scheduler's utilisation (%, from
%% erlang:statistics(scheduler_wall_time)) and the OS context switches of
%% the scheduler threads (voluntary and involuntary, from /proc): over how
%% many schedulers the receiving work spread, and how often their threads
%% went to sleep and were woken.
count_run(Config, Count, NodeA) ->
    Was = erlang:system_flag(scheduler_wall_time, true),
    receive First -> self() ! First end,
    W0 = lists:sort(erlang:statistics(scheduler_wall_time)),
    S0 = scheduler_thread_switches(),
    count_loop(Count),
    S1 = scheduler_thread_switches(),
    W1 = lists:sort(erlang:statistics(scheduler_wall_time)),
    erlang:system_flag(scheduler_wall_time, Was),
    Normal = erlang:system_info(schedulers),
    Util = [round(100 * (A1 - A0) / max(1, T1 - T0))
            || {{I, A0, T0}, {I, A1, T1}} <- lists:zip(W0, W1), I =< Normal],
    Done = {flood_counted, #{recv_sched_util => Util, recv_sched_switches => S1 - S0}},
    case Config of
        local -> bench_flood_done ! Done;
        disterl -> {bench_flood_done, NodeA} ! Done;
        _ -> ok = fwd({bench_flood_done, NodeA}, Done, #{channel => channel(Config)})
    end.

count_loop(0) -> ok;
count_loop(N) -> receive _ -> count_loop(N - 1) end.

%% Context switches so far of this VM's normal scheduler threads (named
%% "N_scheduler"), from /proc/self/task/*/status.
scheduler_thread_switches() ->
    {ok, Tids} = file:list_dir("/proc/self/task"),
    lists:sum([switches(Status)
               || Tid <- Tids,
                  {ok, Comm} <- [file:read_file(["/proc/self/task/", Tid, "/comm"])],
                  lists:suffix("_scheduler", string:trim(binary_to_list(Comm))),
                  {ok, Status} <- [file:read_file(["/proc/self/task/", Tid, "/status"])]]).

switches(Status) ->
    status_value(Status, <<"voluntary_ctxt_switches:">>)
        + status_value(Status, <<"nonvoluntary_ctxt_switches:">>).

%% The number after `Key' in a /proc status file (the first after it: for
%% "VmRSS:", kB).
status_value(Status, Key) ->
    [_, Rest] = binary:split(Status, <<"\n", Key/binary>>),
    [N | _] = string:lexemes(Rest, " \t\n"),
    binary_to_integer(N).

%% @doc On A: the flood itself. Returns a map of what was measured.
flood_run(Config, Node, Senders, Count, PayloadSize) ->
    catch unregister(bench_flood_done),
    true = register(bench_flood_done, self()),
    Payload = binary:copy(<<"f">>, PayloadSize),
    Channel = case Config of local -> none; _ -> channel(Config) end,
    Hist = counters:new(?HIST_BUCKETS, [write_concurrency]),
    Self = self(),
    Mon = spawn_link(fun() -> monitor_loop([]) end),
    Pids = [spawn_link(fun() ->
                               receive go -> ok end,
                               Opts = #{channel => Channel, partition_key => I},
                               Per = Count div Senders + case I =< Count rem Senders of true -> 1; false -> 0 end,
                               {Max, Over} = flood_send(Config, {bench_count, Node}, Payload, Opts, Per, Hist, 0, 0),
                               Self ! {sent, self(), Max, Over}
                       end)
            || I <- lists:seq(1, Senders)],
    Mon ! {senders, Pids},
    erlang:garbage_collect(),
    erlang:system_monitor(Mon, [{long_schedule, 10}, {long_gc, 10}, busy_dist_port]),
    T0 = erlang:monotonic_time(microsecond),
    [P ! go || P <- Pids],
    Sent = [receive {sent, P, Max, Over} -> {Max, Over} end || P <- Pids],
    TSent = erlang:monotonic_time(microsecond) - T0,
    {Delivered, Receiver} = receive {flood_counted, Recv} -> {erlang:monotonic_time(microsecond) - T0, Recv}
                            after 120000 -> {timeout, #{recv_sched_util => [], recv_sched_switches => 0}}
                            end,
    erlang:system_monitor(undefined),
    Mon ! {report, self()},
    Events = receive {events, E} -> E end,
    unregister(bench_flood_done),
    Buckets = [counters:get(Hist, I) || I <- lists:seq(1, ?HIST_BUCKETS)],
    Calls = lists:sum(Buckets),
    Schedules = [{Who, Ms, In, Out} || {long_schedule, Who, Ms, In, Out} <- Events],
    Gcs = [{Who, Ms} || {long_gc, Who, Ms} <- Events],
    Receiver#{messages => Count, calls => Calls,
      send_s => TSent / 1.0e6,
      delivered_s => case Delivered of timeout -> timeout; D -> D / 1.0e6 end,
      call_max_us => lists:max([M || {M, _} <- Sent]),
      overloaded => lists:sum([O || {_, O} <- Sent]),
      p50_us => hist_quantile(Buckets, Calls, 0.5),
      p99_us => hist_quantile(Buckets, Calls, 0.99),
      p999_us => hist_quantile(Buckets, Calls, 0.999),
      p9999_us => hist_quantile(Buckets, Calls, 0.9999),
      over_1ms => lists:sum(lists:nthtail(1001, Buckets)),
      over_10ms => hist_above(Buckets, 8192),
      long_schedules => length(Schedules),
      long_schedule_max_ms => lists:max([0 | [Ms || {_, Ms, _, _} <- Schedules]]),
      long_schedule_by => by_who([{Who, Ms} || {Who, Ms, _, _} <- Schedules]),
      long_schedule_top => lists:sublist(lists:reverse(lists:keysort(2, Schedules)), 5),
      long_gcs => length(Gcs),
      long_gc_max_ms => lists:max([0 | [Ms || {_, Ms} <- Gcs]]),
      long_gc_by => by_who(Gcs),
      busy_dist_port => length([x || {busy_dist_port, _} <- Events])}.

flood_send(_Config, _Dest, _Payload, _Opts, 0, _Hist, Max, Over) ->
    {Max, Over};
flood_send(Config, Dest, Payload, Opts, N, Hist, Max, Over) when Config =:= disterl; Config =:= local ->
    T = erlang:monotonic_time(microsecond),
    Dest ! Payload,
    D = erlang:monotonic_time(microsecond) - T,
    counters:add(Hist, bucket(D), 1),
    flood_send(Config, Dest, Payload, Opts, N - 1, Hist, max(D, Max), Over);
flood_send(Config, Dest, Payload, Opts, N, Hist, Max, Over) ->
    T = erlang:monotonic_time(microsecond),
    R = weft:forward(Dest, Payload, Opts),
    D = erlang:monotonic_time(microsecond) - T,
    counters:add(Hist, bucket(D), 1),
    case R of
        ok -> flood_send(Config, Dest, Payload, Opts, N - 1, Hist, max(D, Max), Over);
        {error, overloaded} ->
            timer:sleep(1),
            flood_send(Config, Dest, Payload, Opts, N, Hist, max(D, Max), Over + 1)
    end.

bucket(D) when D < ?HIST_LINEAR -> D + 1;
bucket(D) -> min(?HIST_BUCKETS, ?HIST_LINEAR + bit_len(D) - 10).

bit_len(0) -> 0;
bit_len(N) -> 1 + bit_len(N bsr 1).

%% The upper bound (us) of the bucket that holds quantile `Q'.
hist_quantile(Buckets, Total, Q) ->
    hist_quantile(Buckets, max(1, ceil(Total * Q)), 1, 0).

hist_quantile([], _Want, _I, _Acc) -> undefined;
hist_quantile([C | Rest], Want, I, Acc) ->
    case Acc + C >= Want of
        true when I =< ?HIST_LINEAR -> I - 1;
        true -> (1 bsl (I - ?HIST_LINEAR + 10)) - 1;
        false -> hist_quantile(Rest, Want, I + 1, Acc + C)
    end.

%% Calls of at least `Us' microseconds (Us a power of 2 above 1024, or
%% rounded down to one).
hist_above(Buckets, Us) ->
    lists:sum(lists:nthtail(bucket(Us) - 1, Buckets)).

%% What system_monitor reports, with each process named as it was at the
%% time: the flood's senders, weft's pollers, or its registered name or
%% initial call.
monitor_loop(Acc) ->
    receive
        {senders, Pids} -> put(senders, Pids), monitor_loop(Acc);
        {monitor, Who, long_schedule, Info} ->
            Ev = {long_schedule, who(Who), proplists:get_value(timeout, Info),
                  proplists:get_value(in, Info), proplists:get_value(out, Info)},
            monitor_loop([Ev | Acc]);
        {monitor, Who, long_gc, Info} ->
            monitor_loop([{long_gc, who(Who), proplists:get_value(timeout, Info)} | Acc]);
        {monitor, Who, busy_dist_port, _Port} ->
            monitor_loop([{busy_dist_port, who(Who)} | Acc]);
        {report, From} ->
            From ! {events, lists:reverse(Acc)}
    end.

who(Port) when is_port(Port) ->
    {port, element(2, erlang:port_info(Port, name))};
who(Pid) ->
    case lists:member(Pid, case get(senders) of undefined -> []; L -> L end) of
        true -> sender;
        false ->
            case proc_lib:translate_initial_call(Pid) of
                {weft_poller, _, _} -> weft_poller;
                MFA ->
                    case process_info(Pid, registered_name) of
                        {registered_name, Name} -> Name;
                        _ -> MFA
                    end
            end
    end.

by_who(Events) ->
    Whos = lists:usort([W || {W, _} <- Events]),
    [{W, length([x || {W1, _} <- Events, W1 =:= W]), lists:max([M || {W1, M} <- Events, W1 =:= W])}
     || W <- Whos].

pretty_flood(#{config := C, clients := S, rep := Rep, send_s := Ts, delivered_s := Td,
               call_max_us := Max, p999_us := P999, long_schedules := Nls,
               long_schedule_max_ms := LsMax, long_schedule_by := By, overloaded := Over} = R) ->
    io_lib:format("flood ~-8s ~p senders, run ~p: sent in ~.2f s, delivered in ~s; "
                  "call max ~.1f ms, p99.9 ~p us, >= 8.2 ms: ~p; "
                  "long_schedule ~p (max ~p ms; ~s); long_gc ~p (max ~p ms; ~s); busy_dist_port ~p; overloaded ~p; "
                  "receiver: schedulers busy ~s %, scheduler thread switches ~p~s",
                  [C, S, Rep, Ts, secs(Td), Max / 1000, P999, maps:get(over_10ms, R), Nls, LsMax, who_label(By),
                   maps:get(long_gcs, R), maps:get(long_gc_max_ms, R), who_label(maps:get(long_gc_by, R)),
                   maps:get(busy_dist_port, R), Over, util_label(maps:get(recv_sched_util, R)),
                   maps:get(recv_sched_switches, R),
                   [io_lib:format("~n      ~s ~p ms, in ~p, out ~p", [who_name(W), Ms, In, Out])
                    || {W, Ms, In, Out} <- maps:get(long_schedule_top, R)]]).

secs(timeout) -> "timeout";
secs(S) -> io_lib:format("~.2f s", [S]).

%%% Memory: bounded send queues toward a stopped peer

%% `{memory, 0, PayloadBytes, 1, Seconds}': A sends distinct `PayloadBytes'
%% binaries to B as fast as weft:forward/3 accepts them (on `{error,
%% overloaded}': sleep 1 ms, retry) while B is stopped with SIGSTOP, for
%% `Seconds'. A has `send_queue_limit' ?MEMORY_QUEUE_LIMIT and a
%% `heartbeat_timeout' of 60 s (so B is not declared down meanwhile). Every
%% 100 ms A samples its VmRSS, erlang:memory(total) and weft:info()'s
%% queued bytes. Then B is continued, and the cell checks that B receives
%% every message that `forward' accepted.
-define(MEMORY_QUEUE_LIMIT, 64 * 1024 * 1024).
-define(MEMORY_SAMPLE_MS, 100).

memory_cell(Config, {memory, 0, Payload, _, Seconds}) ->
    [PA, PB] = free_ports(2),
    Tag = integer_to_list(erlang:unique_integer([positive])),
    Names = ["bench_a" ++ Tag, "bench_b" ++ Tag],
    Ports = lists:flatten(lists:join(",", [N ++ "=" ++ integer_to_list(P) || {N, P} <- lists:zip(Names, [PA, PB])])),
    Extra = #{send_queue_limit => ?MEMORY_QUEUE_LIMIT,
              send_queue_total_limit => 512 * 1024 * 1024,   % weft's default
              heartbeat_timeout => 60000},
    Started = [start_node(N, Config, P, P, Ports, Extra) || {N, P} <- lists:zip(Names, [PA, PB])],
    [{A, _}, {B, NodeB}] = Started,
    try
        connect_all(Config, Started),
        ok = peer:call(B, ?MODULE, sink, []),
        BPid = peer:call(B, os, getpid, []),
        R = peer:call(A, ?MODULE, memory_run, [Config, NodeB, Payload, Seconds * 1000, BPid], (Seconds + 120) * 1000),
        #{accepted := Accepted} = R,
        %% B was continued: does it get every accepted message?
        T0 = erlang:monotonic_time(millisecond),
        Received = wait_count(B, Accepted, T0 + 60000),
        Row = maps:merge(R, #{workload => memory, config => Config, rtt => 0, cap => 0, payload => Payload,
                              clients => 1, seconds => Seconds, bound => ?MEMORY_QUEUE_LIMIT,
                              received => Received,
                              received_after_ms => erlang:monotonic_time(millisecond) - T0}),
        io:format("  ~s~n", [pretty_memory(Row)]),
        Row
    after
        [catch peer:stop(P) || {P, _} <- Started]
    end.

wait_count(B, Want, Deadline) ->
    N = peer:call(B, ?MODULE, sink_count, []),
    case N >= Want orelse erlang:monotonic_time(millisecond) > Deadline of
        true -> N;
        false -> timer:sleep(100), wait_count(B, Want, Deadline)
    end.

%% @doc On B: `bench_sink' counts what it receives.
sink() ->
    Pid = spawn(fun() -> sink_loop(0) end),
    true = register(bench_sink, Pid),
    ok.

sink_loop(N) ->
    receive
        {bench_sink_count, From} -> From ! {bench_sink_count, N}, sink_loop(N);
        _ -> sink_loop(N + 1)
    end.

%% @doc On B: how many messages `bench_sink' has received.
sink_count() ->
    bench_sink ! {bench_sink_count, self()},
    receive {bench_sink_count, N} -> N end.

%% @doc On A: stop B, flood it for `Ms', sample, continue B, wait for the
%% queue to drain.
memory_run(Config, Node, Size, Ms, BPid) ->
    Pad = binary:copy(<<"m">>, Size - 8),
    Counts = counters:new(2, []),   % accepted, overloaded
    erlang:garbage_collect(),
    timer:sleep(500),
    Base = sample(0, Counts),
    [] = os:cmd("kill -STOP " ++ BPid),
    T0 = erlang:monotonic_time(millisecond),
    Self = self(),
    Sender = spawn_link(fun() ->
                                Opts = #{channel => channel(Config)},
                                mem_send({bench_sink, Node}, Pad, Opts, Counts, 0),
                                Self ! {sender_done, self()}
                        end),
    Samples = sample_loop(T0, 1, Ms, Counts, []),
    Sender ! stop,
    receive {sender_done, Sender} -> ok end,
    Final = sample(erlang:monotonic_time(millisecond) - T0, Counts),
    [] = os:cmd("kill -CONT " ++ BPid),
    TC = erlang:monotonic_time(millisecond),
    drained(TC + 60000),
    DrainMs = erlang:monotonic_time(millisecond) - TC,
    Info = weft:info(),
    All = Samples ++ [Final],
    Peak = fun(K) -> lists:max([maps:get(K, S) || S <- All]) end,
    #{base => Base, samples => All,
      accepted => counters:get(Counts, 1), overloaded => counters:get(Counts, 2),
      refused_overloaded => maps:get(overloaded, maps:get(refused, Info)),
      dropped => maps:get(dropped, Info),
      peak_rss => Peak(rss), peak_erlang => Peak(erlang), peak_queued => Peak(queued),
      drain_ms => DrainMs}.

mem_send(Dest, Pad, Opts, Counts, I) ->
    mem_resend(Dest, <<I:64, Pad/binary>>, Pad, Opts, Counts, I).

%% Send `Msg' until it is accepted (or the run ends), then the next one.
mem_resend(Dest, Msg, Pad, Opts, Counts, I) ->
    receive
        stop -> ok
    after 0 ->
            case weft:forward(Dest, Msg, Opts) of
                ok ->
                    counters:add(Counts, 1, 1),
                    mem_send(Dest, Pad, Opts, Counts, I + 1);
                {error, overloaded} ->
                    counters:add(Counts, 2, 1),
                    timer:sleep(1),
                    mem_resend(Dest, Msg, Pad, Opts, Counts, I)
            end
    end.

sample_loop(T0, K, Ms, Counts, Acc) ->
    Now = erlang:monotonic_time(millisecond) - T0,
    case Now >= Ms of
        true -> lists:reverse(Acc);
        false ->
            Next = K * ?MEMORY_SAMPLE_MS,
            Next > Now andalso timer:sleep(Next - Now),
            S = sample(erlang:monotonic_time(millisecond) - T0, Counts),
            sample_loop(T0, K + 1, Ms, Counts, [S | Acc])
    end.

sample(T, Counts) ->
    #{queued := #{queued_bytes := Q}} = weft:info(),
    #{t => T, rss => vm_rss(), erlang => erlang:memory(total), queued => Q,
      accepted => counters:get(Counts, 1), overloaded => counters:get(Counts, 2)}.

%% Resident memory of this OS process, in bytes.
vm_rss() ->
    {ok, Status} = file:read_file("/proc/self/status"),
    status_value(Status, <<"VmRSS:">>) * 1024.

drained(Deadline) ->
    case weft:info() of
        #{queued := #{queued_bytes := 0}} -> ok;
        _ ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> timeout;
                false -> timer:sleep(50), drained(Deadline)
            end
    end.

mb(Bytes) -> Bytes / (1024 * 1024).

pretty_memory(#{payload := P, base := #{rss := R0, erlang := E0}, peak_rss := R, peak_erlang := E,
                peak_queued := Q, bound := Bound, accepted := Acc, overloaded := Over,
                received := Rec} = Row) ->
    io_lib:format("memory ~s x ~p: bound ~.1f MiB; peak RSS +~.1f MiB (base ~.1f), peak erlang:memory(total) +~.1f MiB, "
                  "peak queued ~.1f MiB; accepted ~p, overloaded ~p (weft counted ~p); B received ~p in ~p ms after SIGCONT; drained in ~p ms",
                  [size_label(P), 1, mb(Bound), mb(R - R0), mb(R0), mb(E - E0), mb(Q), Acc, Over,
                   maps:get(refused_overloaded, Row), Rec, maps:get(received_after_ms, Row), maps:get(drain_ms, Row)]).

%%% Profile: what one small-message round trip costs


%% `{profile, 0, Payload, Clients, Seconds}': the echo workload of the
%% small-message cells (no proxy), while `perf stat' counts, over the
%% middle Seconds - 1 seconds and on the two nodes' OS processes only, CPU
%% time, context switches, page faults, inter-processor interrupts sent
%% and system calls (software events and tracepoints: they work in this
%% VM, where hardware counters do not).
%% Each count is divided by the round trips completed in that window.
profile_cell(Config, {profile, 0, Payload, Clients, Seconds}) when Seconds >= 2 ->
    Setup = setup_pair(Config),
    try
        [{A, _}, {_, NodeB}] = Setup,
        Pids = string:join([peer:call(P, os, getpid, []) || {P, _} <- Setup], ","),
        Self = self(),
        Record = os:getenv("WEFT_BENCH_PERF_RECORD"),
        Ms = Seconds * 1000 + case Record of false -> 0; _ -> Seconds div 2 * 1000 end,
        Echo = spawn_link(fun() ->
                                  Self ! {self(), peer:call(A, ?MODULE, echo_clients,
                                                            [Config, NodeB, Clients, Payload, Ms], Ms + 60000)}
                          end),
        Window = Seconds - 1,
        timer:sleep(500),
        Events = ["cpu-clock", "context-switches", "page-faults", "ipi:ipi_send_cpu", "ipi:ipi_send_cpumask",
                  "raw_syscalls:sys_enter"
                  | ["syscalls:sys_enter_" ++ S || S <- ?PROFILE_SYSCALLS]],
        Out = os:cmd("perf stat -x, -p " ++ Pids ++ " -e " ++ string:join(Events, ",")
                     ++ " -- sleep " ++ integer_to_list(Window) ++ " 2>&1"),
        %% WEFT_BENCH_PERF_RECORD=Dir: also sample call stacks, in the same
        %% window of a second run, into Dir/<config>.data (`perf report -i').
        case Record of
            false -> ok;
            Dir -> os:cmd("perf record -g -p " ++ Pids ++ " -o " ++ filename:join(Dir, atom_to_list(Config) ++ ".data")
                          ++ " -- sleep " ++ integer_to_list(Window div 2) ++ " 2>&1")
        end,
        {Ops, Secs, _} = receive {Echo, R} -> R end,
        Rate = Ops / Secs,
        Rts = Rate * Window,
        Counts = parse_perf(Out),
        Per = maps:from_list(
                [{cpu_us, maps:get("cpu-clock", Counts, 0) * 1000 / Rts},
                 {context_switches, maps:get("context-switches", Counts, 0) / Rts},
                 {page_faults, maps:get("page-faults", Counts, 0) / Rts},
                 {ipis, (maps:get("ipi:ipi_send_cpu", Counts, 0) + maps:get("ipi:ipi_send_cpumask", Counts, 0)) / Rts},
                 {syscalls, maps:get("raw_syscalls:sys_enter", Counts, 0) / Rts}]
                ++ [{S, maps:get("syscalls:sys_enter_" ++ S, Counts, 0) / Rts} || S <- ?PROFILE_SYSCALLS]),
        #{workload => profile, config => Config, payload => Payload, clients => Clients,
          window => Window, rate => Rate, per_rt => Per}
    after
        teardown(Setup)
    end.

%% `perf stat -x,' lines: value,unit,event,... (cpu-clock in ms).
parse_perf(Out) ->
    maps:from_list(
      [{Event, V}
       || Line <- string:lexemes(Out, "\n"),
          [Value, _Unit, Event | _] <- [string:split(Line, ",", all)],
          V <- [to_number(Value)], V =/= undefined]).

to_number(S) ->
    case string:to_float(S) of
        {F, []} -> F;
        _ -> case string:to_integer(S) of
                 {I, []} -> I;
                 _ -> undefined
             end
    end.

pretty_profile(#{config := C, payload := P, clients := N, rate := Rate, per_rt := Per}) ->
    Calls = [io_lib:format(" ~s ~.2f", [S, V]) || S <- ?PROFILE_SYSCALLS, V <- [maps:get(S, Per)], V >= 0.01],
    io_lib:format("~-8s ~p B x ~p: ~b round trips/s; per round trip: CPU ~.1f us, "
                  "context switches ~.2f, page faults ~.2f, IPIs ~.2f, system calls ~.2f (~s)",
                  [C, P, N, round(Rate), maps:get(cpu_us, Per), maps:get(context_switches, Per),
                   maps:get(page_faults, Per), maps:get(ipis, Per),
                   maps:get(syscalls, Per), string:trim(Calls)]).
