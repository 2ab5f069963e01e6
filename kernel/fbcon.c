/*
 * fbcon: text console on the GOP framebuffer. Contract in kernel/fbcon.h.
 *
 * Two cell arrays: `text` is what the screen should show (a ring of rows, so scrolling is just
 * moving the top index), `shown` is what the framebuffer shows. fbcon_write() updates `text` and
 * then flush() draws the cells of the touched rows whose glyph or colour differs from `shown`.
 * Per-row lengths (columns past which the row is known blank) keep the comparisons short for the
 * typical short log line on a wide screen.
 */
#include "kernel/fbcon.h"

#include <stdint.h>

#include "kernel/font8x16.h"

struct cell {
    uint8_t ch; /* glyph index into font8x16 (0x20..0x7E, or FONT8X16_REPLACEMENT) */
    uint8_t fg; /* palette index 0..15 */
};

enum { ST_NORMAL, ST_ESC, ST_CSI };

#define CSI_MAX_PARAMS 16
#define COLOR_DEFAULT 7
#define BLANK ' '

/* VGA text-mode palette, 0xRRGGBB: black red green brown blue magenta cyan grey, then bright. */
static const uint32_t palette_rgb[16] = {
    0x000000, 0xaa0000, 0x00aa00, 0xaa5500, 0x0000aa, 0xaa00aa, 0x00aaaa, 0xaaaaaa,
    0x555555, 0xff5555, 0x55ff55, 0xffff55, 0x5555ff, 0xff55ff, 0x55ffff, 0xffffff,
};

static struct {
    bool ready;
    volatile uint32_t *fb;
    uint32_t pitch;           /* pixels */
    uint32_t width, height;   /* pixels */
    unsigned cols, rows;
    uint32_t px[16];          /* palette in the framebuffer's pixel format */
    uint32_t bg_px;

    unsigned cx, cy;          /* cursor; cx == cols means "wrap before the next character" */
    unsigned top;             /* ring index of screen row 0 in text[] */
    unsigned dirty_lo, dirty_hi; /* screen rows [lo, hi) to compare in flush(); lo >= hi: none */

    uint8_t color;            /* SGR base colour 0..15 */
    bool bold;

    unsigned esc_state;
    unsigned csi_params[CSI_MAX_PARAMS];
    unsigned csi_count;       /* index of the parameter being parsed */
    bool csi_ignore;          /* private marker or intermediate byte seen: not a plain SGR */
} con;

static struct cell text[FBCON_MAX_ROWS][FBCON_MAX_COLS];  /* ring of rows, indexed via con.top */
static uint16_t text_len[FBCON_MAX_ROWS];                 /* per ring row: cells past this are blank */
static struct cell shown[FBCON_MAX_ROWS][FBCON_MAX_COLS]; /* by screen row */
static uint16_t shown_len[FBCON_MAX_ROWS];

static uint32_t to_pixel(uint32_t rgb, uint32_t format)
{
    uint32_t r = (rgb >> 16) & 0xff, g = (rgb >> 8) & 0xff, b = rgb & 0xff;
    if (format == BOOT_FB_RGBX)
        return r | (g << 8) | (b << 16); /* byte 0 red */
    return b | (g << 8) | (r << 16);     /* byte 0 blue */
}

static unsigned ring(unsigned row)
{
    unsigned i = con.top + row;
    return i >= con.rows ? i - con.rows : i;
}

static void mark_dirty(unsigned row)
{
    if (con.dirty_lo >= con.dirty_hi) {
        con.dirty_lo = row;
        con.dirty_hi = row + 1;
        return;
    }
    if (row < con.dirty_lo)
        con.dirty_lo = row;
    if (row + 1 > con.dirty_hi)
        con.dirty_hi = row + 1;
}

static bool same_look(struct cell a, struct cell b)
{
    return a.ch == b.ch && (a.fg == b.fg || a.ch == BLANK);
}

static void draw_cell(unsigned row, unsigned col, struct cell c)
{
    const uint8_t *g = font8x16[c.ch & 0x7f];
    uint32_t fg = con.px[c.fg & 15], bg = con.bg_px;
    volatile uint32_t *p = con.fb + (size_t)row * FBCON_GLYPH_H * con.pitch + (size_t)col * FBCON_GLYPH_W;

    for (unsigned y = 0; y < FBCON_GLYPH_H; y++, p += con.pitch) {
        unsigned bits = g[y];
        p[0] = (bits & 0x80) ? fg : bg;
        p[1] = (bits & 0x40) ? fg : bg;
        p[2] = (bits & 0x20) ? fg : bg;
        p[3] = (bits & 0x10) ? fg : bg;
        p[4] = (bits & 0x08) ? fg : bg;
        p[5] = (bits & 0x04) ? fg : bg;
        p[6] = (bits & 0x02) ? fg : bg;
        p[7] = (bits & 0x01) ? fg : bg;
    }
}

