/*
 * hv: discovery, bring-up and shutdown of the Hyper-V layer, and the two hypercalls VMBus needs.
 * The per-CPU SynIC lives in synic.c, time in reftime.c and stimer.c.
 */
#include "hv/hv.h"

#include "hv/binding.h"
#include "hv/hv_internal.h"
#include "kernel/fmt.h"
#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/percpu.h"
#include "kernel/power.h"
#include "kernel/string.h"
#include "kernel/thread.h"
#include "arch-x86_64/paging.h"
#include "arch-x86_64/tsc.h"
#include "arch-x86_64/hypervisor.h"
#include "hv/proto/hvdefs.h"

/* The CPU layer's copies of the TLFS numbers it needs before this layer runs. */
_Static_assert(ARCH_HV_CPUID_INTERFACE == HV_CPUID_INTERFACE, "arch-x86_64/hypervisor.h");
_Static_assert(ARCH_HV_CPUID_FEATURES == HV_CPUID_FEATURES, "arch-x86_64/hypervisor.h");
_Static_assert(ARCH_HV_INTERFACE_HV1 == HV_INTERFACE_HV1, "arch-x86_64/hypervisor.h");
_Static_assert(ARCH_HV_PRIV_ACCESS_FREQUENCY_MSRS == HV_PRIV_ACCESS_FREQUENCY_MSRS, "arch-x86_64/hypervisor.h");
_Static_assert(ARCH_HV_MSR_TSC_FREQUENCY == HV_MSR_TSC_FREQUENCY, "arch-x86_64/hypervisor.h");
_Static_assert(ARCH_HV_MSR_APIC_FREQUENCY == HV_MSR_APIC_FREQUENCY, "arch-x86_64/hypervisor.h");

const struct hv_binding *hv_bind;
struct hv_cpu hv_cpus[MAX_CPUS];
static struct hv_features features;
static void *hypercall_page;

/* ---- discovery ---- */

bool hv_features_read(hv_cpuid_fn cpuid, struct hv_features *f)
{
    uint32_t r[4];
    memset(f, 0, sizeof *f);
    cpuid(HV_CPUID_VENDOR, 0, r);
    f->max_leaf = r[0];
    memcpy(f->vendor, &r[1], 4);
    memcpy(f->vendor + 4, &r[2], 4);
    memcpy(f->vendor + 8, &r[3], 4);
    f->vendor[12] = '\0';
    if (strcmp(f->vendor, "Microsoft Hv") != 0 || f->max_leaf < HV_CPUID_LIMITS)
        return false;
    cpuid(HV_CPUID_INTERFACE, 0, r);
    f->interface = r[0];
    if (f->interface != HV_INTERFACE_HV1)
        return false;
    cpuid(HV_CPUID_VERSION, 0, r);
    f->build = r[0];
    f->major = r[1] >> 16;
    f->minor = r[1] & 0xffff;
    f->service_pack = r[2];
    f->service_branch = r[3] >> 24;
    f->service_number = r[3] & 0xffffff;
    cpuid(HV_CPUID_FEATURES, 0, r);
    f->privileges_low = r[0];
    f->privileges_high = r[1];
    f->features = r[3];
    cpuid(HV_CPUID_RECOMMENDATIONS, 0, r);
    f->recommendations = r[0];
    cpuid(HV_CPUID_LIMITS, 0, r);
    f->max_vps = r[0];
    return true;
}

struct priv_name {
    uint32_t bit;
    bool high;
    bool required;
    const char *name;
};

/* TLFS names (T:datatypes/hv_partition_privilege_mask.md); `required` = this layer refuses without. */
static const struct priv_name priv_names[] = {
    { HV_PRIV_ACCESS_HYPERCALL_MSRS, false, true, "AccessHypercallMsrs" },
    { HV_PRIV_ACCESS_SYNIC_REGS, false, true, "AccessSynicRegs" },
    { HV_PRIV_POST_MESSAGES, true, true, "PostMessages" },
    { HV_PRIV_SIGNAL_EVENTS, true, true, "SignalEvents" },
    { HV_PRIV_ACCESS_VP_RUNTIME, false, false, "AccessVpRunTimeReg" },
    { HV_PRIV_ACCESS_PARTITION_REFCOUNT, false, false, "AccessPartitionReferenceCounter" },
    { HV_PRIV_ACCESS_SYNTHETIC_TIMERS, false, false, "AccessSyntheticTimerRegs" },
    { HV_PRIV_ACCESS_INTR_CTRL_REGS, false, false, "AccessIntrCtrlRegs" },
    { HV_PRIV_ACCESS_VP_INDEX, false, false, "AccessVpIndex" },
    { HV_PRIV_ACCESS_REFERENCE_TSC, false, false, "AccessPartitionReferenceTsc" },
    { HV_PRIV_ACCESS_GUEST_IDLE, false, false, "AccessGuestIdleReg" },
    { HV_PRIV_ACCESS_FREQUENCY_MSRS, false, false, "AccessFrequencyRegs" },
};

