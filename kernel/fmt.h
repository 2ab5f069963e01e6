/*
 * fmt: a freestanding printf-style formatter.
 *
 * Conversions: %d %i %u %x %X %o %p %s %c %%, with flags `-` `0` `+` ` ` `#`, a width and a precision
 * (either may be `*`), and the length modifiers hh h l ll z t j. No floating point (the kernel runs
 * without SSE state). Output is always NUL-terminated when size > 0; the return value is the length
 * the full output would have had, as C's snprintf. Callable at any IRQL; no allocation, no locks.
 */
#ifndef KERNEL_FMT_H
#define KERNEL_FMT_H

#include <stdarg.h>
#include <stddef.h>

int fmt_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
int fmt_snprintf(char *buf, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
