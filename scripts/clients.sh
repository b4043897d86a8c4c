#!/usr/bin/env bash
# clients.sh — real PKCS#11 applications against libp11ha.so: GnuTLS's p11tool and
# certtool, OpenSSL 3 with the libp11 engine, Java 17's SunPKCS11, python-pkcs11 and
# PyKCS11, each directly on SoftHSM (the baseline) and through libp11ha.so in NORMAL, WLD
# and HA mode; then an HA failover under a real client.
#
# Usage: scripts/clients.sh [LIBP11HA]      (default target/release/libp11ha.so; as root,
#                                            or a user with sudo, from anywhere)
#
# Installs what is missing (scripts/setup-debian.sh with gnutls-bin, libengine-pkcs11-openssl,
# openjdk-17-jdk-headless, python3-pykcs11, python3-venv), makes target/clients/venv with
# python-pkcs11 (tests/clients/requirements.txt) unless it is there already, compiles the
# Java client into target/clients/java, and makes two SoftHSM tokens labelled TokName with
# the same keys (scripts/mktokens.sh; plus a self-signed certificate beside the EC and RSA
# key pairs, which SunPKCS11's KeyStore needs to show a private key). The modes:
#   direct  /usr/lib/softhsm/libsofthsm2.so itself, one token
#   NORMAL  libp11ha.so, P11HA_MODULES=SoftHSM, one token
#   WLD     libp11ha.so, P11HA_MODULES=SoftHSM, two tokens behind virtual slot 0
#   HA      libp11ha.so, two `p11-kit server`s (one token each, on Unix sockets) as remote
#           members, no module; the HA log is target/clients/run/HA/ha.log
# The clients are tests/clients/ (java/P11Client.java, python/*.py) and the command-line
# tools below; what each makes through the library is checked here, outside it: signatures
# and certificates with openssl against the PEMs of scripts/mktokens.sh, ciphertexts against
# `openssl enc` under the raw AES key, digests against sha256sum. Two rows use session
# objects (CKA_TOKEN false) made in one session from the application's other sessions, as
# PKCS#11 allows; through p11ha in WLD and HA mode some of those sessions are on the other
# member. "SunPKCS11 session keys" (P11Client ... sessions): keys from KeyGenerator and
# KeyPairGenerator, and software keys that SunPKCS11 imports with C_CreateObject, each used
# by several Ciphers or Signatures open at once. "PyKCS11 session objects"
# (pykcs11_xsession.py): every ordered pair of 4 sessions, for use, find and destroy, and the
# objects' end with the session that made them; in WLD and HA mode its sessions must have
# been on both members (P11HA_GetSessionMember). Failover: PyKCS11 signs 200
# times on one session, and the server behind it is killed (kill -9 of its process group)
# between the C_SignInit and the C_Sign of signature 81; every signature must verify, the
# client must see no error, the session must have moved, and the HA log must say "HSM
# Failure detected hsmIdx=<that member>" (and no other failure, in any HA run).
#
# Prints a table client x mode (pass/FAIL) and exits 1 if any cell failed (every cell must
# pass, directly and through p11ha; a cell that passes directly and fails through p11ha is
# named as such), 2 if the suite could not run. Each run's files (outputs, logs per cell)
# are in target/clients/run/<mode>/<client>/. Every client call is bounded by `timeout`
# (CLIENTS_TIMEOUT seconds, default 120); no server outlives the script (each runs in a
# process group of its own, killed on exit, and killed by itself if the script dies).

# The checks and clients are functions called through check() and "client_$name":
# shellcheck disable=SC2317
set -eEuo pipefail

die() { echo "clients.sh: $*" >&2; exit 2; }
# Anything that fails outside a check means the suite could not run.
trap 'echo "clients.sh: line $LINENO failed (exit status $?)" >&2; exit 2' ERR

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
ROOT=$(cd "$HERE/.." && pwd -P)
LIB=${1:-$ROOT/target/release/libp11ha.so}
SOFTHSM=/usr/lib/softhsm/libsofthsm2.so
CLIENTS=$ROOT/tests/clients
OUT=$ROOT/target/clients
RUN=$OUT/run
VENV=$OUT/venv
LABEL=TokName
PIN=1234
TIMEOUT=${CLIENTS_TIMEOUT:-120}
FAILOVER_COUNT=200
FAILOVER_KILL_AT=80
MODES=(direct NORMAL WLD HA)
NAMES=(p11tool openssl java java_xsession python_pkcs11 pykcs11 pykcs11_xsession)
declare -A TITLE=(
    [p11tool]="p11tool + certtool"
    [openssl]="openssl + libp11 engine"
    [java]="Java 17 SunPKCS11"
    [java_xsession]="SunPKCS11 session keys"
    [python_pkcs11]="python-pkcs11"
    [pykcs11]="PyKCS11"
    [pykcs11_xsession]="PyKCS11 session objects"
    [failover]="HA failover (PyKCS11)"
)
declare -A RESULT=()

