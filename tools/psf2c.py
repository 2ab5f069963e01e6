#!/usr/bin/env python3
"""psf2c: turn a PC Screen Font (PSF1 or PSF2, optionally gzip-compressed) into the kernel's
`const uint8_t font8x16[128][16]` table (kernel/font8x16.c).

Only ASCII 0x20..0x7E is taken from the font. Each character is looked up through the font's
Unicode table when it has one (console-setup fonts store glyphs in their own order), else by
position. Every other slot (0x00..0x1F, 0x7F) gets a generated replacement glyph: a hollow box.

Fonts narrower than 8 pixels are left-aligned; fonts shorter than 16 rows are padded (rows split
top/bottom by --pad-top, default: one row on top, the rest below). Wider or taller fonts are
refused.

  tools/psf2c.py /usr/share/consolefonts/Lat15-Fixed13.psf.gz > kernel/font8x16.c
  tools/psf2c.py --dump FONT.psf.gz          # show the ASCII glyphs as text art

The C file's provenance comment comes from --source/--licence (see the defaults below, which
describe the font this project ships); change them when regenerating from another font.
"""

import argparse
import gzip
import struct
import sys

PSF1_MAGIC = b"\x36\x04"
PSF1_MODE512 = 0x01
PSF1_MODEHASTAB = 0x02
PSF1_MODESEQ = 0x04
PSF1_SEPARATOR = 0xFFFF
PSF1_STARTSEQ = 0xFFFE

PSF2_MAGIC = b"\x72\xb5\x4a\x86"
PSF2_HAS_UNICODE_TABLE = 0x01
PSF2_SEPARATOR = 0xFF
PSF2_STARTSEQ = 0xFE

OUT_W, OUT_H = 8, 16


class Font:
    def __init__(self, width, height, glyphs, unimap):
        self.width = width          # pixels
        self.height = height        # rows
        self.glyphs = glyphs        # list of bytes, one per glyph (rows of ceil(width/8) bytes)
        self.unimap = unimap        # code point -> glyph index (first glyph wins), may be empty

    def glyph_rows(self, index):
        """The glyph's rows as ints, bit (width-1) = leftmost pixel."""
        stride = (self.width + 7) // 8
        g = self.glyphs[index]
        rows = []
        for r in range(self.height):
            v = int.from_bytes(g[r * stride:(r + 1) * stride], "big")
            rows.append(v >> (stride * 8 - self.width))
        return rows


def read_font_file(path):
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def parse_psf1(data):
    if len(data) < 4:
        raise ValueError("truncated PSF1 header")
    mode, charsize = data[2], data[3]
    count = 512 if mode & PSF1_MODE512 else 256
    start = 4
    end = start + count * charsize
    if charsize == 0 or len(data) < end:
        raise ValueError("truncated PSF1 glyph data")
    glyphs = [data[start + i * charsize:start + (i + 1) * charsize] for i in range(count)]
    unimap = {}
    if mode & (PSF1_MODEHASTAB | PSF1_MODESEQ):
        pos = end
        for index in range(count):
            in_seq = False
            while True:
                if pos + 2 > len(data):
                    raise ValueError("truncated PSF1 unicode table")
                (u,) = struct.unpack_from("<H", data, pos)
                pos += 2
                if u == PSF1_SEPARATOR:
                    break
                if u == PSF1_STARTSEQ:
                    in_seq = True   # what follows are combining sequences: not single characters
                    continue
                if not in_seq:
                    unimap.setdefault(u, index)
    return Font(8, charsize, glyphs, unimap)


