/*
 * Unit tests for kernel/fbcon.c (hosted, cmocka). fbcon draws into a malloc'd pixel buffer with
 * guard bytes on both sides and a pitch larger than the width; every test checks the guards and
 * the pitch padding afterwards.
 *
 *   gcc -std=gnu11 -DHOSTED -I. -fsanitize=address,undefined test/unit/test_fbcon.c \
 *       kernel/fbcon.c kernel/font8x16.c -lcmocka -o test_fbcon && ./test_fbcon
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "kernel/fbcon.h"
#include "kernel/font8x16.h"

#define GUARD 4096
#define GUARD_BYTE 0xa5
#define POISON 0xdeadbeefu

#define GREY 0xaaaaaa
#define RED 0xaa0000
#define BLUE 0x0000aa
#define BRIGHT_GREEN 0x55ff55
#define BRIGHT_BLUE 0x5555ff
#define WHITE 0xffffff
#define BLACK 0x000000

struct fbuf {
    uint8_t *alloc;
    uint32_t *px;
    size_t bytes;
    struct boot_fb fb;
};

static void fbuf_make(struct fbuf *f, uint32_t w, uint32_t h, uint32_t pitch, uint32_t format)
{
    f->bytes = (size_t)pitch * h * 4;
    f->alloc = malloc(f->bytes + 2 * GUARD);
    assert_non_null(f->alloc);
    memset(f->alloc, GUARD_BYTE, GUARD);
    memset(f->alloc + GUARD + f->bytes, GUARD_BYTE, GUARD);
    f->px = (uint32_t *)(f->alloc + GUARD);
    for (size_t i = 0; i < f->bytes / 4; i++)
        f->px[i] = POISON;
    f->fb.base = (uint64_t)(uintptr_t)f->px;
    f->fb.size = f->bytes;
    f->fb.width = w;
    f->fb.height = h;
    f->fb.pitch = pitch;
    f->fb.format = format;
}

static void check_guards(const struct fbuf *f)
{
    for (size_t i = 0; i < GUARD; i++) {
        assert_int_equal(f->alloc[i], GUARD_BYTE);
        assert_int_equal(f->alloc[GUARD + f->bytes + i], GUARD_BYTE);
    }
}

/* The pitch padding (x in [width, pitch)) is never written. */
static void check_padding(const struct fbuf *f)
{
    for (uint32_t y = 0; y < f->fb.height; y++)
        for (uint32_t x = f->fb.width; x < f->fb.pitch; x++)
            assert_int_equal(f->px[(size_t)y * f->fb.pitch + x], POISON);
}

static void fbuf_free(struct fbuf *f)
{
    check_guards(f);
    free(f->alloc);
    f->alloc = NULL;
}

/* A pixel as fbcon must store it, built from its bytes in memory order. */
static uint32_t pixel_of(uint32_t rgb, uint32_t format)
{
    uint8_t r = (uint8_t)(rgb >> 16), g = (uint8_t)(rgb >> 8), b = (uint8_t)rgb;
    uint8_t bytes[4];
    if (format == BOOT_FB_RGBX) {
        bytes[0] = r; bytes[1] = g; bytes[2] = b;
    } else {
        bytes[0] = b; bytes[1] = g; bytes[2] = r;
    }
    bytes[3] = 0;
    uint32_t v;
    memcpy(&v, bytes, 4);
    return v;
}

static uint32_t px_at(const struct fbuf *f, unsigned x, unsigned y)
{
    return f->px[(size_t)y * f->fb.pitch + x];
}

/* Does cell (col, row) show glyph g in colour rgb on black? */
static int cell_is(const struct fbuf *f, unsigned col, unsigned row, uint8_t g, uint32_t rgb)
{
    uint32_t fg = pixel_of(rgb, f->fb.format), bg = pixel_of(BLACK, f->fb.format);
    for (unsigned y = 0; y < 16; y++)
        for (unsigned x = 0; x < 8; x++) {
            uint32_t want = (font8x16[g][y] & (0x80 >> x)) ? fg : bg;
            if (px_at(f, col * 8 + x, row * 16 + y) != want)
                return 0;
        }
    return 1;
}

