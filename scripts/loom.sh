#!/usr/bin/env bash
# loom.sh - run the loom models of the core's shared tables (core/tests/loom.rs) and print, for
# each, the executions loom explored and the time it took (the README's Reliability table).
#
# Usage: scripts/loom.sh            (from anywhere; exits non-zero if a model fails)
#
# Builds p11ha-core's tests with `--cfg loom` (the core's atomics, locks and cells become loom's:
# see core/src/sync.rs) and the `testing` feature, in release, into its own target dir so that
# the normal build is not rebuilt, and runs the models one at a time:
#   RUSTFLAGS="--cfg loom" cargo test --locked -p p11ha-core --features testing --release \
#       --test loom --target-dir target/loom -- --test-threads=1 --nocapture
# Each model fixes its own bounds in the code (preemption bound, loom's default branch limit,
# no time or permutation limit), whatever LOOM_* variables say: the search is exhaustive within
# those bounds, with no random seed, so two runs of one commit explore the same executions.
# A model that fails prints loom's report (a panic, a data race on a session's state, a
# deadlock) and the interleaving's thread and preemption counts; LOOM_LOG=1 and
# LOOM_LOCATION=1 make it say more.
#
# Env: P11HA_LOOM_TARGET_DIR  cargo target dir (default <repo>/target/loom)
set -euo pipefail

START=$SECONDS
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${P11HA_LOOM_TARGET_DIR:-$ROOT/target/loom}
LOG=$(mktemp "${TMPDIR:-/tmp}/p11ha-loom.XXXXXX")
trap 'rm -f -- "$LOG"' EXIT

say() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }

command -v cargo >/dev/null || fail "cargo not found (rustup)"
# Flags of the caller's own builds must not leak into this one.
unset CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS RUSTC_WRAPPER CARGO_BUILD_TARGET \
      CARGO_TARGET_DIR RUSTUP_TOOLCHAIN
export RUSTFLAGS="--cfg loom"
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cd "$ROOT"

say "building the loom models (--cfg loom, release) into $TARGET_DIR"
cargo test --locked -p p11ha-core --features testing --release --test loom \
    --target-dir "$TARGET_DIR" --no-run

say "running the loom models, one at a time"
set +e
cargo test --locked -p p11ha-core --features testing --release --test loom \
    --target-dir "$TARGET_DIR" -- --test-threads=1 --nocapture 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
(( rc == 0 )) || fail "a loom model failed: see above"

# Each model prints "loom-model | <what> | <executions> | <preemption bound> | <seconds>".
tests=$(awk '/^test result:/ { n += $4 } END { print n + 0 }' "$LOG")
models=$(grep -c '^[^|]*loom-model |' "$LOG" || true)
(( tests > 0 )) || fail "no loom model ran"
(( models == tests )) || fail "$tests models passed but $models printed their figures"

printf '\n| model | executions explored | preemption bound | seconds |\n| --- | ---: | ---: | ---: |\n'
sed -n 's/^.*loom-model | \(.*\)$/| \1 |/p' "$LOG"
say "loom: $models models, every execution within their bounds checked ($((SECONDS - START)) s)"
