/*
 * binding: the one seam between the shared Hyper-V layer (hv/hv.c, hv/synic.c, hv/reftime.c,
 * hv/stimer.c, and VMBus above them) and what carries its requests to a hypervisor.
 *
 * The seam is the architectural interface itself: CPUID, the synthetic MSRs and the hypercall. So
 * everything that decides anything (feature checks, SynIC programming, the message-consume protocol,
 * timers) is the same code on every binding, and hvsim models Hyper-V at the level the TLFS
 * specifies it.
 *
 *   hyperv  (hv/binding_hyperv.c)  real Hyper-V: cpuid/rdmsr/wrmsr instructions, the hypercall page.
 *   hvsim   (hv/binding_sim.c)     under QEMU: each operation becomes a request to the hvsim process
 *                                  (hv/proto/simdb.h); its interrupts arrive through a UART and are passed
 *                                  on to the target CPU as IPIs.
 *   hosted  (test/hosted/)         in-process hvsim, one thread per VP, interrupts as signals.
 *
 * Every operation acts on the calling CPU's VP (as the instructions do) and may be called at any
 * IRQL. hypercall() is valid once HV_MSR_HYPERCALL is enabled; its input/output are guest physical
 * addresses (slow) or register values (fast), exactly as RDX/R8 of the x64 hypercall ABI.
 */
#ifndef HV_BINDING_H
#define HV_BINDING_H

#include <stdbool.h>
#include <stdint.h>

struct hv_binding {
    const char *name;
    /* Make synthetic timer 0 the kernel's clock at hv_init(): true on Hyper-V (Gen2 has no PIT, and
     * the synthetic timer is what its guests are meant to use); false for hvsim, where each timer
     * interrupt is a round trip through the doorbell and the LAPIC timer is the better clock. */
    bool stimer_clock;
    void (*cpuid)(uint32_t leaf, uint32_t subleaf, uint32_t regs[4]);
    uint64_t (*rdmsr)(uint32_t msr);
    void (*wrmsr)(uint32_t msr, uint64_t value);
    /* Enable the hypercall page at page/page_gpa (the shared code has written HV_MSR_HYPERCALL). */
    void (*hypercall_page_ready)(void *page);
    uint64_t (*hypercall)(uint64_t control, uint64_t input, uint64_t output);
    /* Called on each CPU after its SynIC is set up with `vector` (the sim binding routes it). */
    void (*cpu_ready)(uint32_t vp_index, uint8_t vector);
    /* Last thing at power-off, after the SynIC and hypercall page are disabled. */
    void (*shutdown)(void);
};

/* The bindings. probe() returns the binding when its hypervisor is there, else NULL. Weak: each
 * build links the ones it has (the kernel: hyperv and sim; the hosted tests: hosted). */
const struct hv_binding *hv_binding_hyperv_probe(void) __attribute__((weak));
const struct hv_binding *hv_binding_sim_probe(void) __attribute__((weak));
const struct hv_binding *hv_binding_hosted_probe(void) __attribute__((weak));

#endif
