%% @doc The decoder of large received frames (native/weft_nif/src/etf.rs),
%% against the VM's own `binary_to_term/1', with PropEr: every term that
%% `term_to_binary/1' can produce decodes to an equal term, large binaries
%% are shared with the frame instead of copied, and what the decoder does
%% not handle is left to the VM (`fallback') rather than decoded wrongly.
-module(weft_codec_SUITE).

-include_lib("common_test/include/ct.hrl").
-include_lib("stdlib/include/assert.hrl").
-include_lib("proper/include/proper.hrl").

-export([all/0, suite/0, init_per_suite/1, end_per_suite/1]).
-export([any_term_decodes_as_the_vm_decodes_it/1, large_binaries_are_shared/1,
         small_binaries_are_copied/1, what_it_does_not_handle_falls_back/1,
         old_encodings_decode/1]).

suite() ->
    %% (generous: on a loaded 2-core machine the properties run long)
    [{timetrap, {minutes, 10}}].

all() ->
    [any_term_decodes_as_the_vm_decodes_it, large_binaries_are_shared,
     small_binaries_are_copied, what_it_does_not_handle_falls_back, old_encodings_decode].

init_per_suite(Config) ->
    ok = weft_nif:load(),
    Config.

end_per_suite(_Config) ->
    ok.

%%% Generators

%% Terms of every kind the external format has, nested.
nested() ->
    ?SIZED(S, nested(S)).

nested(0) ->
    leaf();
nested(S) ->
    frequency([{4, leaf()},
               {1, ?LAZY(list(nested(S div 3)))},
               {1, ?LAZY(improper())},
               {1, ?LAZY(?LET(L, list(nested(S div 3)), list_to_tuple(L)))},
               {1, ?LAZY(?LET(KVs, list({nested(S div 4), nested(S div 4)}), maps:from_list(KVs)))}]).

improper() ->
    ?LET({H, T}, {non_empty(list(leaf())), oneof([int(), atom(), binary()])}, H ++ T).

leaf() ->
    oneof([int(), integer(-(1 bsl 70), 1 bsl 70), float(), atom(), unicode_atom(),
           binary(), bitstring(), string(), utf8(),
           exactly(self()), exactly(make_ref()), exactly(hd(erlang:ports())),
           exactly(fun lists:reverse/1), exactly(fun(X) -> {X, self()} end),
           exactly(<<>>), exactly([]), exactly({}), exactly(#{})]).

unicode_atom() ->
    ?LET(S, non_empty(list(oneof([range($a, $z), range(16#e0, 16#ff), range(16#3b1, 16#3c9)]))),
         list_to_atom(lists:sublist(S, 255))).

decode(T, ShareMin) ->
    weft_nif:decode_external(term_to_binary(T), ShareMin).

%%% Cases

any_term_decodes_as_the_vm_decodes_it(_Config) ->
    Prop = ?FORALL(T, nested(),
                   ?FORALL(ShareMin, oneof([0, 1, 16, 1 bsl 30]),
                           decode(T, ShareMin) =:= {decoded, T})),
    ?assert(proper:quickcheck(Prop, [{numtests, 1000}, {on_output, fun ct:log/2}])).

large_binaries_are_shared(_Config) ->
    Big = crypto:strong_rand_bytes(1024 * 1024),
    Msg = {self(), make_ref(), Big, #{key => [Big]}},
    Frame = term_to_binary(Msg),
    {decoded, Got} = weft_nif:decode_external(Frame, 64 * 1024),
    ?assertEqual(Msg, Got),
    {_, _, GotBig, #{key := [GotBig2]}} = Got,
    %% sub-binaries of the frame: they reference all of it
    ?assertEqual(byte_size(Frame), binary:referenced_byte_size(GotBig)),
    ?assertEqual(byte_size(Frame), binary:referenced_byte_size(GotBig2)).

small_binaries_are_copied(_Config) ->
    Small = crypto:strong_rand_bytes(1000),
    Frame = term_to_binary({Small, crypto:strong_rand_bytes(1024 * 1024)}),
    {decoded, {Got, _}} = weft_nif:decode_external(Frame, 64 * 1024),
    ?assertEqual(Small, Got),
    ?assertEqual(1000, binary:referenced_byte_size(Got)).

what_it_does_not_handle_falls_back(_Config) ->
    Term = {lists:seq(1, 1000), crypto:strong_rand_bytes(100)},
    %% compressed
    ?assertEqual(fallback, weft_nif:decode_external(term_to_binary(Term, [compressed]), 0)),
    %% deeper than the decoder recurses
    Deep = lists:foldl(fun(_, Acc) -> {Acc} end, leaf, lists:seq(1, 1000)),
    ?assertEqual(fallback, weft_nif:decode_external(term_to_binary(Deep), 0)),
    Deep2 = lists:foldl(fun(_, Acc) -> [Acc] end, leaf, lists:seq(1, 1000)),
    ?assertEqual(fallback, weft_nif:decode_external(term_to_binary(Deep2), 0)),
    %% malformed: truncated at every length, trailing bytes, no version byte
    Bin = term_to_binary({self(), make_ref(), [1, 2.5, <<"abc">>, "str", #{a => b}]}),
    [?assertEqual(fallback, weft_nif:decode_external(binary:part(Bin, 0, N), 0))
     || N <- lists:seq(0, byte_size(Bin) - 1)],
    ?assertEqual(fallback, weft_nif:decode_external(<<Bin/binary, 0>>, 0)),
    <<131, Rest/binary>> = Bin,
    ?assertEqual(fallback, weft_nif:decode_external(<<130, Rest/binary>>, 0)),
    %% lengths that claim more than there is
    ?assertEqual(fallback, weft_nif:decode_external(<<131, 108, 255, 255, 255, 255, 106>>, 0)),
    ?assertEqual(fallback, weft_nif:decode_external(<<131, 105, 255, 255, 255, 255>>, 0)),
    ?assertEqual(fallback, weft_nif:decode_external(<<131, 116, 255, 255, 255, 255>>, 0)),
    ?assertEqual(fallback, weft_nif:decode_external(<<131, 109, 0, 0, 0, 9, 1>>, 0)).

old_encodings_decode(_Config) ->
    Term = {1.5, -0.25, 'atom', [self()], 1 bsl 100},
    [?assertEqual({decoded, Term},
                  weft_nif:decode_external(term_to_binary(Term, [{minor_version, V}]), 0))
     || V <- [0, 1, 2]].
