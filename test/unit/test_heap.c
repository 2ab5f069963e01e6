/*
 * Unit tests for kernel/heap.c: the size-class heap.
 *
 * The heap gets its pages from a test page allocator that tracks every page range handed out, checks
 * that page_free returns exactly such a range, can be told to fail, and can quarantine freed pages
 * (so a double free of a large block reads a still-mapped header, as the kernel's would until reuse).
 * The corrupt callback records the report and returns (in the kernel it must not return).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernel/heap.h"
#include "test/lib/test_util.h"

#define PAGE 4096u
#define MAX_RANGES 4096

struct range {
    void *p;
    size_t pages;
};

struct env {
    struct heap h;
    /* page allocator */
    struct range live[MAX_RANGES];
    unsigned nlive;
    struct range quarantined[MAX_RANGES];
    unsigned nquarantined;
    bool quarantine;
    long fail_after;    /* successful page allocations left before failing; < 0 = never fail */
    size_t pages_out;   /* pages handed out and not returned */
    unsigned alloc_calls, free_calls;
    size_t last_alloc_pages;
    /* corrupt callback */
    unsigned corrupt_calls;
    char corrupt_what[128];
    const void *corrupt_ptr;
};

static void *page_alloc(void *ctx, size_t pages)
{
    struct env *e = ctx;
    e->alloc_calls++;
    e->last_alloc_pages = pages;
    if (e->fail_after == 0 || pages == 0 || pages > (64u << 20) / PAGE || e->nlive == MAX_RANGES)
        return NULL;
    if (e->fail_after > 0)
        e->fail_after--;
    void *p = aligned_alloc(PAGE, pages * PAGE);
    assert_non_null(p);
    memset(p, 0xcc, pages * PAGE); /* not zeroed, like recycled physical memory */
    e->live[e->nlive++] = (struct range){ p, pages };
    e->pages_out += pages;
    return p;
}

static void page_free(void *ctx, void *p, size_t pages)
{
    struct env *e = ctx;
    e->free_calls++;
    for (unsigned i = 0; i < e->nlive; i++) {
        if (e->live[i].p == p) {
            /* The heap must give back exactly what it got. */
            assert_int_equal(e->live[i].pages, pages);
            e->live[i] = e->live[--e->nlive];
            e->pages_out -= pages;
            if (e->quarantine && e->nquarantined < MAX_RANGES)
                e->quarantined[e->nquarantined++] = (struct range){ p, pages };
            else
                free(p);
            return;
        }
    }
    fail_msg("page_free(%p, %zu): not a range from page_alloc", p, pages);
}

static void corrupt(void *ctx, const char *what, const void *ptr)
{
    struct env *e = ctx;
    e->corrupt_calls++;
    snprintf(e->corrupt_what, sizeof e->corrupt_what, "%s", what);
    e->corrupt_ptr = ptr;
}

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof *e);
    if (!e)
        return -1;
    e->fail_after = -1;
    heap_init(&e->h, page_alloc, page_free, corrupt, e);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    for (unsigned i = 0; i < e->nlive; i++)
        free(e->live[i].p);
    for (unsigned i = 0; i < e->nquarantined; i++)
        free(e->quarantined[i].p);
    free(e);
    return 0;
}

/* The heap's page count always equals what the page allocator has outstanding. */
static void assert_pages_consistent(const struct env *e)
{
    assert_int_equal(e->h.pages_held, e->pages_out);
}

static size_t expected_class(size_t size)
{
    size_t c = 16;
    while (c < size)
        c *= 2;
    return c;
}

static size_t expected_large(size_t size)
{
    return ((size + HEAP_HEADER + PAGE - 1) / PAGE) * PAGE - HEAP_HEADER;
}

/* heap_init leaves an empty heap: no pages, no blocks. */
static void test_init(void **state)
{
    struct env *e = *state;
    assert_int_equal(e->h.pages_held, 0);
    assert_int_equal(e->h.bytes_in_use, 0);
    assert_int_equal(e->h.live_blocks, 0);
    assert_int_equal(e->alloc_calls, 0);
}

