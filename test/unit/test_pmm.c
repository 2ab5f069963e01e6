/*
 * Unit tests for kernel/pmm.c: the bitmap page-frame allocator.
 *
 * Directed tests for each rule of the contract in kernel/pmm.h, then a long randomized run against a
 * reference model (one bool per frame) that also checks pmm_alloc never fails while a fitting run
 * exists.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "kernel/pmm.h"
#include "test/lib/test_util.h"

#define CANARY 0xa5a5a5a5a5a5a5a5ull

/* A pmm whose bitmap storage is followed by canary words, to catch writes past pmm_bitmap_bytes. */
struct fixture {
    struct pmm p;
    uint64_t *storage;
    size_t words; /* bitmap words */
};

static void fx_init(struct fixture *f, uint64_t max_pfn)
{
    f->words = pmm_bitmap_bytes(max_pfn) / 8;
    f->storage = malloc((f->words + 4) * sizeof(uint64_t));
    assert_non_null(f->storage);
    for (size_t i = 0; i < f->words + 4; i++)
        f->storage[i] = CANARY;
    pmm_init(&f->p, f->storage, max_pfn);
}

static void fx_fini(struct fixture *f)
{
    for (size_t i = f->words; i < f->words + 4; i++)
        assert_true(f->storage[i] == CANARY);
    free(f->storage);
}

static uint64_t count_free(const struct pmm *p, uint64_t from, uint64_t to)
{
    uint64_t n = 0;
    for (uint64_t i = from; i < to; i++)
        n += pmm_is_free(p, i) ? 1 : 0;
    return n;
}

/* The bitmap size rounds up to whole 64-bit words. */
static void test_bitmap_bytes(void **state)
{
    (void)state;
    assert_int_equal(pmm_bitmap_bytes(0), 0);
    assert_int_equal(pmm_bitmap_bytes(1), 8);
    assert_int_equal(pmm_bitmap_bytes(64), 8);
    assert_int_equal(pmm_bitmap_bytes(65), 16);
    assert_int_equal(pmm_bitmap_bytes(1u << 20), (1u << 20) / 8);
}

/* After init every frame is in use, nothing is counted free, and init writes only its bitmap. */
static void test_init_all_used(void **state)
{
    (void)state;
    struct fixture f;
    fx_init(&f, 130);
    assert_int_equal(f.p.max_pfn, 130);
    assert_int_equal(f.p.free_pages, 0);
    assert_int_equal(f.p.total_pages, 0);
    assert_int_equal(count_free(&f.p, 0, 200), 0);
    assert_false(pmm_is_free(&f.p, UINT64_MAX));
    uint64_t pfn = 12345;
    assert_int_equal(pmm_alloc(&f.p, 1, 1, 0, &pfn), STATUS_NO_MEMORY);
    assert_int_equal(pfn, 12345); /* not written on failure */
    fx_fini(&f);
}

/* add_free releases exactly the range, counts each frame once, and clips at max_pfn. */
static void test_add_free(void **state)
{
    (void)state;
    struct fixture f;
    fx_init(&f, 200);
    pmm_add_free(&f.p, 10, 20);
    assert_int_equal(f.p.free_pages, 20);
    assert_int_equal(f.p.total_pages, 20);
    assert_false(pmm_is_free(&f.p, 9));
    assert_true(pmm_is_free(&f.p, 10));
    assert_true(pmm_is_free(&f.p, 29));
    assert_false(pmm_is_free(&f.p, 30));
    /* Overlapping release: only the new frames count. */
    pmm_add_free(&f.p, 25, 10);
    assert_int_equal(f.p.free_pages, 25);
    assert_int_equal(f.p.total_pages, 25);
    /* Clipped at max_pfn; entirely past it (or a huge count) ignored. */
    pmm_add_free(&f.p, 190, 50);
    assert_int_equal(f.p.free_pages, 35);
    assert_true(pmm_is_free(&f.p, 199));
    assert_false(pmm_is_free(&f.p, 200));
    pmm_add_free(&f.p, 200, 5);
    pmm_add_free(&f.p, UINT64_MAX, 5);
    assert_int_equal(f.p.free_pages, 35);
    pmm_add_free(&f.p, 150, UINT64_MAX);
    assert_int_equal(f.p.free_pages, 35 + 40);
    assert_int_equal(f.p.total_pages, 75);
    assert_int_equal(count_free(&f.p, 0, 200), 75);
    /* Zero count: nothing. */
    pmm_add_free(&f.p, 0, 0);
    assert_false(pmm_is_free(&f.p, 0));
    fx_fini(&f);
}

