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
-export([echo_server/1, echo_clients/5, hol_run/4, latency_run/5, kvs_server/2, kvs_clients/6]).

-define(CAP_MBIT, 500).

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
        ++ [{echo, 0, 100, Pairs, 5} || Pairs <- [1, 16]]
        ++ [{hol, 1, 8 * 1024 * 1024, 1, 5}]
        ++ [{latency, 20, 512 * 1024, 128, 10}]
        ++ [{kvs, 20, 512 * 1024, 16, 5}]
        ++ [{kvs3, 20, 512 * 1024, 16, 5}];
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
        ++ [{latency, Rtt, Payload, Actors, Count}
            || Rtt <- [1, 20], {Payload, Count} <- [{512 * 1024, 10}, {8 * 1024 * 1024, 2}],
               Actors <- [16, 32, 64, 128]]
        ++ [{kvs, Rtt, Payload, 16, 5} || Rtt <- [1, 20], Payload <- [512 * 1024, 8 * 1024 * 1024]]
        ++ [{kvs3, Rtt, Payload, 16, 5} || Rtt <- [1, 20], Payload <- [512 * 1024, 8 * 1024 * 1024]]
        ++ [{echo_uncapped, 1, Payload, 16, 5} || Payload <- [512 * 1024, 8 * 1024 * 1024]].

%% A cell may name its configurations as a sixth element.
cell_configs({W, _, _, _, _}) -> configs(W);
cell_configs({_, _, _, _, _, Configs}) -> Configs.

configs(echo) -> [disterl, weft_1, weft_16, limit];
configs(echo_uncapped) -> configs(echo);
configs(hol) -> [disterl, weft_1, weft_16];
configs(latency) -> [disterl, weft_1, weft_16, limit];
configs(kvs) -> [disterl, weft_1, weft_16];
configs(kvs3) -> [disterl, weft_1, weft_16].

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
    Csv = filename:join(ResultsDir, lists:flatten([atom_to_list(Plan), "-", FileStamp, ".csv"])),
    Header = "workload,config,rtt_ms,cap_mbit,payload_bytes,clients,seconds,ops_per_sec,p50_ms,p99_ms\n",
    ok = file:write_file(Csv, Header),
    Command = case Plan of quick -> "make bench"; full -> "make bench-full"; _ -> "erl ... -eval 'weft_bench:main(" ++ atom_to_list(Plan) ++ ")'" end,
    io:format("~s: ~p cells, emulator flags ~p, weft options ~s; results in ~s~n",
              [Command, length(Cells), vm_flags(), os:getenv("WEFT_BENCH_OPTS", "#{}"), Csv]),
    Emit = fun(Row) ->
                   ok = file:write_file(Csv, csv(Row), [append]),
                   io:format("  ~s~n", [pretty(Row)]),
                   Row
           end,
    Rows = lists:append(
             [case Cell of
                  {echo, 0, _, _, _} ->
                      [Emit(R) || R <- repeated_cell(Netem, cell_configs(Cell), Cell)];
                  {echo, 0, _, _, _, _} ->
                      [Emit(R) || R <- repeated_cell(Netem, cell_configs(Cell), erlang:delete_element(6, Cell))];
                  _ ->
                      [Emit(cell(Netem, Config, {element(1, Cell), element(2, Cell), element(3, Cell),
                                                 element(4, Cell), element(5, Cell)}))
                       || Config <- cell_configs(Cell)]
              end || Cell <- Cells]),
    Table = table(Rows),
    io:format("~n~s", [Table]),
    Md = filename:join(ResultsDir, atom_to_list(Plan) ++ "-latest.md"),
    Flags = [[Var, "=\"", V, "\" "] || Var <- ["WEFT_BENCH_ERL_FLAGS", "WEFT_BENCH_OPTS"],
                                        V <- [os:getenv(Var, "")], V =/= ""],
    ok = file:write_file(Md, ["Command: `", Flags, Command, "` (", Stamp, ")\n\n", Table]),
    Latest = filename:join(ResultsDir, atom_to_list(Plan) ++ "-latest.csv"),
    {ok, _} = file:copy(Csv, Latest),
    io:format("table written to ~s, rows to ~s~n", [Md, Latest]),
    ok.

root() ->
    filename:dirname(filename:dirname(filename:dirname(code:which(?MODULE)))).

