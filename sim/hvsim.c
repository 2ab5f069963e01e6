/*
 * hvsim core: creation and destruction, logging, the synthetic CPUID leaves, the synthetic MSRs
 * (dispatch, privilege checks, the partition-wide and SynIC registers), port registration, stats and
 * guest memory access. Contract: sim/hvsim.h. Message queues live in synic.c, hypercalls in
 * hypercall.c, time in clock.c and stimer.c.
 *
 * Semantics follow the TLFS (hyperv-facts.md 3.1-3.6): an MSR the partition has no privilege for, an
 * unknown synthetic MSR, a write to a read-only one or a bad value is #GP (the functions return
 * false and count msr_faults).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "hv/proto/simdb.h"
#include "sim/hvsim_internal.h"

/* The CPUID answers (T:feature-discovery.md): Windows Server 2022's hypervisor version. */
#define HVSIM_BUILD 20348u
#define HVSIM_MAJOR 10u
#define HVSIM_MINOR 0u
#define HVSIM_PRIVILEGES_LOW                                                                                   \
    (HV_PRIV_ACCESS_PARTITION_REFCOUNT | HV_PRIV_ACCESS_SYNIC_REGS | HV_PRIV_ACCESS_SYNTHETIC_TIMERS |       \
     HV_PRIV_ACCESS_HYPERCALL_MSRS | HV_PRIV_ACCESS_VP_INDEX | HV_PRIV_ACCESS_REFERENCE_TSC |                 \
     HV_PRIV_ACCESS_FREQUENCY_MSRS)
#define HVSIM_PRIVILEGES_HIGH (HV_PRIV_POST_MESSAGES | HV_PRIV_SIGNAL_EVENTS)

void hvsim_log(struct hvsim *sim, int verbosity, const char *fmt, ...)
{
    if (verbosity > sim->cfg.verbosity)
        return;
    char line[512];
    int n = snprintf(line, sizeof line, "hvsim: ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (sim->cfg.log)
        sim->cfg.log(sim->cfg.log_ctx, line);
    else
        fprintf(stderr, "%s\n", line);
}

void hvsim_raise(struct hvsim *sim, uint32_t vp, uint8_t vector)
{
    sim->stats.interrupts_raised++;
    sim->raise(sim->raise_ctx, vp, vector);
}

void *hvsim_gpa(struct hvsim *sim, uint64_t gpa, uint64_t len)
{
    if (len > sim->ram_size || gpa > sim->ram_size - len)
        return NULL;
    return sim->ram + gpa;
}

/* Logging before the instance exists. */
static void config_log(const struct hvsim_config *cfg, const char *line)
{
    if (cfg->log)
        cfg->log(cfg->log_ctx, line);
    else
        fprintf(stderr, "%s\n", line);
}

/* The model's mutex and the timer thread's condition variable (waits on CLOCK_MONOTONIC). */
static bool init_sync(struct hvsim *sim)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return false;
    bool ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&sim->timer_cond, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (ok && pthread_mutex_init(&sim->lock, NULL) != 0) {
        pthread_cond_destroy(&sim->timer_cond);
        ok = false;
    }
    return ok;
}