/* Sizes up to 2048 round up to the next power-of-two class (minimum 16); blocks are 16-byte aligned
 * and bytes_in_use counts the class size. */
static void test_size_classes(void **state)
{
    struct env *e = *state;
    static const size_t sizes[] = { 0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 128, 129, 255, 256,
                                    257, 500, 512, 513, 1000, 1024, 1025, 2000, 2047, 2048 };
    void *ptrs[sizeof sizes / sizeof sizes[0]];
    uint64_t bytes = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        ptrs[i] = heap_alloc(&e->h, sizes[i]);
        assert_non_null(ptrs[i]);
        assert_int_equal((uintptr_t)ptrs[i] % 16, 0);
        size_t want = expected_class(sizes[i] ? sizes[i] : 1);
        assert_int_equal(heap_block_size(&e->h, ptrs[i]), want);
        bytes += want;
        assert_int_equal(e->h.bytes_in_use, bytes);
        assert_int_equal(e->h.live_blocks, i + 1);
        /* The whole usable size is writable (ASan checks it lies inside the page). */
        memset(ptrs[i], 0x11, want);
    }
    assert_pages_consistent(e);
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        heap_free(&e->h, ptrs[i]);
    assert_int_equal(e->h.bytes_in_use, 0);
    assert_int_equal(e->h.live_blocks, 0);
    assert_int_equal(e->corrupt_calls, 0);
    assert_pages_consistent(e);
}

/* Above 2048 bytes, an allocation takes whole pages (header included) and returns them on free. */
static void test_large_allocations(void **state)
{
    struct env *e = *state;
    static const size_t sizes[] = { 2049, 4000, 4080, 4081, 8176, 8177, 100000, 1u << 20 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t pages = (sizes[i] + HEAP_HEADER + PAGE - 1) / PAGE;
        unsigned calls = e->alloc_calls;
        void *p = heap_alloc(&e->h, sizes[i]);
        assert_non_null(p);
        assert_int_equal(e->alloc_calls, calls + 1);
        assert_int_equal(e->last_alloc_pages, pages);
        assert_int_equal((uintptr_t)p % 16, 0);
        assert_int_equal(heap_block_size(&e->h, p), expected_large(sizes[i]));
        assert_true(heap_block_size(&e->h, p) >= sizes[i]);
        assert_int_equal(e->h.pages_held, pages);
        assert_int_equal(e->h.bytes_in_use, expected_large(sizes[i]));
        assert_int_equal(e->h.live_blocks, 1);
        memset(p, 0x22, heap_block_size(&e->h, p));
        unsigned frees = e->free_calls;
        heap_free(&e->h, p);
        assert_int_equal(e->free_calls, frees + 1);
        assert_int_equal(e->h.pages_held, 0);
        assert_int_equal(e->h.bytes_in_use, 0);
        assert_int_equal(e->h.live_blocks, 0);
        assert_int_equal(e->pages_out, 0);
    }
    assert_int_equal(e->corrupt_calls, 0);
}

/* Live blocks never overlap: each keeps its own contents while the others are written. */
static void test_blocks_disjoint(void **state)
{
    struct env *e = *state;
    enum { N = 600 };
    unsigned char *p[N];
    size_t len[N];
    for (int i = 0; i < N; i++) {
        len[i] = (size_t)(1 + (i * 37) % 3000);
        p[i] = heap_alloc(&e->h, len[i]);
        assert_non_null(p[i]);
        memset(p[i], (unsigned char)i, len[i]);
    }
    for (int i = 0; i < N; i++)
        for (size_t k = 0; k < len[i]; k++)
            if (p[i][k] != (unsigned char)i)
                fail_msg("block %d byte %zu overwritten", i, k);
    for (int i = 0; i < N; i++)
        heap_free(&e->h, p[i]);
    assert_int_equal(e->h.live_blocks, 0);
    assert_int_equal(e->h.bytes_in_use, 0);
    assert_pages_consistent(e);
}