to_atom(A) when is_atom(A) -> A;
to_atom(L) when is_list(L) -> list_to_atom(L).

%%% One cell

cell(Netem, limit, {Workload, Rtt, Payload, Clients, Seconds} = Cell) ->
    %% The latency workload makes a fixed count of round trips per actor.
    Count = case Workload of latency -> Seconds; _ -> 0 end,
    Out = os:cmd(lists:flatten(io_lib:format("~s limit --rtt-ms ~p --rate-mbit ~p --clients ~p --payload ~p --seconds ~p --count ~p",
                                             [Netem, Rtt, cap(Workload, Rtt), Clients, Payload, Seconds, Count]))),
    [Ops, P50, P99] = [list_to_float(string:trim(X)) || X <- string:split(string:trim(Out), ",", all)],
    row(limit, Cell, Ops, P50, P99);
cell(Netem, Config, {Workload, Rtt, Payload, Clients, Seconds} = Cell) ->
    Count = node_count(Workload),
    %% Each node listens on a port of its own; the others reach it through
    %% its proxy (or directly, without emulation).
    Listen = free_ports(Count),
    Advertised = case Rtt of 0 -> Listen; _ -> free_ports(Count) end,
    Proxy = start_proxy(Netem, Rtt, cap(Workload, Rtt), lists:zip(Advertised, Listen)),
    Tag = integer_to_list(erlang:unique_integer([positive])),
    Names = ["bench_" ++ [$a + I - 1] ++ Tag || I <- lists:seq(1, Count)],
    Ports = lists:join(",", [N ++ "=" ++ integer_to_list(X) || {N, X} <- lists:zip(Names, Advertised)]),
    Started = [start_node(N, Config, L, X, lists:flatten(Ports))
               || {N, L, X} <- lists:zip3(Names, Listen, Advertised)],
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
                          latency -> {latency_run, [Config, NodeB, Clients, Payload, Seconds]};
                          kvs -> {kvs_clients, [Config, [NodeB], 1, Clients, Payload, Seconds * 1000]};
                          kvs3 -> {kvs_clients, [Config, Replicas, 2, Clients, Payload, Seconds * 1000]}
                      end,
        {Ops, Secs, Rtts} = peer:call(A, ?MODULE, Fun, Args, (Seconds + 120) * 1000),
        row(Config, Cell, Ops / Secs, quantile(Rtts, 0.5), quantile(Rtts, 0.99))
    after
        [catch peer:stop(P) || {P, _} <- Started],
        Proxy =:= none orelse port_close(Proxy)
    end.

%% Small messages without emulation: what is measured is each transport's
%% own path on a shared 2-core machine, where one run of a few seconds can
%% be 30 % off the next. So every configuration's nodes start once, and
%% ?REPS short runs of each alternate; each row is the median run (by ops/s).
-define(REPS, 5).
-define(REP_MS, 1500).

repeated_cell(Netem, Configs, {echo, 0, Payload, Clients, _Seconds} = Cell) ->
    Setups = [{C, setup_pair(C)} || C <- Configs, C =/= limit],
    try
        Runs = [[{C, rep(Netem, C, proplists:get_value(C, Setups), Payload, Clients)} || C <- Configs]
                || _ <- lists:seq(1, ?REPS)],
        [begin
             Mine = lists:sort([R || Rep <- Runs, {C1, R} <- Rep, C1 =:= C]),
             {Ops, P50, P99} = lists:nth((length(Mine) + 1) div 2, Mine),
             row(C, setelement(5, Cell, ?REP_MS / 1000), Ops, P50, P99)
         end || C <- Configs]
    after
        [teardown(S) || {_, S} <- Setups]
    end.

setup_pair(Config) ->
    [PA, PB] = free_ports(2),
    Tag = integer_to_list(erlang:unique_integer([positive])),
    Names = ["bench_a" ++ Tag, "bench_b" ++ Tag],
    Ports = lists:flatten(lists:join(",", [N ++ "=" ++ integer_to_list(P) || {N, P} <- lists:zip(Names, [PA, PB])])),
    Started = [start_node(N, Config, P, P, Ports) || {N, P} <- lists:zip(Names, [PA, PB])],
    connect_all(Config, Started),
    [_, {B, _}] = Started,
    ok = peer:call(B, ?MODULE, echo_server, [Config]),
    Started.

