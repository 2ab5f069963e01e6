/* fuzz_input: reads fixed-width values off a fuzzer's byte string; past the end every read is 0, so a
 * short input is still a complete (if dull) case. Shared by the harnesses that decode operations. */
#ifndef TEST_FUZZ_INPUT_H
#define TEST_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>

struct reader {
    const uint8_t *p;
    size_t n;
};

static inline uint8_t take8(struct reader *r)
{
    if (!r->n)
        return 0;
    r->n--;
    return *r->p++;
}

static inline uint16_t take16(struct reader *r)
{
    uint8_t lo = take8(r); /* two statements: the order of reads is then defined */
    return (uint16_t)(lo | take8(r) << 8);
}

static inline uint64_t take64(struct reader *r)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | take8(r);
    return v;
}

#endif
