/*
 * libFuzzer harness for kernel/pmm.c: the input is a program of allocator operations (add_free,
 * reserve, alloc with count/align/limit, free of a range) on a fuzzer-chosen max_pfn, each checked
 * against a reference model (one byte per frame):
 *  - alloc succeeds only with a run that was free, aligned and below the limit, and fails only when no
 *    such run exists;
 *  - free succeeds exactly when every frame of an in-range, non-empty range is in use, and a refused
 *    free changes nothing;
 *  - free_pages / total_pages / pmm_is_free agree with the model; the bitmap is never written past
 *    pmm_bitmap_bytes(max_pfn) (ASan: it is allocated to exactly that size).
 *
 * Seeds: test/fuzz/corpus/pmm (any bytes work).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernel/pmm.h"
#include "test/fuzz/fuzz_check.h"
#include "test/fuzz/fuzz_input.h"

#define MAX_FRAMES 2048

static uint8_t used[MAX_FRAMES];
static uint64_t m_free, m_total;

static void model_set(uint64_t max, uint64_t pfn, uint64_t count, bool u, bool adding)
{
    for (uint64_t i = pfn; i < pfn + count && i < max; i++) {
        if (used[i] != u) {
            used[i] = u;
            if (u) {
                m_free--;
            } else {
                m_free++;
                m_total += adding;
            }
        }
    }
}

/* Whether some aligned start s has count free frames in [s, s + count) with s + count <= end. */
static bool model_has_run(uint64_t count, uint64_t align, uint64_t end)
{
    static uint16_t run[MAX_FRAMES + 1]; /* free frames starting at i, counting only below end */
    run[end] = 0;
    for (uint64_t i = end; i-- > 0;)
        run[i] = used[i] ? 0 : (uint16_t)(run[i + 1] + 1);
    for (uint64_t s = 0; s + count <= end; s += align)
        if (run[s] >= count)
            return true;
    return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reader r = { data, size };
    uint64_t max = take16(&r) % (MAX_FRAMES + 1);
    size_t bytes = pmm_bitmap_bytes(max);
    uint64_t *bitmap = malloc(bytes ? bytes : 1);
    CHECK(bitmap != NULL);
    struct pmm p;
    pmm_init(&p, bitmap, max);
    memset(used, 1, sizeof used);
    m_free = m_total = 0;

    for (int op = 0; op < 256 && r.n; op++) {
        uint8_t kind = take8(&r) % 6;
        uint64_t a = take16(&r), b = take16(&r);
        switch (kind) {
        case 0: /* add_free (occasionally with a huge count) */
            pmm_add_free(&p, a, b == 0xffff ? UINT64_MAX : b);
            if (a < max)
                model_set(max, a, b == 0xffff ? max : b, false, true);
            break;
        case 1: /* reserve */
            pmm_reserve(&p, a, b == 0xffff ? UINT64_MAX : b % 64);
            if (a < max)
                model_set(max, a, b == 0xffff ? max : b % 64, true, false);
            break;
        case 2:
        case 3: { /* alloc */
            uint64_t count = a % 300, align = 1ull << (b % 12), limit = (b >> 4) % (MAX_FRAMES + 64);
            if (b & 0x8000)
                limit = 0;
            uint64_t pfn = UINT64_MAX;
            status_t s = pmm_alloc(&p, count, align, limit, &pfn);
            if (count == 0) {
                CHECK(s == STATUS_INVALID_PARAMETER);
                break;
            }
            uint64_t end = (limit && limit < max) ? limit : max;
            bool possible = model_has_run(count, align, end);
            if (s == STATUS_OK) {
                CHECK(possible);
                CHECK(pfn % align == 0 && pfn + count <= end);
                for (uint64_t i = pfn; i < pfn + count; i++)
                    CHECK(!used[i]);
                model_set(max, pfn, count, true, false);
            } else {
                CHECK(s == STATUS_NO_MEMORY);
                CHECK(!possible);
                CHECK(pfn == UINT64_MAX);
            }
            break;
        }
        default: { /* free */
            uint64_t pfn = a, count = b % 64;
            if (b == 0xffff)
                count = UINT64_MAX;
            bool valid = count > 0 && pfn < max && count <= max - pfn;
            for (uint64_t i = pfn; valid && i < pfn + count; i++)
                valid = used[i];
            uint64_t before_free = p.free_pages;
            status_t s = pmm_free(&p, pfn, count);
            CHECK(s == (valid ? STATUS_OK : STATUS_INVALID_PARAMETER));
            if (valid)
                model_set(max, pfn, count, false, false);
            else
                CHECK(p.free_pages == before_free);
            break;
        }
        }
        CHECK(p.free_pages == m_free);
        CHECK(p.total_pages == m_total);
    }
    for (uint64_t i = 0; i < max + 70; i++)
        CHECK(pmm_is_free(&p, i) == (i < max && !used[i]));
    free(bitmap);
    return 0;
}
