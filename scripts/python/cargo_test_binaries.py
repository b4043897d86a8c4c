#!/usr/bin/env python3
"""Print "<name> <executable>" for each integration-test binary cargo built.

Usage: cargo_test_binaries.py BUILD_JSON

BUILD_JSON holds the JSON messages of `cargo test --no-run --message-format=...json...`
(scripts/cryptoki-suite.sh writes them). An integration test is a compiler artifact
with an executable, built with the test profile, for a target of kind "test"; lines
that are not JSON (cargo's own text) are skipped. One line per target name, sorted by
name; if a target was built more than once, its last executable is printed.
"""

import json
import sys


def test_binaries(lines):
    """Map each integration-test target's name to its executable."""
    seen = {}
    for line in lines:
        try:
            m = json.loads(line)
        except ValueError:
            continue
        if (
            m.get("reason") == "compiler-artifact"
            and m.get("executable")
            and m["profile"].get("test")
            and "test" in m["target"]["kind"]
        ):
            seen[m["target"]["name"]] = m["executable"]
    return seen


def main(argv):
    if len(argv) != 2:
        sys.exit(f"usage: {argv[0]} BUILD_JSON")
    with open(argv[1], encoding="utf-8") as f:
        seen = test_binaries(f)
    for name in sorted(seen):
        print(name, seen[name])


if __name__ == "__main__":
    main(sys.argv)
