#!/usr/bin/env bash
# firmware.sh - build p11ha's firmware (targets/firmware: the no_std core and RPC client on a
# Cortex-M4, QEMU's mps2-an386, no heap), report its flash and RAM, and run it under QEMU
# against two real p11-kit servers with a failover in the middle (tests/tests/firmware.rs).
#
# Usage: scripts/firmware.sh              (as root, or a user with sudo; from anywhere)
#
# 1. installs what is missing: Debian's Rust for the target (rustc-web, cargo-web,
#    rust-web-src, lld-22: see scripts/check-nostd.sh for why these), qemu-system-arm,
#    binutils-arm-none-eabi (apt, scripts/lib/apt.sh); defmt-print (cargo install --locked,
#    with rustup's cargo); the test's SoftHSM, p11-kit, OpenSC and openssl
#    (scripts/setup-debian.sh);
# 2. builds the firmware in release with Debian's toolchain (RUSTC_BOOTSTRAP=1,
#    -Zbuild-std=core, linked by ld.lld-22), in its own workspace (targets/firmware);
# 3. prints its size from `arm-none-eabi-size -A`:
#      flash = .vector_table + .text + .rodata + .data (its initial values are in flash);
#      RAM   = .data + .bss + .uninit (static), plus the stack. memory.x gives the firmware
#              64 KiB of RAM; the stack is what the statics leave (cortex-m-rt puts it at the
#              top, growing down to the end of .bss), and the firmware reports at the end of
#              its run how deep it went (cortex-m-rt paints the stack at reset; the firmware
#              finds the deepest word no longer painted). RAM used = static + that peak;
#    and fails if flash passes FLASH_BUDGET (the link already fails if the statics pass
#    64 KiB, and the firmware fails its run if its stack comes within 256 bytes of them);
# 4. builds the integration tests (rustup's cargo) and runs the firmware test:
#      P11HA_FIRMWARE_ELF=... cargo test --release -p p11ha-tests --test firmware \
#          -- --ignored --nocapture
#    which starts two p11-kit servers over identical SoftHSM tokens, runs QEMU with UART0
#    and UART1 on their sockets, decodes the defmt log with defmt-print, kills the server
#    behind the session after signature 10, and checks that all 40 signatures arrive and
#    verify with openssl, with exactly one failover to the other server.
#
# Env: FLASH_BUDGET  bytes of flash allowed (default 131072, 128 KiB)
#      P11HA_FIRMWARE_TARGET_DIR  cargo target dir of the firmware (default targets/firmware/target)
set -euo pipefail

START=$SECONDS
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CRATE_DIR=$ROOT/targets/firmware
TARGET=thumbv7em-none-eabihf
TARGET_DIR=${P11HA_FIRMWARE_TARGET_DIR:-$CRATE_DIR/target}
ELF=$TARGET_DIR/$TARGET/release/p11ha-firmware
FLASH_BUDGET=${FLASH_BUDGET:-131072}
RAM_SIZE=65536 # memory.x

say() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }
[[ $FLASH_BUDGET =~ ^[1-9][0-9]*$ ]] || fail "FLASH_BUDGET must be a number of bytes, not '$FLASH_BUDGET'"
grep -q "LENGTH = 64K" "$CRATE_DIR/memory.x" ||
    fail "$CRATE_DIR/memory.x no longer gives RAM 64K: update RAM_SIZE in this script"

# ---------------------------------------------------------------------------------------------
# 1. What is missing.
# ---------------------------------------------------------------------------------------------
# shellcheck source-path=SCRIPTDIR source=lib/apt.sh
source "$ROOT/scripts/lib/apt.sh"
"$ROOT/scripts/setup-debian.sh" >&2
PKGS=(rustc-web cargo-web rust-web-src lld-22 qemu-system-arm binutils-arm-none-eabi)
# Together, so that rustc-web and rust-web-src come from the same version.
apt_install "${PKGS[@]}"
RUSTC_BIN=/usr/bin/rustc
CARGO_BIN=/usr/bin/cargo
for f in "$RUSTC_BIN" /usr/bin/rustdoc "$CARGO_BIN" /usr/bin/ld.lld-22 \
    /usr/bin/qemu-system-arm /usr/bin/arm-none-eabi-size; do
    [[ -x $f ]] || fail "$f missing after installing ${PKGS[*]}"
done
v_rustc=$(dpkg-query -W -f='${Version}' rustc-web)
v_src=$(dpkg-query -W -f='${Version}' rust-web-src)
[[ $v_rustc == "$v_src" ]] ||
    fail "rustc-web $v_rustc and rust-web-src $v_src differ; run: apt-get install rustc-web rust-web-src"

