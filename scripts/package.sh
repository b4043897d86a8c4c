#!/usr/bin/env bash
# package.sh — build the p11ha Debian package, and (with --check) install it, try it as a
# user would, and purge it.
#
# Usage: scripts/package.sh [--check]
#
# Builds target/debian/p11ha_<version>_<arch>.deb with dpkg-buildpackage from debian/
# (debhelper; debian/rules builds libp11ha.so and the p11ha tool with cargo, --locked). It holds:
#   /usr/lib/<multiarch>/pkcs11/libp11ha.so    where p11-kit and multiarch look for modules
#   /usr/share/p11-kit/modules/p11ha.module     p11-kit's module file (module: libp11ha.so)
#   /usr/bin/p11ha                              the operator's tool
#   /usr/share/man/man1/p11ha.1.gz, /usr/share/man/man5/p11ha.conf.5.gz
#   /usr/share/doc/p11ha/{copyright,changelog.gz,README.md.gz,examples/p11ha.conf.example}
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
command -v dh >/dev/null && command -v dpkg-buildpackage >/dev/null \
    || "$ROOT/scripts/setup-debian.sh" dpkg-dev debhelper
for tool in cargo dpkg-buildpackage dh dpkg-architecture; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/setup-debian.sh dpkg-dev debhelper)"
done

VERSION=$(dpkg-parsechangelog -S Version)
ARCH=$(dpkg-architecture -qDEB_HOST_ARCH)
MULTIARCH=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
OUT=$ROOT/target/debian
DEB=$OUT/p11ha_${VERSION}_$ARCH.deb
mkdir -p "$OUT"
# dpkg-buildpackage writes its results beside the source tree: they are moved into target/.
PARENT=$(dirname "$ROOT")
rm -f -- "$PARENT/p11ha_${VERSION}_$ARCH".{deb,buildinfo,changes}
dpkg-buildpackage -us -uc -b >"$OUT/build.log" 2>&1 \
    || { tail -30 "$OUT/build.log" >&2; die "dpkg-buildpackage failed (target/debian/build.log)"; }
for f in "$PARENT/p11ha_${VERSION}_$ARCH".{deb,buildinfo,changes}; do
    mv -f -- "$f" "$OUT/"
done
echo "package.sh: built $DEB"
dpkg-deb --contents "$DEB" | awk '{print "  " $6}'
[ "$CHECK" = 1 ] || exit 0

# ---------------------------------------------------------------- the check
[ "$(id -u)" = 0 ] || die "--check installs the package: run it as root"
# Waits for another apt or dpkg (up to 5 minutes) rather than failing at once.
APT=(apt-get -y -q -o DPkg::Lock::Timeout=300)
purge() { "${APT[@]}" purge p11ha >/dev/null 2>&1 || true; }
trap purge EXIT
mapfile -t FILES < <(dpkg-deb --contents "$DEB" | awk '$1 ~ /^-/ {sub(/^\./, "", $6); print $6}')
"${APT[@]}" install "$DEB" >/dev/null || fail "apt-get install $DEB"
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

"${APT[@]}" purge p11ha >/dev/null || fail "apt-get purge p11ha"
trap 'rm -rf -- "$WORK"' EXIT
left=()
for f in "${FILES[@]}"; do [ ! -e "$f" ] || left+=("$f"); done
[ ${#left[@]} -eq 0 ] || fail "purge left ${left[*]}"
! dpkg -s p11ha >/dev/null 2>&1 || fail "dpkg still knows p11ha after the purge"
echo "package.sh: purge removed every file (${#FILES[@]})"
