/*
 * mm: the kernel's memory: physical pages (kernel/pmm.c under a lock) and the heap (kernel/heap.c
 * under a lock). Pages and heap blocks are identity-mapped: their physical address is their virtual
 * address. All functions are callable at <= DISPATCH; none blocks.
 */
#ifndef KERNEL_MM_H
#define KERNEL_MM_H

#include <stddef.h>
#include <stdint.h>

#include "kernel/status.h"

struct boot_info;

/* Builds the page allocator from the memory map: FREE regions above 1 MiB. */
status_t mm_init(const struct boot_info *bi) WARN_UNUSED;
void heap_setup(void);

/* count frames aligned to align frames, below limit_pfn (0 = anywhere). */
status_t page_alloc_phys(uint64_t count, uint64_t align, uint64_t limit_pfn, uint64_t *pa_out) WARN_UNUSED;
void page_free_phys(uint64_t pa, uint64_t count);
void *page_alloc(size_t count);          /* zeroed, page aligned, or NULL */
void page_free(void *p, size_t count);

void *kmalloc(size_t size);
void *kzalloc(size_t size);
void kfree(void *p);

struct mm_stats {
    uint64_t total_pages, free_pages;
    uint64_t heap_bytes, heap_blocks, heap_pages;
};
void mm_get_stats(struct mm_stats *s);

#endif
