%% @private Sends the messages parked for room (channels with `overload =>
%% wait'; see {@link weft:forward/4} and `weft_nif:park/4') when the
%% transport says there is room.
%%
%% A sender whose message found no room parks it in the transport and
%% waits for `{weft_room, Id, Result}'. When the transport rings (`{weft_nif,
%% room}': the first message parked, or room for the parked ones, from the
%% thread that gave bytes back), this process calls `weft_nif:admit/0',
%% which sends the parked messages
%% that fit, in their order (the oldest 20 ms of waits first, a random
%% order within them: native/weft_core/src/admission.rs), tells their
%% senders, and asks the transport to ring when there is room for a batch
%% on each route still parked. While any message is parked it also looks every
%% ?SAFETY_MS milliseconds. With nothing parked it does nothing. It keeps
%% no state of the senders: if it dies, their senders (which monitor it)
%% take their messages out and park them again, in the 20 ms of waits of
%% that moment (they lose their place: rare).
-module(weft_room).
-behaviour(gen_server).

-export([start_link/0]).
-export([init/1, handle_call/3, handle_cast/2, handle_info/2]).

-define(SAFETY_MS, 100).
%% After a pass that sent nothing but found room for a message it tried
%% (given back meanwhile), look again after this many milliseconds rather
%% than at once.
-define(RETRY_MS, 1).

-record(state, {%% a `pass' message is on its way to this process
                pass_due = false :: boolean(),
                safety = false :: boolean()}).

-spec start_link() -> {ok, pid()} | {error, term()}.
start_link() ->
    gen_server:start_link({local, ?MODULE}, ?MODULE, [], []).

-spec init([]) -> {ok, #state{}}.
init([]) ->
    {ok, pass_soon(#state{})}.

-spec handle_call(term(), gen_server:from(), #state{}) -> {reply, {error, unknown_call}, #state{}}.
handle_call(_Req, _From, S) ->
    {reply, {error, unknown_call}, S}.

-spec handle_cast(term(), #state{}) -> {noreply, #state{}}.
handle_cast(_Msg, S) ->
    {noreply, S}.

-spec handle_info(term(), #state{}) -> {noreply, #state{}}.
handle_info(pass, S) ->
    {noreply, pass(S#state{pass_due = false})};
handle_info({weft_nif, room}, S) ->
    {noreply, pass_soon(S)};
handle_info(safety, S) ->
    {noreply, pass(S#state{safety = false})};
handle_info(_Msg, S) ->
    {noreply, S}.

%% Pass once the messages already here are handled (a burst of parked
%% senders and rings costs one pass).
pass_soon(#state{pass_due = true} = S) ->
    S;
pass_soon(S) ->
    self() ! pass,
    S#state{pass_due = true}.

pass(S) ->
    case nif(fun weft_nif:admit/0) of
        {Sent, Parked, Again} ->
            S1 = case Again of
                     true when Sent > 0 ->
                         pass_soon(S);
                     true ->
                         erlang:send_after(?RETRY_MS, self(), pass),
                         S#state{pass_due = true};
                     false ->
                         S
                 end,
            safety(Parked, S1);
        _ ->
            %% weft not running: nothing is parked
            S
    end.

safety(0, S) ->
    S;
safety(_, #state{safety = true} = S) ->
    S;
safety(_, S) ->
    erlang:send_after(?SAFETY_MS, self(), safety),
    S#state{safety = true}.

nif(F) ->
    try
        F()
    catch
        error:nif_not_loaded -> {error, not_started};
        error:undef -> {error, not_started}
    end.
