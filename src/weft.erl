%% @doc weft: the public API.
%%
%% A distribution layer for the BEAM with named channels, parallel lanes and
%% affinity, whose transport runs in Rust. The API mirrors Partisan's peer
%% service manager: {@link join/1}, {@link leave/0}, {@link members/0},
%% {@link forward/4}. Swap `erlang:send/2' for {@link forward/2}.
%%
%% Sending never raises and never blocks a scheduler: it enqueues and
%% returns (on a channel configured with `overload => wait', it waits in
%% the calling process while the destination's queue is full; see
%% `{error, overloaded}' below). A message to a node that is not a member is dropped and counted
%% in {@link info/0} (as `!' drops a message to an unreachable node); a
%% message to a node that {@link join/1} was called for waits until that
%% node is up, or is dropped and counted when it is given up on. Every
%% message `forward' accepted is either written to its connection or counted
%% in `info()' under `dropped' with the reason. Errors the sender can act on
%% are returned as `{error, Reason}':
%% <ul>
%% <li>`{error, {unknown_channel, C}}': `C' is not one of this node's channels;</li>
%% <li>`{error, {too_large, Size, Max}}': the encoded message (`Size' bytes)
%%     exceeds `Max', the smaller of this node's `max_frame_size' and the
%%     destination's (peers tell each other their limits at the handshake);</li>
%% <li>`{error, overloaded}': the send queue of the destination
%%     (`send_queue_limit' bytes) or of all destinations
%%     (`send_queue_total_limit') is full; retry later or shed load. A channel
%%     configured with `overload => drop_oldest' drops its oldest queued
%%     messages that have not started on the wire to make room instead
%%     (counted as `dropped.overflow'); on one configured with `overload =>
%%     wait' the calling process waits for room (woken when the transport
%%     has written or dropped enough to make it; senders to one
%%     destination in a random order) and gets this error only once the channel's
%%     `wait_timeout' (ms, default 5000, or `infinity') has passed;</li>
%% <li>`{error, not_started}': the weft application is not running (or
%% it stops while the call waits for it: a call never raises because
%% {@link stop/0} runs at the same time);</li>
%% <li>`{error, {badarg, X}}': `X' is not a destination or an options map or
%% proper list;</li>
%% <li>`{error, {badarg, {unknown_option, Key}}}': options other than
%% `channel' and `partition_key'.</li>
%% </ul>
-module(weft).

-export([start/0, start/1, stop/0]).
-export([node_spec/0, join/1, sync_join/2, leave/0, leave/1, members/0, nodes/0]).
-export([forward/2, forward/3, forward/4]).
-export([monitor_nodes/1, monitor_nodes/2, on_up/2, on_down/2, info/0]).

-export_type([node_spec/0, join_spec/0, forward_opts/0, dest/0]).

-type node_spec() :: #{name := node(),
                       listen_addrs := [#{ip := inet:ip_address(), port := inet:port_number()}],
                       channels => [#{name := atom(), parallelism := pos_integer()}],
                       incarnation => non_neg_integer(),
                       max_frame_size => pos_integer()}.
%% What {@link node_spec/0} returns and {@link join/1} takes (only `name'
%% and `listen_addrs' are needed: the handshake tells the rest).
%% `incarnation' is a random 64-bit number drawn at every start and every
%% leave: a restarted node is a new incarnation whatever its clock says.

-type join_spec() :: #{name := node(),
                       listen_addrs := [#{ip := inet:ip_address() | string() | binary(),
                                          port := 1..65535}],
                       channels => [#{name := atom(), parallelism := 1..256}]}.
%% What {@link join/1} and {@link sync_join/2} take: a {@link node_spec()},
%% or one written by hand, with addresses as text (`"10.0.0.5"').

-type forward_opts() :: #{channel => atom(), partition_key => term()}
                      | [{channel, atom()} | {partition_key, term()}].
%% `channel' (default `default') and `partition_key' (default: the
%% destination). With affinity, messages with equal keys share a lane of the
%% channel. A non-negative integer key picks lane `Key rem N' of the
%% channel's `N' lanes, so consecutive keys (vnode indices) spread evenly;
%% any other key is hashed.

-type dest() :: pid() | atom() | {atom(), node()}.

%%% Application

%% @doc Start weft with the configuration in the application environment.
%% A bad configuration gives `{error, {bad_config, Key, Value}}'; an
%% unnamed node gives `{error, not_alive}'; a port in use gives
%% `{error, {listen, {Ip, Port}, eaddrinuse}}'. The environment is the
%% application's once loaded (loaded here if it is not yet): what
%% `sys.config', the `.app' file and `-weft Key Value' arguments set, and
%% what `application:set_env/3' or {@link start/1} set. It is checked, and
%% the listen address bound once and closed, before the application
%% starts, so these errors come back without the supervisor and crash
%% reports of a failed application start. (Only a port taken by someone
%% else in the milliseconds between that check and the transport's own
%% bind fails the application's start, with those reports.)
-spec start() -> ok | {error, term()}.
start() ->
    case load() of
        ok ->
            case is_running() orelse weft_app:preflight() of
                true -> start_app();
                ok -> start_app();
                {error, _} = Error -> Error
            end;
        {error, _} = Error ->
            Error
    end.

start_app() ->
    case application:ensure_all_started(weft) of
        {ok, _} -> ok;
        {error, {weft, {{shutdown, {failed_to_start_child, weft_server, Reason}}, _}}} ->
            {error, Reason};
        {error, {weft, {Reason, {weft_app, start, _}}}} ->
            {error, Reason};
        {error, Reason} ->
            {error, Reason}
    end.

%% @doc Start weft with `Opts' (map or proplist) set in its environment.
%% They override what `sys.config' (or the command line) says for the
%% same keys, and the other keys keep those values: the application is
%% loaded before the options are set. The options are validated first: on
%% error nothing is set. Errors:
%% <ul>
%% <li>`{error, {bad_config, Key, Value}}': a bad or unknown option (an
%% options term that is not a map or a proper list of `{Key, Value}' pairs
%% gives `{bad_config, options, Opts}');</li>
%% <li>`{error, already_started}': weft runs already (checked before the
%% options); stop it first. Nothing is changed;</li>
%% <li>`{error, not_alive}': the node has no name (start it with `-sname'
%% or `-name');</li>
%% <li>`{error, {listen, {Ip, Port}, Reason}}': the listener could not bind;</li>
%% <li>`{error, {nif_not_loaded, Path, Reason}}': the native library is missing.</li>
%% </ul>
%% A start that fails leaves the application environment as it was.
%% The whole configuration (the options and the rest of the environment)
%% and the listen address are checked before the application starts, as
%% in {@link start/0}, so these errors come back without the supervisor
%% and crash reports of a failed application start.
-spec start(weft_config:opts()) -> ok | {error, term()}.
start(Opts) ->
    case is_running() of
        true ->
            {error, already_started};
        false ->
            %% loaded first: a load sets the keys of sys.config, which
            %% would override the options
            case check_and_load(Opts) of
                ok ->
                    List = case is_map(Opts) of true -> maps:to_list(Opts); false -> Opts end,
                    Keys = lists:usort([K || {K, _} <- List]),
                    Saved = [{K, application:get_env(weft, K)} || K <- Keys],
                    [application:set_env(weft, K, V) || {K, V} <- List],
                    case start() of
                        ok ->
                            ok;
                        {error, _} = Error ->
                            [restore_env(K, Old) || {K, Old} <- Saved],
                            Error
                    end;
                {error, _} = Error ->
                    Error
            end
    end.

check_and_load(Opts) ->
    case weft_config:validate(Opts) of
        {ok, _} -> load();
        {error, _} = Error -> Error
    end.

is_running() ->
    lists:keymember(weft, 1, application:which_applications()).

%% Load the application (if it is not loaded): only then is its
%% environment complete. Before the load, `application:get_all_env(weft)'
%% holds none of what `sys.config' or the command line set (the load puts
%% those in, over any key set before it).
load() ->
    case application:load(weft) of
        ok -> ok;
        {error, {already_loaded, weft}} -> ok;
        {error, Reason} -> {error, Reason}
    end.

restore_env(K, {ok, V}) -> application:set_env(weft, K, V);
restore_env(K, undefined) -> application:unset_env(weft, K).

%% @doc Stop weft: the listener, every connection and the threads close.
%% Connections close gracefully, within 1 second in all: this node first
%% writes out the messages it had queued, then closes its sending side and
%% reads on until each peer has closed its end, delivering what the peers
%% wrote before they heard of the stop (they count what they had not
%% written). What is left when the second is up (a frozen peer, or more
%% queued than the peers read in that time) is dropped, and so are messages
%% still waiting for a node to come up; a warning says how many. Takes milliseconds when little is queued,
%% and up to about 3 seconds. Stopping weft that is not running is `ok'.
-spec stop() -> ok | {error, term()}.
stop() ->
    case application:stop(weft) of
        ok -> ok;
        {error, {not_started, weft}} -> ok;
        {error, _} = Error -> Error
    end.

%%% Membership

%% @doc This node's spec: what others pass to {@link join/1}.
-spec node_spec() -> node_spec() | {error, not_started}.
node_spec() ->
    nif(fun weft_nif:node_spec/0).

%% @doc Join the cluster `Spec''s node belongs to. Asynchronous: returns at
%% once; `{nodeup, Node}' follows (see {@link monitor_nodes/1}). Joining
%% yourself is `ok' and does nothing.
%%
%% `Spec' is checked fully before anything is dialed: `name' an atom
%% `Name@Host' of at most 255 bytes of printable ASCII; `listen_addrs' a non-empty list of at
%% most 16 `#{ip := Ip, port := Port}', where `Ip' is an IPv4 or IPv6 tuple
%% or an address written as a string or binary (`"10.0.0.5"', `<<"::1">>')
%% and `Port' is 1..65535; `channels', if present, a list of
%% `#{name := atom(), parallelism := 1..256}'. The other keys of a
%% {@link node_spec()} (`incarnation', `max_frame_size', and `epoch' of
%% earlier releases) are ignored: the handshake tells them. Any other key,
%% or anything else, gives
%% `{error, {bad_spec, Spec}}'; `{error, not_started}' if weft is not
%% running. On the static overlay (`{overlay, {static, Specs}}') the
%% membership is the configured list: `{error, {static_overlay, Nodes}}',
%% where `Nodes' are the configured members other than this node, sorted;
%% {@link sync_join/2}, {@link leave/0} and {@link leave/1} answer the same.
-spec join(join_spec()) -> ok | {error, term()}.
join(Spec) ->
    case static_overlay() of
        false -> join_checked(weft_config:check_spec(Spec));
        Static -> Static
    end.

join_checked(Result) ->
    case Result of
        self -> ok;
        {ok, Checked} -> nif(fun() -> weft_nif:join(Checked) end);
        Error -> Error
    end.

%% @doc Join and wait until `Spec''s node has taken this node as a member,
%% at most `Timeout' ms (a non-negative integer below 2^32, or
%% `infinity'). `Spec' is checked as in {@link join/1}.
%%
%% On the `full_mesh' and `client_server' overlays, `ok' means that the
%% node has confirmed this node's current incarnation as a member, on its
%% control lane, after the join was asked for; so both list each other
%% afterwards, also when the node had just removed this one (with
%% {@link leave/1}) and this node had not heard of it yet: the removal
%% arrives first, this node leaves as it says (a new incarnation, which the
%% removal does not cover), and `sync_join' joins again by itself before it
%% answers. A removal made after the confirmation, or elsewhere in the
%% cluster, still removes this node. (The node is asked even when it is up
%% already, which costs a round trip on its control lane, so a `Timeout'
%% of 0 may give `{error, timeout}' where the node is up; right after this
%% node left or was removed, the answer waits for the old connections to
%% the node to end, about 2 s. A node of an earlier build, which cannot be
%% asked, counts as confirming when it is up.) On the `callback' overlay, `ok' means that the node is up (at once
%% if it is).
%%
%% Returns `ok', or:
%% <ul>
%% <li>`{error, timeout}': the node did not take this node in time
%% (unreachable, or it did not answer);</li>
%% <li>`{error, {refused, Reason}}', as soon as a dial to the node was
%% refused, where `Reason' is one of: `bad_cookie' (the cookies differ);
%% `{unexpected_node, Actual}' (another node, `Actual', listens at that
%% address); `left' (on the `callback' overlay: the node holds this node
%% as having left; on the others this is the removal above, and the join
%% is made again); `detached' (the node is not accepting members);
%% `{version, Versions}' (no common protocol version: it speaks
%% `Versions'); `unknown_lane' (the node does not have that channel or
%% lane); `{bad_spec, Detail}' (one node found what the other said about
%% itself unacceptable: a name, an address, a channel; or, on the
%% `full_mesh' and `client_server' overlays, the node runs another
%% overlay: `<<"overlay: it runs ..., this node ...">>'); `full' (the node
%% has `max_members' members, all of them up).
%% (A node that is shutting down refuses as `unavailable'; that is
%% transient, and `sync_join' keeps waiting.)</li>
%% <li>`{error, left}': this node left the cluster ({@link leave/0}) while
%% the call waited; the leave holds, nothing is joined again for it;</li>
%% <li>`{error, removed}': this node was removed twice while the call
%% waited (the call joins again after the first removal only): the
%% cluster keeps removing this node, or a node it dials, this contact or
%% any other, refuses it as `left' (a refusal is not authenticated: a
%% listener at an address this node dials can say it);</li>
%% <li>`{error, not_started}': weft is not running, or stopped while
%% the call waited;</li>
%% <li>`{error, {bad_spec, Spec}}', `{error, {badarg, Timeout}}',
%% `{error, {static_overlay, Nodes}}' (see {@link join/1}).</li>
%% </ul>
-spec sync_join(join_spec(), timeout()) -> ok | {error, term()}.
sync_join(Spec, Timeout) ->
    case static_overlay() of
        false -> sync_join_checked(weft_config:check_spec(Spec), Timeout);
        Static -> Static
    end.

sync_join_checked(Result, Timeout) ->
    case Result of
        _ when not (Timeout =:= infinity orelse
                    (is_integer(Timeout) andalso Timeout >= 0 andalso Timeout < 1 bsl 32)) ->
            {error, {badarg, Timeout}};
        self -> ok;
        {ok, #{name := Name} = Checked} -> weft_server:sync_join(Checked, Name, Timeout);
        Error -> Error
    end.

%% @doc Leave the cluster: every member drops this node, for good; this node
%% is alone afterwards (a new incarnation), and may {@link join/1} again.
%% Until it does, it refuses nodes that try to join through it (they get
%% `{error, {refused, detached}}'), so that stale members cannot pull it
%% back in. Calls of {@link sync_join/2} waiting on this node return
%% `{error, left}' first: the leave is not undone by the joins they asked
%% for. On the static overlay:
%% `{error, {static_overlay, Nodes}}' (see {@link join/1}).
-spec leave() -> ok | {error, not_started | {static_overlay, [node()]}}.
leave() ->
    case static_overlay() of
        false -> weft_server:leave();
        Static -> Static
    end.

%% @doc Remove `Node' from the cluster, everywhere, itself included.
%% `leave(node())' is {@link leave/0}. The removal is of the incarnation
%% of `Node' that is a member (a tombstone of it goes everywhere, `Node'
%% first, which leaves). A {@link sync_join/2} that `Node' was waiting
%% on as the removal reached it is made again, as `Node''s next
%% incarnation, and holds (see {@link sync_join/2}); so does a join that
%% `Node' asks for later. On the `callback' overlay the
%% removal is local: `Node' is dropped here, the protocol is told it is
%% down, and it is kept out for 60 s (the protocol's messages tell others,
%% or not). Removing a node that is not a
%% member is `ok' and changes nothing (a removal is idempotent, as a second
%% removal of the same node is). A `Node' that is not an atom gives
%% `{error, {badarg, Node}}'; on the static overlay,
%% `{error, {static_overlay, Nodes}}' (see {@link join/1}).
-spec leave(node()) -> ok | {error, not_started | {badarg, term()} | {static_overlay, [node()]}}.
leave(Node) when Node =:= node() ->
    leave();
leave(Node) when is_atom(Node) ->
    case static_overlay() of
        false -> nif(fun() -> weft_nif:leave(Node) end);
        Static -> Static
    end;
leave(Node) ->
    {error, {badarg, Node}}.

%% @doc This node and every reachable member, sorted (Partisan's convention).
-spec members() -> [node()] | {error, not_started}.
members() ->
    nif(fun weft_nif:members/0).

%% @doc Reachable members, without this node.
-spec nodes() -> [node()] | {error, not_started}.
nodes() ->
    nif(fun weft_nif:nodes/0).

%%% Sending

%% @doc Send `Msg' to `Dest' (a pid, a registered name, or `{Name, Node}')
%% on the `default' channel.
-spec forward(dest(), term()) -> ok | {error, term()}.
forward(Dest, Msg) ->
    forward(Dest, Msg, #{}).

%% @doc Send `Msg' to `Dest' with options (`channel', `partition_key').
-spec forward(dest(), term(), forward_opts()) -> ok | {error, term()}.
forward(Pid, Msg, Opts) when is_pid(Pid) ->
    send(node(Pid), Pid, Msg, Opts);
forward({Name, Node}, Msg, Opts) when is_atom(Name), is_atom(Node) ->
    send(Node, Name, Msg, Opts);
forward(Name, Msg, Opts) when is_atom(Name) ->
    send(node(), Name, Msg, Opts);
forward(Dest, _Msg, _Opts) ->
    {error, {badarg, Dest}}.

%% @doc Send `Msg' to the process registered as `Name' on `Node'.
-spec forward(node(), atom(), term(), forward_opts()) -> ok | {error, term()}.
forward(Node, Name, Msg, Opts) when is_atom(Node), is_atom(Name) ->
    send(Node, Name, Msg, Opts);
forward(Node, Name, _Msg, _Opts) ->
    {error, {badarg, {Name, Node}}}.

send(Node, Dest, Msg, Opts) ->
    case options(Opts) of
        {ok, Channel, Key} when Node =:= node() ->
            local_send(Channel, Key, Dest, Msg);
        {ok, Channel, Key} ->
            %% term_to_iovec refers to large binaries instead of copying
            %% them; the NIF writes them from where they are.
            Payload = erlang:term_to_iovec({Dest, Msg}),
            Lane = case Key of
                       %% Integer keys take lanes in turn (Key rem N):
                       %% consecutive vnode indices spread evenly.
                       {key, K} when is_integer(K), K >= 0, K < 1 bsl 64 -> {index, K};
                       {key, K} -> erlang:phash2(K);
                       none -> erlang:phash2(Dest)
                   end,
            case nif_send(Node, Channel, Lane, Payload) of
                {error, overloaded} -> overloaded(Node, Channel, Lane, Payload);
                Result -> Result
            end;
        {error, _} = Error ->
            Error
    end.

%% as nif/1, without making a closure on every send
nif_send(Node, Channel, Lane, Payload) ->
    try
        weft_nif:send(Node, Channel, Lane, Payload)
    catch
        error:nif_not_loaded -> {error, not_started};
        error:undef -> {error, not_started}
    end.

%% A full queue: on a channel with `overload => wait', the caller's
%% message parks in the transport until there is room (counted once in
%% `info()' as `waited'), until its `wait_timeout' passes (then taken out
%% and refused, and counted as such).
overloaded(Node, Channel, Lane, Payload) ->
    case weft_config:wait_timeout(Channel) of
        none ->
            {error, overloaded};
        0 ->
            nif(fun() -> weft_nif:count(refused, overloaded) end),
            {error, overloaded};
        Timeout ->
            nif(fun() -> weft_nif:count(waited, overloaded) end),
            Deadline = case Timeout of
                           infinity -> infinity;
                           _ -> erlang:monotonic_time(millisecond) + Timeout
                       end,
            park(Node, Channel, Lane, Payload, Deadline)
    end.

%% Park the message (see weft_nif:park/4: senders that wait go in the
%% order they began to wait, by 20 ms, in a random order within them, and
%% no new send on a waiting channel passes them) and wait until it went.
%% `weft_room' sends parked messages when the transport says there is room;
%% if it stops (weft stopping), the message is taken out.
park(Node, Channel, Lane, Payload, Deadline) ->
    case nif(fun() -> weft_nif:park(Node, Channel, Lane, Payload) end) of
        {parked, Ticket, Id} ->
            parked(Ticket, Id, Deadline, fun() -> park(Node, Channel, Lane, Payload, Deadline) end);
        Result ->
            Result
    end.

%% Wait for the parked message to go. If `weft_room' goes (weft stopping,
%% or restarting it), the message is taken out and `Again()' parks it
%% anew; while there is none (it is starting), look again every 100 ms,
%% and end if weft stopped.
parked(Ticket, Id, Deadline, Again) ->
    {Room, Wait} = case whereis(weft_room) of
                       undefined -> {undefined, min_wait(left(Deadline), 100)};
                       Pid -> {erlang:monitor(process, Pid), left(Deadline)}
                   end,
    receive
        {weft_room, Id, Result} ->
            forget_room(Room),
            Result;
        {'DOWN', Room, process, _, _} ->
            unpark(Ticket, Id, Again)
    after Wait ->
            forget_room(Room),
            case {left(Deadline), nif(fun weft_nif:node_spec/0)} of
                {0, _} -> unpark(Ticket, Id, fun gave_up/0);
                {_, {error, not_started}} -> unpark(Ticket, Id, Again);
                _ -> parked(Ticket, Id, Deadline, Again)
            end
    end.

min_wait(infinity, B) -> B;
min_wait(A, B) -> min(A, B).

%% Take the parked message out, then `Then()'; unless it went meanwhile.
unpark(Ticket, Id, Then) ->
    case nif(fun() -> weft_nif:unpark(Ticket) end) of
        cancelled -> Then();
        sent -> receive {weft_room, Id, Result} -> Result end;
        {error, _} = Error -> Error
    end.

forget_room(undefined) -> true;
forget_room(Mon) -> erlang:demonitor(Mon, [flush]).

left(infinity) -> infinity;
left(Deadline) -> max(0, Deadline - erlang:monotonic_time(millisecond)).

gave_up() ->
    nif(fun() -> weft_nif:count(refused, overloaded) end),
    {error, overloaded}.

%% To ourselves: a plain send (never raising), after the same channel check.
local_send(Channel, _Key, Dest, Msg) ->
    case nif(fun weft_nif:node_spec/0) of
        #{channels := Chs} ->
            case Channel =:= default orelse lists:member(Channel, [N || #{name := N} <- Chs]) of
                false ->
                    nif(fun() -> weft_nif:count(refused, unknown_channel) end),
                    {error, {unknown_channel, Channel}};
                true ->
                    %% Accepted: delivered, or counted as a remote send to a
                    %% missing name or a dead pid would be.
                    case local_exists(Dest) of
                        true -> catch erlang:send(Dest, Msg, [noconnect]);
                        false -> nif(fun() -> weft_nif:count(dropped, no_destination) end)
                    end,
                    ok
            end;
        _ ->
            {error, not_started}
    end.

local_exists(Pid) when is_pid(Pid) -> is_process_alive(Pid);
local_exists(Name) when is_atom(Name) -> whereis(Name) =/= undefined.

options(Opts) when is_list(Opts) ->
    case is_proplist(Opts) of
        %% the first of a repeated key counts, as with `proplists'
        true ->
            case options(maps:from_list(lists:reverse(Opts))) of
                %% a bad value: name the options as given
                {error, {badarg, Map}} when is_map(Map) -> {error, {badarg, Opts}};
                Checked -> Checked
            end;
        false -> {error, {badarg, Opts}}
    end;
%% The usual maps, matched without building a list of their keys.
options(Opts) when map_size(Opts) =:= 0 ->
    {ok, default, none};
options(#{channel := Channel} = Opts) when map_size(Opts) =:= 1, is_atom(Channel) ->
    {ok, Channel, none};
options(#{partition_key := K} = Opts) when map_size(Opts) =:= 1 ->
    {ok, default, {key, K}};
options(#{channel := Channel, partition_key := K} = Opts) when map_size(Opts) =:= 2, is_atom(Channel) ->
    {ok, Channel, {key, K}};
options(Opts) when is_map(Opts) ->
    case [K || K <- maps:keys(Opts), K =/= channel, K =/= partition_key] of
        [Unknown | _] ->
            {error, {badarg, {unknown_option, Unknown}}};
        [] ->
            Channel = maps:get(channel, Opts, default),
            Key = case maps:find(partition_key, Opts) of
                      {ok, K} -> {key, K};
                      error -> none
                  end,
            case is_atom(Channel) of
                true -> {ok, Channel, Key};
                false -> {error, {badarg, Opts}}
            end
    end;
options(Opts) ->
    {error, {badarg, Opts}}.

%% A proper list of `{Key, Value}' pairs (a key that is not an option is
%% refused as in a map: `unknown_option').
is_proplist([{_, _} | T]) -> is_proplist(T);
is_proplist([]) -> true;
is_proplist(_) -> false.

%%% Monitoring

%% @doc Subscribe the caller to `{nodeup, Node}' and `{nodedown, Node}'
%% messages (`true'), or unsubscribe it (`false'), as
%% `net_kernel:monitor_nodes/1' does for Distributed Erlang. Subscribing
%% twice is one subscription. Same as `monitor_nodes(Flag, [])'.
-spec monitor_nodes(boolean()) -> ok | {error, not_started | {badarg, term()}}.
monitor_nodes(Flag) ->
    monitor_nodes(Flag, []).

%% @doc As `net_kernel:monitor_nodes/2'. `Options' is `[]' (the messages of
%% {@link monitor_nodes/1}) or `[nodedown_reason]': then the caller gets
%% `{nodeup, Node, []}' and `{nodedown, Node, [{nodedown_reason, Reason}]}',
%% where `Reason' is one of `connection_closed', `heartbeat_timeout',
%% `stopped' (the node called {@link stop/0} and said so before closing),
%% `left' (the node left the cluster), `removed' (it was removed with
%% {@link leave/1}), `restarted' (a new incarnation of it joined),
%% `this_node_left' (this node left or was removed), `forgotten' (down for
%% longer than `forget_down_after'), `dropped' (the membership protocol of
%% the `callback' overlay took it out of this node's members). A process
%% may hold both subscriptions
%% and then gets one message for each. A bad `Flag' or `Options' gives
%% `{error, {badarg, X}}'.
-spec monitor_nodes(boolean(), [nodedown_reason]) -> ok | {error, not_started | {badarg, term()}}.
monitor_nodes(Flag, Options) when is_boolean(Flag) ->
    case monitor_kind(Options) of
        {ok, Kind} -> weft_server:monitor_nodes(self(), Flag, Kind);
        error -> {error, {badarg, Options}}
    end;
monitor_nodes(Flag, _Options) ->
    {error, {badarg, Flag}}.

%% `[]': plain messages; `[nodedown_reason]' (repeated or not): with reasons.
monitor_kind([]) -> {ok, plain};
monitor_kind(L) -> monitor_kind(L, error).

monitor_kind([nodedown_reason | T], _) -> monitor_kind(T, {ok, reason});
monitor_kind([], Acc) -> Acc;
monitor_kind(_, _) -> error.

%% @doc Run `Fun' (arity 0, or 1: it gets the node) in a new process each
%% time `Node' (or any node, with `any') comes up.
-spec on_up(node() | any, fun(() -> term()) | fun((node()) -> term())) -> ok | {error, term()}.
on_up(Node, Fun) ->
    on_event(up, Node, Fun).

%% @doc Run `Fun' each time `Node' (or any node) goes down.
-spec on_down(node() | any, fun(() -> term()) | fun((node()) -> term())) -> ok | {error, term()}.
on_down(Node, Fun) ->
    on_event(down, Node, Fun).

on_event(Kind, Node, Fun) when is_atom(Node), is_function(Fun, 0);
                               is_atom(Node), is_function(Fun, 1) ->
    weft_server:on_event(Kind, Node, Fun);
on_event(_Kind, Node, Fun) ->
    {error, {badarg, {Node, Fun}}}.

%%% Introspection

%% @doc Members, lanes and counters:
%% ```
%% #{node, incarnation, listen_addrs, tombstones, overlay, relayed, cpu_contended,
%%   dropped => #{not_member, no_channel, node_down, connection_lost,
%%                too_large, overflow, no_destination, atom_limit, malformed,
%%                no_memory, no_route, fault, filtered},
%%   refused => #{unknown_channel, too_large, overloaded},
%%   refused_connections => #{Reason => Count},
%%   queued => #{queued_bytes, send_queue_limit, send_queue_total_limit, waited, parked},
%%   receiving => #{frames, claimed_bytes, claim_limit,
%%                  pool => #{limit, idle_bytes, in_use_bytes, allocated, reused}},
%%   peers => #{Node => #{state => up | connecting | down, incarnation,
%%                        queued_bytes, waiting, max_frame_size,
%%                        channels => #{Channel => [#{lane, state, local, remote,
%%                            queued_frames, queued_bytes, sent_frames, sent_bytes,
%%                            recv_frames, recv_bytes, recv_waits, dropped_frames,
%%                            io => scheduler | thread,
%%                            protocol => Version | undefined,
%%                            capabilities => [seq_ack | relay | trace | parts | share | share_wait | join_check],
%%                            shared_lane => boolean(),
%%                            small_messages => own | shared_lane | changing}]}}}}
%% '''
%% A channel of two lanes or more lists one more connection, its shared lane
%% (`shared_lane => true', index = the channel's lane count), which carries
%% the small messages of the lanes whose `small_messages' is `shared_lane'
%% (`changing': held back until the peer answers a fence; see the README,
%% "Sending semantics"). Frame and byte counters are per connection.
%% `recv_waits' counts the times reading a lane's connection stopped to wait
%% for the fence of a change from the peer's shared lane (the receiving side
%% of the same protocol).
%% `receiving' tells the large data frames (64 KiB or more) being received now
%% (`frames'), and the bytes of those whose buffers were allocated whole
%% when their header came (`claimed_bytes', at most `claim_limit', 256 MiB:
%% past it a buffer grows with the bytes that arrive). `pool' tells the
%% buffers that received large frames are read into, kept for reuse (see
%% `large_frame_pool' in the README): `limit' (bytes of idle buffers kept
%% at most, the option), `idle_bytes' (kept now), `in_use_bytes' (buffers
%% of frames being read and of messages not yet freed; the VM's
%% `erlang:memory()' does not count these), `allocated' and `reused'
%% (buffers taken new from the allocator and from the idle ones, since the
%% VM started: the pool is one per VM; its idle buffers are freed when weft
%% stops, the buffers of messages still held when those are freed).
%% `dropped' counts messages that `forward' accepted and that were then
%% lost, by reason: `not_member' (the destination is not a member),
%% `no_channel' (it does not have the channel), `node_down' (queued when it
%% went down, left, restarted or was given up on), `connection_lost' (being
%% written when the connection failed), `too_large' (over its frame limit,
%% learnt after the message was queued), `overflow' (dropped as the oldest
%% of a `drop_oldest' channel), `no_destination' (received here for a name
%% or pid that does not exist), `atom_limit' (received here, but decoding
%% it would create atoms while the atom table is within a twentieth of its
%% limit, or external funs `fun M:F/A' new to the node past the 100,000
%% that received messages may create: a full atom or export table ends the
%% VM; node names that would be new atoms then
%% show as binaries in `info/0', `members/0' and events), `malformed'
%% (received here from an
%% authenticated peer, not a message: a frame whose header or body could
%% not be read, or that carries header extensions its connection did not
%% negotiate; its connection is closed with a logged warning), `no_memory'
%% (received here, but no memory could be had for the frame; its
%% connection is closed with a logged warning), `no_route'
%% (a server of the client-server overlay received a message to relay to a
%% node it has no connection to, or whose queues are full), `fault' and `filtered' (dropped on send or on receive
%% by a per-message stage of the transport, for fault injection or
%% filtering; none is installed by default, so these stay 0).
%% `refused' counts calls to `forward' that
%% returned an error. `queued.waited' counts calls to `forward' on an
%% `overload => wait' channel that found a queue full and waited for
%% room (each once, however long it waited); `queued.parked' how many
%% such calls wait now (their messages wait in the transport, not counted
%% in `queued_bytes'). `refused_connections' counts incoming connections
%% turned down, by reason (`bad_cookie', `timeout', `protocol', `version',
%% `unexpected_node', `closed', ...); they are logged at most once per
%% source address per 10 s, and at most 20 lines per 10 s over all
%% sources. `waiting' counts messages that wait for a node whose channels
%% are not known yet (right after `join'). Sizes are in
%% bytes. The control channel shows as `'$control''. `io' says where the
%% lane's connection is served now. `overlay' is the membership overlay
%% (`full_mesh', `static', `client_server' or `callback'); on the static overlay `peers'
%% lists every configured member, up or not; on a client of the
%% client-server overlay, the servers only. `relayed' counts messages
%% relayed (client-server overlay): on a client, sent through a server to
%% another client; on a server, passed on for others.
%% `cpu_contended' (`true', `false' or `undefined') says whether the
%% pollers count the machine's CPUs as contended now, and so keep looking
%% for traffic `poll_linger_busy_us' instead of `poll_linger_us' (see the
%% README); `undefined' where the machine does not report CPU pressure
%% (`/proc/pressure/cpu', or a read of it failed since weft started) or
%% `poll_linger_busy_us' is not shorter than `poll_linger_us'.
%% `{error, timeout}' if the transport did not answer within a second.
-spec info() -> map() | {error, not_started | timeout}.
info() ->
    nif(fun weft_nif:info/0).

%% `false', or the error a call that changes the membership gets on the
%% static overlay.
static_overlay() ->
    case weft_config:overlay() of
        {static, Members} -> {error, {static_overlay, Members}};
        _ -> false
    end.

%% A NIF call that may find the library unloaded.
nif(F) ->
    try
        F()
    catch
        error:nif_not_loaded -> {error, not_started};
        error:undef -> {error, not_started}
    end.
