%% @doc The native (Rust) half of weft, loaded as a NIF.
%%
%% Internal: applications call {@link weft}. Every function here returns
%% quickly: sending only enqueues; start, stop and info run on dirty
%% schedulers. Until {@link load/0} has succeeded every function raises
%% `nif_not_loaded'.
-module(weft_nif).

-include_lib("kernel/include/logger.hrl").

-export([load/0]).
-export([start/1, stop/0, node_spec/0, join/1, leave/0, leave/1,
         members/0, nodes/0, send/4, park/4, admit/0, unpark/1, poll/1, info/0, count/2, debug_panic/1, decode_external/2,
         membership_decision/2, atom_room_mark/0, atom_room/2]).

-define(NOT_LOADED, erlang:nif_error(nif_not_loaded)).

%% @doc Load `priv/weft_nif.so'. Returns `ok' (also when already loaded) or
%% `{error, {nif_not_loaded, Path, Reason}}', and logs what to do about it.
-spec load() -> ok | {error, {nif_not_loaded, file:filename(), term()}}.
load() ->
    Path = filename:join(priv_dir(), "weft_nif"),
    case erlang:load_nif(Path, 0) of
        ok -> ok;
        {error, {reload, _}} -> ok;
        {error, {upgrade, _}} -> ok;
        {error, Reason} ->
            ?LOG_ERROR("weft: cannot load the native library ~ts.so (~p); "
                       "build it with `rebar3 compile` (needs cargo)",
                       [Path, Reason], #{weft => true}),
            {error, {nif_not_loaded, Path ++ ".so", Reason}}
    end.

priv_dir() ->
    case code:priv_dir(weft) of
        {error, bad_name} ->
            %% Not installed as an application: next to the beam's directory.
            Ebin = filename:dirname(code:which(?MODULE)),
            filename:join(filename:dirname(Ebin), "priv");
        Dir ->
            Dir
    end.

%% @doc Start the transport. `Opts' is the map {@link weft_config} makes,
%% plus `event_pid'. Returns a guard whose collection stops the transport,
%% and the pollers, each to be driven by a process calling {@link poll/1}.
-spec start(map()) -> {ok, reference(), [reference()]} | {error, term()}.
start(_Opts) -> ?NOT_LOADED.

%% @doc Stop the transport: every socket and thread. Idempotent.
-spec stop() -> ok.
stop() -> ?NOT_LOADED.

-spec node_spec() -> map() | {error, not_started}.
node_spec() -> ?NOT_LOADED.

-spec join(map()) -> ok | {error, term()}.
join(_Spec) -> ?NOT_LOADED.

-spec leave() -> ok | {error, not_started}.
leave() -> ?NOT_LOADED.

-spec membership_decision([map()], [{node(), binary()}]) -> ok | {error, badarg | not_started}.
membership_decision(_Members, _Messages) -> ?NOT_LOADED.

-spec leave(node()) -> ok | {error, not_started}.
leave(_Node) -> ?NOT_LOADED.

-spec members() -> [node()] | {error, not_started}.
members() -> ?NOT_LOADED.

-spec nodes() -> [node()] | {error, not_started}.
nodes() -> ?NOT_LOADED.

%% @doc Queue `Payload', the encoded `{Dest, Msg}' (a binary, or the list
%% of binaries `erlang:term_to_iovec/1' returns), for `Node' on `Channel'.
%% `Lane' is a 32-bit hash (of the partition key or the destination) or
%% `{index, Key}' for an integer key (lane `Key rem N'). Large payloads are
%% pinned, not copied: the call is short at any size.
-spec send(node(), atom(), non_neg_integer() | {index, non_neg_integer()}, binary() | [binary()]) ->
          ok | {error, term()}.
send(_Node, _Channel, _Lane, _Payload) -> ?NOT_LOADED.

%% @doc One round of `Poller' in the calling process: `more' (call again),
%% `linger' (call again after letting other processes run), `wait' (call
%% again after `{weft_poll, wake}' arrives) or `stopped'.
-spec poll(reference()) -> more | linger | wait | stopped.
poll(_Poller) -> ?NOT_LOADED.

