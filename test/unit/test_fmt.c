/*
 * Unit tests for kernel/fmt.c: fmt_snprintf / fmt_vsnprintf.
 *
 * The reference is glibc's snprintf: for every conversion fmt supports, with C-defined flag and
 * length combinations, both must produce the same bytes (including what is left untouched past the
 * buffer) and the same return value. Behaviour where fmt deliberately differs (unknown conversions,
 * a lone '%', NULL pointers) is asserted directly.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "kernel/fmt.h"
#include "test/lib/fmt_libc.h"
#include "test/lib/test_util.h"

#define BUF 640
#define SENTINEL 0x5a

static char got[BUF], want[BUF];

static void fill_sentinel(void)
{
    memset(got, SENTINEL, sizeof got);
    memset(want, SENTINEL, sizeof want);
}

/* Both outputs (whole buffers, so bytes past `size` must be untouched by both) and return values match. */
static void check_same(const char *file, int line, const char *what, size_t size, int r_got, int r_want)
{
    if (r_got != r_want || memcmp(got, want, sizeof got) != 0) {
        print_message("%s:%d: %s (size %zu)\n  fmt:  ret %d \"%.*s\"\n  libc: ret %d \"%.*s\"\n", file, line,
                      what, size, r_got, (int)(size ? strnlen(got, size) : 0), got, r_want,
                      (int)(size ? strnlen(want, size) : 0), want);
    }
    assert_int_equal(r_got, r_want);
    assert_memory_equal(got, want, sizeof got);
}

/* Formats the same arguments with fmt_snprintf and snprintf into a buffer of `size` bytes. */
#define SAME_N(size, ...)                                                                                      \
    (fill_sentinel(),                                                                                          \
     check_same(__FILE__, __LINE__, #__VA_ARGS__, (size), fmt_snprintf(got, (size), __VA_ARGS__),              \
                snprintf(want, (size), __VA_ARGS__)))
#define SAME(...) SAME_N(sizeof got, __VA_ARGS__)

/* Plain text and %% are copied; the return value is the length. */
static void test_plain_text(void **state)
{
    (void)state;
    const char *empty = ""; /* through a variable: gcc flags a literal empty format */
    SAME(empty, 0);
    SAME("hello, world");
    SAME("100%% sure %%%%");
    SAME("tab\there\nnewline");
    fill_sentinel();
    assert_int_equal(fmt_snprintf(got, sizeof got, "abc"), 3);
    assert_string_equal(got, "abc");
}

/* %d %i %u %x %X %o of typical and extreme int values match libc. */
static void test_integers_basic(void **state)
{
    (void)state;
    static const int ints[] = { 0, 1, -1, 7, -7, 42, 255, -256, 1000000, INT_MAX, INT_MIN };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        int v = ints[i];
        SAME("%d|%i", v, v);
        SAME("%u|%x|%X|%o", (unsigned)v, (unsigned)v, (unsigned)v, (unsigned)v);
        SAME("[%5d] [%-5d] [%05d] [%+d] [% d] [%+5d] [% 05d]", v, v, v, v, v, v, v);
        /* '0' with a precision is ignored (C11 7.21.6.1); gcc warns about a literal, hence the variable. */
        const char *prec_fmt = "[%.3d] [%8.3d] [%-8.3d] [%08.3d] [%.0d] [%+.0d]";
        SAME(prec_fmt, v, v, v, v, v, v);
        SAME("[%#x] [%#X] [%#o] [%#10x] [%#010x] [%-#10o] [%#.5x] [%#.0o] [%#.0x]", (unsigned)v, (unsigned)v,
             (unsigned)v, (unsigned)v, (unsigned)v, (unsigned)v, (unsigned)v, (unsigned)v, (unsigned)v);
        SAME("[%.0u] [%.0x] [%.0o] [%5.0u] [%-5.0x]", (unsigned)v, (unsigned)v, (unsigned)v, (unsigned)v,
             (unsigned)v);
    }
}

/* The length modifiers hh h l ll z t j read and convert the right type. */
static void test_length_modifiers(void **state)
{
    (void)state;
    SAME("%hhd %hhd %hhd %hhu %hhx", 127, 128, 255, 256 + 3, 0x1ff);
    SAME("%hd %hd %hu %hx %ho", 32767, 32768, 65536 + 5, 0x1ffff, 0xffff);
    SAME("%ld %ld %lu %lx %lo", LONG_MAX, LONG_MIN, ULONG_MAX, ULONG_MAX, ULONG_MAX);
    SAME("%lld %lld %llu %llX %llo", LLONG_MAX, LLONG_MIN, ULLONG_MAX, ULLONG_MAX, 01234567ull);
    SAME("%zu %zx %zd %zd", SIZE_MAX, (size_t)0xdeadbeef, (ssize_t)-1, (ssize_t)SSIZE_MAX);
    SAME("%td %td %tx %tu", PTRDIFF_MAX, PTRDIFF_MIN, (ptrdiff_t)-1, (ptrdiff_t)12345);
    SAME("%jd %jd %ju %jx", INTMAX_MAX, INTMAX_MIN, UINTMAX_MAX, (uintmax_t)0xabcdef0123456789ull);
    SAME("%i %li %lli %hhi %hi", -5, -6L, -7LL, -8, -9);
    /* An argument of a wider type followed by more arguments: the va_list stays in step. */
    SAME("%hhd,%lld,%hd,%d", 1, 2LL, 3, 4);
}

