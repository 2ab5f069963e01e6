/*
 * Unit tests for kernel/memlog.c: the byte ring of the in-memory log.
 *
 * The reference is the whole stream kept by the test: the ring must return exactly its newest `size`
 * bytes, addressed by absolute stream position.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "kernel/memlog.h"
#include "test/lib/test_util.h"

/* The ring storage sits between guard bytes, to catch writes outside it. */
#define GUARD 32
#define GUARD_BYTE 0xee

struct ring {
    struct memlog m;
    char *raw;
    size_t size;
};

static void ring_init(struct ring *r, size_t size)
{
    r->size = size;
    r->raw = malloc(size + 2 * GUARD);
    assert_non_null(r->raw);
    memset(r->raw, GUARD_BYTE, size + 2 * GUARD);
    memlog_init(&r->m, r->raw + GUARD, size);
}

static void ring_fini(struct ring *r)
{
    for (size_t i = 0; i < GUARD; i++) {
        assert_int_equal((unsigned char)r->raw[i], GUARD_BYTE);
        assert_int_equal((unsigned char)r->raw[GUARD + r->size + i], GUARD_BYTE);
    }
    free(r->raw);
}

static void write_str(struct ring *r, const char *s)
{
    memlog_write(&r->m, s, strlen(s));
}

/* A fresh ring holds nothing: the oldest position is 0 and reads return 0 bytes. */
static void test_empty(void **state)
{
    (void)state;
    struct ring r;
    ring_init(&r, 16);
    assert_int_equal(memlog_oldest(&r.m), 0);
    char out[8];
    uint64_t pos = 0;
    assert_int_equal(memlog_read(&r.m, &pos, out, sizeof out), 0);
    assert_int_equal(pos, 0);
    ring_fini(&r);
}

/* Without wrapping, bytes come back in order from their absolute positions; pos advances. */
static void test_simple_read(void **state)
{
    (void)state;
    struct ring r;
    ring_init(&r, 64);
    write_str(&r, "hello ");
    write_str(&r, "world");
    assert_int_equal(r.m.head, 11);
    assert_int_equal(memlog_oldest(&r.m), 0);
    char out[32] = { 0 };
    uint64_t pos = 0;
    assert_int_equal(memlog_read(&r.m, &pos, out, sizeof out), 11);
    assert_memory_equal(out, "hello world", 11);
    assert_int_equal(pos, 11);
    /* At the head: nothing more until something is written. */
    assert_int_equal(memlog_read(&r.m, &pos, out, sizeof out), 0);
    write_str(&r, "!");
    assert_int_equal(memlog_read(&r.m, &pos, out, sizeof out), 1);
    assert_int_equal(out[0], '!');
    /* Reading from the middle, in small pieces. */
    pos = 6;
    assert_int_equal(memlog_read(&r.m, &pos, out, 3), 3);
    assert_memory_equal(out, "wor", 3);
    assert_int_equal(memlog_read(&r.m, &pos, out, 3), 3);
    assert_memory_equal(out, "ld!", 3);
    assert_int_equal(pos, 12);
    /* A read of 0 bytes copies nothing and leaves pos alone. */
    pos = 2;
    assert_int_equal(memlog_read(&r.m, &pos, out, 0), 0);
    assert_int_equal(pos, 2);
    ring_fini(&r);
}

/* After the ring wraps, the oldest position moves up and reads of older positions start there. */
static void test_wrap_clamps_to_oldest(void **state)
{
    (void)state;
    struct ring r;
    ring_init(&r, 8);
    write_str(&r, "abcdef"); /* 0..5 */
    write_str(&r, "ghijk");  /* 6..10: a, b, c are gone */
    assert_int_equal(r.m.head, 11);
    assert_int_equal(memlog_oldest(&r.m), 3);
    char out[16];
    uint64_t pos = 0;
    assert_int_equal(memlog_read(&r.m, &pos, out, sizeof out), 8);
    assert_memory_equal(out, "defghijk", 8);
    assert_int_equal(pos, 11);
    /* A position inside the held window is read as is. */
    pos = 5;
    assert_int_equal(memlog_read(&r.m, &pos, out, 2), 2);
    assert_memory_equal(out, "fg", 2);
    /* A stale reader is moved up to the oldest byte even for a short read. */
    pos = 1;
    assert_int_equal(memlog_read(&r.m, &pos, out, 1), 1);
    assert_int_equal(out[0], 'd');
    assert_int_equal(pos, 4);
    ring_fini(&r);
}