/* Bring the framebuffer in line with text[] for the dirty rows. */
static void flush(void)
{
    for (unsigned r = con.dirty_lo; r < con.dirty_hi; r++) {
        unsigned tr = ring(r);
        const struct cell *t = text[tr];
        struct cell *s = shown[r];
        unsigned n = text_len[tr] > shown_len[r] ? text_len[tr] : shown_len[r];
        for (unsigned c = 0; c < n; c++) {
            if (!same_look(t[c], s[c])) {
                draw_cell(r, c, t[c]);
                s[c] = t[c];
            }
        }
        shown_len[r] = text_len[tr];
    }
    con.dirty_lo = con.dirty_hi = 0;
}

static void blank_cells(struct cell *row, unsigned n)
{
    for (unsigned c = 0; c < n; c++) {
        row[c].ch = BLANK;
        row[c].fg = COLOR_DEFAULT;
    }
}

static void newline(void)
{
    con.cx = 0;
    if (con.cy + 1 < con.rows) {
        con.cy++;
        return;
    }
    /* Scroll: old row 0 becomes the new bottom row, blanked. */
    unsigned old_top = con.top;
    blank_cells(text[old_top], text_len[old_top]);
    text_len[old_top] = 0;
    con.top = old_top + 1 == con.rows ? 0 : old_top + 1;
    con.dirty_lo = 0;
    con.dirty_hi = con.rows;
}

static uint8_t current_fg(void)
{
    uint8_t c = con.color;
    return (con.bold && c < 8) ? (uint8_t)(c + 8) : c;
}

static void put_glyph(uint8_t ch)
{
    if (con.cx >= con.cols)
        newline();
    unsigned tr = ring(con.cy);
    text[tr][con.cx].ch = ch;
    text[tr][con.cx].fg = current_fg();
    con.cx++;
    if (text_len[tr] < con.cx)
        text_len[tr] = (uint16_t)con.cx;
    mark_dirty(con.cy);
}

static void apply_sgr(void)
{
    unsigned n = con.csi_count + 1;
    if (n > CSI_MAX_PARAMS)
        n = CSI_MAX_PARAMS;
    for (unsigned i = 0; i < n; i++) {
        unsigned p = con.csi_params[i];
        if (p == 0) {
            con.color = COLOR_DEFAULT;
            con.bold = false;
        } else if (p == 1) {
            con.bold = true;
        } else if (p == 22) {
            con.bold = false;
        } else if (p >= 30 && p <= 37) {
            con.color = (uint8_t)(p - 30);
        } else if (p == 39) {
            con.color = COLOR_DEFAULT;
        } else if (p >= 90 && p <= 97) {
            con.color = (uint8_t)(p - 90 + 8);
        } else if (p == 38 || p == 48) {
            /* 38;5;n or 38;2;r;g;b (and 48 likewise): skip the arguments, colour unsupported. */
            if (i + 1 < n && con.csi_params[i + 1] == 5)
                i += 2;
            else if (i + 1 < n && con.csi_params[i + 1] == 2)
                i += 4;
        }
    }
}

static void csi_start(void)
{
    con.esc_state = ST_CSI;
    con.csi_count = 0;
    con.csi_ignore = false;
    for (unsigned i = 0; i < CSI_MAX_PARAMS; i++)
        con.csi_params[i] = 0;
}

/* Handle one byte inside an escape sequence; returns false if the byte ends the sequence
 * without being consumed (it must then be handled as ordinary output). */
