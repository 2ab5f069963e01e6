#!/usr/bin/env python3
"""Generates the seed corpus for test/fuzz/fuzz_acpi.c.

Each seed is a memory image mapped at physical address BASE (must match FUZZ_ACPI_BASE in
fuzz_acpi.c) with the RSDP at offset 0; table pointers are BASE + offset. Layouts follow the ACPI 6.5
specification (RSDP 5.2.5.3, header 5.2.6, XSDT 5.2.8, FADT 5.2.9, MADT 5.2.12, GAS 5.2.3.2) and the
IA-PC HPET specification 1.0a. A few seeds are raw AML bytes with \\_S5 packages (for acpi_find_s5,
which the harness also runs over the raw input).

Usage: python3 test/fuzz/gen_acpi_seeds.py [output directory]   (default: corpus/acpi beside this file)
The output is deterministic; the generated files are committed with the script.
"""
import os
import struct
import sys

BASE = 0x1000


def checksum_fix(buf, start, length, at):
    buf[start + at] = 0
    buf[start + at] = (-sum(buf[start:start + length])) & 0xFF


class Image:
    def __init__(self):
        self.buf = bytearray()

    def alloc(self, size, align=16):
        while len(self.buf) % align:
            self.buf.append(0)
        off = len(self.buf)
        self.buf.extend(b"\0" * size)
        return off

    def phys(self, off):
        return BASE + off

    def table(self, sig, body, rev=1):
        """Appends a table with a header and a correct checksum; returns its offset."""
        length = 36 + len(body)
        off = self.alloc(length)
        hdr = struct.pack("<4sIBB6s8sI4sI", sig, length, rev, 0, b"FUZZOE", b"SEEDTABL", 1, b"GEN ", 1)
        self.buf[off:off + 36] = hdr
        self.buf[off + 36:off + length] = body
        checksum_fix(self.buf, off, length, 9)
        return off

    def patch_table(self, off, pos, data):
        """Overwrites bytes inside a table and re-checksums it."""
        self.buf[off + pos:off + pos + len(data)] = data
        length = struct.unpack_from("<I", self.buf, off + 4)[0]
        checksum_fix(self.buf, off, length, 9)

    def rsdp(self, rev, rsdt_off, xsdt_off):
        rsdt = self.phys(rsdt_off) if rsdt_off is not None else 0
        xsdt = self.phys(xsdt_off) if xsdt_off is not None else 0
        r = bytearray(struct.pack("<8sB6sBIIQB3s", b"RSD PTR ", 0, b"FUZZOE", rev, rsdt, 36, xsdt, 0, b"\0\0\0"))
        checksum_fix(r, 0, 20, 8)
        if rev >= 2:
            checksum_fix(r, 0, 36, 32)
        else:
            r = r[:20]
        self.buf[0:len(r)] = r


def gas(space, width, addr):
    return struct.pack("<BBBBQ", space, width, 0, 1, addr)


def madt_body(lapic_addr, flags, entries):
    return struct.pack("<II", lapic_addr, flags) + b"".join(entries)


def lapic(uid, apic_id, flags):
    return struct.pack("<BBBBI", 0, 8, uid, apic_id, flags)


def x2apic(apic_id, flags, uid):
    return struct.pack("<BBHIII", 9, 16, 0, apic_id, flags, uid)


def ioapic(ioapic_id, addr, gsi):
    return struct.pack("<BBBBII", 1, 12, ioapic_id, 0, addr, gsi)


def iso(source, gsi, flags):
    return struct.pack("<BBBBIH", 2, 10, 0, source, gsi, flags)


def lapic_override(addr):
    return struct.pack("<BBHQ", 5, 12, 0, addr)


def lapic_nmi():
    return struct.pack("<BBBHB", 4, 6, 0xFF, 5, 1)


def fadt_body(length, dsdt_phys, flags=1 << 8, pm1a=0x404, pm_tmr=0x408, x_dsdt=None,
              sleep_control=None, sleep_status=None):
    """FADT of `length` bytes (116 = ACPI 1.0, 276 = 6.x); returns the body (after the header)."""
    f = bytearray(length)
    struct.pack_into("<I", f, 40, dsdt_phys)
    struct.pack_into("<H", f, 46, 9)         # SCI_INT
    struct.pack_into("<I", f, 48, 0xB2)      # SMI_CMD
    f[52] = 0xA0                             # ACPI_ENABLE
    struct.pack_into("<I", f, 56, 0x400)     # PM1a_EVT_BLK
    struct.pack_into("<I", f, 64, pm1a)      # PM1a_CNT_BLK
    struct.pack_into("<I", f, 76, pm_tmr)    # PM_TMR_BLK
    f[88], f[89], f[91] = 4, 2, 4            # PM1_EVT_LEN, PM1_CNT_LEN, PM_TMR_LEN
    struct.pack_into("<I", f, 112, flags)
    if length >= 148:
        struct.pack_into("<Q", f, 140, x_dsdt if x_dsdt is not None else dsdt_phys)
    if length >= 220:
        if pm1a:
            f[172:184] = gas(1, 16, pm1a)
        if pm_tmr:
            f[208:220] = gas(1, 32, pm_tmr)
    if length >= 268:
        if sleep_control:
            f[244:256] = sleep_control
        if sleep_status:
            f[256:268] = sleep_status
    return bytes(f[36:])