struct hvsim *hvsim_create(const struct hvsim_config *cfg, void *guest_ram, uint64_t ram_size,
                           hvsim_raise_fn raise, void *raise_ctx)
{
    if (!cfg)
        return NULL;
    if (!guest_ram || !raise || cfg->vp_count < 1 || cfg->vp_count > SIMDB_MAX_VPS ||
        cfg->queue_depth > HVSIM_MAX_QUEUE_DEPTH || (cfg->tsc_hz && cfg->tsc_hz <= HV_REF_TIME_HZ)) {
        config_log(cfg, "hvsim: create: bad configuration (no RAM or raise callback, vp_count outside 1..64, "
                        "queue_depth over 4096 or tsc_hz at most 10 MHz)");
        return NULL;
    }
    struct hvsim *sim = calloc(1, sizeof *sim + cfg->vp_count * sizeof(struct hvsim_vp));
    if (!sim) {
        config_log(cfg, "hvsim: create: out of memory");
        return NULL;
    }
    sim->cfg = *cfg;
    if (!sim->cfg.queue_depth)
        sim->cfg.queue_depth = HVSIM_DEFAULT_QUEUE_DEPTH;
    sim->ram = guest_ram;
    sim->ram_size = ram_size;
    sim->raise = raise;
    sim->raise_ctx = raise_ctx;
    sim->privileges_low = HVSIM_PRIVILEGES_LOW & ~cfg->deny_privileges_low;
    sim->privileges_high = HVSIM_PRIVILEGES_HIGH & ~cfg->deny_privileges_high;
    sim->features = HV_FEATURE_FREQUENCY_MSRS | (cfg->no_direct_stimer ? 0 : HV_FEATURE_DIRECT_STIMER);
    for (uint32_t v = 0; v < cfg->vp_count; v++)
        for (int s = 0; s < HV_SINT_COUNT; s++)
            sim->vp[v].sint[s] = HV_SINT_MASKED; /* reset value 0x10000 (T:inter-partition-communication.md) */

    if (!init_sync(sim)) {
        config_log(cfg, "hvsim: create: cannot initialise its lock");
        free(sim);
        return NULL;
    }
    if (!synic_alloc_queues(sim) || !hypercall_register_builtin_ports(sim)) {
        config_log(cfg, "hvsim: create: out of memory");
        synic_free_queues(sim);
        pthread_cond_destroy(&sim->timer_cond);
        pthread_mutex_destroy(&sim->lock);
        free(sim);
        return NULL;
    }
    clock_init(sim);
    hvsim_log(sim, 1, "created: %u VPs, %llu MiB guest RAM, TSC %llu Hz, queue depth %u", cfg->vp_count,
              (unsigned long long)(ram_size >> 20), (unsigned long long)sim->tsc_hz, sim->cfg.queue_depth);
    return sim;
}

void hvsim_destroy(struct hvsim *sim)
{
    if (!sim)
        return;
    stimer_stop_thread(sim);
    synic_free_queues(sim);
    pthread_cond_destroy(&sim->timer_cond);
    pthread_mutex_destroy(&sim->lock);
    free(sim);
}

void hvsim_cpuid(struct hvsim *sim, uint32_t vp, uint32_t leaf, uint32_t subleaf, uint32_t regs[4])
{
    (void)vp;
    (void)subleaf; /* none of the hypervisor leaves has subleaves */
    memset(regs, 0, 4 * sizeof regs[0]);
    switch (leaf) {
    case HV_CPUID_VENDOR:
        regs[0] = HV_CPUID_LIMITS;
        memcpy(&regs[1], "Micr", 4);
        memcpy(&regs[2], "osof", 4);
        memcpy(&regs[3], "t Hv", 4);
        break;
    case HV_CPUID_INTERFACE:
        regs[0] = HV_INTERFACE_HV1;
        break;
    case HV_CPUID_VERSION:
        regs[0] = HVSIM_BUILD;
        regs[1] = HVSIM_MAJOR << 16 | HVSIM_MINOR;
        break;
    case HV_CPUID_FEATURES:
        regs[0] = sim->privileges_low;
        regs[1] = sim->privileges_high;
        regs[3] = sim->features;
        break;
    case HV_CPUID_RECOMMENDATIONS:
        regs[0] = sim->cfg.recommend_no_aeoi ? HV_RECOMMEND_DEPRECATING_AEOI : 0;
        regs[1] = 0xffffffffu; /* spinlock retries before notifying: never notify */
        break;
    case HV_CPUID_LIMITS:
        regs[0] = sim->cfg.vp_count;
        break;
    default:
        break;
    }
}

