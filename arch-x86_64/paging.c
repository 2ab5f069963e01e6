/* Page-table formats: Intel SDM Vol. 3A §4.5 (4-level paging), PAT §11.12. */
#include "arch-x86_64/paging.h"

#include "arch-x86_64/cpu.h"
#include "arch-x86_64/spinlock.h"
#include "boot/boot_info.h"
#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/string.h"

#define PTE_P (1ull << 0)
#define PTE_W (1ull << 1)
#define PTE_PWT (1ull << 3)
#define PTE_PCD (1ull << 4)
#define PTE_PS (1ull << 7)
#define PTE_G (1ull << 8)
#define PTE_NX (1ull << 63)
#define PTE_ADDR 0x000ffffffffff000ull

#define ATTR_UC (PTE_PCD | PTE_PWT) /* PAT entry 3: UC */
#define ATTR_WC PTE_PWT             /* PAT entry 1, reprogrammed to WC */

extern char __kernel_start[], __text_start[], __text_end[], __rodata_start[], __rodata_end[], __data_start[],
    __kernel_end[];

static uint64_t *pml4;
static uint64_t kernel_phys_base, kernel_virt_base;
static spinlock_t lock = SPINLOCK_INIT;
static uint64_t next_stack_va = STACK_REGION_BASE;
static struct paging_stats stats;

static uint64_t *table_alloc(void)
{
    uint64_t pa;
    if (page_alloc_phys(1, 1, 0, &pa) != STATUS_OK)
        return NULL;
    memset((void *)pa, 0, PAGE_SIZE);
    stats.table_pages++;
    return (uint64_t *)pa;
}

static uint64_t *next_level(uint64_t *table, unsigned idx)
{
    uint64_t e = table[idx];
    if (e & PTE_P) {
        if (e & PTE_PS)
            return NULL; /* a large page already covers it */
        return (uint64_t *)(e & PTE_ADDR);
    }
    uint64_t *n = table_alloc();
    if (!n)
        return NULL;
    table[idx] = (uint64_t)n | PTE_P | PTE_W;
    return n;
}

static status_t map_4k(uint64_t va, uint64_t pa, uint64_t flags)
{
    uint64_t *pdpt = next_level(pml4, (va >> 39) & 511);
    uint64_t *pd = pdpt ? next_level(pdpt, (va >> 30) & 511) : NULL;
    uint64_t *pt = pd ? next_level(pd, (va >> 21) & 511) : NULL;
    if (!pt)
        return STATUS_NO_MEMORY;
    pt[(va >> 12) & 511] = pa | flags | PTE_P;
    return STATUS_OK;
}

static status_t map_2m(uint64_t va, uint64_t pa, uint64_t flags)
{
    uint64_t *pdpt = next_level(pml4, (va >> 39) & 511);
    uint64_t *pd = pdpt ? next_level(pdpt, (va >> 30) & 511) : NULL;
    if (!pd)
        return STATUS_NO_MEMORY;
    uint64_t *e = &pd[(va >> 21) & 511];
    if ((*e & PTE_P) && !(*e & PTE_PS))
        return STATUS_OK; /* already split into 4 KiB pages (first 2 MiB): keep */
    *e = pa | flags | PTE_P | PTE_PS;
    return STATUS_OK;
}

/* Identity-maps [base, end) with the given attributes, 2 MiB pages where aligned. */
static status_t identity(uint64_t base, uint64_t end, uint64_t flags)
{
    base &= ~0x1fffffull;
    for (uint64_t a = base; a < end; a += 0x200000) {
        status_t s = map_2m(a, a, flags);
        if (s != STATUS_OK)
            return s;
    }
    stats.identity_bytes += end - base;
    return STATUS_OK;
}

static uint64_t *walk(uint64_t va, int *level_out)
{
    uint64_t *t = pml4;
    for (int level = 4; level >= 1; level--) {
        unsigned idx = (va >> (12 + 9 * (level - 1))) & 511;
        uint64_t *e = &t[idx];
        if (!(*e & PTE_P))
            return NULL;
        if (level == 1 || (*e & PTE_PS)) {
            *level_out = level;
            return e;
        }
        t = (uint64_t *)(*e & PTE_ADDR);
    }
    return NULL;
}

bool paging_is_mapped(uint64_t va)
{
    if (!pml4)
        return true; /* before paging_init: the loader's tables, assume so */
    int level;
    return walk(va, &level) != NULL;
}

uint64_t virt_to_phys(const void *p)
{
    uint64_t va = (uint64_t)p;
    if (va >= kernel_virt_base && va < (uint64_t)__kernel_end)
        return va - kernel_virt_base + kernel_phys_base;
    if (va < 0x0000800000000000ull)
        return va; /* identity */
    int level;
    uint64_t *e = walk(va, &level);
    if (!e)
        return 0;
    uint64_t page_mask = (1ull << (12 + 9 * (level - 1))) - 1;
    return (*e & PTE_ADDR & ~page_mask) | (va & page_mask);
}

void paging_cpu_init(void)
{
    wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_NXE);
    /* PAT: entry 1 (PWT) becomes write-combining; the rest keep their power-on values
     * WB, -, UC-, UC, WB, WT, UC-, UC. */
    uint64_t pat = rdmsr(MSR_PAT);
    pat = (pat & ~(0x7ull << 8)) | (0x01ull << 8);
    wrmsr(MSR_PAT, pat);
    write_cr0(read_cr0() | CR0_WP);
}