static bool has_priv(const struct hv_features *f, const struct priv_name *p)
{
    return ((p->high ? f->privileges_high : f->privileges_low) & p->bit) != 0;
}

const char *hv_features_missing(const struct hv_features *f)
{
    for (size_t i = 0; i < sizeof priv_names / sizeof priv_names[0]; i++)
        if (priv_names[i].required && !has_priv(f, &priv_names[i]))
            return priv_names[i].name;
    return NULL;
}

void hv_features_log(const struct hv_features *f)
{
    pr_info("hv: %s, interface Hv#1, version %u.%u build %u (service pack %u, branch %u.%u), up to %u VPs",
            f->vendor, f->major, f->minor, f->build, f->service_pack, f->service_branch, f->service_number,
            f->max_vps);
    char line[400];
    size_t n = 0;
    line[0] = '\0';
    for (size_t i = 0; i < sizeof priv_names / sizeof priv_names[0]; i++)
        if (has_priv(f, &priv_names[i]))
            n += fmt_snprintf(line + n, sizeof line - n, " %s", priv_names[i].name);
    pr_info("hv: privileges%s (eax %#x ebx %#x)", line, f->privileges_low, f->privileges_high);
    pr_info("hv: features edx %#x:%s%s%s%s; recommendations %#x%s", f->features,
            (f->features & HV_FEATURE_DIRECT_STIMER) ? " direct-stimer" : "",
            (f->features & HV_FEATURE_SINT_POLLING) ? " sint-polling" : "",
            (f->features & HV_FEATURE_XMM_HYPERCALL_INPUT) ? " xmm-input" : "",
            (f->features & HV_FEATURE_FREQUENCY_MSRS) ? " frequency-msrs" : "", f->recommendations,
            (f->recommendations & HV_RECOMMEND_DEPRECATING_AEOI) ? " (AutoEOI deprecated)" : "");
}

/* ---- bring-up ---- */

/* Open-source format (hyperv-facts 3.5): OS type 0x7F is not one Microsoft allocated (Linux 1,
 * FreeBSD 2, Xen 3, Illumos 4), so it cannot be mistaken for one of them; OS id 0x48 ('H'),
 * version 1. Documented in docs/ARCHITECTURE.md. */
#define HVRT_GUEST_OS_ID (HV_GUEST_OS_ID_OPEN_SOURCE | (0x7Full << 56) | (0x48ull << 48) | (1ull << 16) | 0)

static void shutdown_hook(void);

static void cpu_bringup(void *arg)
{
    status_t *result = arg;
    *result = hv_synic_cpu_init();
}

status_t hv_on_each_cpu(void (*fn)(void *status), status_t status[MAX_CPUS])
{
    struct thread *t[MAX_CPUS] = { 0 };
    status_t s = STATUS_OK;
    for (uint32_t i = 0; i < MAX_CPUS; i++) {
        if (!cpus[i] || !cpus[i]->online)
            continue;
        status[i] = STATUS_OK;
        if (thread_create("hv-cpu", fn, &status[i], (int)i, &t[i]) != STATUS_OK) {
            s = STATUS_NO_MEMORY;
            break;
        }
    }
    for (uint32_t i = 0; i < MAX_CPUS; i++) {
        if (!t[i])
            continue;
        thread_join(t[i]);
        if (status[i] != STATUS_OK && s == STATUS_OK)
            s = status[i];
    }
    return s;
}

/* Weak: the hosted tests build this layer without the kernel's timers (and without hv/clock.c). */
status_t hv_clock_install(bool allow_direct) __attribute__((weak));

