%% @doc An `-epmd_module' for benchmark nodes: no epmd at all. Each node
%% listens for Distributed Erlang on a fixed port, and is told (through the
%% `weft_bench_ports' argument) which port reaches each other node, which is
%% the network emulation proxy in front of that node. So Distributed Erlang
%% goes through the same emulated network as weft.
-module(weft_bench_epmd).

-export([start_link/0, register_node/2, register_node/3, port_please/2, port_please/3,
         address_please/3, names/1]).

%% The distribution protocol version of OTP 23 and later.
-define(VERSION, 6).

-spec start_link() -> ignore.
start_link() ->
    ignore.

-spec register_node(string(), inet:port_number()) -> {ok, pos_integer()}.
register_node(Name, Port) ->
    register_node(Name, Port, inet).

-spec register_node(string(), inet:port_number(), inet | inet6) -> {ok, pos_integer()}.
register_node(_Name, _Port, _Family) ->
    %% Any creation works without epmd; vary it so restarts differ.
    {ok, 1 + erlang:phash2(erlang:monotonic_time(), 16#fffffff0)}.

-spec port_please(atom() | string(), term()) -> {port, inet:port_number(), pos_integer()} | noport.
port_please(Name, Host) ->
    port_please(Name, Host, infinity).

-spec port_please(atom() | string(), term(), timeout()) -> {port, inet:port_number(), pos_integer()} | noport.
port_please(Name, _Host, _Timeout) ->
    case lists:keyfind(to_list(Name), 1, ports()) of
        {_, Port} -> {port, Port, ?VERSION};
        false -> noport
    end.

-spec address_please(term(), string(), inet | inet6) -> {ok, inet:ip_address()}.
address_please(_Name, _Host, _Family) ->
    {ok, {127, 0, 0, 1}}.

-spec names(term()) -> {error, address}.
names(_Host) ->
    {error, address}.

%% -weft_bench_ports "a=41001,b=41002"
ports() ->
    case init:get_argument(weft_bench_ports) of
        {ok, [[Spec]]} ->
            [begin [N, P] = string:split(Pair, "="), {N, list_to_integer(P)} end
             || Pair <- string:split(Spec, ",", all), Pair =/= ""];
        _ ->
            []
    end.

to_list(A) when is_atom(A) -> atom_to_list(A);
to_list(L) -> L.
