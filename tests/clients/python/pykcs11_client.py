"""The PyKCS11 client of the clients suite (scripts/clients.sh).

Usage: /usr/bin/python3 pykcs11_client.py LIB OUT

Debian's python3-pykcs11, so Debian's own /usr/bin/python3. Opens a session on
the token TokName of the PKCS#11 library LIB, logs in with PIN 1234 and runs the
cases below, printing "pass NAME" or "FAIL NAME: why" for each (exit status 1 if
any failed). What the token produced goes to OUT, where clients.sh checks it
with openssl and sha256sum:
  find-keys         labels.txt (class and label of every object), rsa-modulus.hex,
                    ec-point.bin (the public EC point)
  sign-ecdsa        ec.msg, ec.sig (CKM_ECDSA over SHA-256 of ec.msg, as DER)
  sign-rsa          rsa.msg, rsa.sig (CKM_SHA256_RSA_PKCS)
  aes-cbc-pad       aes.in, aes.iv, aes-single.out (one C_Encrypt),
                    aes-multi.out (C_EncryptUpdate in uneven parts, C_EncryptFinal)
  digest-sha256     digest.in, digest-single.out, digest-multi.out
  session-keygen    an AES-256 session key (CKA_TOKEN false) generated, a block
                    encrypted and decrypted: keygen.in, keygen.enc, keygen.dec
"""

import hashlib
import sys

import PyKCS11

from common import PIN, TOKEN, Report, chunks, ecdsa_der, pattern, require


def find_slot(lib):
    for slot in lib.getSlotList(tokenPresent=True):
        if lib.getTokenInfo(slot).label.strip() == TOKEN:
            return slot
    raise AssertionError(f"no token labelled {TOKEN}")


def one(session, cls, label):
    found = session.findObjects([(PyKCS11.CKA_CLASS, cls), (PyKCS11.CKA_LABEL, label)])
    require(len(found) == 1, f"{len(found)} objects of class {cls:#x} labelled {label}")
    return found[0]


