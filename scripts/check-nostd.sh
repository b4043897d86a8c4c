#!/usr/bin/env bash
# check-nostd.sh - prove that p11ha-core builds for a bare-metal Cortex-M4F target
# (thumbv7em-none-eabihf) with `core` only: no std, no alloc, no allocator; and so do the
# no_std adapters (the fault wrapper and the PKCS#11 RPC client).
#
# rustup's toolchains on these machines have only the host target and no rust-src, so this
# script uses Debian's Rust (rustc-web + cargo-web + rust-web-src, all the same version) with
# RUSTC_BOOTSTRAP=1 and -Zbuild-std=core, and Debian's ld.lld-22 as the linker. It installs
# whatever of those is missing (scripts/lib/apt.sh), then:
#   1. builds the real crate in the real workspace, against the committed Cargo.lock (--locked):
#        cargo build -p p11ha-core --release --target thumbv7em-none-eabihf -Zbuild-std=core
#      Only `core` (+ compiler_builtins) exists for that target, so any `extern crate std` or
#      `extern crate alloc`, in p11ha-core or in any of its dependencies, fails to compile;
#   2. builds a throwaway `#![no_std]` staticlib (in a temp dir outside the repo) that depends on
#      p11ha-core and p11ha-adapters (features fault, rpc) by path, defines only a panic handler
#      and one entry point that instantiates the RPC client over a made-up stream (every member
#      call, through the vtable), and links the *whole* archive (every object of every crate,
#      --whole-archive, no gc) into an ELF with ld.lld-22. Undefined symbols are errors, so this
#      fails if anything in the graph expects an OS, a libc (malloc, write, ...), an allocator
#      (__rust_alloc ...) or some other runtime symbol.
#
# Usage: scripts/check-nostd.sh            (from anywhere; exits non-zero on any failure)
# Env:   P11HA_NOSTD_TARGET_DIR  cargo target dir (default: <repo>/target/nostd)
#        P11HA_NOSTD_KEEP_PROBE=1 keep the temp probe crate and print its path
set -euo pipefail

START=$SECONDS
TARGET=thumbv7em-none-eabihf
CRATE=p11ha-core
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${P11HA_NOSTD_TARGET_DIR:-$ROOT/target/nostd}
STEP=setup

say() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }
on_exit() {
    local rc=$?
    if [[ -n ${PROBE:-} && -d ${PROBE:-} ]]; then
        if [[ ${P11HA_NOSTD_KEEP_PROBE:-0} == 1 ]]; then
            say "probe crate kept in $PROBE"
        else
            rm -rf -- "$PROBE"
        fi
    fi
    if (( rc != 0 )); then
        printf 'no_std check: FAILED at step "%s" (exit %d): %s does not build for %s with core only\n' \
            "$STEP" "$rc" "$CRATE" "$TARGET"
    fi
}
trap on_exit EXIT
# shellcheck source-path=SCRIPTDIR source=lib/apt.sh
source "$ROOT/scripts/lib/apt.sh"

# ---------------------------------------------------------------------------------------------
# 1. Toolchain packages (Debian 12 names; rustc/cargo/rust-src in bookworm main are 1.63, far
#    too old for edition 2024, so only the -web packages from bookworm-security will do).
# ---------------------------------------------------------------------------------------------
STEP="install toolchain"
PKGS=(rustc-web cargo-web rust-web-src lld-22)
RUSTC_BIN=/usr/bin/rustc
RUSTDOC_BIN=/usr/bin/rustdoc
CARGO_BIN=/usr/bin/cargo
LLD_BIN=/usr/bin/ld.lld-22

# All together, so that rustc-web and rust-web-src come from the same version.
apt_install "${PKGS[@]}"
say "packages installed: ${PKGS[*]}"

for f in "$RUSTC_BIN" "$RUSTDOC_BIN" "$CARGO_BIN" "$LLD_BIN"; do
    [[ -x $f ]] || fail "$f missing after installing ${PKGS[*]}"
done