status_t hv_init(void)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (hv_bind)
        return STATUS_OK;
    const struct hv_binding *b = NULL;
    if (hv_binding_hyperv_probe)
        b = hv_binding_hyperv_probe();
    if (!b && hv_binding_sim_probe)
        b = hv_binding_sim_probe();
    if (!b && hv_binding_hosted_probe)
        b = hv_binding_hosted_probe();
    if (!b) {
        pr_info("hv: no Hyper-V (CPUID has no \"Microsoft Hv\") and no hvsim answering on COM2: the Hyper-V "
                "layer is off");
        return STATUS_NOT_FOUND;
    }
    if (!hv_features_read(b->cpuid, &features)) {
        pr_err("hv: the %s binding's CPUID is not Microsoft Hv#1 (vendor \"%s\")", b->name, features.vendor);
        return STATUS_NOT_SUPPORTED;
    }
    hv_features_log(&features);
    const char *missing = hv_features_missing(&features);
    if (missing) {
        pr_err("hv: this partition lacks the %s privilege, which the Hyper-V layer needs: refusing", missing);
        return STATUS_NOT_SUPPORTED;
    }
    hv_bind = b;

    /* The hypercall page needs a non-zero guest OS id first (T:hypercall-interface.md). */
    b->wrmsr(HV_MSR_GUEST_OS_ID, HVRT_GUEST_OS_ID);
    hypercall_page = page_alloc(1);
    if (!hypercall_page)
        return STATUS_NO_MEMORY;
    uint64_t gpa = virt_to_phys(hypercall_page);
    uint64_t v = b->rdmsr(HV_MSR_HYPERCALL);
    b->wrmsr(HV_MSR_HYPERCALL, (v & 0xffe) | gpa | HV_HYPERCALL_ENABLE);
    if (!(b->rdmsr(HV_MSR_HYPERCALL) & HV_HYPERCALL_ENABLE)) {
        pr_err("hv: the hypercall page did not enable (HYPERCALL MSR %#llx)",
               (unsigned long long)b->rdmsr(HV_MSR_HYPERCALL));
        hv_bind = NULL;
        return STATUS_IO_ERROR;
    }
    if (b->hypercall_page_ready)
        b->hypercall_page_ready(hypercall_page);
    pr_info("hv: %s binding; guest OS id %#llx; hypercall page at %#llx", b->name,
            (unsigned long long)HVRT_GUEST_OS_ID, (unsigned long long)gpa);

    hv_reftime_init();
    status_t s = hv_synic_init();
    status_t st[MAX_CPUS];
    if (s == STATUS_OK)
        s = hv_on_each_cpu(cpu_bringup, st);
    if (s != STATUS_OK) {
        pr_err("hv: SynIC set-up failed: %s", status_name(s));
        return s;
    }
    power_register_shutdown_hook(shutdown_hook);
    if (b->stimer_clock && hv_clock_install && (features.privileges_low & HV_PRIV_ACCESS_SYNTHETIC_TIMERS)) {
        s = hv_clock_install(true);
        if (s != STATUS_OK)
            pr_warn("hv: synthetic timer 0 could not become the kernel clock (%s): staying on %s", status_name(s),
                    "the local APIC timer");
    }
    return STATUS_OK;
}

bool hv_active(void)
{
    return hv_bind != NULL;
}

const char *hv_binding_name(void)
{
    return hv_bind ? hv_bind->name : "none";
}

const struct hv_features *hv_get_features(void)
{
    return hv_bind ? &features : NULL;
}

uint32_t hv_vp_index(uint32_t cpu_id)
{
    return cpu_id < MAX_CPUS ? hv_cpus[cpu_id].vp_index : 0;
}

static void cpu_shutdown(void *arg)
{
    (void)arg;
    hv_stimer_cpu_stop();
    hv_synic_cpu_shutdown();
}

/* Power-off: every CPU's timer and SynIC off (from a thread on each CPU when called at PASSIVE; a
 * panic at a higher level does only its own CPU: the others are about to be stopped), then the
 * reference TSC page and the hypercall page. */
static void shutdown_hook(void)
{
    if (!hv_bind)
        return;
    status_t st[MAX_CPUS];
    if (irql_current() == IRQL_PASSIVE)
        (void)hv_on_each_cpu(cpu_shutdown, st);
    else
        cpu_shutdown(NULL);
    hv_reftime_shutdown();
    hv_bind->wrmsr(HV_MSR_HYPERCALL, hv_bind->rdmsr(HV_MSR_HYPERCALL) & ~HV_HYPERCALL_ENABLE);
    if (hv_bind->shutdown)
        hv_bind->shutdown();
    hv_synic_forget();
    hv_stimer_forget();
    hv_bind = NULL; /* the layer is down: hv_init() would start it afresh */
    pr_info("hv: synthetic timers, SynIC and hypercall page disabled");
}