/* Small blocks are carved from shared pages: no more pages than an ideal packing of header+payload
 * blocks needs, and a freed block is reused without asking for another page. */
static void test_small_blocks_share_pages(void **state)
{
    struct env *e = *state;
    for (unsigned cls = 0; cls < HEAP_CLASSES; cls++) {
        size_t size = (size_t)16 << cls;
        size_t per_page = PAGE / (HEAP_HEADER + size);
        enum { N = 300 };
        void *p[N];
        uint64_t pages_before = e->h.pages_held;
        for (int i = 0; i < N; i++)
            assert_non_null(p[i] = heap_alloc(&e->h, size));
        uint64_t used = e->h.pages_held - pages_before;
        assert_true(used <= (N + per_page - 1) / per_page);
        /* Free then allocate again: served from the freed blocks. */
        for (int i = 0; i < N; i++)
            heap_free(&e->h, p[i]);
        unsigned calls = e->alloc_calls;
        for (int i = 0; i < N; i++)
            assert_non_null(p[i] = heap_alloc(&e->h, size));
        assert_int_equal(e->alloc_calls, calls);
        for (int i = 0; i < N; i++)
            heap_free(&e->h, p[i]);
    }
    assert_int_equal(e->h.live_blocks, 0);
    assert_int_equal(e->h.bytes_in_use, 0);
    assert_pages_consistent(e);
    assert_int_equal(e->corrupt_calls, 0);
}

/* heap_free(NULL) does nothing. */
static void test_free_null(void **state)
{
    struct env *e = *state;
    heap_free(&e->h, NULL);
    assert_int_equal(e->corrupt_calls, 0);
    assert_int_equal(e->h.live_blocks, 0);
}

/* Freeing a small block twice is reported with the pointer; the counters are not touched and the block
 * is not handed out twice afterwards. */
static void test_double_free_small(void **state)
{
    struct env *e = *state;
    void *a = heap_alloc(&e->h, 40), *b = heap_alloc(&e->h, 40);
    assert_non_null(a);
    assert_non_null(b);
    heap_free(&e->h, a);
    uint64_t bytes = e->h.bytes_in_use, live = e->h.live_blocks;
    heap_free(&e->h, a);
    assert_int_equal(e->corrupt_calls, 1);
    assert_ptr_equal(e->corrupt_ptr, a);
    assert_non_null(strstr(e->corrupt_what, "double free"));
    assert_int_equal(e->h.bytes_in_use, bytes);
    assert_int_equal(e->h.live_blocks, live);
    /* Two allocations of the class now: distinct blocks, neither being b. */
    void *c = heap_alloc(&e->h, 40), *d = heap_alloc(&e->h, 40);
    assert_non_null(c);
    assert_non_null(d);
    assert_ptr_not_equal(c, d);
    assert_ptr_not_equal(c, b);
    assert_ptr_not_equal(d, b);
    assert_int_equal(e->corrupt_calls, 1);
    heap_free(&e->h, b);
    heap_free(&e->h, c);
    heap_free(&e->h, d);
    assert_int_equal(e->h.live_blocks, 0);
    assert_int_equal(e->corrupt_calls, 1);
}

/* Freeing a large block twice (its pages still mapped) is reported; the pages are not freed again. */
static void test_double_free_large(void **state)
{
    struct env *e = *state;
    e->quarantine = true;
    void *a = heap_alloc(&e->h, 10000);
    assert_non_null(a);
    heap_free(&e->h, a);
    assert_int_equal(e->h.pages_held, 0);
    unsigned frees = e->free_calls;
    heap_free(&e->h, a);
    assert_int_equal(e->corrupt_calls, 1);
    assert_ptr_equal(e->corrupt_ptr, a);
    assert_non_null(strstr(e->corrupt_what, "double free"));
    assert_int_equal(e->free_calls, frees);
    assert_int_equal(e->h.pages_held, 0);
    assert_int_equal(e->h.bytes_in_use, 0);
    assert_int_equal(e->h.live_blocks, 0);
}

