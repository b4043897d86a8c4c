"""The HA failover client of the clients suite (scripts/clients.sh): PyKCS11 signing in a
loop on one session while clients.sh kills the server behind that session.

Usage: /usr/bin/python3 pykcs11_failover.py LIB OUT COUNT KILL_AT TO_SCRIPT FROM_SCRIPT

LIB is libp11ha.so in HA mode. The client opens one session on TokName, logs in,
finds the private key ec-key and makes COUNT ECDSA signatures (CKM_ECDSA over the
SHA-256 of "failover message <i>"), writing OUT/<i>.msg and OUT/<i>.sig (DER).
Signature KILL_AT is made with an operation in progress across the kill: the
client calls C_SignInit, asks p11ha which member serves the session
(P11HA_GetSessionMember, through ctypes on the same library: dlopen hands back the
library PyKCS11 loaded), writes "member=<i>" to the pipe TO_SCRIPT and waits for
a line "killed" on the pipe FROM_SCRIPT (clients.sh kills that member's server,
kill -9 of its process group, in between); then it calls C_Sign (length first, as
PyKCS11 does), which p11ha must finish on the other member. It signs on, on the
same session, and at the end writes "after=<j>" (the member then) and
"done=<n>". Any error from the library ends the run with status 1: the
application must see none.
"""

import ctypes
import hashlib
import sys

import PyKCS11

from common import PIN, TOKEN, ecdsa_der


def member(p11ha, session):
    index = ctypes.c_ulong()
    rv = p11ha.P11HA_GetSessionMember(ctypes.c_ulong(session.session.value()), ctypes.byref(index))
    if rv != 0:
        raise RuntimeError(f"P11HA_GetSessionMember: {PyKCS11.CKR.get(rv, hex(rv))}")
    return index.value


def main():
    if len(sys.argv) != 7:
        sys.exit("usage: pykcs11_failover.py LIB OUT COUNT KILL_AT TO_SCRIPT FROM_SCRIPT")
    lib_path, out, count, kill_at, to_script, from_script = sys.argv[1:]
    count, kill_at = int(count), int(kill_at)
    lib = PyKCS11.PyKCS11Lib()
    lib.load(lib_path)
    p11ha = ctypes.CDLL(lib_path)
    p11ha.P11HA_GetSessionMember.argtypes = [ctypes.c_ulong, ctypes.POINTER(ctypes.c_ulong)]
    p11ha.P11HA_GetSessionMember.restype = ctypes.c_ulong

    slots = [s for s in lib.getSlotList(tokenPresent=True) if lib.getTokenInfo(s).label.strip() == TOKEN]
    if len(slots) != 1:
        sys.exit(f"pykcs11_failover.py: {len(slots)} slots hold {TOKEN}")
    session = lib.openSession(slots[0])
    session.login(PIN)
    keys = session.findObjects([(PyKCS11.CKA_CLASS, PyKCS11.CKO_PRIVATE_KEY), (PyKCS11.CKA_LABEL, "ec-key")])
    if len(keys) != 1:
        sys.exit(f"pykcs11_failover.py: {len(keys)} private keys labelled ec-key")
    mech = PyKCS11.Mechanism(PyKCS11.CKM_ECDSA)

    before = None
    with open(to_script, "w") as tell:
        for i in range(count):
            msg = f"failover message {i}\n".encode()
            digest = hashlib.sha256(msg).digest()
            if i == kill_at:
                sig, before = sign_across_kill(p11ha, session, keys[0], mech, digest, tell, from_script)
            else:
                sig = session.sign(keys[0], digest, mech)
            with open(f"{out}/{i}.msg", "wb") as f:
                f.write(msg)
            with open(f"{out}/{i}.sig", "wb") as f:
                f.write(ecdsa_der(sig))
        after = member(p11ha, session)
        tell.write(f"after={after}\ndone={count}\n")
    session.logout()
    session.closeSession()
    print(f"{count} signatures on one session; member {before} was killed in signature {kill_at + 1} "
          f"(between C_SignInit and C_Sign); member {after} serves the session now")


def sign_across_kill(p11ha, session, key, mech, digest, tell, from_script):
    """C_SignInit, the kill, then C_Sign: the operation in progress must survive.
    Returns the signature and the member that served the session at C_SignInit."""
    check(session.lib.C_SignInit(session.session, mech.to_native(), key), "C_SignInit")
    before = member(p11ha, session)
    tell.write(f"member={before}\n")
    tell.flush()
    with open(from_script) as hear:
        line = hear.readline().strip()
    if line != "killed":
        sys.exit(f"pykcs11_failover.py: expected 'killed' from the script, got {line!r}")
    data = PyKCS11.ckbytelist(digest)
    sig = PyKCS11.ckbytelist()
    check(session.lib.C_Sign(session.session, data, sig), "C_Sign (length)")
    check(session.lib.C_Sign(session.session, data, sig), "C_Sign")
    return bytes(sig), before


def check(rv, what):
    if rv != PyKCS11.CKR_OK:
        raise PyKCS11.PyKCS11Error(rv, what)


if __name__ == "__main__":
    main()
