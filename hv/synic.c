/*
 * synic: the synthetic interrupt controller of every CPU: its message (SIM) and event-flag (SIEF)
 * pages, the SINTs, and the dispatch of what arrives to the handler registered for each SINT.
 *
 * All sixteen SINTs are unmasked on one vector, so that nothing the host sends can sit unseen in a
 * masked SINT: a message or event flag in a SINT nobody registered is logged and dropped. AutoEOI is
 * never used: the interrupt dispatch always EOIs (arch-x86_64/idt.c), and recent hosts recommend
 * against it (HV_RECOMMEND_DEPRECATING_AEOI).
 *
 * The interrupt (at HV_SINT_IRQL) runs the handlers registered at that level and queues the CPU's
 * SynIC DPC for the DISPATCH-level ones and for the drops. A slot is consumed as the TLFS says:
 * message type cleared, full barrier, then EOM only if the host set the pending flag
 * (T:inter-partition-communication.md; freebsd vmbus.c vmbus_msg_task).
 *
 * A slot is host-shared memory and a hostile host may rewrite it while the guest parses it, so each
 * one is read once (kernel/readonce.h): its type, size and origin, then the payload its size names,
 * into a private copy that hv/message.h checks and the handler gets. The pending flag is read only
 * in consume(), after the type is cleared, as the EOM rule wants.
 */
#include "hv/hv_internal.h"
#include "hv/message.h"
#include "kernel/readonce.h"

#include "arch-x86_64/interrupts.h"
#include "arch-x86_64/paging.h"
#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/thread.h"

#define HV_SINT_IRQL 8            /* vectors 0x80..0x8f: above disk/network DPC work, below clock */
#define MESSAGES_PER_PASS 64      /* bound per SINT per pass, so one busy SINT cannot starve others */

static uint8_t sint_vector;
static struct hv_sint_handler handlers[HV_SINT_COUNT];
static volatile bool handler_active[HV_SINT_COUNT];

irql_t hv_sint_device_irql(void)
{
    return HV_SINT_IRQL;
}

uint8_t hv_sint_vector(void)
{
    return sint_vector;
}

/* Counters are written by their CPU and read by anyone (hv_synic_get_stats). */
static uint64_t stat_inc(uint64_t *counter)
{
    return __atomic_add_fetch(counter, 1, __ATOMIC_RELAXED);
}

/* First ten, then every thousandth: bad input from the host is reported without flooding the log. */
static bool worth_logging(uint64_t count)
{
    return count <= 10 || count % 1000 == 0;
}

static void consume(struct hv_cpu *hc, volatile struct hv_message *slot)
{
    /* A sequentially consistent store is a full barrier (xchg on x86): the host's pending flag is
     * read only after the slot is seen free. */
    __atomic_store_n(&slot->header.message_type, HV_MESSAGE_NONE, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&slot->header.message_flags, __ATOMIC_SEQ_CST) & HV_MESSAGE_FLAG_PENDING) {
        stat_inc(&hc->stats.eoms);
        hv_bind->wrmsr(HV_MSR_EOM, 0);
    }
}

static bool handled_at(uint8_t sint, irql_t level)
{
    return __atomic_load_n(&handler_active[sint], __ATOMIC_ACQUIRE) && handlers[sint].irql == level;
}

/* Messages of one SINT whose handler runs at `level` (or, for level DISPATCH, of a SINT nobody
 * registered). */
static void drain_messages(struct hv_cpu *hc, uint32_t cpu, uint8_t sint, irql_t level)
{
    volatile struct hv_message *slot = &hc->simp->slot[sint];
    bool active = handled_at(sint, level);
    for (int n = 0; n < MESSAGES_PER_PASS; n++) {
        /* The type first (acquire: the host writes it last), then what the checks and the handler
         * use. The flags are not copied: the host may set PENDING meanwhile, consume() reads them. */
        uint32_t type = __atomic_load_n(&slot->header.message_type, __ATOMIC_ACQUIRE);
        struct hv_message copy = { .header = { .message_type = type,
                                               .payload_size = read_once_u8((const void *)&slot->header.payload_size),
                                               .origination_id =
                                                   read_once_u64((const void *)&slot->header.origination_id) } };
        uint8_t size = copy.header.payload_size;
        enum hv_slot_verdict verdict = hv_slot_check(type, size);
        if (verdict == HV_SLOT_EMPTY)
            return;
        if (verdict == HV_SLOT_BAD_SIZE) {
            if (worth_logging(stat_inc(&hc->stats.dropped_bad_size)))
                pr_warn("hv: cpu%u SINT%u: message type %#x claims %u payload bytes (max 240): dropped", cpu, sint,
                        type, size);
        } else if (!active) {
            if (worth_logging(stat_inc(&hc->stats.dropped_no_handler)))
                pr_warn("hv: cpu%u SINT%u: message type %#x for a SINT nobody registered: dropped", cpu, sint, type);
        } else {
            stat_inc(&hc->stats.messages);
            read_once_copy(copy.payload, (const void *)slot->payload, size); /* size <= 240: checked */
            status_t s = handlers[sint].message(handlers[sint].ctx, cpu, &copy);
            if (s == STATUS_NOT_SUPPORTED && worth_logging(stat_inc(&hc->stats.dropped_unknown_type)))
                pr_warn("hv: cpu%u SINT%u (%s): unknown message type %#x: dropped", cpu, sint, handlers[sint].name,
                        type);
        }
        consume(hc, slot);
    }
}

