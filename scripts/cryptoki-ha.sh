#!/usr/bin/env bash
# cryptoki-ha.sh — the cryptoki crate's published tests (v0.12.1) on a p11ha virtual slot
# with two members, and directly on SoftHSM, and every test whose outcome differs.
#
# Usage: scripts/cryptoki-ha.sh WLD|HA [LIBP11HA]    (default target/release/libp11ha.so)
#
# The members are set up as scripts/clients.sh sets up its WLD and HA modes, for the same
# reason: WLD spreads sessions over the tokens of modules in this process, HA fails over
# between HSMs that fail on their own, which p11ha's remote members are.
#   WLD  P11HA_MODULES=SoftHSM over one token directory holding both tokens
#   HA   two `p11-kit server`s, one token each (on Unix sockets), no module; the servers
#        show only the tokens labelled "Test Token"
# Both tokens are what the tests' own C_InitToken makes: label "Test Token", the tests' SO
# PIN (abcdef654321), no user PIN yet; virtual slot 0 is ET_PTKC_WLD_SLOT_0="Test Token".
#
# Every test begins with C_InitToken, which p11ha answers CKR_FUNCTION_NOT_SUPPORTED on a
# virtual slot (README, "Modes"). CRYPTOKI_HA_INIT says what then happens:
#   operator  (default) before each test both members are made fresh tokens again (copies
#             of one pair made at the start; in HA each server is started again over its
#             copy), and the tests are built with scripts/cryptoki-operator-init.patch,
#             which takes that one answer as done when CRYPTOKI_SUITE_TOKEN_READY is set;
#             C_InitPIN and all that follows go through p11ha. Each test runs in a process
#             of its own (CRYPTOKI_SUITE_BEFORE_EACH of cryptoki-suite.sh).
#   suite     the tests as published, all in one process per test binary, over the same
#             members: every test that calls C_InitToken fails on it.
# Today (p11ha 0.1): WLD, operator init: 89 passed 0 failed 2 ignored, as directly; HA,
# operator init: 82/7/2, the 7 being the tests whose mechanism parameters hold pointers,
# which p11-kit 0.24.1's protocol cannot carry (they fail in NORMAL mode over RPC too,
# scripts/cryptoki-remote.sh); suite init, either mode: 23/66/2 (in HA some test binaries
# crash there, and cryptoki-suite.sh runs their tests one by one). p11ha places a session on
# a member at random among the least loaded, so which member serves a test varies from run
# to run; the outcomes have not.
#
# Results (scripts/cryptoki-suite.sh's files): target/cryptoki-suite/ha/direct/ (the
# published tests on SoftHSM, as cryptoki-compare.sh runs them), and
# target/cryptoki-suite/ha/<MODE>-<init>/; beside the latter, <MODE>-<init>.members/ keeps
# the HA log (ha.log) and the servers' logs. WLD's warnings are in the tests' stderr (logs/).
# Prints the tests whose outcome differs (and, as a warning that does not change the exit
# status, tests that skip themselves in one run only, as cryptoki-compare.sh), then e.g.
#   cryptoki suite: direct 89 passed 0 failed 2 ignored; WLD-2 (operator init): 89 passed ...
# Exit status: 0 identical outcomes, 1 some outcome differs, 2 a run could not be done.
# Env: CRYPTOKI_HA_INIT (operator or suite), SOFTHSM_MODULE (default
# /usr/lib/softhsm/libsofthsm2.so), and cryptoki-suite.sh's CRYPTOKI_SUITE_TIMEOUT and
# CRYPTOKI_SUITE_TEST_TIMEOUT. Needs: softhsm2, opensc (pkcs11-tool), p11-kit (HA).
# No server outlives the script: each runs in a process group of its own that kills itself
# when the script's lifeline FIFO closes, however the script ends.
set -euo pipefail

