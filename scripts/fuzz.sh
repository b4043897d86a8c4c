#!/usr/bin/env bash
# fuzz.sh - fuzz p11ha's two parsers of outside input (fuzz/, cargo fuzz):
#   rpc_reply  the p11-kit RPC client's handling of replies: every reply the client reads comes
#              from the fuzzer, through the scripted server of adapters/src/rpc/script.rs (input
#              format and invariants: fuzz/src/lib.rs);
#   config     the configuration parser, fed a P11HA_CONF file text and KEY=VALUE environment
#              pairs as libp11ha.so feeds it (input format and invariants: fuzz/src/config.rs).
#
# Usage: scripts/fuzz.sh --ci             (the CI gate: deterministic, see below)
#        scripts/fuzz.sh [seconds]        (long runs: each target; default 30; from anywhere)
#        RUNS=10000000 SANITIZER=none scripts/fuzz.sh
#        TARGETS=config scripts/fuzz.sh 60 (only some targets; default "rpc_reply config")
#
# 1. installs what is missing: the nightly toolchain (rustup) and cargo-fuzz
#    (cargo install --locked);
# 2. runs the fuzz crate's own tests (the healthy seeds must answer every call of the harness;
#    the configuration seeds must report exactly their bad items; every input kept under
#    fuzz/regressions/<target>/ runs clean);
# 3. writes the seed corpora (fuzz/examples/seeds.rs: healthy servers of each protocol
#    version, error frames, a hang-up, bad framing; fuzz/examples/config_seeds.rs: every item,
#    well and badly, in a file and the environment), running each seed once;
# 4. runs each target through the fuzz binary (with SANITIZER, default address) over the seeds
#    and fuzz/regressions/<target>/, each input once;
# 5. fuzzes:
#    --ci: from the seeds alone (a fresh corpus under target/fuzz-ci/, whatever fuzz/corpus
#          holds), with a fixed seed (-seed=FUZZ_SEED, default 1) for a fixed count of
#          executions (-runs=CI_RUNS, default 100000 each), without address randomisation
#          (setarch -R): the same commit takes the same path and gives the same verdict, every
#          time (two runs print the same coverage, feature and corpus counts). A crash found by a long run is kept as a regression input
#          (step 4) rather than left for CI to find again by chance.
#    otherwise: for the given seconds, or RUNS executions, from a random seed, with the corpus
#          in fuzz/corpus/<target> (git-ignored), which grows from run to run.
#    config runs with the dictionary fuzz/config.dict.
#
# A crash or a broken invariant stops it with a non-zero exit; the input is saved under
# fuzz/artifacts/<target>/ and replays with
#   cargo +nightly fuzz run <target> fuzz/artifacts/<target>/<file>
# Once fixed, copy it to fuzz/regressions/<target>/ so that every later run replays it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CI=0
if [[ ${1:-} == --ci ]]; then
    CI=1
    shift
fi
TIME=${1:-30}
say() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

RUNS=${RUNS:-}
SANITIZER=${SANITIZER:-address}
TARGETS=${TARGETS:-rpc_reply config}
[[ $TIME =~ ^[1-9][0-9]*$ ]] || fail "seconds must be a positive integer, not '$TIME'"
[[ -z $RUNS || $RUNS =~ ^[1-9][0-9]*$ ]] || fail "RUNS must be a positive integer, not '$RUNS'"
CI_RUNS=${CI_RUNS:-100000}
FUZZ_SEED=${FUZZ_SEED:-1}
[[ $CI_RUNS =~ ^[1-9][0-9]*$ ]] || fail "CI_RUNS must be a positive integer, not '$CI_RUNS'"
[[ $FUZZ_SEED =~ ^[1-9][0-9]*$ ]] || fail "FUZZ_SEED must be a positive integer, not '$FUZZ_SEED'"

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
if [[ $CI == 1 ]]; then
    CORPUS=$ROOT/target/fuzz-ci/corpus
    rm -rf "$ROOT/target/fuzz-ci"
else
    CORPUS=$ROOT/fuzz/corpus
fi
say "seed corpora"
cargo +nightly run --quiet --example seeds -- "$CORPUS/rpc_reply"
cargo +nightly run --quiet --example config_seeds -- "$CORPUS/config"
for target in $TARGETS; do
    EXTRA=()
    [[ -f $target.dict ]] && EXTRA=(-dict="$target.dict")
    INPUTS=("$CORPUS/$target")
    [[ -d $ROOT/fuzz/regressions/$target ]] && INPUTS+=("$ROOT/fuzz/regressions/$target")
    say "$target: the seeds and the regression inputs, each once, sanitizer $SANITIZER"
    cargo +nightly fuzz run --sanitizer "$SANITIZER" "$target" "${INPUTS[@]}" -- -runs=0 -seed="$FUZZ_SEED"
    NOASLR=()
    if [[ $CI == 1 ]]; then
        say "fuzzing $target for $CI_RUNS executions from seed $FUZZ_SEED, sanitizer $SANITIZER"
        LIMIT=(-runs="$CI_RUNS" -seed="$FUZZ_SEED" -reload=0)
        # Without address randomisation: the comparisons libFuzzer traces
        # for its mutations include addresses, which would make the same
        # seed take another path on each run.
        NOASLR=(setarch "$(uname -m)" -R)
    elif [[ -n $RUNS ]]; then
        say "fuzzing $target for $RUNS executions, sanitizer $SANITIZER ($(cargo fuzz --version))"
        LIMIT=(-runs="$RUNS")
    else
        say "fuzzing $target for $TIME s, sanitizer $SANITIZER ($(cargo fuzz --version))"
        LIMIT=(-max_total_time="$TIME")
    fi
    "${NOASLR[@]}" cargo +nightly fuzz run --sanitizer "$SANITIZER" "$target" "$CORPUS/$target" -- \
        "${LIMIT[@]}" "${EXTRA[@]}" -print_final_stats=1
done