static void drain_events(struct hv_cpu *hc, uint32_t cpu, uint8_t sint, irql_t level)
{
    volatile struct hv_event_flags *blk = &hc->siefp->sint[sint];
    bool active = handled_at(sint, level);
    uint32_t owned = active ? handlers[sint].event_flags : 0;
    for (uint32_t w = 0; w < HV_EVENT_FLAGS_PER_SINT / 64; w++) {
        if (!__atomic_load_n(&blk->bits[w], __ATOMIC_RELAXED))
            continue;
        /* The host sets flags with atomic ORs; take the whole word at once. */
        uint64_t bits = __atomic_exchange_n(&blk->bits[w], 0, __ATOMIC_ACQ_REL);
        while (bits) {
            uint32_t flag = w * 64 + (uint32_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            if (flag < owned) {
                stat_inc(&hc->stats.events);
                handlers[sint].event(handlers[sint].ctx, cpu, flag);
            } else if (worth_logging(stat_inc(&hc->stats.stray_events))) {
                pr_warn("hv: cpu%u SINT%u: event flag %u belongs to nobody: dropped", cpu, sint, flag);
            }
        }
    }
}

/* Level DISPATCH also sweeps the SINTs nobody registered. */
static void process(struct hv_cpu *hc, uint32_t cpu, irql_t level)
{
    for (uint8_t s = 0; s < HV_SINT_COUNT; s++) {
        bool mine = handled_at(s, level);
        if (!mine && (level != IRQL_DISPATCH || __atomic_load_n(&handler_active[s], __ATOMIC_ACQUIRE)))
            continue;
        drain_messages(hc, cpu, s, level);
        if (!mine || handlers[s].event)
            drain_events(hc, cpu, s, level);
    }
}

static void synic_interrupt(struct int_frame *f, void *ctx)
{
    (void)f;
    (void)ctx;
    uint32_t cpu = this_cpu()->id;
    struct hv_cpu *hc = &hv_cpus[cpu];
    if (!hc->up)
        return;
    stat_inc(&hc->stats.interrupts);
    process(hc, cpu, HV_SINT_IRQL);
    dpc_queue(&hc->synic_dpc);
}

static void synic_dpc(struct dpc *d, void *ctx)
{
    (void)d;
    (void)ctx;
    uint32_t cpu = this_cpu()->id;
    process(&hv_cpus[cpu], cpu, IRQL_DISPATCH);
}

static uint64_t enable_page(uint32_t msr, void *page)
{
    uint64_t gpa = virt_to_phys(page);
    uint64_t v = hv_bind->rdmsr(msr);
    hv_bind->wrmsr(msr, (v & 0xffe) | gpa | HV_PAGE_ENABLE); /* bits 11:1 are RsvdP: preserved */
    return gpa;
}

status_t hv_synic_init(void)
{
    return sint_vector ? STATUS_OK : irq_alloc_vector(HV_SINT_IRQL, synic_interrupt, NULL, &sint_vector);
}

status_t hv_synic_cpu_init(void)
{
    struct cpu *c = this_cpu();
    struct hv_cpu *hc = &hv_cpus[c->id];
    const struct hv_features *f = hv_get_features();
    hc->vp_index = (f->privileges_low & HV_PRIV_ACCESS_VP_INDEX) ? (uint32_t)hv_bind->rdmsr(HV_MSR_VP_INDEX) : c->id;
    c->hv_vp_index = hc->vp_index;
    hc->simp = page_alloc(1);
    hc->siefp = page_alloc(1);
    hc->hypercall_in = page_alloc(1);
    hc->hypercall_out = page_alloc(1);
    if (!hc->simp || !hc->siefp || !hc->hypercall_in || !hc->hypercall_out)
        return STATUS_NO_MEMORY;
    hc->hypercall_in_gpa = virt_to_phys(hc->hypercall_in);
    hc->hypercall_out_gpa = virt_to_phys(hc->hypercall_out);
    dpc_init(&hc->synic_dpc, synic_dpc, NULL);
    dpc_set_target(&hc->synic_dpc, (int32_t)c->id);
    uint64_t simp = enable_page(HV_MSR_SIMP, hc->simp);
    uint64_t siefp = enable_page(HV_MSR_SIEFP, hc->siefp);
    hc->up = true;
    for (uint32_t s = 0; s < HV_SINT_COUNT; s++) {
        uint64_t v = hv_bind->rdmsr(HV_MSR_SINT0 + s);
        v &= ~(HV_SINT_VECTOR_MASK | HV_SINT_MASKED | HV_SINT_AUTO_EOI | HV_SINT_POLLING);
        hv_bind->wrmsr(HV_MSR_SINT0 + s, v | sint_vector);
    }
    hv_bind->wrmsr(HV_MSR_SCONTROL, hv_bind->rdmsr(HV_MSR_SCONTROL) | HV_SCONTROL_ENABLE);
    if (hv_bind->cpu_ready)
        hv_bind->cpu_ready(hc->vp_index, sint_vector);
    pr_info("hv: cpu%u is VP %u: SynIC on, SIM %#llx, SIEF %#llx, 16 SINTs on vector %#x (IRQL %u)", c->id,
            hc->vp_index, (unsigned long long)simp, (unsigned long long)siefp, sint_vector, HV_SINT_IRQL);
    return STATUS_OK;
}

void hv_synic_cpu_shutdown(void)
{
    struct hv_cpu *hc = &hv_cpus[this_cpu()->id];
    if (!hc->up)
        return;
    for (uint32_t s = 0; s < HV_SINT_COUNT; s++)
        hv_bind->wrmsr(HV_MSR_SINT0 + s, hv_bind->rdmsr(HV_MSR_SINT0 + s) | HV_SINT_MASKED);
    hv_bind->wrmsr(HV_MSR_SCONTROL, hv_bind->rdmsr(HV_MSR_SCONTROL) & ~HV_SCONTROL_ENABLE);
    hv_bind->wrmsr(HV_MSR_SIMP, hv_bind->rdmsr(HV_MSR_SIMP) & ~HV_PAGE_ENABLE);
    hv_bind->wrmsr(HV_MSR_SIEFP, hv_bind->rdmsr(HV_MSR_SIEFP) & ~HV_PAGE_ENABLE);
    hc->up = false;
}

/* A round of PASSIVE threads on every CPU: after it, no ISR or DPC that started before is running. */
static void quiesce_one(void *arg)
{
    (void)arg;
}

static void quiesce_all_cpus(void)
{
    status_t st[MAX_CPUS];
    (void)hv_on_each_cpu(quiesce_one, st);
}

status_t hv_sint_register(uint8_t sint, const struct hv_sint_handler *h)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!hv_bind)
        return STATUS_INVALID_STATE;
    if (sint >= HV_SINT_COUNT || !h || !h->message || (h->irql != IRQL_DISPATCH && h->irql != HV_SINT_IRQL) ||
        h->event_flags > HV_EVENT_FLAGS_PER_SINT || (h->event_flags && !h->event))
        return STATUS_INVALID_PARAMETER;
    if (handler_active[sint])
        return STATUS_BUSY;
    handlers[sint] = *h;
    __atomic_store_n(&handler_active[sint], true, __ATOMIC_RELEASE);
    return STATUS_OK;
}

void hv_sint_unregister(uint8_t sint)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (sint >= HV_SINT_COUNT || !handler_active[sint])
        return;
    __atomic_store_n(&handler_active[sint], false, __ATOMIC_RELEASE);
    quiesce_all_cpus();
}

void hv_synic_forget(void)
{
    for (uint8_t s = 0; s < HV_SINT_COUNT; s++)
        handler_active[s] = false;
    sint_vector = 0;
    for (uint32_t i = 0; i < MAX_CPUS; i++)
        hv_cpus[i] = (struct hv_cpu){ 0 };
}

void hv_synic_get_stats(uint32_t cpu, struct hv_synic_stats *out)
{
    *out = (struct hv_synic_stats){ 0 };
    if (cpu >= MAX_CPUS)
        return;
    const uint64_t *from = (const uint64_t *)&hv_cpus[cpu].stats;
    uint64_t *to = (uint64_t *)out;
    for (size_t i = 0; i < sizeof *out / sizeof(uint64_t); i++)
        to[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
}
