# weft: `make demo` and `make test` do all set-up on a fresh Debian 12 machine with Rust.

REBAR ?= rebar3
ERL_PACKAGES = erlang-nox erlang-dev erlang-common-test erlang-eunit erlang-proper erlang-proper-dev rebar3
# libfaketime: the tests restart a node with its clock set back.
TEST_PACKAGES = libfaketime
SUDO = $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test demo bench bench-full bench-build bench-flood bench-memory fuzz fuzz-cases clean

all: build

# Erlang/OTP, rebar3 and common_test from Debian's packages, when missing.
deps:
	@if command -v erl >/dev/null 2>&1 && command -v $(REBAR) >/dev/null 2>&1 && \
	    erl -noshell -eval 'case {code:lib_dir(common_test), code:lib_dir(proper)} of {{error, _}, _} -> halt(1); {_, {error, _}} -> halt(1); {_, P} -> halt(case filelib:is_file(filename:join([P, "include", "proper.hrl"])) of true -> 0; false -> 1 end) end.' >/dev/null 2>&1; then \
	    echo "Erlang/OTP $$(erl -noshell -eval 'io:put_chars(erlang:system_info(otp_release)), halt().'), rebar3, common_test and PropEr: present"; \
	else \
	    echo "installing $(ERL_PACKAGES) from Debian's packages"; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(ERL_PACKAGES); \
	fi
	@if ! ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then \
	    echo "installing $(TEST_PACKAGES) from Debian's packages"; \
	    $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(TEST_PACKAGES); \
	fi
	@command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust first (https://rustup.rs)"; exit 1; }

build: deps
	$(REBAR) compile

# Every test: the Rust workspace (core, codec, simulator, loopback transport)
# and the common_test suites over real peer nodes. Ends with one summary line.
test: build
	@sh scripts/test.sh

demo: build
	@mkdir -p _build/demo
	erlc +warnings_as_errors -o _build/demo demo/weft_demo.erl
	erl -sname weft_demo -noshell -pa _build/default/lib/weft/ebin -pa _build/demo \
	    -eval 'weft_demo:main()'

# Benchmarks: weft against Distributed Erlang and the network's limit,
# through the weft-netem proxy. Quick subset (about 8 min) and the whole matrix.
bench-build: build
	@python3 -c 'import matplotlib' 2>/dev/null || pip install -q matplotlib
	cargo build --release --locked -p weft_netem
	@mkdir -p _build/bench
	erlc +warnings_as_errors -o _build/bench bench/weft_bench.erl bench/weft_bench_epmd.erl bench/weft_stream.erl bench/weft_callgrind.erl bench/weft_passes.erl bench/weft_fresh_stream.erl bench/weft_wait_bench.erl

bench: bench-build
	timeout 900 erl -noshell -pa _build/default/lib/weft/ebin -pa _build/bench -eval 'weft_bench:main(quick)'
	python3 bench/plot.py $$(ls -t bench/results/quick-latest.csv bench/results/quick-own-latest.csv 2>/dev/null | head -1)

bench-full: bench-build
	timeout 2700 erl -noshell -pa _build/default/lib/weft/ebin -pa _build/bench -eval 'weft_bench:main(full)'
	python3 bench/plot.py $$(ls -t bench/results/full-latest.csv bench/results/full-own-latest.csv 2>/dev/null | head -1)

# Fuzzing (cargo-fuzz, libFuzzer): every target in fuzz/fuzz_targets/ for
# FUZZ_SECONDS each (FUZZ_TARGETS="etf" picks some), growing and minimising
# fuzz/corpus/<target>/. A crash fails it and lands in fuzz/artifacts/.
# Stable toolchain: scripts/fuzz.sh sets RUSTC_BOOTSTRAP=1. See fuzz/README.md.
FUZZ_SECONDS ?= 600
FUZZ_TARGETS ?=
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
	@FUZZ_SECONDS=$(FUZZ_SECONDS) sh scripts/fuzz.sh $(FUZZ_TARGETS)

# The frame header decoder over 1,000,000 generated headers, valid and
# mutated (WEFT_HEADER_CASES=N for another count); `cargo test` runs 20,000.
WEFT_HEADER_CASES ?= 1000000
fuzz-cases:
	WEFT_HEADER_CASES=$(WEFT_HEADER_CASES) cargo test --release --locked -p weft_core --lib \
	    frame::tests::header_cases_million -- --ignored --nocapture

# How long one send blocks its caller and its scheduler under a flood of
# 1,000,000 100-byte messages (1 and 8 senders), weft against disterl:
# first with each node in a session of its own (as `peer` starts them; with
# the kernel's autogroup on, the CPU is split between the nodes), then as
# every bench target runs them where it can: all in one cpu cgroup (shared
# like threads of one program; needs root). See WEFT_BENCH_CPU_GROUP in
# bench/weft_bench.erl.
bench-flood: bench-build
	WEFT_BENCH_CPU_GROUP=own timeout 900 erl -noshell -pa _build/default/lib/weft/ebin -pa _build/bench -eval 'weft_bench:main(flood)'
	timeout 900 erl -noshell -pa _build/default/lib/weft/ebin -pa _build/bench -eval 'weft_bench:main(flood)'

# A's memory while it floods a peer stopped with SIGSTOP (send_queue_limit 64 MiB).
bench-memory: bench-build
	timeout 300 erl -noshell -pa _build/default/lib/weft/ebin -pa _build/bench -eval 'weft_bench:main(memory)'

clean:
	$(REBAR) clean
	cargo clean
	rm -rf _build priv/weft_nif.so