teardown(Started) ->
    [catch peer:stop(P) || {P, _} <- Started].

rep(Netem, limit, undefined, Payload, Clients) ->
    #{ops := Ops, p50 := P50, p99 := P99} = cell(Netem, limit, {echo, 0, Payload, Clients, ?REP_MS / 1000}),
    {Ops, P50, P99};
rep(_Netem, Config, [{A, _}, {_, NodeB}], Payload, Clients) ->
    {Ops, Secs, Rtts} = peer:call(A, ?MODULE, echo_clients, [Config, NodeB, Clients, Payload, ?REP_MS], 60000),
    {Ops / Secs, quantile(Rtts, 0.5), quantile(Rtts, 0.99)}.

node_count(kvs3) -> 3;
node_count(_) -> 2.

row(Config, {Workload, Rtt, Payload, Clients, Seconds}, Ops, P50, P99) ->
    #{workload => Workload, config => Config, rtt => Rtt, cap => cap(Workload, Rtt), payload => Payload,
      clients => Clients, seconds => Seconds, ops => Ops, p50 => P50, p99 => P99}.

%% The per-connection cap (Mbit/s) of a cell's emulation; 0: none.
cap(_, 0) -> 0;
cap(echo_uncapped, _) -> 0;
cap(_, _) -> ?CAP_MBIT.

free_ports(N) ->
    Socks = [begin {ok, S} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]), S end || _ <- lists:seq(1, N)],
    Ports = [begin {ok, P} = inet:port(S), P end || S <- Socks],
    [gen_tcp:close(S) || S <- Socks],
    Ports.

%% The proxy runs until its standard input (this port) closes.
start_proxy(_Netem, 0, _Cap, _Maps) ->
    none;
start_proxy(Netem, Rtt, Cap, Maps) ->
    Args = ["proxy", "--rtt-ms", integer_to_list(Rtt), "--rate-mbit", integer_to_list(Cap)]
        ++ lists:append([["--map", "127.0.0.1:" ++ integer_to_list(X) ++ "=127.0.0.1:" ++ integer_to_list(P)]
                         || {X, P} <- Maps]),
    Port = open_port({spawn_executable, Netem}, [{args, Args}, {line, 256}, binary, exit_status]),
    receive
        {Port, {data, {eol, <<"ready">>}}} -> Port;
        {Port, Other} -> error({netem, Other})
    after 10000 -> error(netem_timeout)
    end.

start_node(Name, Config, Listen, Advertise, Ports) ->
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
                                    args => ["-pa", Bench, "-pa", Ebin | Dist] ++ vm_flags(),
                                    wait_boot => 30000}),
    case Config of
        disterl -> ok;
        _ -> ok = peer:call(Peer, weft, start, [maps:merge(weft_opts(Config, Listen, Advertise), extra_weft_opts())])
    end,
    {Peer, Node}.

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

weft_opts(weft_1, Listen, Advertise) ->
    #{listen => {{127, 0, 0, 1}, Listen}, advertise => [{{127, 0, 0, 1}, Advertise}],
      channels => [default], parallelism => 1, cookie => <<"bench">>};
weft_opts(weft_16, Listen, Advertise) ->
    #{listen => {{127, 0, 0, 1}, Listen}, advertise => [{{127, 0, 0, 1}, Advertise}],
      channels => [default, gossip, #{name => vnode, parallelism => 16}],
      affinity => true, cookie => <<"bench">>}.

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

channel(disterl) -> default;
channel(weft_1) -> default;
channel(weft_16) -> vnode.