static bool escape_byte(uint8_t b)
{
    if (b < 0x20 || b >= 0x80) {
        con.esc_state = ST_NORMAL; /* abandon the sequence */
        return false;
    }
    if (b == 0x7f)
        return true; /* DEL is ignored inside sequences */
    if (con.esc_state == ST_ESC) {
        if (b == '[')
            csi_start();
        else if (b >= 0x30)
            con.esc_state = ST_NORMAL; /* final byte of ESC x or ESC ( B ... */
        /* 0x20..0x2f: intermediate, keep going */
        return true;
    }
    /* ST_CSI */
    if (b >= '0' && b <= '9') {
        /* Parameters past CSI_MAX_PARAMS are dropped; values saturate around 10^5. */
        if (con.csi_count < CSI_MAX_PARAMS && con.csi_params[con.csi_count] < 10000)
            con.csi_params[con.csi_count] = con.csi_params[con.csi_count] * 10 + (unsigned)(b - '0');
    } else if (b == ';') {
        if (con.csi_count < CSI_MAX_PARAMS)
            con.csi_count++;
    } else if (b >= 0x3a && b <= 0x3f) {
        con.csi_ignore = true; /* ':' sub-parameters or a private marker such as '?' */
    } else if (b < 0x30) {
        con.csi_ignore = true; /* intermediate byte */
    } else {
        /* final byte 0x40..0x7e */
        if (b == 'm' && !con.csi_ignore)
            apply_sgr();
        con.esc_state = ST_NORMAL;
    }
    return true;
}

static void put_byte(uint8_t b)
{
    if (con.esc_state != ST_NORMAL && escape_byte(b))
        return;
    switch (b) {
    case '\n':
        newline();
        break;
    case '\r':
        con.cx = 0;
        break;
    case '\t': {
        unsigned next = (con.cx / 8 + 1) * 8;
        con.cx = next < con.cols ? next : con.cols;
        break;
    }
    case '\b':
        if (con.cx > 0)
            con.cx--;
        break;
    case 0x1b:
        con.esc_state = ST_ESC;
        break;
    default:
        put_glyph(b >= 0x20 && b < 0x7f ? b : FONT8X16_REPLACEMENT);
        break;
    }
}

bool fbcon_init(const struct boot_fb *fb)
{
    con.ready = false;
    if (!fb || fb->base == 0 || (fb->base & 3) != 0)
        return false;
    if (fb->format != BOOT_FB_RGBX && fb->format != BOOT_FB_BGRX)
        return false;
    if (fb->size == 0 || fb->width < FBCON_GLYPH_W || fb->height < FBCON_GLYPH_H)
        return false;
    if (fb->pitch < fb->width)
        return false;
    if (fb->size < (uint64_t)fb->pitch * fb->height * 4)
        return false;

    con.fb = (volatile uint32_t *)(uintptr_t)fb->base;
    con.pitch = fb->pitch;
    con.width = fb->width;
    con.height = fb->height;
    con.cols = fb->width / FBCON_GLYPH_W;
    if (con.cols > FBCON_MAX_COLS)
        con.cols = FBCON_MAX_COLS;
    con.rows = fb->height / FBCON_GLYPH_H;
    if (con.rows > FBCON_MAX_ROWS)
        con.rows = FBCON_MAX_ROWS;
    for (unsigned i = 0; i < 16; i++)
        con.px[i] = to_pixel(palette_rgb[i], fb->format);
    con.bg_px = con.px[0];

    con.cx = con.cy = con.top = 0;
    con.dirty_lo = con.dirty_hi = 0;
    con.color = COLOR_DEFAULT;
    con.bold = false;
    con.esc_state = ST_NORMAL;
    for (unsigned r = 0; r < con.rows; r++) {
        blank_cells(text[r], con.cols);
        blank_cells(shown[r], con.cols);
        text_len[r] = shown_len[r] = 0;
    }

    /* The firmware may have left anything on screen: blank all of it, once. */
    volatile uint32_t *line = con.fb;
    for (uint32_t y = 0; y < con.height; y++, line += con.pitch)
        for (uint32_t x = 0; x < con.width; x++)
            line[x] = con.bg_px;

    con.ready = true;
    return true;
}

void fbcon_write(const char *s, size_t n)
{
    if (!con.ready)
        return;
    for (size_t i = 0; i < n; i++)
        put_byte((uint8_t)s[i]);
    flush();
}

void fbcon_clear(void)
{
    if (!con.ready)
        return;
    for (unsigned r = 0; r < con.rows; r++) {
        blank_cells(text[r], text_len[r]);
        text_len[r] = 0;
    }
    con.cx = con.cy = 0;
    con.dirty_lo = 0;
    con.dirty_hi = con.rows;
    flush();
}

unsigned fbcon_cols(void)
{
    return con.ready ? con.cols : 0;
}

unsigned fbcon_rows(void)
{
    return con.ready ? con.rows : 0;
}
