#!/usr/bin/env python3
"""Writes the seeds of test/fuzz/fuzz_vmbusmsg.c into test/fuzz/corpus/vmbusmsg (deterministic):
one file per well-formed message type and a few sequences, each message as a length byte + bytes."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "vmbusmsg")


def hdr(t):
    return struct.pack("<II", t, 0)


def framed(*msgs):
    return b"".join(bytes([len(m)]) + m for m in msgs)


NIC = bytes.fromhex("635161f83edfc546913ff2d2f965ed0e")
offer = hdr(1) + NIC + bytes(16) + bytes(16) + struct.pack("<HH", 0x2 | 0x4, 0) + bytes(120) + struct.pack("<HH", 0, 0)
offer += struct.pack("<IBBHI", 7, 3, 1, 0, 0x2007)
assert len(offer) == 196
gpadl_hdr = hdr(8) + struct.pack("<IIHHII", 7, 0xE1E10, 8 + 8 * 30, 1, 30 * 4096, 0) + b"".join(
    struct.pack("<Q", 0x100 + i) for i in range(26))
gpadl_body = hdr(9) + struct.pack("<II", 1, 0xE1E10) + b"".join(struct.pack("<Q", 0x200 + i) for i in range(4))
seeds = {
    "offer": framed(offer),
    "rescind": framed(hdr(2) + struct.pack("<I", 7)),
    "alloffers": framed(hdr(4)),
    "open": framed(hdr(5) + struct.pack("<IIIII", 7, 7, 0xE1E10, 0, 4) + bytes(120)),
    "open_result": framed(hdr(6) + struct.pack("<III", 7, 7, 0)),
    "gpadl": framed(gpadl_hdr, gpadl_body),
    "gpadl_created": framed(hdr(10) + struct.pack("<III", 7, 0xE1E10, 0)),
    "teardown": framed(hdr(11) + struct.pack("<II", 7, 0xE1E10), hdr(12) + struct.pack("<I", 0xE1E10)),
    "contact": framed(hdr(14) + struct.pack("<IIQQQ", 0x60000, 0, 2, 0x5000, 0x6000)),
    "version": framed(hdr(15) + struct.pack("<BBHII", 1, 0, 0, 0x2000F, 0x3F)),
    "unload": framed(hdr(16), hdr(17)),
    "modify": framed(hdr(22) + struct.pack("<II", 7, 1), hdr(24) + struct.pack("<II", 7, 0)),
    "bad": framed(hdr(1)[:6], hdr(99) + bytes(8), offer[:100]),
}
os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {OUT}")
