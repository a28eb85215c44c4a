%% @doc Cyclon's shuffle, as a `weft_membership' protocol: an example to
%% read, and an overlay to use (`{overlay, {callback, weft_cyclon, Opts}}').
%%
%% Cyclon (Voulgaris, Gavidia, van Steen, "CYCLON: Inexpensive Membership
%% Management for Unstructured P2P Overlays", Journal of Network and Systems
%% Management 13(2), 2005) keeps on each node a small partial view of the
%% cluster (at most `view_size' entries, each a node and an age) and
%% refreshes it by shuffling: every period a node ages its entries, picks
%% the oldest, `Q', and sends `Q' its own fresh entry plus `shuffle_length -
%% 1' random others; `Q' answers with `shuffle_length' random entries of its
%% own, and each side merges what it got, filling empty slots first, then
%% replacing the entries it sent. The views stay small and random, and
%% stale entries (of nodes that left) age out. The members are the view
%% (this node keeps connections to the nodes in its view), plus a node
%% while a shuffle with it waits for its answer.
%%
%% Two things differ from the paper, both to suit a view that is also a set
%% of connections: the shuffle target `Q' stays in the view (its age set
%% back to 0 when it answers) as long as the view has room, so connections
%% do not come and go with each shuffle (with a full view it is replaced as
%% in the paper); and a node that connects to this one is put in the view
%% if there is room, which is how a newcomer that joined through a contact
%% gets known. A node that goes down leaves the view.
%%
%% The members being the view, connections follow it: with a view smaller
%% than the cluster, shuffles move entries from node to node, and each move
%% is a connection closed on one side (`nodedown' with reason `dropped')
%% and one opened elsewhere; small views (2-3) can also leave a node with
%% an empty view for a while, as Cyclon itself can. For a stable set of
%% connections use a `view_size' of at least the cluster's size minus one;
%% for large clusters, a protocol with a separate active view (HyParView)
%% suits weft better.
%%
%% What a peer sends is checked before it is used: of a shuffle or an
%% answer, at most `shuffle_length' entries are read, and an entry enters
%% the view only if it is `{Spec, Age}', `Spec' a node spec as
%% {@link weft:join/1} takes it (checked with `weft_config:check_spec/1',
%% and kept as checked) and `Age' a non-negative integer. Other entries are
%% dropped and counted (a warning at the 1st, 10th, 100th, ... one, none
%% per entry); a message of another shape, or an answer to no shuffle of
%% this node's, is ignored. So a peer cannot put in the view entries this
%% node could never connect to, nor entries that make it log.
%%
%% Options (`Opts', a map): `view_size' (default 8), `shuffle_length'
%% (default 4, at most `view_size').
-module(weft_cyclon).
-behaviour(weft_membership).

-include_lib("kernel/include/logger.hrl").

-export([init/1, join/2, leave/1, periodic/1, handle_up/3, handle_down/2, handle_message/3]).

-record(cyclon, {
    view = #{} :: #{node() => {map(), non_neg_integer()}},   % Node => {Spec, Age}
    pending = #{} :: #{node() => {map(), [node()], non_neg_integer()}},  % shuffles waiting: Spec, sent, periods
    self :: map() | undefined,
    size :: pos_integer(),
    length :: pos_integer(),
    dropped = 0 :: non_neg_integer()    % entries from peers that were not valid
}).

%% A shuffle not answered after this many periods is given up.
-define(PENDING_PERIODS, 3).
%% Ages a peer sends are taken up to this (an age only orders entries).
-define(MAX_AGE, 1 bsl 32).

init(Opts) when is_map(Opts) ->
    Size = maps:get(view_size, Opts, 8),
    Len = maps:get(shuffle_length, Opts, 4),
    true = is_integer(Size) andalso Size >= 1 andalso is_integer(Len) andalso Len >= 1 andalso Len =< Size,
    {ok, #cyclon{size = Size, length = Len}}.

join(#{name := Node} = Spec, S) ->
    done(S#cyclon{view = add(Node, Spec, S#cyclon.view, S#cyclon.size)}).

leave(S) ->
    done(S#cyclon{view = #{}, pending = #{}}).

periodic(S0) ->
    S = S0#cyclon{view = maps:map(fun(_, {Spec, Age}) -> {Spec, Age + 1} end, S0#cyclon.view),
                  pending = expire(S0#cyclon.pending)},
    case oldest(S#cyclon.view) of
        none ->
            done(S);
        Q ->
            Others = random_entries(maps:remove(Q, S#cyclon.view), S#cyclon.length - 1),
            View = case map_size(S#cyclon.view) >= S#cyclon.size of
                       true -> maps:remove(Q, S#cyclon.view);   % as in the paper
                       false -> S#cyclon.view
                   end,
            Sent = [N || {N, _, _} <- Others],
            Entries = [{self_spec(S), 0} | [{Spec, Age} || {_, Spec, Age} <- Others]],
            {QSpec, _} = maps:get(Q, S#cyclon.view),
            {ok, Members, [], S1} = done(S#cyclon{view = View,
                                                  pending = (S#cyclon.pending)#{Q => {QSpec, Sent, 0}}}),
            {ok, Members, [{Q, {cyclon_shuffle, Entries}}], S1}
    end.

handle_up(Node, Spec, S) ->
    View = case S#cyclon.view of
               #{Node := {_, Age}} -> (S#cyclon.view)#{Node := {Spec, Age}};
               V -> add(Node, Spec, V, S#cyclon.size)
           end,
    done(S#cyclon{view = View}).

handle_down(Node, S) ->
    done(S#cyclon{view = maps:remove(Node, S#cyclon.view),
                  pending = maps:remove(Node, S#cyclon.pending)}).

handle_message(From, {cyclon_shuffle, Received}, S) ->
    case entries(From, Received, S) of
        {ok, Entries, S0} ->
            Reply = random_entries(maps:remove(From, S0#cyclon.view), S0#cyclon.length),
            Sent = [N || {N, _, _} <- Reply],
            S1 = merge(Entries, Sent, S0),
            {ok, Members, [], S2} = done(S1),
            {ok, Members, [{From, {cyclon_reply, [{Spec, Age} || {_, Spec, Age} <- Reply]}}], S2};
        error ->
            done(S)
    end;
handle_message(From, {cyclon_reply, Received}, S) ->
    case maps:find(From, S#cyclon.pending) of
        {ok, {_, Sent, _}} ->
            case entries(From, Received, S) of
                {ok, Entries, S0} ->
                    View = case S0#cyclon.view of
                               #{From := {Spec, _}} -> (S0#cyclon.view)#{From := {Spec, 0}};
                               V -> V
                           end,
                    done(merge(Entries, Sent, S0#cyclon{view = View,
                                                        pending = maps:remove(From, S0#cyclon.pending)}));
                error ->
                    done(S)
            end;
        error ->
            %% (an answer to no shuffle of this node's)
            done(S)
    end;
handle_message(_From, _Other, S) ->
    done(S).

%%% Internals

%% The members: the view, and the nodes whose shuffle answer is awaited.
done(S) ->
    Pending = [Spec || {N, {Spec, _, _}} <- maps:to_list(S#cyclon.pending),
                       not maps:is_key(N, S#cyclon.view)],
    Members = [Spec || {Spec, _} <- maps:values(S#cyclon.view)] ++ Pending,
    {ok, Members, [], S}.

%% Shuffles waiting one more period; those waiting too long given up.
expire(Pending) ->
    maps:filtermap(fun(_, {Spec, Sent, P}) when P + 1 < ?PENDING_PERIODS -> {true, {Spec, Sent, P + 1}};
                      (_, _) -> false
                   end, Pending).

add(Node, Spec, View, Size) ->
    case maps:is_key(Node, View) orelse Node =:= node() orelse map_size(View) >= Size of
        true -> View;
        false -> View#{Node => {Spec, 0}}
    end.

oldest(View) when map_size(View) =:= 0 ->
    none;
oldest(View) ->
    {_, Node} = lists:max([{Age, N} || {N, {_, Age}} <- maps:to_list(View)]),
    Node.

%% Up to `N' random entries of `View', as `{Node, Spec, Age}'.
random_entries(View, N) ->
    Shuffled = [E || {_, E} <- lists:sort([{rand:uniform(), {Node, Spec, Age}}
                                           || {Node, {Spec, Age}} <- maps:to_list(View)])],
    lists:sublist(Shuffled, max(0, N)).

%% The entries a peer sent, checked: `{ok, [{Spec, Age}], S}' (the count
%% of dropped entries updated), or `error' if `Received' is not a list.
%% At most `shuffle_length' entries are read; an entry is kept if it is
%% `{Spec, Age}' with `Spec' a node spec as weft:join/1 takes it (kept as
%% checked: name and addresses, channels if any) and `Age' a non-negative
%% integer; this node's own entry is left out.
entries(From, Received, S) ->
    case first(Received, S#cyclon.length) of
        {ok, Taken} ->
            {Entries, Bad} = lists:foldr(fun(E, {Good, B}) ->
                                                 case entry(E) of
                                                     {ok, Entry} -> {[Entry | Good], B};
                                                     self -> {Good, B};
                                                     error -> {Good, B + 1}
                                                 end
                                         end, {[], 0}, Taken),
            {ok, Entries, dropped(From, Bad, S)};
        error ->
            error
    end.

entry({Spec, Age}) when is_integer(Age), Age >= 0 ->
    case weft_config:check_spec(Spec) of
        {ok, Checked} -> {ok, {Checked, min(Age, ?MAX_AGE)}};
        self -> self;
        {error, _} -> error
    end;
entry(_) ->
    error.

%% The first `N' elements of a list (whatever follows them); `error' if it
%% is not a list, or ends improperly before.
first(L, N) ->
    first(L, N, []).

first(_, 0, Acc) -> {ok, lists:reverse(Acc)};
first([], _, Acc) -> {ok, lists:reverse(Acc)};
first([E | Rest], N, Acc) -> first(Rest, N - 1, [E | Acc]);
first(_, _, _) -> error.

%% Count `Bad' more invalid entries, logging when the count reaches or
%% passes a power of ten (the 1st, 10th, 100th, ...).
dropped(_From, 0, S) ->
    S;
dropped(From, Bad, #cyclon{dropped = D} = S) ->
    Total = D + Bad,
    next_power_of_ten(1, D + 1) =< Total
        andalso ?LOG_WARNING("weft_cyclon: ~p invalid entries from peers dropped so far (the last from ~p)",
                             [Total, From], #{weft => true}),
    S#cyclon{dropped = Total}.

next_power_of_ten(P, N) when P < N -> next_power_of_ten(P * 10, N);
next_power_of_ten(P, _) -> P.

%% Merge received entries (checked): skip this node and nodes already in
%% the view; fill empty slots first, then replace the entries sent (`Sent').
merge(Entries, Sent, S) ->
    {View, _} = lists:foldl(
                  fun({#{name := Node} = Spec, Age}, {V, Replaceable}) ->
                          case Node =:= node() orelse maps:is_key(Node, V) of
                              true -> {V, Replaceable};
                              false when map_size(V) < S#cyclon.size -> {V#{Node => {Spec, Age}}, Replaceable};
                              false ->
                                  case [R || R <- Replaceable, maps:is_key(R, V)] of
                                      [R | Rest] -> {maps:put(Node, {Spec, Age}, maps:remove(R, V)), Rest};
                                      [] -> {V, []}
                                  end
                          end
                  end, {S#cyclon.view, Sent}, Entries),
    S#cyclon{view = View}.

self_spec(#cyclon{self = undefined}) ->
    #{listen_addrs := Addrs} = weft:node_spec(),
    #{name => node(), listen_addrs => Addrs};
self_spec(#cyclon{self = Self}) ->
    Self.