# rustup's cargo builds the host side (the tests) and installs defmt-print.
HOST_CARGO=$(command -v cargo || true)
[[ -n $HOST_CARGO && $HOST_CARGO != "$CARGO_BIN" ]] ||
    HOST_CARGO=${CARGO_HOME:-$HOME/.cargo}/bin/cargo
[[ -x $HOST_CARGO ]] || fail "no rustup cargo (looked for $HOST_CARGO); install rustup"
export PATH=${CARGO_HOME:-$HOME/.cargo}/bin:$PATH
if ! command -v defmt-print >/dev/null; then
    say "installing defmt-print (cargo install --locked, about a minute)"
    "$HOST_CARGO" install --locked defmt-print
fi
command -v defmt-print >/dev/null || fail "defmt-print is not on PATH after cargo install"
say "$("$RUSTC_BIN" --version) (Debian), $(qemu-system-arm --version | head -n1), $(defmt-print --version | head -n1)"

# ---------------------------------------------------------------------------------------------
# 2. The firmware, with Debian's toolchain. Host settings of the caller must not leak in.
# ---------------------------------------------------------------------------------------------
say "building the firmware for $TARGET (release) into $TARGET_DIR"
build_start=$SECONDS
(
    unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS RUSTC_WRAPPER \
        RUSTC_WORKSPACE_WRAPPER CARGO_BUILD_TARGET CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR \
        RUSTUP_TOOLCHAIN
    cd "$CRATE_DIR"
    RUSTC=$RUSTC_BIN RUSTDOC=/usr/bin/rustdoc RUSTC_BOOTSTRAP=1 CARGO_TERM_COLOR=never \
        "$CARGO_BIN" build --release --locked --target-dir "$TARGET_DIR"
) || fail "the firmware does not build"
[[ -f $ELF ]] || fail "$ELF was not produced"
say "built in $((SECONDS - build_start)) s: $ELF"

# ---------------------------------------------------------------------------------------------
# 3. Flash and RAM.
# ---------------------------------------------------------------------------------------------
SIZES=$(arm-none-eabi-size -A "$ELF")
section() { awk -v s="$1" '$1 == s { print $2; found = 1 } END { if (!found) print 0 }' <<<"$SIZES"; }
vt=$(section .vector_table) text=$(section .text) rodata=$(section .rodata)
data=$(section .data) bss=$(section .bss) uninit=$(section .uninit)
flash=$((vt + text + rodata + data))
static_ram=$((data + bss + uninit))
stack=$((RAM_SIZE - static_ram))
kib() { awk -v b="$1" 'BEGIN { printf "%.1f KiB", b / 1024 }'; }
printf 'flash: %d bytes (%s) = .vector_table %d + .text %d + .rodata %d + .data %d\n' \
    "$flash" "$(kib "$flash")" "$vt" "$text" "$rodata" "$data"
printf 'RAM:   %d bytes (%s) static = .data %d + .bss %d + .uninit %d; the stack has the other %d of 64 KiB\n' \
    "$static_ram" "$(kib "$static_ram")" "$data" "$bss" "$uninit" "$stack"
(( flash <= FLASH_BUDGET )) ||
    fail "flash $flash bytes is over the budget of $FLASH_BUDGET; the largest symbols:
$(arm-none-eabi-nm --size-sort --reverse-sort --demangle --radix=d "$ELF" | head -n 15)"

# ---------------------------------------------------------------------------------------------
# 4. The run under QEMU against two p11-kit servers, with a failover.
# ---------------------------------------------------------------------------------------------
say "building the integration tests"
(cd "$ROOT" && "$HOST_CARGO" build --release --locked -p p11ha-tests --tests)
say "running the firmware under QEMU (tests/tests/firmware.rs)"
LOG=$(mktemp "${TMPDIR:-/tmp}/p11ha-firmware.XXXXXX")
trap 'rm -f -- "$LOG"' EXIT
set +e
(cd "$ROOT" && P11HA_FIRMWARE_ELF=$ELF "$HOST_CARGO" test --release --locked -p p11ha-tests \
    --test firmware -- --ignored --nocapture) 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
set -e
(( rc == 0 )) || fail "the firmware test failed (exit $rc); its log is above"

peak=$(sed -n 's/.*INFO  stack: \([0-9][0-9]*\) of [0-9]* bytes used.*/\1/p' "$LOG" | tail -n1)
[[ -n $peak ]] || fail "the firmware did not report its stack"
used=$((static_ram + peak))
printf '\nfirmware: flash %d bytes (%s, budget %s); RAM %d bytes (%s) = static %d + stack peak %d, of 64 KiB\n' \
    "$flash" "$(kib "$flash")" "$(kib "$FLASH_BUDGET")" "$used" "$(kib "$used")" "$static_ram" "$peak"
grep -E '^firmware: [0-9]+ signatures verified' "$LOG" || true
say "elapsed: $((SECONDS - START)) s"