/* reserve marks the range in use, counting only frames that were free, and clips at max_pfn. */
static void test_reserve(void **state)
{
    (void)state;
    struct fixture f;
    fx_init(&f, 100);
    pmm_add_free(&f.p, 0, 100);
    pmm_reserve(&f.p, 10, 5);
    assert_int_equal(f.p.free_pages, 95);
    assert_int_equal(f.p.total_pages, 100);
    assert_false(pmm_is_free(&f.p, 10));
    assert_false(pmm_is_free(&f.p, 14));
    assert_true(pmm_is_free(&f.p, 15));
    pmm_reserve(&f.p, 12, 6); /* half already reserved */
    assert_int_equal(f.p.free_pages, 92);
    pmm_reserve(&f.p, 95, UINT64_MAX);
    assert_int_equal(f.p.free_pages, 87);
    pmm_reserve(&f.p, 100, 10);
    pmm_reserve(&f.p, UINT64_MAX, 1);
    assert_int_equal(f.p.free_pages, 87);
    assert_int_equal(count_free(&f.p, 0, 100), 87);
    /* Reserved frames are never handed out. */
    uint64_t pfn;
    for (int i = 0; i < 87; i++) {
        assert_int_equal(pmm_alloc(&f.p, 1, 1, 0, &pfn), STATUS_OK);
        assert_true(pfn < 10 || (pfn >= 18 && pfn < 95));
    }
    assert_int_equal(pmm_alloc(&f.p, 1, 1, 0, &pfn), STATUS_NO_MEMORY);
    fx_fini(&f);
}

/* alloc hands out free frames, marks them used and rejects bad parameters without side effects. */
static void test_alloc_basic_and_params(void **state)
{
    (void)state;
    struct fixture f;
    fx_init(&f, 64);
    pmm_add_free(&f.p, 8, 16);
    uint64_t pfn = 777;
    assert_int_equal(pmm_alloc(&f.p, 0, 1, 0, &pfn), STATUS_INVALID_PARAMETER);
    assert_int_equal(pmm_alloc(&f.p, 1, 0, 0, &pfn), STATUS_INVALID_PARAMETER);
    assert_int_equal(pmm_alloc(&f.p, 1, 3, 0, &pfn), STATUS_INVALID_PARAMETER);
    assert_int_equal(pmm_alloc(&f.p, 1, 6, 0, &pfn), STATUS_INVALID_PARAMETER);
    assert_int_equal(pfn, 777);
    assert_int_equal(f.p.free_pages, 16);

    assert_int_equal(pmm_alloc(&f.p, 4, 1, 0, &pfn), STATUS_OK);
    assert_in_range(pfn, 8, 20);
    for (uint64_t i = pfn; i < pfn + 4; i++)
        assert_false(pmm_is_free(&f.p, i));
    assert_int_equal(f.p.free_pages, 12);
    assert_int_equal(count_free(&f.p, 0, 64), 12);
    /* More than is free, or than exists: no memory. */
    assert_int_equal(pmm_alloc(&f.p, 13, 1, 0, &pfn), STATUS_NO_MEMORY);
    assert_int_equal(pmm_alloc(&f.p, 1000, 1, 0, &pfn), STATUS_NO_MEMORY);
    assert_int_equal(pmm_alloc(&f.p, UINT64_MAX, 1, 0, &pfn), STATUS_NO_MEMORY);
    assert_int_equal(f.p.free_pages, 12);
    fx_fini(&f);
}

/* The first frame is a multiple of align; huge alignments that cannot fit fail cleanly. */
static void test_alloc_alignment(void **state)
{
    (void)state;
    struct fixture f;
    fx_init(&f, 4096);
    pmm_add_free(&f.p, 3, 4000);
    uint64_t pfn;
    assert_int_equal(pmm_alloc(&f.p, 4, 16, 0, &pfn), STATUS_OK);
    assert_int_equal(pfn % 16, 0);
    assert_true(pfn >= 16);
    assert_int_equal(pmm_alloc(&f.p, 1, 64, 0, &pfn), STATUS_OK);
    assert_int_equal(pfn % 64, 0);
    assert_int_equal(pmm_alloc(&f.p, 1024, 1024, 0, &pfn), STATUS_OK);
    assert_int_equal(pfn % 1024, 0);
    for (uint64_t i = pfn; i < pfn + 1024; i++)
        assert_false(pmm_is_free(&f.p, i));
    /* Only [3, 4003) was free: another 2048-aligned run of 2048 does not exist. */
    assert_int_equal(pmm_alloc(&f.p, 2048, 2048, 0, &pfn), STATUS_NO_MEMORY);
    assert_int_equal(pmm_alloc(&f.p, 1, 1ull << 62, 0, &pfn), STATUS_NO_MEMORY);
    assert_int_equal(pmm_alloc(&f.p, 1, 1ull << 63, 0, &pfn), STATUS_NO_MEMORY);
    fx_fini(&f);
}

