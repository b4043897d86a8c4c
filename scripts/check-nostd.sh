#!/usr/bin/env bash
# check-nostd.sh - prove that p11ha-core builds for a bare-metal Cortex-M4F target
# (thumbv7em-none-eabihf) with `core` only: no std, no alloc, no allocator; and so do the
# no_std adapters (the fault wrapper and the PKCS#11 RPC client).
#
# rustup's toolchains on these machines have only the host target and no rust-src, so this
# script uses Debian's Rust (rustc-web + cargo-web + rust-web-src, with its rustfmt-web and
# rust-web-clippy, all the same version) with RUSTC_BOOTSTRAP=1 and -Zbuild-std=core, and
# Debian's ld.lld-22 as the linker. It installs whatever of those is missing
# (scripts/lib/apt.sh), then:
#   1. builds the real crate in the real workspace, against the committed Cargo.lock (--locked):
#        cargo build -p p11ha-core --release --target thumbv7em-none-eabihf -Zbuild-std=core
#      Only `core` (+ compiler_builtins) exists for that target, so any `extern crate std` or
#      `extern crate alloc`, in p11ha-core or in any of its dependencies, fails to compile;
#   2. builds the link probe, targets/nostd-probe: a `#![no_std]` staticlib, its own workspace,
#      that depends on p11ha-core and p11ha-adapters (features fault, rpc) by path, defines
#      only a panic handler and one entry point that instantiates the RPC client over a made-up
#      stream (every member call, through the vtable), and links the *whole* archive (every
#      object of every crate, --whole-archive, no gc) into an ELF with ld.lld-22. Undefined
#      symbols are errors, so this fails if anything in the graph expects an OS, a libc
#      (malloc, write, ...), an allocator (__rust_alloc ...) or some other runtime symbol.
#      Before that, the probe must be built as the workspace is: its [profile.release*] sections
#      are those of the root Cargo.toml (the dev profile's per-package overrides, for the model
#      checker's tests, do not reach a release build), and its Cargo.lock (it is built --locked) pins no version
#      the root Cargo.lock does not; and `cargo fmt --check` must pass on it. After the link,
#      clippy -D warnings must pass on it too, run as the build is (for thumbv7em-none-eabihf,
#      -Zbuild-std=core). Both are Debian's (rustfmt-web, rust-web-clippy): rustup's clippy
#      has no thumbv7em target and no rust-src here. Only the probe's own code is linted:
#      p11ha-core and the adapters are not members of its workspace (the root workspace's
#      `cargo clippy` lints them, for the host).
#
# Usage: scripts/check-nostd.sh            (from anywhere; exits non-zero on any failure)
# Env:   P11HA_NOSTD_TARGET_DIR  cargo target dir (default: <repo>/target/nostd); the probe's
#                                ELF stays there (thumbv7em-none-eabihf/release/)
set -euo pipefail

START=$SECONDS
TARGET=thumbv7em-none-eabihf
CRATE=p11ha-core
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROBE=$ROOT/targets/nostd-probe
TARGET_DIR=${P11HA_NOSTD_TARGET_DIR:-$ROOT/target/nostd}
STEP=setup
# What a failure at STEP means, for the last line.
WHAT="$CRATE does not build for $TARGET with core only"

say() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'error: %s\n' "$*" >&2; exit 1; }
on_exit() {
    local rc=$?
    if (( rc != 0 )); then
        printf 'no_std check: FAILED at step "%s" (exit %d): %s\n' "$STEP" "$rc" "$WHAT"
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
PKGS=(rustc-web cargo-web rust-web-src rustfmt-web rust-web-clippy lld-22)
RUSTC_BIN=/usr/bin/rustc
RUSTDOC_BIN=/usr/bin/rustdoc
CARGO_BIN=/usr/bin/cargo
RUSTFMT_BIN=/usr/bin/rustfmt
CARGO_FMT_BIN=/usr/bin/cargo-fmt
CARGO_CLIPPY_BIN=/usr/bin/cargo-clippy
LLD_BIN=/usr/bin/ld.lld-22

# All together, so that rustc-web, rust-web-src and the tools come from the same version.
apt_install "${PKGS[@]}"
say "packages installed: ${PKGS[*]}"

for f in "$RUSTC_BIN" "$RUSTDOC_BIN" "$CARGO_BIN" "$RUSTFMT_BIN" "$CARGO_FMT_BIN" \
    "$CARGO_CLIPPY_BIN" /usr/bin/clippy-driver "$LLD_BIN"; do
    [[ -x $f ]] || fail "$f missing after installing ${PKGS[*]}"
done

# The core sources must be exactly the compiler's version (Debian's core does not compile with
# any other rustc), and clippy-driver is a rustc of its own: the same version too.
v_rustc=$(dpkg-query -W -f='${Version}' rustc-web)
v_src=$(dpkg-query -W -f='${Version}' rust-web-src)
v_cargo=$(dpkg-query -W -f='${Version}' cargo-web)
v_clippy=$(dpkg-query -W -f='${Version}' rust-web-clippy)
[[ $v_rustc == "$v_src" ]] || fail "rustc-web $v_rustc and rust-web-src $v_src differ; run: apt-get install rustc-web rust-web-src"
[[ $v_rustc == "$v_clippy" ]] ||
    fail "rustc-web $v_rustc and rust-web-clippy $v_clippy differ; run: apt-get install rustc-web rust-web-clippy"
SYSROOT=$("$RUSTC_BIN" --print sysroot)
[[ -f $SYSROOT/lib/rustlib/src/rust/library/core/src/lib.rs ]] ||
    fail "no core sources under $SYSROOT/lib/rustlib/src/rust/library (rust-web-src)"
say "rustc-web $v_rustc, cargo-web $v_cargo, rust-web-src $v_src, lld-22 $(dpkg-query -W -f='${Version}' lld-22)"
say "rustfmt-web $(dpkg-query -W -f='${Version}' rustfmt-web), rust-web-clippy $v_clippy"
say "$("$RUSTC_BIN" --version); $("$CARGO_BIN" --version)"

# If a prebuilt std/alloc for the target sat in the sysroot, `extern crate std` could resolve to
# it; Debian ships none, which is what makes step 2 conclusive on its own.
if compgen -G "$SYSROOT/lib/rustlib/$TARGET/lib/lib*.rlib" >/dev/null; then
    say "warning: $SYSROOT/lib/rustlib/$TARGET has prebuilt crates; relying on the link probe"
fi

# ---------------------------------------------------------------------------------------------
# Environment for Debian's cargo. rustup's ~/.cargo/bin comes first in PATH, so everything is
# called by absolute path; cargo also looks for its subcommands (fmt, clippy) in ~/.cargo/bin
# first, so cargo-fmt and cargo-clippy are called directly, told which cargo and rustfmt are
# theirs. Host-oriented settings from the caller must not leak into the cross build.
# ---------------------------------------------------------------------------------------------
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS CARGO_BUILD_RUSTFLAGS RUSTC_WRAPPER \
      RUSTC_WORKSPACE_WRAPPER CARGO_BUILD_TARGET CARGO_TARGET_DIR CARGO_BUILD_TARGET_DIR \
      RUSTUP_TOOLCHAIN
export RUSTC=$RUSTC_BIN RUSTDOC=$RUSTDOC_BIN RUSTC_BOOTSTRAP=1
export CARGO=$CARGO_BIN RUSTFMT=$RUSTFMT_BIN
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
# 3. Link probe: targets/nostd-probe, a no_std staticlib depending on p11ha-core and the no_std
#    adapters (the RPC client included), whole archive linked with ld.lld.
# ---------------------------------------------------------------------------------------------
STEP="link probe: the workspace's profiles and versions"
WHAT="targets/nostd-probe is not built as the workspace is"
# The [profile.release*] sections (the probe is built in release), without comments and blank
# lines.
profiles() {
    awk '/^[[]/ { inprof = ($0 ~ /^[[]profile[.]release([.]|[]])/) } inprof && !/^[[:space:]]*(#|$)/' "$1"
}
[[ $(profiles "$PROBE/Cargo.toml") == "$(profiles "$ROOT/Cargo.toml")" ]] ||
    fail "the [profile.release*] sections of $PROBE/Cargo.toml are not those of $ROOT/Cargo.toml: copy them"
REFRESH="refresh it (this keeps the workspace's versions and drops the rest):
    cp Cargo.lock targets/nostd-probe/ &&
        cargo metadata --manifest-path targets/nostd-probe/Cargo.toml --format-version 1 >/dev/null"
[[ -f $PROBE/Cargo.lock ]] || fail "$PROBE/Cargo.lock missing; $REFRESH"
# "name version" of every package a Cargo.lock pins.
pins() {
    awk '/^[[][[]package[]][]]/ { n = "" } /^name = / { n = $3 } /^version = / && n != "" { print n, $3 }' \
        "$1" | LC_ALL=C sort -u
}
stale=$(LC_ALL=C comm -23 <(pins "$PROBE/Cargo.lock" | grep -v '^"p11ha-nostd-probe" ') \
    <(pins "$ROOT/Cargo.lock"))
[[ -z $stale ]] || fail "$PROBE/Cargo.lock pins versions the workspace's Cargo.lock does not: \
${stale//$'\n'/, }; $REFRESH"
# A dependency added or dropped since: the --locked build below would refuse the lock. Not
# --offline: cargo metadata reads every package the lock names, loom's too (the core's
# dependency under --cfg loom, which no build before this one downloads on a fresh machine).
(cd "$PROBE" && "$CARGO_BIN" metadata --locked --format-version 1 >/dev/null) ||
    fail "$PROBE/Cargo.lock does not match what the probe depends on now (or a package it pins \
could not be downloaded); $REFRESH"

STEP="link probe: cargo fmt --check"
WHAT="targets/nostd-probe is not formatted (run cargo fmt in targets/nostd-probe)"
say "cargo fmt --check in $PROBE ($("$RUSTFMT_BIN" --version))"
(cd "$PROBE" && "$CARGO_FMT_BIN" --check)

STEP="link probe"
WHAT="$CRATE does not build for $TARGET with core only"
say "building the link probe in $PROBE"
(cd "$PROBE" && "$CARGO_BIN" build --locked "${BUILD_FLAGS[@]}")
ARCHIVE=$OUT/libp11ha_nostd_probe.a
[[ -f $ARCHIVE ]] || fail "$ARCHIVE was not produced"
ELF=$OUT/p11ha-nostd-probe.elf
rm -f -- "$ELF"
"$LLD_BIN" --entry=p11ha_nostd_probe --whole-archive "$ARCHIVE" --no-whole-archive -o "$ELF"
elf_size=$(stat -c %s "$ELF")
say "linked $(basename "$ARCHIVE") whole with ld.lld-22: no undefined symbols ($elf_size bytes ELF)"

# Last, so that a probe that does not build for the target is reported as such above.
STEP="link probe: clippy"
WHAT="clippy finds fault with targets/nostd-probe"
say "clippy -D warnings on the probe, for $TARGET"
(cd "$PROBE" && "$CARGO_CLIPPY_BIN" clippy --locked "${BUILD_FLAGS[@]}" -- -D warnings)

STEP="done"
say "elapsed: $((SECONDS - START)) s"
echo "no_std check: $CRATE (and the no_std adapters) build for $TARGET (core only, no alloc)"