die() { echo "cryptoki-ha.sh: $*" >&2; exit 2; }

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$HERE/.." && pwd -P)
SOFTHSM=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
LABEL="Test Token"
LABEL_URI="Test%20Token"
SO_PIN=abcdef654321

# ---------------------------------------------------------------- the members
# Everything below works in WORK (a short path in /tmp: Unix socket paths are short), laid
# out as: template/ (the fresh pair, made once), wld/ or server-<i>/ (the members' copies),
# env (MODE, LOGS and MAIN, the main script's pid, for --before-each), lifeline (FIFO),
# server-<i>.pgid.

# make_template: WORK/template/tokens with the two fresh tokens, and TOKEN_DIRS.
make_template() {
    local dir=$WORK/template i index
    mkdir -p "$dir/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
        "$dir/tokens" >"$dir/softhsm2.conf"
    for i in 1 2; do
        # SoftHSM always shows one uninitialised slot: initialise it (no user PIN, as
        # C_InitToken leaves a token).
        index=$(SOFTHSM2_CONF=$dir/softhsm2.conf pkcs11-tool --module "$SOFTHSM" -L | awk '
            /^Slot [0-9]+ / { i = $2 } /token state: *uninitialized/ { print i; exit }')
        [ -n "$index" ] || die "no uninitialised SoftHSM slot for token $i"
        SOFTHSM2_CONF=$dir/softhsm2.conf pkcs11-tool --module "$SOFTHSM" --slot-index "$index" \
            --init-token --label "$LABEL" --so-pin "$SO_PIN" >/dev/null 2>&1 \
            || die "pkcs11-tool --init-token failed for token $i"
    done
    mapfile -t TOKEN_DIRS < <(find "$dir/tokens" -mindepth 1 -maxdepth 1 -type d | LC_ALL=C sort)
    [ ${#TOKEN_DIRS[@]} -eq 2 ] || die "expected 2 token directories, found ${#TOKEN_DIRS[@]}"
}

# tokendir DIR TOKEN...: DIR/softhsm2.conf over fresh copies of the given token directories.
tokendir() {
    local dir=$1
    shift
    rm -rf -- "$dir/tokens"
    mkdir -p "$dir/tokens"
    cp -a -- "$@" "$dir/tokens/"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
        "$dir/tokens" >"$dir/softhsm2.conf"
}

# running_in_group PGID: some process of that group runs (zombies left to be reaped by
# whoever adopted them do not count: they touch no token).
running_in_group() {
    local f st state pgrp
    for f in /proc/[0-9]*/stat; do
        # read, not $(<...): under set -e a process gone meanwhile would end the script.
        IFS= read -r st 2>/dev/null <"$f" || continue
        st=${st##*) }
        read -r state _ pgrp _ <<<"$st"
        [ "$pgrp" = "$1" ] && [ "$state" != Z ] && return 0
    done
    return 1
}

# stop_server I: ends server I's process group (if it runs) and returns once none of it runs.
stop_server() {
    local f=$WORK/server-$1.pgid pg
    [ -f "$f" ] || return 0
    pg=$(<"$f")
    kill -TERM -- "-$pg" 2>/dev/null || true
    wait "$pg" 2>/dev/null || true # a child of this shell (started before the suite)
    for _ in $(seq 100); do
        running_in_group "$pg" || break
        sleep 0.05
    done
    kill -KILL -- "-$pg" 2>/dev/null || true # what did not end in 5 s
    rm -f -- "$f"
}

# start_server I: server I over WORK/server-I, listening once this returns (at most 10 s).
# It runs under a shell in a process group of its own (setsid) that waits on the lifeline
# FIFO, which only the main script holds open for writing (fd 7): at its end the group is
# killed.
start_server() {
    local i=$1 dir=$WORK/server-$1 pid stat pgrp
    rm -f -- "$dir/sock"
    # shellcheck disable=SC2016 # $1... are the inner shell's arguments
    SOFTHSM2_CONF=$dir/softhsm2.conf setsid bash -c \
        'p11-kit server -f --provider "$1" -n "$2" "$3" </dev/null >>"$4" 2>&1 &
         read -r _; kill -KILL 0' \
        p11ha-cryptoki-server "$SOFTHSM" "$dir/sock" "pkcs11:token=$LABEL_URI" \
        "$LOGS/server-$i.log" <"$WORK/lifeline" 7>&- &
    pid=$!
    echo "$pid" >"$WORK/server-$i.pgid"
    for _ in $(seq 200); do
        [ -S "$dir/sock" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    [ -S "$dir/sock" ] || die "p11-kit server $i did not start (log: $LOGS/server-$i.log)"
    # A background job of a non-interactive shell is no group leader, so setsid did not
    # fork: the shell's pid is the group's id. Make sure, since stop_server relies on it.
    stat=$(<"/proc/$pid/stat")
    stat=${stat##*) }
    read -r _ _ pgrp _ <<<"$stat"
    [ "$pgrp" = "$pid" ] || die "server $i: process $pid is in group $pgrp, not its own"
}

# fresh_members: both members are fresh tokens again (HA: their servers started again).
fresh_members() {
    local i
    mapfile -t TOKEN_DIRS < <(find "$WORK/template/tokens" -mindepth 1 -maxdepth 1 -type d \
        | LC_ALL=C sort)
    case $MODE in
        WLD) tokendir "$WORK/wld" "${TOKEN_DIRS[@]}" ;;
        HA)
            for i in 0 1; do
                stop_server "$i"
                tokendir "$WORK/server-$i" "${TOKEN_DIRS[$i]}"
                start_server "$i"
            done
            ;;
    esac
}

# Called by cryptoki-suite.sh before each test (operator init): WORK [BINARY TEST].
if [ "${1:-}" = --before-each ]; then
    WORK=$2
    # shellcheck source=/dev/null # MODE, LOGS and MAIN, written below
    . "$WORK/env"
    # Without the main script, no one holds the lifeline open: a server would not start.
    kill -0 "$MAIN" 2>/dev/null || die "the main script (process $MAIN) is gone"
    fresh_members
    exit 0
fi

# ---------------------------------------------------------------- the runs
if [ $# -lt 1 ] || [ $# -gt 2 ]; then die "usage: $0 WLD|HA [LIBP11HA]"; fi
MODE=$1
case $MODE in WLD | HA) ;; *) die "MODE must be WLD or HA, not '$MODE'" ;; esac
LIB=${2:-$ROOT/target/release/libp11ha.so}
[ -f "$LIB" ] || die "$LIB not found (cargo build --release -p p11ha-ffi)"
INIT=${CRYPTOKI_HA_INIT:-operator}
case $INIT in operator | suite) ;; *) die "CRYPTOKI_HA_INIT must be operator or suite, not '$INIT'" ;; esac
[ -f "$SOFTHSM" ] || die "$SOFTHSM not found (scripts/setup-debian.sh)"
command -v pkcs11-tool >/dev/null || die "pkcs11-tool not found (scripts/setup-debian.sh)"
[ "$MODE" = WLD ] || command -v p11-kit >/dev/null || die "p11-kit not found (scripts/setup-debian.sh)"

BASE=$ROOT/target/cryptoki-suite/ha
NAME=$MODE-$INIT
LOGS=$BASE/$NAME.members
rm -rf -- "$LOGS"
mkdir -p "$LOGS"
WORK=$(mktemp -d /tmp/p11ha-cryptoki-ha.XXXXXX)
mkfifo "$WORK/lifeline"
exec 7<>"$WORK/lifeline"
cleanup() {
    stop_server 0
    stop_server 1
    rm -rf -- "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
printf 'MODE=%q\nLOGS=%q\nMAIN=%q\n' "$MODE" "$LOGS" "$$" >"$WORK/env"

make_template
fresh_members

case $MODE in
    WLD)
        MEMBERS=(SOFTHSM2_CONF="$WORK/wld/softhsm2.conf" P11HA_MODULES="$SOFTHSM"
            ET_PTKC_GENERAL_LIBRARY_MODE=WLD) ;;
    HA)
        MEMBERS=(P11HA_MODULES= ET_PTKC_GENERAL_LIBRARY_MODE=HA
            ET_HSM_NETCLIENT_SERVERLIST="unix:path=$WORK/server-0/sock unix:path=$WORK/server-1/sock"
            ET_PTKC_HA_LOG_FILE="$LOGS/ha.log") ;;
