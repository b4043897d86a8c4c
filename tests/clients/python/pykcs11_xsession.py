"""The PyKCS11 cross-session client of the clients suite (scripts/clients.sh): session
objects (CKA_TOKEN false) made in one session and used from the application's others.

Usage: /usr/bin/python3 pykcs11_xsession.py LIB OUT

Debian's python3-pykcs11. Opens a session on the token TokName of the PKCS#11 library
LIB and logs in with PIN 1234; each case then opens SESSIONS (4) sessions of its own
and, for every ordered pair (A, B) of them, has A make two session objects, an AES-128
key by C_GenerateKey and one by C_CreateObject with a fixed CKA_VALUE (XS_KEY), which
B must then be able to use, as PKCS#11 lets every session of an application use its
session objects. Prints "pass NAME" or "FAIL NAME: why" for each case (exit status 1 if
any failed); a failure names the pair and, through p11ha, the members of A and B.
  xsession-use      A encrypts under the generated key (AES-CBC), B decrypts it and
                    makes the same ciphertext; B's AES-ECB ciphertext under the imported
                    key is A's and decrypts back: ecb.key.hex, ecb.in, ecb.out, which
                    clients.sh checks with `openssl enc -aes-128-ecb -nopad`
  xsession-find     B finds each object once by its label, under A's handle, and once
                    among all the session objects (C_FindObjects, CKA_TOKEN false)
  xsession-destroy  C_DestroyObject from B of A's generated key, from A of its imported
                    one: then neither session can read or use the handle, nor find it
  xsession-close    A makes the two objects and B reads them; A closes (C_CloseSession):
                    then B can neither read, use nor find them (session objects die with
                    the session that made them)
Through libp11ha.so each session is placed on a member (in WLD and HA mode the one
with the fewest sessions), and the client asks which (P11HA_GetSessionMember, through
ctypes): OUT/members.txt has a line "CASE members M M M M" per case ("-" when LIB is
not p11ha), where clients.sh checks, in WLD and HA mode, that the sessions of every
case were on more than one member, so that some pairs used objects across members.
"""

import ctypes
import itertools
import os
import sys

import PyKCS11

from common import PIN, Report, pattern, require
from pykcs11_client import find_slot

SESSIONS = 4  # sessions the case opens, besides the client's own
XS_KEY = pattern(16, 41)  # CKA_VALUE of the imported AES-128 key
XS_DATA = pattern(32, 13)  # two AES blocks
XS_IV = pattern(16, 29)


def session_member(lib_path):
    """A function giving the p11ha member that serves a PyKCS11 session
    (P11HA_GetSessionMember, through ctypes on the same library: dlopen hands back
    the library PyKCS11 loaded), or None if LIB does not export it (SoftHSM)."""
    try:
        get = ctypes.CDLL(lib_path).P11HA_GetSessionMember
    except AttributeError:
        return None
    get.argtypes = [ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong)]
    get.restype = ctypes.c_ulong

    def member(session):
        index = ctypes.c_ulong()
        rv = get(session.session.value(), ctypes.byref(index))
        require(rv == PyKCS11.CKR_OK, f"P11HA_GetSessionMember: {PyKCS11.CKR.get(rv, hex(rv))}")
        return index.value

    return member


def aes_template(label):
    return [
        (PyKCS11.CKA_CLASS, PyKCS11.CKO_SECRET_KEY),
        (PyKCS11.CKA_KEY_TYPE, PyKCS11.CKK_AES),
        (PyKCS11.CKA_TOKEN, PyKCS11.CK_FALSE),
        (PyKCS11.CKA_LABEL, label),
        (PyKCS11.CKA_ENCRYPT, PyKCS11.CK_TRUE),
        (PyKCS11.CKA_DECRYPT, PyKCS11.CK_TRUE),
    ]


def step(what, call, *args):
    """call(*args), with what it was in the error."""
    try:
        return call(*args)
    except PyKCS11.PyKCS11Error as e:
        raise AssertionError(f"{what}: {e}") from e


def found(session, template):
    return sorted(h.value() for h in step("C_FindObjects", session.findObjects, template))


def session_objects(session):
    """The handles of every session object the application can see, from session."""
    return found(session, [(PyKCS11.CKA_TOKEN, PyKCS11.CK_FALSE)])


def once(session, handles, who):
    """Among all the session objects, session finds each of handles exactly once."""
    got = session_objects(session)
    for h in handles:
        require(got.count(h.value()) == 1,
                f"{who} finds object {h.value()} {got.count(h.value())} times among the session "
                f"objects {got}")


