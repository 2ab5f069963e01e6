/*
 * paging: the kernel's own page tables, built at boot from the memory map.
 *
 *   0 .. 4 GiB and all RAM above   identity-mapped, no-execute (2 MiB pages; the first 2 MiB in
 *                                  4 KiB pages with page 0 left unmapped to catch NULL)
 *   MMIO regions, LAPIC, IOAPIC    identity, uncached; the framebuffer write-combining
 *   0xffffff0000000000 ...         stacks: each an allocation of 4 KiB pages with an unmapped guard
 *                                  page below it, so an overflow faults instead of corrupting
 *   kernel image (-2 GiB)          text read+execute, rodata read-only, data and bss no-execute
 *
 * The PML4 sits below 4 GiB so the AP trampoline can load it in real mode. Physical addresses of
 * heap and page-allocator memory equal their virtual addresses (virt_to_phys handles the others).
 * paging_init runs once on the boot CPU at HIGH; the rest is callable at <= DISPATCH.
 */
#ifndef ARCH_PAGING_H
#define ARCH_PAGING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernel/status.h"

struct boot_info;

#define PAGE_SIZE 4096ull
#define STACK_REGION_BASE 0xffffff0000000000ull

status_t paging_init(const struct boot_info *bi) WARN_UNUSED;
uint64_t paging_kernel_cr3(void);
void paging_cpu_init(void); /* per CPU: EFER.NXE, CR0.WP, PAT (WC in entry 1) */
bool paging_is_mapped(uint64_t va);
uint64_t virt_to_phys(const void *p);
/* Maps [pa, pa+len) uncached at its identity address if it is not mapped yet (for MMIO found
 * later, e.g. an IOAPIC above 4 GiB). */
status_t paging_map_mmio(uint64_t pa, uint64_t len) WARN_UNUSED;

/* Maps one physical page read-only and executable at a fresh address in the stack region (the
 * identity map is no-execute): for a page the hypervisor fills with code (Hyper-V's hypercall page). */
status_t paging_map_exec_page(uint64_t pa, void **va_out) WARN_UNUSED;

/* A stack of `pages` pages with a guard page under it; returns its top (16-byte aligned). */
status_t stack_alloc(size_t pages, uint64_t *top_out) WARN_UNUSED;
void stack_free(uint64_t top, size_t pages);

/* For the boot report. */
struct paging_stats {
    uint64_t table_pages;
    uint64_t identity_bytes;
    uint64_t stack_pages;
};
void paging_get_stats(struct paging_stats *s);

#endif
