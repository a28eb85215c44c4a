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
%% messages never pass through its mailbox.
-module(weft_poller).

-export([start_link/1, init/1]).

%% @doc Start a process that drives `Poller' until the transport stops.
-spec start_link(reference()) -> {ok, pid()}.
start_link(Poller) ->
    {ok, proc_lib:spawn_link(?MODULE, init, [Poller])}.

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
