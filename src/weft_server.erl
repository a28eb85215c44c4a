%% @private
%% @doc Owner of the running transport, and the Erlang end of its events.
%%
%% It validates the configuration, starts the transport (keeping the guard
%% whose collection stops it), and turns the transport's events into what
%% applications see: `{nodeup, Node}' / `{nodedown, Node}' for
%% `monitor_nodes' subscribers, `on_up' / `on_down' callbacks, replies to
%% `sync_join', and `logger' events. It is not on the message path: the
%% transport delivers application messages itself.
-module(weft_server).
-behaviour(gen_server).

-export([start_link/0, sync_join/3, monitor_nodes/2, on_event/3]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2, terminate/2]).

-record(state, {
    guard :: reference(),
    pollers = #{} :: #{pid() => reference()},
    subscribers = #{} :: #{pid() => reference()},
    callbacks = [] :: [{up | down, node() | any, fun()}],
    waiters = [] :: [{node(), gen_server:from(), reference()}]
}).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

%% @doc Join and wait for `nodeup' of the spec's node.
-spec sync_join(map(), node(), timeout()) -> ok | {error, term()}.
sync_join(Spec, Node, Timeout) ->
    call({sync_join, Spec, Node, Timeout}).

%% @doc Subscribe the caller to (or unsubscribe it from) nodeup/nodedown.
-spec monitor_nodes(pid(), boolean()) -> ok | {error, not_started}.
monitor_nodes(Pid, Flag) ->
    call({monitor_nodes, Pid, Flag}).

%% @doc Register a callback for `up' or `down' of `Node' (or `any').
-spec on_event(up | down, node() | any, fun()) -> ok | {error, not_started}.
on_event(Kind, Node, Fun) ->
    call({on_event, Kind, Node, Fun}).

call(Request) ->
    try
        gen_server:call(?MODULE, Request, infinity)
    catch
        exit:{noproc, _} -> {error, not_started}
    end.

%% gen_server

-spec init([]) -> {ok, #state{}} | {stop, term()}.
init([]) ->
    process_flag(trap_exit, true),
    case weft_config:from_env() of
        {ok, Opts} ->
            case weft_nif:start(Opts#{event_pid => self()}) of
                {ok, Guard, Pollers} ->
                    {ok, #state{guard = Guard, pollers = maps:from_list([start_poller(P) || P <- Pollers])}};
                {error, Reason} ->
                    {stop, Reason}
            end;
        {error, Reason} ->
            {stop, Reason}
    end.

-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, term(), #state{}} | {noreply, #state{}}.
handle_call({sync_join, Spec, Node, Timeout}, From, State) ->
    case lists:member(Node, weft_nif:nodes()) of
        true ->
            {reply, ok, State};
        false ->
            case weft_nif:join(Spec) of
                ok ->
                    Timer = erlang:start_timer(Timeout, self(), {sync_join, From}),
                    {noreply, State#state{waiters = [{Node, From, Timer} | State#state.waiters]}};
                Error ->
                    {reply, Error, State}
            end
    end;
handle_call({monitor_nodes, Pid, true}, _From, #state{subscribers = Subs} = State) ->
    case maps:is_key(Pid, Subs) of
        true -> {reply, ok, State};
        false -> {reply, ok, State#state{subscribers = Subs#{Pid => monitor(process, Pid)}}}
    end;
handle_call({monitor_nodes, Pid, false}, _From, #state{subscribers = Subs} = State) ->
    case maps:take(Pid, Subs) of
        {Ref, Rest} ->
            demonitor(Ref, [flush]),
            {reply, ok, State#state{subscribers = Rest}};
        error ->
            {reply, ok, State}
    end;
handle_call({on_event, Kind, Node, Fun}, _From, #state{callbacks = Cbs} = State) ->
    {reply, ok, State#state{callbacks = Cbs ++ [{Kind, Node, Fun}]}};
handle_call(_Other, _From, State) ->
    {reply, {error, unknown_call}, State}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast(_Msg, State) ->
    {noreply, State}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info({weft_nif, nodeup, Node}, State) ->
    notify(up, Node, State),
    {Ready, Waiting} = lists:partition(fun({N, _, _}) -> N =:= Node end, State#state.waiters),
    [begin erlang:cancel_timer(T), gen_server:reply(From, ok) end || {_, From, T} <- Ready],
    {noreply, State#state{waiters = Waiting}};
handle_info({weft_nif, nodedown, Node, Reason}, State) ->
    logger:notice("weft: node ~p down: ~ts", [Node, Reason], #{domain => [weft], peer => Node}),
    notify(down, Node, State),
    {noreply, State};
handle_info({weft_nif, log, Level, Text, Meta}, State) ->
    logger:log(Level, "weft: ~ts", [Text], Meta#{domain => [weft]}),
    {noreply, State};
handle_info({timeout, Timer, {sync_join, From}}, State) ->
    case lists:keytake(Timer, 3, State#state.waiters) of
        {value, _, Rest} ->
            gen_server:reply(From, {error, timeout}),
            {noreply, State#state{waiters = Rest}};
        false ->
            {noreply, State}
    end;
handle_info({'DOWN', _Ref, process, Pid, _}, #state{subscribers = Subs} = State) ->
    {noreply, State#state{subscribers = maps:remove(Pid, Subs)}};
handle_info({'EXIT', Pid, Reason}, #state{pollers = Pollers} = State) when is_map_key(Pid, Pollers) ->
    %% A poller's process ended while the transport runs: drive it again.
    {Poller, Rest} = maps:take(Pid, Pollers),
    logger:error("weft: poller process ~p ended (~p); restarting it", [Pid, Reason], #{domain => [weft]}),
    {New, Poller} = start_poller(Poller),
    {noreply, State#state{pollers = Rest#{New => Poller}}};
handle_info(_Other, State) ->
    {noreply, State}.

-spec terminate(term(), #state{}) -> ok.
terminate(_Reason, #state{pollers = Pollers}) ->
    weft_nif:stop(),
    %% Stopped pollers end their processes; these are gone already or soon.
    [exit(Pid, shutdown) || Pid <- maps:keys(Pollers)],
    ok.

start_poller(Poller) ->
    {ok, Pid} = weft_poller:start_link(Poller),
    {Pid, Poller}.

notify(Kind, Node, #state{subscribers = Subs, callbacks = Cbs}) ->
    Msg = case Kind of up -> {nodeup, Node}; down -> {nodedown, Node} end,
    [Pid ! Msg || Pid <- maps:keys(Subs)],
    [run_callback(Fun, Node) || {K, N, Fun} <- Cbs, K =:= Kind, N =:= any orelse N =:= Node],
    ok.

%% Callbacks run in their own process: a crash there is logged, not fatal.
run_callback(Fun, Node) ->
    spawn(fun() ->
                  try
                      case erlang:fun_info(Fun, arity) of
                          {arity, 0} -> Fun();
                          {arity, 1} -> Fun(Node)
                      end
                  catch
                      Class:Reason:Stack ->
                          logger:error("weft: on_up/on_down callback for ~p failed: ~p:~p ~p",
                                       [Node, Class, Reason, Stack], #{domain => [weft]})
                  end
          end).