static status_t map_kernel(const struct boot_info *bi)
{
    kernel_phys_base = bi->kernel_phys;
    kernel_virt_base = bi->kernel_virt;
    for (uint64_t va = (uint64_t)__kernel_start; va < (uint64_t)__kernel_end; va += PAGE_SIZE) {
        uint64_t flags;
        if (va >= (uint64_t)__text_start && va < (uint64_t)__text_end)
            flags = PTE_G; /* read + execute */
        else if (va >= (uint64_t)__rodata_start && va < (uint64_t)__rodata_end)
            flags = PTE_G | PTE_NX;
        else
            flags = PTE_G | PTE_NX | PTE_W;
        status_t s = map_4k(va, va - kernel_virt_base + kernel_phys_base, flags);
        if (s != STATUS_OK)
            return s;
    }
    return STATUS_OK;
}

status_t paging_init(const struct boot_info *bi)
{
    uint64_t pa;
    status_t s = page_alloc_phys(1, 1, (4ull << 30) >> 12, &pa); /* below 4 GiB: the trampoline loads it */
    if (s != STATUS_OK)
        return s;
    memset((void *)pa, 0, PAGE_SIZE);
    pml4 = (uint64_t *)pa;
    stats.table_pages = 1;
    paging_cpu_init();

    /* First 2 MiB in 4 KiB pages, page 0 absent; the AP trampoline executable. */
    for (uint64_t a = PAGE_SIZE; a < 0x200000; a += PAGE_SIZE) {
        bool tramp = a >= bi->smp_trampoline && a < bi->smp_trampoline + bi->smp_trampoline_pages * PAGE_SIZE;
        if ((s = map_4k(a, a, tramp ? PTE_W : PTE_W | PTE_NX)) != STATUS_OK)
            return s;
    }
    /* 2 MiB .. 4 GiB: RAM and MMIO holes alike; MMIO is made uncached below. */
    if ((s = identity(0x200000, 4ull << 30, PTE_W | PTE_NX)) != STATUS_OK)
        return s;
    for (uint32_t i = 0; i < bi->mem_count; i++) {
        const struct boot_mem_region *r = &bi->mem[i];
        uint64_t end = r->base + r->pages * PAGE_SIZE;
        uint64_t attr = r->kind == BOOT_MEM_MMIO ? ATTR_UC : 0;
        if (end > (4ull << 30) || attr) {
            if ((s = identity(r->base, end, PTE_W | PTE_NX | attr)) != STATUS_OK)
                return s;
        }
    }
    /* The local APIC and IOAPIC window, uncached whatever the map said. */
    if ((s = identity(0xfec00000, 0xff000000, PTE_W | PTE_NX | ATTR_UC)) != STATUS_OK)
        return s;
    if (bi->fb.base && bi->fb.size)
        if ((s = identity(bi->fb.base, bi->fb.base + bi->fb.size, PTE_W | PTE_NX | ATTR_WC)) != STATUS_OK)
            return s;
    if ((s = map_kernel(bi)) != STATUS_OK)
        return s;
    write_cr4(read_cr4() | CR4_PGE);
    write_cr3((uint64_t)pml4);
    return STATUS_OK;
}

uint64_t paging_kernel_cr3(void)
{
    return (uint64_t)pml4;
}

status_t paging_map_mmio(uint64_t pa, uint64_t len)
{
    irql_t old = spin_lock(&lock);
    status_t s = STATUS_OK;
    for (uint64_t a = pa & ~(PAGE_SIZE - 1); a < pa + len && s == STATUS_OK; a += PAGE_SIZE)
        if (!paging_is_mapped(a))
            s = map_4k(a, a, PTE_W | PTE_NX | ATTR_UC);
    spin_unlock(&lock, old);
    return s;
}

status_t stack_alloc(size_t pages, uint64_t *top_out)
{
    irql_t old = spin_lock(&lock);
    uint64_t base = next_stack_va + PAGE_SIZE; /* guard page stays unmapped */
    next_stack_va = base + pages * PAGE_SIZE;
    status_t s = STATUS_OK;
    size_t done = 0;
    for (; done < pages; done++) {
        uint64_t pa;
        s = page_alloc_phys(1, 1, 0, &pa);
        if (s == STATUS_OK)
            s = map_4k(base + done * PAGE_SIZE, pa, PTE_W | PTE_NX | PTE_G);
        if (s != STATUS_OK)
            break;
        memset((void *)(base + done * PAGE_SIZE), 0, PAGE_SIZE);
    }
    if (s == STATUS_OK)
        stats.stack_pages += pages;
    spin_unlock(&lock, old);
    if (s != STATUS_OK) {
        stack_free(base + done * PAGE_SIZE, done);
        return s;
    }
    *top_out = base + pages * PAGE_SIZE;
    return STATUS_OK;
}

void stack_free(uint64_t top, size_t pages)
{
    /* The virtual range is never reused, so no other CPU can reach these frames through a stale TLB
     * entry once the stack's thread is gone: no shootdown needed. */
    irql_t old = spin_lock(&lock);
    for (size_t i = 0; i < pages; i++) {
        uint64_t va = top - (i + 1) * PAGE_SIZE;
        int level;
        uint64_t *e = walk(va, &level);
        if (!e || level != 1)
            continue;
        uint64_t pa = *e & PTE_ADDR;
        *e = 0;
        invlpg(va);
        page_free_phys(pa, 1);
    }
    stats.stack_pages -= pages;
    spin_unlock(&lock, old);
}

status_t paging_map_exec_page(uint64_t pa, void **va_out)
{
    irql_t old = spin_lock(&lock);
    uint64_t va = next_stack_va + PAGE_SIZE; /* after an unmapped page, like a stack */
    next_stack_va = va + PAGE_SIZE;
    status_t s = map_4k(va, pa, PTE_G); /* present, read-only, executable */
    spin_unlock(&lock, old);
    if (s == STATUS_OK)
        *va_out = (void *)va;
    return s;
}

void paging_get_stats(struct paging_stats *s)
{
    *s = stats;
}