static void expect_cell(const struct fbuf *f, unsigned col, unsigned row, uint8_t g, uint32_t rgb)
{
    if (!cell_is(f, col, row, g, rgb))
        fail_msg("cell (%u,%u): expected glyph 0x%02x in #%06x", col, row, g, rgb);
}

static void expect_text(const struct fbuf *f, unsigned col, unsigned row, const char *s, uint32_t rgb)
{
    for (; *s; s++, col++)
        expect_cell(f, col, row, (uint8_t)*s, rgb);
}

static void expect_blank_row(const struct fbuf *f, unsigned row)
{
    uint32_t bg = pixel_of(BLACK, f->fb.format);
    for (unsigned y = row * 16; y < row * 16 + 16; y++)
        for (unsigned x = 0; x < fbcon_cols() * 8; x++)
            if (px_at(f, x, y) != bg)
                fail_msg("row %u not blank at pixel (%u,%u)", row, x, y);
}

static void put(const char *s)
{
    fbcon_write(s, strlen(s));
}

static void std_init(struct fbuf *f, uint32_t format)
{
    fbuf_make(f, 640, 480, 648, format);
    assert_true(fbcon_init(&f->fb));
    assert_int_equal(fbcon_cols(), 80);
    assert_int_equal(fbcon_rows(), 30);
}

static void std_done(struct fbuf *f)
{
    check_padding(f);
    fbuf_free(f);
}

/* ---------------------------------------------------------------------------------------------- */

static void test_font_sane(void **state)
{
    (void)state;
    static const uint8_t zero[16];
    assert_memory_equal(font8x16[' '], zero, 16);
    for (int c = 0x21; c < 0x7f; c++) {
        if (memcmp(font8x16[c], zero, 16) == 0)
            fail_msg("glyph 0x%02x is empty", c);
        if (memcmp(font8x16[c], font8x16[FONT8X16_REPLACEMENT], 16) == 0)
            fail_msg("glyph 0x%02x is the replacement glyph", c);
    }
    for (int c = 0; c < 0x20; c++)
        assert_memory_equal(font8x16[c], font8x16[FONT8X16_REPLACEMENT], 16);
    assert_memory_not_equal(font8x16[FONT8X16_REPLACEMENT], zero, 16);
}

static void test_init_blanks_visible_area_only(void **state)
{
    (void)state;
    struct fbuf f;
    std_init(&f, BOOT_FB_BGRX);
    for (unsigned y = 0; y < 480; y++)
        for (unsigned x = 0; x < 640; x++)
            assert_int_equal(px_at(&f, x, y), 0);
    std_done(&f);
}

static void check_bad(struct boot_fb fb, struct fbuf *f)
{
    assert_false(fbcon_init(&fb));
    assert_int_equal(fbcon_cols(), 0);
    assert_int_equal(fbcon_rows(), 0);
    put("hello\nworld\033[31m!");
    fbcon_clear();
    for (size_t i = 0; i < f->bytes / 4; i++)
        if (f->px[i] != POISON)
            fail_msg("pixel %zu written by a console that should be off", i);
}