%% @doc Register `bench_echo': answers each request with its payload.
echo_server(Config) ->
    Pid = spawn(fun() -> echo_loop(Config) end),
    register(bench_echo, Pid),
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
            weft:forward(From, {Ref, Payload}, #{channel => Channel, partition_key => Key});
        {ack, From, Ref, _Bulk, Key, Channel} ->
            weft:forward(From, {Ref, ack}, #{channel => Channel, partition_key => Key})
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
                _ -> ok = weft:forward(Node, bench_echo, {self(), Ref, Payload, Key, Channel},
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
    timer:sleep(500),
    Self = self(),
    Pinger = spawn_link(fun() -> client(Config, default, Node, binary:copy(<<"p">>, 100), 0, Self) end),
    T0 = erlang:monotonic_time(microsecond),
    timer:sleep(Ms),
    Pinger ! stop,
    Rtts = receive {done, Pinger, R} -> lists:sort(R) end,
    Secs = (erlang:monotonic_time(microsecond) - T0) / 1.0e6,
    [begin unlink(B), exit(B, kill) end || B <- Bulkers],
    {length(Rtts), Secs, Rtts}.

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
        _ -> ok = weft:forward(Node, bench_echo, {self(), Ref, Payload, Key, Channel},
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
            kvs_loop(Config, Store);
        {put, From, Ref, Key, Value, Channel} ->
            kvs_reply(Config, From, {Ref, ok}, Key, Channel),
            kvs_loop(Config, Store#{Key => Value})
    end.

kvs_reply(disterl, From, Msg, _Key, _Channel) -> From ! Msg;
kvs_reply(_, From, Msg, Key, Channel) -> weft:forward(From, Msg, #{channel => Channel, partition_key => Key}).

%% @doc `Clients' processes run 90 % gets / 10 % puts for `Ms' milliseconds.
%% Each request goes to the key's vnode on every node of `Nodes' and is done
%% when `Quorum' of them have answered: one node and a quorum of 1 for
%% `kvs'; 3 replicas (this node first, reached by a local send) and a quorum
%% of 2 for `kvs3', as in the paper's KVS.
kvs_clients(Config, Nodes, Quorum, Clients, ValueSize, Ms) ->
    Value = binary:copy(<<"n">>, ValueSize),
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
        stop -> Parent ! {done, self(), Acc}
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
                 _ -> ok = weft:forward(N, kvs_name(Key), Msg, #{channel => Channel, partition_key => Key})
             end || N <- Nodes],
            case quorum(Ref, Quorum) of
                ok ->
                    kvs_client(Config, Channel, Replicas, Value, Parent,
                               [(erlang:monotonic_time(microsecond) - T) / 1000 | Acc]);
                stop ->
                    Parent ! {done, self(), Acc}
            end
    end.

%% Wait for `N' replies to `Ref'; late replies to earlier requests are
%% dropped on the way, so the mailbox does not grow.
quorum(_Ref, 0) ->
    ok;
quorum(Ref, N) ->
    receive
        {Ref, _} -> quorum(Ref, N - 1);
        {R, _} when is_reference(R) -> quorum(Ref, N);
        stop -> stop
    end.

bulk(Config, Channel, Node, Bulk, Key) ->
    Ref = make_ref(),
    case Config of
        disterl -> {bench_echo, Node} ! {ack, self(), Ref, Bulk};
        _ -> ok = weft:forward(Node, bench_echo, {ack, self(), Ref, Bulk, Key, Channel},
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
    Lat = [R || #{workload := latency} = R <- Rows],
    [echo_table(Echo) || Echo =/= []] ++ [["\n", hol_table(Hol)] || Hol =/= []]
        ++ [["\n", latency_table(Lat)] || Lat =/= []].

%% Fixed work per actor: the time for all to finish, and per-request latency.
latency_table(Rows) ->
    Cells = lists:usort([{R, P, N} || #{rtt := R, payload := P, clients := N} <- Rows]),
    Get = fun(Key, Config) ->
                  case [X || #{rtt := R, payload := P, clients := N, config := C} = X <- Rows,
                             {R, P, N} =:= Key, C =:= Config] of
                      [Row] -> Row;
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

echo_table(Rows) ->
    Cells = lists:usort([{W, R, P, N} || #{workload := W, rtt := R, payload := P, clients := N} <- Rows]),
    Get = fun(Key, Config) ->
                  case [X || #{workload := W, rtt := R, payload := P, clients := N, config := C} = X <- Rows,
                             {W, R, P, N} =:= Key, C =:= Config] of
                      [Row] -> maps:get(ops, Row);
                      [] -> 0.0
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

%% A configuration the cell does not run (no limit for KVS) shows as n/a.
ops(Zero) when Zero == 0 -> "n/a";
ops(Ops) -> io_lib:format("~.1f", [Ops * 1.0]).

rtt_label(0) -> "none (loopback)";
rtt_label(R) -> integer_to_list(R) ++ " ms".

ratio(Zero, _) when Zero == 0 -> "n/a";
ratio(_, Zero) when Zero == 0 -> "n/a";
ratio(A, B) -> io_lib:format("~.2fx", [A / B]).