def hpet_body(addr):
    return struct.pack("<I", 0x8086A201) + gas(0, 64, addr) + struct.pack("<BHB", 0, 0x80, 0)


# AML: Name (_S5, Package (4) { 5, 5, 0, 0 }) in the common encodings.
S5_BYTES = bytes([0x08]) + b"_S5_" + bytes([0x12, 0x0A, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00])
S5_ROOT_ZERO_ONE = bytes([0x08, 0x5C]) + b"_S5_" + bytes([0x12, 0x06, 0x04, 0x00, 0x01, 0x00, 0x00])
S5_WORD_PKGLEN2 = bytes([0x08]) + b"_S5_" + bytes([0x12, 0x41, 0x00, 0x02, 0x0B, 0x07, 0x00, 0x0C, 0x07, 0, 0, 0])
S4_BYTES = bytes([0x08]) + b"_S4_" + bytes([0x12, 0x0A, 0x04, 0x0A, 0x04, 0x0A, 0x04, 0x00, 0x00])
SCOPE_SB = bytes([0x10, 0x05, 0x5C]) + b"_SB_"


def full_image(rsdp_rev=2, fadt_len=276, hw_reduced=False, madt_entries=None, dsdt_aml=None):
    im = Image()
    im.alloc(36)                                    # RSDP slot at offset 0
    dsdt = im.table(b"DSDT", dsdt_aml if dsdt_aml is not None else SCOPE_SB + S4_BYTES + S5_BYTES, rev=2)
    if madt_entries is None:
        madt_entries = [lapic(0, 0, 1), lapic(1, 1, 1), lapic(2, 2, 2), lapic(3, 3, 0), x2apic(0x100, 1, 4),
                        ioapic(8, 0xFEC00000, 0), iso(0, 2, 0), iso(9, 9, 0x000D), lapic_nmi(),
                        lapic_override(0xFEE00000)]
    madt = im.table(b"APIC", madt_body(0xFEE00000, 1, madt_entries), rev=5)
    hpet = im.table(b"HPET", hpet_body(0xFED00000), rev=1)
    if hw_reduced:
        body = fadt_body(fadt_len, im.phys(dsdt), flags=1 << 20, pm1a=0, pm_tmr=0,
                         sleep_control=gas(0, 8, 0xFED80004), sleep_status=gas(0, 8, 0xFED80005))
    else:
        body = fadt_body(fadt_len, im.phys(dsdt))
    fadt = im.table(b"FACP", body, rev=6 if fadt_len > 116 else 1)
    entries = [fadt, madt, hpet]
    rsdt = im.table(b"RSDT", b"".join(struct.pack("<I", im.phys(e)) for e in entries))
    xsdt = im.table(b"XSDT", b"".join(struct.pack("<Q", im.phys(e)) for e in entries)) if rsdp_rev >= 2 else None
    im.rsdp(rsdp_rev, rsdt, xsdt)
    return im


def seeds():
    out = {}
    out["v2_xsdt_full.bin"] = full_image().buf
    out["v0_rsdt_fadt1.bin"] = full_image(rsdp_rev=0, fadt_len=116).buf
    out["v2_hw_reduced.bin"] = full_image(hw_reduced=True,
                                          dsdt_aml=SCOPE_SB + S5_ROOT_ZERO_ONE).buf
    out["v2_many_cpus.bin"] = full_image(
        madt_entries=[x2apic(i, 1 if i % 7 else 2, i) for i in range(260)] + [ioapic(i, 0xFEC00000 + i * 0x1000, 24 * i) for i in range(9)]).buf
    out["v2_dup_and_short_entries.bin"] = full_image(
        madt_entries=[lapic(0, 0, 1), lapic(1, 0, 1), x2apic(0, 1, 2), bytes([0, 6, 1, 1, 1, 0]),
                      bytes([1, 8, 0, 0, 0, 0, 0xC0, 0xFE]), lapic(4, 4, 1)]).buf
    out["v2_madt_zero_length_entry.bin"] = full_image(
        madt_entries=[lapic(0, 0, 1), bytes([0, 0, 0, 0, 0, 0, 0, 0]), lapic(1, 1, 1)]).buf
    out["v2_dsdt_word_s5.bin"] = full_image(dsdt_aml=SCOPE_SB + S5_WORD_PKGLEN2).buf
    # Bad checksums everywhere except the RSDP (the harness's repair pass fixes them).
    im = full_image()
    for off in range(40, len(im.buf), 97):
        im.buf[off] ^= 0x5A
    out["v2_scrambled.bin"] = im.buf
    # Raw AML for acpi_find_s5 (no RSDP: acpi_parse fails fast).
    out["aml_s5_byte.bin"] = bytearray(SCOPE_SB + S4_BYTES + S5_BYTES)
    out["aml_s5_root_zero_one.bin"] = bytearray(S5_ROOT_ZERO_ONE)
    out["aml_s5_word_pkglen2.bin"] = bytearray(S5_WORD_PKGLEN2)
    return out


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                "corpus", "acpi")
    os.makedirs(outdir, exist_ok=True)
    for name, data in sorted(seeds().items()):
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(bytes(data))
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
