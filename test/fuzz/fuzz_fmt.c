/*
 * libFuzzer harness for kernel/fmt.c: differential against the C library's snprintf.
 *
 * The input is read as a sequence of conversion descriptions (flags, width, precision, each literal or
 * '*', length modifier, conversion, argument, buffer size). Each is turned into a format string with
 * some literal text around it and formatted by fmt_snprintf and by snprintf; the bytes written (and
 * those left alone past the buffer) and the return values must be identical. Only combinations whose
 * result C defines are generated ('#' only with o/x/X, '0' only with numbers, no precision with %c/%p,
 * no length modifier with %c/%s/%p, %p never NULL since glibc prints "(nil)").
 *
 * Seeds: test/fuzz/corpus/fmt (any bytes work).
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "kernel/fmt.h"
#include "test/fuzz/fuzz_input.h"

/* fmt without the format attribute: the format strings here are built at run time. */
static int fmt_call(char *buf, size_t size, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = fmt_vsnprintf(buf, size, f, ap);
    va_end(ap);
    return n;
}

#define BUF 512
static char got[BUF], want[BUF];

#define BOTH(T, v)                                                                                             \
    do {                                                                                                       \
        switch (nstar) {                                                                                       \
        case 0:                                                                                                \
            rg = fmt_call(got, size, f, (T)(v));                                                               \
            rw = snprintf(want, size, f, (T)(v));                                                              \
            break;                                                                                             \
        case 1:                                                                                                \
            rg = fmt_call(got, size, f, star[0], (T)(v));                                                      \
            rw = snprintf(want, size, f, star[0], (T)(v));                                                     \
            break;                                                                                             \
        default:                                                                                               \
            rg = fmt_call(got, size, f, star[0], star[1], (T)(v));                                             \
            rw = snprintf(want, size, f, star[0], star[1], (T)(v));                                            \
            break;                                                                                             \
        }                                                                                                      \
    } while (0)

static void one(struct reader *r)
{
    static const char convs[] = "diuxXocsp%";
    static const char *const lens[] = { "", "hh", "h", "l", "ll", "z", "t", "j" };
    char conv = convs[take8(r) % (sizeof convs - 1)];
    uint8_t fl = take8(r), wm = take8(r), pm = take8(r), lm = take8(r);
    bool number = strchr("diuxXo", conv) != NULL;
    char f[96];
    size_t n = 0;
    static const char *const lit[] = { "", "x", "<", "abc ", "%% " };
    n += (size_t)snprintf(f + n, sizeof f - n, "%s%%", lit[(fl >> 5) % 5]);
    int star[2], nstar = 0;
    const char *len = "";
    if (conv != '%') {
        if (fl & 1) f[n++] = '-';
        if ((fl & 2) && number) f[n++] = '0';
        if ((fl & 4) && (conv == 'd' || conv == 'i')) f[n++] = '+';
        if ((fl & 8) && (conv == 'd' || conv == 'i')) f[n++] = ' ';
        if ((fl & 16) && strchr("oxX", conv)) f[n++] = '#';
        switch (wm % 3) {
        case 1: n += (size_t)snprintf(f + n, sizeof f - n, "%u", (unsigned)(wm >> 2)); break;
        case 2: f[n++] = '*'; star[nstar++] = (int)(int8_t)take8(r) / 2; break;
        default: break;
        }
        if (conv != 'c' && conv != 'p') {
            switch (pm % 4) {
            case 1: n += (size_t)snprintf(f + n, sizeof f - n, ".%u", (unsigned)(pm >> 2)); break;
            case 2: f[n++] = '.'; break;
            case 3: f[n++] = '.'; f[n++] = '*'; star[nstar++] = (int)(int8_t)take8(r) / 2; break;
            default: break;
            }
        }
        if (number)
            len = lens[lm % 8];
    }
    n += (size_t)snprintf(f + n, sizeof f - n, "%s%c%s", len, conv, lit[(fl >> 7) + 1]);
    f[n] = '\0';

    uint64_t v = take64(r);
    char s[48];
    size_t sl = take8(r) % sizeof s;
    for (size_t i = 0; i < sl; i++) {
        s[i] = (char)take8(r);
        if (!s[i])
            s[i] = 'z';
    }
    s[sl] = '\0';
    size_t size = take8(r);
    size = size == 255 ? 0 : size;

    memset(got, 0x5a, sizeof got);
    memset(want, 0x5a, sizeof want);
    int rg = 0, rw = 0;
    switch (conv) {
    case '%':
        rg = fmt_call(got, size, f);
        rw = snprintf(want, size, f, 0); /* an unused argument keeps -Wformat-security quiet */
        break;
    case 'c': BOTH(int, (unsigned char)v); break;
    case 's': BOTH(const char *, s); break;
    case 'p': BOTH(void *, (uintptr_t)(v | 1)); break;
    case 'd':
    case 'i':
        if (!strcmp(len, "l") || !strcmp(len, "z")) BOTH(long, v);
        else if (!strcmp(len, "ll")) BOTH(long long, v);
        else if (!strcmp(len, "t")) BOTH(ptrdiff_t, v);
        else if (!strcmp(len, "j")) BOTH(intmax_t, v);
        else BOTH(int, v);
        break;
    default:
        if (!strcmp(len, "l")) BOTH(unsigned long, v);
        else if (!strcmp(len, "ll")) BOTH(unsigned long long, v);
        else if (!strcmp(len, "z")) BOTH(size_t, v);
        else if (!strcmp(len, "t")) BOTH(ptrdiff_t, v);
        else if (!strcmp(len, "j")) BOTH(uintmax_t, v);
        else BOTH(unsigned, v);
        break;
    }
    if (rg != rw || memcmp(got, want, sizeof got) != 0) {
        fprintf(stderr, "fuzz_fmt: mismatch for \"%s\" (stars %d %d, value %#llx, size %zu)\n  fmt:  %d \"%.*s\"\n"
                        "  libc: %d \"%.*s\"\n",
                f, nstar > 0 ? star[0] : 0, nstar > 1 ? star[1] : 0, (unsigned long long)v, size, rg,
                (int)(size ? strnlen(got, size) : 0), got, rw, (int)(size ? strnlen(want, size) : 0), want);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reader r = { data, size };
    for (int i = 0; i < 64 && r.n; i++)
        one(&r);
    return 0;
}
