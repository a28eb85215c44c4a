%% @private
%% @doc Top supervisor: one child, {@link weft_server}, which owns the
%% transport. If it cannot start (bad config, port in use) neither can weft.
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
    {ok, {#{strategy => one_for_one, intensity => 3, period => 10}, [Server]}}.