/* A pointer the heap never returned is reported, whether misaligned or with no valid header in front
 * of it, and nothing changes. heap_block_size reports it too and returns 0. */
static void test_foreign_pointers(void **state)
{
    struct env *e = *state;
    unsigned char *live = heap_alloc(&e->h, 100);
    assert_non_null(live);
    memset(live, 0, 100);
    uint64_t bytes = e->h.bytes_in_use, blocks = e->h.live_blocks, pages = e->h.pages_held;

    unsigned char *foreign = aligned_alloc(16, 256);
    assert_non_null(foreign);
    memset(foreign, 0, 256);
    void *bad[] = {
        foreign + 32,  /* zeroed memory in front */
        live + 8,      /* misaligned, inside a block */
        live + 16,     /* aligned, inside a block: the "header" is payload */
        foreign + 33,  /* misaligned */
    };
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        heap_free(&e->h, bad[i]);
        assert_int_equal(e->corrupt_calls, 2 * i + 1);
        assert_ptr_equal(e->corrupt_ptr, bad[i]);
        /* Some explanation, and not mistaken for a double free. */
        assert_true(strlen(e->corrupt_what) > 0);
        assert_null(strstr(e->corrupt_what, "double"));
        assert_int_equal(heap_block_size(&e->h, bad[i]), 0);
        assert_int_equal(e->corrupt_calls, 2 * i + 2);
    }
    assert_int_equal(e->h.bytes_in_use, bytes);
    assert_int_equal(e->h.live_blocks, blocks);
    assert_int_equal(e->h.pages_held, pages);
    /* The real block is still intact and freeable. */
    for (int k = 0; k < 100; k++)
        assert_int_equal(live[k], 0);
    heap_free(&e->h, live);
    assert_int_equal(e->corrupt_calls, 8);
    assert_int_equal(e->h.live_blocks, 0);
    free(foreign);
}

/* A damaged free-list entry (its header overwritten after free) is reported instead of handed out. */
static void test_free_list_damage(void **state)
{
    struct env *e = *state;
    unsigned char *a = heap_alloc(&e->h, 64);
    assert_non_null(a);
    heap_free(&e->h, a);
    memset(a - HEAP_HEADER, 0x41, 4); /* a stray write over the freed block's header */
    void *b = heap_alloc(&e->h, 64);
    assert_null(b);
    assert_int_equal(e->corrupt_calls, 1);
    assert_non_null(strstr(e->corrupt_what, "damaged"));
    assert_int_equal(e->h.live_blocks, 0);
    assert_int_equal(e->h.bytes_in_use, 0);
}

/* When the page allocator fails, heap_alloc returns NULL and the counters are unchanged; it recovers
 * when pages are available again. */
static void test_page_alloc_failure(void **state)
{
    struct env *e = *state;
    e->fail_after = 0;
    assert_null(heap_alloc(&e->h, 16));
    assert_null(heap_alloc(&e->h, 2048));
    assert_null(heap_alloc(&e->h, 5000));
    assert_int_equal(e->h.pages_held, 0);
    assert_int_equal(e->h.bytes_in_use, 0);
    assert_int_equal(e->h.live_blocks, 0);
    e->fail_after = 1;
    void *a = heap_alloc(&e->h, 16);
    assert_non_null(a);
    void *b = heap_alloc(&e->h, 16); /* same page */
    assert_non_null(b);
    assert_null(heap_alloc(&e->h, 32)); /* needs a new page */
    assert_int_equal(e->h.live_blocks, 2);
    assert_pages_consistent(e);
    heap_free(&e->h, a);
    heap_free(&e->h, b);
    assert_int_equal(e->corrupt_calls, 0);
}

