#!/usr/bin/env bash
# sanitize.sh - run p11ha under the sanitizers: the core's unit tests under miri, the library and
# the integration tests that load it under AddressSanitizer (with LeakSanitizer), and the C ABI
# under valgrind's memcheck.
#
# Usage: scripts/sanitize.sh [miri] [asan] [valgrind]     (default: all three; from anywhere)
#
# 1. miri: `cargo +nightly miri test -p p11ha-core`; undefined behaviour, a data race or a leak is
#    a finding. Prints how many tests ran and how many miri skipped (cfg_attr(miri, ignore)).
# 2. asan: builds libp11ha.so and every integration test that loads it into its own process
#    (all of tests/tests but pkcs11_tool and firmware) with `-Zsanitizer=address` (nightly, --target x86_64-unknown-linux-gnu, no
#    -Zbuild-std: std is not instrumented, p11ha's code and its dependencies are) and runs them
#    against the ASan-built library (TEST_P11HA_LIB, and its test build with fault injection,
#    TEST_P11HA_FAULT_LIB). The ASan runtime is linked statically into
#    the instrumented test executable only; `-Wl,--export-dynamic` exports its symbols so that
#    the instrumented cdylib, loaded with dlopen, binds to that one runtime. Before that, a canary
#    (scripts/sanitize/canary: a cdylib and an executable that loads it, its own workspace,
#    built the same way; first checked with `cargo fmt --check` and clippy -D warnings) must be
#    caught reading out of bounds and leaking: the run cannot pass because ASan is not watching.
#    ASAN_OPTIONS below; LSAN_OPTIONS reads scripts/sanitize/lsan.supp (third-party frames only).
# 3. valgrind: builds the release libp11ha.so (not instrumented) and runs OpenSC's pkcs11-tool on
#    it under memcheck (--leak-check=full, definite and indirect leaks are errors,
#    scripts/sanitize/valgrind.supp): the slot list in WLD mode, then a login and an ECDSA
#    signature in WLD and in HA mode (recovery thread running), over two fresh SoftHSM tokens
#    (scripts/mktokens.sh); each signature must verify with openssl. Prints each run's
#    "ERROR SUMMARY" and leak figures.
#
# Installs what is missing: the nightly toolchain, its miri and rust-src components (rustup), and
# valgrind (apt-get, as root or with sudo: scripts/lib/apt.sh). SoftHSM, p11-kit, OpenSC and
# openssl come from scripts/setup-debian.sh. Exits non-zero on any finding or failure.
#
# Env: P11HA_SANITIZE_TARGET_DIR  cargo target dir base (default <repo>/target; asan/, miri/ and
#                                 canary-lint/ under it, so these builds never disturb the
#                                 normal ones)
set -euo pipefail

START=$SECONDS
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BASE=${P11HA_SANITIZE_TARGET_DIR:-$ROOT/target}
HOST=x86_64-unknown-linux-gnu
SUPP=$ROOT/scripts/sanitize
STEP=setup
WORK=

say() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }
on_exit() {
    local rc=$?
    [[ -n $WORK && -d $WORK ]] && rm -rf -- "$WORK"
    if (( rc != 0 )); then
        printf 'sanitize: FAILED at step "%s" (exit %d)\n' "$STEP" "$rc" >&2
    fi
}
trap on_exit EXIT
# shellcheck source-path=SCRIPTDIR source=lib/apt.sh
source "$ROOT/scripts/lib/apt.sh"