# The core sources must be exactly the compiler's version (Debian's core does not compile with
# any other rustc).
v_rustc=$(dpkg-query -W -f='${Version}' rustc-web)
v_src=$(dpkg-query -W -f='${Version}' rust-web-src)
v_cargo=$(dpkg-query -W -f='${Version}' cargo-web)
[[ $v_rustc == "$v_src" ]] || fail "rustc-web $v_rustc and rust-web-src $v_src differ; run: apt-get install rustc-web rust-web-src"
SYSROOT=$("$RUSTC_BIN" --print sysroot)
[[ -f $SYSROOT/lib/rustlib/src/rust/library/core/src/lib.rs ]] ||
    fail "no core sources under $SYSROOT/lib/rustlib/src/rust/library (rust-web-src)"
say "rustc-web $v_rustc, cargo-web $v_cargo, rust-web-src $v_src, lld-22 $(dpkg-query -W -f='${Version}' lld-22)"
say "$("$RUSTC_BIN" --version); $("$CARGO_BIN" --version)"

# If a prebuilt std/alloc for the target sat in the sysroot, `extern crate std` could resolve to
# it; Debian ships none, which is what makes step 2 conclusive on its own.
if compgen -G "$SYSROOT/lib/rustlib/$TARGET/lib/lib*.rlib" >/dev/null; then
    say "warning: $SYSROOT/lib/rustlib/$TARGET has prebuilt crates; relying on the link probe"
fi

# ---------------------------------------------------------------------------------------------
# Environment for Debian's cargo. rustup's ~/.cargo/bin comes first in PATH, so everything is
# called by absolute path. Host-oriented settings from the caller must not leak into the cross
# build.
# ---------------------------------------------------------------------------------------------
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS RUSTC_WRAPPER \
      RUSTC_WORKSPACE_WRAPPER CARGO_BUILD_TARGET CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR \
      RUSTUP_TOOLCHAIN
export RUSTC=$RUSTC_BIN RUSTDOC=$RUSTDOC_BIN RUSTC_BOOTSTRAP=1
# The workspace's release profile says panic = "unwind" (the ffi cdylib catches panics). Firmware
# is built with panic = "abort", and a no_std staticlib with unwind would need an eh_personality
# (the rlib alone builds either way), so override it for these builds only.
export CARGO_PROFILE_RELEASE_PANIC=abort
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

BUILD_FLAGS=(--release --target "$TARGET" -Zbuild-std=core --target-dir "$TARGET_DIR")

# ---------------------------------------------------------------------------------------------
# 2. Build the real crate in the real workspace, against the committed lockfile.
# ---------------------------------------------------------------------------------------------
STEP="build $CRATE"
lock_before=$(sha256sum "$ROOT/Cargo.lock")
say "building $CRATE for $TARGET (core only) into $TARGET_DIR"
(cd "$ROOT" && "$CARGO_BIN" build --locked -p "$CRATE" "${BUILD_FLAGS[@]}")
[[ $(sha256sum "$ROOT/Cargo.lock") == "$lock_before" ]] || fail "cargo modified Cargo.lock"

# The adapters' no_std parts (the fault wrapper, Either, the RPC client) build there too.
STEP="build p11ha-adapters (no_std features)"
say "building p11ha-adapters --no-default-features --features fault,rpc for $TARGET"
(cd "$ROOT" && "$CARGO_BIN" build --locked -p p11ha-adapters --no-default-features --features fault,rpc \
    "${BUILD_FLAGS[@]}")

