%% @doc weft's public API at its edges: every function validates its
%% arguments and never raises (a PropEr property throws random terms at
%% each of them on a peer node), the configuration forms and ranges, join
%% spec checks, the transport's events (`refused', nodedown reasons) and
%% `monitor_nodes/2', and weft's log events under OTP's default logger
%% configuration.
-module(weft_api_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("proper/include/proper.hrl").

-export([all/0, suite/0, init_per_testcase/2, end_per_testcase/2]).
-export([no_function_raises_on_a_running_node/1, no_function_raises_on_a_stopped_node/1,
         known_bad_arguments/1, forward_when_not_started/1, join_specs_checked/1,
         config_ranges/1, start_while_running_changes_nothing/1,
         failed_start_restores_the_environment/1, listen_and_advertise_forms/1,
         unspecified_listen_advertises_interfaces/1, advertise_addrs_from_interfaces/1,
         refused_answers_sync_join_at_once/1, nodedown_reasons_and_monitor_nodes_2/1,
         a_contact_refusing_left_ends_sync_join_without_a_loop/1,
         a_forged_refusal_left_is_not_taken/1,
         sync_join_behind_a_view_over_a_megabyte/1,
         nodedown_not_logged_by_the_server/1, default_logger_prints_weft_events/1,
         works_without_dist_listen/1, creation_differs_without_dist_listen/1,
         server_survives_nif_errors/1, a_stopped_peer_is_down_as_stopped/1,
         calls_during_stop_return_not_started/1, bad_config_in_sys_config_returns_cleanly/1]).
%% Run on the peers:
-export([safe_apply/2, safe_apply_stopped/2, waiters/0, subscriber/1, churn/3]).

-define(OPTS, #{cookie => <<"weft-api">>, channels => [default, gossip],
                heartbeat_interval => 200, heartbeat_timeout => 1500,
                reconnect_min_backoff => 50, reconnect_max_backoff => 500,
                gossip_interval => 200}).

suite() ->
    [{timetrap, {minutes, 4}}].

all() ->
    [known_bad_arguments, forward_when_not_started, join_specs_checked, config_ranges,
     start_while_running_changes_nothing, failed_start_restores_the_environment,
     listen_and_advertise_forms, unspecified_listen_advertises_interfaces,
     advertise_addrs_from_interfaces, refused_answers_sync_join_at_once,
     a_contact_refusing_left_ends_sync_join_without_a_loop, a_forged_refusal_left_is_not_taken,
     sync_join_behind_a_view_over_a_megabyte,
     nodedown_reasons_and_monitor_nodes_2, a_stopped_peer_is_down_as_stopped,
     nodedown_not_logged_by_the_server,
     default_logger_prints_weft_events, works_without_dist_listen,
     creation_differs_without_dist_listen, server_survives_nif_errors,
     no_function_raises_on_a_running_node, no_function_raises_on_a_stopped_node,
     calls_during_stop_return_not_started, bad_config_in_sys_config_returns_cleanly].

init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, _Config) ->
    weft_ct:stop_tracked().

start(Prefix, Opts) ->
    start(Prefix, Opts, []).

start(Prefix, Opts, Extra) ->
    N = weft_ct:start_node(Prefix, Opts, Extra),
    weft_ct:track(N),
    N.

call(N, M, F, A) ->
    weft_ct:call(N, M, F, A).

node_of(#{node := Node}) -> Node.

%% Run `Fun' on the peer.
on(N, Fun) ->
    call(N, erlang, apply, [Fun, []]).

%%% Cases

