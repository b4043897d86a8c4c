#!/usr/bin/env bash
# model.sh - check the model of p11ha's failover and recovery (model/, stateright).
#
# Usage: scripts/model.sh [THREADS]     (checker threads, default 2; from anywhere)
#
# Builds the model's binary in release and runs it: every configuration of model/src/lib.rs
# (`cases`) is explored breadth first, all reachable states, and checked for no lost operation,
# no session closed under a call in flight and no deadlock. Prints a Markdown table
# (configuration, unique states, wall time, verdict) and each counterexample, step by step.
# Exits non-zero when a property is violated in any configuration (or a sanity property is never
# reached), or when the run takes longer than MODEL_TIMEOUT seconds (default 600; about 40 s on
# 2 cores).
# The deliberate breaks that the checker must catch are `cargo test -p p11ha-model`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
cargo build --release --locked -p p11ha-model --bin p11ha-model
timeout "${MODEL_TIMEOUT:-600}" "$ROOT/target/release/p11ha-model" "${1:-2}"