/* %c and %s, with width, precision and the '-' flag. */
static void test_chars_and_strings(void **state)
{
    (void)state;
    SAME("%c%c%c", 'a', 'B', '!');
    SAME("[%5c] [%-5c] [%1c]", 'x', 'y', 'z');
    SAME("%s", "");
    SAME("[%s] [%10s] [%-10s] [%.2s] [%10.2s] [%-10.2s] [%.0s] [%.20s]", "abc", "abc", "abc", "abc", "abc",
         "abc", "abc", "abc");
    SAME("[%3s]", "longer than width");
    /* %c of NUL writes a NUL byte and counts it. */
    SAME("a%cb", 0);
}

/* A NULL %s prints "(null)", as glibc does. */
static void test_null_string(void **state)
{
    (void)state;
    const char *volatile null_str = NULL; /* volatile: keeps the compiler from flagging the NULL */
    SAME("[%s] [%10s] [%-8s]", null_str, null_str, null_str);
}

/* Width and precision given as '*' arguments; a negative width means '-', a negative precision none. */
static void test_star_width_precision(void **state)
{
    (void)state;
    for (int w = -12; w <= 12; w += 3) {
        for (int p = -3; p <= 8; p++) {
            SAME("[%*d] [%.*d] [%*.*d]", w, 42, p, -42, w, p, 12345);
            SAME("[%*s] [%.*s] [%*.*s] [%-*s]", w, "str", p, "string", w, p, "string", w, "x");
            SAME("[%*x] [%#*.*o] [%0*d] [%*c]", w, 0xbeefu, w, p, 8u, w, -7, w, 'q');
        }
    }
}

/* %p prints like %#lx for non-NULL pointers, with width and '-' honoured. */
static void test_pointer(void **state)
{
    (void)state;
    int local;
    void *ptrs[] = { &local, (void *)0x1, (void *)0x1234, (void *)UINTPTR_MAX, (void *)0xffff800000000000ull };
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++) {
        SAME("%p", ptrs[i]);
        SAME("[%20p] [%-20p] [%3p]", ptrs[i], ptrs[i], ptrs[i]);
        fill_sentinel();
        fmt_snprintf(got, sizeof got, "%p", ptrs[i]);
        snprintf(want, sizeof want, "%#lx", (unsigned long)(uintptr_t)ptrs[i]);
        assert_string_equal(got, want);
    }
}

/* %p of NULL is formatted like %#lx of 0, i.e. "0" (glibc prints "(nil)"; fmt does not special-case it). */
static void test_pointer_null(void **state)
{
    (void)state;
    fill_sentinel();
    assert_int_equal(fmt_snprintf(got, sizeof got, "[%p]", (void *)0), 3);
    assert_string_equal(got, "[0]");
    assert_int_equal(fmt_snprintf(got, sizeof got, "[%5p]", (void *)0), 7);
    assert_string_equal(got, "[    0]");
}

/* The output is cut at size-1 and NUL-terminated; nothing past `size` is written; the return value is
 * the untruncated length, for every size from 0 up. */
static void test_truncation_every_size(void **state)
{
    (void)state;
    const char *s = "truncate me";
    int full = snprintf(NULL, 0, "%s=%d|%#x|%-6s|%c", s, -1234, 0xabcu, "ab", 'z');
    assert_true(full > 10);
    for (size_t size = 0; size <= (size_t)full + 3; size++)
        SAME_N(size, "%s=%d|%#x|%-6s|%c", s, -1234, 0xabcu, "ab", 'z');
    for (size_t size = 0; size <= 40; size++)
        SAME_N(size, "[%20d][%-10s]", 7, "pad");
}