[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "CLIENTS_TIMEOUT must be a positive number of seconds"
[ -f "$LIB" ] || die "$LIB not found (cargo build --release -p p11ha-ffi)"
LIB=$(cd "$(dirname "$LIB")" && pwd -P)/$(basename "$LIB")

# Only the configuration given here reaches the library: none from the caller's environment.
while read -r var; do
    case $var in
        P11HA_* | ET_PTKC_* | ET_HSM_* | SOFTHSM2_CONF | OPENSSL_CONF | GNUTLS_PIN) unset "$var" ;;
    esac
done < <(compgen -e)
# The Python clients leave no __pycache__ in tests/clients/.
export PYTHONDONTWRITEBYTECODE=1

echo "==> packages"
"$HERE/setup-debian.sh" gnutls-bin libengine-pkcs11-openssl openjdk-17-jdk-headless \
    python3-pykcs11 python3-venv

JDK=/usr/lib/jvm/java-17-openjdk-$(dpkg --print-architecture)/bin
[ -x "$JDK/javac" ] || die "$JDK/javac not found (openjdk-17-jdk-headless)"
/usr/bin/python3 -c 'import PyKCS11' || die "Debian's python3 does not import PyKCS11 (python3-pykcs11)"

echo "==> python-pkcs11 in $VENV"
if ! cmp -s "$CLIENTS/requirements.txt" "$VENV/p11clients-requirements.txt" \
    || ! "$VENV/bin/python" -c 'import pkcs11' 2>/dev/null; then
    rm -rf "$VENV"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -r "$CLIENTS/requirements.txt"
    cp "$CLIENTS/requirements.txt" "$VENV/p11clients-requirements.txt"
fi

echo "==> the Java client"
rm -rf "$OUT/java"
"$JDK/javac" -d "$OUT/java" "$CLIENTS/java/P11Client.java"

# --- tokens: two identical tokens; each mode gets its own copy -----------------------------
echo "==> tokens"
rm -rf "$RUN"
mkdir -p "$RUN"
# The clients load a copy: a rebuild of the library while the suite runs must not change
# (or remove, for a moment) what they test.
cp "$LIB" "$RUN/libp11ha.so"
LIB_UNDER_TEST=$LIB
LIB=$RUN/libp11ha.so
"$HERE/mktokens.sh" "$RUN/tokens" 2 >/dev/null
KEYS=$RUN/tokens/keys
AES_HEX=$(tr -d '\n' <"$KEYS/aes.hex")
# SunPKCS11's KeyStore lists a private key only if a certificate of the same CKA_ID is on
# the token: write one beside each key pair, on both tokens, as an operator provisions HSMs.
for pair in ec:01 rsa:02; do
    name=${pair%%:*}
    openssl req -new -x509 -key "$KEYS/$name-priv.pem" -subj "/CN=p11ha clients $name-key" \
        -days 3650 -outform DER -out "$KEYS/$name-cert.der"
    while read -r _ slot _; do
        SOFTHSM2_CONF=$RUN/tokens/softhsm2.conf pkcs11-tool --module "$SOFTHSM" --slot "$slot" \
            --login --pin "$PIN" --write-object "$KEYS/$name-cert.der" --type cert \
            --id "${pair#*:}" --label "$name-key" >/dev/null
    done <"$RUN/tokens/tokens.txt"
