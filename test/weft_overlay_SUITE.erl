%% The same cross-node behaviour on every overlay: forwarding on every
%% channel by name and by pid, order per sender and partition key, small
%% and large messages of one sender in order, and node events. One group
%% per overlay; each builds a cluster of three nodes A, B, C:
%% - full_mesh: joined through A;
%% - static: the same list of all three on each, started one by one;
%% - client_server: A and C clients, B the server (so A <-> C is relayed);
%% - callback: weft_cyclon, joined through A.
-module(weft_overlay_SUITE).

-include_lib("stdlib/include/assert.hrl").

-export([all/0, groups/0, suite/0, init_per_group/2, end_per_group/2,
         init_per_testcase/2, end_per_testcase/2]).
-export([forward_between_every_pair/1, order_per_sender_and_key/1,
         small_and_large_in_order/1, node_events/1]).


suite() ->
    [{timetrap, {minutes, 5}}].

all() ->
    [{group, G} || G <- [full_mesh, static, client_server, callback]].

groups() ->
    Cases = [forward_between_every_pair, order_per_sender_and_key, small_and_large_in_order,
             node_events],
    [{G, [], Cases} || G <- [full_mesh, static, client_server, callback]].

init_per_group(G, Config) ->
    [{overlay, G} | Config].

end_per_group(_, _Config) ->
    ok.

init_per_testcase(_Case, Config) ->
    Config.

end_per_testcase(_Case, _Config) ->
    weft_ct:stop_tracked().

%%% Clusters

opts(Extra) ->
    weft_ct:test_opts(Extra).

keep(N) ->
    weft_ct:track(N),
    N.

%% Three nodes [A, B, C] of the group's overlay, each up with the others it
%% connects to.
cluster(Config) ->
    Nodes = cluster(proplists:get_value(overlay, Config), 3),
    [weft_ct:wait_until({connected, node_of(N)},
                        fun() -> lists:sort(call(N, weft, members, [])) =:= expected(Config, N, Nodes) end)
     || N <- Nodes],
    Nodes.

