#include "kernel/pmm.h"

#include "kernel/string.h"

static inline int test_bit(const uint64_t *bm, uint64_t i)
{
    return (bm[i / 64] >> (i % 64)) & 1;
}

static void set_range(struct pmm *p, uint64_t pfn, uint64_t count, int used)
{
    for (uint64_t i = pfn; i < pfn + count; i++) {
        uint64_t mask = 1ull << (i % 64);
        uint64_t *w = &p->bitmap[i / 64];
        if (used && !(*w & mask)) {
            *w |= mask;
            p->free_pages--;
        } else if (!used && (*w & mask)) {
            *w &= ~mask;
            p->free_pages++;
        }
    }
}

void pmm_init(struct pmm *p, uint64_t *bitmap, uint64_t max_pfn)
{
    p->bitmap = bitmap;
    p->max_pfn = max_pfn;
    p->free_pages = 0;
    p->total_pages = 0;
    p->hint = 0;
    memset(bitmap, 0xff, pmm_bitmap_bytes(max_pfn));
}

void pmm_add_free(struct pmm *p, uint64_t pfn, uint64_t count)
{
    if (pfn >= p->max_pfn)
        return;
    if (count > p->max_pfn - pfn)
        count = p->max_pfn - pfn;
    uint64_t before = p->free_pages;
    set_range(p, pfn, count, 0);
    p->total_pages += p->free_pages - before;
}

void pmm_reserve(struct pmm *p, uint64_t pfn, uint64_t count)
{
    if (pfn >= p->max_pfn)
        return;
    if (count > p->max_pfn - pfn)
        count = p->max_pfn - pfn;
    set_range(p, pfn, count, 1);
}

int pmm_is_free(const struct pmm *p, uint64_t pfn)
{
    return pfn < p->max_pfn && !test_bit(p->bitmap, pfn);
}

/* First candidate in [from, end) for a run of count free frames aligned to align, or end. */
static uint64_t search(const struct pmm *p, uint64_t from, uint64_t end, uint64_t count, uint64_t align)
{
    uint64_t i = (from + align - 1) & ~(align - 1);
    while (i + count <= end && i + count > i) {
        /* Skip whole words that are full. */
        if (i % 64 == 0 && p->bitmap[i / 64] == ~0ull) {
            i += 64;
            i = (i + align - 1) & ~(align - 1);
            continue;
        }
        uint64_t run = 0;
        while (run < count && !test_bit(p->bitmap, i + run))
            run++;
        if (run == count)
            return i;
        /* Restart after the used frame, aligned. */
        i = (i + run + 1 + align - 1) & ~(align - 1);
    }
    return end;
}

status_t pmm_alloc(struct pmm *p, uint64_t count, uint64_t align, uint64_t limit_pfn, uint64_t *pfn_out)
{
    if (count == 0 || align == 0 || (align & (align - 1)))
        return STATUS_INVALID_PARAMETER;
    uint64_t end = (limit_pfn && limit_pfn < p->max_pfn) ? limit_pfn : p->max_pfn;
    if (count > p->free_pages || count > end)
        return STATUS_NO_MEMORY;
    uint64_t start = p->hint < end ? p->hint : 0;
    uint64_t pfn = search(p, start, end, count, align);
    if (pfn == end && start != 0)
        pfn = search(p, 0, end, count, align);
    if (pfn == end)
        return STATUS_NO_MEMORY;
    set_range(p, pfn, count, 1);
    p->hint = pfn + count;
    *pfn_out = pfn;
    return STATUS_OK;
}

status_t pmm_free(struct pmm *p, uint64_t pfn, uint64_t count)
{
    if (count == 0 || pfn >= p->max_pfn || count > p->max_pfn - pfn)
        return STATUS_INVALID_PARAMETER;
    for (uint64_t i = pfn; i < pfn + count; i++)
        if (!test_bit(p->bitmap, i))
            return STATUS_INVALID_PARAMETER;
    set_range(p, pfn, count, 0);
    return STATUS_OK;
}
