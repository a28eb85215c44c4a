#!/bin/sh
# Run every fuzz target of fuzz/fuzz_targets/ (or those named as arguments)
# for FUZZ_SECONDS seconds each, one after the other, from its seeds
# (fuzz/seeds/<target>/, kept as they are) and its corpus
# (fuzz/corpus/<target>/, grown, and minimised at the end; FUZZ_CMIN=0 skips
# that). Crashes land in fuzz/artifacts/<target>/; the script then exits
# non-zero (after running the other targets). Called by `make fuzz`; see
# fuzz/README.md.
#
# cargo-fuzz wants nightly flags; RUSTC_BOOTSTRAP=1 lets the stable
# toolchain accept them. Per-target libFuzzer options (such as -max_len)
# come from a line `//! fuzz-options: ...` in the target's source.
set -u
cd "$(dirname "$0")/../fuzz"

seconds=${FUZZ_SECONDS:-600}
sanitizer=${FUZZ_SANITIZER:-none}
cmin=${FUZZ_CMIN:-1}
nice=${FUZZ_NICE:-10}
export RUSTC_BOOTSTRAP=1

if [ $# -gt 0 ]; then
    targets="$*"
else
    targets=$(for f in fuzz_targets/*.rs; do basename "$f" .rs; done)
fi

mkdir -p logs
failed=""
summary=""
for t in $targets; do
    src="fuzz_targets/$t.rs"
    if [ ! -f "$src" ]; then
        echo "fuzz: no target $src" >&2
        failed="$failed $t"
        continue
    fi
    if ! grep -q "^path = \"$src\"" Cargo.toml; then
        echo "fuzz: $src has no [[bin]] entry in fuzz/Cargo.toml (see fuzz/README.md)" >&2
        failed="$failed $t"
        continue
    fi
    opts=$(sed -n 's|^//! fuzz-options:||p' "$src" | head -n 1)
    [ -n "$opts" ] || opts="-max_len=4096"
    mkdir -p "corpus/$t" "artifacts/$t"
    before=$(ls "artifacts/$t" | wc -l)
    log="logs/$t.log"
    echo "fuzz: $t for ${seconds}s ($opts, sanitizer $sanitizer), log in fuzz/$log"
    # New inputs go to the first directory; seeds/<target>/ is read only.
    seeds=""
    [ -d "seeds/$t" ] && seeds="seeds/$t"
    nice -n "$nice" cargo fuzz run -s "$sanitizer" "$t" "corpus/$t" $seeds -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 $opts \
        >"$log" 2>&1
    rc=$?
    after=$(ls "artifacts/$t" | wc -l)
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
    if [ "$rc" -ne 0 ] || [ "$after" -gt "$before" ]; then
        echo "fuzz: $t FAILED (exit $rc); artifacts in fuzz/artifacts/$t/:" >&2
        ls -t "artifacts/$t" | head -n 5 >&2
        grep -m 5 -E 'panicked|ERROR|SUMMARY' "$log" >&2
        failed="$failed $t"
    elif [ "$cmin" = 1 ]; then
        nice -n "$nice" cargo fuzz cmin -s "$sanitizer" "$t" "corpus/$t" -- \
            -rss_limit_mb=2048 $opts >"logs/$t.cmin.log" 2>&1 ||
            echo "fuzz: cmin of $t failed (corpus kept), see fuzz/logs/$t.cmin.log" >&2
    fi
    files=$(ls "corpus/$t" | wc -l)
    bytes=$(find "corpus/$t" -type f -exec cat {} + | wc -c)
    line="$t: ${execs:-?} execs, ${cov:-cov: ?}, corpus $files files ($((bytes / 1024)) KiB), exit $rc"
    echo "fuzz: $line"
    summary="$summary
$line"
done

echo "fuzz summary:$summary"
if [ -n "$failed" ]; then
    echo "fuzz: failed:$failed" >&2
    exit 1
fi
