#!/usr/bin/env python3
"""Generates the seed corpus for test/fuzz/fuzz_ring.c.

Each seed is the harness's input: a 32-byte header (size selector, options, control words; see the
comment at the top of fuzz_ring.c) followed by the ring's data area. The packets follow
kmcl/core/ring_format.h: a 16-byte descriptor (type u16, offset8 u16, len8 u16, flags u16, trans_id u64),
the type-specific header, the payload padded to 8, and an 8-byte trailer whose upper 32 bits hold
the packet's start offset.

Usage: python3 test/fuzz/gen_ring_seeds.py [output directory]   (default: corpus/ring beside this file)
The output is deterministic; the generated files are committed with the script.
"""
import os
import struct
import sys

INBAND, XFER, GPA, COMP = 6, 7, 9, 11
OPT_XFER_LIMIT, OPT_MUTATE, OPT_WRITER, OPT_NO_BOUNCE = 1, 2, 4, 8


def pad8(b):
    return b + b"\0" * (-len(b) % 8)


def packet(ptype, ext, payload, trans_id=0, flags=0):
    """Descriptor + type-specific header + padded payload (without the trailer)."""
    body = pad8(ext) + pad8(payload)
    offset8 = (16 + len(pad8(ext))) // 8
    len8 = (16 + len(body)) // 8
    return struct.pack("<HHHHQ", ptype, offset8, len8, flags, trans_id) + body


def xfer_ext(pageset, owns, ranges):
    return struct.pack("<HBBI", pageset, owns, 0, len(ranges)) + b"".join(
        struct.pack("<II", count, offset) for count, offset in ranges)


def gpa_ext(ranges):
    out = struct.pack("<II", 0, len(ranges))
    for count, offset, pfns in ranges:
        out += struct.pack("<II", count, offset) + b"".join(struct.pack("<Q", p) for p in pfns)
    return out


class Ring:
    """A data area being filled the way a writer does, starting at any offset."""

    def __init__(self, size, start=0):
        assert size % 8 == 0 and 64 <= size <= 8192 and (size - 64) // 8 < 1017
        self.size = size
        self.data = bytearray(size)
        self.read = start
        self.write = start

    def put(self, pkt):
        whole = pkt + struct.pack("<Q", self.write << 32)
        assert len(whole) <= self.size - 8 - ((self.write - self.read) % self.size)
        for i, b in enumerate(whole):
            self.data[(self.write + i) % self.size] = b
        self.write = (self.write + len(whole)) % self.size

    def seed(self, options=0, limit=0, mutate_at=0, mutate_value=0, mask=0, pending=0, write=None, read=None):
        header = struct.pack("<HBBIIIIIII", (self.size - 64) // 8, options, mutate_at,
                             self.write if write is None else write, self.read if read is None else read,
                             mask, pending, limit, mutate_value, 0)
        assert len(header) == 32
        return header + bytes(self.data)


def all_types(ring):
    ring.put(packet(INBAND, b"", b"hello, ring", trans_id=1, flags=1))
    ring.put(packet(COMP, b"", struct.pack("<Q", 1), trans_id=1))
    ring.put(packet(XFER, xfer_ext(0xCAFE, 1, [(1514, 0), (60, 4096)]), b"rndis-msg", trans_id=2, flags=1))
    ring.put(packet(GPA, gpa_ext([(4096, 0, [0x100]), (100, 4000, [0x200, 0x201])]), b"scsi", trans_id=3, flags=1))
    ring.put(packet(INBAND, b"", b"", trans_id=4))


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus",
                                                              "ring")
    os.makedirs(out, exist_ok=True)
    seeds = {}

    r = Ring(1024)
    all_types(r)
    seeds["all_types.bin"] = r.seed()
    seeds["all_types_limit.bin"] = r.seed(options=OPT_XFER_LIMIT, limit=8192)
    seeds["all_types_limit_too_small.bin"] = r.seed(options=OPT_XFER_LIMIT, limit=4100)
    seeds["all_types_mutated.bin"] = r.seed(options=OPT_MUTATE, mutate_at=20, mutate_value=0xFFFFFFFF)
    seeds["all_types_writer.bin"] = r.seed(options=OPT_WRITER, pending=64)

    # A packet that wraps around the end of the data area (and one whose trailer alone wraps).
    r = Ring(256, start=200)
    r.put(packet(INBAND, b"", bytes(range(64)), trans_id=7))
    r.put(packet(XFER, xfer_ext(1, 0, [(10, 20)]), b"x", trans_id=8))
    seeds["wrapped.bin"] = r.seed()
    seeds["wrapped_no_bounce.bin"] = r.seed(options=OPT_NO_BOUNCE)
    r = Ring(256, start=208)
    r.put(packet(INBAND, b"", b"A" * 32, trans_id=9))
    r.put(packet(GPA, gpa_ext([(8193, 0, [1, 2, 3])]), b"", trans_id=10))
    seeds["trailer_at_zero.bin"] = r.seed()
    r = Ring(256, start=248)
    r.put(packet(COMP, b"", b"split descriptor", trans_id=11))
    seeds["split_descriptor.bin"] = r.seed()

    # Many small packets, several laps' worth of positions in a small ring.
    r = Ring(512, start=480)
    for i in range(10):
        r.put(packet(INBAND if i % 2 else COMP, b"", bytes([i]) * (i * 2), trans_id=i))
    seeds["many_small.bin"] = r.seed()

    # Malformed: each differs from a valid ring in one field.
    r = Ring(256)
    r.put(packet(INBAND, b"", b"12345678", trans_id=1))
    good = bytearray(r.seed())
    bad = bytearray(good)
    bad[32 + 24 + 4] ^= 1  # trailer offset
    seeds["bad_trailer.bin"] = bytes(bad)
    bad = bytearray(good)
    bad[32 + 4:32 + 6] = struct.pack("<H", 0xFFFF)  # len8
    seeds["bad_len.bin"] = bytes(bad)
    bad = bytearray(good)
    bad[32 + 2:32 + 4] = struct.pack("<H", 1)  # offset8 inside the descriptor
    seeds["bad_offset.bin"] = bytes(bad)
    seeds["bad_write_index.bin"] = r.seed(write=260)
    r = Ring(256)
    r.put(packet(GPA, gpa_ext([(4097, 0, [1])]), b"", trans_id=1))  # needs 2 pfns, has 1
    seeds["bad_gpa_pfns.bin"] = r.seed()
    r = Ring(256)
    ext = bytearray(xfer_ext(3, 0, [(1, 1)]))
    ext[4:8] = struct.pack("<I", 1000)  # range count past the data offset
    r.put(packet(XFER, bytes(ext), b"", trans_id=1))
    seeds["bad_xfer_count.bin"] = r.seed()

    for name, blob in sorted(seeds.items()):
        with open(os.path.join(out, name), "wb") as f:
            f.write(blob)
    print(f"{len(seeds)} seeds in {out}")


if __name__ == "__main__":
    main()
