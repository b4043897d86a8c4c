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
# non-interactively. Packages: softhsm2 opensc p11-kit p11-kit-modules gnutls-bin
# openssl curl ca-certificates pkg-config, python3 if no python3 is on PATH, and
# Debian's Rust (rustc-web, cargo-web) if no cargo is on PATH.
set -euo pipefail

PACKAGES=(softhsm2 opensc p11-kit p11-kit-modules gnutls-bin openssl curl ca-certificates pkg-config "$@")
# python3 only if missing (a python3 from elsewhere, e.g. pyenv, is fine).
command -v python3 >/dev/null 2>&1 || PACKAGES+=(python3)
# Rust: rustup's toolchain if there is one; otherwise Debian 12's rustc-web
# and cargo-web (1.96, from bookworm-security), which build p11ha as they are.
command -v cargo >/dev/null 2>&1 || PACKAGES+=(rustc-web cargo-web gcc libc6-dev)

is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

missing=()
for p in "${PACKAGES[@]}"; do
    is_installed "$p" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
    echo "setup-debian.sh: all packages already installed (${PACKAGES[*]})"
    exit 0
fi

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup-debian.sh: must run as root (or with sudo available)" >&2; exit 1; }
    SUDO=(sudo)
fi

echo "setup-debian.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

# Fail loudly if something still is not there.
for p in "${missing[@]}"; do
    is_installed "$p" || { echo "setup-debian.sh: $p did not install" >&2; exit 1; }
done
[ -f /usr/lib/softhsm/libsofthsm2.so ] || { echo "setup-debian.sh: /usr/lib/softhsm/libsofthsm2.so missing after install" >&2; exit 1; }
echo "setup-debian.sh: done"