OUT=$TARGET_DIR/$TARGET/release
RLIB=$OUT/lib${CRATE//-/_}.rlib
[[ -f $RLIB ]] || fail "$RLIB was not produced"
if compgen -G "$OUT/deps/libstd-*.rlib" >/dev/null || compgen -G "$OUT/deps/liballoc-*.rlib" >/dev/null; then
    fail "std or alloc was built for $TARGET: $(ls "$OUT"/deps/lib{std,alloc}-*.rlib 2>/dev/null)"
fi

# ---------------------------------------------------------------------------------------------
# 3. Link probe: a no_std staticlib depending on p11ha-core and the no_std adapters (the RPC
#    client included), whole archive linked with ld.lld.
# ---------------------------------------------------------------------------------------------
STEP="link probe"
PROBE=$(mktemp -d "${TMPDIR:-/tmp}/p11ha-nostd-probe.XXXXXX")
mkdir -p "$PROBE/src"
cat >"$PROBE/Cargo.toml" <<EOF
[package]
name = "p11ha-nostd-probe"
version = "0.0.0"
edition = "2024"
publish = false

[lib]
crate-type = ["staticlib"]

[dependencies]
p11ha-core = { path = "$ROOT/core" }
p11ha-adapters = { path = "$ROOT/adapters", default-features = false, features = ["fault", "rpc"] }
embedded-io = { version = "0.7", default-features = false }

# Its own workspace, whatever the temp dir sits under.
[workspace]

EOF
# The workspace's own [profile.*] sections (panic is overridden by the environment as above):
# with identical profiles cargo reuses the core/compiler_builtins/dependency builds of step 2.
awk '/^[[]/ { inprof = ($0 ~ /^[[]profile[.]/) } inprof' "$ROOT/Cargo.toml" >>"$PROBE/Cargo.toml"
cat >"$PROBE/src/lib.rs" <<'EOF'
#![no_std]
// No `extern crate alloc`, no #[global_allocator]: if anything in the graph needed an
// allocator or std, this crate could not be built or linked.
extern crate p11ha_adapters;
extern crate p11ha_core;

use p11ha_adapters::rpc::{Connector, RpcMember};
use p11ha_core::error::TransportError;
use p11ha_core::port::Member;
use p11ha_core::sync::SpinLock;

/// A stream a board would give (a UART, a TCP socket of its own stack): here, one whose bytes
/// the optimiser cannot predict, so that the RPC client is instantiated and linked in full.
struct Wire;

impl embedded_io::ErrorType for Wire {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::Read for Wire {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        for b in buf.iter_mut() {
            *b = core::hint::black_box(0);
        }
        Ok(core::hint::black_box(buf.len()))
    }
}

impl embedded_io::Write for Wire {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

struct Dial;

impl Connector for Dial {
    type Stream = Wire;
    fn connect(&self) -> Result<Wire, TransportError> {
        Ok(Wire)
    }
}

/// Entry point for the link check; keeps the archive's objects meaningful to the linker.
#[unsafe(no_mangle)]
pub extern "C" fn p11ha_nostd_probe() -> usize {
    static mut BUF: [u8; 4096] = [0; 4096];
    // SAFETY: the probe is linked, never run; nothing else touches BUF.
    let buf: &'static mut [u8] = unsafe { &mut *core::ptr::addr_of_mut!(BUF) };
    match RpcMember::connect(Dial, SpinLock::new(), buf, 0) {
        Ok((member, _)) => {
            // Every method, through the vtable.
            let member: &dyn Member = core::hint::black_box(&member);
            member.open_session(6).unwrap_or(0) as usize
        }
        Err(e) => core::hint::black_box(e.rv().0) as usize,
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {
        core::hint::spin_loop();
    }
}
EOF
# Same dependency versions as the workspace (cargo prunes what the probe does not use).
cp "$ROOT/Cargo.lock" "$PROBE/Cargo.lock"
say "building the link probe in $PROBE"
(cd "$PROBE" && "$CARGO_BIN" build "${BUILD_FLAGS[@]}")
ARCHIVE=$OUT/libp11ha_nostd_probe.a
[[ -f $ARCHIVE ]] || fail "$ARCHIVE was not produced"
"$LLD_BIN" --entry=p11ha_nostd_probe --whole-archive "$ARCHIVE" --no-whole-archive \
    -o "$PROBE/probe.elf"
elf_size=$(stat -c %s "$PROBE/probe.elf")
say "linked $(basename "$ARCHIVE") whole with ld.lld-22: no undefined symbols ($elf_size bytes ELF)"

STEP="done"
say "elapsed: $((SECONDS - START)) s"
echo "no_std check: $CRATE (and the no_std adapters) build for $TARGET (core only, no alloc)"
