%% @private
%% @doc The supervisor of the poller processes ({@link weft_poller}).
%%
%% {@link weft_server} starts the transport, then one child here per poller
%% the transport has (one per online scheduler by default, see the
%% `pollers' option). A poller process that crashes is started again on the
%% same poller: the connections it serves stay open and nothing queued is
%% lost, they only wait while no process drives them. A poller process
%% ends normally when the transport stops, and is then not restarted.
%% Too many crashes (10 in 10 s) take this supervisor down, and with it
%% `weft_server' (`rest_for_one' in {@link weft_sup}), which restarts the
%% transport.
-module(weft_poller_sup).
-behaviour(supervisor).

-export([start_link/0, start_poller/1, init/1]).

%% @doc Start the (empty) supervisor.
-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    supervisor:start_link({local, ?MODULE}, ?MODULE, []).

%% @doc Start a process that drives `Poller' (a poller of the running
%% transport).
-spec start_poller(reference()) -> {ok, pid()} | {error, term()}.
start_poller(Poller) ->
    supervisor:start_child(?MODULE, [Poller]).

%% @private
-spec init([]) -> {ok, {supervisor:sup_flags(), [supervisor:child_spec()]}}.
init([]) ->
    %% Which pollers had a process already: a start for one of these is a
    %% restart, which weft_poller logs in weft's own words (with weft's
    %% metadata), beside the supervisor's report.
    weft_poller:new_registry(),
    Poller = #{id => weft_poller,
               start => {weft_poller, start_link, []},
               restart => transient,
               shutdown => brutal_kill,
               type => worker,
               modules => [weft_poller]},
    {ok, {#{strategy => simple_one_for_one, intensity => 10, period => 10}, [Poller]}}.