cluster(full_mesh, Count) ->
    join_all([keep(weft_ct:start_node(mesh, opts(#{}))) || _ <- lists:seq(1, Count)]);
cluster(callback, Count) ->
    Opts = opts(#{overlay => {callback, weft_cyclon, #{view_size => 8, shuffle_length => 3}}}),
    join_all([keep(weft_ct:start_node(cyclon, Opts)) || _ <- lists:seq(1, Count)]);
cluster(client_server, 3) ->
    Client = opts(#{overlay => {client_server, #{role => client}}}),
    Server = opts(#{overlay => {client_server, #{role => server}}}),
    [A, B, C] = [keep(weft_ct:start_node(cs, O)) || O <- [Client, Server, Client]],
    Spec = call(B, weft, node_spec, []),
    [ok = call(N, weft, sync_join, [Spec, 10000]) || N <- [A, C]],
    [A, B, C];
cluster(static, Count) ->
    Nodes = [keep(weft_ct:start_node(static, no_weft)) || _ <- lists:seq(1, Count)],
    Ports = weft_ct:free_ports(length(Nodes)),
    Specs = [#{name => node_of(N), listen_addrs => [#{ip => {127, 0, 0, 1}, port => P}]}
             || {N, P} <- lists:zip(Nodes, Ports)],
    [ok = call(N, weft, start, [opts(#{listen => {{127, 0, 0, 1}, P}, overlay => {static, Specs}})])
     || {N, P} <- lists:zip(Nodes, Ports)],
    Nodes.

join_all([First | Rest] = Nodes) ->
    Spec = call(First, weft, node_spec, []),
    [ok = call(N, weft, sync_join, [Spec, 10000]) || N <- Rest],
    Nodes.

%% What `members()' on N shows once the cluster is up: everyone, except on
%% a client of client-server (itself and the server).
expected(Config, N, [A, B, C]) ->
    case proplists:get_value(overlay, Config) of
        client_server when N =/= B -> lists:sort([node_of(N), node_of(B)]);
        _ -> lists:sort([node_of(X) || X <- [A, B, C]])
    end.

call(N, M, F, A) ->
    weft_ct:call(N, M, F, A).

node_of(#{node := Node}) -> Node.

%%% Cases

%% Every node to every other, on every channel, by name and by pid (an
%% echo replies to the pid it got inside the message).
forward_between_every_pair(Config) ->
    Nodes = cluster(Config),
    [begin
         call(N, weft_ct, collector, [inbox]),
         call(N, weft_ct, echo, [echo])
     end || N <- Nodes],
    Channels = [default, gossip, vnode],
    Pairs = [{X, Y} || X <- Nodes, Y <- Nodes, X =/= Y],
    [begin
         InboxX = call(X, weft_ct, whereis_name, [inbox]),
         [begin
              ok = call(X, weft, forward, [node_of(Y), inbox, {from, node_of(X), Ch}, #{channel => Ch}]),
              ok = call(X, weft, forward, [node_of(Y), echo, {InboxX, Ch, Ch}, #{channel => Ch}])
          end || Ch <- Channels]
     end || {X, Y} <- Pairs],
    [begin
         Others = [node_of(X) || X <- Nodes, X =/= Y],
         Want = lists:sort([{from, X, Ch} || X <- Others, Ch <- Channels]
                           ++ [{echo, X, Ch} || X <- Others, Ch <- Channels]),
         ?assertEqual(Want, lists:sort(call(Y, weft_ct, collected, [inbox, length(Want)])))
     end || Y <- Nodes],
    %% and by a pid of the other node
    [A, _, C] = Nodes,
    InboxC = call(C, weft_ct, whereis_name, [inbox]),
    ok = call(A, weft, forward, [InboxC, by_pid, #{channel => vnode}]),
    ?assert(lists:member(by_pid, call(C, weft_ct, collected, [inbox, 13]))),
    ok.

%% 5,000 messages over 32 keys from A to C: per key, in order, none lost.
order_per_sender_and_key(Config) ->
    [A, _, C] = cluster(Config),
    {Count, Keys} = {5000, 32},
    call(C, weft_ct, collector, [inbox]),
    ok = call(A, weft_ct, send_many, [node_of(C), inbox, vnode, Count, Keys]),
    Got = call(C, weft_ct, collected, [inbox, Count]),
    ?assertEqual(Count, length(Got)),
    [?assertEqual([S || S <- lists:seq(1, Count), S rem Keys =:= K], [S || {K1, S} <- Got, K1 =:= K])
     || K <- lists:seq(0, Keys - 1)],
    ok.

%% One sender's small and large (1 MiB) messages to C arrive in the order
%% sent.
small_and_large_in_order(Config) ->
    [A, _, C] = cluster(Config),
    call(C, weft_ct, collector, [inbox, fun({I, Bin}) -> {I, byte_size(Bin)} end]),
    Sizes = [case I rem 5 of 0 -> 1 bsl 20; _ -> 100 end || I <- lists:seq(1, 40)],
    Send = fun() ->
                   [ok = weft:forward(node_of(C), inbox, {I, binary:copy(<<"x">>, S)}, #{channel => default})
                    || {I, S} <- lists:zip(lists:seq(1, 40), Sizes)],
                   ok
           end,
    ok = call(A, erlang, apply, [Send, []]),
    ?assertEqual(lists:zip(lists:seq(1, 40), Sizes), call(C, weft_ct, collected, [inbox, 40])),
    ok.

%% Node events: a watcher on every node sees nodeup for each node it
%% connects to; when C is killed, each node that saw C up sees it down.
node_events(Config) ->
    Nodes = [A, B, C] = cluster(Config),
    %% the watchers subscribe after the cluster is up: nodeup is not
    %% replayed, so they see nothing until something changes
    [call(N, weft_ct, watcher, []) || N <- [A, B]],
    weft_ct:kill_node(C),
    weft_ct:untrack(C),
    NodeC = node_of(C),
    Saw = [N || N <- [A, B], lists:member(NodeC, expected(Config, N, Nodes))],
    ?assertNotEqual([], Saw),
    [weft_ct:wait_until({nodedown, node_of(N)},
                        fun() -> lists:member({nodedown, NodeC}, call(N, weft_ct, events, [])) end)
     || N <- Saw],
    %% the others stay up with each other
    Left = [X || X <- [A, B], X =/= C],
    [?assert(lists:member(node_of(Y), call(X, weft, members, []))) || X <- Left, Y <- Left,
                                                                      lists:member(node_of(Y), expected(Config, X, Nodes))],
    ok.
