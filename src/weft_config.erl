%% @doc Validation of weft's configuration, done once at start.
%%
%% Turns the `weft' application environment (or the options given to
%% {@link weft:start/1}) into the map the transport takes, or returns
%% `{error, {bad_config, Key, Value}}' naming the first bad key. Unknown keys
%% are errors too: a typo should not pass silently.
-module(weft_config).

-export([validate/1, from_env/0, defaults/0, parse_ip/1, advertise_addrs/2, check_spec/1,
         is_latin1/1]).
-export([overlay/0, set_overlay/1, wait_timeout/1, set_wait_timeouts/1]).

-export_type([opts/0]).

-type opts() :: #{atom() => term()} | [{atom(), term()}].

-define(MAX_PARALLELISM, 256).
-define(MAX_U32, 16#FFFFFFFF).
%% What peers accept in a node description (native/weft_core/src/spec.rs).
-define(MAX_ADDRS, 16).
-define(MAX_CHANNELS, 256).
-define(MAX_NAME_LEN, 255).
%% The frame length field counts the kind byte too: 2^32 - 1 would wrap.
-define(MAX_FRAME, (?MAX_U32 - 1)).

%% @doc Every key and its default.
-spec defaults() -> #{atom() => term()}.
defaults() ->
    #{listen => {{127, 0, 0, 1}, 0},
      advertise => [],
      channels => [default],
      parallelism => 1,
      affinity => true,
      shared_lane => true,
      overlay => full_mesh,
      cookie => undefined,               % erlang:get_cookie() at start
      max_frame_size => 64 * 1024 * 1024,
      send_queue_limit => 128 * 1024 * 1024,        % bytes queued for one peer
      send_queue_total_limit => 512 * 1024 * 1024,  % bytes queued for all peers
      forget_down_after => infinity,                % ms a member may stay down
      max_members => 1024,                          % members kept (full mesh)
      heartbeat_interval => 1000,
      heartbeat_timeout => 5000,
      reconnect_min_backoff => 100,
      reconnect_max_backoff => 5000,
      gossip_interval => 1000,
      io => auto,
      pollers => schedulers,             % erlang:system_info(schedulers_online)
      poll_linger_us => 100,
      poll_linger_busy_us => 30,         % while the CPUs are contended
      large_frame_pool => 64 * 1024 * 1024}.      % bytes of idle receive buffers kept

%% @doc The application environment, validated.
-spec from_env() -> {ok, map()} | {error, term()}.
from_env() ->
    Env = [KV || {K, _} = KV <- application:get_all_env(weft),
                 K =/= included_applications],
    validate(Env).

%% @doc Validate `Opts' (a map or proplist), filling in defaults.
%% Returns the transport's options (without `event_pid').
-spec validate(opts()) -> {ok, map()} | {error, not_alive | {bad_config, atom(), term()}}.
validate(Opts) when is_list(Opts) ->
    case is_proplist(Opts) of
        true -> validate(maps:from_list(Opts));
        false -> {error, {bad_config, options, Opts}}
    end;
validate(Opts) when is_map(Opts) ->
    Defaults = defaults(),
    case [K || K <- maps:keys(Opts), not maps:is_key(K, Defaults)] of
        [Unknown | _] ->
            {error, {bad_config, Unknown, maps:get(Unknown, Opts)}};
        [] ->
            All = maps:merge(Defaults, Opts),
            try
                {ok, build(All, Opts)}
            catch
                throw:{bad, Key} -> {error, {bad_config, Key, maps:get(Key, All)}};
                throw:not_alive -> {error, not_alive}
            end
    end;
validate(Other) ->
    {error, {bad_config, options, Other}}.

is_proplist([{K, _} | T]) when is_atom(K) -> is_proplist(T);
is_proplist([]) -> true;
is_proplist(_) -> false.