def gone(session, handle, what):
    """handle names no object any more, seen from session: C_GetAttributeValue and
    C_EncryptInit answer that the handle is invalid."""
    for call, args, allowed in (
        (session.getAttributeValue, (handle, [PyKCS11.CKA_LABEL]), (PyKCS11.CKR_OBJECT_HANDLE_INVALID,)),
        (session.encrypt, (handle, XS_DATA, PyKCS11.Mechanism(PyKCS11.CKM_AES_ECB)),
         (PyKCS11.CKR_KEY_HANDLE_INVALID, PyKCS11.CKR_OBJECT_HANDLE_INVALID)),
    ):
        try:
            call(*args)
        except PyKCS11.PyKCS11Error as e:
            require(e.value in allowed, f"{what}: {call.__name__} answers {e}")
        else:
            raise AssertionError(f"{what}: {call.__name__} with its handle still succeeds")


def make(a, label):
    """Session A generates an AES-128 key and imports one (C_CreateObject, CKA_VALUE
    XS_KEY), both session objects labelled LABEL-gen and LABEL-imp."""
    gen = step("C_GenerateKey in A", a.generateKey,
               aes_template(label + "-gen") + [(PyKCS11.CKA_VALUE_LEN, 16)])
    imp = step("C_CreateObject in A", a.createObject,
               aes_template(label + "-imp") + [(PyKCS11.CKA_VALUE, XS_KEY)])
    return gen, imp


def destroy(session, *handles):
    """Clean-up after a pair: the objects go, from whichever session still can."""
    for h in handles:
        try:
            session.destroyObject(h)
        except PyKCS11.PyKCS11Error:
            pass


class CrossSessions:
    """SESSIONS sessions opened for one cross-session case, and every ordered pair
    (A, B) of them. Through p11ha in WLD and HA mode each session opens on the member
    with the fewest sessions, so the pairs include sessions on different members;
    P11HA_GetSessionMember names them, in the client's output and in
    OUT/members.txt (a line "CASE members M..." per case), where clients.sh
    checks that they are not all one."""

    def __init__(self, lib, lib_path, slot, r, name):
        member = session_member(lib_path)
        self.sessions = [lib.openSession(slot, PyKCS11.CKF_RW_SESSION) for _ in range(SESSIONS)]
        self.members = [member(s) if member else None for s in self.sessions]
        self.pairs = list(itertools.permutations(range(SESSIONS), 2))
        self.crossing = [(i, j) for i, j in self.pairs if self.members[i] != self.members[j]]
        named = " ".join("-" if m is None else str(m) for m in self.members)
        with open(os.path.join(r.out, "members.txt"), "a") as f:
            f.write(f"{name} members {named}\n")
        print(f"{name}: sessions on members {self.members}; {len(self.crossing)} of "
              f"{len(self.pairs)} pairs cross members", flush=True)

    def where(self, i, j):
        w = f"made in session {i}, used in session {j}"
        if self.members[i] is not None:
            w += f" (member {self.members[i]} -> member {self.members[j]})"
        return w

    def each_pair(self, body):
        """body(A, B, label) for every ordered pair; a failure names the pair."""
        for i, j in self.pairs:
            try:
                body(self.sessions[i], self.sessions[j], f"xs-{i}{j}")
            except AssertionError as e:
                raise AssertionError(f"{self.where(i, j)}: {e}") from e

    def close(self):
        for s in self.sessions:
            if s is not None:
                s.closeSession()


def xsession_use(a, b, label, outs):
    """What A encrypts under its generated key, B decrypts, and B's ciphertext is A's;
    under the imported key, B's AES-ECB ciphertext is A's (clients.sh checks it with
    openssl) and B decrypts it."""
    cbc = PyKCS11.Mechanism(PyKCS11.CKM_AES_CBC, XS_IV)
    ecb = PyKCS11.Mechanism(PyKCS11.CKM_AES_ECB)
    gen, imp = make(a, label)
    try:
        ct = bytes(step("C_Encrypt in A, generated key", a.encrypt, gen, XS_DATA, cbc))
        require(len(ct) == len(XS_DATA) and ct != XS_DATA, f"A's AES-CBC ciphertext {ct.hex()}")
        back = bytes(step("C_Decrypt in B, generated key", b.decrypt, gen, ct, cbc))
        require(back == XS_DATA, "B's decryption of A's ciphertext differs from the plaintext")
        again = bytes(step("C_Encrypt in B, generated key", b.encrypt, gen, XS_DATA, cbc))
        require(again == ct, "B's ciphertext under the generated key differs from A's")
        out = bytes(step("C_Encrypt in B, imported key", b.encrypt, imp, XS_DATA, ecb))
        require(out == bytes(step("C_Encrypt in A, imported key", a.encrypt, imp, XS_DATA, ecb)),
                "B's AES-ECB ciphertext under the imported key differs from A's")
        back = bytes(step("C_Decrypt in B, imported key", b.decrypt, imp, out, ecb))
        require(back == XS_DATA, "B's decryption under the imported key differs from the plaintext")
        outs.add(out)
    finally:
        destroy(a, gen, imp)