def multipart(session, init, update, final, mech, key, parts):
    """init, update per part, final through the low-level calls. Each output buffer is
    allocated large enough at once: PyKCS11 passes an empty one as NULL, so asking for a
    length that turns out to be 0 would leave the real call a length query too."""
    h = session.session
    rv = init(h, mech.to_native(), key)
    require(rv == PyKCS11.CKR_OK, f"Init: {PyKCS11.CKR[rv]}")
    out = b""
    for part in parts:
        buf = PyKCS11.ckbytelist(bytes(len(part) + 32))
        rv = update(h, PyKCS11.ckbytelist(part), buf)
        require(rv == PyKCS11.CKR_OK, f"Update: {PyKCS11.CKR[rv]}")
        out += bytes(buf)
    buf = PyKCS11.ckbytelist(bytes(32))
    rv = final(h, buf)
    require(rv == PyKCS11.CKR_OK, f"Final: {PyKCS11.CKR[rv]}")
    return out + bytes(buf)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: pykcs11_client.py LIB OUT")
    lib_path, out = sys.argv[1:]
    r = Report(out)
    lib = PyKCS11.PyKCS11Lib()
    lib.load(lib_path)
    session = lib.openSession(find_slot(lib), PyKCS11.CKF_RW_SESSION)
    session.login(PIN)
    keys = {}

    def find_keys():
        labels = []
        for obj in session.findObjects([]):
            cls, label = session.getAttributeValue(obj, [PyKCS11.CKA_CLASS, PyKCS11.CKA_LABEL])
            labels.append(f"{PyKCS11.CKO[cls]} {label}")
        r.write("labels.txt", ("\n".join(sorted(labels)) + "\n").encode())
        keys["ec"] = one(session, PyKCS11.CKO_PRIVATE_KEY, "ec-key")
        keys["rsa"] = one(session, PyKCS11.CKO_PRIVATE_KEY, "rsa-key")
        keys["aes"] = one(session, PyKCS11.CKO_SECRET_KEY, "aes-key")
        rsa_pub = one(session, PyKCS11.CKO_PUBLIC_KEY, "rsa-key")
        (modulus,) = session.getAttributeValue(rsa_pub, [PyKCS11.CKA_MODULUS])
        r.write("rsa-modulus.hex", (bytes(modulus).hex().upper() + "\n").encode())
        ec_pub = one(session, PyKCS11.CKO_PUBLIC_KEY, "ec-key")
        (point,) = session.getAttributeValue(ec_pub, [PyKCS11.CKA_EC_POINT])
        point = bytes(point)
        # CKA_EC_POINT is the DER OCTET STRING around the uncompressed point (65 bytes).
        require(point[:2] == b"\x04\x41" and len(point) == 67, f"CKA_EC_POINT {point.hex()}")
        r.write("ec-point.bin", point[2:])

    def sign_ecdsa():
        msg = b"p11ha clients suite: ECDSA by PyKCS11\n"
        sig = session.sign(keys["ec"], hashlib.sha256(msg).digest(), PyKCS11.Mechanism(PyKCS11.CKM_ECDSA))
        require(len(sig) == 64, f"ECDSA P-256 signature of {len(sig)} bytes")
        r.write("ec.msg", msg)
        r.write("ec.sig", ecdsa_der(sig))

    def sign_rsa():
        msg = b"p11ha clients suite: RSA by PyKCS11\n"
        sig = session.sign(keys["rsa"], msg, PyKCS11.Mechanism(PyKCS11.CKM_SHA256_RSA_PKCS))
        r.write("rsa.msg", msg)
        r.write("rsa.sig", sig)

    def aes_cbc_pad():
        iv = pattern(16, 9)
        data = pattern(1000, 4)
        mech = PyKCS11.Mechanism(PyKCS11.CKM_AES_CBC_PAD, iv)
        single = bytes(session.encrypt(keys["aes"], data, mech))
        lib_ = session.lib
        multi = multipart(session, lib_.C_EncryptInit, lib_.C_EncryptUpdate, lib_.C_EncryptFinal,
                          mech, keys["aes"], chunks(data, [1, 17, 300, 512, 999]))
        back = bytes(session.decrypt(keys["aes"], single, mech))
        require(back == data, "C_Decrypt of the ciphertext differs from the plaintext")
        r.write("aes.in", data)
        r.write("aes.iv", iv)
        r.write("aes-single.out", single)
        r.write("aes-multi.out", multi)

    def digest():
        data = pattern(5000, 2)
        mech = PyKCS11.Mechanism(PyKCS11.CKM_SHA256)
        single = session.digest(data, mech)
        d = session.digestSession(mech)
        for part in chunks(data, [1, 64, 1000, 4097]):
            d.update(part)
        r.write("digest.in", data)
        r.write("digest-single.out", single)
        r.write("digest-multi.out", d.final())

    def session_keygen():
        key = session.generateKey([
            (PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY),
            (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_AES),
            (PyKCS11.CKA_VALUE_LEN, 32),
            (PyKCS11.CKA_TOKEN, PyKCS11.CK_FALSE),
            (PyKCS11.CKA_ENCRYPT, PyKCS11.CK_TRUE),
            (PyKCS11.CKA_DECRYPT, PyKCS11.CK_TRUE),
        ])
        (token,) = session.getAttributeValue(key, [PyKCS11.CKA_TOKEN])
        require(not token, "the generated key is a token object")
        block = pattern(16, 77)
        mech = PyKCS11.Mechanism(PyKCS11.CKM_AES_CBC, pattern(16, 3))
        enc = bytes(session.encrypt(key, block, mech))
        dec = bytes(session.decrypt(key, enc, mech))
        require(dec == block, "decrypted block differs")
        session.destroyObject(key)
        r.write("keygen.in", block)
        r.write("keygen.enc", enc)
        r.write("keygen.dec", dec)

    r.case("find-keys", find_keys)
    r.case("sign-ecdsa", sign_ecdsa)
    r.case("sign-rsa", sign_rsa)
    r.case("aes-cbc-pad", aes_cbc_pad)
    r.case("digest-sha256", digest)
    r.case("session-keygen", session_keygen)
    session.logout()
    session.closeSession()
    r.exit()


if __name__ == "__main__":
    main()