build(C, Given) ->
    node() =/= nonode@nohost orelse throw(not_alive),
    Parallelism = check(parallelism, C, fun(P) -> int_in(P, 1, ?MAX_PARALLELISM) end),
    HbInterval = check(heartbeat_interval, C, fun ms/1),
    check(heartbeat_timeout, C, fun ms/1),
    %% A pair out of order names the key that was given (the other one has
    %% its default), or the second one when both were.
    related(heartbeat_interval, heartbeat_timeout, C, Given,
            fun(T) -> T > HbInterval end),
    Min = check(reconnect_min_backoff, C, fun ms/1),
    check(reconnect_max_backoff, C, fun ms/1),
    related(reconnect_min_backoff, reconnect_max_backoff, C, Given,
            fun(M) -> M >= Min end),
    check(affinity, C, fun is_boolean/1),
    check(shared_lane, C, fun is_boolean/1),
    Overlay = overlay(C),
    Listen = listen(C),
    #{node => node(),
      listen => Listen,
      advertise => advertise(C, Listen),
      channels => [{N, P} || {N, P, _} <- channels(C, Parallelism)],
      drop_oldest => [N || {N, _, drop_oldest} <- channels(C, Parallelism)],
      wait => [N || {N, _, {wait, _}} <- channels(C, Parallelism)],
      wait_timeouts => maps:from_list([{N, T} || {N, _, {wait, T}} <- channels(C, Parallelism)]),
      affinity => maps:get(affinity, C),
      shared_lane => maps:get(shared_lane, C),
      overlay => case Overlay of {callback, M, _} -> {callback, M}; _ -> Overlay end,
      callback => case Overlay of {callback, M, A} -> {M, A}; _ -> none end,
      cookie => cookie(C),
      max_frame_size => check(max_frame_size, C, fun(S) -> int_in(S, 1, ?MAX_FRAME) end),
      send_queue_limit => check(send_queue_limit, C, fun(S) -> int_in(S, 1, 1 bsl 62) end),
      send_queue_total_limit => check(send_queue_total_limit, C, fun(S) -> int_in(S, 1, 1 bsl 62) end),
      forget_down_after => check(forget_down_after, C, fun(T) -> T =:= infinity orelse ms(T) end),
      max_members => check(max_members, C, fun(N) -> int_in(N, 1, 65536) end),
      heartbeat_interval => HbInterval,
      heartbeat_timeout => maps:get(heartbeat_timeout, C),
      reconnect_min_backoff => Min,
      reconnect_max_backoff => maps:get(reconnect_max_backoff, C),
      gossip_interval => check(gossip_interval, C, fun ms/1),
      io => check(io, C, fun(M) -> lists:member(M, [auto, schedulers, threads]) end),
      pollers => pollers(C),
      poll_linger_us => check(poll_linger_us, C, fun(U) -> int_in(U, 0, 1000000) end),
      poll_linger_busy_us => check(poll_linger_busy_us, C, fun(U) -> int_in(U, 0, 1000000) end),
      large_frame_pool => check(large_frame_pool, C, fun(B) -> int_in(B, 0, 1 bsl 40) end)}.

%% Pollers: a count, or one per online scheduler.
pollers(C) ->
    case check(pollers, C, fun(N) -> N =:= schedulers orelse int_in(N, 1, 64) end) of
        %% (at most 64, what the transport takes)
        schedulers -> min(64, erlang:system_info(schedulers_online));
        N -> N
    end.

related(First, Second, C, Given, Ok) ->
    case Ok(maps:get(Second, C)) of
        true ->
            ok;
        false ->
            case maps:is_key(First, Given) andalso not maps:is_key(Second, Given) of
                true -> throw({bad, First});
                false -> throw({bad, Second})
            end
    end.

check(Key, C, Pred) ->
    V = maps:get(Key, C),
    case Pred(V) of
        true -> V;
        false -> throw({bad, Key})
    end.

int_in(N, Min, Max) -> is_integer(N) andalso N >= Min andalso N =< Max.

%% Milliseconds: what the transport keeps in 32 bits.
ms(N) -> int_in(N, 1, ?MAX_U32).

