%% @doc weft: the public API.
%%
%% A distribution layer for the BEAM with named channels, parallel lanes and
%% affinity, whose transport runs in Rust. The API mirrors Partisan's peer
%% service manager: {@link join/1}, {@link leave/0}, {@link members/0},
%% {@link forward/4}. Swap `erlang:send/2' for {@link forward/2}.
%%
%% Sending never raises and never blocks a scheduler: it enqueues and
%% returns. A message to a node that is not a reachable member is dropped and
%% counted in {@link info/0} (as `!' drops a message to an unreachable node);
%% mistakes the sender can fix are returned as `{error, Reason}':
%% <ul>
%% <li>`{error, {unknown_channel, C}}': `C' is not one of this node's channels;</li>
%% <li>`{error, {too_large, Size, Max}}': the encoded message exceeds `max_frame_size';</li>
%% <li>`{error, not_started}': the weft application is not running;</li>
%% <li>`{error, {badarg, X}}': `X' is not a destination or an options map/list.</li>
%% </ul>
-module(weft).

-export([start/0, start/1, stop/0]).
-export([node_spec/0, join/1, sync_join/2, leave/0, leave/1, members/0, nodes/0]).
-export([forward/2, forward/3, forward/4]).
-export([monitor_nodes/1, on_up/2, on_down/2, info/0]).

-export_type([node_spec/0, forward_opts/0, dest/0]).

-type node_spec() :: #{name := node(),
                       listen_addrs := [#{ip := inet:ip_address(), port := inet:port_number()}],
                       channels => [#{name := atom(), parallelism := pos_integer()}],
                       epoch => non_neg_integer()}.
%% What {@link node_spec/0} returns and {@link join/1} takes.

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
%% `{error, {listen, {Ip, Port}, eaddrinuse}}'.
-spec start() -> ok | {error, term()}.
start() ->
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
%% The options are validated first: on error nothing is set.
-spec start(weft_config:opts()) -> ok | {error, term()}.
start(Opts) ->
    case weft_config:validate(Opts) of
        {ok, _} ->
            List = case is_map(Opts) of true -> maps:to_list(Opts); false -> Opts end,
            [application:set_env(weft, K, V) || {K, V} <- List],
            start();
        {error, _} = Error ->
            Error
    end.

%% @doc Stop weft: every connection, the listener and the threads close.
-spec stop() -> ok.
stop() ->
    case application:stop(weft) of
        ok -> ok;
        {error, {not_started, weft}} -> ok
    end.

%%% Membership

%% @doc This node's spec: what others pass to {@link join/1}.
-spec node_spec() -> node_spec() | {error, not_started}.
node_spec() ->
    nif(fun weft_nif:node_spec/0).

%% @doc Join the cluster `Spec''s node belongs to. Asynchronous: returns at
%% once; `{nodeup, Node}' follows (see {@link monitor_nodes/1}). Joining
%% yourself is `ok' and does nothing. A spec without a name atom or without
%% addresses gives `{error, {bad_spec, Spec}}'.
-spec join(node_spec()) -> ok | {error, term()}.
join(Spec) ->
    case check_spec(Spec) of
        self -> ok;
        ok -> nif(fun() -> weft_nif:join(Spec) end);
        Error -> Error
    end.

%% @doc Join and wait until `Spec''s node is up, at most `Timeout' ms:
%% `{error, timeout}' if it is not (a wrong cookie looks like this too; the
%% log says why).
-spec sync_join(node_spec(), timeout()) -> ok | {error, term()}.
sync_join(Spec, Timeout) ->
    case check_spec(Spec) of
        self -> ok;
        ok -> weft_server:sync_join(Spec, maps:get(name, Spec), Timeout);
        Error -> Error
    end.

check_spec(#{name := Name, listen_addrs := [_ | _]}) when Name =:= node() -> self;
check_spec(#{name := Name, listen_addrs := [_ | _] = Addrs} = Spec) when is_atom(Name) ->
    case lists:all(fun(#{ip := _, port := P}) -> is_integer(P); (_) -> false end, Addrs) of
        true -> ok;
        false -> {error, {bad_spec, Spec}}
    end;
check_spec(Spec) ->
    {error, {bad_spec, Spec}}.

%% @doc Leave the cluster: every member drops this node, for good; this node
%% is alone afterwards, and may {@link join/1} again.
-spec leave() -> ok | {error, not_started}.
leave() ->
    nif(fun weft_nif:leave/0).

%% @doc Remove `Node' from the cluster, everywhere, itself included.
%% `leave(node())' is {@link leave/0}.
-spec leave(node()) -> ok | {error, not_started}.
leave(Node) when Node =:= node() ->
    leave();
leave(Node) when is_atom(Node) ->
    nif(fun() -> weft_nif:leave(Node) end).

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
            nif(fun() -> weft_nif:send(Node, Channel, Lane, Payload) end);
        error ->
            {error, {badarg, Opts}}
    end.

%% To ourselves: a plain send (never raising), after the same channel check.
local_send(Channel, _Key, Dest, Msg) ->
    case lists:member(Channel, local_channels()) of
        false when Channel =/= default ->
            {error, {unknown_channel, Channel}};
        _ ->
            catch erlang:send(Dest, Msg, [noconnect]),
            ok
    end.

local_channels() ->
    case weft_nif:node_spec() of
        #{channels := Chs} -> [N || #{name := N} <- Chs];
        _ -> []
    end.

options(Opts) when is_list(Opts) ->
    case lists:all(fun({K, _}) -> is_atom(K); (_) -> false end, Opts) of
        true -> options(maps:from_list(Opts));
        false -> error
    end;
options(Opts) when is_map(Opts) ->
    Channel = maps:get(channel, Opts, default),
    Key = case maps:find(partition_key, Opts) of
              {ok, K} -> {key, K};
              error -> none
          end,
    case is_atom(Channel) of
        true -> {ok, Channel, Key};
        false -> error
    end;
options(_) ->
    error.

%%% Monitoring

%% @doc Subscribe the caller to `{nodeup, Node}' and `{nodedown, Node}'
%% messages (`true'), or unsubscribe it (`false'), as
%% `net_kernel:monitor_nodes/1' does for Distributed Erlang.
-spec monitor_nodes(boolean()) -> ok | {error, not_started}.
monitor_nodes(Flag) when is_boolean(Flag) ->
    weft_server:monitor_nodes(self(), Flag).

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
%% `#{node, epoch, listen_addrs, dropped => #{not_member, unknown_channel,
%% too_large, no_destination}, peers => #{Node => #{state => up | connecting
%% | down, epoch, channels => #{Channel => [#{lane, state => connected |
%% connecting | down, local, remote, queued_frames, queued_bytes,
%% sent_frames, sent_bytes, recv_frames, recv_bytes, io => scheduler |
%% thread}]}}}}'. The control channel shows as `'$control''. `io' says
%% where the lane's connection is served now: by a poller on the
%% schedulers, or on a thread (see the `io' option).
-spec info() -> map() | {error, not_started}.
info() ->
    nif(fun weft_nif:info/0).

%% A NIF call that may find the library unloaded.
nif(F) ->
    try
        F()
    catch
        error:nif_not_loaded -> {error, not_started};
        error:undef -> {error, not_started}
    end.
