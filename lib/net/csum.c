/*
 * csum: the Internet checksum (RFC 1071) over 8 bytes at a time with a 64-bit one's complement
 * accumulator (add + add-with-carry per word, the carries counted apart), general registers only (the guest has no SIMD
 * state). See net_priv.h for the partial-sum convention.
 */
#include "lib/net/net_priv.h"

/* s += w, counting the carry out in c (add + adc); the carries are folded back in at the end
 * (c <= len / 8: no overflow). */
#define ACC(s, c, w)                                                                                            \
    do {                                                                                                      \
        uint64_t w_ = (w);                                                                                    \
        (s) += w_;                                                                                            \
        (c) += (s) < w_;                                                                                      \
    } while (0)

uint64_t net_csum_partial(const void *data, size_t len, uint64_t sum)
{
    const uint8_t *p = data;
    uint64_t s = sum, c = 0;
    while (len >= 32) {
        ACC(s, c, net_ld64(p));
        ACC(s, c, net_ld64(p + 8));
        ACC(s, c, net_ld64(p + 16));
        ACC(s, c, net_ld64(p + 24));
        p += 32;
        len -= 32;
    }
    while (len >= 8) {
        ACC(s, c, net_ld64(p));
        p += 8;
        len -= 8;
    }
    if (len >= 4) {
        ACC(s, c, net_ld32(p));
        p += 4;
        len -= 4;
    }
    if (len >= 2) {
        ACC(s, c, net_ld16(p));
        p += 2;
        len -= 2;
    }
    if (len)
        ACC(s, c, *p); /* the high-order byte (network order) of a zero-padded word */
    return net_csum_add(s, c);
}

uint64_t net_csum_copy(void *dst, const void *src, size_t len, uint64_t sum)
{
    const uint8_t *p = src;
    uint8_t *d = dst;
    uint64_t s = sum, c = 0;
    while (len >= 32) {
        uint64_t a = net_ld64(p), b = net_ld64(p + 8), e = net_ld64(p + 16), f = net_ld64(p + 24);
        __builtin_memcpy(d, &a, 8);
        __builtin_memcpy(d + 8, &b, 8);
        __builtin_memcpy(d + 16, &e, 8);
        __builtin_memcpy(d + 24, &f, 8);
        ACC(s, c, a);
        ACC(s, c, b);
        ACC(s, c, e);
        ACC(s, c, f);
        p += 32;
        d += 32;
        len -= 32;
    }
    while (len >= 8) {
        uint64_t a = net_ld64(p);
        __builtin_memcpy(d, &a, 8);
        ACC(s, c, a);
        p += 8;
        d += 8;
        len -= 8;
    }
    if (len >= 4) {
        uint32_t a = net_ld32(p);
        net_st32(d, a);
        ACC(s, c, a);
        p += 4;
        d += 4;
        len -= 4;
    }
    if (len >= 2) {
        uint16_t a = net_ld16(p);
        net_st16(d, a);
        ACC(s, c, a);
        p += 2;
        d += 2;
        len -= 2;
    }
    if (len) {
        uint8_t a = *p;
        *d = a;
        ACC(s, c, a);
    }
    return net_csum_add(s, c);
}

uint16_t net_checksum(const void *data, size_t len)
{
    return (uint16_t)net_bswap16((uint16_t)~net_csum_fold(net_csum_partial(data, len, 0)));
}
