%% @doc A one-way stream of 100-byte messages from one process to one
%% process on another node, with Distributed Erlang or with weft (4 lanes on
%% channel `vnode', a partition key per message). Three runs of 200,000
%% messages each; the clock stops when the receiver has counted them all.
%%
%% ```
%% make bench-build
%% erl -sname stream -noshell -pa _build/default/lib/weft/ebin -pa _build/bench \
%%     -eval 'weft_stream:main([disterl])'      % or auto, threads, schedulers (weft's io)
%% '''
-module(weft_stream).

-export([main/1]).
%% Run on the receiving node:
-export([counter/2]).

-define(COUNT, 200000).
-define(RUNS, 3).

main([Mode]) ->
    Ebin = filename:dirname(code:which(weft)),
    Here = filename:dirname(code:which(?MODULE)),
    {ok, Peer, B} = peer:start(#{name => peer:random_name(), connection => standard_io,
                                 args => ["-pa", Ebin, "-pa", Here]}),
    Payload = binary:copy(<<"x">>, 100),
    Send = case Mode of
               disterl ->
                   true = net_kernel:connect_node(B),
                   fun(Msg, _Key) -> {weft_stream_counter, B} ! Msg end;
               Io ->
                   Opts = #{channels => [default, #{name => vnode, parallelism => 4}],
                            cookie => <<"weft-stream">>, io => Io},
                   ok = weft:start(Opts),
                   ok = peer:call(Peer, weft, start, [Opts]),
                   ok = peer:call(Peer, weft, sync_join, [weft:node_spec(), 10000]),
                   fun(Msg, Key) ->
                           fwd(B, Msg, #{channel => vnode, partition_key => Key})
                   end
           end,
    Rates = [begin
                 ok = peer:call(Peer, ?MODULE, counter, [Mode, ?COUNT]),
                 T0 = erlang:monotonic_time(microsecond),
                 Send({start, self()}, 0),
                 [Send(Payload, I) || I <- lists:seq(1, ?COUNT)],
                 receive counted -> ok after 60000 -> error(timeout) end,
                 round(?COUNT / ((erlang:monotonic_time(microsecond) - T0) / 1.0e6))
             end || _ <- lists:seq(1, ?RUNS)],
    io:format("~p: ~p msg/s~n", [Mode, Rates]),
    peer:stop(Peer),
    halt(0).

%% weft:forward/4, retried after 1 ms while the send queue is full
%% (`{error, overloaded}'; 200,000 x 100 bytes stays far below the default
%% bound, so this should not happen); any other error crashes the run.
fwd(B, Msg, Opts) ->
    case weft:forward(B, weft_stream_counter, Msg, Opts) of
        ok -> ok;
        {error, overloaded} -> timer:sleep(1), fwd(B, Msg, Opts)
    end.

%% A fresh counter, registered; it answers `counted' to the starter by the
%% same transport.
counter(Mode, Count) ->
    catch unregister(weft_stream_counter),
    Pid = spawn(fun() -> receive {start, From} -> count(Mode, From, Count) end end),
    true = register(weft_stream_counter, Pid),
    ok.

count(disterl, From, 0) -> From ! counted;
count(_, From, 0) -> ok = weft:forward(From, counted);
count(Mode, From, N) -> receive _ -> count(Mode, From, N - 1) end.