static void test_rejects_bad_framebuffers(void **state)
{
    (void)state;
    struct fbuf f;
    fbuf_make(&f, 640, 480, 648, BOOT_FB_RGBX);
    assert_true(fbcon_init(&f.fb)); /* a working console must be switched off by a failed init */
    for (size_t i = 0; i < f.bytes / 4; i++)
        f.px[i] = POISON;

    assert_false(fbcon_init(NULL));
    struct boot_fb b;
    b = f.fb; b.format = BOOT_FB_NONE; check_bad(b, &f);
    b = f.fb; b.format = 3; check_bad(b, &f);
    b = f.fb; b.base = 0; check_bad(b, &f);
    b = f.fb; b.base += 2; b.size -= 4; check_bad(b, &f);      /* misaligned */
    b = f.fb; b.size = 0; check_bad(b, &f);
    b = f.fb; b.pitch = 0; check_bad(b, &f);
    b = f.fb; b.pitch = 639; check_bad(b, &f);                 /* pitch < width */
    b = f.fb; b.width = 7; b.pitch = 7; check_bad(b, &f);      /* narrower than a glyph */
    b = f.fb; b.height = 15; check_bad(b, &f);                 /* shorter than a glyph */
    b = f.fb; b.width = 0; b.height = 0; check_bad(b, &f);
    b = f.fb; b.size = (uint64_t)648 * 480 * 4 - 1; check_bad(b, &f); /* too small for pitch*height */
    b = f.fb; b.size = (uint64_t)640 * 480 * 4; check_bad(b, &f);     /* width*height is not enough */
    b = f.fb; b.pitch = 0x80000000u; b.width = 0x80000000u; check_bad(b, &f); /* absurd, no overflow */

    /* nothing was drawn by any of them */
    for (size_t i = 0; i < f.bytes / 4; i++)
        assert_int_equal(f.px[i], POISON);
    fbuf_free(&f);
}

static void test_glyph_pixels_format(void **state)
{
    (void)state;
    for (uint32_t fmt = BOOT_FB_RGBX; fmt <= BOOT_FB_BGRX; fmt++) {
        struct fbuf f;
        std_init(&f, fmt);
        put("A\033[31mZ\033[0m");
        expect_cell(&f, 0, 0, 'A', GREY);
        expect_cell(&f, 1, 0, 'Z', RED);
        expect_cell(&f, 2, 0, ' ', BLACK);

        /* byte order of a red foreground pixel, independently of pixel_of() */
        const uint8_t *bytes = NULL;
        for (unsigned y = 0; y < 16 && !bytes; y++)
            for (unsigned x = 0; x < 8 && !bytes; x++)
                if (font8x16['Z'][y] & (0x80 >> x))
                    bytes = (const uint8_t *)&f.px[(size_t)y * f.fb.pitch + 8 + x];
        assert_non_null(bytes);
        if (fmt == BOOT_FB_RGBX) {
            assert_int_equal(bytes[0], 0xaa);
            assert_int_equal(bytes[2], 0x00);
        } else {
            assert_int_equal(bytes[0], 0x00);
            assert_int_equal(bytes[2], 0xaa);
        }
        assert_int_equal(bytes[1], 0x00);
        assert_int_equal(bytes[3], 0x00);
        std_done(&f);
    }
}

static void test_newline_cr_wrap(void **state)
{
    (void)state;
    struct fbuf f;
    std_init(&f, BOOT_FB_RGBX);
    put("ab\ncd");
    expect_text(&f, 0, 0, "ab", GREY);
    expect_text(&f, 0, 1, "cd", GREY);

    put("\rX"); /* CR: column 0 of the same line */
    expect_text(&f, 0, 1, "Xd", GREY);

    /* 80 columns then one more: the 81st wraps to the next line */
    put("\n");
    char line[81];
    memset(line, 'w', 80);
    line[80] = 0;
    put(line);
    put("y");
    expect_cell(&f, 79, 2, 'w', GREY);
    expect_cell(&f, 0, 3, 'y', GREY);
    expect_cell(&f, 1, 3, ' ', BLACK);

    /* a line exactly filling the width followed by '\n' gives no blank line */
    put("\n");
    memset(line, 'e', 80);
    put(line);
    put("\nz");
    expect_cell(&f, 79, 4, 'e', GREY);
    expect_cell(&f, 0, 5, 'z', GREY);
    std_done(&f);
}

static void test_tabs(void **state)
{
    (void)state;
    struct fbuf f;
    std_init(&f, BOOT_FB_RGBX);
    put("a\tb\n\t\tc\n123456789\tq\n1234567\tr");
    expect_cell(&f, 0, 0, 'a', GREY);
    expect_cell(&f, 8, 0, 'b', GREY);
    for (unsigned c = 1; c < 8; c++)
        expect_cell(&f, c, 0, ' ', BLACK);
    expect_cell(&f, 16, 1, 'c', GREY);
    expect_cell(&f, 16, 2, 'q', GREY);
    expect_cell(&f, 8, 3, 'r', GREY);

    /* a tab does not erase what it moves over */
    put("\rABCDEFGHIJ\r\tk");
    expect_text(&f, 0, 3, "ABCDEFGHkJ", GREY);

    /* a tab past the last tab stop goes to the end of the line; the next character wraps */
    put("\n");
    char line[76];
    memset(line, 't', 75);
    line[75] = 0;
    put(line);
    put("\tw");
    expect_cell(&f, 74, 4, 't', GREY);
    expect_cell(&f, 75, 4, ' ', BLACK);
    expect_cell(&f, 0, 5, 'w', GREY);
    std_done(&f);
}

