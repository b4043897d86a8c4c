#!/usr/bin/env bash
# cryptoki-compare.sh — run the cryptoki 0.12.1 test suite against SoftHSM directly and
# through a shim module, and check that every test has the same outcome both ways.
#
# Usage: scripts/cryptoki-compare.sh SHIM_MODULE [KEY=VALUE...]
#   KEY=VALUE pairs configure the shim and are passed only to the shim run, e.g.
#   scripts/cryptoki-compare.sh target/debug/libp11ha.so \
#       P11HA_MODULES=/usr/lib/softhsm/libsofthsm2.so ET_PTKC_GENERAL_LIBRARY_MODE=NORMAL
#
# Uses scripts/cryptoki-suite.sh; results go to target/cryptoki-suite/compare/{direct,shim}/
# (results.txt, selfskipped.txt, logs/). Prints the tests whose outcome differs, then e.g.
#   cryptoki suite: direct 89 passed 0 failed 2 ignored; via shim: 89 passed 0 failed 2 ignored; identical outcomes
# Tests that skip themselves ("SKIP: ..." = API not offered by the module) in one run but
# not in the other are listed as a warning; they do not change the exit status.
# Exit status: 0 identical outcomes, 1 some outcome differs, 2 a suite run could not be done.
# Env: SOFTHSM_MODULE (default /usr/lib/softhsm/libsofthsm2.so), the CRYPTOKI_SUITE_* of
# cryptoki-suite.sh; CRYPTOKI_COMPARE_OUT (default target/cryptoki-suite/compare) and
# CRYPTOKI_COMPARE_NAME (default shim: the shim run's directory and name in the report), which
# scripts/cryptoki-ha.sh sets.
set -euo pipefail

die() { echo "cryptoki-compare.sh: $*" >&2; exit 2; }

[ $# -ge 1 ] || die "usage: $0 SHIM_MODULE [KEY=VALUE...]"
SHIM=$1
shift
DIRECT=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
BASE=${CRYPTOKI_COMPARE_OUT:-$(cd "$HERE/.." && pwd -P)/target/cryptoki-suite/compare}
NAME=${CRYPTOKI_COMPARE_NAME:-shim}
SUITE=$HERE/cryptoki-suite.sh

# run_suite NAME MODULE [KEY=VALUE...]: exit status 0/1 are fine (1 = some test failed).
run_suite() {
    local name=$1 rc=0
    shift
    echo "== $name: $*"
    CRYPTOKI_SUITE_OUT=$BASE/$name "$SUITE" "$@" || rc=$?
    [ $rc -le 1 ] || die "the $name suite run failed (exit status $rc)"
}
run_suite direct "$DIRECT"
run_suite "$NAME" "$SHIM" "$@"

D=$BASE/direct
S=$BASE/$NAME
totals() {
    printf '%s passed %s failed %s ignored' \
        "$(grep -c '^PASS ' "$1/results.txt" || true)" \
        "$(grep -c '^FAIL ' "$1/results.txt" || true)" \
        "$(grep -c '^IGNORED ' "$1/results.txt" || true)"
}

# "<test> <direct outcome> <shim outcome>" for every test whose outcome differs
# (MISSING when a test appears in only one run).
diffs=$(awk 'NR == FNR { d[$2] = $1; next }
             { s[$2] = $1 }
             END {
                 for (t in d) if (!(t in s)) print t, d[t], "MISSING"
                 for (t in s) if (!(t in d)) print t, "MISSING", s[t]
                 for (t in d) if ((t in s) && d[t] != s[t]) print t, d[t], s[t]
             }' "$D/results.txt" "$S/results.txt" | LC_ALL=C sort)

skipdiff=$(diff <(cut -d: -f1-3 "$D/selfskipped.txt") <(cut -d: -f1-3 "$S/selfskipped.txt") \
    | sed -n "s/^< \(.*\)/  skipped only when direct: \1/p; s/^> \(.*\)/  skipped only via $NAME:  \1/p" || true)

echo
if [ -n "$diffs" ]; then
    echo "tests whose outcome differs (test, direct, via $NAME):"
    while read -r line; do echo "  $line"; done <<<"$diffs"
fi
if [ -n "$skipdiff" ]; then
    echo "warning: self-skipping tests differ (outcome PASS both ways, but coverage differs):"
    echo "$skipdiff"
fi
verdict="identical outcomes"
[ -z "$diffs" ] || verdict="$(echo "$diffs" | grep -c .) test(s) differ"
echo "cryptoki suite: direct $(totals "$D"); via $NAME: $(totals "$S"); $verdict"
[ -z "$diffs" ]