/* ---- MSRs ---- */

static const char *msr_name(uint32_t msr, char *buf, size_t len)
{
    static const struct {
        uint32_t msr;
        const char *name;
    } names[] = {
        { HV_MSR_GUEST_OS_ID, "GUEST_OS_ID" }, { HV_MSR_HYPERCALL, "HYPERCALL" },
        { HV_MSR_VP_INDEX, "VP_INDEX" },       { HV_MSR_TIME_REF_COUNT, "TIME_REF_COUNT" },
        { HV_MSR_REFERENCE_TSC, "REFERENCE_TSC" }, { HV_MSR_TSC_FREQUENCY, "TSC_FREQUENCY" },
        { HV_MSR_APIC_FREQUENCY, "APIC_FREQUENCY" }, { HV_MSR_SCONTROL, "SCONTROL" },
        { HV_MSR_SVERSION, "SVERSION" },       { HV_MSR_SIEFP, "SIEFP" },
        { HV_MSR_SIMP, "SIMP" },               { HV_MSR_EOM, "EOM" },
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].msr == msr)
            return names[i].name;
    if (msr >= HV_MSR_SINT0 && msr < HV_MSR_SINT0 + HV_SINT_COUNT)
        snprintf(buf, len, "SINT%u", msr - HV_MSR_SINT0);
    else if (msr >= HV_MSR_STIMER0_CONFIG && msr < HV_MSR_STIMER0_CONFIG + 2 * HV_STIMER_COUNT)
        snprintf(buf, len, "STIMER%u_%s", (msr - HV_MSR_STIMER0_CONFIG) / 2,
                 (msr - HV_MSR_STIMER0_CONFIG) % 2 ? "COUNT" : "CONFIG");
    else
        snprintf(buf, len, "0x%08x", msr);
    return buf;
}

/* The privilege (CPUID 0x40000003 eax bit) an MSR needs, 0 if hvsim does not implement it. */
static uint32_t msr_privilege(uint32_t msr)
{
    switch (msr) {
    case HV_MSR_GUEST_OS_ID:
    case HV_MSR_HYPERCALL:
        return HV_PRIV_ACCESS_HYPERCALL_MSRS;
    case HV_MSR_VP_INDEX:
        return HV_PRIV_ACCESS_VP_INDEX;
    case HV_MSR_TIME_REF_COUNT:
        return HV_PRIV_ACCESS_PARTITION_REFCOUNT;
    case HV_MSR_REFERENCE_TSC:
        return HV_PRIV_ACCESS_REFERENCE_TSC;
    case HV_MSR_TSC_FREQUENCY:
    case HV_MSR_APIC_FREQUENCY:
        return HV_PRIV_ACCESS_FREQUENCY_MSRS;
    case HV_MSR_SCONTROL:
    case HV_MSR_SVERSION:
    case HV_MSR_SIEFP:
    case HV_MSR_SIMP:
    case HV_MSR_EOM:
        return HV_PRIV_ACCESS_SYNIC_REGS;
    default:
        if (msr >= HV_MSR_SINT0 && msr < HV_MSR_SINT0 + HV_SINT_COUNT)
            return HV_PRIV_ACCESS_SYNIC_REGS;
        if (msr >= HV_MSR_STIMER0_CONFIG && msr < HV_MSR_STIMER0_CONFIG + 2 * HV_STIMER_COUNT)
            return HV_PRIV_ACCESS_SYNTHETIC_TIMERS;
        return 0;
    }
}

/* Logs and counts a #GP; returns false for the caller to return. */
static bool msr_fault(struct hvsim *sim, uint32_t vp, bool write, uint32_t msr, uint64_t value, const char *why)
{
    char buf[32];
    sim->stats.msr_faults++;
    if (write)
        hvsim_log(sim, 0, "vp%u: wrmsr %s = 0x%llx: %s (#GP)", vp, msr_name(msr, buf, sizeof buf),
                  (unsigned long long)value, why);
    else
        hvsim_log(sim, 0, "vp%u: rdmsr %s: %s (#GP)", vp, msr_name(msr, buf, sizeof buf), why);
    return false;
}

