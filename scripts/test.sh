#!/usr/bin/env bash
# test.sh — run every test of p11ha on a fresh Debian 12 machine (what .ci/run runs).
#
# Usage: scripts/test.sh        (as root, or a user with sudo, from anywhere)
#
# 1. installs what is missing (scripts/setup-debian.sh);
# 2. checks formatting and clippy (warnings are errors);
# 3. builds libp11ha.so, and its test build with fault injection (target/fault/), and runs
#    the unit and integration tests (cargo test: the integration tests load the built library
#    through the cryptoki crate, pkcs11-tool and the raw C ABI, against real SoftHSM2 tokens;
#    those that make members fail on command load the test build);
# 4. runs the cryptoki crate's own published tests against SoftHSM directly
#    and through libp11ha.so (NORMAL mode), and fails on any difference; then
#    the same suite over the RPC protocol, through libp11ha.so and through
#    p11-kit-client.so, each against a p11-kit server (scripts/cryptoki-remote.sh);
# 5. runs the PKCS#11 clients users run (GnuTLS's p11tool and certtool, OpenSSL 3 with the
#    libp11 engine, Java 17 SunPKCS11, python-pkcs11, PyKCS11) directly on SoftHSM and
#    through libp11ha.so in NORMAL, WLD and HA mode, every output checked outside p11ha, and
#    an HA failover under PyKCS11 (scripts/clients.sh);
# 6. builds p11ha-core and the adapters' no_std features (fault, rpc) for
#    thumbv7em-none-eabihf with core only (scripts/check-nostd.sh: no std, no alloc);
# 7. builds the firmware (targets/firmware), prints its flash and RAM, and runs it under
#    QEMU against two p11-kit servers, one killed midway (scripts/firmware.sh);
# 8. runs the core's unit tests under miri, the integration tests against an
#    AddressSanitizer build, and pkcs11-tool on the library under valgrind (scripts/sanitize.sh);
# 9. runs the loom models of the core's shared tables (handles, session cells, the members'
#    health and epochs, the recovery schedule, the object table): every interleaving of two
#    threads within each model's fixed preemption bound, no random seed; prints each model's
#    explored executions and time (scripts/loom.sh, --cfg loom, in target/loom);
# 10. checks the model of failover and recovery (model/, stateright): every reachable state of
#     each configuration, for no lost operation, no session closed under a call in flight and
#     no deadlock; prints states and wall times (scripts/model.sh);
# 11. runs the chaos soak from each of a fixed list of seeds (25 s each), so that a failure's
#     schedule of kills and freezes repeats; a failing run prints its seed (scripts/soak.sh;
#     long runs by hand take a random one);
# 12. replays the fuzz corpora and the regression inputs, then fuzzes the RPC client's reply
#     handling and the configuration parser for 100,000 executions each from a fixed seed
#     (scripts/fuzz.sh --ci: deterministic; installs cargo-fuzz on first use).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
step() { printf '\n==> %s\n' "$*"; }

step "packages"
"$ROOT/scripts/setup-debian.sh"

step "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy -p p11ha-ffi --features fault-injection --all-targets --locked -- -D warnings

step "build libp11ha.so, and its test build with fault injection"
cargo build --release --locked -p p11ha-ffi
cargo build --release --locked -p p11ha-ffi --features fault-injection --target-dir target/fault

step "unit and integration tests"
TEST_P11HA_LIB="$ROOT/target/release/libp11ha.so" \
    TEST_P11HA_FAULT_LIB="$ROOT/target/fault/release/libp11ha.so" cargo test --workspace --locked

step "the cryptoki crate's published tests, directly and through libp11ha.so"
"$ROOT/scripts/cryptoki-compare.sh" "$ROOT/target/release/libp11ha.so" \
    P11HA_MODULES=/usr/lib/softhsm/libsofthsm2.so ET_PTKC_GENERAL_LIBRARY_MODE=NORMAL

step "the cryptoki crate's published tests on a virtual slot of two members, WLD and HA"
"$ROOT/scripts/cryptoki-ha.sh" WLD "$ROOT/target/release/libp11ha.so"
"$ROOT/scripts/cryptoki-ha.sh" HA "$ROOT/target/release/libp11ha.so"

step "the cryptoki crate's published tests over the RPC protocol: p11ha and p11-kit-client"
"$ROOT/scripts/cryptoki-remote.sh" "$ROOT/target/release/libp11ha.so"

step "the clients users run: p11tool, certtool, OpenSSL, Java, python-pkcs11, PyKCS11"
"$ROOT/scripts/clients.sh" "$ROOT/target/release/libp11ha.so"

step "the core without std: thumbv7em-none-eabihf"
"$ROOT/scripts/check-nostd.sh"

step "the firmware: the core and RPC client on a Cortex-M4 under QEMU, failing over"
"$ROOT/scripts/firmware.sh"

step "sanitizers: the core under miri, the library under ASan, the C ABI under valgrind"
"$ROOT/scripts/sanitize.sh"

step "loom: the core's shared tables under every interleaving of two threads (bounded models)"
"$ROOT/scripts/loom.sh"

step "model: failover and recovery, every state of each configuration (stateright)"
"$ROOT/scripts/model.sh"

step "chaos: HA over three p11-kit servers killed, frozen and restarted at random (3 seeds, 25 s each)"
# A fixed list, so that a failure's schedule of kills and freezes repeats: each run prints its
# seed, and on failure the command that repeats it. Long runs by hand take a random seed.
for seed in 20261203 4099 77777; do
    P11HA_SOAK_SEED=$seed "$ROOT/scripts/soak.sh" 25
done

step "fuzz the RPC client's reply handling and the configuration parser (fixed seed and count)"
"$ROOT/scripts/fuzz.sh" --ci

step "the Debian package: built, installed, used as a user would, purged"
"$ROOT/scripts/package.sh" --check

printf '\ntest.sh: all checks passed\n'
