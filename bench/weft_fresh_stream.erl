%% @doc `make demo''s throughput step, many times, each on new nodes: a
%% lane's connection starts on a scheduler and moves to a thread when its
%% first large frames come (`io => auto'), so every run crosses that move.
%% Prints each run's 512 KB rate and the longest gap between two deliveries
%% at the receiver, then how many runs had a gap of 100 ms or more (a stall)
%% and the median rate.
%%
%% ```
%% make bench-build
%% erl -sname fresh -noshell -pa _build/default/lib/weft/ebin -pa _build/bench \
%%     -eval 'weft_fresh_stream:main([40])'
%% '''
%%
%% Per run: this node and a peer (OTP's `peer', no Distributed Erlang
%% between them) start weft with a `vnode' channel of 4 lanes and join;
%% 100,000 messages of 100 B, then 200 of 512 KB, on keys that spread them
%% over the lanes, to a process on the peer that counts them; then both
%% stop.
-module(weft_fresh_stream).

-export([main/1, counter/2]).

-define(LARGE, 200).
-define(STALL_US, 100000).

main([Runs]) when is_integer(Runs), Runs >= 1 ->
    Results = [run(I) || I <- lists:seq(1, Runs)],
    Stalls = length([G || {_, G} <- Results, G >= ?STALL_US]),
    Rates = lists:sort([R || {R, _} <- Results]),
    io:format("~p runs: ~p with a gap of ~p ms or more; median ~p MB/s~n",
              [Runs, Stalls, ?STALL_US div 1000, lists:nth((Runs + 1) div 2, Rates)]),
    halt(0).

run(I) ->
    Opts = #{channels => [default, #{name => vnode, parallelism => 4}], cookie => <<"fresh">>},
    ok = weft:start(Opts),
    Ebin = filename:dirname(code:which(weft)),
    Here = filename:dirname(code:which(?MODULE)),
    {ok, Peer, B} = peer:start(#{name => peer:random_name(), connection => standard_io,
                                 args => ["-pa", Ebin, "-pa", Here]}),
    ok = peer:call(Peer, weft, start, [Opts]),
    ok = peer:call(Peer, weft, sync_join, [weft:node_spec(), 10000]),
    _ = blast(Peer, B, 100000, binary:copy(<<"x">>, 100)),
    {Rate, Gaps} = blast(Peer, B, ?LARGE, binary:copy(<<"y">>, 512 * 1024)),
    MBs = round(Rate * 0.5),
    Gap = lists:max(Gaps),
    io:format("~p ~p MB/s, longest gap ~p us~n", [I, MBs, Gap]),
    ok = peer:call(Peer, weft, stop, []),
    peer:stop(Peer),
    ok = weft:stop(),
    {MBs, Gap}.

%% Send `Count' messages to a counter on the peer: {messages/s, the gaps
%% between deliveries in us}.
blast(Peer, Node, Count, Payload) ->
    Name = list_to_atom("fresh_counter_" ++ integer_to_list(erlang:unique_integer([positive]))),
    ok = peer:call(Peer, ?MODULE, counter, [Name, Count]),
    T0 = erlang:monotonic_time(microsecond),
    ok = weft:forward(Node, Name, {start, self()}, #{channel => vnode, partition_key => 0}),
    send_n(Node, Name, Count, Payload),
    receive {counted, Name, Gaps} -> ok after 60000 -> Gaps = error({timeout, Name}) end,
    {Count / ((erlang:monotonic_time(microsecond) - T0) / 1.0e6), Gaps}.

send_n(_Node, _Name, 0, _Payload) ->
    ok;
send_n(Node, Name, N, Payload) ->
    case weft:forward(Node, Name, Payload, #{channel => vnode, partition_key => N}) of
        ok ->
            send_n(Node, Name, N - 1, Payload);
        {error, overloaded} ->
            timer:sleep(1),
            send_n(Node, Name, N, Payload)
    end.

%% Runs on the peer: count `Count' messages, then send the gaps back.
counter(Name, Count) ->
    Pid = spawn(fun() ->
                        receive
                            {start, From} -> count(From, Name, Count, erlang:monotonic_time(microsecond), [])
                        end
                end),
    true = register(Name, Pid),
    ok.

count(From, Name, 0, _, Gaps) ->
    weft:forward(From, {counted, Name, Gaps});
count(From, Name, Left, Last, Gaps) ->
    receive
        _ ->
            Now = erlang:monotonic_time(microsecond),
            count(From, Name, Left - 1, Now, [Now - Last | Gaps])
    end.
