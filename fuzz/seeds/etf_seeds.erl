%% Writes the seed inputs of the etf fuzz target: terms of every kind, as
%% term_to_binary/1,2 and term_to_iovec/1 encode them. From the root:
%%   erlc -o /tmp fuzz/seeds/etf_seeds.erl && erl -noshell -pa /tmp -eval 'etf_seeds:main(["fuzz/seeds/etf"])'
-module(etf_seeds).
-export([main/1]).
main([Dir]) ->
    Fun = fun(X) -> {X, self()} end,
    Terms = [0, 255, 256, -1, 1 bsl 31 - 1, -(1 bsl 31), 1 bsl 40, -(1 bsl 70), 1 bsl 2100,
             1.5, -0.0, 1.0e300, ok, '', 'héllo', 'λx', list_to_atom(lists:duplicate(255, $a)),
             [], "string", [1, 2 | 3], [a | b], lists:seq(1, 300), [[[[[]]]]],
             {}, {a}, list_to_tuple(lists:seq(1, 300)), #{}, #{a => 1, b => [2], <<"k">> => {3}},
             maps:from_list([{I, I} || I <- lists:seq(1, 40)]),
             <<>>, <<1, 2, 3>>, crypto:strong_rand_bytes(4096), <<1:3>>, <<255, 7:5>>,
             self(), make_ref(), hd(erlang:ports()), fun lists:reverse/1, Fun,
             {self(), {hello, make_ref(), <<"payload">>, #{key => [1.5, "s"]}}},
             {echo, {self(), [crypto:strong_rand_bytes(100), 42]}},
             lists:foldl(fun(_, Acc) -> {Acc} end, leaf, lists:seq(1, 199)),
             lists:foldl(fun(_, Acc) -> [Acc] end, leaf, lists:seq(1, 201))],
    Encoded = [term_to_binary(T) || T <- Terms]
        ++ [term_to_binary(T, [{minor_version, 0}]) || T <- [1.5, 'héllo', {1.5, ok}]]
        ++ [term_to_binary(T, [{minor_version, 1}]) || T <- [1.5, 'héllo']]
        ++ [term_to_binary(lists:seq(1, 100), [compressed])]
        ++ [iolist_to_binary(erlang:term_to_iovec({self(), crypto:strong_rand_bytes(2000)}))],
    lists:foldl(fun(B, I) ->
                        ok = file:write_file(filename:join(Dir, io_lib:format("seed-~3..0b", [I])), B),
                        I + 1
                end, 0, Encoded),
    io:format("~p seeds~n", [length(Encoded)]),
    halt().