/* The checks common to reads and writes; NULL if the access may proceed. */
static const char *msr_access_denied(const struct hvsim *sim, uint32_t vp, uint32_t msr)
{
    if (vp >= sim->cfg.vp_count)
        return "no such VP";
    uint32_t priv = msr_privilege(msr);
    if (!priv)
        return "not implemented";
    if (!(sim->privileges_low & priv))
        return "privilege denied";
    if ((msr == HV_MSR_TSC_FREQUENCY || msr == HV_MSR_APIC_FREQUENCY) && !(sim->features & HV_FEATURE_FREQUENCY_MSRS))
        return "feature not offered";
    return NULL;
}

static bool read_locked(struct hvsim *sim, uint32_t vp, uint32_t msr, uint64_t *value)
{
    const char *why = msr_access_denied(sim, vp, msr);
    if (why)
        return msr_fault(sim, vp, false, msr, 0, why);
    struct hvsim_vp *v = &sim->vp[vp];
    switch (msr) {
    case HV_MSR_GUEST_OS_ID:
        *value = sim->guest_os_id;
        return true;
    case HV_MSR_HYPERCALL:
        *value = sim->hypercall_msr;
        return true;
    case HV_MSR_VP_INDEX:
        *value = vp;
        return true;
    case HV_MSR_TIME_REF_COUNT:
        *value = clock_ref_time(sim);
        return true;
    case HV_MSR_REFERENCE_TSC:
        *value = sim->reference_tsc_msr;
        return true;
    case HV_MSR_TSC_FREQUENCY:
        *value = sim->tsc_hz;
        return true;
    case HV_MSR_APIC_FREQUENCY:
        *value = HVSIM_APIC_HZ;
        return true;
    case HV_MSR_SCONTROL:
        *value = v->scontrol;
        return true;
    case HV_MSR_SVERSION:
        *value = 1;
        return true;
    case HV_MSR_SIEFP:
        *value = v->siefp;
        return true;
    case HV_MSR_SIMP:
        *value = v->simp;
        return true;
    case HV_MSR_EOM:
        *value = 0; /* "Reads from the EOM register always returns zeros" (T:inter-partition-communication.md) */
        return true;
    default:
        break;
    }
    if (msr >= HV_MSR_SINT0 && msr < HV_MSR_SINT0 + HV_SINT_COUNT) {
        *value = v->sint[msr - HV_MSR_SINT0];
        return true;
    }
    uint32_t n = (msr - HV_MSR_STIMER0_CONFIG) / 2;
    *value = (msr - HV_MSR_STIMER0_CONFIG) % 2 ? v->stimer[n].count : v->stimer[n].config;
    return true;
}

bool hvsim_rdmsr(struct hvsim *sim, uint32_t vp, uint32_t msr, uint64_t *value)
{
    uint64_t v = 0;
    pthread_mutex_lock(&sim->lock);
    bool ok = read_locked(sim, vp, msr, &v);
    pthread_mutex_unlock(&sim->lock);
    *value = v;
    return ok;
}

/*
 * SIMP / SIEFP: bit 0 enable, 11:1 preserved, 63:12 the page. Enabling with a page outside guest RAM
 * is #GP here (the TLFS only says the page is then inaccessible; faulting catches the guest bug where
 * it happens). A newly enabled or moved page starts zeroed: the overlay of a fresh VP is zero.
 */
