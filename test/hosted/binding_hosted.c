/*
 * binding_hosted: the hv layer's binding for the hosted tests: each operation is a direct call into
 * the in-process hvsim, made at HIGH (as a VM exit would be atomic to the guest) so no interrupt
 * signal runs guest code while hvsim's lock is held. A faulting MSR access is a #GP: fatal, as on
 * hardware.
 */
#include "arch-x86_64/irql.h"
#include "hv/binding.h"
#include "kernel/panic.h"
#include "kernel/percpu.h"
#include "sim/hvsim.h"
#include "test/hosted/hosted.h"

static uint32_t vp(void)
{
    struct cpu *c = this_cpu();
    if (!c)
        panic("hosted binding: a Hyper-V operation from a thread that is not a VP");
    return c->id;
}

static void hosted_cpuid(uint32_t leaf, uint32_t subleaf, uint32_t regs[4])
{
    irql_t old = irql_raise(IRQL_HIGH);
    /* hv_init's discovery may run on the test thread: VP 0's view. */
    hvsim_cpuid(hosted_sim(), this_cpu() ? this_cpu()->id : 0, leaf, subleaf, regs);
    irql_lower(old);
}

static uint64_t hosted_rdmsr(uint32_t msr)
{
    irql_t old = irql_raise(IRQL_HIGH);
    uint64_t v = 0;
    bool ok = hvsim_rdmsr(hosted_sim(), this_cpu() ? vp() : 0, msr, &v);
    irql_lower(old);
    if (!ok)
        panic("rdmsr %#x raised #GP", msr);
    return v;
}

static void hosted_wrmsr(uint32_t msr, uint64_t value)
{
    irql_t old = irql_raise(IRQL_HIGH);
    bool ok = hvsim_wrmsr(hosted_sim(), this_cpu() ? vp() : 0, msr, value);
    irql_lower(old);
    if (!ok)
        panic("wrmsr %#x <- %#llx raised #GP", msr, (unsigned long long)value);
}

static uint64_t hosted_hypercall(uint64_t control, uint64_t input, uint64_t output)
{
    irql_t old = irql_raise(IRQL_HIGH);
    uint64_t rv = hvsim_hypercall(hosted_sim(), vp(), control, input, output);
    irql_lower(old);
    return rv;
}

static const struct hv_binding hosted_binding = {
    .name = "hosted",
    .cpuid = hosted_cpuid,
    .rdmsr = hosted_rdmsr,
    .wrmsr = hosted_wrmsr,
    .hypercall = hosted_hypercall,
};

const struct hv_binding *hv_binding_hosted_probe(void)
{
    return hosted_sim() ? &hosted_binding : NULL;
}
