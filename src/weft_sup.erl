%% @private
%% @doc Top supervisor: {@link weft_poller_sup} (the poller processes), then
%% {@link weft_server}, which owns the transport and starts a poller
%% process per poller. `rest_for_one': if the poller supervisor gives up,
%% the transport restarts with it. If the transport cannot start (bad
%% config, port in use) neither can weft.
-module(weft_sup).
-behaviour(supervisor).

-export([start_link/0, init/1, previous_port/0, remember_port/1]).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    %% What a restarted transport should know of the previous one: the
    %% port it listened on (see weft_server). The table lives as long as
    %% this supervisor, i.e. until weft stops.
    ?MODULE = ets:new(?MODULE, [named_table, public, set]),
    Server = #{id => weft_server,
               start => {weft_server, start_link, []},
               restart => permanent,
               shutdown => 5000,
               type => worker,
               modules => [weft_server]},
    Pollers = #{id => weft_poller_sup,
                start => {weft_poller_sup, start_link, []},
                restart => permanent,
                shutdown => infinity,
                type => supervisor,
                modules => [weft_poller_sup]},
    %% Wakes the senders that wait for room (`overload => wait'); last, so
    %% that its restart restarts nothing else.
    Room = #{id => weft_room,
             start => {weft_room, start_link, []},
             restart => permanent,
             shutdown => 1000,
             type => worker,
             modules => [weft_room]},
    {ok, {#{strategy => rest_for_one, intensity => 3, period => 10}, [Pollers, Server, Room]}}.

%% @private The port the transport listened on before it was restarted.
-spec previous_port() -> {ok, inet:port_number()} | none.
previous_port() ->
    try ets:lookup(?MODULE, listen_port) of
        [{listen_port, Port}] -> {ok, Port};
        [] -> none
    catch
        error:badarg -> none
    end.

%% @private Remember the port the transport listens on.
-spec remember_port(inet:port_number()) -> ok.
remember_port(Port) ->
    true = ets:insert(?MODULE, {listen_port, Port}),
    ok.
