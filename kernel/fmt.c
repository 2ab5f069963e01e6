#include "kernel/fmt.h"

#include <stdint.h>

struct out {
    char *buf;
    size_t size;
    size_t len; /* characters produced so far, whether or not they fit */
};

static void put(struct out *o, char c)
{
    if (o->len + 1 < o->size)
        o->buf[o->len] = c;
    o->len++;
}

static void pad(struct out *o, char c, int n)
{
    while (n-- > 0)
        put(o, c);
}

enum { F_LEFT = 1, F_ZERO = 2, F_PLUS = 4, F_SPACE = 8, F_ALT = 16 };

static void put_number(struct out *o, uintmax_t v, int negative, unsigned base, int upper, int flags,
                       int width, int prec)
{
    char digits[sizeof(uintmax_t) * 3 + 2];
    const char *set = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    int n = 0;
    while (v) {
        digits[n++] = set[v % base];
        v /= base;
    }
    if (prec < 0 && n == 0)
        digits[n++] = '0';
    int zeros = prec > n ? prec - n : 0;
    if (flags & F_ALT && base == 8 && zeros == 0 && (n == 0 || digits[n - 1] != '0'))
        zeros = 1;
    const char *prefix = "";
    if (negative)
        prefix = "-";
    else if (flags & F_PLUS)
        prefix = "+";
    else if (flags & F_SPACE)
        prefix = " ";
    else if (flags & F_ALT && base == 16 && n && !(n == 1 && digits[0] == '0'))
        prefix = upper ? "0X" : "0x";
    int plen = 0;
    while (prefix[plen])
        plen++;
    int body = plen + zeros + n;
    if (flags & F_ZERO && !(flags & F_LEFT) && prec < 0 && width > body) {
        zeros += width - body;
        body = width;
    }
    if (!(flags & F_LEFT))
        pad(o, ' ', width - body);
    for (int i = 0; i < plen; i++)
        put(o, prefix[i]);
    pad(o, '0', zeros);
    while (n)
        put(o, digits[--n]);
    if (flags & F_LEFT)
        pad(o, ' ', width - body);
}

/* A width or precision written as digits at *p, advancing *p past them; capped at 100000 (the
 * output is bounded by the buffer anyway, and so no digit string overflows an int). */
static int parse_count(const char **p)
{
    int v = 0;
    for (; **p >= '0' && **p <= '9'; (*p)++)
        if (v < 100000)
            v = v * 10 + (**p - '0');
    return v;
}

int fmt_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct out o = { buf, size, 0 };
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put(&o, *p);
            continue;
        }
        const char *start = p++;
        int flags = 0;
        for (;; p++) {
            if (*p == '-') flags |= F_LEFT;
            else if (*p == '0') flags |= F_ZERO;
            else if (*p == '+') flags |= F_PLUS;
            else if (*p == ' ') flags |= F_SPACE;
            else if (*p == '#') flags |= F_ALT;
            else break;
        }
        int width = 0;
        if (*p == '*') {
            width = va_arg(ap, int);
            if (width < 0) {
                flags |= F_LEFT;
                width = width == INT32_MIN ? INT32_MAX : -width;
            }
            if (width > 100000) /* the same cap as a literal width: output is bounded anyway */
                width = 100000;
            p++;
        } else {
            width = parse_count(&p);
        }
        int prec = -1;
        if (*p == '.') {
            p++;
            prec = 0;
            if (*p == '*') {
                prec = va_arg(ap, int);
                if (prec < 0)
                    prec = -1;
                else if (prec > 100000)
                    prec = 100000;
                p++;
            } else {
                prec = parse_count(&p);
            }
        }
        enum { L_INT, L_CHAR, L_SHORT, L_LONG, L_LLONG, L_SIZE, L_PTRDIFF, L_MAX } len = L_INT;
        if (*p == 'h') {
            len = L_SHORT;
            if (*++p == 'h') { len = L_CHAR; p++; }
        } else if (*p == 'l') {
            len = L_LONG;
            if (*++p == 'l') { len = L_LLONG; p++; }
        } else if (*p == 'z') { len = L_SIZE; p++; }
        else if (*p == 't') { len = L_PTRDIFF; p++; }
        else if (*p == 'j') { len = L_MAX; p++; }

        switch (*p) {
        case 'd':
        case 'i': {
            intmax_t v;
            switch (len) {
            case L_CHAR: v = (signed char)va_arg(ap, int); break;
            case L_SHORT: v = (short)va_arg(ap, int); break;
            case L_LONG: v = va_arg(ap, long); break;
            case L_LLONG: v = va_arg(ap, long long); break;
            case L_SIZE: v = va_arg(ap, long); break; /* ssize_t */
            case L_PTRDIFF: v = va_arg(ap, ptrdiff_t); break;
            case L_MAX: v = va_arg(ap, intmax_t); break;
            default: v = va_arg(ap, int); break;
            }
            uintmax_t mag = v < 0 ? (uintmax_t)0 - (uintmax_t)v : (uintmax_t)v;
            put_number(&o, mag, v < 0, 10, 0, flags, width, prec);
            break;
        }
        case 'u':
        case 'x':
        case 'X':
        case 'o': {
            uintmax_t v;
            switch (len) {
            case L_CHAR: v = (unsigned char)va_arg(ap, unsigned); break;
            case L_SHORT: v = (unsigned short)va_arg(ap, unsigned); break;
            case L_LONG: v = va_arg(ap, unsigned long); break;
            case L_LLONG: v = va_arg(ap, unsigned long long); break;
            case L_SIZE: v = va_arg(ap, size_t); break;
            case L_PTRDIFF: v = (uintmax_t)va_arg(ap, ptrdiff_t); break;
            case L_MAX: v = va_arg(ap, uintmax_t); break;
            default: v = va_arg(ap, unsigned); break;
            }
            unsigned base = *p == 'o' ? 8 : *p == 'u' ? 10 : 16;
            put_number(&o, v, 0, base, *p == 'X', flags & ~(F_PLUS | F_SPACE), width, prec);
            break;
        }
        case 'p': {
            uintptr_t v = (uintptr_t)va_arg(ap, void *);
            put_number(&o, v, 0, 16, 0, (flags | F_ALT) & ~(F_PLUS | F_SPACE), width, prec);
            break;
        }
        case 'c': {
            char c = (char)va_arg(ap, int);
            if (!(flags & F_LEFT))
                pad(&o, ' ', width - 1);
            put(&o, c);
            if (flags & F_LEFT)
                pad(&o, ' ', width - 1);
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            int n = 0;
            while (s[n] && (prec < 0 || n < prec))
                n++;
            if (!(flags & F_LEFT))
                pad(&o, ' ', width - n);
            for (int i = 0; i < n; i++)
                put(&o, s[i]);
            if (flags & F_LEFT)
                pad(&o, ' ', width - n);
            break;
        }
        case '%':
            put(&o, '%');
            break;
        default:
            /* Unknown conversion (or a lone '%' at the end): copy it through so the mistake shows. */
            for (const char *q = start; q <= p && *q; q++)
                put(&o, *q);
            if (!*p)
                p--;
            break;
        }
    }
    if (size)
        buf[o.len < size ? o.len : size - 1] = '\0';
    return o.len > INT32_MAX ? INT32_MAX : (int)o.len;
}

int fmt_snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = fmt_vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}
