#!/usr/bin/env bash
# cryptoki-suite.sh — run the `cryptoki` crate's published integration tests (v0.12.1)
# against a PKCS#11 module and write a machine-readable result list.
#
# Usage: scripts/cryptoki-suite.sh MODULE [KEY=VALUE...]
#   MODULE      PKCS#11 library to test, e.g. /usr/lib/softhsm/libsofthsm2.so or a shim
#               (like target/debug/libp11ha.so) that forwards to SoftHSM.
#   KEY=VALUE   exported into the test processes' environment only (not into the build),
#               e.g. P11HA_MODULES=/usr/lib/softhsm/libsofthsm2.so. Applied last, so they
#               may override the variables set below.
#
# What it does:
#   * gets cryptoki-0.12.1.crate (from the local cargo cache if there, else curl from
#     static.crates.io), checks its SHA-256, unpacks it under target/cryptoki-suite/src/
#     (git-ignored scratch; never copied into the repository);
#   * builds its integration tests with `cargo test --locked --no-run`, target dir
#     target/cryptoki-suite/target (cached between runs);
#   * creates a fresh scratch SoftHSM dir for the run, with no token (SoftHSM shows one
#     uninitialized slot, which the tests init_token themselves), and runs every test binary
#     with SOFTHSM2_CONF pointing at it, TEST_PKCS11_MODULE=MODULE, and, if MODULE's path
#     does not contain "softhsm", TEST_PRETEND_LIBRARY=softhsm (so the tests take their
#     SoftHSM branches for a shim that forwards to SoftHSM), with --test-threads=1;
#   * if a test binary crashes or times out, its tests are re-run one process per test so
#     that every test still gets an outcome.
#
# Output directory: $CRYPTOKI_SUITE_OUT, default target/cryptoki-suite/runs/<module file name>
# (wiped at start):
#   results.txt       one line per test, sorted: "PASS|FAIL|IGNORED <binary>::<test>"
#   selfskipped.txt   tests that passed only because they printed "SKIP: ..." and returned
#                     early (the module lacks the PKCS#11 3.x API they need)
#   summary.txt       the totals line, also printed last on stdout
#   crashes.txt       only if a test binary crashed/hung: which test and its exit status
#   logs/             build log and each test binary's stdout/stderr; softhsm/ the scratch token dir
# Exit status: 0 all tests passed or ignored, 1 some test failed, 2 setup/build error.
# Env: CRYPTOKI_SUITE_TIMEOUT (seconds per test binary, default 900),
#      CRYPTOKI_SUITE_TEST_TIMEOUT (seconds per test in the crash fallback, default 120).
# Needs: cargo, curl (unless cached), python3, softhsm2 — see scripts/setup-debian.sh.
set -euo pipefail

VERSION=0.12.1
CRATE_SHA256=625cf4599c43d69a16996ce2573fc80745a0b0300c962f0bfa11d55b6cab2b2d
CRATE_URL=https://static.crates.io/crates/cryptoki/cryptoki-$VERSION.crate

die() { echo "cryptoki-suite.sh: $*" >&2; exit 2; }
log() { echo "cryptoki-suite.sh: $*" >&2; }