esac
MEMBERS+=(P11HA_CONF=/dev/null ET_PTKC_WLD_SLOT_0="$LABEL")
SUITE_ENV=()
if [ "$INIT" = operator ]; then
    MEMBERS+=(CRYPTOKI_SUITE_TOKEN_READY=1)
    SUITE_ENV=(CRYPTOKI_SUITE_PATCH="$HERE/cryptoki-operator-init.patch"
        CRYPTOKI_SUITE_BEFORE_EACH="$(printf '%q --before-each %q' "$HERE/cryptoki-ha.sh" "$WORK")")
fi

# run_suite NAME [VAR=VALUE...] MODULE [KEY=VALUE...]: cryptoki-suite.sh with the VARs in
# its own environment, output to BASE/NAME; exit status 0/1 are fine (1 = some test failed).
run_suite() {
    local name=$1 vars=() rc=0
    shift
    while [[ $1 == CRYPTOKI_SUITE_*=* ]]; do
        vars+=("$1")
        shift
    done
    echo "== $name: $*"
    env CRYPTOKI_SUITE_OUT="$BASE/$name" "${vars[@]}" "$HERE/cryptoki-suite.sh" "$@" 7>&- || rc=$?
    [ $rc -le 1 ] || die "the $name suite run failed (exit status $rc)"
}
run_suite direct "$SOFTHSM"
run_suite "$NAME" "${SUITE_ENV[@]}" "$LIB" "${MEMBERS[@]}"

