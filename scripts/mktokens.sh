#!/usr/bin/env bash
# mktokens.sh — create a scratch SoftHSM2 setup with N identical "HSMs".
#
# Usage: scripts/mktokens.sh DIR [N]        (N defaults to 3)
#        MKTOKENS_CHECK=1 scripts/mktokens.sh DIR [N]   (also self-test every token)
#
# DIR is wiped and recreated (it must be empty, absent, or a previous mktokens.sh
# output; set MKTOKENS_FORCE=1 to wipe anything else). It then contains:
#   DIR/softhsm2.conf   tokendir = DIR/tokens, file backend, log.level = ERROR
#   DIR/tokens/         N initialized tokens, all labelled "TokName", distinct serials,
#                       SO PIN 12345678, user PIN 1234
#   DIR/tokens.txt      one line per token in creation order: "<index> <slot-id> <serial>"
#   DIR/keys/           the key material, generated once with openssl and imported
#                       identically into every token:
#                         ec-priv.pem  ec-pub.pem   EC P-256     label ec-key  id 01
#                         rsa-priv.pem rsa-pub.pem  RSA-2048     label rsa-key id 02
#                         aes.key (32 raw bytes), aes.hex      AES-256 label aes-key id 03
# Objects are written with pkcs11-tool --write-object; resulting attributes (checked):
#   ec-key  private: SIGN, DERIVE (CKA_DERIVE true, for ECDH), sensitive, private
#   ec-key  public : VERIFY
#   rsa-key private: SIGN, DECRYPT, UNWRAP, sensitive, private
#   rsa-key public : VERIFY, ENCRYPT, WRAP
#   aes-key secret : ENCRYPT, DECRYPT, WRAP, UNWRAP (+SIGN/VERIFY by SoftHSM default),
#                    sensitive, private, not extractable
# (SoftHSM defaults every usage flag that is not given explicitly to TRUE, except
#  DERIVE, so the EC private key also reports DECRYPT/UNWRAP and public keys ENCRYPT/WRAP.)
# softhsm2-util --import is not used: it cannot set CKA_DERIVE on the EC key, and its --aes
# reads the key file with fgets(), truncating a binary key after its first 0x0a byte.
#
# Prints at the end:  export SOFTHSM2_CONF=DIR/softhsm2.conf
# Needs: softhsm2, opensc (pkcs11-tool), openssl — see scripts/setup-debian.sh.
# Env: SOFTHSM_MODULE (default /usr/lib/softhsm/libsofthsm2.so).
set -euo pipefail

