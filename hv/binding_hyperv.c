/*
 * binding_hyperv: real Hyper-V. CPUID and the synthetic MSRs are the instructions themselves; a
 * hypercall is a near call to the hypercall page the hypervisor overlays on the page hv_init()
 * enabled (T:hypercall-interface.md: RCX control, RDX input, R8 output, RAX result).
 */
#include "arch-x86_64/cpu.h"
#include "arch-x86_64/hypervisor.h"
#include "arch-x86_64/paging.h"
#include "kernel/panic.h"
#include "hv/binding.h"

static void *hypercall_page;

static void hyperv_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t regs[4])
{
    struct cpuid_regs r = cpuid(leaf, subleaf);
    regs[0] = r.eax;
    regs[1] = r.ebx;
    regs[2] = r.ecx;
    regs[3] = r.edx;
}

/* The identity map is no-execute, so the page is called through an executable alias. */
static void hyperv_page_ready(void *page)
{
    void *exec;
    if (paging_map_exec_page(virt_to_phys(page), &exec) != STATUS_OK)
        panic("hv: no memory to map the hypercall page executable");
    hypercall_page = exec;
}

static uint64_t hyperv_hypercall(uint64_t control, uint64_t input, uint64_t output)
{
    uint64_t status;
    register uint64_t r8 __asm__("r8") = output;
    /* The page follows the Microsoft x64 calling convention for the registers it names and
     * preserves the rest except RCX, RDX, R8-R11 (clobbered here to be safe). */
    __asm__ volatile("call *%[page]"
                     : "=a"(status), "+c"(control), "+d"(input), "+r"(r8)
                     : [page] "m"(hypercall_page)
                     : "r9", "r10", "r11", "memory", "cc");
    return status;
}

static const struct hv_binding hyperv_binding = {
    .name = "hyper-v",
    .stimer_clock = true,
    .cpuid = hyperv_cpuid,
    .rdmsr = rdmsr,
    .wrmsr = wrmsr,
    .hypercall_page_ready = hyperv_page_ready,
    .hypercall = hyperv_hypercall,
};

const struct hv_binding *hv_binding_hyperv_probe(void)
{
    return hyperv_present() ? &hyperv_binding : NULL;
}
