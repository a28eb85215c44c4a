%% @private
%% @doc The process that drives one poller of the transport.
%%
%% A poller (native/weft_transport/src/poller.rs) owns some of the
%% established connections: it reads them, delivering each message straight
%% to its destination process, and writes the frames queued on their lanes.
%% This process runs it on a normal scheduler, one bounded round per call,
%% the way the VM runs the I/O of its own ports: a busy node moves its
%% traffic without waking any other thread. When a round finds nothing to
%% do, the process waits for `{weft_poll, wake}', which the transport sends
%% when a socket becomes ready or a frame is queued. It is not a router:
%% messages never pass through its mailbox. The whole wake-up protocol
%% (who marks the poller idle, who wakes it, why no wake-up is lost) is
%% described in native/weft_transport/src/wake.rs.
-module(weft_poller).

-export([start_link/1, init/1, new_registry/0]).

-include_lib("kernel/include/logger.hrl").

%% @doc Start a process that drives `Poller' until the transport stops
%% (a child of {@link weft_poller_sup}).
-spec start_link(reference()) -> {ok, pid()}.
start_link(Poller) ->
    case ets:insert_new(?MODULE, {Poller}) of
        true ->
            ok;
        false ->
            ?LOG_WARNING("weft: poller process restarted: the previous one for this poller ended "
                         "(see its supervisor's report); its connections were kept",
                         #{weft => true})
    end,
    {ok, proc_lib:spawn_link(?MODULE, init, [Poller])}.

%% @private
%% The table of pollers that had a process, owned by the calling
%% supervisor (it lives and dies with it).
-spec new_registry() -> ok.
new_registry() ->
    ?MODULE = ets:new(?MODULE, [named_table, public, set]),
    ok.

%% @private
-spec init(reference()) -> ok.
init(Poller) ->
    loop(Poller).

loop(Poller) ->
    case weft_nif:poll(Poller) of
        more ->
            loop(Poller);
        linger ->
            %% Traffic a moment ago: look again once the processes ready to
            %% run have run (they may be about to send), instead of sleeping.
            erlang:yield(),
            loop(Poller);
        wait ->
            receive {weft_poll, wake} -> ok end,
            drain(),
            loop(Poller);
        stopped ->
            ok
    end.

%% Wake-ups that came while polling: the next round sees their work anyway.
drain() ->
    receive {weft_poll, wake} -> drain()
    after 0 -> ok
    end.