def parse_psf2(data):
    if len(data) < 32:
        raise ValueError("truncated PSF2 header")
    (_magic, version, headersize, flags, length, charsize, height, width) = struct.unpack_from(
        "<4sIIIIIII", data, 0)
    if version != 0:
        raise ValueError("unknown PSF2 version %d" % version)
    if width == 0 or height == 0 or charsize != height * ((width + 7) // 8):
        raise ValueError("inconsistent PSF2 geometry %dx%d, %d bytes/glyph" % (width, height, charsize))
    end = headersize + length * charsize
    if len(data) < end:
        raise ValueError("truncated PSF2 glyph data")
    glyphs = [data[headersize + i * charsize:headersize + (i + 1) * charsize] for i in range(length)]
    unimap = {}
    if flags & PSF2_HAS_UNICODE_TABLE:
        pos = end
        for index in range(length):
            # One entry: UTF-8 characters, then optional (0xFE UTF-8 sequence)*, then 0xFF.
            term = data.find(bytes([PSF2_SEPARATOR]), pos)
            if term < 0:
                raise ValueError("truncated PSF2 unicode table")
            entry = data[pos:term]
            pos = term + 1
            singles = entry.split(bytes([PSF2_STARTSEQ]), 1)[0]
            for ch in singles.decode("utf-8"):
                unimap.setdefault(ord(ch), index)
    return Font(width, height, glyphs, unimap)


def parse_psf(data):
    if data[:4] == PSF2_MAGIC:
        return parse_psf2(data)
    if data[:2] == PSF1_MAGIC:
        return parse_psf1(data)
    raise ValueError("not a PSF1/PSF2 font (bad magic)")


def ascii_glyph(font, code):
    if font.unimap:
        if code not in font.unimap:
            raise ValueError("font has no glyph for U+%04X" % code)
        return font.unimap[code]
    if code >= len(font.glyphs):
        raise ValueError("font has too few glyphs for U+%04X" % code)
    return code


def replacement_glyph():
    """A hollow box, one pixel in from the cell edges, rows 2..13."""
    rows = [0] * OUT_H
    rows[2] = rows[13] = 0x7E
    for r in range(3, 13):
        rows[r] = 0x42
    return rows


def build_table(font, pad_top):
    if font.width > OUT_W or font.height > OUT_H:
        raise ValueError("font is %dx%d; at most %dx%d fits" % (font.width, font.height, OUT_W, OUT_H))
    if pad_top is None:
        pad_top = min(1, OUT_H - font.height)
    if pad_top < 0 or pad_top + font.height > OUT_H:
        raise ValueError("--pad-top %d does not fit a %d-row font in %d rows" % (pad_top, font.height, OUT_H))
    table = []
    for code in range(128):
        if 0x20 <= code <= 0x7E:
            rows = [0] * OUT_H
            for r, v in enumerate(font.glyph_rows(ascii_glyph(font, code))):
                rows[pad_top + r] = (v << (OUT_W - font.width)) & 0xFF
            table.append(rows)
        else:
            table.append(replacement_glyph())
    return table, pad_top


def char_name(code):
    if code == 0x5C:
        return "backslash"
    if 0x20 <= code <= 0x7E:
        return "'%s'" % chr(code)
    return "replacement box"


def emit_c(table, args, font, pad_top):
    out = []
    out.append("/*")
    out.append(" * font8x16: 8x16 bitmap glyphs for ASCII, generated by tools/psf2c.py -- do not edit;")
    out.append(" * regenerate with:")
    out.append(" *   python3 tools/psf2c.py %s > kernel/font8x16.c" % args.cmdline)
    out.append(" *")
    for line in args.source.split("\\n"):
        out.append((" * " + line).rstrip())
    out.append(" *")
    for line in args.licence.split("\\n"):
        out.append((" * " + line).rstrip())
    out.append(" *")
    out.append(" * Source glyphs %dx%d, placed at the left with %d blank row(s) above and %d below."
               % (font.width, font.height, pad_top, OUT_H - font.height - pad_top))
    out.append(" * Slots 0x00-0x1F and 0x7F hold a replacement glyph (a hollow box) drawn by tools/psf2c.py.")
    out.append(" */")
    out.append('#include "kernel/font8x16.h"')
    out.append("")
    out.append("const uint8_t font8x16[128][16] = {")
    for code, rows in enumerate(table):
        body = ", ".join("0x%02x" % v for v in rows)
        out.append("    [0x%02x] = { %s }, /* %s */" % (code, body, char_name(code)))
    out.append("};")
    return "\n".join(out) + "\n"


def dump(table):
    lines = []
    for code in range(0x20, 0x7F):
        lines.append("0x%02x %s" % (code, char_name(code)))
        for v in table[code]:
            lines.append("  " + "".join("#" if v & (0x80 >> b) else "." for b in range(8)))
    return "\n".join(lines) + "\n"


DEFAULT_SOURCE = (
    "Source: /usr/share/consolefonts/Lat15-Fixed13.psf.gz from Debian's console-setup-linux 1.221.\\n"
    "console-setup's Fonts/Makefile builds it from \"Fixed13-BDFS := 8x13-IL2.bdf+8x13.bdf+8x13c.bdf\",\\n"
    "i.e. the X11 \"misc-fixed\" 8x13 font (-Misc-Fixed-Medium-R-Normal--13-120-75-75-C-80-...).\\n"
    "(Not Lat15-Fixed16: console-setup builds Fixed16 from GNU Unifont, not from misc-fixed.)")
DEFAULT_LICENCE = (
    "Licence: public domain. /usr/share/doc/console-setup-linux/copyright.fonts.gz lists the\\n"
    "8x13 fonts as \"Public domain.  Donated (in unspecified order) by H. Kagotani, BIZNET Poland,\\n"
    "Inc., Dmitry Yu. Bolkhovityanov, Thomas Bagli, PCS Computer Systeme - West Germany, Takahashi\\n"
    "N., Mark J. Reed, P. Peterlin, Mark Leisher, Roman Czyborra, Kosta Kostis and others\"; the\\n"
    "package's copyright file adds \"All console fonts are public domain by nature.\"")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("font", help="PSF1/PSF2 font file, optionally .gz")
    ap.add_argument("--pad-top", type=int, default=None,
                    help="blank rows above a font shorter than 16 rows (default 1)")
    ap.add_argument("--dump", action="store_true", help="print the ASCII glyphs as text art instead of C")
    ap.add_argument("--source", default=DEFAULT_SOURCE, help="provenance text for the C comment (\\n = new line)")
    ap.add_argument("--licence", default=DEFAULT_LICENCE, help="licence text for the C comment (\\n = new line)")
    args = ap.parse_args()

    font = parse_psf(read_font_file(args.font))
    table, pad_top = build_table(font, args.pad_top)
    if args.dump:
        sys.stdout.write(dump(table))
        return
    cmd = [args.font]
    if args.pad_top is not None:
        cmd.insert(0, "--pad-top %d" % args.pad_top)
    args.cmdline = " ".join(cmd)
    sys.stdout.write(emit_c(table, args, font, pad_top))


if __name__ == "__main__":
    try:
        main()
    except (OSError, ValueError) as e:
        sys.exit("psf2c: %s" % e)