known_bad_arguments(_Config) ->
    A = start(api, ?OPTS),
    Improper = [{channel, default} | x],
    ?assertEqual({error, {badarg, Improper}}, call(A, weft, forward, [self_pid(A), hi, Improper])),
    ?assertEqual({error, {badarg, Improper}}, call(A, weft, forward, [x@y, inbox, hi, Improper])),
    ?assertEqual({error, {badarg, {unknown_option, chanel}}},
                 call(A, weft, forward, [x@y, inbox, hi, [{chanel, gossip}]])),
    ?assertEqual({error, {badarg, {unknown_option, priority}}},
                 call(A, weft, forward, [x@y, inbox, hi, #{priority => high}])),
    %% a key that is not an atom: the same answer from a list as from a map
    ?assertEqual({error, {badarg, {unknown_option, "channel"}}},
                 call(A, weft, forward, [x@y, inbox, hi, [{"channel", gossip}]])),
    ?assertEqual({error, {badarg, {unknown_option, "channel"}}},
                 call(A, weft, forward, [x@y, inbox, hi, #{"channel" => gossip}])),
    %% the first of a repeated key counts, as with proplists
    ?assertEqual({error, {unknown_channel, nope}},
                 call(A, weft, forward, [x@y, inbox, hi, [{channel, nope}, {channel, gossip}]])),
    ok = call(A, weft, forward, [x@y, inbox, hi, [{channel, gossip}, {channel, nope}]]),
    %% a bad value in a list: the list as given
    ?assertEqual({error, {badarg, [{channel, "str"}]}},
                 call(A, weft, forward, [x@y, inbox, hi, [{channel, "str"}]])),
    %% a member name past Latin-1 cannot be joined
    Wide = binary_to_atom(<<"日本@h"/utf8>>, utf8),
    ?assertMatch({error, {bad_spec, _}}, call(A, weft, join, [spec_at(Wide, 1)])),
    ?assertEqual({error, {badarg, "str"}}, call(A, weft, leave, ["str"])),
    ?assertEqual({error, {badarg, maybe}}, call(A, weft, monitor_nodes, [maybe])),
    ?assertEqual({error, {badarg, maybe}}, call(A, weft, monitor_nodes, [maybe, []])),
    ?assertEqual({error, {badarg, [x]}}, call(A, weft, monitor_nodes, [true, [x]])),
    ?assertEqual({error, {badarg, [nodedown_reason | x]}},
                 call(A, weft, monitor_nodes, [true, [nodedown_reason | x]])),
    ?assertEqual({error, {badarg, {1, fun erlang:self/0}}}, call(A, weft, on_up, [1, fun erlang:self/0])),
    ?assertEqual({error, {badarg, -1}}, call(A, weft, sync_join, [spec_at(b@host, 1), -1])),
    ?assertEqual({error, {badarg, 1 bsl 32}}, call(A, weft, sync_join, [spec_at(b@host, 1), 1 bsl 32])),
    %% weft still runs: start/1 refuses before looking at the options
    ?assertEqual({error, already_started}, call(A, weft, start, [[{listen, x} | bad]])),
    ok.

self_pid(N) ->
    call(N, erlang, whereis, [weft_server]).

spec_at(Name, Port) ->
    #{name => Name, listen_addrs => [#{ip => {127, 0, 0, 1}, port => Port}]}.

forward_when_not_started(_Config) ->
    N = start(nostart, no_weft),
    %% the NIF is not even loaded: every path says not_started
    ?assertEqual({error, not_started}, on(N, fun() -> weft:forward(self(), hi) end)),
    ?assertEqual({error, not_started}, on(N, fun() -> weft:forward(node(), any_name, hi, #{}) end)),
    ?assertEqual({error, not_started}, on(N, fun() -> weft:forward({any_name, node()}, hi) end)),
    ?assertEqual({error, not_started}, call(N, weft, forward, [x@y, inbox, hi, #{}])),
    %% loaded, then stopped
    ok = call(N, weft, start, [?OPTS]),
    ?assertEqual(ok, on(N, fun() -> weft:forward(self(), hi) end)),
    ok = call(N, weft, stop, []),
    ?assertEqual({error, not_started}, on(N, fun() -> weft:forward(self(), hi) end)),
    ?assertEqual({error, not_started}, call(N, weft, forward, [x@y, inbox, hi, #{}])),
    %% and the improper start options of the issue
    ?assertEqual({error, {bad_config, options, [{listen, x} | bad]}},
                 call(N, weft, start, [[{listen, x} | bad]])),
    ok.

join_specs_checked(_Config) ->
    A = start(js, ?OPTS),
    B = start(js, ?OPTS),
    NodeB = node_of(B),
    PortB = call(B, weft_ct, port, []),
    Bad = [spec_at(x@y, 70000),
           spec_at(x@y, 0),
           #{name => x@y, listen_addrs => [#{ip => {999, 0, 0, 1}, port => 4464}]},
           #{name => x@y, listen_addrs => [#{ip => {1, 2, 3}, port => 4464}]},
           #{name => x@y, listen_addrs => [#{ip => {0, 0, 0, 0, 0, 0, 0, 70000}, port => 4464}]},
           #{name => x@y, listen_addrs => [#{ip => "not an address", port => 4464}]},
           #{name => x@y, listen_addrs => []},
           #{name => x@y, listen_addrs => [#{ip => {127, 0, 0, 1}, port => 1} | x]},
           #{name => x@y, listen_addrs => [#{ip => {127, 0, 0, 1}, port => P} || P <- lists:seq(1, 17)]},
           #{name => x@y, listen_addrs => [#{ip => {127, 0, 0, 1}}]},
           #{name => "x@y", listen_addrs => [#{ip => {127, 0, 0, 1}, port => 1}]},
           %% (names are printable ASCII: Latin-1 beyond it, or a space, is refused)
           #{name => list_to_atom([233 | "@vm"]), listen_addrs => [#{ip => {127, 0, 0, 1}, port => 1}]},
           #{name => 'a b@vm', listen_addrs => [#{ip => {127, 0, 0, 1}, port => 1}]},
           spec_at(noat, 1),
           spec_at('@host', 1),
           spec_at('name@', 1),
           spec_at('a@b@c', 1),
           %% 202 characters, 402 bytes in UTF-8
           spec_at(list_to_atom("n@" ++ lists:duplicate(200, 16#e4)), 1),
           (spec_at(x@y, 1))#{channels => [#{name => c, parallelism => 0}]},
           (spec_at(x@y, 1))#{channels => [#{name => c, parallelism => 257}]},
           (spec_at(x@y, 1))#{channels => [#{name => "c", parallelism => 1}]},
           (spec_at(x@y, 1))#{channels => [#{name => c}]},
           (spec_at(x@y, 1))#{channels => x},
           %% a key node_spec/0 never returns
           (spec_at(x@y, 1))#{bogus => 1},
           %% an address nobody could dial
           #{name => x@y, listen_addrs => [#{ip => {0, 0, 0, 0}, port => 1}]},
           #{listen_addrs => [#{ip => {127, 0, 0, 1}, port => 1}]},
           not_a_map],
    [begin
         ?assertEqual({error, {bad_spec, S}}, call(A, weft, join, [S])),
         ?assertEqual({error, {bad_spec, S}}, call(A, weft, sync_join, [S, 100]))
     end || S <- Bad],
    %% none of them reached the transport
    ?assertEqual([node_of(A)], call(A, weft, members, [])),
    #{peers := Peers} = call(A, weft, info, []),
    ?assertEqual(#{}, Peers),
    %% a name of 255 bytes is fine (nothing listens: it times out)
    Long = list_to_atom("n@" ++ lists:duplicate(253, $h)),
    ?assertEqual({error, timeout}, call(A, weft, sync_join, [spec_at(Long, 1), 10])),
    %% addresses as text, and a spec with channels and epoch, join for real
    SpecB = #{name => NodeB, listen_addrs => [#{ip => "127.0.0.1", port => PortB},
                                              #{ip => <<"127.0.0.1">>, port => PortB}],
              channels => [#{name => default, parallelism => 1}], epoch => 5},
    ?assertEqual(ok, call(A, weft, sync_join, [SpecB, 10000])),
    ?assertEqual(lists:sort([node_of(A), NodeB]), call(A, weft, members, [])),
    %% joining oneself is ok, and infinity is a timeout
    ?assertEqual(ok, call(A, weft, sync_join, [call(A, weft, node_spec, []), infinity])),
    ?assertEqual(ok, call(A, weft, sync_join, [SpecB, infinity])),
    ok.

config_ranges(_Config) ->
    N = start(ranges, no_weft),
    Max32 = 1 bsl 32 - 1,
    Bad = [{max_frame_size, Max32}, {max_frame_size, 0}, {max_frame_size, 1 bsl 64},
           {heartbeat_interval, Max32 + 1}, {heartbeat_interval, 0},
           {gossip_interval, Max32 + 1}, {reconnect_min_backoff, Max32 + 1},
           {pollers, 65}, {pollers, 0}, {parallelism, 257}, {parallelism, 0},
           {poll_linger_us, 1000001}, {poll_linger_busy_us, 1000001}, {poll_linger_busy_us, -1},
           %% out of order with the other's default: the key given is named
           {heartbeat_interval, 10000}, {reconnect_min_backoff, 10000},
           {cookie, ''}, {cookie, <<>>}, {cookie, "list"},
           {channels, [a | b]}, {channels, [#{name => a, parallelism => 257}]},
           {listen, -1}, {listen, 65536}, {listen, {{127, 0, 0, 1}, 65536}},
           {listen, {"no.such.host.invalid", 0}}, {listen, {[$a | b], 0}},
           {advertise, [{{10, 0, 0, 5}, -1}]}, {advertise, [{{10, 0, 0, 5}, 9100} | x]},
           {advertise, {{10, 0, 0, 5}, 9100}},
           %% what peers would refuse in this node's description
           {channels, ['with space']}, {channels, ['']},
           {channels, [list_to_atom(lists:duplicate(200, 16#e9))]},  % 400 bytes, not ASCII
           {channels, [#{name => 'tab\there'}]},
           {channels, [list_to_atom("c" ++ integer_to_list(I)) || I <- lists:seq(1, 256)]},
           {advertise, lists:duplicate(17, {{127, 0, 0, 1}, 0})},
           {advertise, [{{0, 0, 0, 0}, 9100}]}, {advertise, [{{224, 0, 0, 1}, 9100}]},
           {advertise, [{{255, 255, 255, 255}, 9100}]}, {advertise, [{{16#ff02, 0, 0, 0, 0, 0, 0, 1}, 9100}]}],
    [?assertEqual({error, {bad_config, K, V}}, call(N, weft, start, [#{K => V}])) || {K, V} <- Bad],
    ?assertEqual({error, {bad_config, options, [{a, 1} | b]}}, call(N, weft, start, [[{a, 1} | b]])),
    ?assertEqual({error, {bad_config, options, [x]}}, call(N, weft, start, [[x]])),
    %% both given, out of order: the second of the pair is named
    ?assertEqual({error, {bad_config, heartbeat_timeout, 100}},
                 call(N, weft, start, [#{heartbeat_interval => 200, heartbeat_timeout => 100}])),
    ?assertEqual({error, {bad_config, reconnect_max_backoff, 10}},
                 call(N, weft, start, [#{reconnect_min_backoff => 20, reconnect_max_backoff => 10}])),
    %% none of it stayed in the environment
    ?assertEqual([], env(N)),
    %% the largest values are accepted
    ok = call(N, weft, start, [?OPTS#{max_frame_size => Max32 - 1, reconnect_max_backoff => Max32,
                                      heartbeat_timeout => Max32, pollers => 64}]),
    ok = call(N, weft, stop, []),
    %% 255 channels plus default, 16 addresses, a 255-byte channel name
    Chans = [list_to_atom("c" ++ integer_to_list(I)) || I <- lists:seq(1, 254)]
        ++ [list_to_atom(lists:duplicate(255, $c))],
    ok = call(N, weft, start, [?OPTS#{channels => Chans,
                                      advertise => lists:duplicate(16, {{127, 0, 0, 1}, 0})}]),
    ok = call(N, weft, stop, []),
    ok.

env(N) ->
    [KV || {K, _} = KV <- call(N, application, get_all_env, [weft]), K =/= included_applications].

start_while_running_changes_nothing(_Config) ->
    A = start(running, ?OPTS),
    Env = env(A),
    Spec = call(A, weft, node_spec, []),
    ?assertEqual({error, already_started}, call(A, weft, start, [#{channels => [zz]}])),
    ?assertEqual({error, already_started}, call(A, weft, start, [[{cookie, <<"other">>}]])),
    ?assertEqual(Env, env(A)),
    ?assertEqual(Spec, call(A, weft, node_spec, [])),
    %% start/0 while running is still ok (application:ensure_all_started)
    ?assertEqual(ok, call(A, weft, start, [])),
    ok.

failed_start_restores_the_environment(_Config) ->
    A = start(busy, ?OPTS),
    Port = call(A, weft_ct, port, []),
    N = start(restore, no_weft),
    ok = call(N, application, set_env, [weft, channels, [before]]),
    Env = env(N),
    ok = call(N, weft_ct, capture_errors, []),
    %% valid options, but the port is taken: the start fails at bind
    Result = call(N, weft, start, [#{listen => {{127, 0, 0, 1}, Port}, channels => [zz], parallelism => 2}]),
    ?assertMatch({error, {listen, _, eaddrinuse}}, Result),
    %% ... before the application starts: no supervisor or crash report
    ?assertEqual([], call(N, weft_ct, errors, [])),
    ?assertEqual(false, lists:keymember(weft, 1, call(N, application, which_applications, []))),
    %% and the same from the environment (start/0)
    ok = call(N, application, set_env, [weft, listen, {{127, 0, 0, 1}, Port}]),
    ?assertMatch({error, {listen, _, eaddrinuse}}, call(N, weft, start, [])),
    ?assertEqual([], call(N, weft_ct, errors, [])),
    ok = call(N, application, unset_env, [weft, listen]),
    %% any port on an address this host does not have: the same
    ?assertMatch({error, {listen, {{192, 0, 2, 1}, 0}, eaddrnotavail}},
                 call(N, weft, start, [#{listen => {{192, 0, 2, 1}, 0}}])),
    ?assertEqual([], call(N, weft_ct, errors, [])),
    ?assertEqual(Env, env(N)),
    ?assertEqual({ok, [before]}, call(N, application, get_env, [weft, channels])),
    ?assertEqual(undefined, call(N, application, get_env, [weft, listen])),
    ?assertEqual(undefined, call(N, application, get_env, [weft, parallelism])),
    ok.

listen_and_advertise_forms(_Config) ->
    N = start(forms, no_weft),
    Forms = [{"127.0.0.1", 0}, {<<"127.0.0.1">>, 0}, {"localhost", 0}, {localhost, 0}, {<<"localhost">>, 0}],
    [begin
         ok = call(N, weft, start, [?OPTS#{listen => L}]),
         #{listen_addrs := [#{ip := {127, 0, 0, 1}, port := P}]} = call(N, weft, node_spec, []),
         ?assert(P > 0),
         ok = call(N, weft, stop, [])
     end || L <- Forms],
    %% advertise: the same {Host, Port} forms, told as they are
    ok = call(N, weft, start, [?OPTS#{advertise => [{"10.0.0.5", 9100}, {localhost, 9101},
                                                    {{10, 0, 0, 6}, 9102}, {<<"::1">>, 9103}]}]),
    #{listen_addrs := Addrs} = call(N, weft, node_spec, []),
    ?assertEqual([#{ip => {10, 0, 0, 5}, port => 9100}, #{ip => {127, 0, 0, 1}, port => 9101},
                  #{ip => {10, 0, 0, 6}, port => 9102}, #{ip => {0, 0, 0, 0, 0, 0, 0, 1}, port => 9103}],
                 Addrs),
    ok = call(N, weft, stop, []),
    ?assertEqual({error, {bad_config, advertise, [{"no.such.host.invalid", 1}]}},
                 call(N, weft, start, [#{advertise => [{"no.such.host.invalid", 1}]}])),
    ok.

%% listen on every interface without advertise: node_spec() tells the
%% interfaces' addresses (never 0.0.0.0) with the port bound, loopback last,
%% and another node joins through that spec.
unspecified_listen_advertises_interfaces(_Config) ->
    A = start(any, ?OPTS#{listen => 0}),
    B = start(any, ?OPTS),
    #{listen_addrs := Addrs} = Spec = call(A, weft, node_spec, []),
    Ips = [Ip || #{ip := Ip} <- Addrs],
    Ports = lists:usort([P || #{port := P} <- Addrs]),
    ?assertNot(lists:member({0, 0, 0, 0}, Ips)),
    ?assertEqual([4], lists:usort([tuple_size(Ip) || Ip <- Ips])),
    ?assertEqual({127, 0, 0, 1}, lists:last(Ips)),
    [P] = Ports,
    ?assert(P > 0),
    Expected = weft_config:advertise_addrs({0, 0, 0, 0}, call(A, inet, getifaddrs, [])),
    ?assertEqual(Expected, Ips),
    ?assertEqual(ok, call(B, weft, sync_join, [Spec, 10000])),
    %% an explicit port with the unspecified address: the same port everywhere
    C = start(any, ?OPTS#{listen => {{0, 0, 0, 0}, 0}, advertise => []}),
    #{listen_addrs := [_ | _] = AddrsC} = call(C, weft, node_spec, []),
    ?assertNotEqual([0], lists:usort([Pc || #{port := Pc} <- AddrsC])),
    ok.

advertise_addrs_from_interfaces(_Config) ->
    Ifs = {ok, [{"lo", [{flags, [up, loopback, running]}, {addr, {127, 0, 0, 1}},
                        {netmask, {255, 0, 0, 0}}, {addr, {0, 0, 0, 0, 0, 0, 0, 1}}]},
                {"eth0", [{flags, [up, broadcast, running, multicast]}, {addr, {10, 0, 0, 5}},
                          {netmask, {255, 255, 255, 0}}, {addr, {16#fe80, 0, 0, 0, 1, 2, 3, 4}},
                          {addr, {16#2001, 16#db8, 0, 0, 0, 0, 0, 5}}, {hwaddr, [0, 1, 2, 3, 4, 5]}]},
                {"eth1", [{flags, [broadcast]}, {addr, {10, 0, 1, 5}}]},
                {"eth2", [{flags, [up]}, {addr, {192, 168, 1, 2}}, {addr, {16#febf, 0, 0, 0, 0, 0, 0, 1}}]}]},
    ?assertEqual([{10, 0, 0, 5}, {192, 168, 1, 2}, {127, 0, 0, 1}],
                 weft_config:advertise_addrs({0, 0, 0, 0}, Ifs)),
    ?assertEqual([{10, 0, 0, 5}, {16#2001, 16#db8, 0, 0, 0, 0, 0, 5}, {192, 168, 1, 2},
                  {127, 0, 0, 1}, {0, 0, 0, 0, 0, 0, 0, 1}],
                 weft_config:advertise_addrs({0, 0, 0, 0, 0, 0, 0, 0}, Ifs)),
    ?assertEqual([], weft_config:advertise_addrs({0, 0, 0, 0}, {error, enotsup})),
    ?assertEqual([], weft_config:advertise_addrs({0, 0, 0, 0}, {ok, [{"eth1", [{flags, [broadcast]},
                                                                               {addr, {10, 0, 1, 5}}]}]})),
    ok.

%% What the transport will send when a dial is refused: the sync_join
%% waiters of that node get the reason at once, not a timeout. (`left' on
%% the full mesh says that this node was removed: the join is made again,
%% see sync_join_through_a_removal_in_flight_holds in weft_SUITE; on the
%% callback overlay it is an answer as the others.)
refused_answers_sync_join_at_once(_Config) ->
    A = start(refused, ?OPTS),
    C = start(refused, ?OPTS#{overlay => {callback, weft_cyclon, #{}}}),
    Reasons = [bad_cookie, {unexpected_node, other@host}, detached, {version, [2, 3]},
               unknown_lane, {bad_spec, x}],
    [begin
         Fun = fun() ->
                       Self = self(),
                       Spec = spec_at(far@away, 1),
                       T0 = erlang:monotonic_time(millisecond),
                       spawn(fun() -> Self ! {joined, weft:sync_join(Spec, 60000)} end),
                       %% wait until the waiter is registered, then refuse
                       wait(fun() -> waiters() =/= [] end),
                       weft_server ! {weft_nif, refused, far@away, Reason},
                       receive {joined, R} -> {R, erlang:monotonic_time(millisecond) - T0} end
               end,
         {Result, Ms} = on(N, Fun),
         ?assertEqual({error, {refused, Reason}}, Result),
         ?assert(Ms < 30000)
     end || {N, Reason} <- [{A, R} || R <- Reasons] ++ [{C, R} || R <- [left | Reasons]]],
    %% a refusal of another node, a transient one (the node is stopping),
    %% or, on the full mesh, `left', leaves a waiter waiting
    Other = fun() ->
                    Self = self(),
                    spawn(fun() -> Self ! {joined, weft:sync_join(spec_at(far@away, 1), 60000)} end),
                    wait(fun() -> waiters() =/= [] end),
                    weft_server ! {weft_nif, refused, someone@else, bad_cookie},
                    weft_server ! {weft_nif, refused, far@away, unavailable},
                    weft_server ! {weft_nif, refused, far@away, left},
                    weft_server ! {weft_nif, refused, far@away, detached},
                    receive {joined, R} -> R end
            end,
    ?assertEqual({error, {refused, detached}}, on(A, Other)),
    ok.

%% A "contact" that knows the cookie and answers every dial with a signed
%% refusal `left' makes the node leave and the waiting sync_join join
%% again once, not in a loop: the second removal answers `{error, removed}',
%% after two dials, and nothing dials it afterwards.
a_contact_refusing_left_ends_sync_join_without_a_loop(_Config) ->
    V = start(refuser, ?OPTS),
    Self = self(),
    Refuser = spawn_link(fun() -> refuser(Self, {signed, maps:get(cookie, ?OPTS)}) end),
    Port = receive {refuser_port, P} -> P end,
    Evil = spec_at(evil@nowhere, Port),
    ?assertEqual({error, removed}, call(V, weft, sync_join, [Evil, 20000])),
    Dials = refuser_dials(Refuser),
    ?assert(Dials >= 2 andalso Dials =< 3, Dials),
    ?assertEqual([node_of(V)], call(V, weft, members, [])),
    ?assertEqual(Dials, refuser_dials(Refuser)),
    unlink(Refuser),
    exit(Refuser, kill),
    ok.

%% The bound on membership messages (1 MiB queued on a control lane) lets
%% a join check's answer through behind a view of over a megabyte: B holds
%% 4,096 tombstones of 250-byte names (pushed by a fake peer), and C's
%% sync_join to B is answered. (It timed out when the answer was dropped
%% behind the view.)
sync_join_behind_a_view_over_a_megabyte(_Config) ->
    B = start(bigview, ?OPTS),
    NodeB = atom_to_binary(node_of(B)),
    Port = call(B, weft_ct, port, []),
    Spec = weft_ct:fake_spec(<<"f@127.0.0.1">>, [{<<"default">>, 1}, {<<"gossip">>, 1}]),
    {ok, S} = weft_ct:fake_peer(Port, <<"weft-api">>, NodeB, {<<"$control">>, 0}, Spec, 64),
    N = 4096,
    Tombs = [begin
                 I = integer_to_binary(K),
                 Name = <<I/binary, "@", (binary:copy(<<"h">>, 249 - byte_size(I)))/binary>>,
                 [weft_ct:str8(Name), <<K:64, 3600000:32>>]
             end || K <- lists:seq(1, N)],
    %% a membership message (1), full mesh (1), a push (0): no members
    View = iolist_to_binary([<<1, 1, 0, 0:32, N:32>>, Tombs]),
    ?assert(byte_size(View) > 1 bsl 20),
    ok = gen_tcp:send(S, weft_ct:raw_frame(2, View)),
    weft_ct:wait_until(tombstones, fun() -> maps:get(tombstones, call(B, weft, info, [])) >= N end),
    gen_tcp:close(S),
    C = start(bigview, ?OPTS),
    ?assertEqual(ok, call(C, weft, sync_join, [call(B, weft, node_spec, []), 20000])),
    ok.

%% Someone without the cookie answers where V dials with a refusal `left':
%% before the challenge, or after V's proof (unsigned). V takes neither: it
%% stays in its cluster with W, as the same incarnation, and says in its
%% log that it did not take the refusal. (Before signed refusals, one such
%% answer made V leave its cluster.)
a_forged_refusal_left_is_not_taken(_Config) ->
    V = start(forged, ?OPTS),
    W = start(forged, ?OPTS),
    ok = call(V, weft, sync_join, [call(W, weft, node_spec, []), 20000]),
    #{incarnation := Inc} = call(V, weft, node_spec, []),
    ok = call(V, weft_ct, capture_logs, []),
    Self = self(),
    lists:foreach(
      fun(Mode) ->
              Refuser = spawn_link(fun() -> refuser(Self, Mode) end),
              Port = receive {refuser_port, P} -> P end,
              Evil = spec_at(binary_to_atom(<<"evil_", (atom_to_binary(Mode))/binary, "@nowhere">>), Port),
              ?assertEqual({error, timeout}, call(V, weft, sync_join, [Evil, 1000])),
              ?assert(refuser_dials(Refuser) >= 1),
              ok = call(V, weft, leave, [maps:get(name, Evil)]),
              unlink(Refuser),
              exit(Refuser, kill)
      end, [before_challenge, unsigned]),
    ?assertMatch(#{incarnation := Inc}, call(V, weft, node_spec, [])),
    ?assertEqual(lists:sort([node_of(V), node_of(W)]), lists:sort(call(V, weft, members, []))),
    ?assertEqual(lists:sort([node_of(V), node_of(W)]), lists:sort(call(W, weft, members, []))),
    Logs = call(V, weft_ct, logs, []),
    ?assertEqual([], [L || L <- Logs, string:find(L, "removed from the cluster") =/= nomatch]),
    ?assertNotEqual([], [L || L <- Logs, string:find(L, "unsigned: not taken") =/= nomatch]),
    %% (the refusal before the challenge: a protocol error, a warning too)
    ?assertNotEqual([], [L || L <- Logs, string:find(L, "is not a weft node that knows the cookie") =/= nomatch]),
    ok.

%% A listener that answers every dial with a refusal `left' (handshake
%% version 3, reason 4) and counts the dials. `Mode': `before_challenge'
%% answers the hello with it (message 4); `unsigned' sends a challenge and
%% answers the proof with it, unsigned (message 4); `{signed, Cookie}'
%% answers the proof with it signed (message 5): HMAC-SHA256 keyed by
%% the cookie over the label, both nonces, the dialer's proof and the
%% refusal, each part with its length.
refuser(Parent, Mode) ->
    {ok, L} = gen_tcp:listen(0, [binary, {active, false}, {ip, {127, 0, 0, 1}}]),
    {ok, Port} = inet:port(L),
    Parent ! {refuser_port, Port},
    Me = self(),
    spawn_link(fun() -> refuser_accept(L, Me, Mode) end),
    refuser_count(0).

refuser_accept(L, Counter, Mode) ->
    {ok, S} = gen_tcp:accept(L),
    Counter ! dialed,
    _ = (catch refuse_left(S, Mode)),
    refuser_accept(L, Counter, Mode).

refuse_left(S, before_challenge) ->
    _ = weft_ct:recv_raw(S),
    ok = gen_tcp:send(S, weft_ct:raw_frame(0, <<"WEFT", 3:16, 4, 4>>));
refuse_left(S, Mode) ->
    {0, <<"WEFT", 3:16, 0, Nd:32/binary, _/binary>>} = weft_ct:recv_raw(S),
    Na = crypto:strong_rand_bytes(32),
    ok = gen_tcp:send(S, weft_ct:raw_frame(0, <<"WEFT", 3:16, 1, Na/binary>>)),
    {0, Auth} = weft_ct:recv_raw(S),
    ProofD = binary:part(Auth, byte_size(Auth), -32),
    case Mode of
        unsigned ->
            ok = gen_tcp:send(S, weft_ct:raw_frame(0, <<"WEFT", 3:16, 4, 4>>));
        {signed, Cookie} ->
            Part = <<"WEFT", 3:16, 5, 4>>,
            Proof = crypto:mac(hmac, sha256, Cookie,
                               [<<"weft-refusal-v3", 0>>, Nd, Na,
                                [[<<(byte_size(P)):32>>, P] || P <- [ProofD, Part]]]),
            ok = gen_tcp:send(S, weft_ct:raw_frame(0, <<Part/binary, Proof/binary>>))
    end.

refuser_count(N) ->
    receive
        dialed -> refuser_count(N + 1);
        {count, From} -> From ! {dials, N}, refuser_count(N)
    end.

refuser_dials(Refuser) ->
    Refuser ! {count, self()},
    receive {dials, N} -> N end.

%% @private On the peer: the nodes that sync_join callers wait for.
waiters() ->
    [N || {N, _, _, _} <- element(5, sys:get_state(weft_server))].

wait(Fun) ->
    case Fun() of
        true -> ok;
        false -> receive after 5 -> wait(Fun) end
    end.

nodedown_reasons_and_monitor_nodes_2(_Config) ->
    A = start(mon, ?OPTS),
    B = start(mon, ?OPTS),
    NodeB = node_of(B),
    %% three subscribers: plain, with reasons, and both
    [ok = call(A, ?MODULE, subscriber, [Kind]) || Kind <- [plain, reason, both]],
    ok = call(A, weft, sync_join, [call(B, weft, node_spec, []), 10000]),
    Got = fun(Name, N) -> call(A, weft_ct, collected, [Name, N]) end,
    ?assertEqual([{nodeup, NodeB}], Got(sub_plain, 1)),
    ?assertEqual([{nodeup, NodeB, []}], Got(sub_reason, 1)),
    ?assertEqual([{nodeup, NodeB}, {nodeup, NodeB, []}], lists:sort(Got(sub_both, 2))),
    %% reasons as the transport will send them: terms, or strings from older ones
    Down = [heartbeat_timeout, {closed, econnreset}, "connection closed"],
    [call(A, erlang, send, [weft_server, {weft_nif, nodedown, ghost@host, R}]) || R <- Down],
    ?assertEqual([{nodeup, NodeB, []} | [{nodedown, ghost@host, [{nodedown_reason, R}]} || R <- Down]],
                 Got(sub_reason, 4)),
    ?assertEqual([{nodeup, NodeB} | [{nodedown, ghost@host} || _ <- Down]], Got(sub_plain, 4)),
    ?assertEqual(8, length(Got(sub_both, 8))),
    %% a real nodedown carries a reason
    weft_ct:stop_node(B),
    weft_ct:wait_until(real_nodedown,
                       fun() -> [X || {nodedown, N, [{nodedown_reason, _}]} = X <- Got(sub_reason, 5),
                                      N =:= NodeB] =/= [] end),
    ok.

%% A node that stops (`weft:stop/0') says so before it closes: its peers
%% report it down as `stopped', logged as a notice and not as a failed
%% connection, keep it a member, and see it up again when it starts and
%% joins again.
a_stopped_peer_is_down_as_stopped(_Config) ->
    A = start(mon, ?OPTS),
    B = start(mon, ?OPTS),
    NodeB = node_of(B),
    ok = call(A, ?MODULE, subscriber, [reason]),
    ok = call(A, weft_ct, capture_logs, []),
    ok = call(A, weft, sync_join, [call(B, weft, node_spec, []), 10000]),
    Got = fun(N) -> call(A, weft_ct, collected, [sub_reason, N]) end,
    ?assertEqual([{nodeup, NodeB, []}], Got(1)),
    ok = call(B, weft, stop, []),
    ?assertEqual([{nodeup, NodeB, []}, {nodedown, NodeB, [{nodedown_reason, stopped}]}], Got(2)),
    Logs = call(A, weft_ct, logs, []),
    ct:log("~p", [Logs]),
    Said = fun(What) -> [L || L <- Logs, string:find(L, What) =/= nomatch] end,
    ?assertMatch([_], Said("node down: it stopped")),
    ?assertEqual([], Said("node down: control connection closed")),
    %% (not reachable, so not in members/0, but still known and redialed)
    #{peers := #{NodeB := _}} = call(A, weft, info, []),
    ok = call(B, weft, start, []),
    ok = call(B, weft, sync_join, [call(A, weft, node_spec, []), 10000]),
    ?assertMatch([_, _, {nodeup, NodeB, []}], Got(3)),
    ok.

%% @private On the peer: a collector `sub_Kind' subscribed with
%% `monitor_nodes(true)' (plain), `monitor_nodes(true, [nodedown_reason])'
%% (reason) or both; subscribing twice in one form is one subscription, and
%% unsubscribing one form keeps the other.
subscriber(Kind) ->
    Self = self(),
    Pid = spawn(fun() ->
                        Sub = fun(plain) -> weft:monitor_nodes(true);
                                 (reason) -> weft:monitor_nodes(true, [nodedown_reason])
                              end,
                        case Kind of
                            both ->
                                ok = Sub(plain), ok = Sub(reason), ok = Sub(reason),
                                ok = weft:monitor_nodes(true, [nodedown_reason, nodedown_reason]);
                            plain ->
                                ok = Sub(plain), ok = Sub(reason),
                                ok = weft:monitor_nodes(false, [nodedown_reason]);
                            reason ->
                                ok = Sub(reason), ok = Sub(plain), ok = Sub(plain),
                                ok = weft:monitor_nodes(false)
                        end,
                        Self ! ready,
                        weft_ct:collect([])
                end),
    receive ready -> ok end,
    register(list_to_atom("sub_" ++ atom_to_list(Kind)), Pid),
    ok.

%% nodeup and nodedown are logged by the transport from now on: the
%% server logs neither.
nodedown_not_logged_by_the_server(_Config) ->
    A = start(nolog, ?OPTS),
    ok = call(A, weft_ct, capture_logs, []),
    call(A, erlang, send, [weft_server, {weft_nif, nodedown, ghost@host, heartbeat_timeout}]),
    call(A, erlang, send, [weft_server, {weft_nif, nodeup, ghost@host}]),
    call(A, erlang, send, [weft_server, {weft_nif, log, warning, <<"marker">>, #{peer => ghost@host}}]),
    weft_ct:wait_until(marker, fun() -> call(A, weft_ct, logs, []) =/= [] end),
    %% (the text names the peer: the default formatter prints no metadata)
    ?assertEqual(["weft: ghost@host: marker"], call(A, weft_ct, logs, [])),
    ok.

%% A plain `erl' with no logger configuration prints weft's log events:
%% they carry no domain, which OTP's default handler would drop.
default_logger_prints_weft_events(_Config) ->
    Ebin = filename:dirname(code:which(weft)),
    Name = "weftlog" ++ integer_to_list(erlang:unique_integer([positive])),
    Eval = "try "
           "  {ok, _} = timer:apply_after(30000, erlang, halt, [3]),"
           "  ok = weft:start(#{}),"
           "  Pollers = fun() -> [P || P <- processes(),"
           "                           proc_lib:translate_initial_call(P) =:= {weft_poller, init, 1}] end,"
           "  [Victim | _] = Pollers(),"
           "  N = length(Pollers()),"
           "  exit(Victim, kill),"
           "  Wait = fun W() -> Kids = [P || {_, P, _, _} <- supervisor:which_children(weft_poller_sup)],"
           "                    case lists:member(Victim, Kids) orelse length(Kids) =/= N of"
           "                        true -> receive after 5 -> W() end; false -> ok end end,"
           "  ok = Wait(),"
           "  weft_server ! {weft_nif, log, warning, <<\"a warning from the transport\">>, #{peer => x@y}},"
           "  _ = sys:get_state(weft_server),"
           "  ok = logger_std_h:filesync(default),"
           "  erlang:halt(0) "
           "catch C:R:S -> io:format(\"failed: ~p~n\", [{C, R, S}]), erlang:halt(1) end.",
    Port = open_port({spawn_executable, os:find_executable("erl")},
                     [stderr_to_stdout, binary, exit_status,
                      {args, ["-sname", Name, "-noshell", "-pa", Ebin, "-eval", Eval]}]),
    {Status, Out} = read_port(Port, erlang:monotonic_time(millisecond) + 60000, []),
    ct:log("~ts", [Out]),
    ?assertEqual(0, Status),
    ?assertNotEqual(nomatch, string:find(Out, "weft: poller process restarted")),
    ?assertNotEqual(nomatch, string:find(Out, "weft: x@y: a warning from the transport")),
    ok.

read_port(Port, Deadline, Acc) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    receive
        {Port, {data, D}} -> read_port(Port, Deadline, [Acc, D]);
        {Port, {exit_status, S}} -> {S, unicode:characters_to_list(iolist_to_binary(Acc))}
    after Left ->
            catch port_close(Port),
            ct:fail({no_exit, iolist_to_binary(Acc)})
    end.

%% A node that does not listen for Distributed Erlang (-dist_listen false)
%% runs weft and talks to other weft nodes.
works_without_dist_listen(_Config) ->
    A = start(nolisten, ?OPTS, ["-dist_listen", "false"]),
    B = start(nolisten, ?OPTS),
    ?assertNotEqual(nonode@nohost, node_of(A)),
    ok = call(A, weft, sync_join, [call(B, weft, node_spec, []), 10000]),
    call(B, weft_ct, echo, [echo]),
    call(A, weft_ct, collector, [inbox]),
    Inbox = call(A, erlang, whereis, [inbox]),
    ok = call(A, weft, forward, [node_of(B), echo, {Inbox, default, hello}, #{}]),
    ?assertEqual([{echo, node_of(B), hello}], call(A, weft_ct, collected, [inbox, 1])),
    ok.

%% weft relies on a new incarnation having another creation, so that pids
%% of an old one never match new processes. Without a listener there is no
%% epmd registration to hand out creations: the VM picks them at random.
creation_differs_without_dist_listen(_Config) ->
    Name = peer:random_name(creation),
    Creation = fun() ->
                       {ok, Peer, _} = peer:start(#{name => Name, connection => standard_io,
                                                    args => ["-dist_listen", "false"]}),
                       try peer:call(Peer, erlang, system_info, [creation])
                       after peer:stop(Peer)
                       end
               end,
    C1 = Creation(),
    C2 = Creation(),
    ct:log("creations: ~p ~p", [C1, C2]),
    ?assertNotEqual(C1, C2),
    ok.

%% weft_server guards every NIF call: a spec that only the NIF sees (weft's
%% checks bypassed) or an odd event does not take it down.
server_survives_nif_errors(_Config) ->
    A = start(guard, ?OPTS),
    Server = call(A, erlang, whereis, [weft_server]),
    [?assertMatch({error, _}, call(A, weft_server, sync_join, [Spec, 'x@y', 100]))
     || Spec <- [#{name => 1}, #{}, not_a_map, #{name => 'x@y', listen_addrs => [x | y]}]],
    call(A, erlang, send, [weft_server, {weft_nif, log, bogus_level, "text", not_a_map}]),
    call(A, erlang, send, [weft_server, {weft_nif, nodedown, 'x@y', {any, term}}]),
    ?assertMatch(#{}, call(A, weft, info, [])),
    ?assertEqual(Server, call(A, erlang, whereis, [weft_server])),
    ok.

%% Calls that go through weft_server (monitor_nodes, on_up, on_down,
%% sync_join) while weft stops and starts again: a call that finds the
%% server gone, or whose server stops while it waits (a sync_join waiter),
%% returns `{error, not_started}', never raises. 10 processes call every
%% function of the API in a loop while weft stops and starts 5 times; each
%% stop comes while a sync_join waits in the server.
calls_during_stop_return_not_started(_Config) ->
    A = start(churn, ?OPTS),
    B = start(churn, ?OPTS),
    NodeB = node_of(B),
    SpecB = call(B, weft, node_spec, []),
    ok = call(A, weft, sync_join, [SpecB, 10000]),
    {Tally, Bad} = call(A, ?MODULE, churn, [SpecB, 10, 5]),
    ct:log("results by function:~n~p", [Tally]),
    ?assertEqual([], Bad),
    %% each call ran while weft ran and while it was stopped
    Kinds = fun(F) -> lists:usort([K || {{F1, K}, _} <- Tally, F1 =:= F]) end,
    [?assert(lists:member({error, not_started}, Kinds(F)) andalso lists:member(ok, Kinds(F)))
     || F <- [monitor_nodes, on_up, on_down]],
    ?assert(lists:member({error, not_started}, Kinds(sync_join))),
    %% the node works afterwards: it joins, sends and hears of nodes
    ok = call(A, weft, sync_join, [SpecB, 10000]),
    weft_ct:wait_until(members, fun() -> lists:member(NodeB, call(A, weft, nodes, [])) end),
    call(B, weft_ct, echo, [echo]),
    call(A, weft_ct, collector, [inbox]),
    Inbox = call(A, erlang, whereis, [inbox]),
    ok = call(A, weft, forward, [NodeB, echo, {Inbox, default, after_churn}, #{}]),
    ?assertEqual([{echo, NodeB, after_churn}], call(A, weft_ct, collected, [inbox, 1])),
    ok = call(A, ?MODULE, subscriber, [reason]),
    ok = call(B, weft, stop, []),
    weft_ct:wait_until(nodedown, fun() ->
                                         lists:member({nodedown, NodeB, [{nodedown_reason, stopped}]},
                                                      call(A, weft_ct, collected, [sub_reason]))
                                 end),
    ok.

%% @private On the peer, weft running: `Workers' processes call the API in
%% a loop (each from its own place in the list of calls) while weft is
%% stopped and started `Rounds' times. Each stop waits until a sync_join
%% waits in the server and every worker has had an answer since the last
%% start; each start until every worker has had `{error, not_started}'.
%% Returns `{Tally, Bad}': how many calls gave each kind of result, by
%% function, and the results that were not documented ones (a raise among
%% them).
churn(SpecB, Workers, Rounds) ->
    Tab = ets:new(churn, [public, set, {write_concurrency, true}]),
    Ghost = spec_at('weft_api_ghost@localhost', 1),
    IsOk = fun(R) -> R =:= ok end,
    NotStarted = fun(R) -> R =:= {error, not_started} end,
    Calls = [{monitor_nodes, [true, []], [IsOk]},
             {sync_join, [Ghost, 1000], [fun(R) -> R =:= {error, timeout} end]},
             {monitor_nodes, [true, [nodedown_reason]], [IsOk]},
             {on_up, [any, fun(_) -> ok end], [IsOk]},
             {sync_join, [SpecB, 1000], [IsOk, fun(R) -> R =:= {error, timeout} end,
                                         fun({error, {refused, _}}) -> true; (_) -> false end]},
             {on_down, [any, fun() -> ok end], [IsOk]},
             {monitor_nodes, [false, [nodedown_reason]], [IsOk]},
             {monitor_nodes, [false], [IsOk]},
             {join, [Ghost], [IsOk]},
             {node_spec, [], [fun erlang:is_map/1]},
             {members, [], [fun erlang:is_list/1]},
             {nodes, [], [fun erlang:is_list/1]},
             {info, [], [fun erlang:is_map/1, fun(R) -> R =:= {error, timeout} end]},
             {forward, [self, hi], [IsOk]},
             {forward, [node_of_spec(SpecB), nobody, hi, #{}], [IsOk, fun(R) -> R =:= {error, overloaded} end]}],
    N = length(Calls),
    Pids = [spawn_link(fun() -> churn_loop(Tab, I, lists:nthtail(I rem N, Calls) ++ lists:sublist(Calls, I rem N), NotStarted) end)
            || I <- lists:seq(1, Workers)],
    Answered = fun(Key) -> length([P || P <- Pids, ets:lookup(Tab, {Key, P}) =/= []]) =:= Workers end,
    Clear = fun(Key) -> [ets:delete(Tab, {Key, P}) || P <- Pids] end,
    lists:foreach(
      fun(_) ->
              Clear(answered),
              wait(fun() -> Answered(answered) andalso waiters() =/= [] end),
              ok = weft:stop(),
              Clear(not_started),
              wait(fun() -> Answered(not_started) end),
              ok = weft:start()
      end, lists:seq(1, Rounds)),
    [begin unlink(P), P ! {stop, self()}, receive {stopped, P} -> ok end end || P <- Pids],
    Tally = lists:sort([{FK, C} || {{tally, FK}, C} <- ets:tab2list(Tab)]),
    Bad = [X || {{bad, _}, X} <- ets:tab2list(Tab)],
    ets:delete(Tab),
    {Tally, Bad}.

node_of_spec(#{name := Name}) -> Name.

churn_loop(Tab, I, [{F, Args, Allowed} = Call | Rest], NotStarted) ->
    receive
        {stop, From} -> From ! {stopped, self()}
    after 0 ->
            R = try apply(weft, F, Args)
                catch C:E:St -> {raised, C, E, St}
                end,
            case NotStarted(R) orelse lists:any(fun(A) -> A(R) end, Allowed) of
                true -> ok;
                false -> ets:insert(Tab, {{bad, erlang:unique_integer()}, {F, Args, R}})
            end,
            ets:update_counter(Tab, {tally, {F, kind(R)}}, 1, {{tally, {F, kind(R)}}, 0}),
            ets:insert(Tab, {{answered, self()}, true}),
            NotStarted(R) andalso ets:insert(Tab, {{not_started, self()}, true}),
            churn_loop(Tab, I, Rest ++ [Call], NotStarted)
    end.

%% A configuration in sys.config, set before weft is loaded (the
%% reviewer's case: the environment was read before the load put it
%% there, and the bad value found by weft_server under the supervisor),
%% and on the command line: weft:start/0 returns the error, before any
%% process starts, without any supervisor, crash or error report. A port
%% in use the same. And the options of start/1 override sys.config.
bad_config_in_sys_config_returns_cleanly(Config) ->
    A = start(busy, ?OPTS),
    Port = call(A, weft_ct, port, []),
    Dir = ?config(priv_dir, Config),
    SysConfig = fun(Name, Env) ->
                        File = filename:join(Dir, Name ++ ".config"),
                        ok = file:write_file(File, io_lib:format("~p.~n", [[{weft, Env}]])),
                        filename:rootname(File)
                end,
    Busy = {{127, 0, 0, 1}, Port},
    File1 = SysConfig("bad_key", [{bogus_key, 1}, {listen, Busy}, {cookie, <<"weft-api">>}]),
    N = start(sysconf, no_weft, ["-config", File1]),
    ?assertEqual(false, lists:keymember(weft, 1, call(N, application, loaded_applications, []))),
    ok = call(N, weft_ct, capture_all, []),
    Clean = fun() ->
                    Logs = call(N, weft_ct, all_logs, []),
                    ct:log("logged: ~p", [Logs]),
                    Reports = [L || {Level, Domain, _} = L <- Logs,
                                    logger:compare_levels(Level, error) =/= lt
                                        orelse lists:member(otp, Domain)],
                    ?assertEqual([], Reports),
                    ?assertEqual(undefined, call(N, erlang, whereis, [weft_sup])),
                    ?assertEqual(false, lists:keymember(weft, 1, call(N, application, which_applications, [])))
            end,
    ?assertEqual({error, {bad_config, bogus_key, 1}}, call(N, weft, start, [])),
    Clean(),
    %% the same through start/1: the options are good, the environment not
    ?assertEqual({error, {bad_config, bogus_key, 1}}, call(N, weft, start, [#{parallelism => 2}])),
    Clean(),
    ?assertEqual(undefined, call(N, application, get_env, [weft, parallelism])),
    %% a port in use, from sys.config
    ok = call(N, application, unset_env, [weft, bogus_key]),
    ?assertEqual({error, {listen, Busy, eaddrinuse}}, call(N, weft, start, [])),
    Clean(),
    %% a bad value
    ok = call(N, application, set_env, [weft, parallelism, 0]),
    ?assertEqual({error, {bad_config, parallelism, 0}}, call(N, weft, start, [])),
    Clean(),
    %% application:start/1 refuses before any process starts too (with the
    %% application master's report of a failed start, as OTP does)
    ?assertMatch({error, {{bad_config, parallelism, 0}, {weft_app, start, _}}},
                 call(N, application, start, [weft])),
    ok = call(N, application, unset_env, [weft, parallelism]),
    ok = call(N, weft, start, [#{listen => {{127, 0, 0, 1}, 0}}]),
    ok = call(N, weft, sync_join, [call(A, weft, node_spec, []), 10000]),
    %% the command line (-weft Key Value), before the load, likewise
    M = start(cmdline, no_weft, ["-weft", "bogus_key", "1"]),
    ok = call(M, weft_ct, capture_errors, []),
    ?assertEqual({error, {bad_config, bogus_key, 1}}, call(M, weft, start, [])),
    ?assertEqual([], call(M, weft_ct, errors, [])),
    %% start/1 before the load: its options win over sys.config's
    File2 = SysConfig("override", [{channels, [from_sys_config]}, {cookie, <<"from-sys-config">>},
                                   {parallelism, 3}]),
    O = start(override, no_weft, ["-config", File2]),
    ok = call(O, weft, start, [?OPTS]),
    #{channels := Chs} = call(O, weft, node_spec, []),
    ?assertEqual([default, gossip], lists:sort([C || #{name := C} <- Chs])),
    ?assertEqual({ok, <<"weft-api">>}, call(O, application, get_env, [weft, cookie])),
    ?assertEqual({ok, 3}, call(O, application, get_env, [weft, parallelism])),
    ok = call(O, weft, sync_join, [call(A, weft, node_spec, []), 10000]),
    ok.

%%% The property: no function raises

no_function_raises_on_a_running_node(_Config) ->
    A = start(prop, ?OPTS),
    B = start(prop, ?OPTS),
    NodeB = node_of(B),
    SpecB = call(B, weft, node_spec, []),
    ok = call(A, weft, sync_join, [SpecB, 10000]),
    check_covers_every_export(),
    run_property(A, safe_apply, 3000),
    %% still running, and still working: rejoin (a random leave/0 may have
    %% made it leave) and round trips to itself and to the other node
    ?assertMatch(#{node := _}, call(A, weft, info, [])),
    ok = call(A, weft, sync_join, [SpecB, 10000]),
    weft_ct:wait_until(members, fun() -> lists:member(NodeB, call(A, weft, nodes, [])) end),
    call(B, weft_ct, echo, [echo]),
    call(A, weft_ct, collector, [inbox]),
    Inbox = call(A, erlang, whereis, [inbox]),
    ok = call(A, weft, forward, [inbox, to_self]),
    ok = call(A, weft, forward, [NodeB, echo, {Inbox, default, round_trip}, #{}]),
    ?assertEqual(lists:sort([to_self, {echo, NodeB, round_trip}]),
                 lists:sort(call(A, weft_ct, collected, [inbox, 2]))),
    ok.

%% The same on a node where weft is stopped: start/1 and start/0 validate
%% for real here; a start that succeeds is stopped again after the call.
no_function_raises_on_a_stopped_node(_Config) ->
    N = start(propstop, no_weft),
    run_property(N, safe_apply_stopped, 1500),
    ok = call(N, weft, start, [?OPTS]),
    call(N, weft_ct, collector, [inbox]),
    ok = call(N, weft, forward, [inbox, works]),
    ?assertEqual([works], call(N, weft_ct, collected, [inbox, 1])),
    ok.

%% `Count' random calls on `N' through `Apply' (on the peer); none may
%% raise. Logs how many calls gave each kind of result.
run_property(N, Apply, Count) ->
    Tally = ets:new(tally, [public]),
    Prop = ?FORALL({F, Args}, g_call(),
                   case call(N, ?MODULE, Apply, [F, Args]) of
                       {raised, C, R, St} ->
                           ct:pal("weft:~p~p raised ~p:~p~n~p", [F, Args, C, R, St]),
                           false;
                       Result ->
                           ets:update_counter(Tally, {F, length(Args), kind(Result)}, 1,
                                              {{F, length(Args), kind(Result)}, 0}),
                           true
                   end),
    T0 = erlang:monotonic_time(millisecond),
    Outcome = proper:quickcheck(Prop, [{numtests, Count}, {max_size, 30}, quiet, long_result]),
    ct:log("~p cases in ~p ms; results:~n~p",
           [Count, erlang:monotonic_time(millisecond) - T0, lists:sort(ets:tab2list(Tally))]),
    ets:delete(Tally),
    ?assertEqual(true, Outcome).

kind({error, {Tag, _}}) -> {error, Tag};
kind({error, {Tag, _, _}}) -> {error, Tag};
kind({error, Tag}) -> {error, Tag};
kind(M) when is_map(M) -> map;
kind(L) when is_list(L) -> list;
kind(X) -> X.

%% Every export but stop/0 is in the generator, with its arity.
check_covers_every_export() ->
    Exports = [FA || {F, _} = FA <- weft:module_info(exports), F =/= module_info] -- [{stop, 0}],
    Covered = lists:usort([{F, A} || {F, A} <- covered()]),
    ?assertEqual(lists:sort(Exports), Covered).

covered() ->
    [{start, 0}, {start, 1}, {node_spec, 0}, {join, 1}, {sync_join, 2}, {leave, 0}, {leave, 1},
     {members, 0}, {nodes, 0}, {forward, 2}, {forward, 3}, {forward, 4}, {monitor_nodes, 1},
     {monitor_nodes, 2}, {on_up, 2}, {on_down, 2}, {info, 0}].

%% @private On the peer: apply in a fresh process (whatever it subscribes
%% to ends with it); `{raised, Class, Reason, Stack}' if the call raised.
safe_apply(F, Args) ->
    Ref = make_ref(),
    Self = self(),
    {_, MRef} = spawn_monitor(fun() ->
                                      R = try apply(weft, F, Args)
                                          catch C:R0:St -> {raised, C, R0, St}
                                          end,
                                      Self ! {Ref, R}
                              end),
    receive
        {Ref, R} -> erlang:demonitor(MRef, [flush]), R;
        {'DOWN', MRef, _, _, Why} -> {raised, exit, Why, []}
    end.

%% @private On the peer, weft stopped: apply, then stop weft and clear its
%% environment again.
safe_apply_stopped(F, Args) ->
    R = safe_apply(F, Args),
    ok = weft:stop(),
    [application:unset_env(weft, K) || {K, _} <- application:get_all_env(weft), K =/= included_applications],
    R.

%%% Generators

g_call() ->
    oneof([{start, []},
           {start, [g_opts()]},
           {node_spec, []},
           {join, [g_spec()]},
           {sync_join, [g_spec(), g_timeout()]},
           {sync_join, [g_term(), g_term()]},
           {leave, []},
           {leave, [g_term()]},
           {members, []},
           {nodes, []},
           {forward, [g_dest(), g_term()]},
           {forward, [g_dest(), g_term(), g_fwd_opts()]},
           {forward, [g_term(), g_term(), g_term(), g_fwd_opts()]},
           {monitor_nodes, [g_term()]},
           {monitor_nodes, [g_term(), g_term()]},
           {monitor_nodes, [boolean(), oneof([[], [nodedown_reason], g_improper()])]},
           {on_up, [g_term(), g_fun()]},
           {on_down, [g_term(), g_fun()]},
           {info, []}]).

%% Random terms, and the shapes that broke things before.
g_term() ->
    frequency([{4, any()},
               {2, g_improper()},
               {2, g_map()},
               {2, g_int()},
               {2, g_string()},
               {1, binary()},
               {1, atom()},
               {1, g_fun()}]).

g_improper() ->
    ?LET({H, L, T}, {any(), list(any()), oneof([atom(), integer(), binary(), tuple()])}, [H | L] ++ T).

g_map() ->
    %% (PropEr 1.2 has no map type: maps from lists of pairs)
    oneof([?LET(L, list({any(), any()}), maps:from_list(L)),
           ?LET(L, list({oneof([atom(), name, listen_addrs, channels, channel, partition_key, ip, port]),
                         g_small()}),
                maps:from_list(L))]).

g_small() ->
    oneof([any(), g_int(), g_string(), g_improper()]).

g_int() ->
    oneof([integer(), -1, 0, 1, 255, 256, 65535, 65536, 1 bsl 32 - 2, 1 bsl 32 - 1, 1 bsl 32,
           1 bsl 64, ?LET(N, integer(), N * (1 bsl 80))]).

g_string() ->
    oneof([string(), "127.0.0.1", "localhost", "::1", "10.0.0.5", "999.1.1.1", "no.such.host.invalid",
           "", [$a | b], <<"127.0.0.1">>, <<255, 0>>]).

g_fun() ->
    oneof([fun() -> ok end, fun(_) -> ok end, fun(_, _) -> ok end, fun erlang:self/0]).

g_timeout() ->
    integer(0, 50).

g_ip() ->
    oneof([{127, 0, 0, 1}, {999, 0, 0, 1}, {1, 2, 3}, {0, 0, 0, 0, 0, 0, 0, 1},
           {0, 0, 0, 0, 0, 0, 0, 70000}, g_string(), any()]).

g_port() ->
    oneof([integer(1, 65535), 0, 70000, -1, any()]).

g_spec() ->
    oneof([g_term(),
           g_valid_spec(),
           ?LET({Name, Addrs, Extra},
                {oneof([atom(), 'a@b', 'x@127.0.0.1', 'noat', 'a@b@c', g_term()]),
                 oneof([list(?LET({Ip, P}, {g_ip(), g_port()}, #{ip => Ip, port => P})),
                        g_improper(), g_term()]),
                 oneof([#{}, #{channels => oneof([[], [#{name => c, parallelism => integer()}], g_term()])},
                        #{epoch => g_int()}, g_map()])},
                maps:merge(Extra, #{name => Name, listen_addrs => Addrs}))]).

%% Specs that pass the checks: joins dial (nothing answers as these names).
g_valid_spec() ->
    ?LET({Name, Addrs, Chs},
         {oneof(['a@b', 'x@127.0.0.1', 'weft_api_ghost@localhost']),
          non_empty(list(?LET({Ip, P}, {oneof([{127, 0, 0, 1}, "127.0.0.1", <<"::1">>,
                                               {0, 0, 0, 0, 0, 0, 0, 1}]),
                                        integer(1, 65535)},
                              #{ip => Ip, port => P}))),
          oneof([[], [#{name => default, parallelism => integer(1, 256)}]])},
         #{name => Name, listen_addrs => lists:sublist(Addrs, 16), channels => Chs}).

g_dest() ->
    oneof([atom(), {atom(), oneof(['a@b', atom()])}, g_term()]).

g_fwd_opts() ->
    oneof([#{}, [], g_term(), g_improper(),
           ?LET(L, list(oneof([{channel, oneof([default, gossip, nope, g_term()])},
                               {partition_key, g_term()},
                               {atom(), g_term()}])),
                oneof([L, maps:from_list(L)]))]).

g_opts() ->
    oneof([g_term(), g_improper(),
           ?LET(L, list(oneof([{listen, oneof([g_int(), {g_host(), g_port()}, g_term()])},
                               {advertise, oneof([[], list({g_host(), g_port()}), g_improper(), g_term()])},
                               {channels, oneof([[a, b], list(oneof([atom(), g_map()])), g_improper(), g_term()])},
                               {cookie, oneof(['', <<>>, <<"c">>, c, g_term()])},
                               {oneof([max_frame_size, heartbeat_interval, heartbeat_timeout,
                                       reconnect_min_backoff, reconnect_max_backoff, gossip_interval,
                                       parallelism, pollers, poll_linger_us, poll_linger_busy_us]), g_int()},
                               {oneof([affinity, overlay, io]), g_term()},
                               {atom(), g_term()}])),
                oneof([L, maps:from_list(L), L ++ bad]))]).

g_host() ->
    oneof([{127, 0, 0, 1}, {0, 0, 0, 0}, "127.0.0.1", <<"127.0.0.1">>, "localhost", localhost,
           "no.such.host.invalid", {1, 2, 3}, g_term()]).