/* With a limit, the whole run lies below limit_pfn; a limit past max_pfn is no limit. */
static void test_alloc_limit(void **state)
{
    (void)state;
    struct fixture f;
    fx_init(&f, 300);
    pmm_add_free(&f.p, 0, 300);
    uint64_t pfn;
    assert_int_equal(pmm_alloc(&f.p, 10, 1, 10, &pfn), STATUS_OK);
    assert_int_equal(pfn, 0);
    assert_int_equal(pmm_alloc(&f.p, 1, 1, 10, &pfn), STATUS_NO_MEMORY);
    assert_int_equal(pmm_alloc(&f.p, 5, 1, 14, &pfn), STATUS_NO_MEMORY);
    assert_int_equal(pmm_alloc(&f.p, 5, 1, 15, &pfn), STATUS_OK);
    assert_int_equal(pfn, 10);
    assert_int_equal(pmm_alloc(&f.p, 16, 16, 32, &pfn), STATUS_OK);
    assert_int_equal(pfn, 16);
    assert_int_equal(pmm_alloc(&f.p, 200, 1, 1000, &pfn), STATUS_OK);
    assert_true(pfn + 200 <= 300);
    assert_int_equal(pmm_alloc(&f.p, 100, 1, 1000, &pfn), STATUS_NO_MEMORY);
    /* Many single frames under a limit: all below it. */
    for (;;) {
        status_t s = pmm_alloc(&f.p, 1, 1, 100, &pfn);
        if (s != STATUS_OK) {
            assert_int_equal(s, STATUS_NO_MEMORY);
            break;
        }
        assert_true(pfn < 100);
    }
    assert_int_equal(count_free(&f.p, 0, 100), 0);
    fx_fini(&f);
}

/* Exhaustion: exactly the free frames can be allocated, each once; freeing returns them all. */
static void test_exhaustion(void **state)
{
    (void)state;
    struct fixture f;
    fx_init(&f, 1000);
    pmm_add_free(&f.p, 5, 50);
    pmm_add_free(&f.p, 300, 70);
    pmm_add_free(&f.p, 990, 10);
    bool seen[1000] = { false };
    uint64_t got = 0, pfn;
    while (pmm_alloc(&f.p, 1, 1, 0, &pfn) == STATUS_OK) {
        assert_true(pfn < 1000);
        assert_false(seen[pfn]);
        seen[pfn] = true;
        got++;
    }
    assert_int_equal(got, 130);
    assert_int_equal(f.p.free_pages, 0);
    for (uint64_t i = 0; i < 1000; i++)
        if (seen[i])
            assert_int_equal(pmm_free(&f.p, i, 1), STATUS_OK);
    assert_int_equal(f.p.free_pages, 130);
    assert_int_equal(f.p.total_pages, 130);
    assert_int_equal(count_free(&f.p, 0, 1000), 130);
    fx_fini(&f);
}

