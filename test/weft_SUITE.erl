%% @doc weft across real nodes: each case starts 2-5 peer nodes (OTP's
%% `peer'), runs weft on them, and checks what arrives where. The nodes have
%% names but no Distributed Erlang connection to each other: everything
%% between them goes through weft.
-module(weft_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").

-export([all/0, suite/0, init_per_testcase/2, end_per_testcase/2]).
-export([static_overlay_with_late_and_missing_members/1, client_server_relays_and_fails_over/1,
         callback_overlay_cyclon_converges/1, callback_overlay_survives_a_bad_protocol/1,
         callback_overlay_messages_cannot_fill_the_atom_table/1,
         callback_overlay_invalid_entries_stay_out/1]).
-export([join_converges/1, forward_on_every_channel/1, partition_key_order/1,
         small_messages_share_a_connection_and_keep_order_with_large_ones/1,
         a_flood_on_one_key_leaves_the_shared_lane_to_the_others/1,
         order_holds_when_the_sender_gives_up_on_a_frozen_receiver/1,
         fences_from_a_peer_that_reads_nothing_get_a_bounded_queue_of_answers/1,
         large_and_small_on_separate_sockets/1, a_small_message_goes_between_the_parts_of_a_large_one/1,
         killed_node_goes_down_and_rejoins/1,
         leave_and_remove/1, sync_join_through_a_removal_in_flight_holds/1,
         leave_while_sync_join_waits_holds/1,
         wrong_cookie_refused/1, oversized_frame_refused/1,
         bad_config/1, unknown_channel_and_non_member/1, stop_closes_everything/1,
         simultaneous_joins_settle/1, panics_do_not_take_the_vm_down/1,
         missing_nif_is_a_clear_error/1, frozen_node_times_out_and_comes_back/1,
         callbacks_and_monitor_nodes/1, every_kind_of_term_small_and_large/1,
         io_on_threads/1, pollers_linger_less_while_the_cpus_are_contended/1, a_killed_poller_process_is_restarted/1,
         bulk_lanes_move_to_threads_and_back/1, mixed_sizes_keep_each_senders_order/1,
         hostile_bytes_do_not_kill_the_node/1, new_atoms_from_a_peer_cannot_fill_the_atom_table/1,
         new_funs_from_a_peer_cannot_fill_the_export_table/1,
         large_frame_headers_alone_take_no_memory/1, large_frames_reuse_buffers_never_one_in_use/1, made_up_members_stay_where_pushed/1,
         a_full_node_says_so_and_makes_room_when_members_go_down/1,
         forward_right_after_join_waits/1, overload_wait_holds_the_sender_until_there_is_room/1,
         waiting_senders_go_in_the_order_they_began_to_wait/1,
         frozen_receiver_every_message_counted/1, stopped_receiver_every_message_counted/1,
         stopped_sender_every_message_counted/1,
         left_receiver_or_sender_every_message_counted/1,
         a_stop_that_cannot_write_out_says_so/1,
         restarted_with_clock_behind_rejoins/1,
         a_restarted_transport_rejoins_its_cluster/1]).


suite() ->
    [{timetrap, {minutes, 3}}].

all() ->
    [join_converges, forward_on_every_channel, partition_key_order,
     small_messages_share_a_connection_and_keep_order_with_large_ones,
     a_flood_on_one_key_leaves_the_shared_lane_to_the_others,
     order_holds_when_the_sender_gives_up_on_a_frozen_receiver,
     fences_from_a_peer_that_reads_nothing_get_a_bounded_queue_of_answers,
     large_and_small_on_separate_sockets, a_small_message_goes_between_the_parts_of_a_large_one,
     killed_node_goes_down_and_rejoins,
     leave_and_remove, sync_join_through_a_removal_in_flight_holds,
     leave_while_sync_join_waits_holds,
     wrong_cookie_refused, oversized_frame_refused, bad_config,
     unknown_channel_and_non_member, stop_closes_everything,
     simultaneous_joins_settle, panics_do_not_take_the_vm_down,
     missing_nif_is_a_clear_error, frozen_node_times_out_and_comes_back,
     callbacks_and_monitor_nodes, every_kind_of_term_small_and_large, io_on_threads,
     pollers_linger_less_while_the_cpus_are_contended,
     a_killed_poller_process_is_restarted, bulk_lanes_move_to_threads_and_back,
     mixed_sizes_keep_each_senders_order, hostile_bytes_do_not_kill_the_node,
     new_atoms_from_a_peer_cannot_fill_the_atom_table, new_funs_from_a_peer_cannot_fill_the_export_table,
     large_frame_headers_alone_take_no_memory, large_frames_reuse_buffers_never_one_in_use,
     made_up_members_stay_where_pushed,
     a_full_node_says_so_and_makes_room_when_members_go_down,
     forward_right_after_join_waits, overload_wait_holds_the_sender_until_there_is_room,
     waiting_senders_go_in_the_order_they_began_to_wait,
     frozen_receiver_every_message_counted,
     stopped_receiver_every_message_counted, stopped_sender_every_message_counted,
     left_receiver_or_sender_every_message_counted, a_stop_that_cannot_write_out_says_so,
     restarted_with_clock_behind_rejoins, a_restarted_transport_rejoins_its_cluster,
     static_overlay_with_late_and_missing_members, client_server_relays_and_fails_over,
     callback_overlay_cyclon_converges, callback_overlay_survives_a_bad_protocol,
     callback_overlay_messages_cannot_fill_the_atom_table,
     callback_overlay_invalid_entries_stay_out].

init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, _Config) ->
    weft_ct:stop_tracked().

%%% Helpers

opts() ->
    opts(#{}).

opts(Extra) ->
    weft_ct:test_opts(Extra).

start(Prefix, Opts) ->
    N = weft_ct:start_node(Prefix, Opts),
    weft_ct:track(N),
    N.

%% Start `Count' nodes and join them all through the first.
cluster(Count) ->
    cluster(Count, opts()).

cluster(Count, Opts) ->
    Nodes = [start(weft, Opts) || _ <- lists:seq(1, Count)],
    [Seed | Rest] = Nodes,
    Spec = call(Seed, weft, node_spec, []),
    [ok = call(N, weft, sync_join, [Spec, 10000]) || N <- Rest],
    converge(Nodes),
    Nodes.

converge(Nodes) ->
    Want = lists:sort([node_of(N) || N <- Nodes]),
    weft_ct:wait_until({members, Want},
                       fun() -> lists:all(fun(N) -> call(N, weft, members, []) =:= Want end, Nodes) end).

call(N, M, F, A) ->
    weft_ct:call(N, M, F, A).

node_of(#{node := Node}) -> Node.

info(N) ->
    call(N, weft, info, []).

lanes(N, Peer, Channel) ->
    #{peers := #{Peer := #{channels := #{Channel := Lanes}}}} = info(N),
    Lanes.

all_lanes_connected(N, Peer) ->
    case info(N) of
        #{peers := #{Peer := #{state := up, channels := Chs}}} ->
            lists:all(fun(#{state := S}) -> S =:= connected end, lists:append(maps:values(Chs)));
        _ ->
            false
    end.

%%% Cases

join_converges(_Config) ->
    Nodes = cluster(4),
    Names = lists:sort([node_of(N) || N <- Nodes]),
    [begin
         ?assertEqual(Names, call(N, weft, members, [])),
         ?assertEqual(Names -- [node_of(N)], call(N, weft, nodes, [])),
         %% no Distributed Erlang between the nodes
         ?assertEqual([], call(N, erlang, nodes, []))
     end || N <- Nodes],
    %% every member keeps every lane to every other
    [weft_ct:wait_until(lanes, fun() -> all_lanes_connected(A, node_of(B)) end)
     || A <- Nodes, B <- Nodes, A =/= B],
    ok.

forward_on_every_channel(_Config) ->
    [A, B, _C] = cluster(3),
    NodeB = node_of(B),
    call(A, weft_ct, collector, [inbox]),
    call(B, weft_ct, collector, [inbox]),
    call(B, weft_ct, echo, [echo]),
    InboxA = call(A, weft_ct, whereis_name, [inbox]),
    Channels = [default, gossip, vnode],
    %% by name, three ways, on every channel
    [begin
         ok = call(A, weft, forward, [NodeB, inbox, {by_name, Ch}, #{channel => Ch}]),
         ok = call(A, weft, forward, [{inbox, NodeB}, {by_tuple, Ch}, [{channel, Ch}]]),
         %% by pid: the echo replies to the pid it got inside the message
         ok = call(A, weft, forward, [NodeB, echo, {InboxA, Ch, Ch}, #{channel => Ch}])
     end || Ch <- Channels],
    GotB = call(B, weft_ct, collected, [inbox, 6]),
    ?assertEqual(lists:sort([{K, Ch} || Ch <- Channels, K <- [by_name, by_tuple]]), lists:sort(GotB)),
    GotA = call(A, weft_ct, collected, [inbox, 3]),
    ?assertEqual(lists:sort([{echo, NodeB, Ch} || Ch <- Channels]), lists:sort(GotA)),
    %% and by a pid of the other node, received earlier
    InboxB = call(B, weft_ct, whereis_name, [inbox]),
    ok = call(A, weft, forward, [InboxB, by_pid, #{channel => vnode}]),
    ?assertEqual(7, length(call(B, weft_ct, collected, [inbox, 7]))),
    %% frames really went over each channel's lanes
    %% (counted after the write returns: the receiver may be first)
    [weft_ct:wait_until({sent, Ch}, fun() -> lists:sum([S || #{sent_frames := S} <- lanes(A, NodeB, Ch)]) >= 3 end)
     || Ch <- Channels],
    ok.

partition_key_order(_Config) ->
    %% (without the shared lane, so that each lane's own connection shows
    %% what it carried)
    [A, B] = cluster(2, opts(#{shared_lane => false})),
    NodeB = node_of(B),
    Count = 10000,
    Keys = 64,
    %% integer keys pick lane Key rem 16: every lane, in turn
    call(B, weft_ct, collector, [inbox]),
    ok = call(A, weft_ct, send_many, [NodeB, inbox, vnode, Count, Keys]),
    check_key_order(call(B, weft_ct, collected, [inbox, Count]), Count, Keys),
    %% (a frame is counted after its delivery: wait for the counters)
    weft_ct:wait_until(counted, fun() ->
                                        [Count div 16] =:= lists:usort([R || #{recv_frames := R, shared_lane := false} <- lanes(B, node_of(A), vnode)])
                                end),
    Used = [L || #{lane := L, recv_frames := R} <- lanes(B, node_of(A), vnode), R > 0],
    ?assertEqual(lists:seq(0, 15), lists:sort(Used)),
    %% the shared lane is connected, agreed on nothing to share, and
    %% carried nothing
    [#{lane := 16, state := connected, recv_frames := 0, capabilities := Caps}] =
        [L || #{shared_lane := true} = L <- lanes(B, node_of(A), vnode)],
    ?assertNot(lists:member(share, Caps)),
    ?assertNot(lists:member(share_wait, Caps)),
    ?assertEqual([own], lists:usort([M || #{small_messages := M, shared_lane := false} <- lanes(A, NodeB, vnode)])),
    %% other keys are hashed: order per key holds all the same
    call(B, weft_ct, collector, [inbox2]),
    ok = call(A, weft_ct, send_many, [NodeB, inbox2, vnode, Count, Keys, tuple]),
    check_key_order(call(B, weft_ct, collected, [inbox2, Count]), Count, Keys),
    ok.

%% A channel of 16 lanes has a 17th connection, its shared lane: the lanes'
%% small messages go on it (one system call carries many lanes' messages),
%% their large ones on their own connections. A lane that changes
%% connection keeps its order: per key, small and large messages arrive in
%% the order they were sent, as lanes go to their own connection and, once
%% quiet for a second, back.
small_messages_share_a_connection_and_keep_order_with_large_ones(_Config) ->
    [A, B] = cluster(2),
    NodeA = node_of(A),
    NodeB = node_of(B),
    weft_ct:wait_until(lanes, fun() -> all_lanes_connected(A, NodeB) end),
    Lanes = lanes(A, NodeB, vnode),
    ?assertEqual(17, length(Lanes)),
    ?assertEqual([16], [L || #{lane := L, shared_lane := true} <- Lanes]),
    ?assertEqual([[join_check, parts, relay, seq_ack, share, share_wait, signed_refusal, trace]],
                 lists:usort([lists:sort(C) || #{capabilities := C} <- Lanes])),
    Data = fun(N, Peer) -> [L || #{shared_lane := false} = L <- lanes(N, Peer, vnode)] end,
    Modes = fun() -> lists:usort([M || #{small_messages := M} <- Data(A, NodeB)]) end,
    %% small messages: the lanes move to the shared lane
    call(B, weft_ct, collector, [inbox]),
    ok = call(A, weft_ct, send_many, [NodeB, inbox, vnode, 1600, 16]),
    check_key_order(call(B, weft_ct, collected, [inbox, 1600]), 1600, 16),
    weft_ct:wait_until(shared, fun() -> Modes() =:= [shared_lane] end),
    RecvB = fun() -> lists:sum([R || #{recv_frames := R} <- Data(B, NodeA)]) end,
    Before = RecvB(),
    [#{recv_frames := SharedBefore}] = [L || #{shared_lane := true} = L <- lanes(B, NodeA, vnode)],
    call(B, weft_ct, collector, [inbox2]),
    ok = call(A, weft_ct, send_many, [NodeB, inbox2, vnode, 1600, 16]),
    check_key_order(call(B, weft_ct, collected, [inbox2, 1600]), 1600, 16),
    weft_ct:wait_until(counted, fun() ->
                                        [#{recv_frames := S}] = [L || #{shared_lane := true} = L <- lanes(B, NodeA, vnode)],
                                        S >= SharedBefore + 1600
                                end),
    ?assertEqual(Before, RecvB()),
    %% B stopped: the shared lane backs up with small messages, then every
    %% key sends a large one and small ones again. The large ones wait for
    %% the small ones before them, whichever connection B reads first.
    call(B, weft_ct, collector, [stopped, fun({K, S, _}) -> {K, S}; (KS) -> KS end]),
    OsPid = call(B, os, getpid, []),
    [] = os:cmd("kill -STOP " ++ OsPid),
    try
        %% (one sender: order holds per sender)
        ok = call(A, weft_ct, in_turn, [[{weft_ct, send_seqs, [NodeB, stopped, vnode, 1, 6400, 16]},
                                         {weft_ct, send_big_seqs, [NodeB, stopped, vnode, 6401, 6416, 16, 100 * 1024]},
                                         {weft_ct, send_seqs, [NodeB, stopped, vnode, 6417, 6800, 16]}]])
    after
        os:cmd("kill -CONT " ++ OsPid)
    end,
    check_key_order(call(B, weft_ct, collected, [stopped, 6800]), 6800, 16),
    %% (B may have read a lane's wait before its fence: then it stopped
    %% reading that lane until the fence came, and counted it)
    Waits = lists:sum([W || #{recv_waits := W} <- Data(B, NodeA)]),
    ct:pal("waits that stopped B's reads: ~p", [Waits]),
    ?assert(Waits >= 0),
    %% small and large (100 KB) messages per key: every lane goes to its
    %% own connection, in order
    call(B, weft_ct, collector, [mixed, fun({K, S, _}) -> {K, S} end]),
    ok = call(A, weft_ct, send_mixed_keys, [NodeB, mixed, vnode, 960, 16, 100 * 1024]),
    check_key_order(call(B, weft_ct, collected, [mixed, 960]), 960, 16),
    weft_ct:wait_until(own, fun() -> Modes() =:= [own] end),
    ?assert(RecvB() >= Before + 960 div 3),
    %% quiet for a second, the lanes go back with their next small message
    call(B, weft_ct, collector, [back]),
    Sent = counters:new(1, []),
    weft_ct:wait_until(back, fun() ->
                                     From = counters:get(Sent, 1) + 1,
                                     ok = call(A, weft_ct, send_seqs, [NodeB, back, vnode, From, From + 15, 16]),
                                     counters:add(Sent, 1, 16),
                                     Modes() =:= [shared_lane]
                             end),
    N = counters:get(Sent, 1),
    ok = call(A, weft_ct, send_seqs, [NodeB, back, vnode, N + 1, N + 160, 16]),
    check_key_order(call(B, weft_ct, collected, [back, N + 160]), N + 160, 16),
    ok.

%% One key floods small messages while B reads nothing (SIGSTOP): once
%% more than 64 KiB of them wait, its lane leaves the shared lane, so that
%% the shared lane holds at most 64 KiB of it (plus a frame) and the other
%% keys' small messages do not queue behind the flood. Every key's order
%% holds when B reads again.
a_flood_on_one_key_leaves_the_shared_lane_to_the_others(_Config) ->
    [A, B] = cluster(2),
    NodeB = node_of(B),
    weft_ct:wait_until(lanes, fun() -> all_lanes_connected(A, NodeB) end),
    Data = fun() -> [L || #{shared_lane := false} = L <- lanes(A, NodeB, vnode)] end,
    Shared = fun() -> [L] = [L || #{shared_lane := true} = L <- lanes(A, NodeB, vnode)], L end,
    call(B, weft_ct, collector, [warm]),
    ok = call(A, weft_ct, send_many, [NodeB, warm, vnode, 1600, 16]),
    1600 = length(call(B, weft_ct, collected, [warm, 1600])),
    weft_ct:wait_until(shared, fun() -> [M || #{small_messages := M} <- Data()] =:= lists:duplicate(16, shared_lane) end),
    call(B, weft_ct, collector, [flood, fun({K, S, _}) -> {K, S} end]),
    call(B, weft_ct, collector, [others]),
    OsPid = call(B, os, getpid, []),
    [] = os:cmd("kill -STOP " ++ OsPid),
    {Flood, Others} = {30000, 1500},
    try
        %% 30 MB in 1 KB messages on key 0 (lane 0): more than loopback's
        %% socket buffers take
        ok = call(A, weft_ct, send_big_seqs, [NodeB, flood, vnode, 1, Flood, 1, 1024]),
        ok = call(A, weft_ct, send_seqs, [NodeB, others, vnode, 1, Others, 16]),
        [#{lane := 0, small_messages := Lane0, queued_bytes := Queued0} | Rest] = Data(),
        #{queued_bytes := SharedQueued} = Shared(),
        ct:pal("lane 0: ~p, ~p bytes queued; shared lane: ~p bytes queued", [Lane0, Queued0, SharedQueued]),
        ?assert(lists:member(Lane0, [changing, own])),
        ?assert(Queued0 > 10 * 1024 * 1024),
        %% key 0's at most 64 KiB and a frame, the others' few bytes
        ?assert(SharedQueued < 256 * 1024),
        ?assertEqual([shared_lane], lists:usort([M || #{small_messages := M} <- Rest]))
    after
        os:cmd("kill -CONT " ++ OsPid)
    end,
    ?assertEqual([{0, S} || S <- lists:seq(1, Flood)], call(B, weft_ct, collected, [flood, Flood])),
    check_key_order(call(B, weft_ct, collected, [others, Others]), Others, 16),
    %% written out, key 0 counts nothing waiting any more: after a quiet
    %% second its small messages take the shared lane again
    call(B, weft_ct, collector, [back]),
    Sent = counters:new(1, []),
    weft_ct:wait_until(back, fun() ->
                                     N = counters:get(Sent, 1) + 1,
                                     ok = call(A, weft_ct, send_seqs, [NodeB, back, vnode, 16 * N, 16 * N, 16]),
                                     counters:add(Sent, 1, 1),
                                     [#{lane := 0, small_messages := M} | _] = Data(),
                                     M =:= shared_lane
                             end),
    ?assertEqual(counters:get(Sent, 1), length(call(B, weft_ct, collected, [back, counters:get(Sent, 1)]))),
    ok.

%% Four senders on A flood 64 keys of `vnode' (small messages, a 70 KB one
%% now and then) while B is stopped (SIGSTOP) past heartbeat_timeout: A
%% gives up on B, and connects again when B goes on, with messages of the
%% earlier connections still unread at B, on every lane and on the shared
%% lane. B reads what A sent before it gave up first: per sender and key,
%% no message arrives after a later one. Every message accepted is
%% delivered, or counted as dropped by A (B drops none).
order_holds_when_the_sender_gives_up_on_a_frozen_receiver(_Config) ->
    [A, B] = cluster(2),
    NodeA = node_of(A),
    NodeB = node_of(B),
    weft_ct:wait_until(lanes, fun() -> all_lanes_connected(A, NodeB) end),
    call(B, weft_ct, order_checker, [checker]),
    Self = self(),
    spawn_link(fun() -> Self ! {flooded, call(A, weft_ct, key_flood, [NodeB, checker, vnode, 4, 64, 6000])} end),
    weft_ct:wait_until(flowing, fun() -> maps:get(received, call(B, weft_ct, order_checked, [checker])) > 1000 end),
    OsPid = call(B, os, getpid, []),
    [] = os:cmd("kill -STOP " ++ OsPid),
    try
        weft_ct:wait_until(given_up, fun() ->
                                             #{peers := #{NodeB := #{state := S}}} = info(A),
                                             S =/= up
                                     end)
    after
        os:cmd("kill -CONT " ++ OsPid)
    end,
    Accepted = receive {flooded, N} -> N after 60000 -> error(flood_never_ended) end,
    Dropped = fun(Node) -> lists:sum(maps:values(maps:get(dropped, info(Node)))) end,
    weft_ct:wait_until(accounted, fun() ->
                                          #{received := R} = call(B, weft_ct, order_checked, [checker]),
                                          R + Dropped(A) + Dropped(B) >= Accepted
                                  end),
    #{received := Received, late := Late, examples := Examples} = call(B, weft_ct, order_checked, [checker]),
    ct:pal("accepted ~p, received ~p, dropped by A ~p, by B ~p; late ~p ~p; B's waits ~p",
           [Accepted, Received, maps:get(dropped, info(A)), maps:get(dropped, info(B)), Late, Examples,
            lists:sum([W || #{recv_waits := W} <- lanes(B, NodeA, vnode)])]),
    ?assertEqual(0, Late),
    ?assertEqual(Accepted, Received + Dropped(A) + Dropped(B)),
    ok.

check_key_order(Got, Count, Keys) ->
    ?assertEqual(Count, length(Got)),
    %% per key, sequence numbers strictly increase and none is missing
    ByKey = lists:foldl(fun({K, S}, Acc) -> maps:update_with(K, fun(L) -> [S | L] end, [S], Acc) end,
                        #{}, Got),
    maps:foreach(fun(K, Rev) ->
                         Seqs = lists:reverse(Rev),
                         ?assertEqual([S || S <- lists:seq(1, Count), S rem Keys =:= K], Seqs)
                 end, ByKey).

%% Small messages may pass large ones of other processes on a lane; each
%% process's own messages still arrive in the order it sent them.
mixed_sizes_keep_each_senders_order(_Config) ->
    [A, B] = cluster(2),
    NodeB = node_of(B),
    {Senders, Each} = {8, 60},
    call(B, weft_ct, collector, [mixed, fun({Id, Seq, _}) -> {Id, Seq} end]),
    ok = call(A, weft_ct, mixed_senders, [NodeB, mixed, default, Senders, Each]),
    Got = call(B, weft_ct, collected, [mixed, Senders * Each]),
    ?assertEqual(Senders * Each, length(Got)),
    [?assertEqual(lists:seq(1, Each), [Seq || {I, Seq} <- Got, I =:= Id]) || Id <- lists:seq(1, Senders)],
    weft_ct:wait_until(sent, fun() ->
                                     [#{sent_frames := Sent}] = lanes(A, NodeB, default),
                                     Sent >= Senders * Each
                             end),
    ok.

large_and_small_on_separate_sockets(_Config) ->
    [A, B] = cluster(2),
    NodeB = node_of(B),
    weft_ct:wait_until(lanes, fun() -> all_lanes_connected(A, NodeB) end),
    call(B, weft_ct, collector, [big]),
    call(B, weft_ct, collector, [small]),
    Big = crypto:strong_rand_bytes(8 * 1024 * 1024),
    ok = call(A, weft, forward, [NodeB, big, Big, #{channel => vnode}]),
    [ok = call(A, weft, forward, [NodeB, small, I, #{channel => default}]) || I <- lists:seq(1, 1000)],
    ?assertEqual(lists:seq(1, 1000), call(B, weft_ct, collected, [small, 1000])),
    ?assertEqual([Big], call(B, weft_ct, collected, [big, 1])),
    %% the two channels used different sockets
    [VnodeLane] = [L || #{sent_bytes := S} = L <- lanes(A, NodeB, vnode), S >= 8 * 1024 * 1024],
    [DefaultLane] = lanes(A, NodeB, default),
    #{local := VLocal, remote := VRemote} = VnodeLane,
    #{local := DLocal, remote := DRemote} = DefaultLane,
    %% (on the side that accepted both, the local ends are both the listen
    %% address: the pair of ends tells the connections apart)
    ?assertNotEqual({VLocal, VRemote}, {DLocal, DRemote}),
    weft_ct:wait_until(sent, fun() -> [#{sent_frames := S}] = lanes(A, NodeB, default), S =:= 1000 end),
    ok.

%% On one lane, a message of more than 1 MiB goes out in parts, and a
%% small message of another process goes between two of them: it arrives
%% before the large one, which arrives whole. B is stopped (SIGSTOP) while
%% A sends, so the 48 MiB (more than loopback's socket buffers hold) are
%% still on their way when the small message comes.
a_small_message_goes_between_the_parts_of_a_large_one(_Config) ->
    [A, B] = cluster(2),
    NodeB = node_of(B),
    weft_ct:wait_until(lanes, fun() -> all_lanes_connected(A, NodeB) end),
    [_] = lanes(A, NodeB, default),
    call(B, weft_ct, collector, [mixed, fun({big, Bin}) -> {big, byte_size(Bin), Bin =:= binary:copy(<<"b">>, byte_size(Bin))};
                                           (M) -> M
                                        end]),
    OsPid = call(B, os, getpid, []),
    Size = 48 * 1024 * 1024,
    [] = os:cmd("kill -STOP " ++ OsPid),
    Sent = try call(A, weft_ct, big_then_small, [NodeB, mixed, default, Size])
           after os:cmd("kill -CONT " ++ OsPid)
           end,
    ?assertEqual(ok, Sent),
    ?assertEqual([small, {big, Size, true}], call(B, weft_ct, collected, [mixed, 2])),
    ok.

killed_node_goes_down_and_rejoins(_Config) ->
    [A, B, C] = cluster(3),
    NodeC = node_of(C),
    [call(N, weft_ct, watcher, []) || N <- [A, B]],
    call(C, weft_ct, collector, [inbox]),
    OldPid = call(C, weft_ct, whereis_name, [inbox]),
    weft_ct:kill_node(C),
    [weft_ct:wait_until({nodedown, N}, fun() -> lists:member({nodedown, NodeC}, call(N, weft_ct, events, [])) end)
     || N <- [A, B]],
    Rest = lists:sort([node_of(A), node_of(B)]),
    [?assertEqual(Rest, call(N, weft, members, [])) || N <- [A, B]],
    %% restart under the same name: a new incarnation that joins again
    C2 = weft_ct:start_node_named(maps:get(name, C), opts()),
    weft_ct:track(C2),
    ok = call(C2, weft, sync_join, [call(B, weft, node_spec, []), 10000]),
    converge([A, B, C2]),
    [weft_ct:wait_until({nodeup, N}, fun() ->
                                             Evs = call(N, weft_ct, events, []),
                                             lists:member({nodeup, NodeC}, Evs)
                                     end) || N <- [A, B]],
    NewPid = call(C2, weft_ct, collector, [inbox]),
    ok = call(A, weft, forward, [NodeC, inbox, hello_again, #{}]),
    ?assertEqual([hello_again], call(C2, weft_ct, collected, [inbox, 1])),
    %% a pid of the old incarnation is not delivered to the new one
    ?assertNotEqual(OldPid, NewPid),
    ok = call(A, weft, forward, [OldPid, to_the_dead, #{}]),
    weft_ct:wait_until(no_destination,
                       fun() -> maps:get(no_destination, maps:get(dropped, info(C2))) >= 1 end),
    ?assertEqual([hello_again], call(C2, weft_ct, collected, [inbox])),
    ok.

leave_and_remove(_Config) ->
    [A, B, C, D] = cluster(4),
    %% B leaves by itself
    ok = call(B, weft, leave, []),
    Three = lists:sort([node_of(N) || N <- [A, C, D]]),
    weft_ct:wait_until(left, fun() ->
                                     lists:all(fun(N) -> call(N, weft, members, []) =:= Three end, [A, C, D])
                             end),
    weft_ct:wait_until(alone, fun() -> call(B, weft, members, []) =:= [node_of(B)] end),
    %% A removes D: everyone drops it, D too (told by A itself, and it says
    %% so once)
    ok = call(D, weft_ct, capture_logs, []),
    ok = call(A, weft, leave, [node_of(D)]),
    Two = lists:sort([node_of(A), node_of(C)]),
    weft_ct:wait_until(removed, fun() ->
                                        call(A, weft, members, []) =:= Two andalso
                                            call(C, weft, members, []) =:= Two andalso
                                            call(D, weft, members, []) =:= [node_of(D)]
                                end),
    %% and it stays that way over many gossip rounds
    timer:sleep(1500),
    ?assertEqual(Two, call(A, weft, members, [])),
    ?assertEqual(Two, call(C, weft, members, [])),
    ?assertEqual([node_of(D)], call(D, weft, members, [])),
    ?assertEqual([node_of(B)], call(B, weft, members, [])),
    Removed = [L || L <- call(D, weft_ct, logs, []), string:find(L, "removed from the cluster") =/= nomatch],
    ?assertMatch([_], Removed),
    %% a node that left may join again
    ok = call(B, weft, sync_join, [call(A, weft, node_spec, []), 10000]),
    converge([A, B, C]),
    ok.

%% The reviewer's race: A removes B (`leave(B)') while B, which has not
%% heard of it yet, asks to join A, up as far as B knows. B's sync_join
%% says `ok' only once A has confirmed B's current incarnation as a
%% member: the removal, which A sent before, is seen first; B leaves as it
%% says (a new incarnation) and joins again by itself; after `ok' A and B
%% list each other, and C learns of B's new incarnation from gossip (rounds
%% after the `ok') and nothing removes it again. B's pollers are held
%% (suspended) from just before the removal until its sync_join is asked,
%% so that B reads the removal only after it asked to join: the
%% interleaving that lost the join (2 of 2 times under a flood), every
%% time. Before the fix, sync_join said `ok' at once and B then left, for
%% good.
sync_join_through_a_removal_in_flight_holds(_Config) ->
    %% (no connection read on a thread: holding the pollers holds all
    %% reading; B must not give A up while it reads nothing)
    [A, B, C] = Nodes = cluster(3, opts(#{io => schedulers, heartbeat_timeout => 10000})),
    [NodeA, NodeB, NodeC] = [node_of(N) || N <- Nodes],
    %% (no dial under way: a lane B dialed now would be refused, and tell
    %% B of the removal without its pollers)
    [weft_ct:wait_until(lanes, fun() -> all_lanes_connected(X, node_of(Y)) end)
     || X <- Nodes, Y <- Nodes, X =/= Y],
    SpecA = call(A, weft, node_spec, []),
    #{incarnation := Old} = call(B, weft, node_spec, []),
    ok = call(B, weft_ct, capture_logs, []),
    ok = call(B, weft_ct, hold_pollers, []),
    ok = call(A, weft, leave, [NodeB]),
    weft_ct:wait_until(removed_on_a, fun() -> call(A, weft, members, []) =:= lists:sort([NodeA, NodeC]) end),
    %% B, reading nothing, still takes A for up
    ?assert(lists:member(NodeA, call(B, weft, nodes, []))),
    Join = fun() ->
                   Self = self(),
                   spawn(fun() -> Self ! {joined, weft:sync_join(SpecA, 30000)} end),
                   %% the pollers go on once the join is asked for (it
                   %% waits), or answered
                   Asked = fun Asked() ->
                                   {message_queue_len, Q} = process_info(self(), message_queue_len),
                                   case Q > 0 orelse weft_ct:sync_join_waiters() =/= [] of
                                       true -> ok;
                                       false -> timer:sleep(2), Asked()
                                   end
                           end,
                   Asked(),
                   ok = weft_ct:release_pollers(),
                   receive {joined, R} -> R end
           end,
    ?assertEqual(ok, call(B, erlang, apply, [Join, []])),
    %% at `ok', B is a member on both sides, as its new incarnation
    #{incarnation := New} = call(B, weft, node_spec, []),
    ?assertNotEqual(Old, New),
    ?assert(lists:member(NodeA, call(B, weft, members, []))),
    ?assert(lists:member(NodeB, call(A, weft, members, []))),
    %% and stays one: gossip brings the new incarnation to C
    converge(Nodes),
    weft_ct:wait_until(new_incarnation_everywhere,
                       fun() ->
                               [maps:get(incarnation, maps:get(NodeB, maps:get(peers, info(N))))
                                || N <- [A, C]] =:= [New, New]
                       end),
    ?assertEqual(lists:sort([NodeA, NodeB, NodeC]), call(B, weft, members, [])),
    ?assertMatch(#{incarnation := New}, call(B, weft, node_spec, [])),
    %% B was removed once (and said so), and joined again
    Removed = [L || L <- call(B, weft_ct, logs, []), string:find(L, "removed from the cluster") =/= nomatch],
    ?assertMatch([_], Removed),
    ok.

%% The user's own leave while a sync_join waits: the call returns
%% `{error, left}', and the leave holds (nothing joins again for it). A's
%% pollers are held, so that the join waits for A's answer to its check
%% (A is up and B a member: the check is B's only wait).
leave_while_sync_join_waits_holds(_Config) ->
    [A, B] = cluster(2, opts(#{io => schedulers, heartbeat_timeout => 10000})),
    [NodeA, NodeB] = [node_of(N) || N <- [A, B]],
    [weft_ct:wait_until(lanes, fun() -> all_lanes_connected(X, node_of(Y)) end)
     || {X, Y} <- [{A, B}, {B, A}]],
    SpecA = call(A, weft, node_spec, []),
    ok = call(A, weft_ct, hold_pollers, []),
    Leave = fun() ->
                    Self = self(),
                    spawn(fun() -> Self ! {joined, weft:sync_join(SpecA, 30000)} end),
                    Waiting = fun Waiting() ->
                                      {message_queue_len, Q} = process_info(self(), message_queue_len),
                                      case {Q, weft_ct:sync_join_waiters()} of
                                          {0, []} -> timer:sleep(2), Waiting();
                                          {0, _} -> ok;
                                          _ -> receive {joined, Early} -> {answered_before_the_leave, Early} end
                                      end
                              end,
                    case Waiting() of
                        ok ->
                            ok = weft:leave(),
                            R = receive {joined, X} -> X after 10000 -> timeout end,
                            %% the transport has carried out the leave
                            %% (info/0 comes after it), and weft_server
                            %% has had what the transport said of it
                            %% (this_node_left) once its state is read: a
                            %% join made again would show in the peers
                            _ = weft:info(),
                            _ = sys:get_state(weft_server),
                            {R, maps:keys(maps:get(peers, weft:info())), weft:members()};
                        Early ->
                            Early
                    end
            end,
    ?assertEqual({{error, left}, [], [NodeB]}, call(B, erlang, apply, [Leave, []])),
    ok = call(A, weft_ct, release_pollers, []),
    weft_ct:wait_until(apart, fun() ->
                                      call(A, weft, members, []) =:= [NodeA] andalso
                                          not maps:is_key(NodeB, maps:get(peers, info(A)))
                              end),
    ?assertEqual([NodeB], call(B, weft, members, [])),
    ?assertEqual(#{}, maps:get(peers, info(B))),
    ok.

wrong_cookie_refused(_Config) ->
    [A, B] = cluster(2),
    X = start(intruder, opts(#{cookie => <<"not-the-cookie">>})),
    call(A, weft_ct, collector, [inbox]),
    %% the joining node is told why at once, not after its timeout
    ?assertEqual({error, {refused, bad_cookie}},
                 call(X, weft, sync_join, [call(A, weft, node_spec, []), 20000])),
    ?assertEqual([node_of(X)], call(X, weft, members, [])),
    ?assertEqual(lists:sort([node_of(A), node_of(B)]), call(A, weft, members, [])),
    ?assertNot(maps:is_key(node_of(X), maps:get(peers, info(A)))),
    %% never reached, refused for good: not kept as a member to redial
    ?assertEqual(#{}, maps:get(peers, info(X))),
    %% A raw client that fails the cookie proof and sends a data frame
    %% right behind it, as if it had been let in: the refusal says nothing
    %% but "refused", the connection ends, and the frame is never read.
    Port = call(A, weft_ct, port, []),
    {ok, S} = gen_tcp:connect({127,0,0,1}, Port, [binary, {active, false}]),
    %% hello (protocol 3): nonce, versions [3], capabilities
    Hello = <<"WEFT", 3:16, 0, (binary:copy(<<1>>, 32))/binary, 1, 3:16, 7:64>>,
    ok = gen_tcp:send(S, weft_ct:raw_frame(0, Hello)),
    {0, <<"WEFT", 3:16, 1, _Nonce:32/binary>>} = weft_ct:recv_raw(S),
    NodeA = atom_to_binary(node_of(A)),
    Auth = <<"WEFT", 3:16, 2, (spec_bin(<<"x@127.0.0.1">>))/binary, (weft_ct:str8(NodeA))/binary,
             (weft_ct:str8(<<"default">>))/binary, 0:16, (binary:copy(<<7>>, 32))/binary>>,
    Sneaky = weft_ct:raw_frame(1, term_to_binary({inbox, sneaky})),
    ok = gen_tcp:send(S, [weft_ct:raw_frame(0, Auth), Sneaky]),
    ?assertEqual({0, <<"WEFT", 3:16, 4, 0>>}, weft_ct:recv_raw(S)),
    ?assertEqual({error, closed}, gen_tcp:recv(S, 0, 10000)),
    %% the same frame through an authenticated connection does arrive
    ok = call(B, weft, forward, [node_of(A), inbox, real, #{}]),
    ?assertEqual([real], call(A, weft_ct, collected, [inbox, 1])),
    ?assertEqual([real], call(A, weft_ct, collected, [inbox])),
    #{refused_connections := #{bad_cookie := Refused}} = info(A),
    ?assert(Refused >= 2),
    ok.

%% A peer that knows the cookie sends messages full of atoms the receiver
%% does not have, far more than its atom table holds (a full table ends the
%% VM). The receiver creates new atoms only while its table has room above
%% a reserve; past it, such a message is dropped and counted
%% (`atom_limit'), a warning is logged, and the connection stays: every
%% message is delivered or counted, and a plain one behind them arrives.
new_atoms_from_a_peer_cannot_fill_the_atom_table(_Config) ->
    %% A's table holds 20,000 atoms, about 9,000 of them taken at boot.
    A = weft_ct:start_node(weft, opts(), ["+t", "20000"]),
    weft_ct:track(A),
    B = start(weft, opts()),
    ok = call(B, weft, sync_join, [call(A, weft, node_spec, []), 10000]),
    converge([A, B]),
    call(A, weft_ct, collector, [inbox]),
    ok = call(A, weft_ct, capture_logs, []),
    %% A large message with one new atom takes room for that atom, not for
    %% a bound of its size (2 MB: far more than A's whole table).
    Large = call(B, weft_ct, send_large_with_new_atom, [node_of(A), inbox, 2 * 1024 * 1024]),
    weft_ct:wait_until(large, fun() -> call(A, weft_ct, collected, [inbox]) =/= [] end),
    [{LargeAtom, LargeBin}] = call(A, weft_ct, collected, [inbox]),
    ?assertEqual({atom_to_list(Large), 2 * 1024 * 1024}, {atom_to_list(LargeAtom), byte_size(LargeBin)}),
    Msgs = 30,
    ok = call(B, weft_ct, send_new_atoms, [node_of(A), inbox, Msgs, 1000]),
    Counted = fun() ->
                      length(call(A, weft_ct, collected, [inbox])) - 1
                          + maps:get(atom_limit, maps:get(dropped, info(A)))
              end,
    weft_ct:wait_until(all_counted, fun() -> Counted() =:= Msgs end),
    ?assert(maps:get(atom_limit, maps:get(dropped, info(A))) > 0),
    ?assert(call(A, erlang, system_info, [atom_count]) < call(A, erlang, system_info, [atom_limit])),
    ?assertEqual(0, maps:get(malformed, maps:get(dropped, info(A)))),
    ok = call(B, weft, forward, [node_of(A), inbox, plain, #{}]),
    weft_ct:wait_until(plain, fun() -> lists:member(plain, call(A, weft_ct, collected, [inbox])) end),
    ?assertEqual(Msgs + 1, Counted()),
    Warned = [L || L <- call(A, weft_ct, logs, []), string:find(L, "dropped.atom_limit") =/= nomatch],
    ?assertMatch([_ | _], Warned),
    ok.

%% The same for the export table (it ends the VM when full, at 524,288
%% entries): external funs `fun M:F/A' made only of atoms the receiver
%% has, each a new export entry there. A node creates at most 100,000 of
%% them from received messages; past that, such a message is dropped and
%% counted (`atom_limit'), and the connection stays.
new_funs_from_a_peer_cannot_fill_the_export_table(_Config) ->
    [A, B] = cluster(2),
    call(A, weft_ct, collector, [inbox]),
    Msgs = 12,
    ok = call(B, weft_ct, send_new_exports, [node_of(A), inbox, Msgs, 10000]),
    Refused = fun() -> maps:get(atom_limit, maps:get(dropped, info(A))) end,
    Counted = fun() -> length(call(A, weft_ct, collected, [inbox])) + Refused() end,
    weft_ct:wait_until(all_counted, fun() -> Counted() =:= Msgs end),
    %% 10 messages of 10,000 fit in 100,000
    ?assertEqual(2, Refused()),
    ?assert(length(call(A, weft_ct, collected, [inbox])) >= 9),
    ?assertEqual(0, maps:get(malformed, maps:get(dropped, info(A)))),
    ok = call(B, weft, forward, [node_of(A), inbox, plain, #{}]),
    weft_ct:wait_until(plain, fun() -> lists:member(plain, call(A, weft_ct, collected, [inbox])) end),
    ok.

%% Peers that know the cookie announce large frames (64 MiB each, the
%% frame limit) and send none of their bytes. The receiver allocates a
%% large frame's buffer whole only while such claims stay under a bound
%% (256 MiB over all connections); past it, a buffer follows the bytes
%% that came. Before, each header took its 64 MiB at once, and an
%% allocation the VM could not meet ended it. The claims go when the
%% connections close, and the node works throughout.
large_frame_headers_alone_take_no_memory(_Config) ->
    [A, B] = cluster(2),
    call(A, weft_ct, collector, [inbox]),
    NodeA = atom_to_binary(node_of(A)),
    Port = call(A, weft_ct, port, []),
    %% (large frames' buffers: the VM's binaries and weft's pool)
    Binary = fun() -> call(A, erlang, memory, [binary])
                          + maps:get(in_use_bytes, maps:get(pool, maps:get(receiving, info(A)))) end,
    Before = Binary(),
    Fakes = 12,
    Socks = [fake_with_a_claim(Port, NodeA, I) || I <- lists:seq(1, Fakes)],
    Beat = spawn_link(fun() -> heartbeats([C || {C, _} <- Socks]) end),
    MiB = 1 bsl 20,
    Receiving = fun() -> maps:get(receiving, info(A)) end,
    weft_ct:wait_until(claims_read, fun() -> maps:get(frames, Receiving()) =:= Fakes end),
    %% 4 claims of 64 MiB fill the bound; every further one starts at 16 KiB
    #{claimed_bytes := Claimed, claim_limit := Limit} = Receiving(),
    Grown = Binary() - Before,
    ct:log("binaries grew by ~p MiB for ~p frames of 64 MiB announced; claimed ~p MiB of ~p",
           [Grown div MiB, Fakes, Claimed div MiB, Limit div MiB]),
    ?assertEqual(256 * MiB, Limit),
    ?assertEqual(256 * MiB, Claimed),
    ?assert(Grown =< 300 * MiB),
    ok = call(B, weft, forward, [node_of(A), inbox, alive, #{}]),
    ?assertEqual([alive], call(A, weft_ct, collected, [inbox, 1])),
    unlink(Beat),
    exit(Beat, kill),
    [gen_tcp:close(S) || {C, D} <- Socks, S <- [C, D]],
    weft_ct:wait_until(released, fun() -> maps:with([frames, claimed_bytes, claim_limit], Receiving())
                                              =:= #{frames => 0, claimed_bytes => 0,
                                                    claim_limit => Limit} end),
    weft_ct:wait_until(freed, fun() -> Binary() - Before < 64 * MiB end),
    ok.

%% Received large frames are read into buffers that weft keeps for reuse
%% (`large_frame_pool', bytes of idle buffers): a buffer goes back to the
%% pool only when the last binary of its message is freed, so a message
%% the application holds is never written over, and the next frames reuse
%% the buffers of messages that were freed. `weft:info()' counts them. With
%% `large_frame_pool => 0' large frames go into the VM's binaries and the
%% pool stays empty.
large_frames_reuse_buffers_never_one_in_use(_Config) ->
    [A, B] = cluster(2),
    C = start(weft, opts(#{large_frame_pool => 0})),
    ok = call(C, weft, sync_join, [call(A, weft, node_spec, []), 10000]),
    converge([A, B, C]),
    Size = 600000,
    Pool = fun(N) -> maps:get(pool, maps:get(receiving, info(N))) end,
    Rounds = 20,
    [begin
         call(N, weft_ct, buffer_keeper, [keeper, Size]),
         [begin
              ok = call(A, weft, forward, [node_of(N), keeper, {I, binary:copy(<<I>>, Size)},
                                           #{channel => vnode}]),
              weft_ct:wait_until({checked, I},
                                 fun() -> maps:get(checked, call(N, weft_ct, keeper_state, [keeper]))
                                              =:= I - 1 end)
          end || I <- lists:seq(1, Rounds)],
         weft_ct:wait_until(kept, fun() -> maps:get(kept_ok, call(N, weft_ct, keeper_state, [keeper])) end),
         ?assertMatch(#{checked := 19, bad := 0, kept_ok := true},
                      call(N, weft_ct, keeper_state, [keeper]))
     end || N <- [B, C]],
    %% B: one buffer held all along (the kept message), one going round
    #{limit := Limit, allocated := Allocated, reused := Reused, in_use_bytes := InUse,
      idle_bytes := Idle} = Pool(B),
    ct:log("B's pool: ~p", [Pool(B)]),
    ?assertEqual(64 * 1024 * 1024, Limit),
    ?assert(Allocated =< 3),
    ?assert(Reused >= Rounds - 3),
    ?assert(InUse >= Size andalso InUse =< 2 * Size),
    ?assert(Idle >= Size andalso Idle =< Limit),
    ok = call(B, weft_ct, keeper_drop, [keeper]),
    weft_ct:wait_until(returned, fun() -> maps:get(in_use_bytes, Pool(B)) =:= 0 end),
    ?assert(maps:get(idle_bytes, Pool(B)) > 0),
    %% a stopped weft keeps no idle buffers (here: its server killed, and
    %% started again by its supervisor)
    Old = call(B, erlang, whereis, [weft_server]),
    call(B, erlang, exit, [Old, kill]),
    weft_ct:wait_until(restarted,
                       fun() ->
                               case call(B, erlang, whereis, [weft_server]) of
                                   P when is_pid(P), P =/= Old -> is_map(call(B, weft, info, []));
                                   _ -> false
                               end
                       end),
    ?assertMatch(#{limit := Limit, idle_bytes := 0, in_use_bytes := 0}, Pool(B)),
    %% C keeps no buffers
    ?assertMatch(#{limit := 0, allocated := 0, reused := 0, in_use_bytes := 0, idle_bytes := 0},
                 Pool(C)),
    ok.

%% A peer that knows the cookie pushes a view of made-up members, more
%% than `max_members': they fill the node it pushed to (up to the bound),
%% but go no further (a node gossips only the members it has reached), and
%% a real node still joins, taking the place of one of them.
made_up_members_stay_where_pushed(_Config) ->
    Opts = opts(#{max_members => 40}),
    [A, B] = cluster(2, Opts),
    NodeA = atom_to_binary(node_of(A)),
    Spec = weft_ct:fake_spec(<<"fake@127.0.0.1">>, [{<<"default">>, 1}]),
    {ok, C} = weft_ct:fake_peer(call(A, weft_ct, port, []), maps:get(cookie, Opts), NodeA,
                                {<<"$control">>, 0}, Spec),
    Fakes = [weft_ct:fake_spec(<<"made", (integer_to_binary(I))/binary, "-up@127.0.0.1">>,
                               [{<<"default">>, 1}]) || I <- lists:seq(1, 100)],
    View = <<1, 1, 0, (length(Fakes)):32, (iolist_to_binary(Fakes))/binary, 0:32>>,
    ok = gen_tcp:send(C, weft_ct:raw_frame(2, View)),
    Peers = fun(N) -> maps:size(maps:get(peers, info(N))) end,
    weft_ct:wait_until(filled, fun() -> Peers(A) =:= 40 end),
    %% a real node joins A: it takes the place of a made-up member
    D = start(weft, Opts),
    ok = call(D, weft, sync_join, [call(A, weft, node_spec, []), 10000]),
    converge([A, B, D]),
    ?assertEqual(40, Peers(A)),
    %% and nothing made up reached B or D (the pushing peer itself, which
    %% A reached, may be passed on)
    MadeUp = fun(N) -> [P || P <- maps:keys(maps:get(peers, info(N))),
                             string:find(atom_to_list(P), "-up@") =/= nomatch] end,
    ?assertMatch([_ | _], MadeUp(A)),
    ?assertEqual([], MadeUp(B)),
    ?assertEqual([], MadeUp(D)),
    gen_tcp:close(C),
    ok.

%% A node with `max_members' members, all up, refuses a newcomer as
%% `full' (sync_join says so at once, rather than time out); once members
%% go down (here: peers of our own making that dialed in under made-up
%% names and left), a newcomer takes the place of one of them.
a_full_node_says_so_and_makes_room_when_members_go_down(_Config) ->
    Opts = opts(#{max_members => 5}),
    A = start(weft, Opts),
    NodeA = atom_to_binary(node_of(A)),
    Port = call(A, weft_ct, port, []),
    Fakes = [begin
                 Name = <<"dialed", (integer_to_binary(I))/binary, "@127.0.0.1">>,
                 Spec = weft_ct:fake_spec(Name, [{<<"default">>, 1}]),
                 {ok, C} = weft_ct:fake_peer(Port, maps:get(cookie, Opts), NodeA,
                                             {<<"$control">>, 0}, Spec),
                 C
             end || I <- lists:seq(1, 5)],
    Beat = spawn_link(fun() -> heartbeats(Fakes) end),
    weft_ct:wait_until(all_up, fun() -> length(call(A, weft, nodes, [])) =:= 5 end),
    D = start(weft, Opts),
    SpecA = call(A, weft, node_spec, []),
    ?assertEqual({error, {refused, full}}, call(D, weft, sync_join, [SpecA, 10000])),
    unlink(Beat),
    exit(Beat, kill),
    [gen_tcp:close(C) || C <- Fakes],
    %% (D keeps dialing: it may get in as soon as one is down)
    Dialed = fun() -> [N || N <- call(A, weft, nodes, []),
                            lists:prefix("dialed", atom_to_list(N))] end,
    weft_ct:wait_until(all_down, fun() -> Dialed() =:= [] end),
    ok = call(D, weft, sync_join, [SpecA, 10000]),
    ?assertEqual(5, maps:size(maps:get(peers, info(A)))),
    ok.

%% A peer that knows the cookie sends fences (each asks for an answer on
%% its control lane) and reads nothing: the answers queued for it stay
%% under 1 MiB (the rest are not sent), and the node goes on.
fences_from_a_peer_that_reads_nothing_get_a_bounded_queue_of_answers(_Config) ->
    Opts = opts(),
    A = start(fenced, Opts),
    NodeA = atom_to_binary(node_of(A)),
    call(A, weft_ct, collector, [inbox]),
    Port = call(A, weft_ct, port, []),
    Name = <<"fencer@127.0.0.1">>,
    Spec = weft_ct:fake_spec(Name, [{<<"default">>, 1}]),
    Cookie = maps:get(cookie, Opts),
    {ok, C} = weft_ct:fake_peer(Port, Cookie, NodeA, {<<"$control">>, 0}, Spec, 31),
    D = until_welcome(fun() -> weft_ct:fake_peer(Port, Cookie, NodeA, {<<"default">>, 0}, Spec, 31) end,
                      200),
    Fence = fun(T) -> weft_ct:raw_frame(2, <<3, 0:16, T:64>>) end,
    Beats = spawn_link(fun() -> heartbeats([C]) end),
    %% (the answers, some 30 bytes each, are more than the socket buffers
    %% hold)
    Count = 2000000,
    [ok = gen_tcp:send(D, [Fence(T) || T <- lists:seq(I, I + 999)]) || I <- lists:seq(1, Count, 1000)],
    %% a message after the fences: once it is delivered, they were all read
    ok = gen_tcp:send(D, weft_ct:raw_frame(1, term_to_binary({inbox, after_the_fences}))),
    ?assertEqual([after_the_fences], call(A, weft_ct, collected, [inbox, 1])),
    #{peers := #{'fencer@127.0.0.1' := #{queued_bytes := Queued,
                                          channels := #{'$control' := [Control]}}}} = info(A),
    #{sent_frames := Answered, queued_frames := Waiting} = Control,
    ct:log("answers queued for the fencer: ~p bytes; sent ~p, waiting ~p", [Queued, Answered, Waiting]),
    ?assert(Queued =< (1 bsl 20) + 1024),
    %% (what the socket buffers took, and at most 1 MiB more)
    ?assert(Answered + Waiting < Count div 4),
    unlink(Beats),
    exit(Beats, kill),
    gen_tcp:close(D),
    gen_tcp:close(C),
    ok.

%% A fake peer `fakeI@127.0.0.1' with its control lane, and a data lane on
%% which it announced a 64 MiB frame and sent one byte of it.
fake_with_a_claim(Port, NodeA, I) ->
    Name = <<"fake", (integer_to_binary(I))/binary, "@127.0.0.1">>,
    Spec = weft_ct:fake_spec(Name, [{<<"default">>, 1}]),
    Cookie = maps:get(cookie, opts()),
    {ok, C} = weft_ct:fake_peer(Port, Cookie, NodeA, {<<"$control">>, 0}, Spec),
    %% (the data lane is welcome once the control lane is up there)
    Data = fun() -> weft_ct:fake_peer(Port, Cookie, NodeA, {<<"default">>, 0}, Spec) end,
    D = until_welcome(Data, 200),
    ok = gen_tcp:send(D, <<(64 bsl 20 + 1):32, 1, 131>>),
    {C, D}.

until_welcome(Dial, Tries) ->
    case Dial() of
        {ok, S} -> S;
        {refused, Why} when Tries > 0 ->
            ct:log("refused: ~p", [Why]),
            receive after 50 -> until_welcome(Dial, Tries - 1) end
    end.

heartbeats(Controls) ->
    [gen_tcp:send(C, weft_ct:raw_frame(2, <<0>>)) || C <- Controls],
    receive after 200 -> heartbeats(Controls) end.

%% A node description as the wire carries it (protocol versions 2 and 3).
spec_bin(Name) ->
    <<(weft_ct:str8(Name))/binary, 1:64, (1 bsl 20):32, 1, 4, 127, 0, 0, 1, 9999:16,
      1:16, (weft_ct:str8(<<"default">>))/binary, 1:16>>.

%% Peers tell each other their frame limits at the handshake: the sender
%% refuses what the receiver would refuse (`{too_large, Size, PeerMax}'),
%% instead of sending it and breaking a lane.
oversized_frame_refused(_Config) ->
    A = start(big, opts()),
    B = start(small, opts(#{max_frame_size => 1024 * 1024})),
    ok = call(A, weft, sync_join, [call(B, weft, node_spec, []), 10000]),
    converge([A, B]),
    NodeB = node_of(B),
    weft_ct:wait_until(lanes, fun() -> all_lanes_connected(A, NodeB) end),
    call(B, weft_ct, collector, [big]),
    call(B, weft_ct, collector, [small]),
    Big = binary:copy(<<7>>, 2 * 1024 * 1024),
    {error, {too_large, Size, 1048576}} = call(A, weft, forward, [NodeB, big, Big, #{channel => vnode}]),
    ?assert(Size > 2 * 1024 * 1024),
    [ok = call(A, weft, forward, [NodeB, small, I, #{channel => vnode}]) || I <- lists:seq(1, 100)],
    ?assertEqual(lists:seq(1, 100), call(B, weft_ct, collected, [small, 100])),
    ?assertEqual(lists:sort([node_of(A), NodeB]), call(A, weft, members, [])),
    ?assert(all_lanes_connected(A, NodeB)),
    #{refused := #{too_large := 1}, dropped := #{connection_lost := 0}} = info(A),
    %% the sender refuses what it could never deliver under its own limit
    ?assertMatch({error, {too_large, _, 1048576}},
                 call(B, weft, forward, [node_of(A), big, Big, #{}])),
    ok.

%% Bytes that used to take the whole VM down before authentication (a
%% hello claiming a 2^40-byte name, and one claiming 2^64 - 1 bytes), and
%% other garbage: each costs only its connection, and the node works on.
hostile_bytes_do_not_kill_the_node(_Config) ->
    [A, B] = cluster(2),
    Port = call(A, weft_ct, port, []),
    Hostile = [<<0,0,0,16#11,0, "WEFT", 0,1, 0, 16#fd, 0,0,0,0,0,1,0,0>>,
               <<0,0,0,16#11,0, "WEFT", 0,1, 0, 16#fd, 16#ff,16#ff,16#ff,16#ff,16#ff,16#ff,16#ff,16#ff>>,
               <<0,0,0,16#11,0, "WEFT", 0,2, 0, 16#fd, 0,0,0,0,0,1,0,0>>,
               <<0,0,0,16#11,0, "WEFT", 0,3, 0, 16#fd, 0,0,0,0,0,1,0,0>>,
               <<16#ff,16#ff,16#ff,16#ff,0>>,
               <<"GET / HTTP/1.1\r\n\r\n">>],
    21 = byte_size(hd(Hostile)),
    [begin
         {ok, S} = gen_tcp:connect({127,0,0,1}, Port, [binary, {active, false}]),
         ok = gen_tcp:send(S, Bytes),
         %% refused: at most the list of versions comes back, then the end
         ?assertEqual(ok, drain_until_closed(S, 64))
     end || Bytes <- Hostile],
    ?assertEqual(lists:sort([node_of(A), node_of(B)]), call(A, weft, members, [])),
    #{refused_connections := Refusals} = info(A),
    ?assert(lists:sum(maps:values(Refusals)) >= length(Hostile)),
    call(B, weft_ct, collector, [inbox]),
    ok = call(A, weft, forward, [node_of(B), inbox, alive, #{}]),
    ?assertEqual([alive], call(B, weft_ct, collected, [inbox, 1])),
    ok.

drain_until_closed(S, Max) ->
    case gen_tcp:recv(S, 0, 10000) of
        {error, closed} -> ok;
        {error, econnreset} -> ok;
        {ok, Bin} when byte_size(Bin) =< Max -> drain_until_closed(S, Max - byte_size(Bin));
        Other -> {unexpected, Other}
    end.

%% Messages forwarded right after join/1 (no sync_join) wait for the node:
%% none is lost, on one lane or sixteen, and also when the sender is
%% already in a cluster.
forward_right_after_join_waits(_Config) ->
    [A, C] = cluster(2),
    B = start(weft, opts()),
    NodeB = node_of(B),
    call(B, weft_ct, collector, [inbox]),
    SpecB = call(B, weft, node_spec, []),
    Burst = fun() ->
                    ok = weft:join(SpecB),
                    [ok = weft:forward(NodeB, inbox, {I, Ch}, #{channel => Ch, partition_key => I})
                     || I <- lists:seq(1, 200), Ch <- [default, vnode]],
                    ok
            end,
    ok = call(A, erlang, apply, [Burst, []]),
    ?assertEqual(400, length(call(B, weft_ct, collected, [inbox, 400]))),
    #{dropped := #{not_member := 0, node_down := 0}} = info(A),
    %% and from a fresh node (not in a cluster yet)
    D = start(weft, opts()),
    ok = call(D, erlang, apply, [Burst, []]),
    ?assertEqual(800, length(call(B, weft_ct, collected, [inbox, 800]))),
    #{dropped := #{not_member := 0, node_down := 0}} = info(D),
    converge([A, B, C, D]),
    ok.

%% A channel with `overload => wait': while B reads nothing (SIGSTOP) and
%% A's queue for B is full, a sender on it waits in `forward' instead of
%% getting `{error, overloaded}', and goes on when B reads again: every
%% message delivered, in order. A send that waits past its channel's
%% `wait_timeout' gets `{error, overloaded}'. `info()' counts each send
%% that waited once (`queued.waited') and only the send that gave up as
%% refused; a `refuse' channel still refuses at once.
overload_wait_holds_the_sender_until_there_is_room(_Config) ->
    Limit = 4 * 1024 * 1024,
    [A, B] = cluster(2, opts(#{heartbeat_timeout => 30000, send_queue_limit => Limit,
                               channels => [default,
                                            #{name => bulk, overload => wait, wait_timeout => infinity},
                                            #{name => quick, overload => wait, wait_timeout => 200}]})),
    NodeB = node_of(B),
    call(B, weft_ct, collector, [held, fun({_, Seq, _}) -> Seq end]),
    call(B, weft_ct, collector, [many, fun({Id, _}) -> Id end]),
    Count = 40,
    OsPid = call(B, os, getpid, []),
    [] = os:cmd("kill -STOP " ++ OsPid),
    try
        %% 40 MB in 1 MB messages: more than the socket buffers and the
        %% 4 MiB queue hold
        Sender = call(A, erlang, spawn, [weft_ct, send_big_seqs, [NodeB, held, bulk, 1, Count, 1, 1024 * 1024]]),
        Waited = fun() -> #{queued := #{waited := W}} = info(A), W end,
        weft_ct:wait_until(waiting, fun() -> Waited() >= 1 end),
        %% and 200 more senders, each of one message as large (none fits
        %% where the first one's does not)
        ok = call(A, weft_ct, start_senders, [many, NodeB, many, bulk, 200, 1024 * 1024]),
        weft_ct:wait_until(many_waiting, fun() -> Waited() >= 201 end),
        ?assert(call(A, erlang, is_process_alive, [Sender])),
        #{queued := #{queued_bytes := Queued}, refused := #{overloaded := Refused0}} = info(A),
        ?assert(Queued =< Limit + 1024 * 1024),
        ?assertEqual(0, Refused0),
        %% a send that waits past its timeout is refused, counted once
        %% (larger than the bound: it fits only an empty queue, and the
        %% sender's messages stay queued while B is stopped)
        Big = binary:copy(<<1>>, Limit + 1),
        %% (the sender may wait again meanwhile: the kernel's buffers for
        %% B can still grow a little)
        W1 = Waited(),
        T0 = erlang:monotonic_time(millisecond),
        ?assertEqual({error, overloaded}, call(A, weft, forward, [NodeB, nobody, Big, #{channel => quick}])),
        ?assert(erlang:monotonic_time(millisecond) - T0 >= 200),
        %% a `refuse' channel: at once
        ?assertEqual({error, overloaded}, call(A, weft, forward, [NodeB, nobody, Big, #{}])),
        #{refused := #{overloaded := Refused}} = info(A),
        ?assertEqual(2, Refused),
        %% the transport keeps nothing of a sender that gave up (alive) or
        %% died while it waited: its parked message is taken out
        Parked = fun() -> #{queued := #{parked := P}} = info(A), P end,
        Parked0 = Parked(),
        ?assert(Parked0 >= 200),
        GivesUp = call(A, erlang, spawn, [fun() ->
                                                  {error, overloaded} = weft:forward(NodeB, nobody, Big, #{channel => quick}),
                                                  receive stop -> ok end
                                          end]),
        Doomed = call(A, erlang, spawn, [weft, forward, [NodeB, nobody, Big, #{channel => bulk}]]),
        weft_ct:wait_until(doomed_waits, fun() -> Parked() >= Parked0 + 1 end),
        true = call(A, erlang, exit, [Doomed, kill]),
        %% (the quick one waits 200 ms, gives up, then counts)
        weft_ct:wait_until(gave_up, fun() ->
                                            #{refused := #{overloaded := R}} = info(A),
                                            R =:= 3
                                    end),
        ?assert(call(A, erlang, is_process_alive, [GivesUp])),
        weft_ct:wait_until(both_gone, fun() -> Parked() =:= Parked0 end),
        ?assert(Waited() >= W1 + 1),
        %% once B reads again, the transport tells `weft_room' that there
        %% is room (no timer needed)
        ok = call(A, weft_ct, count_room_rings, [])
    after
        os:cmd("kill -CONT " ++ OsPid)
    end,
    ?assertEqual(lists:seq(1, Count), call(B, weft_ct, collected, [held, Count])),
    %% every one of the 200 went on once there was room, and no wake-up was
    %% left in a sender's mailbox
    ?assertEqual(lists:duplicate(200, {ok, 0}), call(A, weft_ct, senders_result, [many])),
    ?assertEqual(lists:seq(1, 200), lists:sort(call(B, weft_ct, collected, [many, 200]))),
    ?assert(call(A, weft_ct, room_rings, []) >= 1),
    %% the edges of `wait_timeout' are accepted
    [begin
         ok = call(A, weft, stop, []),
         ok = call(A, weft, start, [#{channels => [#{name => default, overload => wait, wait_timeout => T}]}])
     end || T <- [0, infinity, (1 bsl 32) - 1]],
    ok.

%% `overload => wait': messages that wait for room go in the order their
%% senders began to wait (by 20 ms, in a random order within them), and no
%% later send on a waiting channel passes them. With B frozen and A's
%% queue for it full, a sender that waits first is delivered before each
%% of 50 that began to wait 40 ms later; every message arrives.
waiting_senders_go_in_the_order_they_began_to_wait(_Config) ->
    [A, B] = cluster(2, opts(#{heartbeat_timeout => 30000, send_queue_limit => 1024 * 1024,
                               channels => [default,
                                            #{name => bulk, overload => wait, wait_timeout => infinity}]})),
    NodeB = node_of(B),
    call(B, weft_ct, collector, [inbox, fun({Tag, _}) -> Tag end]),
    Parked = fun() -> #{queued := #{parked := P}} = info(A), P end,
    Send = fun(Tag) ->
                   call(A, erlang, spawn, [weft, forward, [NodeB, inbox, {Tag, binary:copy(<<7>>, 65536)},
                                                           #{channel => bulk}]])
           end,
    %% (a sender whose message is parked waits in weft:parked/4)
    Waits = fun(Pid) -> {current_function, {weft, parked, 4}} =:= call(A, erlang, process_info, [Pid, current_function]) end,
    OsPid = call(B, os, getpid, []),
    [] = os:cmd("kill -STOP " ++ OsPid),
    try
        %% 100 senders of 256 KiB: more than the socket buffers and the
        %% 1 MiB queue hold; once 10 of them wait, their bytes (held for
        %% them) are more than the bound, and every new send waits too
        ok = call(A, weft_ct, start_senders, [fill, NodeB, inbox, bulk, 100, 256 * 1024]),
        weft_ct:wait_until(full, fun() -> Parked() >= 10 end),
        Early = Send(early),
        weft_ct:wait_until(early_waits, fun() -> Waits(Early) end),
        T0 = erlang:monotonic_time(millisecond),
        weft_ct:wait_until(a_later_bucket, fun() -> erlang:monotonic_time(millisecond) - T0 >= 40 end),
        Late = [Send(late) || _ <- lists:seq(1, 50)],
        weft_ct:wait_until(late_wait, fun() -> lists:all(Waits, Late) end)
    after
        os:cmd("kill -CONT " ++ OsPid)
    end,
    Got = call(B, weft_ct, collected, [inbox, 151]),
    ?assertEqual(151, length(Got)),
    ?assertEqual([early | lists:duplicate(50, late)], [T || T <- Got, is_atom(T)]),
    ?assertEqual(lists:duplicate(100, {ok, 0}), call(A, weft_ct, senders_result, [fill])),
    ?assertEqual(0, Parked()),
    ok.

%% The receiver is frozen (SIGSTOP) during a stream: the sender declares it
%% down and drops what it had queued for it, counting it; once the receiver
%% thaws it reads what reached it. Every message forward accepted is
%% delivered or counted: sent = delivered + dropped.
frozen_receiver_every_message_counted(_Config) ->
    A = start(weft, opts(#{heartbeat_timeout => 1000, reconnect_min_backoff => 20000,
                           reconnect_max_backoff => 20000})),
    %% the receiver does not give up on its own while it is frozen
    B = start(weft, opts(#{heartbeat_timeout => 60000})),
    ok = call(A, weft, sync_join, [call(B, weft, node_spec, []), 10000]),
    NodeB = node_of(B),
    weft_ct:wait_until(lanes, fun() -> all_lanes_connected(A, NodeB) end),
    call(B, weft_ct, count_collector, [inbox]),
    OsPid = call(B, os, getpid, []),
    ok = call(A, weft_ct, stream_start, [NodeB, inbox, 1000, stream]),
    weft_ct:wait_until(flowing, fun() -> call(B, weft_ct, count, [inbox]) > 1000 end),
    os:cmd("kill -STOP " ++ OsPid),
    try
        weft_ct:wait_until(down, fun() -> call(A, weft, nodes, []) =:= [] end),
        %% and a while longer, when sends count as not_member
        weft_ct:wait_until(not_member, fun() ->
                                                #{dropped := #{not_member := N}} = info(A),
                                                N > 100
                                        end)
    after
        os:cmd("kill -CONT " ++ OsPid)
    end,
    Accepted = call(A, weft_ct, stream_stop, [stream]),
    Dropped = fun() -> #{dropped := D} = info(A), lists:sum(maps:values(D)) end,
    weft_ct:wait_until(accounted, fun() ->
                                          call(B, weft_ct, count, [inbox]) + Dropped() >= Accepted
                                  end, 60000),
    Delivered = call(B, weft_ct, count, [inbox]),
    #{dropped := #{node_down := NodeDown}} = Info = info(A),
    ct:log("accepted ~p, delivered ~p, info ~p", [Accepted, Delivered, Info]),
    ?assertEqual([], call(B, weft_ct, count_other, [inbox])),
    ?assertEqual(Accepted, Delivered + Dropped()),
    ?assert(NodeDown > 0),
    ok.

%% The receiver stops (`weft:stop/0') during streams of small and large
%% messages on one lane and on 16: what the sender wrote before it heard of
%% the stop is still read and delivered, and what it had not written is
%% counted. sent = delivered + dropped, exactly.
stopped_receiver_every_message_counted(_Config) ->
    streams_until(fun(_A, B) -> call(B, weft, stop, []) end).

%% The sender stops (`weft:stop/0') during streams: it writes out what it
%% had queued before it closes, so everything it accepted is delivered, but
%% for a `forward' in progress as the stop began (at most one per stream),
%% which may find its lane stopped and be counted on the stopped node.
stopped_sender_every_message_counted(_Config) ->
    streams_until(fun(A, _B) -> call(A, weft, stop, []) end).

%% The receiver, then the sender, leaves (`weft:leave/0') during streams:
%% sent = delivered + dropped, exactly.
left_receiver_or_sender_every_message_counted(_Config) ->
    streams_until(fun(_A, B) -> call(B, weft, leave, []) end),
    weft_ct:stop_tracked(),
    streams_until(fun(A, _B) -> call(A, weft, leave, []) end).

%% A stop that cannot write out what is queued within its second (the peer
%% is frozen here) drops it, and says how many messages it dropped: its
%% counters go with it. So does a stop with messages waiting for a node
%% that has not come up.
a_stop_that_cannot_write_out_says_so(_Config) ->
    [A, B] = cluster(2, opts(#{heartbeat_timeout => 60000})),
    NodeB = node_of(B),
    weft_ct:wait_until(lanes, fun() -> all_lanes_connected(A, NodeB) end),
    ok = call(A, weft_ct, capture_logs, []),
    OsPid = call(B, os, getpid, []),
    os:cmd("kill -STOP " ++ OsPid),
    try
        Big = binary:copy(<<7>>, 1 bsl 20),
        [ok = call(A, weft, forward, [NodeB, inbox, Big, #{}]) || _ <- lists:seq(1, 40)],
        {Took, ok} = timer:tc(fun() -> call(A, weft, stop, []) end),
        ct:log("stop took ~p ms", [Took div 1000]),
        Said = fun(What) -> [L || L <- call(A, weft_ct, logs, []),
                                  string:find(L, What) =/= nomatch] end,
        weft_ct:wait_until(dropped_logged, fun() -> Said("not written within") =/= [] end),
        ct:log("~ts", [hd(Said("not written within"))]),
        %% messages waiting for a node whose handshake never ends (a
        %% listener that accepts nothing)
        ok = call(A, weft, start, []),
        {ok, Silent} = gen_tcp:listen(0, [{ip, {127, 0, 0, 1}}]),
        {ok, Port} = inet:port(Silent),
        Ghost = #{name => 'ghost@nowhere', listen_addrs => [#{ip => {127, 0, 0, 1}, port => Port}]},
        ok = call(A, weft, join, [Ghost]),
        [ok = call(A, weft, forward, ['ghost@nowhere', inbox, I, #{}]) || I <- lists:seq(1, 5)],
        #{peers := #{'ghost@nowhere' := #{waiting := 5}}} = info(A),
        ok = call(A, weft, stop, []),
        gen_tcp:close(Silent),
        weft_ct:wait_until(waiting_logged,
                           fun() -> Said("5 messages accepted for peers were dropped: 0") =/= [] end),
        ct:log("~ts", [hd(Said("5 messages accepted"))])
    after
        os:cmd("kill -CONT " ++ OsPid)
    end,
    ok.

%% Streams from A to B (small messages on one lane and on 16, large ones),
%% ended by `End(A, B)' once they flow. Every message A's `forward' accepted
%% is delivered or counted in A's `weft:info()': exactly while A runs; once
%% A's weft stopped, its counters are gone, and only the `forward's in
%% progress as it stopped (at most one per stream) may be missing.
streams_until(End) ->
    [A, B] = cluster(2),
    NodeB = node_of(B),
    weft_ct:wait_until(lanes, fun() -> all_lanes_connected(A, NodeB) end),
    call(B, weft_ct, count_collector, [inbox]),
    Streams = [{s1, 100, default}, {s2, 100, vnode}, {s3, 300000, vnode}],
    [ok = call(A, weft_ct, stream_start, [NodeB, inbox, Size, Tag, Ch])
     || {Tag, Size, Ch} <- Streams],
    weft_ct:wait_until(flowing, fun() -> call(B, weft_ct, count, [inbox]) > 20000 end),
    ok = End(A, B),
    weft_ct:wait_until(apart, fun() -> call(A, weft, nodes, []) =/= [NodeB] end),
    Accepted = lists:sum([call(A, weft_ct, stream_stop, [Tag]) || {Tag, _, _} <- Streams]),
    Dropped = fun() ->
                      case info(A) of
                          #{dropped := D} -> lists:sum(maps:values(D));
                          {error, not_started} -> 0
                      end
              end,
    Slack = case info(A) of
                {error, not_started} -> length(Streams);
                _ -> 0
            end,
    Delivered = fun() -> call(B, weft_ct, count, [inbox]) end,
    Accounted = fun() -> Delivered() + Dropped() + Slack >= Accepted end,
    catch weft_ct:wait_until(accounted, Accounted, 20000),
    ct:log("accepted ~p, delivered ~p, info ~p", [Accepted, Delivered(), info(A)]),
    %% (nothing but the streams reached the counter)
    ?assertEqual([], call(B, weft_ct, count_other, [inbox])),
    ?assert(Delivered() + Dropped() =< Accepted),
    ?assert(Accepted - Delivered() - Dropped() =< Slack),
    ok.

%% Identity does not depend on the wall clock: a node restarted under the
%% same name with its clock 10 minutes behind (libfaketime) rejoins, also
%% after it was removed from the cluster; pids of the old incarnation are
%% still never delivered to the new one.
restarted_with_clock_behind_rejoins(_Config) ->
    Preload = case filelib:wildcard("/usr/lib/*/faketime/libfaketime.so.1") of
                  [P | _] -> P;
                  [] -> ct:fail("libfaketime is missing (make deps installs it)")
              end,
    Skewed = [{"LD_PRELOAD", Preload}, {"FAKETIME", "-600"}],
    [A, B, C] = cluster(3),
    NodeC = node_of(C),
    Two = lists:sort([node_of(A), node_of(B)]),
    call(C, weft_ct, collector, [inbox]),
    OldPid = call(C, weft_ct, whereis_name, [inbox]),
    Restart = fun(Old) ->
                      weft_ct:kill_node(Old),
                      weft_ct:wait_until(down, fun() -> call(A, weft, members, []) =:= Two end),
                      New = weft_ct:start_node_named(maps:get(name, C), opts(), Skewed),
                      weft_ct:track(New),
                      %% its clock really is behind
                      Behind = os:system_time(second) - call(New, os, system_time, [second]),
                      ?assert(Behind >= 590),
                      New
              end,
    C2 = Restart(C),
    ?assertEqual(ok, call(C2, weft, sync_join, [call(A, weft, node_spec, []), 10000])),
    converge([A, B, C2]),
    ok = call(A, weft, forward, [OldPid, to_the_dead, #{}]),
    weft_ct:wait_until(no_destination,
                       fun() -> maps:get(no_destination, maps:get(dropped, info(C2))) >= 1 end),
    %% removed, then restarted (again behind): joins again
    ok = call(A, weft, leave, [NodeC]),
    weft_ct:wait_until(removed, fun() -> call(A, weft, members, []) =:= Two end),
    C3 = Restart(C2),
    ?assertEqual(ok, call(C3, weft, sync_join, [call(B, weft, node_spec, []), 10000])),
    converge([A, B, C3]),
    call(C3, weft_ct, collector, [inbox]),
    ok = call(A, weft, forward, [NodeC, inbox, hello, #{}]),
    ?assertEqual([hello], call(C3, weft_ct, collected, [inbox, 1])),
    ok.

bad_config(_Config) ->
    N = start(conf, no_weft),
    ?assertEqual({error, {bad_config, parallelism, 0}}, call(N, weft, start, [[{parallelism, 0}]])),
    ?assertEqual({error, {bad_config, colour, blue}}, call(N, weft, start, [#{colour => blue}])),
    ?assertEqual({error, {bad_config, listen, {{1,2,3}, 80}}},
                 call(N, weft, start, [#{listen => {{1,2,3}, 80}}])),
    ?assertEqual({error, {bad_config, overlay, hyparview}}, call(N, weft, start, [#{overlay => hyparview}])),
    [?assertEqual({error, {bad_config, overlay, O}}, call(N, weft, start, [#{overlay => O}]))
     || O <- [{static, nodes}, {static, [x]}, {static, [#{name => 'a@h'}]}, {static, [y | z]},
              {static, [#{name => 'a@h', listen_addrs => [#{ip => {127, 0, 0, 1}, port => 1}]},
                        #{name => 'a@h', listen_addrs => [#{ip => {127, 0, 0, 1}, port => 2}]}]},
              %% names past Latin-1 (names travel as Latin-1 atoms)
              {static, [#{name => binary_to_atom(<<"日本@h"/utf8>>, utf8),
                          listen_addrs => [#{ip => {127, 0, 0, 1}, port => 1}]}]},
              {static, [#{name => 'a@h', listen_addrs => [#{ip => {127, 0, 0, 1}, port => 1}],
                          channels => [#{name => binary_to_atom(<<"日本"/utf8>>, utf8),
                                         parallelism => 1}]}]}]],
    ?assertEqual({error, {bad_config, channels, [default, default]}},
                 call(N, weft, start, [#{channels => [default, default]}])),
    %% `wait_timeout' only with `overload => wait', in ms or `infinity'
    [?assertEqual({error, {bad_config, channels, Chs}}, call(N, weft, start, [#{channels => Chs}]))
     || Chs <- [[#{name => c, overload => block}],
                [#{name => c, wait_timeout => 100}],
                [#{name => c, overload => refuse, wait_timeout => 100}],
                [#{name => c, overload => wait, wait_timeout => -1}],
                [#{name => c, overload => wait, wait_timeout => 1 bsl 32}],
                [#{name => c, overload => wait, wait_timeout => forever}]]],
    ?assertEqual({error, {bad_config, heartbeat_timeout, 10}},
                 call(N, weft, start, [#{heartbeat_interval => 100, heartbeat_timeout => 10}])),
    ?assertEqual({error, {bad_config, io, ports}}, call(N, weft, start, [#{io => ports}])),
    ?assertEqual({error, {bad_config, pollers, 0}}, call(N, weft, start, [#{pollers => 0}])),
    ?assertEqual({error, {bad_config, poll_linger_us, -1}}, call(N, weft, start, [#{poll_linger_us => -1}])),
    ?assertEqual({error, {bad_config, poll_linger_busy_us, x}}, call(N, weft, start, [#{poll_linger_busy_us => x}])),
    ?assertEqual({error, {bad_config, large_frame_pool, -1}}, call(N, weft, start, [#{large_frame_pool => -1}])),
    ?assertEqual({error, {bad_config, large_frame_pool, 1 bsl 41}},
                 call(N, weft, start, [#{large_frame_pool => 1 bsl 41}])),
    ?assertEqual({error, {bad_config, large_frame_pool, big}}, call(N, weft, start, [#{large_frame_pool => big}])),
    %% application environment checked the same way at start
    ok = call(N, application, set_env, [weft, affinity, maybe]),
    ?assertEqual({error, {bad_config, affinity, maybe}}, call(N, weft, start, [])),
    ?assertEqual({error, not_started}, call(N, weft, members, [])),
    ?assertEqual({error, not_started}, call(N, weft, forward, [somewhere@host, x, y, #{}])),
    %% a node without a name cannot run weft (this test node has none)
    nonode@nohost = node(),
    ?assertEqual({error, not_alive}, weft:start(#{})),
    %% and a good one still starts afterwards
    ok = call(N, application, set_env, [weft, affinity, true]),
    ok = call(N, weft, start, [opts()]),
    ?assertEqual([node_of(N)], call(N, weft, members, [])),
    ok.

unknown_channel_and_non_member(_Config) ->
    [A, B] = cluster(2),
    ?assertEqual({error, {unknown_channel, nope}},
                 call(A, weft, forward, [node_of(B), inbox, x, #{channel => nope}])),
    ?assertEqual({error, {badarg, 42}}, call(A, weft, forward, [42, x])),
    ?assertEqual({error, {badarg, not_opts}}, call(A, weft, forward, [node_of(B), inbox, x, not_opts])),
    ok = call(A, weft, forward, ['ghost@nowhere', inbox, x, #{}]),
    ok = call(A, weft, forward, ['ghost@nowhere', inbox, x, #{}]),
    %% names with characters past Latin-1 name no member and no channel:
    %% the same answers, never a raise
    Wide = binary_to_atom(<<"日本"/utf8>>, utf8),
    WideNode = binary_to_atom(<<"日本@nowhere"/utf8>>, utf8),
    ?assertEqual({error, {unknown_channel, Wide}},
                 call(A, weft, forward, [node_of(B), inbox, x, #{channel => Wide}])),
    ?assertEqual({error, {unknown_channel, Wide}},
                 call(A, weft, forward, [WideNode, inbox, x, #{channel => Wide}])),
    ok = call(A, weft, forward, [WideNode, inbox, x, #{}]),
    ok = call(A, weft, leave, [WideNode]),
    #{dropped := #{not_member := 3}, refused := #{unknown_channel := 3}} = info(A),
    %% an unregistered name on the receiver: dropped there and counted
    ok = call(A, weft, forward, [node_of(B), nobody_here, x, #{}]),
    weft_ct:wait_until(no_destination,
                       fun() -> maps:get(no_destination, maps:get(dropped, info(B))) =:= 1 end),
    %% a local destination never raises either, and a missing one is
    %% counted as a remote one would be
    ok = call(A, weft, forward, [node_of(A), nobody_here, x, #{}]),
    #{dropped := #{no_destination := 1}} = info(A),
    ok.

stop_closes_everything(_Config) ->
    [A, B] = cluster(2),
    call(B, weft_ct, watcher, []),
    Port = call(A, weft_ct, port, []),
    {ok, S} = gen_tcp:connect({127,0,0,1}, Port, []),
    gen_tcp:close(S),
    Threads = fun() -> length(string:split(call(A, os, cmd, ["ls /proc/" ++ call(A, os, getpid, []) ++ "/task"]), "\n", all)) end,
    Before = Threads(),
    ok = call(A, weft, stop, []),
    ?assertEqual({error, econnrefused}, gen_tcp:connect({127,0,0,1}, Port, [])),
    weft_ct:wait_until(nodedown, fun() -> lists:member({nodedown, node_of(A)}, call(B, weft_ct, events, [])) end),
    ?assertEqual([node_of(B)], call(B, weft, members, [])),
    %% the runtime's threads are gone too
    ?assert(Threads() < Before),
    ?assertEqual({error, not_started}, call(A, weft, members, [])),
    %% and it starts again
    ok = call(A, weft, start, []),
    ok = call(A, weft, sync_join, [call(B, weft, node_spec, []), 10000]),
    converge([A, B]),
    ok.

simultaneous_joins_settle(_Config) ->
    A = start(sim, opts()),
    B = start(sim, opts()),
    SA = call(A, weft, node_spec, []),
    SB = call(B, weft, node_spec, []),
    %% both dial each other at once, every lane
    Parent = self(),
    [spawn(fun() -> Parent ! {done, call(X, weft, join, [S])} end) || {X, S} <- [{A, SB}, {B, SA}]],
    [receive {done, ok} -> ok end || _ <- [1, 2]],
    converge([A, B]),
    weft_ct:wait_until(lanes, fun() -> all_lanes_connected(A, node_of(B)) andalso
                                           all_lanes_connected(B, node_of(A)) end),
    NA = node_of(A),
    NB = node_of(B),
    #{peers := #{NB := #{channels := ChA}}} = info(A),
    #{peers := #{NA := #{channels := ChB}}} = info(B),
    %% one socket per lane, the same one seen from both ends
    maps:foreach(fun(Ch, LanesA) ->
                         LanesB = maps:get(Ch, ChB),
                         ?assertEqual(length(LanesA), length(LanesB)),
                         [begin
                              [LB] = [L || #{lane := I2} = L <- LanesB, I2 =:= I],
                              ?assertEqual(maps:get(local, LA), maps:get(remote, LB)),
                              ?assertEqual(maps:get(remote, LA), maps:get(local, LB))
                          end || #{lane := I} = LA <- LanesA]
                 end, ChA),
    %% (an accepted connection's local address is the listen address: the
    %% pair of ends tells connections apart, whichever side dialed)
    Ends = [{L, R} || #{local := L, remote := R} <- lists:append(maps:values(ChA))],
    ?assertEqual(length(Ends), length(lists:usort(Ends))),
    ok.

panics_do_not_take_the_vm_down(_Config) ->
    [A, B] = cluster(2),
    ok = call(A, weft_ct, capture_logs, []),
    ?assertMatch({'EXIT', _}, call(A, erlang, apply, [fun() -> catch weft_nif:debug_panic(nif) end, []])),
    ok = call(A, weft_nif, debug_panic, [thread]),
    %% both reported through logger
    weft_ct:wait_until(panic_logged, fun() ->
                                             Panics = [L || L <- call(A, weft_ct, logs, []),
                                                            string:find(L, "Rust panic") =/= nomatch],
                                             length(Panics) >= 2
                                     end),
    %% still alive and still working
    call(B, weft_ct, collector, [inbox]),
    ok = call(A, weft, forward, [node_of(B), inbox, still_here, #{}]),
    ?assertEqual([still_here], call(B, weft_ct, collected, [inbox, 1])),
    ok.

missing_nif_is_a_clear_error(Config) ->
    %% A copy of the application without its priv/ directory.
    Ebin = filename:join([?config(priv_dir, Config), "weft", "ebin"]),
    ok = filelib:ensure_dir(filename:join(Ebin, "x")),
    Real = filename:dirname(code:which(weft)),
    [{ok, _} = file:copy(F, filename:join(Ebin, filename:basename(F)))
     || F <- filelib:wildcard(filename:join(Real, "*"))],
    {ok, Peer, _Node} = peer:start(#{name => peer:random_name(nonif), connection => standard_io,
                                     args => ["-pa", Ebin]}),
    try
        Result = peer:call(Peer, weft, start, [opts()]),
        ?assertMatch({error, {nif_not_loaded, _, _}}, Result),
        {error, {nif_not_loaded, Path, _}} = Result,
        ?assertEqual(filename:join([?config(priv_dir, Config), "weft", "priv", "weft_nif.so"]), Path),
        ?assertEqual({error, not_started}, peer:call(Peer, weft, members, []))
    after
        peer:stop(Peer)
    end.

%% SIGSTOP keeps the sockets open (the kernel still acknowledges), so only
%% the heartbeat timeout can tell; SIGCONT brings the node back, and the
%% redials reconnect it.
frozen_node_times_out_and_comes_back(_Config) ->
    [A, B, C] = cluster(3),
    NodeC = node_of(C),
    [call(N, weft_ct, watcher, []) || N <- [A, B]],
    OsPid = call(C, os, getpid, []),
    T0 = erlang:monotonic_time(millisecond),
    os:cmd("kill -STOP " ++ OsPid),
    try
        [weft_ct:wait_until({nodedown, N}, fun() -> lists:member({nodedown, NodeC}, call(N, weft_ct, events, [])) end)
         || N <- [A, B]],
        %% not before the timeout (1500 ms) minus one heartbeat interval
        ?assert(erlang:monotonic_time(millisecond) - T0 >= 1300),
        Two = lists:sort([node_of(A), node_of(B)]),
        [?assertEqual(Two, call(N, weft, members, [])) || N <- [A, B]]
    after
        os:cmd("kill -CONT " ++ OsPid)
    end,
    converge([A, B, C]),
    [weft_ct:wait_until({nodeup_again, N},
                        fun() -> lists:last(call(N, weft_ct, events, [])) =:= {nodeup, NodeC} end)
     || N <- [A, B]],
    call(C, weft_ct, collector, [inbox]),
    ok = call(A, weft, forward, [NodeC, inbox, back, #{channel => vnode}]),
    ?assertEqual([back], call(C, weft_ct, collected, [inbox, 1])),
    ok.

callbacks_and_monitor_nodes(_Config) ->
    A = start(cb, opts()),
    B = start(cb, opts()),
    NodeB = node_of(B),
    ok = call(A, weft_ct, register_callbacks, [NodeB]),
    call(A, weft_ct, watcher, []),
    ok = call(A, weft, sync_join, [call(B, weft, node_spec, []), 10000]),
    weft_ct:wait_until(up_callback, fun() -> call(A, weft_ct, collected, [callbacks]) =:= [{up, any, NodeB}] end),
    ?assertEqual([{nodeup, NodeB}], call(A, weft_ct, events, [])),
    weft_ct:kill_node(B),
    weft_ct:wait_until(down_callbacks,
                       fun() ->
                               lists:sort(call(A, weft_ct, collected, [callbacks])) =:=
                                   lists:sort([{up, any, NodeB}, {down, any, NodeB}, {down, NodeB}])
                       end),
    ?assertEqual([{nodeup, NodeB}, {nodedown, NodeB}], call(A, weft_ct, events, [])),
    %% unsubscribed: no more messages
    C = start(cb, opts()),
    SpecC = call(C, weft, node_spec, []),
    Quiet = fun() ->
                    ok = weft:monitor_nodes(true),
                    ok = weft:monitor_nodes(false),
                    ok = weft:sync_join(SpecC, 10000),
                    receive {nodeup, _} = M -> M after 500 -> quiet end
            end,
    ?assertEqual(quiet, call(A, erlang, apply, [Quiet, []])),
    %% while the subscribed watcher did see it
    weft_ct:wait_until(watcher_saw_c, fun() ->
                                              lists:last(call(A, weft_ct, events, [])) =:= {nodeup, node_of(C)}
                                      end),
    ok.

%% Messages below and above the size where frames are read into a binary
%% and shared (64 KiB) arrive equal to what was sent, whatever they hold.
every_kind_of_term_small_and_large(_Config) ->
    [A, B] = cluster(2),
    call(B, weft_ct, echo, [echo]),
    [?assertEqual(ok, call(A, weft_ct, mixed_round_trip, [node_of(B), Ch, Size]))
     || Ch <- [default, vnode], Size <- [10, 60000, 70000, 8 * 1024 * 1024]],
    ok.

%% `io => threads': pollers on threads of their own instead of the
%% schedulers; the same traffic arrives, a node of each mode in one cluster.
io_on_threads(_Config) ->
    A = start(weft, opts(#{io => threads, pollers => 2})),
    B = start(weft, opts()),
    ok = call(A, weft, sync_join, [call(B, weft, node_spec, []), 10000]),
    converge([A, B]),
    call(A, weft_ct, echo, [echo]),
    call(B, weft_ct, echo, [echo]),
    [?assertEqual(ok, call(X, weft_ct, mixed_round_trip, [node_of(Y), Ch, Size]))
     || {X, Y} <- [{A, B}, {B, A}], Ch <- [default, vnode], Size <- [10, 1024 * 1024]],
    %% no poller processes on the threads node, one per scheduler on the other
    ?assertEqual([], pollers(A)),
    ?assertEqual(call(B, erlang, system_info, [schedulers_online]), length(pollers(B))),
    ok.

%% While the machine's CPUs are contended (Linux's CPU pressure: threads
%% wait for a CPU), pollers keep looking for traffic `poll_linger_busy_us'
%% instead of `poll_linger_us'; `info()' says which (`undefined' where the
%% two are alike), and traffic flows while it is.
pollers_linger_less_while_the_cpus_are_contended(_Config) ->
    case file:read_file("/proc/pressure/cpu") of
        {ok, <<"some ", _/binary>>} -> linger_under_pressure();
        _ -> {skip, "this machine does not report CPU pressure"}
    end.

linger_under_pressure() ->
    [A, B] = cluster(2),
    Same = start(weft, opts(#{poll_linger_us => 50, poll_linger_busy_us => 50})),
    ?assertMatch(#{cpu_contended := undefined}, info(Same)),
    ?assertMatch(#{cpu_contended := Flag} when is_boolean(Flag), info(A)),
    call(B, weft_ct, echo, [echo]),
    %% Twice as many busy OS processes as this machine has cores (killed
    %% by PID): some always wait for a CPU.
    Cores = case erlang:system_info(logical_processors_available) of
                N when is_integer(N) -> N;
                _ -> erlang:system_info(schedulers_online)
            end,
    Spinners = [string:trim(os:cmd("sh -c 'while :; do :; done' >/dev/null 2>&1 & echo $!"))
                || _ <- lists:seq(1, 2 * max(2, Cores))],
    try
        weft_ct:wait_until(contended, fun() -> maps:get(cpu_contended, info(A)) end),
        [?assertEqual(ok, call(A, weft_ct, mixed_round_trip, [node_of(B), Ch, Size]))
         || Ch <- [default, vnode], Size <- [10, 100000]]
    after
        [os:cmd("kill " ++ P) || P <- Spinners]
    end,
    %% (when it counts as free again is the core's unit test's: on a
    %% machine that other work keeps busy, it may not for long)
    ok.

%% A poller's process that dies is started again, and its connections keep
%% working: nothing is lost but what was in flight in that process.
a_killed_poller_process_is_restarted(_Config) ->
    [A, B] = cluster(2),
    NodeB = node_of(B),
    call(B, weft_ct, collector, [inbox]),
    [ok = call(A, weft, forward, [NodeB, inbox, {before, I}, #{channel => vnode, partition_key => I}])
     || I <- lists:seq(1, 16)],
    ?assertEqual(16, length(call(B, weft_ct, collected, [inbox, 16]))),
    Old = pollers(B),
    ?assertNotEqual([], Old),
    %% They are the children of their own supervisor.
    ?assertEqual(lists:sort(Old),
                 lists:sort([P || {_, P, _, _} <- call(B, supervisor, which_children, [weft_poller_sup])])),
    [call(B, erlang, exit, [P, kill]) || P <- Old],
    weft_ct:wait_until(restarted, fun() ->
                                          New = pollers(B),
                                          length(New) =:= length(Old) andalso New -- Old =:= New
                                  end),
    [ok = call(A, weft, forward, [NodeB, inbox, {'after', I}, #{channel => vnode, partition_key => I}])
     || I <- lists:seq(1, 16)],
    ?assertEqual(32, length(call(B, weft_ct, collected, [inbox, 32]))),
    ?assertEqual(lists:sort([node_of(A), NodeB]), call(B, weft, members, [])),
    ok.

%% weft_server crashes (or the poller supervisor gives up): the transport
%% starts again, on the port it had (the configuration says any port), so
%% the other members redial it and the node is back in its cluster.
a_restarted_transport_rejoins_its_cluster(_Config) ->
    [A, B] = cluster(2),
    NodeA = node_of(A),
    NodeB = node_of(B),
    #{listen_addrs := [#{port := Port} | _]} = call(A, weft, node_spec, []),
    Old = call(A, erlang, whereis, [weft_server]),
    call(A, erlang, exit, [Old, kill]),
    weft_ct:wait_until(restarted,
                       fun() ->
                               case call(A, erlang, whereis, [weft_server]) of
                                   P when is_pid(P), P =/= Old ->
                                       is_map(call(A, weft, node_spec, []));
                                   _ ->
                                       false
                               end
                       end),
    ?assertMatch(#{listen_addrs := [#{port := Port} | _]}, call(A, weft, node_spec, [])),
    weft_ct:wait_until(rejoined,
                       fun() ->
                               lists:sort([NodeA, NodeB]) =:= call(A, weft, members, [])
                                   andalso [NodeA] =:= call(B, weft, nodes, [])
                       end),
    call(B, weft_ct, collector, [inbox]),
    ok = call(A, weft, forward, [NodeB, inbox, back, #{}]),
    ?assertEqual([back], call(B, weft_ct, collected, [inbox, 1])),
    ok.

pollers(N) ->
    [P || P <- call(N, erlang, processes, []),
          {weft_poller, init, 1} =:= call(N, proc_lib, translate_initial_call, [P])].

%% `io => auto' (the default): a lane that carries bulk data is served by a
%% poller on a thread while it does, and goes back to the schedulers'
%% pollers once quiet; nothing is lost or reordered on the way.
bulk_lanes_move_to_threads_and_back(_Config) ->
    [A, B] = cluster(2),
    NodeB = node_of(B),
    weft_ct:wait_until(lanes, fun() -> all_lanes_connected(A, NodeB) end),
    call(B, weft_ct, collector, [inbox]),
    ?assertEqual([scheduler], lists:usort([Io || #{io := Io} <- lanes(A, NodeB, vnode)])),
    %% what each connection's handshake negotiated (protocol 3, everything)
    ?assertEqual([{3, [join_check, parts, relay, seq_ack, share, share_wait, signed_refusal, trace]}],
                 lists:usort([{P, lists:sort(C)}
                              || #{protocol := P, capabilities := C} <- lanes(A, NodeB, vnode)])),
    ok = call(A, weft_ct, bulk_stream, [NodeB, inbox, vnode, 1500]),
    weft_ct:wait_until(on_thread, fun() ->
                                          lists:member(thread, [Io || #{io := Io} <- lanes(A, NodeB, vnode)])
                                  end),
    weft_ct:wait_until(back, fun() ->
                                     [scheduler] =:= lists:usort([Io || #{io := Io} <- lanes(A, NodeB, vnode)])
                                         andalso [scheduler] =:=
                                             lists:usort([Io || #{io := Io} <- lanes(B, node_of(A), vnode)])
                             end),
    Seqs = call(B, weft_ct, bulk_seqs, [inbox]),
    ?assert(length(Seqs) > 10),
    ?assertEqual(lists:seq(1, length(Seqs)), Seqs),
    ok.

%% The static overlay: membership is the configured list (this node's own
%% entry left out). Members that start late come up when they start; one
%% that never starts is redialed and does no harm; joins and leaves are
%% refused with the configured members; messages and node events work as
%% on the full mesh.
static_overlay_with_late_and_missing_members(_Config) ->
    A = start(static, no_weft),
    [_, Host] = string:split(atom_to_list(node_of(A)), "@"),
    [NameB, NameC, NameD] = [peer:random_name(static) || _ <- [b, c, d]],
    Node = fun(Name) -> list_to_atom(Name ++ "@" ++ Host) end,
    Ports = weft_ct:free_ports(4),
    Names = [node_of(A) | [Node(N) || N <- [NameB, NameC, NameD]]],
    Specs = [#{name => Nm, listen_addrs => [#{ip => {127, 0, 0, 1}, port => P}]}
             || {Nm, P} <- lists:zip(Names, Ports)],
    [PA, PB, PC, _PD] = Ports,
    Opts = fun(P) -> opts(#{listen => {{127, 0, 0, 1}, P}, overlay => {static, Specs}}) end,
    ok = call(A, weft, start, [Opts(PA)]),
    call(A, weft_ct, watcher, []),
    B = start_named(NameB, Opts(PB)),
    [NA, NB, NC, ND] = Names,
    %% (each side sees the other up when its own end of the handshake is
    %% done: wait for both)
    weft_ct:wait_until(a_and_b, fun() ->
                                        [call(N, weft, members, []) || N <- [A, B]]
                                            =:= [lists:sort([NA, NB]), lists:sort([NA, NB])]
                                end),
    %% the membership is the list
    Others = lists:sort([NB, NC, ND]),
    ?assertEqual({error, {static_overlay, Others}}, call(A, weft, join, [hd(Specs)])),
    ?assertEqual({error, {static_overlay, Others}},
                 call(A, weft, sync_join, [lists:last(Specs), 1000])),
    ?assertEqual({error, {static_overlay, Others}}, call(A, weft, leave, [])),
    ?assertEqual({error, {static_overlay, Others}}, call(A, weft, leave, [NB])),
    #{overlay := static, peers := Peers} = info(A),
    ?assertEqual(lists:sort([NB, NC, ND]), lists:sort(maps:keys(Peers))),
    %% C starts late and comes up everywhere
    C = start_named(NameC, Opts(PC)),
    Three = lists:sort([NA, NB, NC]),
    weft_ct:wait_until(three, fun() -> [call(N, weft, members, []) || N <- [A, B, C]] =:= [Three, Three, Three] end),
    %% messages and node events as on the full mesh
    call(C, weft_ct, collector, [inbox]),
    [ok = call(A, weft, forward, [NC, inbox, {m, I}, #{channel => vnode, partition_key => I}])
     || I <- lists:seq(1, 100)],
    weft_ct:wait_until(delivered, fun() -> length(call(C, weft_ct, collected, [inbox])) =:= 100 end),
    ?assertEqual([{m, I} || I <- lists:seq(1, 100)], lists:sort(call(C, weft_ct, collected, [inbox]))),
    ?assertEqual([{nodeup, NB}, {nodeup, NC}], call(A, weft_ct, events, [])),
    weft_ct:kill_node(C),
    weft_ct:wait_until(c_down, fun() -> lists:last(call(A, weft_ct, events, [])) =:= {nodedown, NC} end),
    %% D never started: still a configured member, not up, and A is fine
    #{peers := #{ND := #{state := DState}}} = info(A),
    ?assert(lists:member(DState, [connecting, down])),
    ?assertEqual(lists:sort([NA, NB]), call(A, weft, members, [])),
    %% a stranger is refused at once and for good
    X = start(stranger, opts()),
    ?assertEqual({error, {refused, detached}}, call(X, weft, sync_join, [hd(Specs), 10000])),
    %% after stop, join answers not_started, not the static overlay's error
    ok = call(A, weft, stop, []),
    ?assertEqual({error, not_started}, call(A, weft, join, [lists:last(Specs)])),
    ok.

%% Client-server with 2 servers and 4 clients: servers connect to everyone,
%% clients only to the servers; a message from a client to another client,
%% by name or by pid, goes through a server and arrives in order; when a
%% server is killed, clients see it go down and messages go through the
%% other one.
client_server_relays_and_fails_over(_Config) ->
    Server = opts(#{overlay => {client_server, #{role => server}}}),
    Client = opts(#{overlay => {client_server, #{role => client}}}),
    [S1, S2] = Servers = [start(server, Server) || _ <- [1, 2]],
    Clients = [C1, C2 | _] = [start(client, Client) || _ <- [1, 2, 3, 4]],
    [call(C, weft_ct, watcher, []) || C <- Clients],
    %% on_up / on_down callbacks on a client, as on the full mesh
    ok = call(C1, weft_ct, register_callbacks, [node_of(S2)]),
    Spec1 = call(S1, weft, node_spec, []),
    [ok = call(N, weft, sync_join, [Spec1, 10000]) || N <- [S2 | Clients]],
    All = lists:sort([node_of(N) || N <- Servers ++ Clients]),
    ServerNames = lists:sort([node_of(S) || S <- Servers]),
    weft_ct:wait_until(servers_see_all, fun() -> [call(S, weft, members, []) || S <- Servers] =:= [All, All] end),
    [weft_ct:wait_until({sees_servers, C},
                        fun() -> call(C, weft, members, []) =:= lists:sort([node_of(C) | ServerNames]) end)
     || C <- Clients],
    %% no client-client connections, on either side
    [begin
         #{overlay := client_server, peers := Peers} = info(C),
         ?assertEqual(ServerNames, lists:sort(maps:keys(Peers)))
     end || C <- Clients],
    [?assertMatch(#{overlay := client_server}, info(S)) || S <- Servers],
    %% client to client, by name: relayed, in order
    NC2 = node_of(C2),
    call(C2, weft_ct, collector, [inbox]),
    [ok = call(C1, weft, forward, [NC2, inbox, {m, I}, #{channel => vnode}]) || I <- lists:seq(1, 200)],
    ?assertEqual([{m, I} || I <- lists:seq(1, 200)], call(C2, weft_ct, collected, [inbox, 200])),
    ?assertMatch(#{relayed := 200}, info(C1)),
    weft_ct:wait_until(servers_relayed,
                       fun() -> lists:sum([maps:get(relayed, info(S)) || S <- Servers]) =:= 200 end),
    %% all through one server (the same one for one destination)
    [Via] = [S || S <- Servers, maps:get(relayed, info(S)) =:= 200],
    %% and by pid, with a reply through a server the other way
    Pid = call(C2, weft_ct, echo, [echo2]),
    Here = call(C1, weft_ct, collector, [replies]),
    ok = call(C1, weft, forward, [Pid, {Here, default, ping}]),
    ?assertEqual([{echo, NC2, ping}], call(C1, weft_ct, collected, [replies, 1])),
    %% a server killed: clients see it go down, messages take the other one
    Gone = Via,
    weft_ct:kill_node(Gone),
    weft_ct:untrack(Gone),
    Left = lists:sort([node_of(S) || S <- Servers, S =/= Gone]),
    [weft_ct:wait_until({failed_over, C},
                        fun() -> call(C, weft, members, []) =:= lists:sort([node_of(C) | Left]) end)
     || C <- Clients],
    [weft_ct:wait_until({nodedown_seen, C},
                        fun() -> lists:member({nodedown, node_of(Gone)}, call(C, weft_ct, events, [])) end)
     || C <- Clients],
    %% C1's callbacks saw both servers come up, and the killed one go down
    Callbacks = call(C1, weft_ct, collected, [callbacks]),
    ?assert(lists:member({up, any, node_of(S1)}, Callbacks)),
    ?assert(lists:member({up, any, node_of(S2)}, Callbacks)),
    weft_ct:wait_until(down_callback,
                       fun() -> lists:member({down, any, node_of(Gone)}, call(C1, weft_ct, collected, [callbacks])) end),
    [ok = call(C1, weft, forward, [NC2, inbox, {after_failover, I}, #{channel => vnode}]) || I <- lists:seq(1, 50)],
    Got = call(C2, weft_ct, collected, [inbox, 250]),
    ?assertEqual([{after_failover, I} || I <- lists:seq(1, 50)], lists:nthtail(200, Got)),
    ok.

%% A membership protocol written in Erlang (weft_cyclon, Cyclon's shuffle)
%% on 6 nodes joined through the first: the views spread until every node
%% knows, and is connected to, all the others (view size 8 > 5); messages
%% and node events work as on the built-in overlays.
callback_overlay_cyclon_converges(_Config) ->
    Opts = opts(#{overlay => {callback, weft_cyclon, #{view_size => 8, shuffle_length => 3}}}),
    Nodes = [First | Rest] = [start(cyclon, Opts) || _ <- lists:seq(1, 6)],
    call(First, weft_ct, watcher, []),
    Spec = call(First, weft, node_spec, []),
    [ok = call(N, weft, sync_join, [Spec, 10000]) || N <- Rest],
    converge(Nodes),
    ?assertMatch(#{overlay := callback}, info(First)),
    [_, B | _] = Nodes,
    call(B, weft_ct, collector, [inbox]),
    [ok = call(First, weft, forward, [node_of(B), inbox, {m, I}, #{channel => vnode}]) || I <- lists:seq(1, 50)],
    ?assertEqual([{m, I} || I <- lists:seq(1, 50)], call(B, weft_ct, collected, [inbox, 50])),
    ?assertEqual(lists:sort([{nodeup, node_of(N)} || N <- Rest]),
                 lists:sort(call(First, weft_ct, events, []))),
    ok.

%% On the callback overlay, a peer that knows the cookie sends protocol
%% messages full of atoms the receiver does not have (one of 1.1 M atoms
%% ended the VM: they were decoded with a plain binary_to_term). They are
%% decoded under the bounds of data messages: past the room, refused and
%% logged (at the 1st, 10th, ... one), the node lives and the protocol
%% goes on.
callback_overlay_messages_cannot_fill_the_atom_table(_Config) ->
    Opts = opts(#{overlay => {callback, weft_cyclon, #{view_size => 8, shuffle_length => 3}}}),
    A = weft_ct:start_node(cyclon, Opts, ["+t", "20000"]),
    weft_ct:track(A),
    ok = call(A, weft_ct, capture_logs, []),
    NodeA = atom_to_binary(node_of(A)),
    Spec = weft_ct:fake_spec(<<"fake@127.0.0.1">>, [{<<"default">>, 1}]),
    {ok, C} = weft_ct:fake_peer(call(A, weft_ct, port, []), maps:get(cookie, Opts), NodeA,
                                {<<"$control">>, 0}, Spec),
    Msgs = 4,
    %% 4 messages of 6,000 atoms new to A (made by hand: none is made here)
    [begin
         Atoms = [begin
                      Name = iolist_to_binary(io_lib:format("evil_~b_~b", [M, I])),
                      <<119, (byte_size(Name)), Name/binary>>
                  end || I <- lists:seq(1, 6000)],
         Etf = iolist_to_binary([<<131, 108, 6000:32>>, Atoms, <<106>>]),
         Body = <<1, 4, 11, "weft_cyclon", Etf/binary>>,
         ok = gen_tcp:send(C, weft_ct:raw_frame(2, Body))
     end || M <- lists:seq(1, Msgs)],
    Ignored = fun() -> [L || L <- call(A, weft_ct, logs, []),
                             string:find(L, "membership message of") =/= nomatch] end,
    weft_ct:wait_until(refused_logged, fun() -> Ignored() =/= [] end),
    ct:log("~p", [Ignored()]),
    ?assert(call(A, erlang, system_info, [atom_count]) < call(A, erlang, system_info, [atom_limit])),
    %% the protocol goes on: a real node joins
    B = start(cyclon, Opts),
    ok = call(B, weft, sync_join, [call(A, weft, node_spec, []), 10000]),
    weft_ct:wait_until(member, fun() -> lists:member(node_of(B), call(A, weft, members, [])) end),
    gen_tcp:close(C),
    ok.

%% On the callback overlay with weft_cyclon, a peer that knows the cookie
%% sends shuffles whose entries are not node specs (a name only, an unknown
%% key with 10 KB in it, no or bad addresses, a bad channel, a bad age, not
%% a pair), more entries than shuffle_length, and messages of other shapes
%% (an improper list, an answer to no shuffle). Before, such entries
%% entered the view: each was logged whole at every period, for ever, and
%% they spread, and ten shuffles left a node of view size 4 alone. Now none
%% enters: the node's own shuffles carry only real nodes, the dropped
%% entries are logged at the 1st, 10th and 100th only, a real node still
%% joins. And a protocol that returns invalid members at every call is
%% logged at the 1st, 10th, ... one, the spec cut short.
callback_overlay_invalid_entries_stay_out(_Config) ->
    Opts = opts(#{overlay => {callback, weft_cyclon, #{view_size => 4, shuffle_length => 2}}}),
    A = start(cyclon, Opts),
    ok = call(A, weft_ct, capture_logs, []),
    B = start(cyclon, Opts),
    ok = call(B, weft_ct, capture_logs, []),
    ok = call(B, weft, sync_join, [call(A, weft, node_spec, []), 10000]),
    weft_ct:wait_until(b_member, fun() -> lists:member(node_of(B), call(A, weft, members, [])) end),
    NodeA = atom_to_binary(node_of(A)),
    Spec = weft_ct:fake_spec(<<"fake@127.0.0.1">>, [{<<"default">>, 1}]),
    {ok, C} = weft_ct:fake_peer(call(A, weft_ct, port, []), maps:get(cookie, Opts), NodeA,
                                {<<"$control">>, 0}, Spec),
    Beat = spawn_link(fun() -> heartbeats([C]) end),
    Send = fun(Msg) ->
                   Body = <<1, 4, 11, "weft_cyclon", (term_to_binary(Msg))/binary>>,
                   ok = gen_tcp:send(C, weft_ct:raw_frame(2, Body))
           end,
    Addrs = [#{ip => {127, 0, 0, 1}, port => 9}],
    Junk = fun(Prefix, I) -> list_to_atom(Prefix ++ integer_to_list(I) ++ "@127.0.0.1") end,
    Invalid = fun(I) ->
                      N = Junk("junk", I),
                      case I rem 10 of
                          0 -> {#{name => N}, 0};
                          1 -> {#{name => N, listen_addrs => Addrs, pad => binary:copy(<<"x">>, 10000)}, 0};
                          2 -> {#{name => N, listen_addrs => []}, 0};
                          3 -> {#{name => N, listen_addrs => [#{ip => {127, 0, 0, 1}, port => 0}]}, 0};
                          4 -> {#{name => N, listen_addrs => [#{ip => {300, 0, 0, 1}, port => 9}]}, 0};
                          5 -> {#{name => N, listen_addrs => lists:duplicate(17, hd(Addrs))}, 0};
                          6 -> {#{name => list_to_atom("junk-no-host" ++ integer_to_list(I)),
                                  listen_addrs => Addrs}, 0};
                          7 -> {#{name => N, listen_addrs => Addrs,
                                  channels => [#{name => default, parallelism => 0}]}, 0};
                          8 -> {#{name => N, listen_addrs => Addrs}, -1};
                          9 -> #{name => N, listen_addrs => Addrs}
                      end
              end,
    %% messages of other shapes, and an answer to no shuffle: ignored
    Send({cyclon_shuffle, not_a_list}),
    Send({cyclon_shuffle, [{#{name => Junk("improper", 1), listen_addrs => Addrs}, 0} | tail]}),
    Send({cyclon_reply, [{#{name => Junk("unasked", 1), listen_addrs => Addrs}, 0}]}),
    Send({something, else}),
    %% 50 shuffles of 2 invalid entries, then valid ones past shuffle_length
    [Send({cyclon_shuffle, [Invalid(2 * I), Invalid(2 * I + 1)
                            | [{#{name => Junk("past", 4 * I + J), listen_addrs => Addrs}, 0}
                               || J <- lists:seq(0, 3)]]})
     || I <- lists:seq(0, 49)],
    About = fun() -> [L || L <- call(A, weft_ct, logs, []), string:find(L, "invalid") =/= nomatch] end,
    weft_ct:wait_until(hundred_dropped,
                       fun() -> lists:any(fun(L) -> string:find(L, "100 invalid entries") =/= nomatch end,
                                          About())
                       end),
    %% a real node still joins
    D = start(cyclon, Opts),
    ok = call(D, weft_ct, capture_logs, []),
    ok = call(D, weft, sync_join, [call(A, weft, node_spec, []), 10000]),
    weft_ct:wait_until(d_member, fun() -> lists:member(node_of(D), call(A, weft, members, [])) end),
    %% 15 of A's own shuffles to the fake peer (one period each at least):
    %% every entry A sends, its view, is a real node
    Real = [node_of(A), node_of(B), node_of(D), 'fake@127.0.0.1'],
    Sent = read_cyclon(C, 15, erlang:monotonic_time(millisecond) + 60000, []),
    [begin
         ?assertMatch({ok, _}, weft_config:check_spec(S)),
         ?assert(lists:member(maps:get(name, S), Real))
     end || {_, Entries} <- Sent, {S, _Age} <- Entries],
    ?assert(lists:member(node_of(B), call(A, weft, members, []))),
    ?assertEqual([], [P || P <- maps:keys(maps:get(peers, info(A))), not lists:member(P, Real)]),
    %% 3 lines about the 100 invalid entries (1st, 10th, 100th), no more
    Lines = About(),
    ct:log("~p", [Lines]),
    ?assertEqual(3, length(Lines)),
    ?assertEqual([], [L || L <- call(B, weft_ct, logs, []) ++ call(D, weft_ct, logs, []),
                           string:find(L, "invalid") =/= nomatch]),
    unlink(Beat),
    exit(Beat, kill),
    gen_tcp:close(C),
    %% a protocol that returns 2 large invalid members at every call
    E = start(bad_cb, opts(#{overlay => {callback, weft_evil_membership, invalid_members}})),
    ok = call(E, weft_ct, capture_logs, []),
    weft_ct:wait_until(calls, fun() -> call(E, persistent_term, get, [weft_evil_calls, 0]) >= 30 end),
    Invalid2 = [L || L <- call(E, weft_ct, logs, []), string:find(L, "invalid member") =/= nomatch],
    ct:log("~p", [Invalid2]),
    %% (the 1st and 10th of 60 or so, maybe the 100th)
    ?assert(length(Invalid2) >= 2 andalso length(Invalid2) =< 3),
    ?assertEqual([], [L || L <- Invalid2, length(L) > 1000]),
    ok.

%% Cyclon messages that `A' sends the fake peer on socket `C', until
%% `Shuffles' shuffles: `[{cyclon_shuffle | cyclon_reply, Entries}]'.
read_cyclon(_C, 0, _Deadline, Acc) ->
    lists:reverse(Acc);
read_cyclon(C, Shuffles, Deadline, Acc) ->
    Left = max(0, Deadline - erlang:monotonic_time(millisecond)),
    {ok, <<Len:32, Type:8>>} = gen_tcp:recv(C, 5, Left),
    {Ext, BodyLen} = case Type band 16#80 of
                         0 -> {0, Len - 1};
                         _ -> {ok, <<E:16>>} = gen_tcp:recv(C, 2, Left), {E, Len - 3 - E}
                     end,
    case Ext of
        0 -> ok;
        _ -> {ok, _} = gen_tcp:recv(C, Ext, Left)
    end,
    {ok, Body} = case BodyLen of 0 -> {ok, <<>>}; _ -> gen_tcp:recv(C, BodyLen, Left) end,
    case {Type band 16#0F, Body} of
        {2, <<1, 4, 11, "weft_cyclon", Etf/binary>>} ->
            case binary_to_term(Etf) of
                {cyclon_shuffle, Entries} -> read_cyclon(C, Shuffles - 1, Deadline, [{cyclon_shuffle, Entries} | Acc]);
                {cyclon_reply, Entries} -> read_cyclon(C, Shuffles, Deadline, [{cyclon_reply, Entries} | Acc])
            end;
        _ ->
            read_cyclon(C, Shuffles, Deadline, Acc)
    end.

%% A protocol that raises, or returns nonsense, is logged and ignored: weft
%% keeps running, and a module without the callbacks is a bad config.
callback_overlay_survives_a_bad_protocol(_Config) ->
    N = start(bad_cb, no_weft),
    ?assertMatch({error, {bad_config, overlay, {callback, lists, []}}},
                 call(N, weft, start, [opts(#{overlay => {callback, lists, []}})])),
    ?assertMatch({error, {bad_config, overlay, {callback, no_such_module, []}}},
                 call(N, weft, start, [opts(#{overlay => {callback, no_such_module, []}})])),
    %% weft_cyclon:init/1 fails on bad options: start fails with the reason
    ?assertMatch({error, {membership_init, _}},
                 call(N, weft, start, [opts(#{overlay => {callback, weft_cyclon, #{view_size => 0}}})])),
    %% init that blocks: start gives up after 5 s; init that throws {ok, _}
    ?assertEqual({error, {membership_init, timeout}},
                 call(N, weft, start, [opts(#{overlay => {callback, weft_evil_membership, block}})])),
    ?assertMatch({error, {membership_init, {throw, {ok, thrown}}}},
                 call(N, weft, start, [opts(#{overlay => {callback, weft_evil_membership, throw_ok}})])),
    %% results that are not proper lists, messages over 1 MiB, callbacks
    %% that raise: logged and ignored, the protocol's state kept (its call
    %% count only grows), the nodes stay connected
    [begin
         A = start(bad_cb, opts(#{overlay => {callback, weft_evil_membership, Mode}})),
         B = start(bad_cb, opts(#{overlay => {callback, weft_evil_membership, Mode}})),
         ok = call(B, weft, sync_join, [call(A, weft, node_spec, []), 10000]),
         Pid = call(A, erlang, whereis, [weft_server]),
         weft_ct:wait_until({calls, Mode}, fun() -> call(A, persistent_term, get, [weft_evil_calls, 0]) >= 8 end),
         ?assertEqual(Pid, call(A, erlang, whereis, [weft_server])),
         %% (B's sync_join says B sees A up; A sees B up when its own end is
         %% done)
         weft_ct:wait_until({both, Mode}, fun() -> call(A, weft, members, [])
                                                       =:= lists:sort([node_of(A), node_of(B)]) end)
     end || Mode <- [improper_members, improper_messages, huge_message, raise, wide_names]],
    ok = call(N, weft, start, [opts(#{overlay => {callback, weft_cyclon, #{}}})]),
    %% a message the protocol does not expect, a join with junk: still up
    Other = start(bad_cb, opts(#{overlay => {callback, weft_cyclon, #{}}})),
    ok = call(Other, weft, sync_join, [call(N, weft, node_spec, []), 10000]),
    %% (N sees Other up once its own end of the handshake is done)
    weft_ct:wait_until(other_up, fun() -> call(N, weft, members, [])
                                              =:= lists:sort([node_of(N), node_of(Other)]) end),
    %% a node of another overlay is refused, and not redialed: both sides
    %% say so (the full-mesh node is told, even though the protocol never
    %% sends it anything); the full-mesh node's sync_join, which waits for
    %% a confirmation that a callback node never gives, gets the refusal
    Mesh = start(mesh, opts()),
    ok = call(Mesh, weft_ct, capture_logs, []),
    ?assertEqual({error, {refused, {bad_spec, <<"overlay: it runs callback, this node full_mesh">>}}},
                 call(Mesh, weft, sync_join, [call(N, weft, node_spec, []), 10000])),
    weft_ct:wait_until(refused_other_overlay,
                       fun() -> call(Mesh, weft, members, []) =:= [node_of(Mesh)]
                                    andalso not lists:member(node_of(Mesh), call(N, weft, members, []))
                                    andalso lists:any(fun(L) -> string:find(L, "it runs callback") =/= nomatch end,
                                                      call(Mesh, weft_ct, logs, []))
                       end),
    %% and a node running another protocol (another module) too
    Evil = start(evil, opts(#{overlay => {callback, weft_evil_membership, ok}})),
    ok = call(Evil, weft, sync_join, [call(N, weft, node_spec, []), 10000]),
    weft_ct:wait_until(refused_other_protocol,
                       fun() -> not lists:member(node_of(Evil), call(N, weft, members, []))
                                    andalso not lists:member(node_of(N), call(Evil, weft, members, []))
                       end),
    ok.

start_named(Name, Opts) ->
    N = weft_ct:start_node_named(Name, Opts),
    weft_ct:track(N),
    N.
