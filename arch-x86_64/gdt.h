/*
 * gdt: each CPU's GDT and TSS. The TSS holds three IST stacks (each with a guard page under it):
 * IST1 double fault, IST2 NMI, IST3 machine check, so those run on a known-good stack even when the
 * fault was a kernel stack overflow. Called once per CPU during bring-up, at HIGH.
 */
#ifndef ARCH_GDT_H
#define ARCH_GDT_H

#include <stdint.h>

#define SEL_KERNEL_CODE 0x08
#define SEL_KERNEL_DATA 0x10
#define SEL_TSS 0x18

#define IST_DOUBLE_FAULT 1
#define IST_NMI 2
#define IST_MACHINE_CHECK 3

struct cpu;

struct __attribute__((packed)) tss {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
};
_Static_assert(sizeof(struct tss) == 104, "64-bit TSS is 104 bytes (Intel SDM Vol. 3A, Figure 8-11)");

/* Loads a GDT with the kernel segments and the CPU's TSS (with its IST stacks, already allocated into
 * c->ist_top), reloads the segment registers. */
void gdt_load(struct cpu *c, struct tss *tss, uint64_t *gdt_storage /* 8 entries */);

#endif