/* size 0 writes nothing at all (the buffer may be NULL) and returns the full length. */
static void test_size_zero(void **state)
{
    (void)state;
    assert_int_equal(fmt_snprintf(NULL, 0, "%d-%s", 12345, "abc"), 9);
    assert_int_equal(fmt_raw(NULL, 0, ""), 0);
    fill_sentinel();
    assert_int_equal(fmt_snprintf(got, 0, "xyz%d", 1), 4);
    assert_int_equal((unsigned char)got[0], SENTINEL);
    /* size 1: only the terminator fits. */
    assert_int_equal(fmt_snprintf(got, 1, "xyz"), 3);
    assert_int_equal(got[0], '\0');
    assert_int_equal((unsigned char)got[1], SENTINEL);
}

/* Output longer than the buffer: the count keeps going past what fits. */
static void test_long_output_count(void **state)
{
    (void)state;
    char small[8];
    int n = fmt_snprintf(small, sizeof small, "%300d|%-300s|", 1, "x");
    assert_int_equal(n, 602);
    assert_string_equal(small, "       ");
    SAME("%300d|%-300s|", 1, "x");
}

/* An unknown conversion is copied through verbatim (flags, width, precision, length included) and
 * consumes no argument. */
static void test_unknown_conversion(void **state)
{
    (void)state;
    fill_sentinel();
    assert_int_equal(fmt_raw(got, sizeof got, "%y"), 2);
    assert_string_equal(got, "%y");
    assert_int_equal(fmt_raw(got, sizeof got, "a%-5.2yb"), 8);
    assert_string_equal(got, "a%-5.2yb");
    assert_int_equal(fmt_raw(got, sizeof got, "[%lly]"), 6);
    assert_string_equal(got, "[%lly]");
    /* The argument meant for the unknown conversion is still there for the next one. */
    assert_int_equal(fmt_raw(got, sizeof got, "%q%d", 5), 3);
    assert_string_equal(got, "%q5");
    assert_int_equal(fmt_raw(got, sizeof got, "%w %s %#k", "s"), 8);
    assert_string_equal(got, "%w s %#k");
    /* Truncated the same way as any other output. */
    assert_int_equal(fmt_raw(got, 3, "%zy"), 3);
    assert_string_equal(got, "%z");
}