[ $# -ge 1 ] || die "usage: $0 MODULE [KEY=VALUE...]"
MODULE=$1
shift
[ -f "$MODULE" ] || die "module $MODULE not found"
MODULE=$(cd "$(dirname "$MODULE")" && pwd -P)/$(basename "$MODULE")
EXTRA=()
for kv in "$@"; do
    [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "extra argument '$kv' is not KEY=VALUE"
    EXTRA+=("$kv")
done
for tool in cargo rustc python3 timeout; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
BASE=$ROOT/target/cryptoki-suite
SRC=$BASE/src/cryptoki-$VERSION
TARGET_DIR=$BASE/target
OUT=${CRYPTOKI_SUITE_OUT:-$BASE/runs/$(basename "$MODULE")}
BIN_TIMEOUT=${CRYPTOKI_SUITE_TIMEOUT:-900}
TEST_TIMEOUT=${CRYPTOKI_SUITE_TEST_TIMEOUT:-120}

mkdir -p "$BASE/src"
if [ -d "$OUT" ] && [ -n "$(ls -A "$OUT")" ] && [ ! -d "$OUT/logs" ]; then
    die "$OUT is not empty and does not look like a previous cryptoki-suite.sh output; not wiping it"
fi
rm -rf -- "$OUT"
mkdir -p "$OUT/logs" "$OUT/softhsm/tokens"
OUT=$(cd "$OUT" && pwd -P)

# ---------------------------------------------------------------- crate source
if [ ! -f "$SRC/.p11ha-unpacked" ]; then
    crate=$BASE/cryptoki-$VERSION.crate
    if [ ! -f "$crate" ] || ! echo "$CRATE_SHA256  $crate" | sha256sum -c --status; then
        cached=("${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"cryptoki-$VERSION.crate")
        if [ -f "${cached[0]}" ]; then
            cp -- "${cached[0]}" "$crate.tmp"
        else
            command -v curl >/dev/null || die "curl not found (run scripts/setup-debian.sh)"
            log "downloading $CRATE_URL"
            curl -fsSL --retry 3 -o "$crate.tmp" "$CRATE_URL"
        fi
        echo "$CRATE_SHA256  $crate.tmp" | sha256sum -c --status \
            || die "SHA-256 mismatch for cryptoki-$VERSION.crate"
        mv -- "$crate.tmp" "$crate"
    fi
    rm -rf -- "$SRC" "$SRC.tmp"
    mkdir -p "$SRC.tmp"
    tar -xzf "$crate" -C "$SRC.tmp"
    mv -- "$SRC.tmp/cryptoki-$VERSION" "$SRC"
    rmdir -- "$SRC.tmp"
    # The crate lives below the p11ha workspace root; make it its own workspace so that
    # cargo does not complain that it is not a member of ours.
    printf '\n[workspace]\n' >>"$SRC/Cargo.toml"
    touch "$SRC/.p11ha-unpacked"
fi

# ---------------------------------------------------------------- build
# An explicit host --target keeps a [build] target from a .cargo/config.toml above the crate
# (e.g. one of the p11ha workspace's) from redirecting this build.
HOST=$(rustc -vV | sed -n 's/^host: //p')
[ -n "$HOST" ] || die "cannot determine the host target triple from rustc -vV"
t0=$(date +%s.%N)
if ! (cd "$SRC" && cargo test --locked --test '*' --no-run --message-format=json-render-diagnostics \
        --target "$HOST" --target-dir "$TARGET_DIR") >"$OUT/logs/build.json" 2>"$OUT/logs/build.log"; then
    tail -n 30 "$OUT/logs/build.log" >&2
    die "building the cryptoki tests failed (log: $OUT/logs/build.log)"
fi
t1=$(date +%s.%N)
# "<binary-name> <executable>" for each integration-test target.
mapfile -t BINARIES < <(python3 "$ROOT/scripts/python/cargo_test_binaries.py" "$OUT/logs/build.json")
[ ${#BINARIES[@]} -gt 0 ] || die "no test binaries found in the build output"

# ---------------------------------------------------------------- run
cat >"$OUT/softhsm/softhsm2.conf" <<EOF
directories.tokendir = $OUT/softhsm/tokens
objectstore.backend = file
log.level = ERROR
EOF
RUN_ENV=(SOFTHSM2_CONF="$OUT/softhsm/softhsm2.conf" TEST_PKCS11_MODULE="$MODULE")
if [[ $MODULE != *softhsm* ]] && [ -z "${TEST_PRETEND_LIBRARY:-}" ]; then
    RUN_ENV+=(TEST_PRETEND_LIBRARY=softhsm)
fi
RUN_ENV+=("${EXTRA[@]}")

# run_test_binary EXE ARGS...: run with the test environment, from the crate directory.
run_test_binary() {
    (cd "$SRC" && env "${RUN_ENV[@]}" timeout -k 10 "$@")
}

RESULTS=$OUT/results.txt.unsorted
: >"$RESULTS"
: >"$OUT/selfskipped.txt.unsorted"
for entry in "${BINARIES[@]}"; do
    name=${entry%% *}
    exe=${entry#* }
    out=$OUT/logs/$name.out
    err=$OUT/logs/$name.err
    mapfile -t all < <(env "${RUN_ENV[@]}" "$exe" --list --format terse | sed -n 's/: test$//p')
    mapfile -t ignored < <(env "${RUN_ENV[@]}" "$exe" --list --ignored --format terse | sed -n 's/: test$//p')
    [ ${#all[@]} -gt 0 ] || die "$exe --list shows no tests"

    rc=0
    run_test_binary "$BIN_TIMEOUT" "$exe" --test-threads=1 --show-output </dev/null >"$out" 2>"$err" || rc=$?

    # libtest exits 0 (all ok) or 101 (some failed) after printing "test result: ...";
    # anything else (signal, abort, timeout) means it did not finish.
    failed=()
    finished=0
    if { [ $rc -eq 0 ] || [ $rc -eq 101 ]; } && grep -q '^test result: ' "$out"; then
        # The final "failures:" block lists the failed tests, indented by 4 spaces.
        mapfile -t failed < <(awk '/^failures:$/ { n = NR; delete f; k = 0; next }
                                   n && /^    [^ ]+$/ { f[k++] = $1; next }
                                   n && /^$/ && k { n = 0 }
                                   END { for (i = 0; i < k; i++) print f[i] }' "$out")
        counts=$(sed -n 's/^test result: [A-Za-z]*\. \([0-9]*\) passed; \([0-9]*\) failed; \([0-9]*\) ignored.*/\1 \2 \3/p' "$out" | tail -n 1)
        if [ "$counts" = "$((${#all[@]} - ${#ignored[@]} - ${#failed[@]})) ${#failed[@]} ${#ignored[@]}" ]; then
            finished=1
        else
            log "$name: could not reconcile its output with the test list; re-running tests one by one"
        fi
    else
        # With --test-threads=1 libtest prints "test NAME ... " before running NAME, so an
        # unterminated last such line names the test that crashed or hung: it fails.
        crashed=$(awk '/^test [^ ]+ \.\.\. / { t = $2; done = ($0 !~ /\.\.\. $/) } END { if (t != "" && !done) print t }' "$out")
        log "$name: test binary did not finish (exit status $rc${crashed:+ in $crashed}); re-running its other tests one by one"
        if [ -n "$crashed" ]; then
            failed=("$crashed")
            echo "$name::$crashed: exit status $rc" >>"$OUT/crashes.txt"
        else
            echo "$name: exit status $rc, crashing test unknown" >>"$OUT/crashes.txt"
        fi
    fi

    declare -A is_ignored=() is_failed=()
    for t in "${ignored[@]}"; do is_ignored[$t]=1; done
    for t in "${failed[@]}"; do is_failed[$t]=1; done
    for t in "${all[@]}"; do
        if [ -n "${is_ignored[$t]:-}" ]; then
            echo "IGNORED $name::$t" >>"$RESULTS"
        elif [ -n "${is_failed[$t]:-}" ]; then
            echo "FAIL $name::$t" >>"$RESULTS"
        elif [ $finished -eq 1 ]; then
            echo "PASS $name::$t" >>"$RESULTS"
        else
            # Fallback: one process per test, so one crash cannot hide the other outcomes.
            trc=0
            run_test_binary "$TEST_TIMEOUT" "$exe" --exact "$t" --test-threads=1 --show-output \
                </dev/null >>"$out.single" 2>>"$err.single" || trc=$?
            if [ $trc -eq 0 ]; then echo "PASS $name::$t"; else echo "FAIL $name::$t"; fi >>"$RESULTS"
            if [ $trc -ne 0 ] && [ $trc -ne 101 ]; then
                log "$name::$t: exit status $trc when run alone"
                echo "$name::$t: exit status $trc (run alone)" >>"$OUT/crashes.txt"
            fi
        fi
    done
    unset is_ignored is_failed

    # Tests that returned early with "SKIP: ..." (printed by a passing test, shown thanks to
    # --show-output under "---- <test> stdout ----").
    { cat "$out"; [ ! -f "$out.single" ] || cat "$out.single"; } | awk -v b="$name" '
        /^---- .* stdout ----$/ { t = $2; next }
        t != "" && /^SKIP/ && !seen[t]++ { print b "::" t ": " $0 }' >>"$OUT/selfskipped.txt.unsorted"
done
t2=$(date +%s.%N)

LC_ALL=C sort "$RESULTS" >"$OUT/results.txt"
# Keep only tests that passed (a failing test may have printed SKIP before failing).
awk 'NR == FNR { if ($1 == "PASS") pass[$2] = 1; next } { n = $1; sub(/:$/, "", n) } pass[n]' \
    "$OUT/results.txt" "$OUT/selfskipped.txt.unsorted" | LC_ALL=C sort >"$OUT/selfskipped.txt"
rm -f -- "$RESULTS" "$OUT/selfskipped.txt.unsorted"

npass=$(grep -c '^PASS ' "$OUT/results.txt" || true)
nfail=$(grep -c '^FAIL ' "$OUT/results.txt" || true)
nign=$(grep -c '^IGNORED ' "$OUT/results.txt" || true)
nskip=$(grep -c . "$OUT/selfskipped.txt" || true)
summary="cryptoki suite: $npass passed $nfail failed $nign ignored ($nskip of the passed skipped themselves)"
if [ -s "$OUT/crashes.txt" ]; then
    summary="$summary; $(grep -c . "$OUT/crashes.txt") crash(es)/timeout(s), see $OUT/crashes.txt"
fi
echo "$summary" >"$OUT/summary.txt"

grep '^FAIL ' "$OUT/results.txt" || true
awk -v m="$MODULE" -v r="$OUT/results.txt" -v a="$t0" -v b="$t1" -v c="$t2" \
    'BEGIN { printf "module %s; build %.1fs, run %.1fs; results %s\n", m, b - a, c - b, r }'
echo "$summary"
[ "$nfail" -eq 0 ] || exit 1