done
mapfile -t TOKEN_DIRS < <(find "$RUN/tokens/tokens" -mindepth 1 -maxdepth 1 -type d | sort)
[ ${#TOKEN_DIRS[@]} -eq 2 ] || die "expected 2 token directories, found ${#TOKEN_DIRS[@]}"

# tokendir DIR TOKEN...: DIR/softhsm2.conf over copies of the given token directories.
tokendir() {
    local dir=$1
    shift
    mkdir -p "$dir/tokens"
    cp -a "$@" "$dir/tokens/"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
        "$dir/tokens" >"$dir/softhsm2.conf"
}
tokendir "$RUN/direct" "${TOKEN_DIRS[0]}"
tokendir "$RUN/NORMAL" "${TOKEN_DIRS[0]}"
tokendir "$RUN/WLD" "${TOKEN_DIRS[@]}"
tokendir "$RUN/HA/server-0" "${TOKEN_DIRS[0]}"
tokendir "$RUN/HA/server-1" "${TOKEN_DIRS[1]}"
HALOG=$RUN/HA/ha.log

# --- the HA mode's servers ---------------------------------------------------------------
# Each server runs under a shell in a process group of its own (setsid), so that killing
# the group also kills the p11-kit-remote it forks per connection. The shell waits on a
# FIFO that only this script holds open for writing: when the script ends, however it ends,
# the read sees end of file and the shell kills its group.
declare -a SERVER_PGID=()
LIFELINE=$RUN/HA/lifeline
mkfifo "$LIFELINE"
exec {LIFE}<>"$LIFELINE"

cleanup() {
    local pg
    for pg in "${SERVER_PGID[@]}"; do
        if [ -n "$pg" ]; then kill -KILL -- "-$pg" 2>/dev/null || true; fi
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# serve I: starts server I over $RUN/HA/server-I and waits (at most 10 s) until it listens.
serve() {
    local i=$1 dir=$RUN/HA/server-$1 pid stat pgrp
    rm -f "$dir/sock"
    # shellcheck disable=SC2016 # $1... are the inner shell's arguments
    SOFTHSM2_CONF=$dir/softhsm2.conf setsid bash -c \
        'p11-kit server -f --provider "$1" -n "$2" "$3" </dev/null >>"$4" 2>&1 &
         read -r _; kill -KILL 0' \
        p11clients-server "$SOFTHSM" "$dir/sock" "pkcs11:token=$LABEL" "$dir/server.log" \
        <"$LIFELINE" {LIFE}>&- &
    pid=$!
    SERVER_PGID[i]=$pid
    for _ in $(seq 200); do
        [ -S "$dir/sock" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    [ -S "$dir/sock" ] || die "p11-kit server $i did not start: $(cat "$dir/server.log" 2>/dev/null)"
    # A background job of a non-interactive shell is no group leader, so setsid did not
    # fork: the shell's pid is the group's id. Make sure, since the kills rely on it.
    stat=$(<"/proc/$pid/stat")
    stat=${stat##*) }
    read -r _ _ pgrp _ <<<"$stat"
    [ "$pgrp" = "$pid" ] || die "server $i: process $pid is in group $pgrp, not its own"
}

# kill_server I: kill -9 of server I's process group; returns once no process of it is left.
kill_server() {
    local pg=${SERVER_PGID[$1]}
    kill -KILL -- "-$pg" || return 1
    wait "$pg" 2>/dev/null || true
    for _ in $(seq 200); do
        kill -0 -- "-$pg" 2>/dev/null || { SERVER_PGID[$1]=; return 0; }
        sleep 0.05
    done
    echo "server $1: process group $pg still alive after kill -9" >&2
    return 1
}

# --- running a client in a mode, and the checks -----------------------------------------
# mode_env MODE: MODLIB (the PKCS#11 library the clients load) and ENVV (its configuration).
mode_env() {
    case $1 in
        direct)
            MODLIB=$SOFTHSM
            ENVV=(SOFTHSM2_CONF="$RUN/direct/softhsm2.conf") ;;
        NORMAL)
            MODLIB=$LIB
            ENVV=(SOFTHSM2_CONF="$RUN/NORMAL/softhsm2.conf" P11HA_CONF=/dev/null
                P11HA_MODULES="$SOFTHSM" ET_PTKC_GENERAL_LIBRARY_MODE=NORMAL) ;;
        WLD)
            MODLIB=$LIB
            ENVV=(SOFTHSM2_CONF="$RUN/WLD/softhsm2.conf" P11HA_CONF=/dev/null
                P11HA_MODULES="$SOFTHSM" ET_PTKC_GENERAL_LIBRARY_MODE=WLD
                ET_PTKC_WLD_SLOT_0="$LABEL") ;;
        HA)
            MODLIB=$LIB
            ENVV=(P11HA_CONF=/dev/null ET_PTKC_GENERAL_LIBRARY_MODE=HA
                ET_HSM_NETCLIENT_SERVERLIST="unix:path=$RUN/HA/server-0/sock unix:path=$RUN/HA/server-1/sock"
                ET_PTKC_WLD_SLOT_0="$LABEL" ET_PTKC_HA_LOG_FILE="$HALOG"
                P11HA_HA_RECOVER_DELAY_MS=2000) ;;
        *) die "unknown mode $1" ;;
    esac
}

