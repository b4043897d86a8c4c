#!/usr/bin/env bash
# demo.sh — set up a fresh Debian 12 machine and show p11ha at work.
#
# Usage: scripts/demo.sh        (as root, or a user with sudo, from anywhere)
#
# Installs what is missing (SoftHSM2, OpenSC, p11-kit, openssl, and Debian's
# Rust if there is no cargo), builds libp11ha.so, creates three SoftHSM tokens
# labelled TokName that hold the same keys, serves each from its own
# `p11-kit server` process, and runs a short application in HA mode: it signs
# in a loop while the server behind its session is killed (kill -9), every
# signature checked by openssl; the server is restarted, p11ha reconnects it,
# and the HA log is shown. Then libp11ha.so under pkcs11-tool (WLD mode, the
# tokens loaded as a module).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

"$ROOT/scripts/setup-debian.sh"
echo "==> building libp11ha.so and the demo"
# Two commands: `--bin` narrows the targets of every package it is given
# with, so `-p p11ha-ffi -p p11ha-tests --bin p11ha-demo` never builds the
# library.
cargo build --release --locked -p p11ha-ffi
cargo build --release --locked -p p11ha-tests --bin p11ha-demo
LIB="$ROOT/target/release/libp11ha.so"
[ -f "$LIB" ] || { echo "demo.sh: $LIB was not built" >&2; exit 1; }

echo "==> the demo application"
"$ROOT/target/release/p11ha-demo"

echo "==> the same library under pkcs11-tool"
DIR="$ROOT/target/demo"
"$ROOT/scripts/mktokens.sh" "$DIR" 3 >/dev/null
export SOFTHSM2_CONF="$DIR/softhsm2.conf"
export P11HA_MODULES=/usr/lib/softhsm/libsofthsm2.so
export ET_PTKC_GENERAL_LIBRARY_MODE=WLD ET_PTKC_WLD_SLOT_0=TokName
pkcs11-tool --module "$LIB" -L
printf 'signed through p11ha by pkcs11-tool\n' > "$DIR/data.txt"
pkcs11-tool --module "$LIB" --login --pin 1234 --sign --id 02 -m SHA256-RSA-PKCS \
    -i "$DIR/data.txt" -o "$DIR/data.sig"
openssl dgst -sha256 -verify "$DIR/keys/rsa-pub.pem" -signature "$DIR/data.sig" "$DIR/data.txt"
