#!/usr/bin/env bash
# package.sh — build the p11ha Debian package, and (with --check) install it, try it as a
# user would, and purge it.
#
# Usage: scripts/package.sh [--check]
#
# Builds libp11ha.so and the p11ha tool (cargo build --release --locked), then
# target/debian/p11ha_<version>_<arch>.deb with dpkg-deb (Debian's own archive tool; no
# build-time packaging helper is needed for what is one library and one binary). It holds:
#   /usr/lib/<multiarch>/pkcs11/libp11ha.so    where p11-kit and multiarch look for modules
#   /usr/share/p11-kit/modules/p11ha.module     p11-kit's module file (module: libp11ha.so)
#   /usr/bin/p11ha                              the operator's tool
#   /usr/share/man/man1/p11ha.1.gz, /usr/share/man/man5/p11ha.conf.5.gz
#   /usr/share/doc/p11ha/{copyright,README.md.gz,examples/p11ha.conf.example}
#
# --check (as root; CI runs it): installs the package with apt-get (which resolves its
# dependencies), then checks that `p11-kit list-modules` shows p11ha, that pkcs11-tool with
# the installed module path signs with a key on SoftHSM tokens (WLD over two tokens made by
# scripts/mktokens.sh, through P11HA_CONF), that `p11ha status` shows the two members, and
# that `apt-get purge` removes every file the package installed. The package is purged
# however the check ends (a module left registered would be loaded by every p11-kit aware
# program on the machine).
# Exit status: 0 built (and checked), 1 a check failed, 2 the package could not be built.
set -euo pipefail

die() { echo "package.sh: $*" >&2; exit 2; }
fail() { echo "package.sh: FAIL: $*" >&2; exit 1; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"
CHECK=0
case ${1:-} in
    --check) CHECK=1 ;;
    "") ;;
    *) die "usage: $0 [--check]" ;;
esac
command -v dpkg-architecture >/dev/null || "$ROOT/scripts/setup-debian.sh" dpkg-dev
for tool in cargo dpkg-deb dpkg-architecture gzip strip; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/setup-debian.sh dpkg-dev)"
done

VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
[ -n "$VERSION" ] || die "no version in Cargo.toml"
ARCH=$(dpkg-architecture -qDEB_HOST_ARCH)
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH)

cargo build --release --locked -p p11ha-ffi -p p11ha-cli

OUT=$ROOT/target/debian
STAGE=$OUT/p11ha_${VERSION}_$ARCH
DEB=$OUT/p11ha_${VERSION}_$ARCH.deb
rm -rf -- "$STAGE" "$DEB"
install -D -m 0644 target/release/libp11ha.so "$STAGE/usr/lib/$MULTIARCH/pkcs11/libp11ha.so"
install -D -m 0755 target/release/p11ha "$STAGE/usr/bin/p11ha"
strip --strip-unneeded "$STAGE/usr/lib/$MULTIARCH/pkcs11/libp11ha.so" "$STAGE/usr/bin/p11ha"
install -D -m 0644 targets/debian/p11ha.module "$STAGE/usr/share/p11-kit/modules/p11ha.module"
install -D -m 0644 targets/debian/p11ha.1 "$STAGE/usr/share/man/man1/p11ha.1"
install -D -m 0644 targets/debian/p11ha.conf.5 "$STAGE/usr/share/man/man5/p11ha.conf.5"
gzip -9n "$STAGE/usr/share/man/man1/p11ha.1" "$STAGE/usr/share/man/man5/p11ha.conf.5"
install -D -m 0644 targets/linux/p11ha.conf.example \
    "$STAGE/usr/share/doc/p11ha/examples/p11ha.conf.example"
