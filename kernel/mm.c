#include "kernel/mm.h"

#include "arch-x86_64/spinlock.h"
#include "boot/boot_info.h"
#include "kernel/heap.h"
#include "kernel/log.h"
#include "kernel/panic.h"
#include "kernel/pmm.h"
#include "kernel/string.h"

static struct pmm pmm;
static struct heap heap;
static spinlock_t pmm_lock = SPINLOCK_INIT, heap_lock = SPINLOCK_INIT;

#define LOW_MEMORY_PFN 256 /* below 1 MiB: real-mode structures, the AP trampoline, never allocated */

status_t mm_init(const struct boot_info *bi)
{
    uint64_t max_pfn = 0;
    for (uint32_t i = 0; i < bi->mem_count; i++) {
        const struct boot_mem_region *r = &bi->mem[i];
        if (r->kind == BOOT_MEM_FREE && r->base / 4096ull + r->pages > max_pfn)
            max_pfn = r->base / 4096ull + r->pages;
    }
    if (!max_pfn)
        return STATUS_NO_MEMORY;
    uint64_t bm_pages = (pmm_bitmap_bytes(max_pfn) + 4096ull - 1) / 4096ull;
    /* The bitmap goes at the start of the first free region above 1 MiB that holds it. */
    uint64_t bm_pfn = 0;
    for (uint32_t i = 0; i < bi->mem_count && !bm_pfn; i++) {
        const struct boot_mem_region *r = &bi->mem[i];
        uint64_t start = r->base / 4096ull;
        if (r->kind == BOOT_MEM_FREE && start >= LOW_MEMORY_PFN && r->pages >= bm_pages)
            bm_pfn = start;
    }
    if (!bm_pfn)
        return STATUS_NO_MEMORY;
    pmm_init(&pmm, (uint64_t *)(bm_pfn * 4096ull), max_pfn);
    for (uint32_t i = 0; i < bi->mem_count; i++) {
        const struct boot_mem_region *r = &bi->mem[i];
        if (r->kind != BOOT_MEM_FREE)
            continue;
        uint64_t start = r->base / 4096ull, end = start + r->pages;
        if (start < LOW_MEMORY_PFN)
            start = LOW_MEMORY_PFN;
        if (start < end)
            pmm_add_free(&pmm, start, end - start);
    }
    pmm_reserve(&pmm, bm_pfn, bm_pages);
    return STATUS_OK;
}

status_t page_alloc_phys(uint64_t count, uint64_t align, uint64_t limit_pfn, uint64_t *pa_out)
{
    irql_t old = spin_lock(&pmm_lock);
    uint64_t pfn;
    status_t s = pmm_alloc(&pmm, count, align, limit_pfn, &pfn);
    spin_unlock(&pmm_lock, old);
    if (s == STATUS_OK)
        *pa_out = pfn * 4096ull;
    return s;
}

void page_free_phys(uint64_t pa, uint64_t count)
{
    irql_t old = spin_lock(&pmm_lock);
    status_t s = pmm_free(&pmm, pa / 4096ull, count);
    spin_unlock(&pmm_lock, old);
    if (s != STATUS_OK)
        panic("page_free_phys(%#llx, %llu): not allocated (double free?)", (unsigned long long)pa,
              (unsigned long long)count);
}

void *page_alloc(size_t count)
{
    uint64_t pa;
    if (page_alloc_phys(count, 1, 0, &pa) != STATUS_OK)
        return NULL;
    memset((void *)pa, 0, count * 4096ull);
    return (void *)pa;
}

void page_free(void *p, size_t count)
{
    if (p)
        page_free_phys((uint64_t)p, count);
}

static void *heap_pages(void *ctx, size_t n)
{
    (void)ctx;
    uint64_t pa;
    /* Called with heap_lock held (DISPATCH); the pmm lock nests inside it. */
    if (page_alloc_phys(n, 1, 0, &pa) != STATUS_OK)
        return NULL;
    return (void *)pa;
}

static void heap_unpages(void *ctx, void *p, size_t n)
{
    (void)ctx;
    page_free_phys((uint64_t)p, n);
}

static void heap_corrupt(void *ctx, const char *what, const void *ptr)
{
    (void)ctx;
    panic("heap: %s (pointer %p)", what, ptr);
}

void heap_setup(void)
{
    heap_init(&heap, heap_pages, heap_unpages, heap_corrupt, NULL);
}

void *kmalloc(size_t size)
{
    irql_t old = spin_lock(&heap_lock);
    void *p = heap_alloc(&heap, size);
    spin_unlock(&heap_lock, old);
    return p;
}

void *kzalloc(size_t size)
{
    void *p = kmalloc(size);
    if (p)
        memset(p, 0, size);
    return p;
}

void kfree(void *p)
{
    if (!p)
        return;
    irql_t old = spin_lock(&heap_lock);
    heap_free(&heap, p);
    spin_unlock(&heap_lock, old);
}

void mm_get_stats(struct mm_stats *s)
{
    irql_t old = spin_lock(&pmm_lock);
    s->total_pages = pmm.total_pages;
    s->free_pages = pmm.free_pages;
    spin_unlock(&pmm_lock, old);
    old = spin_lock(&heap_lock);
    s->heap_bytes = heap.bytes_in_use;
    s->heap_blocks = heap.live_blocks;
    s->heap_pages = heap.pages_held;
    spin_unlock(&heap_lock, old);
}
