#!/usr/bin/env bash
# fuzz.sh - fuzz the p11-kit RPC client's handling of replies (fuzz/, target rpc_reply) for a
# while: every reply the client reads comes from the fuzzer, through the scripted server of
# adapters/src/rpc/script.rs (input format and invariants: fuzz/src/lib.rs).
#
# Usage: scripts/fuzz.sh [seconds]        (default 30; from anywhere)
#        RUNS=10000000 SANITIZER=none scripts/fuzz.sh
#
# 1. installs what is missing: the nightly toolchain (rustup) and cargo-fuzz
#    (cargo install --locked);
# 2. runs the fuzz crate's own tests (the healthy seeds must answer every call of the harness);
# 3. writes the seed corpus into fuzz/corpus/rpc_reply (fuzz/examples/seeds.rs: healthy
#    servers of each protocol version, error frames, a hang-up, bad framing), running each seed
#    once;
# 4. runs `cargo +nightly fuzz run rpc_reply` for the given seconds, or for RUNS executions
#    when RUNS is set. SANITIZER (default address) is passed to cargo fuzz; `none` runs about
#    five times faster here, and the client has no unsafe code for a sanitizer to watch.
#
# A crash or a broken invariant stops it with a non-zero exit; the input is saved under
# fuzz/artifacts/rpc_reply/ and replays with
#   cargo +nightly fuzz run rpc_reply fuzz/artifacts/rpc_reply/<file>
# The corpus grows in fuzz/corpus/rpc_reply (git-ignored) and is reused by later runs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TIME=${1:-30}
say() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

RUNS=${RUNS:-}
SANITIZER=${SANITIZER:-address}
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
say "the harness's own tests"
cargo +nightly test --quiet
say "seed corpus"
cargo +nightly run --quiet --example seeds -- corpus/rpc_reply
if [[ -n $RUNS ]]; then
    say "fuzzing rpc_reply for $RUNS executions, sanitizer $SANITIZER ($(cargo fuzz --version))"
    LIMIT=(-runs="$RUNS")
else
    say "fuzzing rpc_reply for $TIME s, sanitizer $SANITIZER ($(cargo fuzz --version))"
    LIMIT=(-max_total_time="$TIME")
fi
cargo +nightly fuzz run --sanitizer "$SANITIZER" rpc_reply -- "${LIMIT[@]}" -print_final_stats=1