static bool write_synic_page(struct hvsim *sim, uint32_t vp, uint32_t msr, uint64_t *reg, uint64_t value)
{
    bool enable = value & HV_PAGE_ENABLE;
    if (enable && !hvsim_gpa(sim, value & HV_PAGE_GPA_MASK, HVSIM_PAGE_SIZE))
        return msr_fault(sim, vp, true, msr, value, "page outside guest RAM");
    bool was = *reg & HV_PAGE_ENABLE;
    if (enable && (!was || (*reg & HV_PAGE_GPA_MASK) != (value & HV_PAGE_GPA_MASK)))
        memset(hvsim_gpa(sim, value & HV_PAGE_GPA_MASK, HVSIM_PAGE_SIZE), 0, HVSIM_PAGE_SIZE);
    *reg = value;
    if (msr == HV_MSR_SIMP && enable)
        synic_deliver_all(sim, vp);
    return true;
}

static bool write_locked(struct hvsim *sim, uint32_t vp, uint32_t msr, uint64_t value)
{
    const char *why = msr_access_denied(sim, vp, msr);
    if (why)
        return msr_fault(sim, vp, true, msr, value, why);
    struct hvsim_vp *v = &sim->vp[vp];
    switch (msr) {
    case HV_MSR_GUEST_OS_ID:
        sim->guest_os_id = value;
        if (!value && (sim->hypercall_msr & HV_HYPERCALL_ENABLE)) {
            /* "if the guest OS identity is cleared to zero ... it will become disabled" */
            sim->hypercall_msr &= ~HV_HYPERCALL_ENABLE;
            hvsim_log(sim, 1, "vp%u: guest OS id cleared: hypercall page disabled", vp);
        }
        return true;
    case HV_MSR_HYPERCALL:
        if (sim->hypercall_msr & HV_HYPERCALL_LOCKED) {
            hvsim_log(sim, 0, "vp%u: wrmsr HYPERCALL = 0x%llx ignored: locked", vp, (unsigned long long)value);
            return true;
        }
        if ((value & HV_HYPERCALL_ENABLE) && !hvsim_gpa(sim, value & HV_PAGE_GPA_MASK, HVSIM_PAGE_SIZE))
            return msr_fault(sim, vp, true, msr, value, "hypercall page outside guest RAM");
        if ((value & HV_HYPERCALL_ENABLE) && !sim->guest_os_id) {
            /* "The enable bit will remain zero even if a one is written to it." */
            hvsim_log(sim, 0, "vp%u: hypercall page not enabled: guest OS id is 0", vp);
            value &= ~HV_HYPERCALL_ENABLE;
        }
        sim->hypercall_msr = value;
        return true;
    case HV_MSR_REFERENCE_TSC:
        sim->reference_tsc_msr = value;
        if ((value & HV_PAGE_ENABLE) && !hvsim_gpa(sim, value & HV_PAGE_GPA_MASK, HVSIM_PAGE_SIZE))
            hvsim_log(sim, 0, "vp%u: reference TSC page 0x%llx is outside guest RAM: not accessible", vp,
                      (unsigned long long)(value & HV_PAGE_GPA_MASK));
        clock_publish_tsc_page(sim);
        return true;
    case HV_MSR_SCONTROL: {
        bool was = v->scontrol & HV_SCONTROL_ENABLE;
        v->scontrol = value;
        if (!was && (value & HV_SCONTROL_ENABLE))
            synic_deliver_all(sim, vp);
        return true;
    }
    case HV_MSR_SIEFP:
        return write_synic_page(sim, vp, msr, &v->siefp, value);
    case HV_MSR_SIMP:
        return write_synic_page(sim, vp, msr, &v->simp, value);
    case HV_MSR_EOM:
        synic_eom(sim, vp);
        return true;
    case HV_MSR_VP_INDEX:
    case HV_MSR_TIME_REF_COUNT:
    case HV_MSR_TSC_FREQUENCY:
    case HV_MSR_APIC_FREQUENCY:
    case HV_MSR_SVERSION:
        return msr_fault(sim, vp, true, msr, value, "read-only");
    default:
        break;
    }
    if (msr >= HV_MSR_SINT0 && msr < HV_MSR_SINT0 + HV_SINT_COUNT) {
        if (!(value & HV_SINT_MASKED) && (value & HV_SINT_VECTOR_MASK) < HV_SINT_MIN_VECTOR)
            return msr_fault(sim, vp, true, msr, value, "vector below 16 on an unmasked SINT");
        uint64_t *sint = &v->sint[msr - HV_MSR_SINT0];
        bool was_open = synic_sint_open(*sint);
        *sint = value;
        if (!was_open && synic_sint_open(value))
            synic_deliver_all(sim, vp);
        return true;
    }
    uint32_t n = (msr - HV_MSR_STIMER0_CONFIG) / 2;
    if ((msr - HV_MSR_STIMER0_CONFIG) % 2) {
        stimer_write_count(sim, vp, n, value);
        return true;
    }
    why = stimer_write_config(sim, vp, n, value);
    return why ? msr_fault(sim, vp, true, msr, value, why) : true;
}

