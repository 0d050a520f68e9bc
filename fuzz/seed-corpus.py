#!/usr/bin/env python3
"""Seeds fuzz/corpus/decode_message/ from the golden fixtures: each message gets
the selector byte for its protocol version and stream state (see the target).
At most 4 messages per (fixture, tag) to keep the corpus small.

Run from the repo root: python3 fuzz/seed-corpus.py
"""
import hashlib
import pathlib
import re

root = pathlib.Path(__file__).resolve().parent.parent
fixtures = root / "crates/pgoutput-decoder/tests/fixtures"
out = root / "fuzz/corpus/decode_message"
out.mkdir(parents=True, exist_ok=True)
count = 0
for f in sorted(fixtures.glob("*.txt")):
    proto = int(re.search(r"\.v(\d)", f.name).group(1))
    in_stream = False
    seen = {}
    for line in f.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        data = bytes.fromhex(line.split()[2])
        tag = data[:1]
        selector = (proto - 1) | (4 if in_stream else 0)
        if tag == b"S":
            in_stream = True
        elif tag == b"E":
            in_stream = False
        seen[tag] = seen.get(tag, 0) + 1
        if seen[tag] > 4:
            continue
        blob = bytes([selector]) + data
        (out / hashlib.sha1(blob).hexdigest()).write_bytes(blob)
        count += 1
print(f"{count} seeds in {out}")
