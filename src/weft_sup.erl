%% @private
%% @doc Top supervisor: {@link weft_poller_sup} (the poller processes), then
%% {@link weft_server}, which owns the transport and starts a poller
%% process per poller. `rest_for_one': if the poller supervisor gives up,
%% the transport restarts with it. If the transport cannot start (bad
%% config, port in use) neither can weft.
-module(weft_sup).
-behaviour(supervisor).

-export([start_link/0, init/1]).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
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
    {ok, {#{strategy => rest_for_one, intensity => 3, period => 10}, [Pollers, Server]}}.