static void test_backspace(void **state)
{
    (void)state;
    struct fbuf f;
    std_init(&f, BOOT_FB_RGBX);
    put("ab\bc");
    expect_text(&f, 0, 0, "ac", GREY);
    put("\b\b\b\bX"); /* stops at column 0, never goes back a line */
    expect_text(&f, 0, 0, "Xc", GREY);
    put("\nq\b");
    expect_cell(&f, 0, 1, 'q', GREY); /* backspace alone erases nothing */
    std_done(&f);
}

static void test_replacement_glyph(void **state)
{
    (void)state;
    struct fbuf f;
    std_init(&f, BOOT_FB_BGRX);
    const char s[] = { 'a', 0x01, 0x7f, (char)0xc3, (char)0xa9, 0x00, 'b' };
    fbcon_write(s, sizeof s);
    expect_cell(&f, 0, 0, 'a', GREY);
    for (unsigned c = 1; c <= 5; c++)
        expect_cell(&f, c, 0, FONT8X16_REPLACEMENT, GREY);
    expect_cell(&f, 6, 0, 'b', GREY);
    std_done(&f);
}

static void fill_screen_numbered(unsigned rows)
{
    char buf[16];
    for (unsigned i = 0; i < rows; i++) {
        snprintf(buf, sizeof buf, "%sR%02u", i ? "\n" : "", i);
        put(buf);
    }
}

static void test_scroll(void **state)
{
    (void)state;
    struct fbuf f;
    std_init(&f, BOOT_FB_RGBX);
    fill_screen_numbered(30); /* rows 0..29, cursor at the end of row 29 */
    expect_text(&f, 0, 0, "R00", GREY);
    expect_text(&f, 0, 29, "R29", GREY);

    uint32_t *before = malloc(f.bytes);
    assert_non_null(before);
    memcpy(before, f.px, f.bytes);

    put("\n"); /* scroll */
    for (unsigned y = 0; y < 29 * 16; y++)
        for (unsigned x = 0; x < 640; x++)
            if (px_at(&f, x, y) != before[(size_t)(y + 16) * 648 + x])
                fail_msg("pixel (%u,%u) is not the old (%u,%u)", x, y, x, y + 16);
    expect_text(&f, 0, 0, "R01", GREY); /* R00 is gone */
    expect_blank_row(&f, 29);

    put("new");
    expect_text(&f, 0, 29, "new", GREY);
    expect_text(&f, 0, 28, "R29", GREY);

    /* many scrolls in one write */
    char big[64 * 8 + 1];
    big[0] = 0;
    for (unsigned i = 0; i < 64; i++)
        snprintf(big + strlen(big), sizeof big - strlen(big), "\nL%02u%s", i, i & 1 ? "xxxx" : "");
    put(big);
    for (unsigned r = 0; r < 30; r++) {
        char want[8];
        unsigned i = 64 - 30 + r;
        snprintf(want, sizeof want, "L%02u%s", i, i & 1 ? "xxxx" : "");
        expect_text(&f, 0, r, want, GREY);
        for (unsigned c = (unsigned)strlen(want); c < 80; c++)
            expect_cell(&f, c, r, ' ', BLACK);
    }

    /* wrapping at the bottom right scrolls too */
    char line[81];
    memset(line, 'm', 80);
    line[80] = 0;
    put("\n");
    put(line);
    put("!");
    expect_text(&f, 0, 28, "mmmm", GREY);
    expect_cell(&f, 79, 28, 'm', GREY);
    expect_cell(&f, 0, 29, '!', GREY);
    expect_cell(&f, 1, 29, ' ', BLACK);
    free(before);
    std_done(&f);
}

