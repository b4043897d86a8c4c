"""Helpers shared by the Python clients of the clients suite (scripts/clients.sh).

Each client runs a list of named cases, prints "pass NAME" or "FAIL NAME: why"
for each, and writes what the token produced to an output directory, where
clients.sh checks it again outside the PKCS#11 library (openssl, sha256sum).
Used from Debian's /usr/bin/python3 (PyKCS11) and from the suite's venv
(python-pkcs11): standard library only.
"""

import os
import sys
import traceback

TOKEN = "TokName"
PIN = "1234"


class Report:
    """Runs cases and remembers whether any failed."""

    def __init__(self, out):
        self.out = out
        self.failures = 0
        os.makedirs(out, exist_ok=True)

    def case(self, name, body):
        try:
            body()
        except Exception as e:  # every failure of a case is reported, none stops the run
            self.failures += 1
            print(f"FAIL {name}: {e!r}", flush=True)
            traceback.print_exc(file=sys.stdout)
        else:
            print(f"pass {name}", flush=True)

    def write(self, name, data):
        with open(os.path.join(self.out, name), "wb") as f:
            f.write(bytes(data))

    def exit(self):
        sys.exit(1 if self.failures else 0)


def require(ok, what):
    if not ok:
        raise AssertionError(what)


def pattern(n, seed):
    """n bytes that are the same on every run (the suite is deterministic)."""
    return bytes((i * 7 + seed) & 0xFF for i in range(n))


def _der_int(b):
    b = b.lstrip(b"\0") or b"\0"
    if b[0] & 0x80:
        b = b"\0" + b
    return b"\x02" + _der_len(len(b)) + b


def _der_len(n):
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def ecdsa_der(raw):
    """PKCS#11's r||s ECDSA signature as the DER SEQUENCE openssl reads."""
    raw = bytes(raw)
    require(len(raw) % 2 == 0 and raw, f"ECDSA signature of odd length {len(raw)}")
    half = len(raw) // 2
    body = _der_int(raw[:half]) + _der_int(raw[half:])
    return b"\x30" + _der_len(len(body)) + body


def chunks(data, cuts):
    """data cut at the offsets in cuts (uneven parts, some of them not block-sized)."""
    edges = [0] + list(cuts) + [len(data)]
    return [data[a:b] for a, b in zip(edges, edges[1:])]