/* A '%' at the very end (optionally after flags, width, precision or a length) is copied through. */
static void test_lone_percent_at_end(void **state)
{
    (void)state;
    static const struct {
        const char *f, *out;
    } cases[] = {
        { "%", "%" },         { "abc%", "abc%" },     { "abc%-", "abc%-" }, { "x%05", "x%05" },
        { "x%5.", "x%5." },   { "x%.3", "x%.3" },     { "x%l", "x%l" },     { "x%ll", "x%ll" },
        { "x%hh", "x%hh" },   { "x%h", "x%h" },       { "x%z", "x%z" },     { "x%#+ -0", "x%#+ -0" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fill_sentinel();
        int n = fmt_raw(got, sizeof got, cases[i].f);
        assert_string_equal(got, cases[i].out);
        assert_int_equal(n, (int)strlen(cases[i].out));
        /* Nothing past the terminator was touched. */
        assert_int_equal((unsigned char)got[strlen(cases[i].out) + 1], SENTINEL);
    }
}

static int via_v(char *buf, size_t size, const char *f, ...) __attribute__((format(printf, 3, 4)));
static int via_v(char *buf, size_t size, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = fmt_vsnprintf(buf, size, f, ap);
    va_end(ap);
    return n;
}

/* fmt_vsnprintf consumes a caller's va_list the same way. */
static void test_vsnprintf(void **state)
{
    (void)state;
    fill_sentinel();
    int n = via_v(got, sizeof got, "%s:%d:%llx:%c:%zu", "file", 12, 0xffffffffffull, 'c', (size_t)99);
    int m = snprintf(want, sizeof want, "%s:%d:%llx:%c:%zu", "file", 12, 0xffffffffffull, 'c', (size_t)99);
    assert_int_equal(n, m);
    assert_string_equal(got, want);
    n = via_v(got, 5, "%d%d%d", 111, 222, 333);
    assert_int_equal(n, 9);
    assert_string_equal(got, "1112");
}

/*
 * Randomized comparison: random conversions with random C-defined flags, widths, precisions (literal
 * or '*'), length modifiers and values, each formatted into random buffer sizes.
 */
enum kind { K_SIGNED, K_UNSIGNED, K_CHAR, K_STRING, K_POINTER };

static uint64_t random_value(struct rng *r)
{
    static const uint64_t special[] = { 0, 1, 2, 7, 8, 9, 10, 15, 16, 100, 127, 128, 255, 256, 32767, 32768,
                                        65535, 65536, 0x7fffffff, 0x80000000, 0xffffffff, 0x100000000ull,
                                        INT64_MAX, (uint64_t)INT64_MIN, UINT64_MAX, UINT64_MAX - 1 };
    switch (rng_below(r, 4)) {
    case 0: return special[rng_below(r, sizeof special / sizeof special[0])];
    case 1: return 0 - special[rng_below(r, sizeof special / sizeof special[0])];
    case 2: return rng_next(r) >> rng_below(r, 64);
    default: return rng_next(r);
    }
}

static void test_random_against_libc(void **state)
{
    (void)state;
    static const char *const strings[] = { "", "a", "hello", "with space", "0123456789abcdefghij", "%d%s" };
    static const char *const lens[] = { "", "hh", "h", "l", "ll", "z", "t", "j" };
    struct rng r;
    rng_seed(&r, 0xf00dfacecafe1234ull);
    for (int iter = 0; iter < 30000; iter++) {
        enum kind k = (enum kind)rng_below(&r, 5);
        char conv;
        const char *flagset;
        switch (k) {
        case K_SIGNED: conv = "di"[rng_below(&r, 2)]; flagset = "-0+ "; break;
        case K_UNSIGNED: conv = "uxXo"[rng_below(&r, 4)]; flagset = conv == 'u' ? "-0" : "-0#"; break;
        case K_CHAR: conv = 'c'; flagset = "-"; break;
        case K_STRING: conv = 's'; flagset = "-"; break;
        default: conv = 'p'; flagset = "-"; break;
        }
        char f[64];
        size_t fl = 0;
        f[fl++] = '<';
        f[fl++] = '%';
        for (const char *q = flagset; *q; q++)
            if (rng_below(&r, 3) == 0)
                f[fl++] = *q;
        struct fmt_pair p = { .got = got, .want = want, .f = f };
        unsigned wmode = (unsigned)rng_below(&r, 3); /* none, literal, '*' */
        if (wmode == 1) {
            fl += (size_t)snprintf(f + fl, sizeof f - fl, "%u", (unsigned)rng_below(&r, 30));
        } else if (wmode == 2) {
            f[fl++] = '*';
            p.star[p.nstar++] = (int)rng_below(&r, 61) - 30;
        }
        bool precision_ok = k != K_CHAR && k != K_POINTER;
        if (precision_ok && rng_below(&r, 2)) {
            f[fl++] = '.';
            if (rng_below(&r, 2)) {
                /* An empty precision ("%.d") means 0. */
                if (rng_below(&r, 4))
                    fl += (size_t)snprintf(f + fl, sizeof f - fl, "%u", (unsigned)rng_below(&r, 25));
            } else {
                f[fl++] = '*';
                p.star[p.nstar++] = (int)rng_below(&r, 30) - 5;
            }
        }
        const char *len = "";
        if (k == K_SIGNED || k == K_UNSIGNED)
            len = lens[rng_below(&r, sizeof lens / sizeof lens[0])];
        fl += (size_t)snprintf(f + fl, sizeof f - fl, "%s%c>", len, conv);
        f[fl] = '\0';

        uint64_t v = random_value(&r);
        p.size = sizeof got;
        for (int pass = 0; pass < 2; pass++) {
            p.r_got = p.r_want = 0;
            fill_sentinel();
            if (k == K_CHAR)
                FMT_PAIR(&p, int, (unsigned char)v);
            else if (k == K_STRING)
                FMT_PAIR(&p, const char *, strings[v % (sizeof strings / sizeof strings[0])]);
            else if (k == K_POINTER)
                FMT_PAIR(&p, void *, (uintptr_t)(v | 1)); /* non-NULL: glibc prints NULL as "(nil)" */
            else
                fmt_pair_integer(&p, k == K_SIGNED, len, v);
            char what[128];
            snprintf(what, sizeof what, "random #%d: \"%s\" stars %d,%d value %#llx", iter, f,
                     p.nstar > 0 ? p.star[0] : 0, p.nstar > 1 ? p.star[1] : 0, (unsigned long long)v);
            check_same(__FILE__, __LINE__, what, p.size, p.r_got, p.r_want);
            /* Second pass: the same call into a random buffer size around the output length. */
            p.size = (size_t)rng_below(&r, (uint64_t)p.r_want + 3);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_text),
        cmocka_unit_test(test_integers_basic),
        cmocka_unit_test(test_length_modifiers),
        cmocka_unit_test(test_chars_and_strings),
        cmocka_unit_test(test_null_string),
        cmocka_unit_test(test_star_width_precision),
        cmocka_unit_test(test_pointer),
        cmocka_unit_test(test_pointer_null),
        cmocka_unit_test(test_truncation_every_size),
        cmocka_unit_test(test_size_zero),
        cmocka_unit_test(test_long_output_count),
        cmocka_unit_test(test_unknown_conversion),
        cmocka_unit_test(test_lone_percent_at_end),
        cmocka_unit_test(test_vsnprintf),
        cmocka_unit_test(test_random_against_libc),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
