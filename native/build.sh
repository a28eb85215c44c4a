#!/bin/sh
# Build the weft NIF (release) and put it where weft_nif:load/0 looks:
# priv/weft_nif.so. Run by rebar3's pre-compile hook, from the weft root.
set -e
cd "$(dirname "$0")/.."
# The transport uses epoll and eventfd: it builds and runs on Linux only.
if [ "$(uname -s)" != Linux ]; then
    echo "weft: the NIF's transport is Linux-only (epoll, eventfd); cannot build it on $(uname -s)" >&2
    exit 1
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "weft: cargo not found; install Rust (https://rustup.rs) to build the NIF" >&2
    exit 1
fi
cargo build --release --locked -p weft_nif
mkdir -p priv
target="${CARGO_TARGET_DIR:-target}"
lib="$target/release/libweft_nif.so"
# Copy to a temporary name and rename, so a running VM never sees half a file.
cp "$lib" priv/weft_nif.so.tmp
mv priv/weft_nif.so.tmp priv/weft_nif.so