/* Filling the ring exactly keeps everything; one more byte drops the first. */
static void test_exact_fill(void **state)
{
    (void)state;
    struct ring r;
    ring_init(&r, 8);
    write_str(&r, "01234567");
    assert_int_equal(memlog_oldest(&r.m), 0);
    char out[8];
    uint64_t pos = 0;
    assert_int_equal(memlog_read(&r.m, &pos, out, 8), 8);
    assert_memory_equal(out, "01234567", 8);
    write_str(&r, "8");
    assert_int_equal(memlog_oldest(&r.m), 1);
    pos = 0;
    assert_int_equal(memlog_read(&r.m, &pos, out, 8), 8);
    assert_memory_equal(out, "12345678", 8);
    ring_fini(&r);
}

/* A single write larger than the ring keeps only its tail, and head counts every byte. */
static void test_large_write(void **state)
{
    (void)state;
    struct ring r;
    ring_init(&r, 16);
    write_str(&r, "xy");
    char big[100];
    for (int i = 0; i < 100; i++)
        big[i] = (char)('A' + i % 26);
    memlog_write(&r.m, big, sizeof big);
    assert_int_equal(r.m.head, 102);
    assert_int_equal(memlog_oldest(&r.m), 86);
    char out[32];
    uint64_t pos = 0;
    assert_int_equal(memlog_read(&r.m, &pos, out, sizeof out), 16);
    assert_memory_equal(out, big + 84, 16);
    /* Exactly the ring size from a non-zero head. */
    memlog_write(&r.m, big, 16);
    pos = 0;
    assert_int_equal(memlog_read(&r.m, &pos, out, sizeof out), 16);
    assert_memory_equal(out, big, 16);
    assert_int_equal(pos, 118);
    ring_fini(&r);
}

/* Writes of zero bytes change nothing. */
static void test_zero_write(void **state)
{
    (void)state;
    struct ring r;
    ring_init(&r, 4);
    memlog_write(&r.m, "", 0);
    assert_int_equal(r.m.head, 0);
    write_str(&r, "abcdef");
    memlog_write(&r.m, NULL, 0);
    assert_int_equal(r.m.head, 6);
    ring_fini(&r);
}

/* A reader at a position past the head gets nothing and keeps its position. */
static void test_read_past_head(void **state)
{
    (void)state;
    struct ring r;
    ring_init(&r, 8);
    write_str(&r, "abc");
    char out[4];
    uint64_t pos = 10;
    assert_int_equal(memlog_read(&r.m, &pos, out, sizeof out), 0);
    assert_int_equal(pos, 10);
    ring_fini(&r);
}

/* Randomized: writes of random lengths (up to several ring sizes) and reads from random positions,
 * against the complete stream; fixed seed, several ring sizes. */
static void test_random_against_stream(void **state)
{
    (void)state;
    struct rng g;
    rng_seed(&g, 0x5eed0000beef1111ull);
    static const size_t sizes[] = { 1, 2, 16, 64, 4096 };
    enum { STREAM = 1 << 20 };
    char *stream = malloc(STREAM);
    char *out = malloc(3 * 4096);
    assert_non_null(stream);
    assert_non_null(out);
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        struct ring r;
        size_t size = sizes[si];
        ring_init(&r, size);
        uint64_t head = 0;
        while (head < STREAM - 3 * size - 1) {
            size_t n = (size_t)rng_below(&g, 3 * size + 1);
            for (size_t i = 0; i < n; i++)
                stream[head + i] = (char)rng_next(&g);
            memlog_write(&r.m, stream + head, n);
            head += n;
            assert_int_equal(r.m.head, head);
            uint64_t oldest = head > size ? head - size : 0;
            assert_int_equal(memlog_oldest(&r.m), oldest);
            /* Read from a random position (possibly long gone) a random amount. */
            uint64_t pos = rng_below(&g, head + 2);
            size_t want_n = (size_t)rng_below(&g, 2 * size + 1);
            uint64_t start = pos < oldest ? oldest : pos;
            size_t avail = start < head ? (size_t)(head - start) : 0;
            size_t expect = want_n < avail ? want_n : avail;
            size_t got = memlog_read(&r.m, &pos, out, want_n);
            assert_int_equal(got, expect);
            assert_memory_equal(out, stream + start, got);
            assert_int_equal(pos, start + got); /* moved up to the oldest byte, then past what was read */
        }
        ring_fini(&r);
    }
    free(stream);
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_simple_read),
        cmocka_unit_test(test_wrap_clamps_to_oldest),
        cmocka_unit_test(test_exact_fill),
        cmocka_unit_test(test_large_write),
        cmocka_unit_test(test_zero_write),
        cmocka_unit_test(test_read_past_head),
        cmocka_unit_test(test_random_against_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
