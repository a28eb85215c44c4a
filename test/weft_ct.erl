%% @doc Helpers for weft's common_test suites: start real peer nodes (OTP's
%% `peer', controlled over standard I/O so that the nodes have names but no
%% Distributed Erlang connection to anyone), and small processes that run on
%% them to collect what arrives.
-module(weft_ct).

-export([start_node/2, start_node/3, start_node_named/2, start_node_named/3, stop_node/1,
         kill_node/1, call/4, wait_until/2, wait_until/3]).
%% Run on the peers:
-export([collect/1, collector/1, collector/2, mixed_senders/5, collected/1, collected/2, echo/1, watcher/0, events/0,
         whereis_name/1, port/0, send_many/5, send_many/6, capture_logs/0, logs/0, capture_errors/0, errors/0,
         capture_all/0, all_logs/0, mixed_round_trip/3,
         bulk_stream/4, bulk_seqs/1, send_seqs/6, send_mixed_keys/6, send_big_seqs/7, in_turn/1,
         register_callbacks/1, stream_start/4, stream_start/5, stream_stop/1, count_collector/1, count/1,
         count_other/1, order_checker/1, order_checked/1, key_flood/6,
         hold_pollers/0, release_pollers/0, sync_join_waiters/0]).
%% logger handler callback:
-export([log/2, free_ports/1, send_new_atoms/4, send_large_with_new_atom/3,
         send_new_exports/4, big_then_small/4, buffer_keeper/2, keeper_state/1, keeper_drop/1]).
%% Shared by the suites:
-export([test_opts/1, track/1, untrack/1, tracked/0, stop_tracked/0]).
-export([start_senders/6, senders_result/1, count_room_rings/0, room_rings/0]).
%% A peer of our own making, for attacks that need the cookie:
-export([fake_peer/5, fake_peer/6, fake_spec/2, raw_frame/2, recv_raw/1, str8/1]).

-define(BOOT_TIMEOUT, 30000).

%% @doc Start a named peer node and weft on it with `Opts'.
start_node(Prefix, Opts) ->
    start_node(Prefix, Opts, []).

start_node(Prefix, Opts, Extra) ->
    Name = peer:random_name(Prefix),
    start_named(Name, Opts, Extra).

%% @doc Start a peer node with exactly this name (to restart a node).
start_node_named(Name, Opts) ->
    start_named(Name, Opts, []).

%% @doc As {@link start_node_named/2}, with `Env' (`[{Var, Value}]') in
%% the node's OS environment.
start_node_named(Name, Opts, Env) ->
    start_named(Name, Opts, [], Env).

start_named(Name, Opts, Extra) ->
    start_named(Name, Opts, Extra, []).

start_named(Name, Opts, Extra, Env) ->
    Paths = [filename:dirname(code:which(weft)), filename:dirname(code:which(?MODULE))],
    Args = lists:append([["-pa", P] || P <- Paths]) ++ Extra,
    {ok, Peer, Node} = peer:start(#{name => Name,
                                    connection => standard_io,
                                    args => Args,
                                    env => Env,
                                    wait_boot => ?BOOT_TIMEOUT}),
    case Opts of
        no_weft -> ok;
        _ -> ok = peer:call(Peer, weft, start, [Opts])
    end,
    #{peer => Peer, node => Node, name => Name}.