totals() {
    printf '%s passed %s failed %s ignored' \
        "$(grep -c '^PASS ' "$1/results.txt" || true)" \
        "$(grep -c '^FAIL ' "$1/results.txt" || true)" \
        "$(grep -c '^IGNORED ' "$1/results.txt" || true)"
}
D=$BASE/direct
S=$BASE/$NAME
# "<test> <direct outcome> <p11ha outcome>" for every test whose outcome differs.
diffs=$(LC_ALL=C join -a1 -a2 -e MISSING -o 0,1.2,2.2 <(awk '{print $2, $1}' "$D/results.txt" | LC_ALL=C sort) \
    <(awk '{print $2, $1}' "$S/results.txt" | LC_ALL=C sort) | awk '$2 != $3')
skipdiff=$(diff <(cut -d: -f1-3 "$D/selfskipped.txt") <(cut -d: -f1-3 "$S/selfskipped.txt") \
    | sed -n "s/^< \(.*\)/  skipped only when direct: \1/p; s/^> \(.*\)/  skipped only in $MODE-2: \1/p" || true)
echo
if [ -n "$diffs" ]; then
    echo "tests whose outcome differs (test, direct, $MODE-2):"
    while read -r line; do echo "  $line"; done <<<"$diffs"
fi
if [ -n "$skipdiff" ]; then
    echo "warning: self-skipping tests differ (outcome PASS both ways, but coverage differs):"
    echo "$skipdiff"
fi
verdict="identical outcomes"
[ -z "$diffs" ] || verdict="$(echo "$diffs" | grep -c .) test(s) differ"
echo "cryptoki suite: direct $(totals "$D"); $MODE-2 ($INIT init): $(totals "$S"); $verdict"
[ -z "$diffs" ]