/* Scrolling redraws only the cells that changed: plant markers in cells whose content does not
 * change and check they survive (fbcon never reads the framebuffer, it trusts its shadow). */
static void test_scroll_redraws_only_changes(void **state)
{
    (void)state;
    struct fbuf f;
    std_init(&f, BOOT_FB_BGRX);
    for (unsigned i = 0; i < 30; i++)
        put(i ? "\nsame" : "same");
    f.px[(size_t)(5 * 16 + 3) * 648 + 0 * 8 + 2] = POISON;   /* in 's' of row 5 */
    f.px[(size_t)(7 * 16 + 3) * 648 + 40 * 8 + 2] = POISON;  /* a blank cell */
    f.px[(size_t)(2 * 16 + 3) * 648 + 2 * 8 + 2] = POISON;   /* 'm' of row 2, which changes */
    put("\nsame");
    assert_int_equal(f.px[(size_t)(5 * 16 + 3) * 648 + 2], POISON);
    assert_int_equal(f.px[(size_t)(7 * 16 + 3) * 648 + 40 * 8 + 2], POISON);
    put("\rsaXe"); /* row 29 changes: the 'm' in row 2 does not */
    assert_int_equal(f.px[(size_t)(2 * 16 + 3) * 648 + 2 * 8 + 2], POISON);
    expect_text(&f, 0, 29, "saXe", GREY);
    std_done(&f);
}

static void test_escapes_and_colours(void **state)
{
    (void)state;
    struct fbuf f;
    std_init(&f, BOOT_FB_RGBX);
    put("\033[31mR\033[0mN\033[92mG\033[1;34mB\033[mD\033[1mW\033[22;39mn");
    expect_cell(&f, 0, 0, 'R', RED);
    expect_cell(&f, 1, 0, 'N', GREY);
    expect_cell(&f, 2, 0, 'G', BRIGHT_GREEN);
    expect_cell(&f, 3, 0, 'B', BRIGHT_BLUE); /* bold 34 shows bright */
    expect_cell(&f, 4, 0, 'D', GREY);
    expect_cell(&f, 5, 0, 'W', WHITE);       /* bold default */
    expect_cell(&f, 6, 0, 'n', GREY);

    /* non-SGR sequences and other escapes are swallowed without effect */
    put("\n\033[2J\033[H\033[?25l\033[1;1H\033(B\033ca\033[38;5;31mb\033[48;2;1;2;3mc\033[0m");
    expect_cell(&f, 0, 1, 'a', GREY);
    expect_cell(&f, 1, 1, 'b', GREY); /* 38;5;31 is not "31" */
    expect_cell(&f, 2, 1, 'c', GREY);
    expect_cell(&f, 3, 1, ' ', BLACK);
    std_done(&f);
}

static void test_escape_split_and_abandoned(void **state)
{
    (void)state;
    struct fbuf f;
    std_init(&f, BOOT_FB_BGRX);
    fbcon_write("x\033", 2);
    fbcon_write("[3", 2);
    fbcon_write("4", 1);
    fbcon_write("mY", 2);
    expect_cell(&f, 0, 0, 'x', GREY);
    expect_cell(&f, 1, 0, 'Y', BLUE);

    /* a control character abandons the sequence and is acted on; no colour change */
    put("\033[0m\033[31\nQ");
    expect_cell(&f, 0, 1, 'Q', GREY);
    /* ESC inside a sequence starts a new one */
    put("\033[4\033[31mS");
    expect_cell(&f, 1, 1, 'S', RED);
    /* a byte >= 0x80 abandons it and is drawn */
    fbcon_write("\033[3\xffT", 5);
    expect_cell(&f, 2, 1, FONT8X16_REPLACEMENT, RED);
    expect_cell(&f, 3, 1, 'T', RED);
    /* long parameter lists and huge numbers are harmless */
    put("\033[0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;0;31mU");
    expect_cell(&f, 4, 1, 'U', GREY); /* params past 16 are dropped: the "31" is never seen */
    put("\033[31m\033[99999999999999999999mV\033[0m");
    expect_cell(&f, 5, 1, 'V', RED);  /* an unknown (saturated) code changes nothing */
    std_done(&f);
}