%% `{Host, Port}' (Host an address tuple, an address or a host name as a
%% string, binary or atom), or a bare port: every interface.
listen(C) ->
    case maps:get(listen, C) of
        Port when is_integer(Port) -> host_port(listen, {{0, 0, 0, 0}, Port}, 0);
        Addr -> host_port(listen, Addr, 0)
    end.

advertise(C, {ListenIp, _}) ->
    case maps:get(advertise, C) of
        [] ->
            case is_unspecified(ListenIp) of
                true ->
                    case advertise_addrs(ListenIp, inet:getifaddrs()) of
                        [] -> throw({bad, advertise});
                        %% at most 16, the others first and loopback last
                        Ips -> [{Ip, 0} || Ip <- lists:sublist(Ips, ?MAX_ADDRS)]
                    end;
                false ->
                    []
            end;
        L ->
            is_proplist_of_pairs(L) orelse throw({bad, advertise}),
            %% 1..16 addresses that another node could dial (what peers
            %% accept in a node description); port 0: the port actually bound
            length(L) =< ?MAX_ADDRS orelse throw({bad, advertise}),
            Addrs = [host_port(advertise, A, 0) || A <- L],
            lists:all(fun({Ip, _}) -> dialable(Ip) end, Addrs) orelse throw({bad, advertise}),
            Addrs
    end.

%% Not an address another node could dial: unspecified, multicast,
%% broadcast.
dialable({0, 0, 0, 0}) -> false;
dialable({255, 255, 255, 255}) -> false;
dialable({A, _, _, _}) -> A < 224 orelse A > 239;
dialable({0, 0, 0, 0, 0, 0, 0, 0}) -> false;
dialable({A, _, _, _, _, _, _, _}) -> A band 16#ff00 =/= 16#ff00.

is_proplist_of_pairs([{_, _} | T]) -> is_proplist_of_pairs(T);
is_proplist_of_pairs([]) -> true;
is_proplist_of_pairs(_) -> false.

is_unspecified({0, 0, 0, 0}) -> true;
is_unspecified({0, 0, 0, 0, 0, 0, 0, 0}) -> true;
is_unspecified(_) -> false.

%% @doc The addresses to advertise for a listener on the unspecified
%% address `ListenIp', from `inet:getifaddrs/0''s result: those of the
%% interfaces that are up (IPv4 only for `{0,0,0,0}', both families for
%% `::'), without IPv6 link-local ones (`fe80::/10'), loopback last.
-spec advertise_addrs(inet:ip_address(), {ok, [{string(), list()}]} | {error, term()}) ->
          [inet:ip_address()].
advertise_addrs(ListenIp, {ok, Ifs}) ->
    Families = case tuple_size(ListenIp) of 4 -> [4]; 8 -> [4, 8] end,
    Addrs = [{is_loopback(Ip, Flags), Ip}
             || {_Name, Props} <- Ifs,
                Flags <- [proplists:get_value(flags, Props, [])],
                lists:member(up, Flags),
                {addr, Ip} <- Props,
                lists:member(tuple_size(Ip), Families),
                not is_link_local(Ip)],
    %% false (not loopback) sorts before true; stable within each group.
    dedup([Ip || {_, Ip} <- lists:keysort(1, Addrs)]);
advertise_addrs(_ListenIp, {error, _}) ->
    [].

is_loopback(Ip, Flags) ->
    lists:member(loopback, Flags) orelse
        element(1, Ip) =:= 127 orelse Ip =:= {0, 0, 0, 0, 0, 0, 0, 1}.

is_link_local({A, _, _, _, _, _, _, _}) -> A band 16#ffc0 =:= 16#fe80;
is_link_local(_) -> false.

dedup([H | T]) -> [H | dedup([X || X <- T, X =/= H])];
dedup([]) -> [].

host_port(Key, {Host, Port}, MinPort) ->
    int_in(Port, MinPort, 65535) orelse throw({bad, Key}),
    case resolve(Host) of
        {ok, Ip} -> {Ip, Port};
        error -> throw({bad, Key})
    end;
host_port(Key, _, _) ->
    throw({bad, Key}).