-spec info() -> map() | {error, not_started | timeout}.
info() -> ?NOT_LOADED.

%% @doc Count a message this node dropped (`dropped', `no_destination') or a
%% send it refused (`refused', `unknown_channel') outside the transport: a
%% send to this node itself; and, for a channel with `overload => wait', a
%% send that waited for room (`waited', `overloaded') or gave up (`refused',
%% `overloaded'). `ok', or `{error, not_started}'.
-spec count(dropped | refused | waited, atom()) -> ok | {error, not_started | {badarg, term()}}.
count(_Kind, _Reason) -> ?NOT_LOADED.

%% @doc As {@link send/4}, for a channel with `overload => wait' whose
%% send found no room: `ok' if the message went after all (it fits now with
%% the bytes of the messages parked already held for them), or `{parked,
%% Ticket, Id}':
%% it waits in the transport, in the order of the senders that wait (the
%% oldest 20 ms of waits first, a random order within them; see
%% native/weft_core/src/admission.rs), and the caller gets `{weft_room,
%% Id, Result}' (`ok' or `{error, Reason}' as from `send/4') once it went.
%% Keep `Ticket' while waiting: if it is dropped (the process died) the
%% message is taken out. Errors as `send/4''s, never `overloaded'.
-spec park(node(), atom(), non_neg_integer() | {index, non_neg_integer()}, iodata()) ->
          ok | {parked, reference(), pos_integer()} | {error, term()}.
park(_Node, _Channel, _Lane, _Payload) -> ?NOT_LOADED.

%% @doc Send the parked messages that fit now, in their order, and tell
%% their senders; the transport sends the caller `{weft_nif, room}' when a
%% bound that a parked message waits for has room again (only {@link
%% weft_room} calls this). `{Sent, Parked, Again}': messages sent, messages
%% still parked, and whether to call again at once.
-spec admit() -> {non_neg_integer(), non_neg_integer(), boolean()} | {error, not_started}.
admit() -> ?NOT_LOADED.

%% @doc Take the message parked with `Ticket' out: `cancelled' (it will not
%% be sent, and no `{weft_room, Id, _}' comes), `sent' (it went: that
%% message is in the caller's mailbox already), or `{error, not_started}'
%% (the transport it was parked in is gone, and the message with it).
-spec unpark(reference()) -> cancelled | sent | {error, not_started}.
unpark(_Ticket) -> ?NOT_LOADED.

%% @doc Step 1 of a measurement of the atom table: a mark, taken before
%% `erlang:system_info(atom_count)' is read, for {@link atom_room/2}.
-spec atom_room_mark() -> integer().
atom_room_mark() -> ?NOT_LOADED.

%% @doc How many more atoms received messages may create: `Free', the
%% node's free atom table entries above a reserve, counted after `Mark'
%% was taken ({@link atom_room_mark/0}; `weft_server' measures every
%% second). Atoms that decodes took room for and had not made by the mark
%% are subtracted. A received message that would create atoms past the
%% room is dropped and counted (`dropped.atom_limit'), so that no peer can
%% fill the atom table, which would end the VM.
-spec atom_room(integer(), integer()) -> ok.
atom_room(_Free, _Mark) -> ?NOT_LOADED.

%% @doc Test hook: panic inside a NIF call (`nif') or on a background
%% thread (`thread'). Neither may take the VM down.
-spec debug_panic(nif | thread) -> ok.
debug_panic(_Where) -> ?NOT_LOADED.

%% @doc Test hook: decode `Bin' (external term format) the way a large
%% received frame is decoded, sharing binaries of `ShareMin' bytes or more
%% with `Bin'. `fallback' means the VM's own decoder would be used.
-spec decode_external(binary(), non_neg_integer()) -> {decoded, term()} | fallback.
decode_external(_Bin, _ShareMin) -> ?NOT_LOADED.