STEPS=("$@")
(( ${#STEPS[@]} )) || STEPS=(miri asan valgrind)
for s in "${STEPS[@]}"; do
    [[ $s == miri || $s == asan || $s == valgrind ]] || fail "unknown step '$s' (miri, asan, valgrind)"
done
wants() { [[ " ${STEPS[*]} " == *" $1 "* ]]; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/p11ha-sanitize.XXXXXX")

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
command -v cargo >/dev/null || fail "cargo not found (rustup)"
if ! cargo +nightly --version >/dev/null 2>&1; then
    command -v rustup >/dev/null || fail "no nightly toolchain and no rustup to install one"
    say "installing the nightly toolchain"
    rustup toolchain install nightly --profile minimal
fi
if wants miri; then
    installed=$(rustup +nightly component list --installed)
    missing=()
    grep -q '^miri' <<<"$installed" || missing+=(miri)
    grep -q '^rust-src' <<<"$installed" || missing+=(rust-src)
    if (( ${#missing[@]} )); then
        say "installing nightly components: ${missing[*]}"
        rustup +nightly component add "${missing[@]}"
    fi
fi
if wants valgrind && ! command -v valgrind >/dev/null; then
    apt_install valgrind
fi
for tool in softhsm2-util p11-kit pkcs11-tool openssl; do
    command -v "$tool" >/dev/null || fail "$tool not found: run scripts/setup-debian.sh"
done
# Flags of the caller's own builds must not leak into these.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS RUSTC_WRAPPER CARGO_BUILD_TARGET \
      CARGO_TARGET_DIR RUSTUP_TOOLCHAIN
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
cd "$ROOT"

# ---------------------------------------------------------------------------------------------
# 1. miri
# ---------------------------------------------------------------------------------------------
if wants miri; then
    STEP=miri
    t0=$SECONDS
    # cargo-miri builds its sysroot in a temporary package under TMPDIR, and cargo looks for a
    # workspace in every directory above it: a stray Cargo.toml in / (there is an empty one on
    # some machines) fails that build. Cargo stops its search at CARGO_HOME, so the sysroot is
    # built in a temporary directory there (once: it is cached in ~/.cache/miri).
    MIRI_TMP=${CARGO_HOME:-$HOME/.cargo}/tmp-miri
    mkdir -p "$MIRI_TMP"
    say "miri sysroot"
    TMPDIR=$MIRI_TMP cargo +nightly miri setup >/dev/null
    say "miri: cargo +nightly miri test -p p11ha-core"
    log=$WORK/miri.log
    set +e
    CARGO_TARGET_DIR=$BASE/miri cargo +nightly miri test --locked -p p11ha-core 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    read -r ran ignored < <(awk '/^test result:/ { for (i = 1; i <= NF; i++) {
            if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) p += $i; if ($(i+1) ~ /^ignored/) g += $i } }
        END { print p + 0, g + 0 }' "$log")
    say "miri: $ran tests ran, $ignored ignored under miri ($((SECONDS - t0)) s)"
    (( rc == 0 )) || fail "miri found a problem (or a test failed): see above"
    (( ran > 0 )) || fail "miri ran no test"
fi

# ---------------------------------------------------------------------------------------------
# 2. AddressSanitizer
# ---------------------------------------------------------------------------------------------
ASAN_FLAGS="-Zsanitizer=address -Clink-arg=-Wl,--export-dynamic"
# halt_on_error: the first report ends the process (and fails its test);
# detect_stack_use_after_return and check_initialization_order: more than the defaults;
# detect_leaks: LeakSanitizer at the exit of every instrumented process.
export ASAN_OPTIONS="detect_leaks=1:halt_on_error=1:detect_stack_use_after_return=1:check_initialization_order=1:strict_init_order=1"
export LSAN_OPTIONS="suppressions=$SUPP/lsan.supp:print_suppressions=0"
asan_cargo() {
    RUSTFLAGS=$ASAN_FLAGS CARGO_TARGET_DIR=$BASE/asan cargo +nightly "$@"
}
if wants asan; then
    STEP="asan canary lint"
    t0=$SECONDS
    [[ -f $SUPP/lsan.supp ]] || fail "$SUPP/lsan.supp missing"
    CANARY=$SUPP/canary
    [[ -f $CANARY/Cargo.toml ]] || fail "$CANARY missing"
    say "asan: the canary's fmt and clippy (-D warnings)"
    (cd "$CANARY" && cargo fmt --check)
    (cd "$CANARY" && CARGO_TARGET_DIR=$BASE/canary-lint cargo clippy --quiet --locked --all-targets \
        -- -D warnings)
    STEP="asan canary"
    say "asan: the canary (must be caught)"
    (cd "$CANARY" && asan_cargo build --quiet --locked --release --target "$HOST")
    OUT=$BASE/asan/$HOST/release
    if "$OUT/p11ha-asan-canary-app" oob "$OUT/libp11ha_asan_canary.so" >"$WORK/oob.log" 2>&1; then
        fail "ASan missed an out-of-bounds read in a dlopened cdylib: $(cat "$WORK/oob.log")"
    fi
    grep -q 'ERROR: AddressSanitizer: heap-buffer-overflow' "$WORK/oob.log" ||
        fail "the canary failed without an ASan report: $(cat "$WORK/oob.log")"
    if "$OUT/p11ha-asan-canary-app" leak "$OUT/libp11ha_asan_canary.so" >"$WORK/leak.log" 2>&1; then
        fail "LeakSanitizer missed a leak: $(cat "$WORK/leak.log")"
    fi
    grep -q 'ERROR: LeakSanitizer: detected memory leaks' "$WORK/leak.log" ||
        fail "the leak canary failed without a LeakSanitizer report: $(cat "$WORK/leak.log")"
    say "asan: the canary's out-of-bounds read and leak were both caught"

    STEP="asan build"
    say "asan: building libp11ha.so, its test build and the integration tests ($ASAN_FLAGS)"
    # Both builds the tests load: the release build, and the test build with fault injection
    # (for the tests configured with P11HA_FAULT_INJECTION=YES). They share one output path,
    # which later cargo runs may write again, so each is copied aside as soon as it is built.
    mkdir -p "$WORK/release" "$WORK/fault"
    asan_cargo build --locked --release --target "$HOST" -p p11ha-ffi
    cp "$OUT/libp11ha.so" "$WORK/release/libp11ha.so"
    asan_cargo build --locked --release --target "$HOST" -p p11ha-ffi --features fault-injection
    cp "$OUT/libp11ha.so" "$WORK/fault/libp11ha.so"
    # Every test file that loads the library into its own process; not pkcs11_tool (OpenSC's
    # pkcs11-tool, not instrumented, loads it: valgrind covers that path) nor firmware (QEMU).
    ASAN_TESTS=(abi abi_table app_mutexes concurrency ha ha_chaos ha_limits ha_norecover
        ha_recovery ha_wait lifecycle normal remote remote_derive remote_freeze remote_mixed
        secrets wld wld_failure)
    test_args=()
    for t in "${ASAN_TESTS[@]}"; do test_args+=(--test "$t"); done
    asan_cargo test --locked --release --target "$HOST" -p p11ha-tests "${test_args[@]}" --no-run
    LIB=$WORK/release/libp11ha.so
    FAULT_LIB=$WORK/fault/libp11ha.so
    for l in "$LIB" "$FAULT_LIB"; do
        nm -D "$l" | grep ' U __asan_' >/dev/null || fail "$l is not instrumented"
    done
    nm -D "$FAULT_LIB" | grep ' T P11HA_InjectFault' >/dev/null || fail "$FAULT_LIB has no fault injection"
    ! nm -D "$LIB" | grep ' T P11HA_InjectFault' >/dev/null || fail "$LIB has fault injection"

    STEP="asan tests"
    log=$WORK/asan.log
    say "asan: running ${ASAN_TESTS[*]} against $LIB and $FAULT_LIB"
    set +e
    TEST_P11HA_LIB=$LIB TEST_P11HA_FAULT_LIB=$FAULT_LIB \
        asan_cargo test --locked --release --target "$HOST" -p p11ha-tests \
        "${test_args[@]}" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    set -e
    if grep -q 'ERROR: \(AddressSanitizer\|LeakSanitizer\)' "$log"; then
        fail "AddressSanitizer or LeakSanitizer reported a problem: see above"
    fi
    (( rc == 0 )) || fail "an integration test failed under ASan: see above"
    passed=$(awk '/^test result:/ { n += $4 } END { print n + 0 }' "$log")
    say "asan: ${#ASAN_TESTS[@]} test files, $passed tests passed, no report ($((SECONDS - t0)) s)"
fi

# ---------------------------------------------------------------------------------------------
# 3. valgrind memcheck, through the C ABI (pkcs11-tool)
# ---------------------------------------------------------------------------------------------
if wants valgrind; then
    STEP="valgrind build"
    t0=$SECONDS
    [[ -f $SUPP/valgrind.supp ]] || fail "$SUPP/valgrind.supp missing"
    say "valgrind: building the release libp11ha.so"
    cargo build --locked --release -p p11ha-ffi
    LIB=$ROOT/target/release/libp11ha.so
    STEP="valgrind tokens"
    "$ROOT/scripts/mktokens.sh" "$WORK/tokens" 2 >/dev/null
    printf 'p11ha under valgrind\n' >"$WORK/data"
    openssl dgst -sha256 -binary -out "$WORK/data.sha256" "$WORK/data"

    # One pkcs11-tool run under memcheck: name, mode, pkcs11-tool arguments.
    memcheck() {
        local name=$1 mode=$2
        shift 2
        local log=$WORK/valgrind-$name.log
        STEP="valgrind $name"
        say "valgrind: $name ($mode mode)"
        if ! env -u P11HA_CONF SOFTHSM2_CONF="$WORK/tokens/softhsm2.conf" \
            P11HA_MODULES=/usr/lib/softhsm/libsofthsm2.so \
            ET_PTKC_GENERAL_LIBRARY_MODE="$mode" ET_PTKC_WLD_SLOT_0=TokName \
            ET_PTKC_HA_LOG_FILE="$WORK/ha.log" \
            valgrind --error-exitcode=1 --leak-check=full --show-leak-kinds=definite,indirect \
                --errors-for-leak-kinds=definite,indirect --suppressions="$SUPP/valgrind.supp" \
                --log-file="$log" pkcs11-tool --module "$LIB" "$@" >"$WORK/$name.out" 2>&1; then
            cat "$log" "$WORK/$name.out" >&2
            fail "valgrind reported errors (or pkcs11-tool failed) in $name"
        fi
        grep -E 'ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|All heap blocks' "$log" |
            sed 's/^==[0-9]*== */    /' >&2
    }
    memcheck slots WLD -L
    grep -q 'p11ha virtual slot: TokName' "$WORK/slots.out" ||
        fail "pkcs11-tool -L did not list the virtual slot: $(cat "$WORK/slots.out")"
    for mode in WLD HA; do
        memcheck "sign-$mode" "$mode" --login --pin 1234 --sign --id 01 -m ECDSA \
            --signature-format openssl -i "$WORK/data.sha256" -o "$WORK/sig-$mode"
        openssl dgst -sha256 -verify "$WORK/tokens/keys/ec-pub.pem" -signature "$WORK/sig-$mode" \
            "$WORK/data" >/dev/null || fail "the $mode signature made under valgrind does not verify"
    done
    grep -q 'HSM joined' "$WORK/ha.log" || fail "the HA run wrote no HA log"
    say "valgrind: 3 runs clean, signatures verified ($((SECONDS - t0)) s)"
fi

STEP="done"
say "elapsed: $((SECONDS - START)) s"
echo "sanitize: ${STEPS[*]}: no finding"