MODULE=${SOFTHSM_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
LABEL=TokName
SO_PIN=12345678
USER_PIN=1234

die() { echo "mktokens.sh: $*" >&2; exit 1; }

if [ $# -lt 1 ] || [ $# -gt 2 ]; then die "usage: $0 DIR [N]"; fi
DIR=$1
N=${2:-3}
[[ $N =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$N'"
[ -n "$DIR" ] || die "DIR must not be empty"
for tool in softhsm2-util pkcs11-tool openssl; do
    command -v "$tool" >/dev/null || die "$tool not found (run scripts/setup-debian.sh)"
done
[ -f "$MODULE" ] || die "PKCS#11 module $MODULE not found (run scripts/setup-debian.sh)"

# --- wipe DIR (refuse to wipe a non-empty directory that we did not create) ---
if [ -e "$DIR" ]; then
    [ -d "$DIR" ] || die "$DIR exists and is not a directory"
    DIR=$(cd "$DIR" && pwd -P)
    [ "$DIR" != / ] || die "refusing to wipe /"
    if [ -n "$(ls -A "$DIR")" ] && [ ! -f "$DIR/softhsm2.conf" ] && [ "${MKTOKENS_FORCE:-0}" != 1 ]; then
        die "$DIR is not empty and does not look like a mktokens.sh directory; set MKTOKENS_FORCE=1 to wipe it"
    fi
    # Wipe the contents, keep the directory itself (it may be a mktemp -d or a mount point).
    find "$DIR" -mindepth 1 -maxdepth 1 -exec rm -rf -- {} +
else
    mkdir -p -- "$DIR"
    DIR=$(cd "$DIR" && pwd -P)
fi
mkdir -p "$DIR/tokens" "$DIR/keys"
chmod 700 "$DIR/keys"

CONF=$DIR/softhsm2.conf
cat >"$CONF" <<EOF
directories.tokendir = $DIR/tokens
objectstore.backend = file
log.level = ERROR
EOF
export SOFTHSM2_CONF=$CONF

# --- key material, generated once ---
K=$DIR/keys
(
    umask 077
    openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
        -pkeyopt ec_param_enc:named_curve -out "$K/ec-priv.pem"
    openssl genpkey -quiet -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$K/rsa-priv.pem"
    openssl rand -out "$K/aes.key" 32
    od -An -v -tx1 "$K/aes.key" | tr -d ' \n' >"$K/aes.hex"
    echo >>"$K/aes.hex"
)
openssl pkey -in "$K/ec-priv.pem" -pubout -out "$K/ec-pub.pem"
openssl pkey -in "$K/rsa-priv.pem" -pubout -out "$K/rsa-pub.pem"

# --- tokens ---
p11() { pkcs11-tool --module "$MODULE" "$@"; }

: >"$DIR/tokens.txt"
for i in $(seq 1 "$N"); do
    # --free picks the first uninitialized slot; SoftHSM then moves the new token to a slot
    # whose ID is derived from its (random) serial and reports it.
    out=$(softhsm2-util --module "$MODULE" --init-token --free --label "$LABEL" \
        --so-pin "$SO_PIN" --pin "$USER_PIN")
    slot=$(sed -n 's/.*reassigned to slot \([0-9][0-9]*\).*/\1/p' <<<"$out")
    [ -n "$slot" ] || die "could not parse the slot of token $i from: $out"

    # pkcs11-tool warns on stderr when it cannot display a sensitive value it just wrote;
    # show its output only when it fails.
    w() {
        local log
        log=$(p11 --slot "$slot" --login --pin "$USER_PIN" --write-object "$@" </dev/null 2>&1) \
            || { echo "$log" >&2; die "pkcs11-tool --write-object $* failed (token $i, slot $slot)"; }
    }
    w "$K/ec-priv.pem"  --type privkey --label ec-key  --id 01 --usage-sign --usage-derive
    w "$K/ec-pub.pem"   --type pubkey  --label ec-key  --id 01 --usage-sign
    w "$K/rsa-priv.pem" --type privkey --label rsa-key --id 02 --usage-sign --usage-decrypt --usage-wrap
    w "$K/rsa-pub.pem"  --type pubkey  --label rsa-key --id 02 --usage-sign --usage-decrypt --usage-wrap
    w "$K/aes.key"      --type secrkey --key-type AES:32 --label aes-key --id 03 \
        --usage-decrypt --usage-wrap --private --sensitive

    # pkcs11-tool -L prints "Slot <index> (0x<slot-id>): ..." followed by "serial num : <serial>".
    serial=$(p11 -L | awk -v h="($(printf '0x%x' "$slot")):" '
        /^Slot / { cur = ($3 == h) }
        cur && /serial num/ { print $NF; exit }')
    [ -n "$serial" ] || die "could not read the serial of the token in slot $slot"
    echo "$i $slot $serial" >>"$DIR/tokens.txt"
done

# --- sanity: N distinct serials, all labelled TokName ---
[ "$(awk '{print $3}' "$DIR/tokens.txt" | sort -u | wc -l)" -eq "$N" ] \
    || die "token serials are not distinct: $(cat "$DIR/tokens.txt")"
ntok=$(p11 -L | grep -c "token label *: $LABEL\$" || true)
[ "$ntok" -eq "$N" ] || die "expected $N '$LABEL' tokens, pkcs11-tool -L shows $ntok"

# --- optional self-test of every token ---
if [ "${MKTOKENS_CHECK:-0}" = 1 ]; then
    T=$(mktemp -d)
    trap 'rm -rf -- "$T"' EXIT
    printf 'p11ha mktokens self-test\n' >"$T/data"
    openssl dgst -sha256 -binary -out "$T/data.sha256" "$T/data"
    openssl genpkey -quiet -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$T/peer.pem"
    openssl pkey -in "$T/peer.pem" -pubout -outform DER -out "$T/peer-pub.der"
    openssl pkeyutl -derive -inkey "$T/peer.pem" -peerkey "$K/ec-pub.pem" -out "$T/ecdh-expected"
    openssl enc -aes-256-ecb -nopad -K "$(cat "$K/aes.hex")" -in <(head -c 32 /dev/zero) -out "$T/aes-expected"
    # q CMD...: run quietly, show the output only if it fails.
    q() { "$@" </dev/null >"$T/log" 2>&1 || { cat "$T/log" >&2; die "failed: $*"; }; }
    # Keys are selected with --id: pkcs11-tool 0.23 --sign ignores --label and takes the
    # first private key it finds (whose order differs per token).
    while read -r i slot serial; do
        P=(--slot "$slot" --login --pin "$USER_PIN")
        # SoftHSM 2.6 only has raw CKM_ECDSA (no ECDSA-SHA256): sign the SHA-256 digest.
        q p11 "${P[@]}" --sign --id 01 -m ECDSA --signature-format openssl \
            -i "$T/data.sha256" -o "$T/ec.sig"
        openssl dgst -sha256 -verify "$K/ec-pub.pem" -signature "$T/ec.sig" "$T/data" >/dev/null \
            || die "token $i ($serial): ECDSA signature does not verify"
        q p11 "${P[@]}" --sign --id 02 -m SHA256-RSA-PKCS -i "$T/data" -o "$T/rsa.sig"
        openssl dgst -sha256 -verify "$K/rsa-pub.pem" -signature "$T/rsa.sig" "$T/data" >/dev/null \
            || die "token $i ($serial): RSA signature does not verify"
        openssl pkeyutl -encrypt -pubin -inkey "$K/rsa-pub.pem" -in "$T/data" -out "$T/rsa.enc"
        q p11 "${P[@]}" --decrypt --id 02 -m RSA-PKCS -i "$T/rsa.enc" -o "$T/rsa.dec"
        cmp -s "$T/rsa.dec" "$T/data" || die "token $i ($serial): RSA decryption differs"
        q p11 "${P[@]}" --derive --id 01 -m ECDH1-DERIVE -i "$T/peer-pub.der" -o "$T/ecdh"
        cmp -s "$T/ecdh" "$T/ecdh-expected" || die "token $i ($serial): ECDH result differs from openssl"
        q p11 "${P[@]}" --encrypt --id 03 -m AES-ECB -i <(head -c 32 /dev/zero) -o "$T/aes"
        cmp -s "$T/aes" "$T/aes-expected" || die "token $i ($serial): AES result differs from openssl"
        echo "token $i (slot $slot, serial $serial): ECDSA sign, RSA sign+decrypt, ECDH, AES-ECB OK"
    done <"$DIR/tokens.txt"
fi

echo "created $N '$LABEL' tokens in $DIR/tokens (slot/serial list: $DIR/tokens.txt, keys: $DIR/keys)"
echo "export SOFTHSM2_CONF=$CONF"
