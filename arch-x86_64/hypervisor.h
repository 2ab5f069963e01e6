/*
 * hypervisor: what CPUID says about the hypervisor underneath (leaf 0x40000000 and up), shared by the
 * clock code, power-off and the applications' reports. Callable at any IRQL.
 */
#ifndef ARCH_HYPERVISOR_H
#define ARCH_HYPERVISOR_H

#include <stdbool.h>
#include <stdint.h>

#include "arch-x86_64/cpu.h"
#include "kernel/string.h"

/* The few Hyper-V numbers the CPU layer needs before the hv layer runs (TLFS 2.4 and 3.x; the
 * same values as hv/proto/hvdefs.h, which hv/hv.c checks with static asserts: arch-x86_64 includes
 * nothing of the layers above it). */
#define ARCH_HV_CPUID_INTERFACE 0x40000001u /* eax = "Hv#1" */
#define ARCH_HV_CPUID_FEATURES 0x40000003u
#define ARCH_HV_INTERFACE_HV1 0x31237648u   /* "Hv#1" */
#define ARCH_HV_PRIV_ACCESS_FREQUENCY_MSRS (1u << 11)
#define ARCH_HV_MSR_TSC_FREQUENCY 0x40000022u
#define ARCH_HV_MSR_APIC_FREQUENCY 0x40000023u

/* The 12-character vendor of leaf 0x40000000 into vendor[13]; false (vendor "none") without one. */
static inline bool cpu_hypervisor_vendor(char vendor[13], uint32_t *max_leaf)
{
    if (!(cpuid(1, 0).ecx & (1u << 31))) {
        memcpy(vendor, "none", 5);
        *max_leaf = 0;
        return false;
    }
    struct cpuid_regs r = cpuid(0x40000000, 0);
    memcpy(vendor, &r.ebx, 4);
    memcpy(vendor + 4, &r.ecx, 4);
    memcpy(vendor + 8, &r.edx, 4);
    vendor[12] = '\0';
    *max_leaf = r.eax;
    return true;
}

/* Microsoft's hypervisor with the "Hv#1" interface (TLFS: CPUID 0x40000000/0x40000001). */
static inline bool hyperv_present(void)
{
    char v[13];
    uint32_t max;
    return cpu_hypervisor_vendor(v, &max) && strcmp(v, "Microsoft Hv") == 0 && max >= 0x40000005 &&
           cpuid(ARCH_HV_CPUID_INTERFACE, 0).eax == ARCH_HV_INTERFACE_HV1;
}

/* Hyper-V lets this partition read HV_X64_MSR_TSC_FREQUENCY / APIC_FREQUENCY. */
static inline bool hyperv_frequency_msrs(void)
{
    return hyperv_present() && (cpuid(ARCH_HV_CPUID_FEATURES, 0).eax & ARCH_HV_PRIV_ACCESS_FREQUENCY_MSRS);
}

#endif
