%% @doc Instructions per small round trip, whole VMs, under callgrind.
%%
%% Starts two nodes under `valgrind --tool=callgrind' (node A runs the
%% clients, node B the echo server of `weft_bench'), lets `Pairs' clients
%% echo 100-byte messages for `Ms' milliseconds, and counts the
%% instructions each VM executed in that window (`callgrind_control -z'
%% before, `-d' after), then in an idle window of the same length, and
%% prints (window - idle) / round trips for each node. Distributed Erlang
%% (`disterl') and weft with 1 or 16 lanes (`weft_1', `weft_16') run the
%% same clients, as in the `echo' cells of `weft_bench'. Both nodes run
%% with `+sbwt none' so that idle schedulers do not spin.
%%
%% Callgrind counts user-space instructions, so a system call counts as the
%% few instructions that enter it; it runs the VMs some 50 times slower
%% and one thread at a time, so only the counts mean anything, not the
%% rates. Usage (after `make bench-build'):
%%
%%   erl -noshell -pa _build/default/lib/weft/ebin -pa _build/bench \
%%       -eval 'weft_callgrind:main([disterl, weft_1, weft_16], 16, 20000)'
%%
%% bench/RESULTS.md ("Instructions per message") has the figures.
-module(weft_callgrind).

-export([main/3]).

-define(OUT_DIR, "/tmp/weft_callgrind").

main(Configs, Pairs, Ms) ->
    try
        [run(C, Pairs, Ms) || C <- Configs],
        halt(0)
    catch
        Class:Reason:Stack ->
            io:format("failed: ~p:~p~n~p~n", [Class, Reason, Stack]),
            halt(1)
    end.

run(Config, Pairs, Ms) ->
    ok = filelib:ensure_path(?OUT_DIR),
    {PB, NB} = start(Config, "cg_b"),
    {PA, NA} = start(Config, "cg_a"),
    connect(Config, {PA, NA}, {PB, NB}),
    ok = peer:call(PB, weft_bench, echo_server, [Config]),
    %% warm up (code loading, lanes, first allocations)
    _ = peer:call(PA, weft_bench, echo_clients, [Config, NB, Pairs, 100, 1000], infinity),
    Pids = [os_pid(P) || P <- [PA, PB]],
    Busy = window(Pids, fun() ->
                                {Ops, _, _} = peer:call(PA, weft_bench, echo_clients,
                                                        [Config, NB, Pairs, 100, Ms], infinity),
                                Ops
                        end),
    Idle = window(Pids, fun() -> timer:sleep(Ms), 0 end),
    {Ops, [BusyA, BusyB]} = Busy,
    {0, [IdleA, IdleB]} = Idle,
    PerA = (BusyA - IdleA) div max(Ops, 1),
    PerB = (BusyB - IdleB) div max(Ops, 1),
    io:format("~p, ~p pairs: ~p round trips in ~p ms; instructions per round trip: "
              "node A (clients) ~p, node B (echo) ~p, both ~p (idle window: A ~p, B ~p)~n",
              [Config, Pairs, Ops, Ms, PerA, PerB, PerA + PerB, IdleA, IdleB]),
    [peer:stop(P) || P <- [PA, PB]],
    ok.

%% Run F between zeroing and dumping the counters of each VM; returns
%% {F's result, instructions per VM}.
window(Pids, F) ->
    [cmd("callgrind_control -z " ++ P) || P <- Pids],
    R = F(),
    [cmd("callgrind_control -d " ++ P) || P <- Pids],
    {R, [last_dump_ir(P) || P <- Pids]}.

%% The total of the newest dump of process `Pid'.
last_dump_ir(Pid) ->
    Files = filelib:wildcard(?OUT_DIR ++ "/cg." ++ Pid ++ ".*"),
    Newest = lists:last(lists:sort(fun(X, Y) -> dump_no(X) =< dump_no(Y) end, Files)),
    {ok, Bin} = file:read_file(Newest),
    [_, Total | _] = re:split(Bin, "\ntotals: ", [{return, list}]),
    list_to_integer(string:trim(hd(string:split(Total, "\n")))).

dump_no(File) ->
    case string:split(filename:basename(File), ".", trailing) of
        [_, N] -> try list_to_integer(N) catch _:_ -> 0 end;
        _ -> 0
    end.

cmd(C) ->
    _ = os:cmd(C),
    ok.

os_pid(Peer) ->
    peer:call(Peer, os, getpid, []).

start(Config, Prefix) ->
    Name = list_to_atom(Prefix ++ "_" ++ integer_to_list(erlang:unique_integer([positive]))),
    Ebin = filename:dirname(code:which(weft)),
    Bench = filename:dirname(code:which(weft_bench)),
    Valgrind = os:find_executable("valgrind"),
    Erl = os:find_executable("erl"),
    {ok, Peer, Node} =
        peer:start(#{name => Name, connection => standard_io,
                     exec => {Valgrind, ["--tool=callgrind", "--smc-check=all",
                                         "--trace-children=yes",
                                         "--callgrind-out-file=" ?OUT_DIR "/cg.%p", Erl]},
                     args => ["-pa", Bench, "-pa", Ebin, "+sbwt", "none", "+sbwtdcpu", "none",
                              "+sbwtdio", "none"],
                     wait_boot => 600000}),
    case Config of
        disterl -> ok;
        _ -> ok = peer:call(Peer, weft, start, [opts(Config)], 120000)
    end,
    {Peer, Node}.

opts(weft_1) ->
    #{listen => {{127, 0, 0, 1}, 0}, channels => [default], parallelism => 1,
      cookie => <<"callgrind">>, heartbeat_timeout => 60000};
opts(weft_16) ->
    #{listen => {{127, 0, 0, 1}, 0}, channels => [default, gossip, #{name => vnode, parallelism => 16}],
      affinity => true, cookie => <<"callgrind">>, heartbeat_timeout => 60000}.

connect(disterl, {PA, _}, {_, NB}) ->
    true = peer:call(PA, net_kernel, connect_node, [NB], 120000),
    ok;
connect(_Weft, {PA, NA}, {PB, NB}) ->
    Spec = peer:call(PB, weft, node_spec, [], 120000),
    ok = peer:call(PA, weft, sync_join, [Spec, 120000], 180000),
    %% (weft_bench's helpers, with timeouts for nodes under valgrind)
    weft_bench:wait(fun() -> weft_bench:lanes_up(peer:call(PA, weft, info, [], 60000), NB)
                                 andalso weft_bench:lanes_up(peer:call(PB, weft, info, [], 60000), NA)
                    end, 2400).