install -D -m 0644 README.md "$STAGE/usr/share/doc/p11ha/README.md"
gzip -9n "$STAGE/usr/share/doc/p11ha/README.md"
cat >"$STAGE/usr/share/doc/p11ha/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: p11ha
Files: *
License: Apache-2.0 or MIT
EOF
mkdir -p "$STAGE/DEBIAN"
SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat >"$STAGE/DEBIAN/control" <<EOF
Package: p11ha
Version: $VERSION
Architecture: $ARCH
Maintainer: p11ha developers <p11ha@localhost>
Installed-Size: $SIZE
Depends: libc6 (>= 2.36), libgcc-s1
Recommends: p11-kit
Section: libs
Priority: optional
Description: high-availability layer for PKCS#11 HSMs
 libp11ha.so is a PKCS#11 module that shows several HSMs (PKCS#11 modules,
 or tokens of p11-kit servers) as one token per label, spreads sessions over
 them, and in HA mode fails sessions over when an HSM fails. The p11ha tool
 shows, tests and compares the HSMs behind it.
EOF
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
    | xargs -0 md5sum) >"$STAGE/DEBIAN/md5sums"
dpkg-deb --root-owner-group --build "$STAGE" "$DEB" >/dev/null
echo "package.sh: built $DEB"
dpkg-deb --contents "$DEB" | awk '{print "  " $6}'
[ "$CHECK" = 1 ] || exit 0

# ---------------------------------------------------------------- the check
[ "$(id -u)" = 0 ] || die "--check installs the package: run it as root"
purge() { apt-get purge -y -q p11ha >/dev/null 2>&1 || true; }
trap purge EXIT
mapfile -t FILES < <(dpkg-deb --contents "$DEB" | awk '$1 ~ /^-/ {sub(/^\./, "", $6); print $6}')
apt-get install -y -q "$DEB" >/dev/null || fail "apt-get install $DEB"
LIB=/usr/lib/$MULTIARCH/pkcs11/libp11ha.so
for f in "${FILES[@]}"; do [ -f "$f" ] || fail "$f not installed"; done
echo "package.sh: installed ${#FILES[@]} files"

WORK=$(mktemp -d /tmp/p11ha-package.XXXXXX)
trap 'purge; rm -rf -- "$WORK"' EXIT
"$ROOT/scripts/mktokens.sh" "$WORK/t" 2 >/dev/null
cat >"$WORK/p11ha.conf" <<EOF
ET_PTKC_GENERAL_LIBRARY_MODE=WLD
ET_PTKC_WLD_SLOT_0=TokName
P11HA_MODULES=/usr/lib/softhsm/libsofthsm2.so
EOF
export SOFTHSM2_CONF=$WORK/t/softhsm2.conf P11HA_CONF=$WORK/p11ha.conf

p11-kit list-modules 2>/dev/null | grep -q '^p11ha: ' \
    || fail "p11-kit list-modules does not show p11ha"
echo "package.sh: p11-kit list-modules shows p11ha"

printf 'package check' >"$WORK/data"
pkcs11-tool --module "$LIB" --slot 0 --login --pin 1234 --sign -m SHA256-RSA-PKCS --id 02 \
    -i "$WORK/data" -o "$WORK/sig" >/dev/null 2>&1 \
    || fail "pkcs11-tool --module $LIB could not sign"
openssl dgst -sha256 -verify "$WORK/t/keys/rsa-pub.pem" -signature "$WORK/sig" "$WORK/data" \
    >/dev/null || fail "the signature made through the installed module does not verify"
echo "package.sh: pkcs11-tool --module $LIB signs (openssl verifies)"

status=$(p11ha status) || fail "p11ha status exited $?: $status"
grep -q '2 of 2 members up' <<<"$status" || fail "p11ha status: $status"
echo "package.sh: p11ha status shows the two members"
man -w p11ha >/dev/null 2>&1 || [ ! -x /usr/bin/man ] || fail "man p11ha not found"

apt-get purge -y -q p11ha >/dev/null || fail "apt-get purge p11ha"
trap 'rm -rf -- "$WORK"' EXIT
left=()
for f in "${FILES[@]}"; do [ ! -e "$f" ] || left+=("$f"); done
[ ${#left[@]} -eq 0 ] || fail "purge left ${left[*]}"
! dpkg -s p11ha >/dev/null 2>&1 || fail "dpkg still knows p11ha after the purge"
echo "package.sh: purge removed every file (${#FILES[@]})"