/* Fragmentation: with every other frame free, runs of two fail while single frames succeed. */
static void test_fragmentation(void **state)
{
    (void)state;
    struct fixture f;
    fx_init(&f, 256);
    pmm_add_free(&f.p, 0, 256);
    uint64_t pfn;
    for (int i = 0; i < 256; i++)
        assert_int_equal(pmm_alloc(&f.p, 1, 1, 0, &pfn), STATUS_OK);
    for (uint64_t i = 0; i < 256; i += 2)
        assert_int_equal(pmm_free(&f.p, i, 1), STATUS_OK);
    assert_int_equal(f.p.free_pages, 128);
    assert_int_equal(pmm_alloc(&f.p, 2, 1, 0, &pfn), STATUS_NO_MEMORY);
    assert_int_equal(pmm_alloc(&f.p, 1, 2, 0, &pfn), STATUS_OK);
    assert_int_equal(pfn % 2, 0);
    assert_int_equal(pmm_free(&f.p, pfn, 1), STATUS_OK);
    assert_int_equal(pmm_alloc(&f.p, 1, 4, 0, &pfn), STATUS_OK);
    assert_int_equal(pfn % 4, 0);
    assert_int_equal(pmm_free(&f.p, pfn, 1), STATUS_OK);
    /* Free one odd frame between two free even ones: the only runs of two are 100-101 and 101-102. */
    assert_int_equal(pmm_free(&f.p, 101, 1), STATUS_OK);
    assert_int_equal(pmm_alloc(&f.p, 2, 1, 0, &pfn), STATUS_OK);
    assert_true(pfn == 100 || pfn == 101);
    assert_int_equal(pmm_alloc(&f.p, 2, 1, 0, &pfn), STATUS_NO_MEMORY);
    for (int i = 0; i < 127; i++)
        assert_int_equal(pmm_alloc(&f.p, 1, 1, 0, &pfn), STATUS_OK);
    assert_int_equal(pmm_alloc(&f.p, 1, 1, 0, &pfn), STATUS_NO_MEMORY);
    fx_fini(&f);
}

/* The whole allocator state: a failed call must leave all of it as it was. */
struct snapshot {
    struct pmm p;
    uint64_t bits[64];
};

static void take(struct snapshot *s, const struct fixture *f)
{
    assert_true(f->words <= 64);
    s->p = f->p;
    memset(s->bits, 0, sizeof s->bits);
    memcpy(s->bits, f->p.bitmap, f->words * 8);
}

static void assert_unchanged(const struct snapshot *s, const struct fixture *f)
{
    struct snapshot now;
    take(&now, f);
    assert_memory_equal(&now.p, &s->p, sizeof now.p);
    assert_memory_equal(now.bits, s->bits, sizeof now.bits);
}

/* A double free (whole or partial) returns STATUS_INVALID_PARAMETER and changes nothing. */
static void test_double_free(void **state)
{
    (void)state;
    struct fixture f;
    fx_init(&f, 500);
    pmm_add_free(&f.p, 0, 500);
    uint64_t a;
    assert_int_equal(pmm_alloc(&f.p, 8, 1, 0, &a), STATUS_OK);
    assert_int_equal(pmm_free(&f.p, a, 8), STATUS_OK);
    struct snapshot s;
    take(&s, &f);
    assert_int_equal(pmm_free(&f.p, a, 8), STATUS_INVALID_PARAMETER);
    assert_unchanged(&s, &f);
    assert_int_equal(pmm_free(&f.p, a + 3, 1), STATUS_INVALID_PARAMETER);
    assert_unchanged(&s, &f);

    /* Partial: the first half was already freed; the still-used second half stays used. */
    assert_int_equal(pmm_alloc(&f.p, 8, 1, 0, &a), STATUS_OK);
    assert_int_equal(pmm_free(&f.p, a, 4), STATUS_OK);
    take(&s, &f);
    assert_int_equal(pmm_free(&f.p, a, 8), STATUS_INVALID_PARAMETER);
    assert_unchanged(&s, &f);
    for (uint64_t i = a + 4; i < a + 8; i++)
        assert_false(pmm_is_free(&f.p, i));
    /* Free frame at the end of the range only. */
    assert_int_equal(pmm_alloc(&f.p, 4, 1, 0, &a), STATUS_OK);
    assert_int_equal(pmm_free(&f.p, a + 3, 1), STATUS_OK);
    take(&s, &f);
    assert_int_equal(pmm_free(&f.p, a, 4), STATUS_INVALID_PARAMETER);
    assert_unchanged(&s, &f);
    fx_fini(&f);
}

/* Frees that are out of range or empty are rejected and change nothing. */
static void test_free_out_of_range(void **state)
{
    (void)state;
    struct fixture f;
    fx_init(&f, 100); /* every frame in use: a valid range could be freed */
    struct snapshot s;
    take(&s, &f);
    assert_int_equal(pmm_free(&f.p, 100, 1), STATUS_INVALID_PARAMETER);
    assert_int_equal(pmm_free(&f.p, 99, 2), STATUS_INVALID_PARAMETER);
    assert_int_equal(pmm_free(&f.p, 50, 0), STATUS_INVALID_PARAMETER);
    assert_int_equal(pmm_free(&f.p, 1, UINT64_MAX), STATUS_INVALID_PARAMETER);
    assert_int_equal(pmm_free(&f.p, UINT64_MAX, 2), STATUS_INVALID_PARAMETER);
    assert_unchanged(&s, &f);
    /* The boundary itself is fine. */
    assert_int_equal(pmm_free(&f.p, 99, 1), STATUS_OK);
    assert_int_equal(pmm_free(&f.p, 0, 99), STATUS_OK);
    assert_int_equal(f.p.free_pages, 100);
    fx_fini(&f);
}