%% An address tuple, an address as text, or a host name (IPv4 first).
resolve(Host) ->
    case parse_ip(Host) of
        {ok, Ip} ->
            {ok, Ip};
        error ->
            case host_name(Host) of
                {ok, Name} ->
                    case getaddr(Name, inet) of
                        {ok, Ip} -> {ok, Ip};
                        error -> getaddr(Name, inet6)
                    end;
                error ->
                    error
            end
    end.

getaddr(Name, Family) ->
    try inet:getaddr(Name, Family) of
        {ok, Ip} -> {ok, Ip};
        {error, _} -> error
    catch
        _:_ -> error
    end.

host_name(A) when is_atom(A) -> host_name(atom_to_list(A));
host_name(B) when is_binary(B) ->
    case unicode:characters_to_list(B) of
        L when is_list(L) -> host_name(L);
        _ -> error
    end;
host_name(L) when is_list(L), L =/= [] ->
    case is_proper(L) andalso length(L) =< 255 andalso io_lib:printable_unicode_list(L) of
        true -> {ok, L};
        false -> error
    end;
host_name(_) ->
    error.

%% @doc An IP address: a tuple in range, or its text (string or binary),
%% parsed with `inet:parse_address/1'. Host names are not resolved.
-spec parse_ip(term()) -> {ok, inet:ip_address()} | error.
parse_ip(Ip) when is_tuple(Ip) ->
    case is_ip(Ip) of
        true -> {ok, Ip};
        false -> error
    end;
parse_ip(B) when is_binary(B) ->
    case unicode:characters_to_list(B) of
        L when is_list(L) -> parse_ip(L);
        _ -> error
    end;
parse_ip(L) when is_list(L) ->
    try inet:parse_address(L) of
        {ok, Ip} -> {ok, Ip};
        {error, _} -> error
    catch
        _:_ -> error
    end;
parse_ip(_) ->
    error.

is_ip({A, B, C, D} = Ip) when is_integer(A), is_integer(B), is_integer(C), is_integer(D) ->
    lists:all(fun(X) -> X >= 0 andalso X =< 255 end, tuple_to_list(Ip));
is_ip(Ip) when is_tuple(Ip), tuple_size(Ip) =:= 8 ->
    lists:all(fun(X) -> is_integer(X) andalso X >= 0 andalso X =< 65535 end, tuple_to_list(Ip));
is_ip(_) ->
    false.

cookie(C) ->
    case maps:get(cookie, C) of
        undefined -> atom_to_binary(erlang:get_cookie(), utf8);
        B when is_binary(B), byte_size(B) > 0 -> B;
        A when is_atom(A), A =/= '' -> atom_to_binary(A, utf8);
        _ -> throw({bad, cookie})
    end.

%% Channels become [{Name, Parallelism}], `default' first, no duplicates.
channels(C, Default) ->
    List = maps:get(channels, C),
    (is_list(List) andalso is_proper(List) andalso length(List) =< 256) orelse throw({bad, channels}),
    Parsed = [channel(Ch, Default) || Ch <- List],
    Names = [N || {N, _, _} <- Parsed],
    length(lists:usort(Names)) =:= length(Names) orelse throw({bad, channels}),
    All = case lists:keytake(default, 1, Parsed) of
              {value, D, Rest} -> [D | Rest];
              false -> [{default, Default, refuse} | Parsed]
          end,
    length(All) =< ?MAX_CHANNELS orelse throw({bad, channels}),
    All.