/* ---- hypercalls ---- */

const char *hv_status_name(uint16_t s)
{
    switch (s) {
    case HV_STATUS_SUCCESS: return "SUCCESS";
    case HV_STATUS_INVALID_HYPERCALL_CODE: return "INVALID_HYPERCALL_CODE";
    case HV_STATUS_INVALID_HYPERCALL_INPUT: return "INVALID_HYPERCALL_INPUT";
    case HV_STATUS_INVALID_ALIGNMENT: return "INVALID_ALIGNMENT";
    case HV_STATUS_INVALID_PARAMETER: return "INVALID_PARAMETER";
    case HV_STATUS_ACCESS_DENIED: return "ACCESS_DENIED";
    case HV_STATUS_INSUFFICIENT_MEMORY: return "INSUFFICIENT_MEMORY";
    case HV_STATUS_INVALID_PORT_ID: return "INVALID_PORT_ID";
    case HV_STATUS_INVALID_CONNECTION_ID: return "INVALID_CONNECTION_ID";
    case HV_STATUS_INSUFFICIENT_BUFFERS: return "INSUFFICIENT_BUFFERS";
    case HV_STATUS_INVALID_SYNIC_STATE: return "INVALID_SYNIC_STATE";
    default: return "unknown status";
    }
}

static uint16_t post_once(uint32_t connection_id, uint32_t type, const void *payload, uint32_t size)
{
    /* The CPU's input page is reused by every post from this CPU: fill and call at HIGH, so neither a
     * thread switch nor an interrupt handler that posts can get in between. */
    irql_t old = irql_raise(IRQL_HIGH);
    struct hv_cpu *hc = &hv_cpus[this_cpu()->id];
    struct hv_input_post_message *in = hc->hypercall_in;
    in->connection_id = connection_id;
    in->reserved = 0;
    in->message_type = type;
    in->payload_size = size;
    memcpy(in->payload, payload, size);
    uint64_t rv = hv_bind->hypercall(HV_CALL_POST_MESSAGE, hc->hypercall_in_gpa, 0);
    irql_lower(old);
    return HV_HYPERCALL_STATUS(rv);
}

static void back_off(uint64_t us)
{
    if (irql_current() == IRQL_PASSIVE) {
        thread_sleep_ns(us * 1000);
        return;
    }
    uint64_t end = rdtsc() + ns_to_tsc(us * 1000);
    while (rdtsc() < end)
        cpu_relax();
}

uint16_t hv_post_message(uint32_t connection_id, uint32_t message_type, const void *payload, uint32_t size)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    if (!hv_bind)
        return HV_STATUS_INVALID_SYNIC_STATE;
    if (size > HV_MESSAGE_PAYLOAD_MAX)
        return HV_STATUS_INVALID_PARAMETER;
    uint64_t delay_us = 20;
    uint16_t s = HV_STATUS_SUCCESS;
    for (int attempt = 1; attempt <= HV_POST_RETRIES; attempt++) {
        s = post_once(connection_id, message_type, payload, size);
        if (s != HV_STATUS_INSUFFICIENT_BUFFERS && s != HV_STATUS_INSUFFICIENT_MEMORY)
            break;
        if (attempt == HV_POST_RETRIES)
            break;
        back_off(delay_us);
        if (delay_us < 10000)
            delay_us *= 2;
    }
    if (s != HV_STATUS_SUCCESS)
        pr_warn("hv: HvPostMessage to connection %#x (type %u, %u bytes) failed: %s", connection_id,
                message_type, size, hv_status_name(s));
    return s;
}

uint16_t hv_signal_event(uint32_t connection_id, uint16_t flag)
{
    if (!hv_bind)
        return HV_STATUS_INVALID_SYNIC_STATE;
    struct hv_input_signal_event in = { .connection_id = connection_id, .flag_number = flag };
    uint64_t input;
    memcpy(&input, &in, sizeof input);
    return HV_HYPERCALL_STATUS(hv_bind->hypercall(HV_CALL_SIGNAL_EVENT | HV_HYPERCALL_FAST, input, 0));
}