/* Next-fit search wraps around: space before the hint is found when the tail is used up. */
static void test_search_wraps(void **state)
{
    (void)state;
    struct fixture f;
    fx_init(&f, 64);
    pmm_add_free(&f.p, 0, 64);
    uint64_t a, b;
    assert_int_equal(pmm_alloc(&f.p, 60, 1, 0, &a), STATUS_OK);
    assert_int_equal(a, 0);
    assert_int_equal(pmm_free(&f.p, a, 60), STATUS_OK);
    /* Only 4 frames after the previous allocation; 10 needs the wrap. */
    assert_int_equal(pmm_alloc(&f.p, 10, 1, 0, &b), STATUS_OK);
    assert_int_equal(b, 0);
    assert_int_equal(pmm_free(&f.p, b, 10), STATUS_OK);
    /* All 64 free again, the search starting mid-way: the one run covering everything straddles it. */
    assert_int_equal(pmm_alloc(&f.p, 64, 1, 0, &a), STATUS_OK);
    assert_int_equal(a, 0);
    assert_int_equal(f.p.free_pages, 0);
    fx_fini(&f);
}

/* max_pfn not a multiple of 64: frames at or past max_pfn are never handed out. */
static void test_partial_last_word(void **state)
{
    (void)state;
    struct fixture f;
    fx_init(&f, 70);
    pmm_add_free(&f.p, 0, 1000);
    assert_int_equal(f.p.free_pages, 70);
    uint64_t pfn;
    assert_int_equal(pmm_alloc(&f.p, 71, 1, 0, &pfn), STATUS_NO_MEMORY);
    assert_int_equal(pmm_alloc(&f.p, 70, 1, 0, &pfn), STATUS_OK);
    assert_int_equal(pfn, 0);
    assert_int_equal(pmm_alloc(&f.p, 1, 1, 0, &pfn), STATUS_NO_MEMORY);
    assert_int_equal(pmm_free(&f.p, 64, 6), STATUS_OK);
    assert_int_equal(pmm_alloc(&f.p, 6, 2, 0, &pfn), STATUS_OK);
    assert_int_equal(pfn, 64);
    fx_fini(&f);
}

/*
 * Randomized run against a reference model, fixed seed. Checks after every operation: the status
 * matches what the model says is possible (an allocation fails only if no aligned free run exists
 * below the limit; a free fails exactly when part of the range is free or out of range), returned
 * runs were free, aligned and below the limit, and the counters agree; the whole bitmap is compared
 * regularly.
 */
#define RMAX 777

struct model {
    bool used[RMAX];
    uint64_t free_pages, total_pages;
};

static bool model_has_run(const struct model *m, uint64_t count, uint64_t align, uint64_t end)
{
    for (uint64_t s = 0; s + count <= end; s += align) {
        bool ok = true;
        for (uint64_t i = s; i < s + count && ok; i++)
            ok = !m->used[i];
        if (ok)
            return true;
    }
    return false;
}

static void model_set(struct model *m, uint64_t pfn, uint64_t count, bool used, bool adding)
{
    for (uint64_t i = pfn; i < pfn + count && i < RMAX; i++) {
        if (m->used[i] != used) {
            m->used[i] = used;
            m->free_pages += used ? (uint64_t)-1 : 1;
            if (adding)
                m->total_pages++;
        }
    }
}

