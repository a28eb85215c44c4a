%% @private
%% @doc The weft application: checks the configuration, loads the NIF,
%% then starts the supervisor.
-module(weft_app).
-behaviour(application).

-export([start/2, stop/1, preflight/0]).

%% A configuration that cannot start is refused here, before any process
%% starts: `application:start(weft)' (or a release's boot) fails with the
%% reason, not with the crash of `weft_server' under the supervisor.
-spec start(application:start_type(), term()) -> {ok, pid()} | {error, term()}.
start(_Type, _Args) ->
    case preflight() of
        ok ->
            case weft_nif:load() of
                ok -> weft_sup:start_link();
                {error, _} = Error -> Error
            end;
        {error, _} = Error ->
            Error
    end.

-spec stop(term()) -> ok.
stop(_State) ->
    ok.

%% @doc What can be checked before the application starts: the
%% configuration in the (loaded) application environment, and whether the
%% listen address can be bound (a fixed port: whether it is free).
%% {@link weft:start/0} calls it before it starts the application, so that
%% a start that cannot succeed returns its error without the supervisor
%% and crash reports of a failed application start (a start of the
%% application itself reports its failure: the application master's crash
%% report). A port taken between this check and the transport's own bind,
%% a few milliseconds later, still fails the start, with those reports.
-spec preflight() -> ok | {error, term()}.
preflight() ->
    case weft_config:from_env() of
        {ok, #{listen := {Ip, Port}}} ->
            Family = [inet6 || tuple_size(Ip) =:= 8],
            %% as the transport binds: SO_REUSEADDR
            case gen_tcp:listen(Port, [{ip, Ip}, {reuseaddr, true} | Family]) of
                {ok, S} ->
                    gen_tcp:close(S),
                    ok;
                {error, Reason} ->
                    {error, {listen, {Ip, Port}, Reason}}
            end;
        {error, _} = Error ->
            Error
    end.
