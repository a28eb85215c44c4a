%% A membership protocol that misbehaves on purpose, in the way its `Args'
%% says (weft_SUITE:callback_overlay_survives_a_bad_protocol).
-module(weft_evil_membership).
-behaviour(weft_membership).

-export([init/1, join/2, leave/1, periodic/1, handle_up/3, handle_down/2, handle_message/3]).

init(block) -> timer:sleep(infinity);
init(throw_ok) -> throw({ok, thrown});
init(Mode) -> {ok, #{mode => Mode, known => #{}}}.

join(#{name := N} = Spec, S) -> result(S#{known := (maps:get(known, S))#{N => Spec}}).
leave(S) -> result(S).
periodic(S) -> result(S).
handle_up(N, Spec, S) -> result(S#{known := (maps:get(known, S))#{N => Spec}}).
handle_down(_N, S) -> result(S).
handle_message(_From, _Msg, S) -> result(S).

%% Members as a sane protocol would give them, spoilt by the mode on every
%% other call (counted across calls in a persistent term: the state of a
%% spoilt call is dropped, as weft_membership promises).
result(#{mode := Mode, known := Known} = S) ->
    C = persistent_term:get(weft_evil_calls, 0),
    persistent_term:put(weft_evil_calls, C + 1),
    Members = maps:values(Known),
    %% every other call misbehaves (the others keep the protocol going)
    Wide = binary_to_atom(<<"日本@h"/utf8>>, utf8),
    case Mode of
        %% on every call: a member and a message named past Latin-1
        wide_names ->
            WideSpec = #{name => Wide, listen_addrs => [#{ip => {127, 0, 0, 1}, port => 1}]},
            {ok, Members ++ [WideSpec], [{Wide, x}], S};
        %% on every call: two invalid members, large (a spec with an
        %% unknown key and 100 KB in it, and a tuple of 100 KB)
        invalid_members ->
            Pad = binary:copy(<<"p">>, 100000),
            Junk = [#{name => 'junk@127.0.0.1', listen_addrs => [#{ip => {127, 0, 0, 1}, port => 9}], pad => Pad},
                    {spec, Pad}],
            {ok, Members ++ Junk, [], S};
        _ when C rem 2 =:= 0 -> {ok, Members, [], S};
        improper_members -> {ok, Members ++ improper, [], S};
        improper_messages -> {ok, Members, [{node(), x} | improper], S};
        huge_message -> {ok, Members, [{N, binary:copy(<<0>>, 2 * 1024 * 1024)} || N <- maps:keys(Known)], S};
        raise -> error(on_purpose);
        _ -> {ok, Members, [], S}
    end.
