#!/usr/bin/env bash
# cryptoki-ha.sh — the cryptoki crate's published tests (v0.12.1), unmodified, on a p11ha
# virtual slot with two members in WLD or HA mode, and directly on SoftHSM; every test must
# have the same outcome both ways.
#
# Usage: scripts/cryptoki-ha.sh WLD|HA [LIBP11HA] [KEY=VALUE...]
#                                         (default target/release/libp11ha.so; KEY=VALUE
#                                          configure p11ha on top of what is below)
#
# The members: two SoftHSM tokens in one token directory, SoftHSM loaded as a module
# (P11HA_MODULES), both labelled "Test Token" with the tests' SO PIN (abcdef654321) and no
# user PIN, which is what the tests' own C_InitToken leaves; virtual slot 0 is
# ET_PTKC_WLD_SLOT_0="Test Token". Every test begins with C_InitToken and C_InitPIN on the
# virtual slot, which p11ha carries out on both members. HA mode's members are modules too:
# over p11-kit servers, 7 tests fail in any mode because p11-kit 0.24.1's protocol cannot
# carry their mechanism parameters (GCM, ECDH1, EdDSA), which scripts/cryptoki-remote.sh
# shows in NORMAL mode; this script is about what WLD and HA do to a token's semantics.
#
# P11HA_TOKEN_KEYS=LOCAL is set: the tests generate token keys that are not extractable
# (SoftHSM's default), and initialise the token at every test, which would remove any
# replication key; p11ha refuses such keys on a slot of two members unless told to keep
# them on one (README, "Token objects"). The tests use a key in the session that made it.
#
# The runs and their comparison are scripts/cryptoki-compare.sh's: results in
# target/cryptoki-suite/ha/direct/ and target/cryptoki-suite/ha/<MODE>-2/ (the tokens and
# the HA log in target/cryptoki-suite/ha/<MODE>.members/), the report ending e.g.
#   cryptoki suite: direct 89 passed 0 failed 2 ignored; via WLD-2: 89 passed 0 failed 2 ignored; identical outcomes
# Exit status: 0 identical outcomes, 1 some outcome differs, 2 a run could not be done.
# Env: SOFTHSM_MODULE (default /usr/lib/softhsm/libsofthsm2.so), and cryptoki-suite.sh's
# CRYPTOKI_SUITE_TIMEOUT and CRYPTOKI_SUITE_TEST_TIMEOUT. Needs: softhsm2, opensc.
set -euo pipefail

die() { echo "cryptoki-ha.sh: $*" >&2; exit 2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$HERE/.." && pwd -P)
SOFTHSM=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
LABEL="Test Token"
SO_PIN=abcdef654321

[ $# -ge 1 ] || die "usage: $0 WLD|HA [LIBP11HA] [KEY=VALUE...]"
MODE=$1
shift
case $MODE in WLD | HA) ;; *) die "MODE must be WLD or HA, not '$MODE'" ;; esac
LIB=$ROOT/target/release/libp11ha.so
if [ $# -ge 1 ] && [[ $1 != *=* ]]; then
    LIB=$1
    shift
fi
for kv in "$@"; do
    [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "extra argument '$kv' is not KEY=VALUE"
done
[ -f "$LIB" ] || die "$LIB not found (cargo build --release -p p11ha-ffi)"
[ -f "$SOFTHSM" ] || die "$SOFTHSM not found (scripts/setup-debian.sh)"
command -v pkcs11-tool >/dev/null || die "pkcs11-tool not found (scripts/setup-debian.sh)"

BASE=$ROOT/target/cryptoki-suite/ha
LOGS=$BASE/$MODE.members
rm -rf -- "$LOGS"
mkdir -p "$LOGS/tokens"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
    "$LOGS/tokens" >"$LOGS/softhsm2.conf"
for i in 1 2; do
    # SoftHSM always shows one uninitialised slot: initialise it as C_InitToken does.
    index=$(SOFTHSM2_CONF=$LOGS/softhsm2.conf pkcs11-tool --module "$SOFTHSM" -L | awk '
        /^Slot [0-9]+ / { i = $2 } /token state: *uninitialized/ { print i; exit }')
    [ -n "$index" ] || die "no uninitialised SoftHSM slot for token $i"
    SOFTHSM2_CONF=$LOGS/softhsm2.conf pkcs11-tool --module "$SOFTHSM" --slot-index "$index" \
        --init-token --label "$LABEL" --so-pin "$SO_PIN" >/dev/null 2>&1 \
        || die "pkcs11-tool --init-token failed for token $i"
done

MEMBERS=(SOFTHSM2_CONF="$LOGS/softhsm2.conf" P11HA_MODULES="$SOFTHSM" P11HA_CONF=/dev/null
    ET_PTKC_GENERAL_LIBRARY_MODE="$MODE" ET_PTKC_WLD_SLOT_0="$LABEL" P11HA_TOKEN_KEYS=LOCAL
    ET_PTKC_HA_LOG_FILE="$LOGS/ha.log" "$@")

# The two runs and their comparison are cryptoki-compare.sh's, into target/cryptoki-suite/ha/.
CRYPTOKI_COMPARE_OUT=$BASE CRYPTOKI_COMPARE_NAME=$MODE-2 \
    exec "$HERE/cryptoki-compare.sh" "$LIB" "${MEMBERS[@]}"
