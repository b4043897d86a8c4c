"""The python-pkcs11 client of the clients suite (scripts/clients.sh).

Usage: VENV/bin/python python_pkcs11_client.py LIB OUT

python-pkcs11 from PyPI (the version pinned in tests/clients/requirements.txt),
in the suite's venv. Opens a session on the token TokName of the PKCS#11 library
LIB, logs in with PIN 1234 and runs the cases below, printing "pass NAME" or
"FAIL NAME: why" for each (exit status 1 if any failed). What the token produced
goes to OUT, where clients.sh checks it with openssl and sha256sum; the files
are those of pykcs11_client.py:
  find-keys         labels.txt, rsa-modulus.hex, ec-point.bin
  sign-ecdsa        ec.msg, ec.sig (CKM_ECDSA over SHA-256 of ec.msg, as DER)
  sign-rsa          rsa.msg, rsa.sig (CKM_SHA256_RSA_PKCS)
  aes-cbc-pad       aes.in, aes.iv, aes-single.out, aes-multi.out (the library's
                    multi-part encryption of an iterable of uneven parts)
  digest-sha256     digest.in, digest-single.out, digest-multi.out
  session-keygen    an AES-256 session key generated (store=False), a block
                    encrypted and decrypted: keygen.in, keygen.enc, keygen.dec
"""

import hashlib
import sys

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11.util.ec import encode_ecdsa_signature

from common import PIN, TOKEN, Report, chunks, pattern, require


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: python_pkcs11_client.py LIB OUT")
    lib_path, out = sys.argv[1:]
    r = Report(out)
    token = pkcs11.lib(lib_path).get_token(token_label=TOKEN)
    with token.open(user_pin=PIN, rw=True) as session:
        keys = {}

        def find_keys():
            labels = sorted(f"{o[Attribute.CLASS].name} {o[Attribute.LABEL]}" for o in session.get_objects())
            r.write("labels.txt", ("\n".join(labels) + "\n").encode())
            keys["ec"] = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.EC, label="ec-key")
            keys["rsa"] = session.get_key(ObjectClass.PRIVATE_KEY, KeyType.RSA, label="rsa-key")
            keys["aes"] = session.get_key(ObjectClass.SECRET_KEY, KeyType.AES, label="aes-key")
            rsa_pub = session.get_key(ObjectClass.PUBLIC_KEY, KeyType.RSA, label="rsa-key")
            r.write("rsa-modulus.hex", (rsa_pub[Attribute.MODULUS].hex().upper() + "\n").encode())
            ec_pub = session.get_key(ObjectClass.PUBLIC_KEY, KeyType.EC, label="ec-key")
            point = bytes(ec_pub[Attribute.EC_POINT])
            # CKA_EC_POINT is the DER OCTET STRING around the uncompressed point (65 bytes).
            require(point[:2] == b"\x04\x41" and len(point) == 67, f"CKA_EC_POINT {point.hex()}")
            r.write("ec-point.bin", point[2:])

        def sign_ecdsa():
            msg = b"p11ha clients suite: ECDSA by python-pkcs11\n"
            sig = keys["ec"].sign(hashlib.sha256(msg).digest(), mechanism=Mechanism.ECDSA)
            require(len(sig) == 64, f"ECDSA P-256 signature of {len(sig)} bytes")
            r.write("ec.msg", msg)
            r.write("ec.sig", encode_ecdsa_signature(sig))

        def sign_rsa():
            msg = b"p11ha clients suite: RSA by python-pkcs11\n"
            r.write("rsa.msg", msg)
            r.write("rsa.sig", keys["rsa"].sign(msg, mechanism=Mechanism.SHA256_RSA_PKCS))

        def aes_cbc_pad():
            iv = pattern(16, 9)
            data = pattern(1000, 4)
            aes = keys["aes"]
            single = aes.encrypt(data, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv)
            parts = chunks(data, [1, 17, 300, 512, 999])
            multi = b"".join(aes.encrypt(iter(parts), mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv))
            back = aes.decrypt(single, mechanism=Mechanism.AES_CBC_PAD, mechanism_param=iv)
            require(back == data, "decryption of the ciphertext differs from the plaintext")
            r.write("aes.in", data)
            r.write("aes.iv", iv)
            r.write("aes-single.out", single)
            r.write("aes-multi.out", multi)

        def digest():
            data = pattern(5000, 2)
            r.write("digest.in", data)
            r.write("digest-single.out", session.digest(data, mechanism=Mechanism.SHA256))
            parts = chunks(data, [1, 64, 1000, 4097])
            r.write("digest-multi.out", session.digest(iter(parts), mechanism=Mechanism.SHA256))

        def session_keygen():
            key = session.generate_key(KeyType.AES, 256, store=False, label="session-aes",
                                       template={Attribute.ENCRYPT: True, Attribute.DECRYPT: True})
            require(not key[Attribute.TOKEN], "the generated key is a token object")
            block = pattern(16, 77)
            iv = pattern(16, 3)
            enc = key.encrypt(block, mechanism=Mechanism.AES_CBC, mechanism_param=iv)
            dec = key.decrypt(enc, mechanism=Mechanism.AES_CBC, mechanism_param=iv)
            require(dec == block, "decrypted block differs")
            key.destroy()
            r.write("keygen.in", block)
            r.write("keygen.enc", enc)
            r.write("keygen.dec", dec)

        r.case("find-keys", find_keys)
        r.case("sign-ecdsa", sign_ecdsa)
        r.case("sign-rsa", sign_rsa)
        r.case("aes-cbc-pad", aes_cbc_pad)
        r.case("digest-sha256", digest)
        r.case("session-keygen", session_keygen)
    r.exit()


if __name__ == "__main__":
    main()
