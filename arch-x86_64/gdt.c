#include "arch-x86_64/gdt.h"

#include "kernel/percpu.h"
#include "kernel/string.h"

struct __attribute__((packed)) gdtr {
    uint16_t limit;
    uint64_t base;
};

void gdt_load(struct cpu *c, struct tss *tss, uint64_t *gdt)
{
    memset(tss, 0, sizeof *tss);
    tss->ist[IST_DOUBLE_FAULT - 1] = c->ist_top[0];
    tss->ist[IST_NMI - 1] = c->ist_top[1];
    tss->ist[IST_MACHINE_CHECK - 1] = c->ist_top[2];
    tss->iomap_base = sizeof *tss; /* no I/O permission bitmap */
    c->tss = tss;
    c->gdt = gdt;

    gdt[0] = 0;
    gdt[1] = 0x00af9a000000ffffull; /* 64-bit code, DPL 0 */
    gdt[2] = 0x00cf92000000ffffull; /* data, DPL 0 */
    uint64_t base = (uint64_t)tss, limit = sizeof *tss - 1;
    gdt[3] = (limit & 0xffff) | ((base & 0xffffff) << 16) | (0x89ull << 40) /* present, available 64-bit TSS */ |
             ((limit >> 16) & 0xf) << 48 | ((base >> 24) & 0xff) << 56;
    gdt[4] = base >> 32;
    gdt[5] = gdt[6] = gdt[7] = 0;

    struct gdtr r = { 8 * 8 - 1, (uint64_t)gdt };
    __asm__ volatile("lgdt %0\n\t"
                     "mov %1, %%ds\n\t"
                     "mov %1, %%es\n\t"
                     "mov %1, %%ss\n\t"
                     "xor %%eax, %%eax\n\t"
                     "mov %%ax, %%fs\n\t"
                     "pushq %2\n\t"
                     "lea 1f(%%rip), %%rax\n\t"
                     "pushq %%rax\n\t"
                     "lretq\n"
                     "1:\n\t"
                     "ltr %w3"
                     :
                     : "m"(r), "r"((uint64_t)SEL_KERNEL_DATA), "i"(SEL_KERNEL_CODE), "r"((uint16_t)SEL_TSS)
                     : "rax", "memory");
    /* GS is left alone: its base is the per-CPU pointer, set through the MSR. Loading a selector
     * into GS would clear it. */
}