%% @doc Stop a peer node (its VM ends).
stop_node(#{peer := Peer}) ->
    catch peer:stop(Peer),
    ok.

%% @doc Kill the peer's OS process with SIGKILL: no goodbye of any kind.
kill_node(#{peer := Peer} = N) ->
    OsPid = peer:call(Peer, os, getpid, []),
    os:cmd("kill -9 " ++ OsPid),
    catch peer:stop(Peer),
    N.

%% @doc `peer:call' with a longer timeout.
call(#{peer := Peer}, M, F, A) ->
    peer:call(Peer, M, F, A, 60000).

%% @doc Poll `Fun' until it returns true (default: 20 s).
wait_until(What, Fun) ->
    wait_until(What, Fun, 20000).

wait_until(What, Fun, Timeout) ->
    Deadline = erlang:monotonic_time(millisecond) + Timeout,
    poll(What, Fun, Deadline).

poll(What, Fun, Deadline) ->
    case catch Fun() of
        true -> ok;
        Other ->
            case erlang:monotonic_time(millisecond) > Deadline of
                true -> ct:fail({timeout_waiting_for, What, Other});
                false -> timer:sleep(50), poll(What, Fun, Deadline)
            end
    end.

%%% On the peers

%% @doc A registered process that keeps every message it gets, in order.
collector(Name) ->
    Pid = spawn(fun() -> collect([]) end),
    register(Name, Pid),
    Pid.

%% @doc As {@link collector/1}, keeping `Fun(Msg)' instead of each message.
collector(Name, Fun) ->
    Pid = spawn(fun() -> collect(Fun, []) end),
    register(Name, Pid),
    Pid.

collect(Fun, Acc) ->
    receive
        {'$collected', From} -> From ! {'$collected', lists:reverse(Acc)}, collect(Fun, Acc);
        Msg -> collect(Fun, [Fun(Msg) | Acc])
    end.

%% @doc Keep every message, in order, and answer `{'$collected', From}'
%% (see {@link collected/1}): the loop of a collecting process.
collect(Acc) ->
    receive
        {'$collected', From} -> From ! {'$collected', lists:reverse(Acc)}, collect(Acc);
        Msg -> collect([Msg | Acc])
    end.

%% @doc What `Name' has collected, waiting until it has `N' messages (20 s).
collected(Name) ->
    Name ! {'$collected', self()},
    receive {'$collected', L} -> L after 5000 -> timeout end.

collected(Name, N) ->
    Deadline = erlang:monotonic_time(millisecond) + 20000,
    collected_loop(Name, N, Deadline).

collected_loop(Name, N, Deadline) ->
    L = collected(Name),
    case length(L) >= N orelse erlang:monotonic_time(millisecond) > Deadline of
        true -> L;
        false -> timer:sleep(20), collected_loop(Name, N, Deadline)
    end.

%% @doc A process registered as `Name' that receives `{I, Binary}'
%% messages of `Size' bytes, each byte `I rem 256': it keeps the first
%% one's binary (a sub-binary of its frame's buffer), checks every later one
%% and drops it at once (collecting its garbage, so that the frame's buffer
%% is freed before the next message comes).
buffer_keeper(Name, Size) ->
    Pid = spawn(fun() -> keeper(Size, none, 0, 0) end),
    register(Name, Pid),
    Pid.

keeper(Size, Kept, Checked, Bad) ->
    receive
        {'$keeper', From} ->
            KeptOk = Kept =/= none andalso Kept =:= binary:copy(<<1>>, Size),
            From ! {'$keeper', #{checked => Checked, bad => Bad, kept_ok => KeptOk}},
            keeper(Size, Kept, Checked, Bad);
        {'$keeper_drop', From} ->
            keeper_dropped(From, Size, Checked, Bad);
        {1, Bin} when Kept =:= none ->
            keeper(Size, Bin, Checked, Bad);
        {I, Bin} ->
            Ok = Bin =:= binary:copy(<<(I rem 256)>>, Size),
            erlang:garbage_collect(),
            keeper(Size, Kept, Checked + 1, Bad + (case Ok of true -> 0; false -> 1 end))
    end.

%% (the kept binary is no longer live here: the collection frees it)
keeper_dropped(From, Size, Checked, Bad) ->
    erlang:garbage_collect(),
    From ! {'$keeper_drop', ok},
    keeper(Size, dropped, Checked, Bad).

%% @doc What the keeper `Name' saw: `#{checked, bad, kept_ok}'.
keeper_state(Name) ->
    Name ! {'$keeper', self()},
    receive {'$keeper', S} -> S after 5000 -> timeout end.

%% @doc Make the keeper `Name' drop the binary it kept.
keeper_drop(Name) ->
    Name ! {'$keeper_drop', self()},
    receive {'$keeper_drop', ok} -> ok after 5000 -> timeout end.

%% @doc `{big, Binary}' of `Size' bytes to `Name' on `Node' on `Channel',
%% then, once that `forward' returned, `small' from another process.
big_then_small(Node, Name, Channel, Size) ->
    Big = binary:copy(<<"b">>, Size),
    ok = weft:forward(Node, Name, {big, Big}, #{channel => Channel}),
    Self = self(),
    spawn(fun() -> Self ! {small, weft:forward(Node, Name, small, #{channel => Channel})} end),
    receive {small, R} -> R end.

%% @doc Forward `Count' messages to `Name' on `Node', each a list of
%% `PerMsg' atoms made here for it (new to a node that never saw them).
send_new_atoms(Node, Name, Count, PerMsg) ->
    Tag = integer_to_list(erlang:unique_integer([positive])),
    lists:foreach(
      fun(I) ->
              Atoms = [list_to_atom(lists:concat(["weft_ct_", Tag, "_", I, "_", J]))
                       || J <- lists:seq(1, PerMsg)],
              ok = weft:forward(Node, Name, Atoms, #{})
      end, lists:seq(1, Count)).

%% @doc Forward `Count' messages to `Name' on `Node', each a list of
%% `PerMsg' distinct external funs `fun M:F/A' made of atoms every node has
%% (OTP modules, common words), most of them new export entries where they
%% arrive.
send_new_exports(Node, Name, Count, PerMsg) ->
    Mods = [lists, maps, erlang, ets, io, string, binary, gen_server, supervisor, application,
            code, file, os, timer, proplists, sets, dict, queue, filename, unicode],
    Funs = [ok, error, true, false, undefined, badarg, infinity, normal, value, none,
            all, any, name, node, self, data, info, list, map, key, port, pid, ref, time, type],
    Exports = [{M, F, A} || M <- Mods, F <- Funs, A <- lists:seq(0, 255)],
    send_exports(Node, Name, Count, PerMsg, Exports).

send_exports(_Node, _Name, 0, _PerMsg, _Exports) ->
    ok;
send_exports(Node, Name, Count, PerMsg, Exports) ->
    {These, Rest} = lists:split(PerMsg, Exports),
    ok = weft:forward(Node, Name, [erlang:make_fun(M, F, A) || {M, F, A} <- These], #{}),
    send_exports(Node, Name, Count - 1, PerMsg, Rest).

%% @doc Forward to `Name' on `Node' one message of `Bytes' bytes that
%% carries one atom made here for it; returns the atom.
send_large_with_new_atom(Node, Name, Bytes) ->
    Atom = list_to_atom("weft_ct_large_" ++ integer_to_list(erlang:unique_integer([positive]))),
    ok = weft:forward(Node, Name, {Atom, binary:copy(<<7>>, Bytes)}, #{}),
    Atom.

%% @doc A registered process answering `{From, Channel, X}' with
%% `{echo, node(), X}' forwarded back to `From' on `Channel'.
echo(Name) ->
    Pid = spawn(fun Loop() ->
                        receive
                            {From, Channel, X} ->
                                ok = weft:forward(From, {echo, node(), X}, #{channel => Channel}),
                                Loop()
                        end
                end),
    register(Name, Pid),
    Pid.

%% @doc A registered `weft_watcher' subscribed to nodeup/nodedown.
watcher() ->
    Self = self(),
    Pid = spawn(fun() ->
                        ok = weft:monitor_nodes(true),
                        Self ! ready,
                        collect([])
                end),
    receive ready -> ok end,
    register(weft_watcher, Pid),
    Pid.

%% @doc What the watcher has seen.
events() ->
    collected(weft_watcher).

whereis_name(Name) ->
    whereis(Name).

%% @doc `N' distinct TCP ports free on 127.0.0.1 a moment ago, below the
%% kernel's ephemeral range (32768-60999 by default): a port from listen(0)
%% could be handed out again, as the local port of an outgoing connection,
%% before the test binds it. (The bench has the same picker: it cannot
%% call test code.)
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

%% @doc The port weft listens on.
port() ->
    #{listen_addrs := [#{port := Port} | _]} = weft:node_spec(),
    Port.

%% @doc Forward `Count' messages `{Key, Seq}' (Key = Seq rem Keys) to
%% `{Name, Node}' on `Channel', each with its key as partition key.
send_many(Node, Name, Channel, Count, Keys) ->
    send_many(Node, Name, Channel, Count, Keys, integer).

%% @doc As {@link send_many/5}; with `tuple', the partition key is
%% `{key, Key}' (hashed) rather than the integer (which picks a lane).
send_many(Node, Name, Channel, Count, Keys, KeyKind) ->
    PKey = fun(K) -> case KeyKind of integer -> K; tuple -> {key, K} end end,
    [ok = weft:forward(Node, Name, {Seq rem Keys, Seq}, #{channel => Channel, partition_key => PKey(Seq rem Keys)})
     || Seq <- lists:seq(1, Count)],
    ok.

%% @doc As {@link send_many/5}, for the sequence numbers `From'..`To'.
send_seqs(Node, Name, Channel, From, To, Keys) ->
    [ok = weft:forward(Node, Name, {Seq rem Keys, Seq}, #{channel => Channel, partition_key => Seq rem Keys})
     || Seq <- lists:seq(From, To)],
    ok.

%% @doc A process `Name' that checks messages `{Sender, Key, Seq, _}': per
%% sender and key, each `Seq' must be above the last one seen (gaps are
%% allowed: messages lost with a connection). See {@link order_checked/1}.
order_checker(Name) ->
    Pid = spawn(fun() -> order_loop(#{}, 0, []) end),
    register(Name, Pid),
    Pid.

order_loop(Last, N, Late) ->
    receive
        {'$checked', From} ->
            From ! {'$checked', #{received => N, late => length(Late), examples => lists:sublist(Late, 5)}},
            order_loop(Last, N, Late);
        {S, K, Seq, _} ->
            L = maps:get({S, K}, Last, 0),
            Late1 = case Seq =< L of true -> [{S, K, Seq, 'after', L} | Late]; false -> Late end,
            order_loop(Last#{{S, K} => max(L, Seq)}, N + 1, Late1)
    end.

%% @doc What the order checker `Name' saw: `#{received, late, examples}'
%% (`late': messages that came after a later one of the same sender and key).
order_checked(Name) ->
    Name ! {'$checked', self()},
    receive {'$checked', R} -> R after 5000 -> timeout end.

%% @doc `Senders' processes forward `{Sender, Key, Seq, Payload}' to `Name'
%% on `Node' on `Channel' for `Ms' ms, to random keys of `Keys' (the
%% partition key), each Seq one above the last to that key; one message in
%% 500 carries a 70 KB payload (it does not share the shared lane), the
%% others 8 bytes. Returns how many `forward' accepted, once all are done.
key_flood(Node, Name, Channel, Senders, Keys, Ms) ->
    Until = erlang:monotonic_time(millisecond) + Ms,
    Big = binary:copy(<<"L">>, 70000),
    Self = self(),
    Pids = [spawn_link(fun() ->
                               rand:seed(exsss, {S, S, S}),
                               Self ! {flooded, self(), key_flood_loop(Node, Name, Channel, S, Keys, Until, Big, #{}, 0)}
                       end) || S <- lists:seq(1, Senders)],
    lists:sum([receive {flooded, P, N} -> N end || P <- Pids]).

key_flood_loop(Node, Name, Channel, S, Keys, Until, Big, Seqs, Ok) ->
    case erlang:monotonic_time(millisecond) > Until of
        true -> Ok;
        false ->
            K = rand:uniform(Keys),
            Seq = maps:get(K, Seqs, 0) + 1,
            P = case rand:uniform(500) of 1 -> Big; _ -> <<Seq:64>> end,
            case weft:forward(Node, Name, {S, K, Seq, P}, #{channel => Channel, partition_key => K}) of
                ok -> key_flood_loop(Node, Name, Channel, S, Keys, Until, Big, Seqs#{K => Seq}, Ok + 1);
                {error, overloaded} -> timer:sleep(1), key_flood_loop(Node, Name, Channel, S, Keys, Until, Big, Seqs, Ok)
            end
    end.

%% @doc Forward `Count' messages `{Key, Seq, Payload}' to `Name' on `Node'
%% on `Channel', with integer partition key `Seq rem Keys'; every third
%% payload is `BigSize' bytes, the others a few.
send_mixed_keys(Node, Name, Channel, Count, Keys, BigSize) ->
    Big = crypto:strong_rand_bytes(BigSize),
    [ok = weft:forward(Node, Name, {Seq rem Keys, Seq, case Seq rem 3 of 0 -> Big; _ -> <<Seq:32>> end},
                       #{channel => Channel, partition_key => Seq rem Keys})
     || Seq <- lists:seq(1, Count)],
    ok.

%% @doc Apply each `{M, F, A}' in turn, in this one process (so that the
%% messages they forward have one sender, and keep its order).
in_turn(MFAs) ->
    [ok = apply(M, F, A) || {M, F, A} <- MFAs],
    ok.

%% @doc Forward `{Seq rem Keys, Seq, Big}' for each `Seq' in `From'..`To'
%% to `Name' on `Node' on `Channel' (integer partition key `Seq rem Keys'),
%% with `Big' a binary of `BigSize' bytes.
send_big_seqs(Node, Name, Channel, From, To, Keys, BigSize) ->
    Big = crypto:strong_rand_bytes(BigSize),
    [ok = weft:forward(Node, Name, {Seq rem Keys, Seq, Big}, #{channel => Channel, partition_key => Seq rem Keys})
     || Seq <- lists:seq(From, To)],
    ok.

%% @doc Start `Count' processes that each forward one message `{Id, Bin}'
%% (`Size' bytes) to `{Name, Node}' on `Channel', under a coordinator
%% registered as `Tag'; {@link senders_result/1} waits for them. Returns at
%% once.
start_senders(Tag, Node, Name, Channel, Count, Size) ->
    Bin = binary:copy(<<9>>, Size),
    Coordinator = spawn(fun() ->
                                Self = self(),
                                Pids = [spawn(fun() ->
                                                      R = weft:forward(Node, Name, {Id, Bin}, #{channel => Channel}),
                                                      %% (nothing else may reach a sender's mailbox)
                                                      {message_queue_len, Q} = process_info(self(), message_queue_len),
                                                      Self ! {self(), R, Q}
                                              end) || Id <- lists:seq(1, Count)],
                                Results = [receive {P, R, Q} -> {R, Q} end || P <- Pids],
                                receive {result, From} -> From ! {senders, Results} end
                        end),
    register(Tag, Coordinator),
    ok.

%% @doc The results of the senders started as `Tag': `{Result,
%% MessageQueueLen}' each, once all have returned (or `timeout' after 30 s).
senders_result(Tag) ->
    Tag ! {result, self()},
    receive {senders, Results} -> Results after 30000 -> timeout end.

%% @doc Count the `{weft_nif, room}' messages that `weft_room' gets from
%% now on (the transport's word that a watched send queue has room), in a
%% process registered as `weft_ct_rings' that traces it.
count_room_rings() ->
    Room = whereis(weft_room),
    Self = self(),
    Pid = spawn(fun() ->
                        erlang:trace(Room, true, ['receive']),
                        Self ! traced,
                        rings(Room, 0)
                end),
    register(weft_ct_rings, Pid),
    receive traced -> ok end.

rings(Room, N) ->
    receive
        {trace, Room, 'receive', {weft_nif, room}} -> rings(Room, N + 1);
        {trace, _, _, _} -> rings(Room, N);
        {count, From} -> From ! {rings, N}, rings(Room, N)
    end.

%% @doc How many rings {@link count_room_rings/0} has seen.
room_rings() ->
    weft_ct_rings ! {count, self()},
    receive {rings, N} -> N after 5000 -> timeout end.

%% @doc `Senders' processes each forward `PerSender' messages `{Id, Seq,
%% Payload}' to `{Name, Node}' on `Channel' (one lane), every other one with
%% a 300 KB payload, the rest with a few bytes. Returns once all are sent.
mixed_senders(Node, Name, Channel, Senders, PerSender) ->
    Big = crypto:strong_rand_bytes(300 * 1024),
    Self = self(),
    Pids = [spawn_link(fun() ->
                               [ok = weft:forward(Node, Name,
                                                  {Id, Seq, case Seq rem 2 of 0 -> Big; 1 -> <<Seq:32>> end},
                                                  #{channel => Channel})
                                || Seq <- lists:seq(1, PerSender)],
                               Self ! {sent, self()}
                       end)
            || Id <- lists:seq(1, Senders)],
    [receive {sent, P} -> ok end || P <- Pids],
    ok.

%% @doc Echo a message of every kind of term, with a binary of `BigSize'
%% bytes, off the `echo' process on `Node' (see {@link echo/1}) on
%% `Channel'. Returns `ok' if what came back equals what went.
mixed_round_trip(Node, Channel, BigSize) ->
    Big = crypto:strong_rand_bytes(BigSize),
    Term = {self(), make_ref(), fun lists:reverse/1, fun(X) -> {X, Big} end,
            #{Big => [1.5, -7, 1 bsl 80, <<1:3>>], 'ätöm' => "string", key => {}},
            [Big, Big | improper], hd(erlang:ports()), 'λ', <<"small">>},
    ok = weft:forward(Node, echo, {self(), Channel, Term}, #{channel => Channel}),
    receive
        {echo, Node, Term} -> ok;
        {echo, Node, Other} -> {different, Other}
    after 20000 -> timeout
    end.

%% @doc In the background, forward 1 MB messages `{bulk, Seq}' to
%% `{Name, Node}' on `Channel' (partition key 1) for `Ms' milliseconds.
bulk_stream(Node, Name, Channel, Ms) ->
    Until = erlang:monotonic_time(millisecond) + Ms,
    Big = crypto:strong_rand_bytes(1024 * 1024),
    spawn(fun() -> bulk_loop(Node, Name, Channel, Big, Until, 1) end),
    ok.

%% @doc The sequence numbers of the `{bulk, Seq, _}' messages `Name' has
%% collected (not the payloads: those stay on this node).
bulk_seqs(Name) ->
    [Seq || {bulk, Seq, _} <- collected(Name)].

bulk_loop(Node, Name, Channel, Big, Until, Seq) ->
    case erlang:monotonic_time(millisecond) < Until of
        true ->
            ok = weft:forward(Node, Name, {bulk, Seq, Big}, #{channel => Channel, partition_key => 1}),
            timer:sleep(5),
            bulk_loop(Node, Name, Channel, Big, Until, Seq + 1);
        false ->
            ok
    end.

%% @doc In the background, forward `{stream, Seq}' messages with a
%% `Size'-byte payload to `{Name, Node}' as fast as `forward' takes them,
%% until {@link stream_stop/1}. Registered as `Tag'.
stream_start(Node, Name, Size, Tag) ->
    stream_start(Node, Name, Size, Tag, default).

%% @doc As {@link stream_start/4}, on `Channel', each message with its
%% sequence number as partition key (so a channel of many lanes uses them
%% all).
stream_start(Node, Name, Size, Tag, Channel) ->
    Payload = binary:copy(<<5>>, Size),
    Opts = fun(_) when Channel =:= default -> #{};
              (Seq) -> #{channel => Channel, partition_key => Seq}
           end,
    register(Tag, spawn(fun() -> stream_loop(Node, Name, Payload, Opts, 1, 0) end)),
    ok.

stream_loop(Node, Name, Payload, Opts, Seq, Accepted) ->
    receive
        {stop, From} -> From ! {accepted, Accepted}
    after 0 ->
            A = case weft:forward(Node, Name, {stream, Seq, Payload}, Opts(Seq)) of
                    ok -> Accepted + 1;
                    {error, overloaded} -> timer:sleep(1), Accepted;
                    %% weft stopped on this node
                    {error, not_started} -> timer:sleep(1), Accepted
                end,
            stream_loop(Node, Name, Payload, Opts, Seq + 1, A)
    end.

%% @doc Stop the stream `Tag'; returns how many messages `forward' accepted.
stream_stop(Tag) ->
    Tag ! {stop, self()},
    receive {accepted, N} -> N after 20000 -> timeout end.

%% @doc A registered process that counts the stream messages
%% (`{stream, Seq, Payload}', see {@link stream_start/5}) it gets, and
%% apart, any other message.
count_collector(Name) ->
    Pid = spawn(fun() -> count_loop(0, []) end),
    register(Name, Pid),
    Pid.

count_loop(N, Other) ->
    receive
        {'$count', From} -> From ! {'$count', N}, count_loop(N, Other);
        {'$other', From} -> From ! {'$other', lists:reverse(Other)}, count_loop(N, Other);
        {stream, _, _} -> count_loop(N + 1, Other);
        X -> count_loop(N, [X | Other])
    end.

%% @doc How many stream messages the counter `Name' has had.
count(Name) ->
    Name ! {'$count', self()},
    receive {'$count', N} -> N after 5000 -> timeout end.

%% @doc The other messages the counter `Name' has had, in order.
count_other(Name) ->
    Name ! {'$other', self()},
    receive {'$other', L} -> L after 5000 -> timeout end.

%% @doc Hold every poller process of weft on this node (suspended), so
%% that the node reads nothing from its connections (with `io =>
%% schedulers': no connection is read on a thread), until
%% {@link release_pollers/0}. A registered process holds them: a
%% suspension ends with the process that made it.
hold_pollers() ->
    Self = self(),
    Pid = spawn(fun() ->
                        Pollers = [P || {_, P, _, _} <- supervisor:which_children(weft_poller_sup),
                                        is_pid(P)],
                        [true = erlang:suspend_process(P) || P <- Pollers],
                        Self ! {held, self(), length(Pollers)},
                        receive {release, From} ->
                                [true = erlang:resume_process(P) || P <- Pollers],
                                From ! released
                        end
                end),
    register(weft_ct_holder, Pid),
    receive {held, Pid, N} when N > 0 -> ok end.

%% @doc Let the pollers held by {@link hold_pollers/0} run again.
release_pollers() ->
    weft_ct_holder ! {release, self()},
    receive released -> ok after 10000 -> timeout end.

%% @doc The nodes that `sync_join' calls wait for in `weft_server'.
sync_join_waiters() ->
    [N || {N, _, _, _} <- element(5, sys:get_state(weft_server))].

%% @doc Register `on_up' / `on_down' callbacks that report to the
%% collector `callbacks': for any node (arity 1) and for `Node' (arity 0).
register_callbacks(Node) ->
    collector(callbacks),
    ok = weft:on_up(any, fun(N) -> callbacks ! {up, any, N} end),
    ok = weft:on_down(any, fun(N) -> callbacks ! {down, any, N} end),
    ok = weft:on_down(Node, fun() -> callbacks ! {down, Node} end),
    ok = weft:on_up(Node, fun() -> exit(callback_crash_is_only_logged) end),
    ok.

%% @doc Keep every logger event of weft (metadata `weft => true'),
%% formatted, in a collector `weft_logs'.
capture_logs() ->
    collector(weft_logs),
    ok = logger:add_handler(weft_ct_logs, ?MODULE, #{level => all}).

%% @doc The captured log lines.
logs() ->
    collected(weft_logs).

%% @doc Keep every logger event at level error or above (of any
%% application: supervisor and crash reports too) in a collector
%% `error_logs', as `{Level, Domain}'.
capture_errors() ->
    collector(error_logs),
    ok = logger:add_handler(weft_ct_errors, ?MODULE, #{level => error}).

%% @doc The captured `{Level, Domain}' of error events.
errors() ->
    collected(error_logs).

%% @doc Keep every logger event, of any application and at every level
%% (the primary level is set to `all' for it), in a collector `all_logs',
%% as `{Level, Domain, Text}', `Text' the event shortened.
capture_all() ->
    collector(all_logs),
    ok = logger:set_primary_config(level, all),
    ok = logger:add_handler(weft_ct_all, ?MODULE, #{level => all}).

%% @doc The captured `{Level, Domain, Text}' of every event.
all_logs() ->
    collected(all_logs).

%% @private logger handler: forward weft's events to the collector (and
%% error events, or all events, to theirs).
log(#{level := Level, meta := Meta}, #{id := weft_ct_errors}) ->
    catch error_logs ! {Level, maps:get(domain, Meta, [])};
log(#{level := Level, msg := Msg, meta := Meta}, #{id := weft_ct_all}) ->
    Text = lists:flatten(io_lib:format("~0P", [Msg, 12])),
    catch all_logs ! {Level, maps:get(domain, Meta, []), Text};
log(#{msg := Msg, meta := #{weft := true}}, _Config) ->
    Text = case Msg of
               {report, R} -> io_lib:format("~p", [R]);
               {string, S} -> S;
               {Format, Args} -> io_lib:format(Format, Args)
           end,
    catch weft_logs ! lists:flatten(io_lib:format("~ts", [Text]));
log(_, _) ->
    ok.

%%% Shared by the suites

%% @doc The options the suites' nodes start with (three channels, one of
%% 16 lanes; fast heartbeats, redials and gossip), merged with `Extra'.
test_opts(Extra) ->
    maps:merge(#{channels => [default, gossip, #{name => vnode, parallelism => 16}],
                 cookie => <<"weft-test">>,
                 heartbeat_interval => 200, heartbeat_timeout => 1500,
                 reconnect_min_backoff => 50, reconnect_max_backoff => 500,
                 gossip_interval => 200}, Extra).

%% @doc Remember node `N' (in the calling test case's process) to be
%% stopped by {@link stop_tracked/0}. Returns `N'.
track(N) ->
    put(weft_ct_nodes, tracked() ++ [N]),
    N.

%% @doc Forget `N' (it was stopped already).
untrack(N) ->
    put(weft_ct_nodes, tracked() -- [N]),
    ok.

%% @doc The nodes tracked so far.
tracked() ->
    case get(weft_ct_nodes) of undefined -> []; L -> L end.

%% @doc Stop every tracked node (a suite's `end_per_testcase').
stop_tracked() ->
    [stop_node(N) || N <- tracked()],
    erase(weft_ct_nodes),
    ok.

%%% A peer of our own making

%% @doc Connect to the weft node `To' (its name, a binary) listening on
%% `Port' as a peer that knows `Cookie', for lane `{Channel, Index}'
%% (`<<"$control">>' for the control lane), describing itself with `Spec'
%% ({@link fake_spec/2}, which holds its name). Returns `{ok, Socket}' (passive, binary)
%% once welcomed, or `{refused, Body}'. Protocol version 3, as the README's
%% wire section describes it.
fake_peer(Port, Cookie, To, Lane, Spec) ->
    fake_peer(Port, Cookie, To, Lane, Spec, 7).

%% @doc As {@link fake_peer/5}, saying it has the capabilities `Caps' (a
%% bit set: 1 seq_ack, 2 relay, 4 trace, 8 parts, 16 share, 32 share_wait,
%% 64 join_check, 128 signed_refusal).
fake_peer(Port, Cookie, To, {Channel, Index}, Spec, Caps) ->
    {ok, S} = gen_tcp:connect({127, 0, 0, 1}, Port, [binary, {active, false}]),
    Nd = crypto:strong_rand_bytes(32),
    Hello = <<"WEFT", 3:16, 0, Nd/binary, 1, 3:16, Caps:64>>,
    ok = gen_tcp:send(S, raw_frame(0, Hello)),
    {0, <<"WEFT", 3:16, 1, Na:32/binary, _/binary>> = Challenge} = recv_raw(S),
    Auth = <<"WEFT", 3:16, 2, Spec/binary, (str8(To))/binary, (str8(Channel))/binary,
             Index:16>>,
    Proof = proof(Cookie, Nd, Na, [Hello, Challenge, Auth]),
    ok = gen_tcp:send(S, raw_frame(0, <<Auth/binary, Proof/binary>>)),
    case recv_raw(S) of
        {0, <<"WEFT", 3:16, 3, _/binary>>} -> {ok, S};
        {0, Other} -> gen_tcp:close(S), {refused, Other}
    end.

%% @doc A node description for {@link fake_peer/5}: `Name', a random
%% incarnation, a 64 MiB frame limit, an address nobody listens on, and
%% `Channels' (`[{Name, Parallelism}]', binaries).
fake_spec(Name, Channels) ->
    Inc = rand:uniform(1 bsl 62),
    <<(str8(Name))/binary, Inc:64, (64 bsl 20):32, 1, 4, 127, 0, 0, 1, 9:16,
      (length(Channels)):16,
      (iolist_to_binary([[str8(C), <<P:16>>] || {C, P} <- Channels]))/binary>>.

%% @doc A frame by hand: `u32 length | u8 kind | body'.
raw_frame(Kind, Body) ->
    <<(byte_size(Body) + 1):32, Kind:8, Body/binary>>.

%% @doc The next frame from socket `S' (passive): `{Kind, Body}'.
recv_raw(S) ->
    {ok, <<Len:32, Kind:8>>} = gen_tcp:recv(S, 5, 10000),
    case Len - 1 of
        0 -> {Kind, <<>>};
        N -> {ok, Body} = gen_tcp:recv(S, N, 10000), {Kind, Body}
    end.

%% @doc A string with its length in one byte before it.
str8(B) -> <<(byte_size(B)):8, B/binary>>.

%% The dialer's proof: HMAC-SHA256 keyed by the cookie over a label, both
%% nonces, and each part with its length.
proof(Cookie, Nd, Na, Parts) ->
    Label = <<"weft-dialer-v3", 0, 0>>,
    crypto:mac(hmac, sha256, Cookie,
               [Label, Nd, Na | [[<<(byte_size(P)):32>>, P] || P <- Parts]]).
