/*
 * fbcon: a text console on the UEFI GOP linear framebuffer, 8x16 glyphs (kernel/font8x16.h).
 *
 * Contract:
 *  - The framebuffer is a struct boot_fb (boot/boot_info.h): base (physical == virtual, identity-
 *    mapped), size in bytes, width and height in pixels, pitch in pixels per scan line, format
 *    BOOT_FB_RGBX or BOOT_FB_BGRX (32 bits per pixel).
 *  - fbcon_init() checks the framebuffer and returns false, leaving the console off (every later
 *    call does nothing, cols/rows are 0), when it is absent or unusable: no fb, base 0 or not 4-byte
 *    aligned, format NONE or unknown, zero size, width < 8 or height < 16 (smaller than one glyph),
 *    pitch < width, or size < pitch * height * 4. Otherwise it blanks the visible area (width x
 *    height pixels; the pitch padding is never touched) and puts the cursor at the top left.
 *    It may be called again (e.g. with a new mode); the text is then lost.
 *  - fbcon_write() interprets n bytes: printable ASCII (0x20..0x7E) is drawn at the cursor in the
 *    current colour; '\n' goes to column 0 of the next line; '\r' to column 0; '\t' to the next
 *    multiple of 8 (or the end of the line); '\b' back one column (not past column 0; nothing is
 *    erased); any other byte is drawn as the replacement glyph (a box). Writing past the last
 *    column wraps to the next line (the wrap happens when the next character arrives, so a line
 *    that exactly fills the width followed by '\n' gives no blank line). Reaching past the bottom
 *    scrolls the text up one line; the new bottom line is blank.
 *    ANSI escape sequences are swallowed: ESC [ params intermediates final-byte (CSI) and
 *    ESC intermediates final-byte. SGR (ESC [ ... m) sets the foreground colour: 0 or empty =
 *    reset, 30-37 and 90-97 = the 8 normal / 8 bright VGA colours, 39 = default (light grey),
 *    1 = bold (shows 30-37 and the default as their bright versions), 22 = not bold; 38/48
 *    extended colours and everything else are ignored. A control byte (< 0x20) or a byte >= 0x80
 *    inside a sequence abandons the sequence and is then handled as usual. Sequences may be split
 *    across calls. The background is always black.
 *  - fbcon_clear() blanks the text and moves the cursor to the top left (colour unchanged).
 *  - fbcon_cols()/fbcon_rows(): the text grid, min(width / 8, FBCON_MAX_COLS) by
 *    min(height / 16, FBCON_MAX_ROWS); a larger screen uses only its top-left part. 0 when off.
 *  - No locking (the caller serialises: the kernel log does), no allocation: all state is static.
 *    The framebuffer is only ever written, never read (reads are very slow under emulation):
 *    a shadow of the character cells is kept, and scrolling redraws only the cells whose
 *    character or colour changed, once per fbcon_write() call however many lines it scrolled.
 */
#ifndef KERNEL_FBCON_H
#define KERNEL_FBCON_H

#include <stdbool.h>
#include <stddef.h>

#include "boot/boot_info.h"

#define FBCON_GLYPH_W 8
#define FBCON_GLYPH_H 16
#define FBCON_MAX_COLS 240 /* 1920 pixels */
#define FBCON_MAX_ROWS 75  /* 1200 pixels */

bool fbcon_init(const struct boot_fb *fb);
void fbcon_write(const char *s, size_t n);
void fbcon_clear(void);
unsigned fbcon_cols(void);
unsigned fbcon_rows(void);

#endif