static void test_clear(void **state)
{
    (void)state;
    struct fbuf f;
    std_init(&f, BOOT_FB_RGBX);
    fill_screen_numbered(40);
    put("\033[32m");
    fbcon_clear();
    for (unsigned r = 0; r < 30; r++)
        expect_blank_row(&f, r);
    put("A");
    expect_cell(&f, 0, 0, 'A', 0x00aa00); /* colour kept, cursor at the top left */
    std_done(&f);
}

static void test_large_screen_uses_top_left(void **state)
{
    (void)state;
    struct fbuf f;
    fbuf_make(&f, 2000, 1300, 2008, BOOT_FB_BGRX);
    assert_true(fbcon_init(&f.fb));
    assert_int_equal(fbcon_cols(), FBCON_MAX_COLS);
    assert_int_equal(fbcon_rows(), FBCON_MAX_ROWS);
    /* init blanked everything; poison the parts outside the 1920x1200 grid and write a lot */
    for (unsigned y = 0; y < 1300; y++)
        for (unsigned x = 0; x < 2000; x++)
            if (x >= 1920 || y >= 1200)
                f.px[(size_t)y * 2008 + x] = POISON;
    char line[250];
    memset(line, 'k', 249);
    line[249] = 0;
    for (unsigned i = 0; i < 100; i++) {
        put(line);
        put("\t\tx\n");
    }
    /* the last line: 240 'k', then 9 'k' + two tabs + 'x', then a blank line */
    expect_cell(&f, 239, 72, 'k', GREY);
    expect_cell(&f, 8, 73, 'k', GREY);
    expect_cell(&f, 9, 73, ' ', BLACK);
    expect_cell(&f, 24, 73, 'x', GREY);
    expect_blank_row(&f, 74);
    for (unsigned y = 0; y < 1300; y++)
        for (unsigned x = 0; x < 2000; x++)
            if (x >= 1920 || y >= 1200)
                assert_int_equal(f.px[(size_t)y * 2008 + x], POISON);
    check_padding(&f);
    fbuf_free(&f);
}

static void test_tiny_screens(void **state)
{
    (void)state;
    static const uint32_t dims[][3] = { { 8, 16, 8 }, { 13, 20, 13 }, { 15, 31, 16 }, { 17, 47, 17 } };
    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        struct fbuf f;
        fbuf_make(&f, dims[i][0], dims[i][1], dims[i][2], BOOT_FB_RGBX);
        assert_true(fbcon_init(&f.fb));
        assert_int_equal(fbcon_cols(), dims[i][0] / 8);
        assert_int_equal(fbcon_rows(), dims[i][1] / 16);
        put("hello\tworld\n\b\b\r\033[31mxyz\n\n\nlast");
        expect_cell(&f, fbcon_cols() - 1, fbcon_rows() - 1, 't', RED);
        fbcon_clear();
        put("q");
        expect_cell(&f, 0, 0, 'q', RED);
        check_padding(&f);
        fbuf_free(&f);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_font_sane),
        cmocka_unit_test(test_init_blanks_visible_area_only),
        cmocka_unit_test(test_rejects_bad_framebuffers),
        cmocka_unit_test(test_glyph_pixels_format),
        cmocka_unit_test(test_newline_cr_wrap),
        cmocka_unit_test(test_tabs),
        cmocka_unit_test(test_backspace),
        cmocka_unit_test(test_replacement_glyph),
        cmocka_unit_test(test_scroll),
        cmocka_unit_test(test_scroll_redraws_only_changes),
        cmocka_unit_test(test_escapes_and_colours),
        cmocka_unit_test(test_escape_split_and_abandoned),
        cmocka_unit_test(test_clear),
        cmocka_unit_test(test_large_screen_uses_top_left),
        cmocka_unit_test(test_tiny_screens),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
