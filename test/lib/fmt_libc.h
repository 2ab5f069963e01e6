/*
 * fmt_libc: kernel/fmt.c against the C library's snprintf on one conversion whose format string is
 * built at run time, the differential check that test/unit/test_fmt.c's random test and
 * test/fuzz/fuzz_fmt.c share: the same format, '*' arguments and value, formatted by both into
 * buffers of the same size. The caller compares the buffers and return values. Header only.
 */
#ifndef TEST_LIB_FMT_LIBC_H
#define TEST_LIB_FMT_LIBC_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "kernel/fmt.h"

struct fmt_pair {
    char *got, *want;  /* fmt's and the C library's output, at least size bytes each */
    size_t size;
    const char *f;     /* the format */
    int star[2];       /* the '*' arguments in order, nstar of them */
    int nstar;
    int r_got, r_want; /* what each returned */
};

/* fmt_vsnprintf without the format attribute, for formats built at run time (or ones the compiler
 * would rightly reject). */
static inline int fmt_raw(char *buf, size_t size, const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    int n = fmt_vsnprintf(buf, size, f, ap);
    va_end(ap);
    return n;
}

/* Formats p->f with the star arguments and then the value v cast to T, with fmt into p->got and with
 * snprintf into p->want. */
#define FMT_PAIR(p, T, v)                                                                                      \
    do {                                                                                                       \
        switch ((p)->nstar) {                                                                                  \
        case 0:                                                                                                \
            (p)->r_got = fmt_raw((p)->got, (p)->size, (p)->f, (T)(v));                                         \
            (p)->r_want = snprintf((p)->want, (p)->size, (p)->f, (T)(v));                                      \
            break;                                                                                             \
        case 1:                                                                                                \
            (p)->r_got = fmt_raw((p)->got, (p)->size, (p)->f, (p)->star[0], (T)(v));                           \
            (p)->r_want = snprintf((p)->want, (p)->size, (p)->f, (p)->star[0], (T)(v));                        \
            break;                                                                                             \
        default:                                                                                               \
            (p)->r_got = fmt_raw((p)->got, (p)->size, (p)->f, (p)->star[0], (p)->star[1], (T)(v));             \
            (p)->r_want = snprintf((p)->want, (p)->size, (p)->f, (p)->star[0], (p)->star[1], (T)(v));          \
            break;                                                                                             \
        }                                                                                                      \
    } while (0)

/* FMT_PAIR for an integer conversion, signed (d, i) or not (u, x, X, o), with length modifier len
 * ("", "hh", "h", "l", "ll", "z", "t", "j"): v passed as the type the modifier takes (hh and h: int or
 * unsigned, as the default promotions pass them; signed z: long, the ssize_t of this ABI). */
static inline void fmt_pair_integer(struct fmt_pair *p, bool is_signed, const char *len, uint64_t v)
{
    if (is_signed) {
        if (!strcmp(len, "l") || !strcmp(len, "z")) FMT_PAIR(p, long, v);
        else if (!strcmp(len, "ll")) FMT_PAIR(p, long long, v);
        else if (!strcmp(len, "t")) FMT_PAIR(p, ptrdiff_t, v);
        else if (!strcmp(len, "j")) FMT_PAIR(p, intmax_t, v);
        else FMT_PAIR(p, int, v);
    } else {
        if (!strcmp(len, "l")) FMT_PAIR(p, unsigned long, v);
        else if (!strcmp(len, "ll")) FMT_PAIR(p, unsigned long long, v);
        else if (!strcmp(len, "z")) FMT_PAIR(p, size_t, v);
        else if (!strcmp(len, "t")) FMT_PAIR(p, ptrdiff_t, v);
        else if (!strcmp(len, "j")) FMT_PAIR(p, uintmax_t, v);
        else FMT_PAIR(p, unsigned, v);
    }
}

#endif