def xsession_find(a, b, label):
    """B finds each of A's objects once by label, under the handle A got, and once
    among all the session objects."""
    gen, imp = make(a, label)
    try:
        for suffix, handle in (("-gen", gen), ("-imp", imp)):
            got = found(b, aes_template(label + suffix)[:4])
            require(got == [handle.value()],
                    f"B finds {got} labelled {label}{suffix}, not [{handle.value()}]")
        once(b, [gen, imp], "B")
    finally:
        destroy(a, gen, imp)


def xsession_destroy(a, b, label):
    """B destroys A's generated key, A its imported one: then neither session sees
    either."""
    gen, imp = make(a, label)
    try:
        step("C_DestroyObject in B of A's generated key", b.destroyObject, gen)
        gone(a, gen, "the generated key after B destroyed it, from A")
        gone(b, gen, "the generated key after B destroyed it, from B")
        step("C_DestroyObject in A of its imported key", a.destroyObject, imp)
        gone(b, imp, "the imported key after A destroyed it, from B")
        for session, name in ((a, "A"), (b, "B")):
            left = set(session_objects(session)) & {gen.value(), imp.value()}
            require(not left, f"{name} still finds the destroyed objects {sorted(left)}")
    finally:
        destroy(a, gen, imp)


def xsession_close(x):
    """A (on another member than B, if any pair crosses) makes two objects and B reads
    their labels; A closes: B no longer finds them, nor can use their handles
    (PKCS#11: session objects die with the session that made them)."""
    i, j = x.crossing[0] if x.crossing else (0, 1)
    a, b = x.sessions[i], x.sessions[j]
    try:
        gen, imp = make(a, "xs-close")
        for h, suffix in ((gen, "-gen"), (imp, "-imp")):
            (label,) = step("C_GetAttributeValue in B, before A closes", b.getAttributeValue,
                            h, [PyKCS11.CKA_LABEL])
            require(label == "xs-close" + suffix, f"B reads the label {label!r}")
        step("C_CloseSession of A", a.closeSession)
        x.sessions[i] = None
        gone(b, gen, "the generated key after A closed, from B")
        gone(b, imp, "the imported key after A closed, from B")
        left = set(session_objects(b)) & {gen.value(), imp.value()}
        require(not left, f"B still finds {sorted(left)} after A closed")
    except AssertionError as e:
        raise AssertionError(f"{x.where(i, j)}: {e}") from e


def cases(lib, lib_path, slot, r):
    """The four cases, each on SESSIONS sessions of its own."""
    r.write("members.txt", b"")

    def run(name, body):
        def case():
            x = CrossSessions(lib, lib_path, slot, r, name)
            try:
                body(x)
            finally:
                x.close()
        r.case(name, case)

    def use(x):
        outs = set()
        x.each_pair(lambda a, b, label: xsession_use(a, b, label, outs))
        require(len(outs) == 1, f"{len(outs)} different ciphertexts under the imported key")
        r.write("ecb.key.hex", (XS_KEY.hex() + "\n").encode())
        r.write("ecb.in", XS_DATA)
        r.write("ecb.out", outs.pop())

    run("xsession-use", use)
    run("xsession-find", lambda x: x.each_pair(xsession_find))
    run("xsession-destroy", lambda x: x.each_pair(xsession_destroy))
    run("xsession-close", xsession_close)


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: pykcs11_xsession.py LIB OUT")
    lib_path, out = sys.argv[1:]
    r = Report(out)
    lib = PyKCS11.PyKCS11Lib()
    lib.load(lib_path)
    slot = find_slot(lib)
    session = lib.openSession(slot, PyKCS11.CKF_RW_SESSION)
    session.login(PIN)
    cases(lib, lib_path, slot, r)
    session.logout()
    session.closeSession()
    r.exit()


if __name__ == "__main__":
    main()
