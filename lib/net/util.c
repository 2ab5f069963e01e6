/*
 * util: lib/net's pure helpers: IPv4 text to numbers and back, MAC text, masks and prefixes.
 */
#include "lib/net/net_priv.h"

/* A decimal number 0..max at *s, no sign, no leading zero unless it is "0"; advances *s. */
static bool parse_dec(const char **s, uint32_t max, uint32_t *out)
{
    const char *p = *s;
    if (*p < '0' || *p > '9')
        return false;
    if (*p == '0' && p[1] >= '0' && p[1] <= '9')
        return false;
    uint32_t v = 0;
    while (*p >= '0' && *p <= '9') {
        v = v * 10 + (uint32_t)(*p - '0');
        if (v > max)
            return false;
        p++;
    }
    *s = p;
    *out = v;
    return true;
}

static bool parse_addr(const char **s, uint32_t *ip)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint32_t octet;
        if (i && *(*s)++ != '.')
            return false;
        if (!parse_dec(s, 255, &octet))
            return false;
        v = v << 8 | octet;
    }
    *ip = v;
    return true;
}

status_t net_parse_ipv4(const char *s, uint32_t *ip)
{
    uint32_t v;
    if (!s || !ip || !parse_addr(&s, &v) || *s)
        return STATUS_BAD_DATA;
    *ip = v;
    return STATUS_OK;
}

status_t net_parse_ipv4_cidr(const char *s, uint32_t *ip, uint32_t *mask)
{
    uint32_t v, prefix = 24;
    if (!s || !ip || !mask || !parse_addr(&s, &v))
        return STATUS_BAD_DATA;
    if (*s == '/') {
        s++;
        if (!parse_dec(&s, 32, &prefix))
            return STATUS_BAD_DATA;
    }
    if (*s)
        return STATUS_BAD_DATA;
    *ip = v;
    *mask = net_prefix_mask(prefix);
    return STATUS_OK;
}

/* Appends to buf as snprintf would (n counts what would have been written). */
static void put(char *buf, size_t size, size_t *n, char c)
{
    if (*n + 1 < size)
        buf[*n] = c;
    (*n)++;
}

static void finish(char *buf, size_t size, size_t n)
{
    if (size)
        buf[n < size ? n : size - 1] = '\0';
}

int net_format_ipv4(char *buf, size_t size, uint32_t ip)
{
    size_t n = 0;
    for (int i = 3; i >= 0; i--) {
        unsigned o = (ip >> (8 * i)) & 0xFF;
        if (o >= 100)
            put(buf, size, &n, (char)('0' + o / 100));
        if (o >= 10)
            put(buf, size, &n, (char)('0' + o / 10 % 10));
        put(buf, size, &n, (char)('0' + o % 10));
        if (i)
            put(buf, size, &n, '.');
    }
    finish(buf, size, n);
    return (int)n;
}

int net_format_mac(char *buf, size_t size, const uint8_t mac[6])
{
    static const char hex[] = "0123456789abcdef";
    size_t n = 0;
    for (int i = 0; i < 6; i++) {
        if (i)
            put(buf, size, &n, ':');
        put(buf, size, &n, hex[mac[i] >> 4]);
        put(buf, size, &n, hex[mac[i] & 15]);
    }
    finish(buf, size, n);
    return (int)n;
}

int net_mask_prefix(uint32_t mask)
{
    uint32_t inv = ~mask;
    if (inv & (inv + 1)) /* the host part must be 0...01...1 */
        return -1;
    int n = 0;
    while (n < 32 && (mask & (0x80000000u >> n)))
        n++;
    return n;
}

uint32_t net_prefix_mask(unsigned prefix)
{
    if (prefix == 0)
        return 0;
    if (prefix >= 32)
        return 0xFFFFFFFFu;
    return ~(0xFFFFFFFFu >> prefix);
}