%% A channel name peers accept: printable ASCII without spaces, 1..255
%% bytes.
valid_channel_name(Name) ->
    B = atom_to_binary(Name, utf8),
    byte_size(B) >= 1 andalso byte_size(B) =< ?MAX_NAME_LEN
        andalso lists:all(fun(Ch) -> Ch >= 16#21 andalso Ch =< 16#7e end, binary_to_list(B)).

is_proper([_ | T]) -> is_proper(T);
is_proper([]) -> true;
is_proper(_) -> false.

channel('$control', _) ->
    throw({bad, channels});
channel(Name, Default) when is_atom(Name) ->
    valid_channel_name(Name) orelse throw({bad, channels}),
    {Name, Default, refuse};
channel(#{name := Name} = M, Default) when is_atom(Name), Name =/= '$control' ->
    P = maps:get(parallelism, M, Default),
    %% What a full send queue does: refuse (`{error, overloaded}'), drop
    %% the channel's oldest queued messages, or make the sender wait for
    %% room (at most `wait_timeout' ms, 5000 unless given; only with
    %% `wait').
    Overload = maps:get(overload, M, refuse),
    Timeout = maps:get(wait_timeout, M, 5000),
    Extra = maps:keys(maps:without([name, parallelism, overload, wait_timeout], M)),
    ValidTimeout = Timeout =:= infinity orelse int_in(Timeout, 0, ?MAX_U32),
    TimeoutGiven = maps:is_key(wait_timeout, M),
    case valid_channel_name(Name) andalso int_in(P, 1, ?MAX_PARALLELISM) andalso Extra =:= []
        andalso lists:member(Overload, [refuse, drop_oldest, wait]) andalso ValidTimeout
        andalso (Overload =:= wait orelse not TimeoutGiven) of
        true when Overload =:= wait -> {Name, P, {wait, Timeout}};
        true -> {Name, P, Overload};
        false -> throw({bad, channels})
    end;
channel({Name, Opts}, Default) when is_atom(Name), is_map(Opts) ->
    channel(Opts#{name => Name}, Default);
channel(_, _) ->
    throw({bad, channels}).

%%% Overlays

%% `full_mesh'; `{client_server, #{role => server | client}}';
%% `{callback, Module, Args}' (`Module' exporting every callback of
%% `weft_membership'); or
%% `{static, Specs}': every spec checked as {@link weft:join/1} checks it,
%% this node's own left out, no name twice, at most `max_members'.
overlay(C) ->
    case maps:get(overlay, C) of
        full_mesh ->
            full_mesh;
        {callback, Module, _Args} = O ->
            weft_membership:callbacks_exported(Module) orelse throw({bad, overlay}),
            O;
        {client_server, #{role := Role} = O} when map_size(O) =:= 1,
                                                  (Role =:= server orelse Role =:= client) ->
            {client_server, O};
        {static, Specs} ->
            try
                Checked = [case check_spec(S) of
                               self -> self;
                               {ok, Ch} -> Ch
                           end || S <- Specs],
                Others = [S || S <- Checked, S =/= self],
                Names = [N || #{name := N} <- Others],
                true = length(lists:usort(Names)) =:= length(Names),
                %% (this node's own entry at most once too)
                true = length([S || S <- Checked, S =:= self]) =< 1,
                true = length(Others) =< maps:get(max_members, C),
                {static, Others}
            catch
                _:_ -> throw({bad, overlay})
            end;
        _ ->
            throw({bad, overlay})
    end.

%% @doc The overlay of the running (or last started) transport:
%% `{full_mesh, []}', `{client_server, server | client}' or
%% `{static, ConfiguredNodes}'.
-spec overlay() -> {full_mesh | callback, []} | {client_server, server | client} | {static, [node()]}.
overlay() ->
    persistent_term:get({weft, overlay}, {full_mesh, []}).

%% @doc Record the overlay of a transport being started (`weft_server').
-spec set_overlay(none | full_mesh | {callback, module()} | {static, [map()]} | {client_server, map()}) -> ok.
set_overlay(none) ->
    put_overlay({full_mesh, []});
set_overlay(full_mesh) ->
    put_overlay({full_mesh, []});
set_overlay({callback, Module}) when is_atom(Module) ->
    put_overlay({callback, []});
set_overlay({client_server, #{role := Role}}) ->
    put_overlay({client_server, Role});
set_overlay({static, Specs}) ->
    put_overlay({static, lists:sort([N || #{name := N} <- Specs])}).

%% @private How long a send on `Channel' waits for room (`overload =>
%% wait'): milliseconds or `infinity'; `none' for a channel that does not
%% wait.
-spec wait_timeout(atom()) -> non_neg_integer() | infinity | none.
wait_timeout(Channel) ->
    case persistent_term:get({weft, wait_timeouts}, #{}) of
        #{Channel := T} -> T;
        _ -> none
    end.

%% @private Record the waiting channels of a transport being started
%% (`weft_server'); `#{}' when it stops.
-spec set_wait_timeouts(#{atom() => non_neg_integer() | infinity}) -> ok.
set_wait_timeouts(W) ->
    case persistent_term:get({weft, wait_timeouts}, undefined) of
        W -> ok;
        _ -> persistent_term:put({weft, wait_timeouts}, W)
    end.

put_overlay(O) ->
    %% (an unchanged value costs nothing; a changed one is rare: a start)
    case persistent_term:get({weft, overlay}, undefined) of
        O -> ok;
        _ -> persistent_term:put({weft, overlay}, O)
    end.


%% @doc A node spec as {@link weft:join/1} takes it, checked, with its
%% addresses as tuples; `self' for this node; `{error, {bad_spec, Spec}}'.
-spec check_spec(term()) -> {ok, map()} | self | {error, {bad_spec, term()}}.
check_spec(Spec) ->
    try
        {ok, Checked} = check_spec1(Spec),
        case maps:get(name, Checked) =:= node() of
            true -> self;
            false -> {ok, Checked}
        end
    catch
        _:_ -> {error, {bad_spec, Spec}}
    end.

check_spec1(#{name := Name, listen_addrs := Addrs} = Spec) when is_atom(Name), is_list(Addrs) ->
    %% (what node_spec/0 returns, or returned as `epoch' before it was
    %% `incarnation', and nothing else)
    [] = maps:keys(maps:without([name, listen_addrs, channels, incarnation, max_frame_size, epoch], Spec)),
    true = is_node_name(Name),
    N = proper_length(Addrs),
    true = N >= 1 andalso N =< ?MAX_ADDRS,
    Checked0 = #{name => Name, listen_addrs => [check_addr(A) || A <- Addrs]},
    Checked1 = case maps:find(channels, Spec) of
                   {ok, Chs} ->
                       true = proper_length(Chs) >= 0,
                       Checked0#{channels => [check_channel(C) || C <- Chs]};
                   error ->
                       Checked0
               end,
    {ok, Checked1}.

%% `Name@Host', at most 255 bytes of printable ASCII: names become atoms
%% on every node, and OTP 25's NIF interface reads Latin-1 atoms only;
%% ASCII is what reads the same on every side (as the transport checks).
is_node_name(Name) ->
    is_latin1(Name) andalso is_node_name1(Name)
        andalso lists:all(fun(C) -> C > 32 andalso C < 127 end, atom_to_list(Name)).

is_node_name1(Name) ->
    Bin = atom_to_binary(Name, utf8),
    case binary:split(Bin, <<"@">>) of
        [N, H] -> N =/= <<>> andalso H =/= <<>> andalso binary:match(H, <<"@">>) =:= nomatch
                      andalso byte_size(Bin) =< ?MAX_NAME_LEN;
        _ -> false
    end.

check_addr(#{ip := Ip0, port := Port}) when is_integer(Port), Port >= 1, Port =< 65535 ->
    {ok, Ip} = weft_config:parse_ip(Ip0),
    #{ip => Ip, port => Port}.

check_channel(#{name := Name, parallelism := P} = C)
  when is_atom(Name), is_integer(P), P >= 1, P =< 256, map_size(C) =:= 2 ->
    true = valid_channel_name(Name),
    C.

%% @doc Whether atom `A''s text is Latin-1 (what the NIF can read).
-spec is_latin1(atom()) -> boolean().
is_latin1(A) ->
    try atom_to_binary(A, latin1) of
        _ -> true
    catch
        error:badarg -> false
    end.

%% The length of a proper list; raises on an improper one.
proper_length(L) -> length(L).

