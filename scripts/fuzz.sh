#!/usr/bin/env bash
# fuzz.sh - fuzz p11ha's two parsers of outside input (fuzz/, cargo fuzz), each for a while:
#   rpc_reply  the p11-kit RPC client's handling of replies: every reply the client reads comes
#              from the fuzzer, through the scripted server of adapters/src/rpc/script.rs (input
#              format and invariants: fuzz/src/lib.rs);
#   config     the configuration parser, fed a P11HA_CONF file text and KEY=VALUE environment
#              pairs as libp11ha.so feeds it (input format and invariants: fuzz/src/config.rs).
#
# Usage: scripts/fuzz.sh [seconds]        (each target; default 30; from anywhere)
#        RUNS=10000000 SANITIZER=none scripts/fuzz.sh
#        TARGETS=config scripts/fuzz.sh 60 (only some targets; default "rpc_reply config")
#
# 1. installs what is missing: the nightly toolchain (rustup) and cargo-fuzz
#    (cargo install --locked);
# 2. runs the fuzz crate's own tests (the healthy seeds must answer every call of the harness;
#    the configuration seeds must report exactly their bad items);
# 3. writes the seed corpora into fuzz/corpus/<target> (fuzz/examples/seeds.rs: healthy
#    servers of each protocol version, error frames, a hang-up, bad framing;
#    fuzz/examples/config_seeds.rs: every item, well and badly, in a file and the environment),
#    running each seed once;
# 4. runs `cargo +nightly fuzz run <target>` for each target in turn, for the given seconds, or
#    for RUNS executions when RUNS is set (config with the dictionary fuzz/config.dict).
#    SANITIZER (default address) is passed to cargo fuzz; `none` runs about five times faster
#    here, and neither harness reaches unsafe code for a sanitizer to watch.
#
# A crash or a broken invariant stops it with a non-zero exit; the input is saved under
# fuzz/artifacts/<target>/ and replays with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
# The corpora grow in fuzz/corpus/<target> (git-ignored) and are reused by later runs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TIME=${1:-30}
say() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

RUNS=${RUNS:-}
SANITIZER=${SANITIZER:-address}
TARGETS=${TARGETS:-rpc_reply config}
[[ $TIME =~ ^[1-9][0-9]*$ ]] || fail "seconds must be a positive integer, not '$TIME'"
[[ -z $RUNS || $RUNS =~ ^[1-9][0-9]*$ ]] || fail "RUNS must be a positive integer, not '$RUNS'"

command -v cargo >/dev/null || fail "cargo not found (rustup)"
if ! cargo +nightly --version >/dev/null 2>&1; then
    command -v rustup >/dev/null || fail "no nightly toolchain and no rustup to install one"
    say "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    say "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

cd "$ROOT/fuzz"
for target in $TARGETS; do
    [[ -f fuzz_targets/$target.rs ]] || fail "no fuzz target '$target' (fuzz/fuzz_targets/)"
done
say "the harnesses' own tests"
cargo +nightly test --quiet
say "seed corpora"
cargo +nightly run --quiet --example seeds -- corpus/rpc_reply
cargo +nightly run --quiet --example config_seeds -- corpus/config
for target in $TARGETS; do
    EXTRA=()
    [[ -f $target.dict ]] && EXTRA=(-dict="$target.dict")
    if [[ -n $RUNS ]]; then
        say "fuzzing $target for $RUNS executions, sanitizer $SANITIZER ($(cargo fuzz --version))"
        LIMIT=(-runs="$RUNS")
    else
        say "fuzzing $target for $TIME s, sanitizer $SANITIZER ($(cargo fuzz --version))"
        LIMIT=(-max_total_time="$TIME")
    fi
    cargo +nightly fuzz run --sanitizer "$SANITIZER" "$target" -- "${LIMIT[@]}" "${EXTRA[@]}" \
        -print_final_stats=1
done
