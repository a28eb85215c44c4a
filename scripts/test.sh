#!/bin/sh
# Run every test of weft and end with one line: "test: N passed, N failed".
# Called by `make test` after the build; exits non-zero if anything failed.
set -u
cd "$(dirname "$0")/.."
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

status=0
# No import circles between the modules of the two Rust crates.
for crate in weft_core weft_transport; do
    echo "module dependencies of $crate:"
    python3 scripts/deps.py "native/$crate/src" || { echo "import cycle in $crate" >&2; status=1; }
done
{ cargo test --workspace --locked; echo $? > "$log/cargo.rc"; } 2>&1 | tee "$log/cargo.txt"
[ "$(cat "$log/cargo.rc")" = 0 ] || status=1
rust_pass=$(grep -o 'test result: [a-zA-Z]*\. [0-9]* passed' "$log/cargo.txt" | awk '{s += $4} END {print s + 0}')
rust_fail=$(grep -o '[0-9]* failed;' "$log/cargo.txt" | awk '{s += $1} END {print s + 0}')

{ rebar3 ct; echo $? > "$log/ct.rc"; } 2>&1 | tee "$log/ct.txt"
ct_rc=$(cat "$log/ct.rc")
# rebar3 ct ends with "All N tests passed." or "Failed F tests. Passed P tests."
ct_pass=$(sed -n 's/.*All \([0-9]*\) tests passed.*/\1/p; s/.*Passed \([0-9]*\) tests.*/\1/p' "$log/ct.txt" | tail -n 1)
ct_fail=$(sed -n 's/.*Failed \([0-9]*\) tests.*/\1/p' "$log/ct.txt" | tail -n 1)
[ "$ct_rc" -ne 0 ] && status=1
[ -z "$ct_pass" ] && { ct_pass=0; status=1; }
[ -z "$ct_fail" ] && ct_fail=0

echo "rust: $rust_pass passed, $rust_fail failed; common_test: $ct_pass passed, $ct_fail failed"
echo "test: $((rust_pass + ct_pass)) passed, $((rust_fail + ct_fail)) failed"
exit $status