# run CMD...: CMD with the mode's configuration, bounded in time.
run() { env "${ENVV[@]}" timeout -k 5 "$TIMEOUT" "$@" </dev/null; }
# eng ARG...: openssl through the libp11 engine over the mode's library.
eng() { run env OPENSSL_CONF="$CLIENTS/openssl.cnf" P11CLIENTS_MODULE="$MODLIB" openssl "$@"; }
# to FILE CMD...: CMD's output to FILE (and the cell's log).
to() {
    local file=$1
    shift
    "$@" | tee "$file"
}

# begin NAME MODE: a new cell; its files go to $D, its log to $D/log.
begin() {
    CELL=$1:$2
    D=$RUN/$2/$1
    mkdir -p "$D"
    LOG=$D/log
    : >"$LOG"
    CELL_CHECKS=0
    CELL_FAILED=()
    mode_env "$2"
}

# check WHAT CMD...: CMD must succeed (its output goes to the cell's log).
check() {
    local what=$1
    shift
    CELL_CHECKS=$((CELL_CHECKS + 1))
    printf '\n--- %s: %s\n' "$what" "$*" >>"$LOG"
    if "$@" >>"$LOG" 2>&1; then
        echo "--- ok: $what" >>"$LOG"
    else
        echo "--- FAILED: $what" >>"$LOG"
        CELL_FAILED+=("$what")
    fi
}