/* Absurd sizes fail cleanly instead of wrapping the page computation. */
static void test_huge_sizes(void **state)
{
    struct env *e = *state;
    static const size_t sizes[] = { SIZE_MAX, SIZE_MAX - 1, SIZE_MAX - HEAP_HEADER, SIZE_MAX - HEAP_HEADER - PAGE,
                                    SIZE_MAX - HEAP_HEADER - PAGE + 1, SIZE_MAX / 2, (size_t)1 << 40 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        assert_null(heap_alloc(&e->h, sizes[i]));
        /* If the page allocator was asked at all, it was for enough pages. */
        if (e->alloc_calls)
            assert_true(e->last_alloc_pages >= sizes[i] / PAGE);
        e->alloc_calls = 0;
    }
    assert_int_equal(e->h.pages_held, 0);
    assert_int_equal(e->h.live_blocks, 0);
    assert_int_equal(e->h.bytes_in_use, 0);
}

/*
 * Randomized stress, fixed seed: allocate and free random sizes (mostly small, some large), filling
 * each block with a pattern derived from its serial number and checking it on free; the counters are
 * checked against the test's own bookkeeping after every operation, and return to zero at the end.
 */
static void fill(unsigned char *p, size_t n, uint32_t serial)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(serial * 31 + i * 7);
}

static void check(const unsigned char *p, size_t n, uint32_t serial)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(serial * 31 + i * 7))
            fail_msg("block #%u byte %zu changed while live", serial, i);
}

static void test_random_stress(void **state)
{
    struct env *e = *state;
    struct rng r;
    rng_seed(&r, 0xdeadbeef12345678ull);
    enum { SLOTS = 700 };
    struct slot {
        unsigned char *p;
        size_t len;
        size_t block;
        uint32_t serial;
    } s[SLOTS];
    memset(s, 0, sizeof s);
    uint64_t bytes = 0, live = 0;
    uint32_t serial = 0;
    for (int op = 0; op < 60000; op++) {
        struct slot *sl = &s[rng_below(&r, SLOTS)];
        if (sl->p) {
            check(sl->p, sl->len, sl->serial);
            assert_int_equal(heap_block_size(&e->h, sl->p), sl->block);
            heap_free(&e->h, sl->p);
            bytes -= sl->block;
            live--;
            sl->p = NULL;
        } else {
            size_t len;
            switch (rng_below(&r, 10)) {
            case 0: len = 2049 + rng_below(&r, 20000); break;
            case 1: len = rng_below(&r, 17); break;
            default: len = rng_below(&r, 2049); break;
            }
            sl->p = heap_alloc(&e->h, len);
            assert_non_null(sl->p);
            assert_int_equal((uintptr_t)sl->p % 16, 0);
            sl->len = len;
            sl->block = heap_block_size(&e->h, sl->p);
            assert_int_equal(sl->block, len > 2048 ? expected_large(len) : expected_class(len ? len : 1));
            sl->serial = serial++;
            fill(sl->p, len, sl->serial);
            bytes += sl->block;
            live++;
        }
        assert_int_equal(e->h.bytes_in_use, bytes);
        assert_int_equal(e->h.live_blocks, live);
        assert_pages_consistent(e);
    }
    for (int i = 0; i < SLOTS; i++) {
        if (s[i].p) {
            check(s[i].p, s[i].len, s[i].serial);
            heap_free(&e->h, s[i].p);
        }
    }
    assert_int_equal(e->h.bytes_in_use, 0);
    assert_int_equal(e->h.live_blocks, 0);
    assert_int_equal(e->corrupt_calls, 0);
    assert_pages_consistent(e);
    /* Only small-class pages stay cached; every large allocation went back. */
    assert_true(e->h.pages_held <= e->alloc_calls);
    for (unsigned i = 0; i < e->nlive; i++)
        assert_int_equal(e->live[i].pages, 1);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_init),
        T(test_size_classes),
        T(test_large_allocations),
        T(test_blocks_disjoint),
        T(test_small_blocks_share_pages),
        T(test_free_null),
        T(test_double_free_small),
        T(test_double_free_large),
        T(test_foreign_pointers),
        T(test_free_list_damage),
        T(test_page_alloc_failure),
        T(test_huge_sizes),
        T(test_random_stress),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
