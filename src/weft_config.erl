%% @doc Validation of weft's configuration, done once at start.
%%
%% Turns the `weft' application environment (or the options given to
%% {@link weft:start/1}) into the map the transport takes, or returns
%% `{error, {bad_config, Key, Value}}' naming the first bad key. Unknown keys
%% are errors too: a typo should not pass silently.
-module(weft_config).

-export([validate/1, from_env/0, defaults/0]).

-export_type([opts/0]).

-type opts() :: #{atom() => term()} | [{atom(), term()}].

-define(MAX_PARALLELISM, 256).

%% @doc Every key and its default.
-spec defaults() -> #{atom() => term()}.
defaults() ->
    #{listen => {{127, 0, 0, 1}, 0},
      advertise => [],
      channels => [default],
      parallelism => 1,
      affinity => true,
      overlay => full_mesh,
      cookie => undefined,               % erlang:get_cookie() at start
      max_frame_size => 64 * 1024 * 1024,
      heartbeat_interval => 1000,
      heartbeat_timeout => 5000,
      reconnect_min_backoff => 100,
      reconnect_max_backoff => 5000,
      gossip_interval => 1000,
      io => auto,
      pollers => schedulers,             % erlang:system_info(schedulers_online)
      poll_linger_us => 100}.

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
    case lists:all(fun({K, _}) -> is_atom(K); (_) -> false end, Opts) of
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
                {ok, build(All)}
            catch
                throw:{bad, Key} -> {error, {bad_config, Key, maps:get(Key, All)}};
                throw:not_alive -> {error, not_alive}
            end
    end;
validate(Other) ->
    {error, {bad_config, options, Other}}.

build(C) ->
    node() =/= nonode@nohost orelse throw(not_alive),
    Parallelism = check(parallelism, C, fun(P) -> is_integer(P) andalso P >= 1 andalso P =< ?MAX_PARALLELISM end),
    HbInterval = check(heartbeat_interval, C, fun pos_int/1),
    check(heartbeat_timeout, C, fun(T) -> pos_int(T) andalso T > HbInterval end),
    Min = check(reconnect_min_backoff, C, fun pos_int/1),
    check(reconnect_max_backoff, C, fun(M) -> pos_int(M) andalso M >= Min end),
    check(affinity, C, fun is_boolean/1),
    check(overlay, C, fun(O) -> O =:= full_mesh end),
    #{node => node(),
      listen => check(listen, C, fun(A) -> is_addr(A, 0) end),
      advertise => check(advertise, C, fun(L) -> is_list(L) andalso lists:all(fun(A) -> is_addr(A, 1) end, L) end),
      channels => channels(C, Parallelism),
      affinity => maps:get(affinity, C),
      cookie => cookie(C),
      max_frame_size => check(max_frame_size, C, fun(S) -> pos_int(S) andalso S < 1 bsl 32 end),
      heartbeat_interval => HbInterval,
      heartbeat_timeout => maps:get(heartbeat_timeout, C),
      reconnect_min_backoff => Min,
      reconnect_max_backoff => maps:get(reconnect_max_backoff, C),
      gossip_interval => check(gossip_interval, C, fun pos_int/1),
      io => check(io, C, fun(M) -> lists:member(M, [auto, schedulers, threads]) end),
      pollers => pollers(C),
      poll_linger_us => check(poll_linger_us, C, fun(U) -> is_integer(U) andalso U >= 0 andalso U =< 1000000 end)}.

%% Pollers: a count, or one per online scheduler.
pollers(C) ->
    case check(pollers, C, fun(N) -> N =:= schedulers orelse (is_integer(N) andalso N >= 1 andalso N =< 64) end) of
        schedulers -> erlang:system_info(schedulers_online);
        N -> N
    end.

check(Key, C, Pred) ->
    V = maps:get(Key, C),
    case Pred(V) of
        true -> V;
        false -> throw({bad, Key})
    end.

pos_int(N) -> is_integer(N) andalso N > 0.

is_addr({Ip, Port}, MinPort) when is_integer(Port), Port >= MinPort, Port =< 65535 ->
    is_ip(Ip);
is_addr(_, _) ->
    false.

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
        A when is_atom(A) -> atom_to_binary(A, utf8);
        _ -> throw({bad, cookie})
    end.

%% Channels become [{Name, Parallelism}], `default' first, no duplicates.
channels(C, Default) ->
    List = maps:get(channels, C),
    is_list(List) orelse throw({bad, channels}),
    Parsed = [channel(Ch, Default) || Ch <- List],
    Names = [N || {N, _} <- Parsed],
    length(lists:usort(Names)) =:= length(Names) orelse throw({bad, channels}),
    case lists:keytake(default, 1, Parsed) of
        {value, D, Rest} -> [D | Rest];
        false -> [{default, Default} | Parsed]
    end.

channel('$control', _) ->
    throw({bad, channels});
channel(Name, Default) when is_atom(Name) ->
    {Name, Default};
channel(#{name := Name} = M, Default) when is_atom(Name), Name =/= '$control' ->
    P = maps:get(parallelism, M, Default),
    Extra = maps:keys(maps:without([name, parallelism], M)),
    case is_integer(P) andalso P >= 1 andalso P =< ?MAX_PARALLELISM andalso Extra =:= [] of
        true -> {Name, P};
        false -> throw({bad, channels})
    end;
channel({Name, Opts}, Default) when is_atom(Name), is_map(Opts) ->
    channel(Opts#{name => Name}, Default);
channel(_, _) ->
    throw({bad, channels}).
