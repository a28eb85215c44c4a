%% @doc `make demo': a local 3-node weft cluster.
%%
%% This node and two peer nodes (OTP's `peer', with no Distributed Erlang
%% between them) start weft with three channels, join, exchange messages on
%% every channel, print each node's members and a throughput figure, then
%% stop. Exits 0 on success, 1 on any failure.
-module(weft_demo).

-export([main/0]).
%% Run on the peers:
-export([counter/2, echo/0]).

-define(CHANNELS, [default, gossip, #{name => vnode, parallelism => 4}]).
-define(SMALL, 100000).
-define(LARGE, 200).

main() ->
    try run() of
        ok -> halt(0)
    catch
        Class:Reason:Stack ->
            io:format("demo failed: ~p:~p~n~p~n", [Class, Reason, Stack]),
            halt(1)
    end.

run() ->
    Opts = #{channels => ?CHANNELS, cookie => <<"weft-demo">>},
    ok = weft:start(Opts),
    Ebin = filename:dirname(code:which(weft)),
    Demo = filename:dirname(code:which(?MODULE)),
    Peers = [begin
                 {ok, Peer, Node} = peer:start(#{name => Name, connection => standard_io,
                                                 args => ["-pa", Ebin, "-pa", Demo]}),
                 ok = peer:call(Peer, weft, start, [Opts]),
                 {Peer, Node}
             end || Name <- [weft_demo_b, weft_demo_c]],
    [{PB, B}, {PC, C}] = Peers,
    io:format("started ~p, ~p and ~p~n", [node(), B, C]),
    %% B and C join this node; gossip tells them about each other.
    Spec = weft:node_spec(),
    ok = peer:call(PB, weft, sync_join, [Spec, 10000]),
    ok = peer:call(PC, weft, sync_join, [Spec, 10000]),
    All = lists:sort([node(), B, C]),
    wait(fun() -> weft:members() =:= All andalso
                      peer:call(PB, weft, members, []) =:= All andalso
                      peer:call(PC, weft, members, []) =:= All end),
    [io:format("members on ~p: ~p~n", [N, M])
     || {N, M} <- [{node(), weft:members()},
                   {B, peer:call(PB, weft, members, [])},
                   {C, peer:call(PC, weft, members, [])}]],
    %% A round trip on every channel: C's echo answers to our pid.
    _ = peer:call(PC, ?MODULE, echo, []),
    [begin
         ok = weft:forward(C, weft_demo_echo, {self(), Ch, hello}, #{channel => Ch}),
         receive {echo, C, Ch, hello} -> io:format("round trip on ~p: ok~n", [Ch])
         after 5000 -> error({no_echo, Ch})
         end
     end || Ch <- [default, gossip, vnode]],
    %% Throughput, this node to B: small messages on vnode (4 lanes, keyed),
    %% then 512 KB messages.
    SmallRate = blast(PB, B, ?SMALL, binary:copy(<<"x">>, 100)),
    LargeRate = blast(PB, B, ?LARGE, binary:copy(<<"y">>, 512 * 1024)),
    io:format("throughput ~p -> ~p on vnode: ~s msg/s with 100 B messages, ~s MB/s with 512 KB messages~n",
              [node(), B, fmt(SmallRate), fmt(LargeRate * 0.5)]),
    %% weft stops first on each node: the others see it go as `stopped'
    %% (a notice), not as a failed connection.
    [ok = peer:call(P, weft, stop, []) || {P, _} <- Peers],
    [peer:stop(P) || {P, _} <- Peers],
    weft:stop(),
    ok.

%% Send `Count' messages to a counter on the peer; rate in messages/s.
blast(Peer, Node, Count, Payload) ->
    Name = list_to_atom("weft_demo_counter_" ++ integer_to_list(Count)),
    _ = peer:call(Peer, ?MODULE, counter, [Name, Count]),
    T0 = erlang:monotonic_time(microsecond),
    ok = weft:forward(Node, Name, {start, self()}, #{channel => vnode, partition_key => 0}),
    send_n(Node, Name, Count, Payload),
    receive {counted, Name, Count} -> ok after 60000 -> error({timeout, Name}) end,
    Count / ((erlang:monotonic_time(microsecond) - T0) / 1.0e6).

send_n(_Node, _Name, 0, _Payload) ->
    ok;
send_n(Node, Name, N, Payload) ->
    case weft:forward(Node, Name, Payload, #{channel => vnode, partition_key => N}) of
        ok ->
            send_n(Node, Name, N - 1, Payload);
        {error, overloaded} ->
            %% The send queue to Node is full (send_queue_limit): back off.
            timer:sleep(1),
            send_n(Node, Name, N, Payload)
    end.

%% Runs on the receiving peer: count `Count' messages, then report.
counter(Name, Count) ->
    Pid = spawn(fun() ->
                        receive {start, From} -> count(Name, From, Count) end
                end),
    register(Name, Pid),
    ok.

count(Name, From, Left) ->
    count(Name, From, Left, 0).

count(Name, From, 0, Seen) ->
    weft:forward(From, {counted, Name, Seen});
count(Name, From, Left, Seen) ->
    receive _ -> count(Name, From, Left - 1, Seen + 1) end.

%% Runs on a peer: answers `{From, Channel, X}' on the same channel.
echo() ->
    Pid = spawn(fun Loop() ->
                        receive
                            {From, Ch, X} ->
                                weft:forward(From, {echo, node(), Ch, X}, #{channel => Ch}),
                                Loop()
                        end
                end),
    register(weft_demo_echo, Pid),
    ok.

wait(F) -> wait(F, 100).
wait(_F, 0) -> error(timeout);
wait(F, N) ->
    case F() of
        true -> ok;
        false -> timer:sleep(100), wait(F, N - 1)
    end.

fmt(X) when X >= 100 -> integer_to_list(round(X));
fmt(X) -> float_to_list(X, [{decimals, 1}]).
