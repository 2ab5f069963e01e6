/*
 * readonce: the one way to read memory the host (or any peer) may change while it is read: rings,
 * receive buffers, SynIC slots. Each byte is loaded exactly once with a volatile load, never
 * re-read and never merged with a later read, so what a checker checked is what its caller uses
 * (no double fetch). The loads are declared with alignment 1, so a field at any offset is read
 * without undefined behaviour; 8 bytes at a time where possible.
 *
 * Portable and pure (guest, hvsim and the hosted tests include it); any IRQL. Every checker of
 * host-shared bytes reads through these and nothing else.
 */
#ifndef KERNEL_READONCE_H
#define KERNEL_READONCE_H

#include <stdint.h>

typedef uint64_t __attribute__((aligned(1), may_alias)) readonce_u64_t;
typedef uint32_t __attribute__((aligned(1), may_alias)) readonce_u32_t;
typedef uint16_t __attribute__((aligned(1), may_alias)) readonce_u16_t;

static inline uint64_t read_once_u64(const void *p)
{
    return *(const volatile readonce_u64_t *)p;
}

static inline uint32_t read_once_u32(const void *p)
{
    return *(const volatile readonce_u32_t *)p;
}

static inline uint16_t read_once_u16(const void *p)
{
    return *(const volatile readonce_u16_t *)p;
}

static inline uint8_t read_once_u8(const void *p)
{
    return *(const volatile uint8_t *)p;
}

/* Copies n bytes from shared memory into private memory, each byte loaded once. */
static inline void read_once_copy(void *dst, const void *src, uint32_t n)
{
    const volatile uint8_t *s = src;
    uint8_t *d = dst;
    uint32_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v = *(const volatile readonce_u64_t *)(s + i);
        __builtin_memcpy(d + i, &v, 8); /* a store, also where memcpy is not a builtin (the kernel) */
    }
    for (; i < n; i++)
        d[i] = s[i];
}

#endif