end() {
    local name=${CELL%%:*} mode=${CELL#*:}
    if [ ${#CELL_FAILED[@]} -eq 0 ]; then
        RESULT[$CELL]=pass
        printf '%-24s %-7s pass (%d checks)\n' "${TITLE[$name]}" "$mode" "$CELL_CHECKS"
    else
        RESULT[$CELL]=FAIL
        printf '%-24s %-7s FAIL (%d of %d checks failed; log: %s)\n' "${TITLE[$name]}" "$mode" \
            ${#CELL_FAILED[@]} "$CELL_CHECKS" "${LOG#"$ROOT"/}"
        printf '    failed: %s\n' "${CELL_FAILED[@]}"
    fi
}

# The checks, each one command that fails when what it checks does not hold.
pub_der() { openssl pkey -pubin -in "$1" -outform DER | od -An -v -tx1 | tr -d ' \n'; }
# same_pub PEM WANT: PEM holds the public key of the PEM file WANT (compared as DER).
same_pub() {
    local got want
    got=$(pub_der "$1") && want=$(pub_der "$2") && [ -n "$got" ] && [ "$got" = "$want" ]
}
# cert_ok CERT WANT: CERT verifies as its own CA and certifies the public key of WANT.
cert_ok() {
    openssl verify -CAfile "$1" "$1" && openssl x509 -in "$1" -noout -pubkey >"$1.pub" \
        && same_pub "$1.pub" "$2"
}
# sig_ok PUB MSG SIG [SIGOPT...]: SIG is a SHA-256 signature of MSG under PUB; and not of
# MSG with one byte more.
sig_ok() {
    local pub=$1 msg=$2 sig=$3 opts=() o
    shift 3
    for o in "$@"; do opts+=(-sigopt "$o"); done
    openssl dgst -sha256 -verify "$pub" -signature "$sig" "${opts[@]}" "$msg" || return 1
    { cat "$msg"; printf x; } >"$sig.other"
    ! openssl dgst -sha256 -verify "$pub" -signature "$sig" "${opts[@]}" "$sig.other"
}
# aes_ok IN IV OUT [-nopad]: OUT is IN under AES-256-CBC (PKCS#7 padding unless -nopad) with
# the token's AES key and IV, as `openssl enc` makes it.
aes_ok() {
    local iv
    iv=$(od -An -v -tx1 "$2" | tr -d ' \n') && [ ${#iv} -eq 32 ] || return 1
    openssl enc -aes-256-cbc -K "$AES_HEX" -iv "$iv" ${4:+"$4"} -in "$1" -out "$3.expected" \
        && [ -s "$3" ] && cmp "$3" "$3.expected"
}
# aes128_ok KEYHEX IN OUT [IV]: OUT is IN under the AES-128 key written in hex in the file
# KEYHEX, as `openssl enc` makes it: AES-128-CBC with PKCS#7 padding and the IV in the file
# IV, or without IV AES-128-ECB without padding.
aes128_ok() {
    local key mode
    key=$(tr -d '\n' <"$1") && [[ $key =~ ^[0-9a-f]{32}$ ]] || return 1
    if [ $# -eq 4 ]; then
        mode=(-aes-128-cbc -iv "$(od -An -v -tx1 "$4" | tr -d ' \n')")
    else
        mode=(-aes-128-ecb -nopad)
    fi
    openssl enc "${mode[@]}" -K "$key" -in "$2" -out "$3.expected" && [ -s "$3" ] \
        && cmp "$3" "$3.expected"
}
# sha_ok IN OUT: OUT is the SHA-256 of IN.
sha_ok() {
    local want got
    want=$(sha256sum <"$1") && got=$(od -An -v -tx1 "$2" | tr -d ' \n') \
        && [ "$got" = "${want%% *}" ]
}
has() { grep -Eq -- "$2" "$1"; }
# passes OUT N: a client's output says "pass" N times and FAIL never.
passes() { [ "$(grep -c '^pass ' "$1")" -eq "$2" ] && ! grep -q '^FAIL' "$1"; }
# no_failover: the HA log shows members joining and no member failure (the servers all run).
no_failover() { grep -q 'HSM joined hsmIdx=' "$HALOG" && ! grep 'HSM Failure detected' "$HALOG"; }

# --- the clients --------------------------------------------------------------------------
client_p11tool() {
    local uri="pkcs11:token=$LABEL" k
    check "p11tool --list-tokens" run p11tool --provider "$MODLIB" --list-tokens \
        --outfile "$D/tokens.txt"
    check "the token is listed" has "$D/tokens.txt" "URL: pkcs11:.*token=$LABEL(;|\$)"
    check "p11tool --login --list-all" run env GNUTLS_PIN="$PIN" p11tool --provider "$MODLIB" \
        --login --list-all "$uri" --outfile "$D/objects.txt"
    for k in "id=%01;object=ec-key;type=private" "id=%01;object=ec-key;type=public" \
        "id=%02;object=rsa-key;type=private" "id=%02;object=rsa-key;type=public" \
        "id=%03;object=aes-key;type=secret-key"; do
        check "listed: $k" has "$D/objects.txt" "token=$LABEL;$k\$"
    done
    for k in ec rsa; do
        check "p11tool --test-sign $k-key" run env GNUTLS_PIN="$PIN" p11tool --provider "$MODLIB" \
            --login --test-sign "$uri;object=$k-key;type=private" --outfile "$D/test-sign-$k.txt"
        check "p11tool --export-pubkey $k-key" run env GNUTLS_PIN="$PIN" p11tool --provider "$MODLIB" \
            --login --export-pubkey "$uri;object=$k-key;type=private" --outfile "$D/$k-pub.pem"
        check "exported $k public key = $k-pub.pem" same_pub "$D/$k-pub.pem" "$KEYS/$k-pub.pem"
        check "certtool --generate-self-signed with $k-key" run env GNUTLS_PIN="$PIN" certtool \
            --provider "$MODLIB" --generate-self-signed --template "$CLIENTS/certtool.tmpl" \
            --load-privkey "$uri;object=$k-key;type=private" --outfile "$D/$k-cert.pem"
        check "certtool's $k certificate verifies, holds $k-pub.pem" cert_ok "$D/$k-cert.pem" \
            "$KEYS/$k-pub.pem"
    done
}

client_openssl() {
    local key="pkcs11:token=$LABEL;object" e=(-engine pkcs11 -keyform engine)
    local pss=(rsa_padding_mode:pss rsa_pss_saltlen:32 rsa_mgf1_md:sha256)
    local pssk=(-pkeyopt rsa_padding_mode:pss -pkeyopt rsa_pss_saltlen:32 -pkeyopt rsa_mgf1_md:sha256)
    local oaep=(-pkeyopt rsa_padding_mode:oaep -pkeyopt rsa_oaep_md:sha256 -pkeyopt rsa_mgf1_md:sha256)
    printf 'p11ha clients suite: openssl %s\n' "${CELL#*:}" >"$D/msg"
    openssl dgst -sha256 -binary -out "$D/msg.sha256" "$D/msg"
    check "pkeyutl -sign ec-key" eng pkeyutl "${e[@]}" -sign -inkey "$key=ec-key;type=private" \
        -in "$D/msg.sha256" -out "$D/ec.sig"
    check "EC signature verifies" sig_ok "$KEYS/ec-pub.pem" "$D/msg" "$D/ec.sig"
    check "pkeyutl -sign rsa-key (PKCS#1 v1.5, SHA-256)" eng pkeyutl "${e[@]}" -sign \
        -inkey "$key=rsa-key;type=private" -pkeyopt digest:sha256 -in "$D/msg.sha256" -out "$D/rsa.sig"
    check "RSA signature verifies" sig_ok "$KEYS/rsa-pub.pem" "$D/msg" "$D/rsa.sig"
    check "pkeyutl -sign rsa-key (PSS, SHA-256, salt 32)" eng pkeyutl "${e[@]}" -sign \
        -inkey "$key=rsa-key;type=private" -pkeyopt digest:sha256 "${pssk[@]}" \
        -in "$D/msg.sha256" -out "$D/pss.sig"
    check "RSA-PSS signature verifies" sig_ok "$KEYS/rsa-pub.pem" "$D/msg" "$D/pss.sig" "${pss[@]}"
    check "req -new -x509 with rsa-key" eng req "${e[@]}" -key "$key=rsa-key;type=private" \
        -new -x509 -days 30 -sha256 -out "$D/req.pem"
    check "req's certificate verifies, holds rsa-pub.pem" cert_ok "$D/req.pem" "$KEYS/rsa-pub.pem"
    head -c 100 /dev/urandom >"$D/secret"
    openssl pkeyutl -encrypt -pubin -inkey "$KEYS/rsa-pub.pem" -in "$D/secret" -out "$D/secret.pkcs1"
    check "pkeyutl -decrypt rsa-key (PKCS#1 v1.5)" eng pkeyutl "${e[@]}" -decrypt \
        -inkey "$key=rsa-key;type=private" -in "$D/secret.pkcs1" -out "$D/secret.pkcs1.dec"
    check "PKCS#1 v1.5 plaintext = secret" cmp "$D/secret" "$D/secret.pkcs1.dec"
    openssl pkeyutl -encrypt -pubin -inkey "$KEYS/rsa-pub.pem" "${oaep[@]}" -in "$D/secret" \
        -out "$D/secret.oaep"
    check "pkeyutl -decrypt rsa-key (OAEP, SHA-256)" eng pkeyutl "${e[@]}" -decrypt "${oaep[@]}" \
        -inkey "$key=rsa-key;type=private" -in "$D/secret.oaep" -out "$D/secret.oaep.dec"
    check "OAEP plaintext = secret" cmp "$D/secret" "$D/secret.oaep.dec"
}

client_java() {
    local pss=(rsa_padding_mode:pss rsa_pss_saltlen:32 rsa_mgf1_md:sha256) n
    check "java P11Client (7 cases)" to "$D/java.txt" run "$JDK/java" \
        -Dp11clients.library="$MODLIB" -cp "$OUT/java" P11Client "$CLIENTS/java/sunpkcs11.cfg" \
        "$KEYS" "$D"
    check "every Java case passed" passes "$D/java.txt" 7
    for n in ec-key rsa-key aes-key; do
        check "KeyStore alias $n" has "$D/aliases.txt" "^$n\$"
    done
    check "SHA256withECDSA verifies" sig_ok "$KEYS/ec-pub.pem" "$D/java-ec.msg" "$D/java-ec.sig"
    check "SHA256withRSA verifies" sig_ok "$KEYS/rsa-pub.pem" "$D/java-rsa.msg" "$D/java-rsa.sig"
    check "RSASSA-PSS verifies" sig_ok "$KEYS/rsa-pub.pem" "$D/java-pss.msg" "$D/java-pss.sig" "${pss[@]}"
    check "AES/CBC/NoPadding = openssl enc" aes_ok "$D/java-aes-nopad.in" "$D/java-aes-nopad.iv" \
        "$D/java-aes-nopad.out" -nopad
    check "AES/CBC/PKCS5Padding = openssl enc" aes_ok "$D/java-aes-pad.in" "$D/java-aes-pad.iv" \
        "$D/java-aes-pad.out"
    check "SecureRandom: two different draws of 64 bytes, not zero" random_ok "$D/java-random.txt"
}
# client_java_xsession: P11Client's session key cases; see P11Client.java.
client_java_xsession() {
    check "java P11Client sessions (5 cases)" to "$D/java.txt" run "$JDK/java" \
        -Dp11clients.library="$MODLIB" -cp "$OUT/java" P11Client "$CLIENTS/java/sunpkcs11.cfg" \
        "$KEYS" "$D" sessions
    check "every Java session key case passed" passes "$D/java.txt" 5
    check "KeyPairGenerator's EC key: SHA256withECDSA verifies" sig_ok "$D/java-kpg-pub.pem" \
        "$D/java-kpg.msg" "$D/java-kpg.sig"
    check "SecretKeySpec's AES key: AES-128-CBC = openssl enc" aes128_ok "$D/java-soft.key.hex" \
        "$D/java-soft.in" "$D/java-soft.out" "$D/java-soft.iv"
}
random_ok() {
    local a b
    { read -r a && read -r b; } <"$1" || return 1
    [[ $a =~ ^[0-9a-f]{128}$ && $b =~ ^[0-9a-f]{128}$ && $a != "$b" && $a =~ [1-9a-f] ]]
}

# python_checks: the outputs of the two Python clients (the same files).
python_checks() {
    local k modulus
    for k in "PRIVATE_KEY ec-key" "PUBLIC_KEY ec-key" "PRIVATE_KEY rsa-key" \
        "PUBLIC_KEY rsa-key" "SECRET_KEY aes-key"; do
        check "found: $k" has "$D/labels.txt" "^(CKO_)?$k\$"
    done
    modulus=$(openssl rsa -pubin -in "$KEYS/rsa-pub.pem" -noout -modulus)
    check "RSA modulus = rsa-pub.pem's" has "$D/rsa-modulus.hex" "^${modulus#Modulus=}\$"
    openssl pkey -pubin -in "$KEYS/ec-pub.pem" -outform DER | tail -c 65 >"$D/ec-point.expected"
    check "EC point = ec-pub.pem's" cmp "$D/ec-point.bin" "$D/ec-point.expected"
    check "ECDSA signature verifies" sig_ok "$KEYS/ec-pub.pem" "$D/ec.msg" "$D/ec.sig"
    check "RSA signature verifies" sig_ok "$KEYS/rsa-pub.pem" "$D/rsa.msg" "$D/rsa.sig"
    check "AES-CBC-PAD single-part = openssl enc" aes_ok "$D/aes.in" "$D/aes.iv" "$D/aes-single.out"
    check "AES-CBC-PAD multi-part = openssl enc" aes_ok "$D/aes.in" "$D/aes.iv" "$D/aes-multi.out"
    check "SHA-256 single-part = sha256sum" sha_ok "$D/digest.in" "$D/digest-single.out"
    check "SHA-256 multi-part = sha256sum" sha_ok "$D/digest.in" "$D/digest-multi.out"
    check "session key: decrypted = plaintext" cmp "$D/keygen.in" "$D/keygen.dec"
    check "session key: ciphertext is 16 bytes, not the plaintext" keygen_ok "$D/keygen.in" "$D/keygen.enc"
}
keygen_ok() { [ "$(stat -c %s "$2")" -eq 16 ] && ! cmp -s "$1" "$2"; }

client_python_pkcs11() {
    check "python-pkcs11 client (6 cases)" to "$D/client.txt" run "$VENV/bin/python" \
        "$CLIENTS/python/python_pkcs11_client.py" "$MODLIB" "$D"
    check "every python-pkcs11 case passed" passes "$D/client.txt" 6
    python_checks
}

client_pykcs11() {
    check "PyKCS11 client (6 cases)" to "$D/client.txt" run /usr/bin/python3 \
        "$CLIENTS/python/pykcs11_client.py" "$MODLIB" "$D"
    check "every PyKCS11 case passed" passes "$D/client.txt" 6
    python_checks
}

# client_pykcs11_xsession: session objects across sessions; see pykcs11_xsession.py.
client_pykcs11_xsession() {
    check "PyKCS11 cross-session client (4 cases)" to "$D/client.txt" run /usr/bin/python3 \
        "$CLIENTS/python/pykcs11_xsession.py" "$MODLIB" "$D"
    check "every PyKCS11 cross-session case passed" passes "$D/client.txt" 4
    check "imported AES key: AES-128-ECB = openssl enc" aes128_ok "$D/ecb.key.hex" "$D/ecb.in" \
        "$D/ecb.out"
    case ${CELL#*:} in
        WLD | HA) check "every case had sessions on both members" on_two_members "$D/members.txt" ;;
    esac
}
# on_two_members FILE: each line "CASE members M M..." of FILE names at least two members.
on_two_members() {
    local name word members n=0
    while read -r name word members; do
        echo "$name: sessions on members $members"
        [ "$word" = members ] \
            && [ "$(tr ' ' '\n' <<<"$members" | grep -x '[0-9][0-9]*' | sort -u | wc -l)" -ge 2 ] \
            || return 1
        n=$((n + 1))
    done <"$1"
    [ "$n" -gt 0 ]
}

# failover: PyKCS11 signs in a loop on one session; after FAILOVER_KILL_AT signatures, with
# the next one's C_SignInit done, it names the member serving the session on one FIFO and
# waits on another while that member's server is killed.
failover() {
    local pid rc=0 line member="" after="" done_n="" i bad=0
    begin failover HA
    mkdir -p "$D/sigs"
    mkfifo "$D/to-script" "$D/from-script"
    exec {TO}<>"$D/to-script" {FROM}<>"$D/from-script"
    run /usr/bin/python3 "$CLIENTS/python/pykcs11_failover.py" "$MODLIB" "$D/sigs" \
        "$FAILOVER_COUNT" "$FAILOVER_KILL_AT" "$D/to-script" "$D/from-script" \
        >"$D/client.txt" 2>&1 {LIFE}>&- &
    pid=$!
    # Wait for "member=<i>" as long as the client runs (at most its timeout).
    for _ in $(seq $((TIMEOUT + 10))); do
        if read -r -t 1 -u "$TO" line; then break; fi
        kill -0 "$pid" 2>/dev/null || break
    done
    [[ ${line:-} =~ ^member=([01])$ ]] && member=${BASH_REMATCH[1]}
    check "the client names its session's member (P11HA_GetSessionMember)" test -n "$member"
    if [ -n "$member" ]; then
        check "kill -9 of server $member's process group" kill_server "$member"
        echo killed >&"$FROM"
    fi
    wait "$pid" || rc=$?
    while read -r -t 0.2 -u "$TO" line; do
        case $line in after=*) after=${line#after=} ;; done=*) done_n=${line#done=} ;; esac
    done
    exec {TO}>&- {FROM}>&-
    cat "$D/client.txt" >>"$LOG"
    check "the client saw no error (exit status $rc)" test "$rc" -eq 0
    check "the client made $FAILOVER_COUNT signatures" test "$done_n" = "$FAILOVER_COUNT"
    check "the session moved to the other member (now ${after:-?})" \
        test -n "$member" -a -n "$after" -a "$after" != "$member"
    for ((i = 0; i < FAILOVER_COUNT; i++)); do
        openssl dgst -sha256 -verify "$KEYS/ec-pub.pem" -signature "$D/sigs/$i.sig" \
            "$D/sigs/$i.msg" >/dev/null 2>&1 || bad=$((bad + 1))
    done
    check "all $FAILOVER_COUNT signatures verify with openssl ($bad do not)" test "$bad" -eq 0
    check "HA log: HSM Failure detected hsmIdx=$member, once" \
        test "$(grep -c "HSM Failure detected hsmIdx=${member:-none}," "$HALOG" 2>/dev/null || true)" -eq 1
    check "HA log: no other member failed" \
        test "$(grep -c 'HSM Failure detected' "$HALOG" 2>/dev/null || true)" -eq 1
    if [ -n "$member" ]; then
        echo "    member $member killed in signature $((FAILOVER_KILL_AT + 1)) of $FAILOVER_COUNT;" \
            "the session is on member ${after:-?} since; $((FAILOVER_COUNT - bad)) signatures verify"
    fi
    end
}

# --- the suite ----------------------------------------------------------------------------
START=$SECONDS
echo "==> the clients (library under test: $LIB_UNDER_TEST, copied to ${LIB#"$ROOT"/})"
for mode in "${MODES[@]}"; do
    if [ "$mode" = HA ]; then
        serve 0
        serve 1
    fi
    for name in "${NAMES[@]}"; do
        begin "$name" "$mode"
        "client_$name"
        [ "$mode" = HA ] && check "HA log: no member failed" no_failover
        end
    done
done
failover

# --- the table ----------------------------------------------------------------------------
echo
printf '%-24s' client
printf ' %-7s' "${MODES[@]}"
echo
status=0
regressions=()
for name in "${NAMES[@]}" failover; do
    printf '%-24s' "${TITLE[$name]}"
    for mode in "${MODES[@]}"; do
        r=${RESULT[$name:$mode]:--}
        printf ' %-7s' "$r"
        if [ "$r" = FAIL ]; then
            status=1
            [ "$mode" != direct ] && [ "${RESULT[$name:direct]:-}" = pass ] \
                && regressions+=("${TITLE[$name]} in $mode")
        fi
    done
    echo
done
echo "clients.sh: the clients took $((SECONDS - START)) s, the whole run $SECONDS s;" \
    "files in ${RUN#"$ROOT"/}/"
if [ ${#regressions[@]} -gt 0 ]; then
    printf 'clients.sh: passes directly on SoftHSM but fails through p11ha: %s\n' "${regressions[@]}" >&2
fi
[ $status -eq 0 ] || echo "clients.sh: some checks failed (see the logs named above)" >&2
exit $status