static void test_random_against_model(void **state)
{
    (void)state;
    struct rng r;
    rng_seed(&r, 0x1234abcd5678ef00ull);
    struct fixture f;
    fx_init(&f, RMAX);
    struct model m;
    memset(&m, 0, sizeof m);
    for (int i = 0; i < RMAX; i++)
        m.used[i] = true;
    struct live {
        uint64_t pfn, count;
    } live[512];
    int nlive = 0;
    unsigned allocs_ok = 0, allocs_failed = 0, frees_rejected = 0;

    for (int op = 0; op < 40000; op++) {
        unsigned what = (unsigned)rng_below(&r, 100);
        if (what < 3) {
            uint64_t pfn = rng_below(&r, RMAX + 20), count = rng_below(&r, 100);
            pmm_add_free(&f.p, pfn, count);
            if (pfn < RMAX)
                model_set(&m, pfn, count, false, true);
        } else if (what < 5) {
            uint64_t pfn = rng_below(&r, RMAX + 20), count = rng_below(&r, 30);
            pmm_reserve(&f.p, pfn, count);
            if (pfn < RMAX)
                model_set(&m, pfn, count, true, false);
        } else if (what < 55) {
            uint64_t count = rng_below(&r, 8) ? 1 + rng_below(&r, 8) : 1 + rng_below(&r, 120);
            uint64_t align = 1ull << (rng_below(&r, 3) ? 0 : rng_below(&r, 8));
            uint64_t limit = rng_below(&r, 4) ? 0 : rng_below(&r, RMAX + 100);
            uint64_t end = (limit && limit < RMAX) ? limit : RMAX;
            uint64_t pfn = UINT64_MAX;
            status_t s = pmm_alloc(&f.p, count, align, limit, &pfn);
            bool possible = model_has_run(&m, count, align, end);
            if (s == STATUS_OK) {
                assert_true(possible);
                assert_int_equal(pfn % align, 0);
                assert_true(pfn + count <= end);
                for (uint64_t i = pfn; i < pfn + count; i++)
                    assert_false(m.used[i]);
                model_set(&m, pfn, count, true, false);
                if (nlive < 512)
                    live[nlive++] = (struct live){ pfn, count };
                allocs_ok++;
            } else {
                if (possible)
                    print_message("op %d: alloc(%llu, align %llu, limit %llu) failed but a run exists\n", op,
                                  (unsigned long long)count, (unsigned long long)align,
                                  (unsigned long long)limit);
                assert_int_equal(s, STATUS_NO_MEMORY);
                assert_false(possible);
                allocs_failed++;
            }
        } else {
            uint64_t pfn, count;
            if (nlive && rng_below(&r, 4)) {
                /* Usually a live allocation, sometimes only part of it. */
                int k = (int)rng_below(&r, (uint64_t)nlive);
                pfn = live[k].pfn;
                count = live[k].count;
                if (rng_below(&r, 5) == 0 && count > 1) {
                    uint64_t cut = 1 + rng_below(&r, count - 1);
                    pfn += cut;
                    count -= cut;
                    live[k].count = cut;
                } else {
                    live[k] = live[--nlive];
                }
            } else {
                pfn = rng_below(&r, RMAX + 10);
                count = rng_below(&r, 10);
            }
            bool valid = count > 0 && pfn < RMAX && count <= RMAX - pfn;
            for (uint64_t i = pfn; valid && i < pfn + count; i++)
                valid = m.used[i];
            status_t s = pmm_free(&f.p, pfn, count);
            assert_int_equal(s, valid ? STATUS_OK : STATUS_INVALID_PARAMETER);
            if (valid)
                model_set(&m, pfn, count, false, false);
            else
                frees_rejected++;
        }
        assert_int_equal(f.p.free_pages, m.free_pages);
        assert_int_equal(f.p.total_pages, m.total_pages);
        if (op % 97 == 0)
            for (uint64_t i = 0; i < RMAX; i++)
                assert_int_equal(pmm_is_free(&f.p, i), !m.used[i]);
    }
    print_message("allocs ok %u, failed %u, frees rejected %u\n", allocs_ok, allocs_failed, frees_rejected);
    /* The run exercised every outcome. */
    assert_true(allocs_ok > 1000);
    assert_true(allocs_failed > 100);
    assert_true(frees_rejected > 100);
    fx_fini(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bitmap_bytes),
        cmocka_unit_test(test_init_all_used),
        cmocka_unit_test(test_add_free),
        cmocka_unit_test(test_reserve),
        cmocka_unit_test(test_alloc_basic_and_params),
        cmocka_unit_test(test_alloc_alignment),
        cmocka_unit_test(test_alloc_limit),
        cmocka_unit_test(test_exhaustion),
        cmocka_unit_test(test_fragmentation),
        cmocka_unit_test(test_double_free),
        cmocka_unit_test(test_free_out_of_range),
        cmocka_unit_test(test_search_wraps),
        cmocka_unit_test(test_partial_last_word),
        cmocka_unit_test(test_random_against_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