bool hvsim_wrmsr(struct hvsim *sim, uint32_t vp, uint32_t msr, uint64_t value)
{
    pthread_mutex_lock(&sim->lock);
    if (sim->cfg.verbosity >= 1) {
        char buf[32];
        hvsim_log(sim, 1, "vp%u: wrmsr %s = 0x%llx", vp, msr_name(msr, buf, sizeof buf), (unsigned long long)value);
    }
    bool ok = write_locked(sim, vp, msr, value);
    pthread_mutex_unlock(&sim->lock);
    return ok;
}

/* ---- ports ---- */

const struct hvsim_port *hvsim_find_port(const struct hvsim *sim, uint32_t connection_id)
{
    for (uint32_t i = 0; i < sim->port_count; i++)
        if (sim->ports[i].connection_id == connection_id)
            return &sim->ports[i];
    return NULL;
}

/* Adds the port (exactly one of mfn and efn set) under the model lock. */
static bool register_port(struct hvsim *sim, uint32_t connection_id, hvsim_message_fn mfn, hvsim_event_fn efn,
                          void *ctx)
{
    pthread_mutex_lock(&sim->lock);
    bool ok = !hvsim_find_port(sim, connection_id) && sim->port_count < HVSIM_PORTS_MAX;
    if (ok)
        sim->ports[sim->port_count++] =
            (struct hvsim_port){ .connection_id = connection_id, .message_fn = mfn, .event_fn = efn, .ctx = ctx };
    else
        hvsim_log(sim, 0, "port 0x%x not registered: %s", connection_id,
                  sim->port_count == HVSIM_PORTS_MAX ? "too many ports" : "connection id in use");
    pthread_mutex_unlock(&sim->lock);
    return ok;
}

bool hvsim_register_message_port(struct hvsim *sim, uint32_t connection_id, hvsim_message_fn fn, void *ctx)
{
    return fn && register_port(sim, connection_id, fn, NULL, ctx);
}

bool hvsim_register_event_port(struct hvsim *sim, uint32_t connection_id, hvsim_event_fn fn, void *ctx)
{
    return fn && register_port(sim, connection_id, NULL, fn, ctx);
}

bool hvsim_unregister_port(struct hvsim *sim, uint32_t connection_id)
{
    pthread_mutex_lock(&sim->lock);
    bool found = false;
    for (uint32_t i = 0; i < sim->port_count; i++) {
        if (sim->ports[i].connection_id == connection_id) {
            sim->ports[i] = sim->ports[--sim->port_count]; /* order does not matter: ids are unique */
            found = true;
            break;
        }
    }
    pthread_mutex_unlock(&sim->lock);
    return found;
}

void hvsim_get_stats(struct hvsim *sim, struct hvsim_stats *out)
{
    pthread_mutex_lock(&sim->lock);
    *out = sim->stats;
    pthread_mutex_unlock(&sim->lock);
}
