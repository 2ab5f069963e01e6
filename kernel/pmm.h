/*
 * pmm: the physical page allocator, a bitmap of 4 KiB frames (1 = in use).
 *
 * The structure itself takes no lock: the kernel's wrapper (kernel/mm.h) serialises calls. It is
 * portable so the hosted tests drive it directly. The caller provides the bitmap storage
 * (pmm_bitmap_bytes(max_pfn) bytes); every frame starts "in use" until pmm_add_free() releases it.
 */
#ifndef KERNEL_PMM_H
#define KERNEL_PMM_H

#include <stdint.h>

#include "kernel/status.h"

struct pmm {
    uint64_t *bitmap;
    uint64_t max_pfn;     /* frames [0, max_pfn) are tracked */
    uint64_t free_pages;
    uint64_t total_pages; /* frames ever released with pmm_add_free */
    uint64_t hint;        /* where the next search starts (next fit) */
};

static inline uint64_t pmm_bitmap_bytes(uint64_t max_pfn)
{
    return ((max_pfn + 63) / 64) * 8;
}

void pmm_init(struct pmm *p, uint64_t *bitmap, uint64_t max_pfn);
/* Marks [pfn, pfn+count) free; frames past max_pfn are ignored. */
void pmm_add_free(struct pmm *p, uint64_t pfn, uint64_t count);
/* Marks [pfn, pfn+count) in use (whether or not it was free). */
void pmm_reserve(struct pmm *p, uint64_t pfn, uint64_t count);
/* count contiguous frames whose first is a multiple of align (a power of two, in frames) and whose
 * last is below limit_pfn (0 = no limit). */
status_t pmm_alloc(struct pmm *p, uint64_t count, uint64_t align, uint64_t limit_pfn, uint64_t *pfn_out)
    WARN_UNUSED;
/* STATUS_INVALID_PARAMETER, and nothing changed, if any frame of the range is already free or
 * out of range: a double free is caught, not absorbed. */
status_t pmm_free(struct pmm *p, uint64_t pfn, uint64_t count) WARN_UNUSED;
int pmm_is_free(const struct pmm *p, uint64_t pfn);

#endif
