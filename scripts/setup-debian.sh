#!/usr/bin/env bash
# setup-debian.sh — install the Debian 12 packages p11ha's tests and demo need.
#
# Usage: scripts/setup-debian.sh [PACKAGE...]   (as root, or as a user with sudo)
#
# PACKAGE...: further packages a script needs beyond the common set (the
# clients suite's gnutls-bin, Java, PyKCS11...), installed the same way.
#
# Idempotent: if every package is already installed it does not touch apt at all;
# otherwise it runs `apt-get update` once and installs only the missing packages
# non-interactively (scripts/lib/apt.sh). Packages: softhsm2 opensc p11-kit
# p11-kit-modules gnutls-bin openssl curl ca-certificates pkg-config, python3 if no
# python3 is on PATH, and Debian's Rust (rustc-web, cargo-web) if no cargo is on PATH.
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib/apt.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/apt.sh"

PACKAGES=(softhsm2 opensc p11-kit p11-kit-modules gnutls-bin openssl curl ca-certificates pkg-config "$@")
# python3 only if missing (a python3 from elsewhere, e.g. pyenv, is fine).
command -v python3 >/dev/null 2>&1 || PACKAGES+=(python3)
# Rust: rustup's toolchain if there is one; otherwise Debian 12's rustc-web
# and cargo-web (1.96, from bookworm-security), which build p11ha as they are.
command -v cargo >/dev/null 2>&1 || PACKAGES+=(rustc-web cargo-web gcc libc6-dev)

if [ -z "$(apt_missing "${PACKAGES[@]}")" ]; then
    echo "setup-debian.sh: all packages already installed (${PACKAGES[*]})"
    exit 0
fi

# Fails loudly (and this script with it) if something still is not there.
apt_install "${PACKAGES[@]}"
[ -f /usr/lib/softhsm/libsofthsm2.so ] || { echo "setup-debian.sh: /usr/lib/softhsm/libsofthsm2.so missing after install" >&2; exit 1; }
echo "setup-debian.sh: done"
