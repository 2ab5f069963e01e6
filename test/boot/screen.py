"""Reads the text back off a screendump of the framebuffer console.

The kernel draws 8x16 cells from kernel/font8x16.c on a black background; this module parses that
font table, binarises a PPM screendump (a pixel is ink when any channel is above 0x40) and decodes
every cell by exact match against the glyphs, so tests can assert on what a person looking at
Hyper-V Manager's window (or QEMU's display) would read. Cells that match no glyph decode as '?'.
"""
import os
import re

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def load_font():
    src = open(os.path.join(ROOT, "kernel", "font8x16.c")).read()
    glyphs = {}
    for m in re.finditer(r"\[0x([0-9a-fA-F]{2})\]\s*=\s*\{([^}]*)\}", src):
        code = int(m.group(1), 16)
        rows = tuple(int(x, 16) for x in m.group(2).replace(" ", "").split(",") if x)
        if 0x20 <= code < 0x7F and len(rows) == 16:
            glyphs.setdefault(rows, chr(code))
    return glyphs


def read_ppm(path):
    data = open(path, "rb").read()
    # P6 <w> <h> <max>\n<rgb...>; no comments in QEMU's output
    parts = data.split(maxsplit=4)
    if parts[0] != b"P6":
        raise ValueError("not a binary PPM")
    w, h = int(parts[1]), int(parts[2])
    pixels = parts[4]
    return w, h, pixels


def screen_text(path):
    glyphs = load_font()
    w, h, px = read_ppm(path)
    lines = []
    for cy in range(h // 16):
        line = []
        for cx in range(w // 8):
            rows = []
            for y in range(16):
                base = ((cy * 16 + y) * w + cx * 8) * 3
                bits = 0
                for x in range(8):
                    r, g, b = px[base + 3 * x], px[base + 3 * x + 1], px[base + 3 * x + 2]
                    if max(r, g, b) > 0x40:
                        bits |= 0x80 >> x
                rows.append(bits)
            line.append(glyphs.get(tuple(rows), "?"))
        lines.append("".join(line).rstrip())
    return "\n".join(lines)
