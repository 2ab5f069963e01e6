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

#include "test/fuzz/fuzz_input.h"
#include "test/lib/fmt_libc.h"

#define BUF 512
static char got[BUF], want[BUF];

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
    struct fmt_pair p = { .got = got, .want = want, .f = f };
    const char *len = "";
    if (conv != '%') {
        if (fl & 1) f[n++] = '-';
        if ((fl & 2) && number) f[n++] = '0';
        if ((fl & 4) && (conv == 'd' || conv == 'i')) f[n++] = '+';
        if ((fl & 8) && (conv == 'd' || conv == 'i')) f[n++] = ' ';
        if ((fl & 16) && strchr("oxX", conv)) f[n++] = '#';
        switch (wm % 3) {
        case 1: n += (size_t)snprintf(f + n, sizeof f - n, "%u", (unsigned)(wm >> 2)); break;
        case 2: f[n++] = '*'; p.star[p.nstar++] = (int)(int8_t)take8(r) / 2; break;
        default: break;
        }
        if (conv != 'c' && conv != 'p') {
            switch (pm % 4) {
            case 1: n += (size_t)snprintf(f + n, sizeof f - n, ".%u", (unsigned)(pm >> 2)); break;
            case 2: f[n++] = '.'; break;
            case 3: f[n++] = '.'; f[n++] = '*'; p.star[p.nstar++] = (int)(int8_t)take8(r) / 2; break;
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
    p.size = take8(r);
    p.size = p.size == 255 ? 0 : p.size;

    memset(got, 0x5a, sizeof got);
    memset(want, 0x5a, sizeof want);
    switch (conv) {
    case '%':
        p.r_got = fmt_raw(got, p.size, f);
        p.r_want = snprintf(want, p.size, f, 0); /* an unused argument keeps -Wformat-security quiet */
        break;
    case 'c': FMT_PAIR(&p, int, (unsigned char)v); break;
    case 's': FMT_PAIR(&p, const char *, s); break;
    case 'p': FMT_PAIR(&p, void *, (uintptr_t)(v | 1)); break;
    default: fmt_pair_integer(&p, conv == 'd' || conv == 'i', len, v); break;
    }
    if (p.r_got != p.r_want || memcmp(got, want, sizeof got) != 0) {
        size_t size = p.size;
        fprintf(stderr, "fuzz_fmt: mismatch for \"%s\" (stars %d %d, value %#llx, size %zu)\n  fmt:  %d \"%.*s\"\n"
                        "  libc: %d \"%.*s\"\n",
                f, p.nstar > 0 ? p.star[0] : 0, p.nstar > 1 ? p.star[1] : 0, (unsigned long long)v, size, p.r_got,
                (int)(size ? strnlen(got, size) : 0), got, p.r_want, (int)(size ? strnlen(want, size) : 0), want);
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
