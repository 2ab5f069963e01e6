/* fuzz_check: what the harnesses share to state an invariant and to hand a parser exactly the bytes
 * it may read. CHECK aborts with the condition and its place, which libFuzzer reports as a crash.
 * The copies are exactly as large as the bytes given (one byte for none, so the pointer is valid),
 * so AddressSanitizer flags any read past them; they abort when out of memory. */
#ifndef TEST_FUZZ_CHECK_H
#define TEST_FUZZ_CHECK_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                                            \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            fprintf(stderr, "invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);                     \
            abort();                                                                                           \
        }                                                                                                      \
    } while (0)

/* A heap copy of the n bytes at p; free() it. */
static inline uint8_t *fuzz_copy(const void *p, size_t n)
{
    uint8_t *c = malloc(n ? n : 1);
    CHECK(c != NULL);
    if (n)
        memcpy(c, p, n);
    return c;
}

/* For the harnesses whose input is one option byte (size >= 1) and then the bytes to parse: a copy of
 * those bytes, at most max of them (*len: how many). */
static inline uint8_t *fuzz_payload(const uint8_t *data, size_t size, uint32_t max, uint32_t *len)
{
    *len = size - 1 < max ? (uint32_t)(size - 1) : max;
    return fuzz_copy(data + 1, *len);
}

#endif
