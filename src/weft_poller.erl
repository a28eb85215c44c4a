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
    loop(Poller, normal).

%% `Prio': the process's priority now. A lingering poller runs at low
%% priority: when nothing else is ready it polls as often as it can, and
%% when other processes are ready they run first (the scheduler takes a
%% low-priority process about once per 8 normal ones), so a busy node does
%% not spend a system call on an empty poll between each of them. As soon
%% as a round finds work, or a wake-up comes, it is back to normal.
loop(Poller, Prio) ->
    case weft_nif:poll(Poller) of
        more ->
            loop(Poller, prio(Prio, normal));
        linger ->
            %% Traffic a moment ago: look again once the processes ready to
            %% run have run (they may be about to send), instead of sleeping.
            Lingering = prio(Prio, low),
            erlang:yield(),
            loop(Poller, Lingering);
        wait ->
            Normal = prio(Prio, normal),
            receive {weft_poll, wake} -> ok end,
            drain(),
            loop(Poller, Normal);
        stopped ->
            ok
    end.

prio(Same, Same) -> Same;
prio(_, New) -> process_flag(priority, New), New.

%% Wake-ups that came while polling: the next round sees their work anyway.
drain() ->
    receive {weft_poll, wake} -> drain()
    after 0 -> ok
    end.
