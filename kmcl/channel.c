/*
 * channel: the KMCL-style channel, its interrupt-level executor (a DPC per channel on its target
 * CPU) and passive-level executor (a worker thread per channel), over hv/vmbus and kmcl's rings.
 * Contract in kmcl/channel.h.
 *
 * Locks: send_lock (DISPATCH) guards the outbound ring, the send and completion backlogs and the
 * transaction table; in_lock (DISPATCH) guards the in-flight pool and the deferred queue. An
 * incoming packet's context is retired by a hold count (the callback, the owner until complete, a
 * completion waiting for ring space). Only one context reads the
 * inbound ring at a time: the channel's DPC, or its worker when the channel processes at PASSIVE.
 */
#include "kmcl/channel.h"

#include "arch-x86_64/cpu.h"
#include "arch-x86_64/spinlock.h"
#include "kernel/list.h"
#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/percpu.h"
#include "kernel/string.h"
#include "kernel/sync.h"
#include "kernel/thread.h"
#include "kmcl/core/ring.h"
#include "kmcl/core/xact.h"

enum kmcl_state { KMCL_INITIALIZING, KMCL_ENABLED, KMCL_DISABLING, KMCL_DISABLED };

#define DEFAULT_MAX_PACKET 4096u
#define DEFAULT_RING_PAGES 16u /* 64 KiB per direction, control page included */
#define XACT_CAPACITY 1024u

#define COMPLETION_INLINE 64u        /* completion payloads up to this size queue without allocating */

struct kmcl_incoming {
    struct list link;              /* free list, the deferred queue, or the completion backlog */
    struct kmcl_channel *ch;
    uint64_t trans_id;
    bool completion_requested;
    uint32_t in_callback;          /* 1 while process_packet runs on it */
    uint32_t holds;                /* who still needs it: the callback, the owner until complete, a
                                      queued completion; retired (back to the pool) at 0 */
    bool deferred;
    bool redelivered;              /* delivered by the worker at PASSIVE: no second deferral */
    bool completed;                /* complete (or fail) was called for this delivery */
    uint32_t completion_len;       /* a completion waiting for ring space: its payload */
    uint8_t *completion_buf;       /* completion_inline or heap */
    uint8_t completion_inline[COMPLETION_INLINE];
    const struct kmcl_ring_packet *view; /* during the callback: the packet (external data) */
    struct kmcl_ring_packet copy_view;   /* a deferred packet's view of its copy */
    uint8_t *copy;                       /* a deferred packet's bytes (heap) */
};

struct kmcl_packet {
    struct list link;              /* the send backlog */
    struct kmcl_channel *ch;
    kmcl_completion_routine_fn routine;
    void *ctx;
    uint32_t flags, len, ext_count;
    bool queued, abandoned;
    uint64_t trans_id;
    struct kmcl_page_range ext[KMCL_PKT_MAX_GPA_RANGES];
    uint64_t *ext_pfns;            /* copies of the page numbers while queued */
    uint8_t *buf;                  /* max_packet bytes: the payload while queued */
};

struct kmcl_channel {
    struct vmbus_channel *vch;
    enum kmcl_state state;
    char name[32];
    uint32_t max_packet, max_ext_bytes, max_ext_ranges, out_pages, in_pages, target_cpu;
    bool at_passive, paused, polling;
    uint32_t flags;                /* KMCL_CHANNEL_FLAG_* */
    kmcl_queue_fn queue_cb;        /* suppressed queue management */
    uint32_t poll_cpu;
    struct thread *poller;
    bool failed;                   /* sticky; atomic: read on every path from any CPU */
    kmcl_process_packet_fn process_packet;
    kmcl_processing_complete_fn processing_complete;
    struct kmcl_state_callbacks states;
    void *client_context;
    size_t client_context_size;

    struct kmcl_ring out, in;
    uint8_t *bounce;               /* a wrapped inbound packet, as large as the inbound ring */
    uint32_t bounce_size;

    spinlock_t send_lock;
    struct list backlog;           /* packets waiting for ring space, in order */
    struct list completion_backlog; /* completions (their incoming packets) waiting for ring space */
    struct kmcl_xact_table xacts;
    struct kmcl_xact_slot xact_slots[XACT_CAPACITY];

    spinlock_t in_lock;
    struct kmcl_incoming pool[KMCL_MAX_IN_FLIGHT];
    struct list free_incoming, deferred;
    uint32_t deferred_outstanding; /* queued for the worker or being delivered by it (atomic) */
    uint32_t batch;                /* delivered since the ring was last found empty */
    bool starved;                  /* reading stopped for want of an in-flight context */

    struct dpc dpc;
    volatile uint32_t dpc_running;
    struct thread *worker;
    struct event work;
    volatile bool worker_stop;
    struct kmcl_channel_stats stats;
};

static inline irql_t lock(spinlock_t *l) { return spin_lock(l); }

/* Counters are bumped from the DPC, the worker and senders on any CPU: relaxed atomics. */
static inline void stat_inc(uint64_t *c) { __atomic_fetch_add(c, 1, __ATOMIC_RELAXED); }
static inline void unlock(spinlock_t *l, irql_t old) { spin_unlock(l, old); }

/* ---- failure ---- */

static inline bool is_failed(struct kmcl_channel *ch)
{
    return __atomic_load_n(&ch->failed, __ATOMIC_ACQUIRE);
}

static void fail_channel(struct kmcl_channel *ch, const struct kmcl_ring_failure *f, const char *where)
{
    if (__atomic_exchange_n(&ch->failed, true, __ATOMIC_ACQ_REL))
        return; /* reported once */
    pr_err("kmcl: %s (relid %u): %s: %s (offset %u, value %llu, limit %llu): channel failed, not read again",
           ch->name, vmbus_channel_relid(ch->vch), where, f && f->reason ? f->reason : "?", f ? f->offset : 0,
           (unsigned long long)(f ? f->value : 0), (unsigned long long)(f ? f->limit : 0));
}

/* ---- allocation and init ---- */

status_t kmcl_channel_allocate(struct vmbus_channel *vch, struct kmcl_channel **out)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!vch || !out)
        return STATUS_INVALID_PARAMETER;
    struct kmcl_channel *ch = kzalloc(sizeof *ch);
    if (!ch)
        return STATUS_NO_MEMORY;
    ch->vch = vch;
    ch->state = KMCL_INITIALIZING;
    {
        const char *t = vmbus_channel_type_name(vch);
        size_t n = strlen(t);
        if (n >= sizeof ch->name)
            n = sizeof ch->name - 1;
        memcpy(ch->name, t, n);
    }
    ch->max_packet = DEFAULT_MAX_PACKET;
    ch->max_ext_ranges = KMCL_PKT_MAX_GPA_RANGES;
    ch->max_ext_bytes = 64u * 4096;
    ch->out_pages = ch->in_pages = DEFAULT_RING_PAGES;
    ch->target_cpu = this_cpu() ? this_cpu()->id : 0;
    list_init(&ch->backlog);
    list_init(&ch->completion_backlog);
    list_init(&ch->free_incoming);
    list_init(&ch->deferred);
    for (uint32_t i = 0; i < KMCL_MAX_IN_FLIGHT; i++) {
        ch->pool[i].ch = ch;
        list_push_back(&ch->free_incoming, &ch->pool[i].link);
    }
    event_init(&ch->work, EVENT_SYNCHRONIZATION, false);
    status_t s = kmcl_xact_init(&ch->xacts, ch->xact_slots, XACT_CAPACITY);
    if (s != STATUS_OK) {
        kfree(ch);
        return s;
    }
    vmbus_channel_hold(vch); /* ch->vch stays valid across a rescind until cleanup */
    *out = ch;
    return STATUS_OK;
}

#define INIT_ONLY(ch)                                                                                          \
    do {                                                                                                       \
        IRQL_ASSERT_MAX(IRQL_PASSIVE);                                                                         \
        if (!(ch) || (ch)->state != KMCL_INITIALIZING)                                                         \
            return STATUS_INVALID_PARAMETER;                                                                   \
    } while (0)

status_t kmcl_channel_init_set_client_context_size(struct kmcl_channel *ch, size_t bytes)
{
    INIT_ONLY(ch);
    void *p = bytes ? kzalloc(bytes) : NULL;
    if (bytes && !p)
        return STATUS_NO_MEMORY;
    kfree(ch->client_context);
    ch->client_context = p;
    ch->client_context_size = bytes;
    return STATUS_OK;
}

status_t kmcl_channel_init_set_friendly_name(struct kmcl_channel *ch, const char *name)
{
    INIT_ONLY(ch);
    if (!name)
        return STATUS_INVALID_PARAMETER;
    size_t n = strlen(name);
    if (n >= sizeof ch->name)
        n = sizeof ch->name - 1;
    memset(ch->name, 0, sizeof ch->name);
    memcpy(ch->name, name, n);
    return STATUS_OK;
}

status_t kmcl_channel_init_set_maximum_packet_size(struct kmcl_channel *ch, uint32_t bytes)
{
    INIT_ONLY(ch);
    if (bytes < 8 || bytes > 65536)
        return STATUS_INVALID_PARAMETER;
    ch->max_packet = bytes;
    return STATUS_OK;
}

status_t kmcl_channel_init_set_maximum_external_data(struct kmcl_channel *ch, uint32_t bytes, uint32_t ranges)
{
    INIT_ONLY(ch);
    if (ranges > KMCL_PKT_MAX_GPA_RANGES)
        return STATUS_INVALID_PARAMETER;
    ch->max_ext_bytes = bytes;
    ch->max_ext_ranges = ranges;
    return STATUS_OK;
}

status_t kmcl_channel_init_set_ring_buffer_page_count(struct kmcl_channel *ch, uint32_t out_pages, uint32_t in_pages)
{
    INIT_ONLY(ch);
    if (out_pages < 2 || in_pages < 2 || out_pages + in_pages > VMBUS_GPADL_MAX_PAGES)
        return STATUS_INVALID_PARAMETER;
    ch->out_pages = out_pages;
    ch->in_pages = in_pages;
    return STATUS_OK;
}

status_t kmcl_channel_init_set_target_cpu(struct kmcl_channel *ch, uint32_t cpu)
{
    INIT_ONLY(ch);
    if (cpu >= MAX_CPUS || !cpus[cpu] || !cpus[cpu]->online)
        return STATUS_INVALID_PARAMETER;
    ch->target_cpu = cpu;
    return STATUS_OK;
}

status_t kmcl_channel_init_set_process_packet_callbacks(struct kmcl_channel *ch, kmcl_process_packet_fn process_packet,
                                                         kmcl_processing_complete_fn processing_complete)
{
    INIT_ONLY(ch);
    if (!process_packet)
        return STATUS_INVALID_PARAMETER;
    ch->process_packet = process_packet;
    ch->processing_complete = processing_complete;
    return STATUS_OK;
}

static void signal_host(struct kmcl_channel *ch);
static void take_completion(struct kmcl_channel *ch, const struct kmcl_ring_packet *p);

status_t kmcl_channel_init_set_flags(struct kmcl_channel *ch, uint32_t flags)
{
    INIT_ONLY(ch);
    if (flags & ~KMCL_CHANNEL_FLAG_SUPPRESS_QUEUE_MANAGEMENT)
        return STATUS_INVALID_PARAMETER;
    ch->flags = flags;
    return STATUS_OK;
}

status_t kmcl_channel_init_set_queue_callback(struct kmcl_channel *ch, kmcl_queue_fn fn)
{
    INIT_ONLY(ch);
    if (!fn)
        return STATUS_INVALID_PARAMETER;
    ch->queue_cb = fn;
    return STATUS_OK;
}

struct kmcl_ring *kmcl_channel_inbound_ring(struct kmcl_channel *ch) { return &ch->in; }

void kmcl_channel_signal(struct kmcl_channel *ch)
{
    signal_host(ch);
}

status_t kmcl_channel_complete_transaction(struct kmcl_channel *ch, const struct kmcl_ring_packet *p)
{
    if (p->desc.type != KMCL_PKT_COMPLETION)
        return STATUS_INVALID_PARAMETER;
    take_completion(ch, p);
    return is_failed(ch) ? STATUS_BAD_DATA : STATUS_OK;
}

status_t kmcl_channel_send_raw_completion(struct kmcl_channel *ch, uint64_t trans_id, const void *buf, uint32_t len)
{
    irql_t old = lock(&ch->send_lock);
    status_t st = STATUS_INVALID_STATE;
    bool sig = false;
    if (!is_failed(ch) && __atomic_load_n(&ch->state, __ATOMIC_ACQUIRE) == KMCL_ENABLED) {
        struct kmcl_iov iov = { buf, len };
        st = list_empty(&ch->completion_backlog) ? kmcl_pkt_send_completion(&ch->out, trans_id, &iov, 1, 0, &sig)
                                                 : STATUS_NO_SPACE;
        if (st == STATUS_OK)
            stat_inc(&ch->stats.completions_out);
        else if (st != STATUS_NO_SPACE)
            fail_channel(ch, kmcl_ring_failure(&ch->out), "writing a completion");
    }
    unlock(&ch->send_lock, old);
    if (sig)
        signal_host(ch);
    return st;
}

void kmcl_channel_report_failure(struct kmcl_channel *ch)
{
    fail_channel(ch, kmcl_ring_failure(&ch->in), "reading the inbound ring (suppressed queue management)");
}

status_t kmcl_channel_init_set_state_change_callbacks(struct kmcl_channel *ch, const struct kmcl_state_callbacks *cbs)
{
    INIT_ONLY(ch);
    if (!cbs)
        return STATUS_INVALID_PARAMETER;
    ch->states = *cbs;
    return STATUS_OK;
}

status_t kmcl_channel_set_incoming_processing_at_passive(struct kmcl_channel *ch, bool on)
{
    INIT_ONLY(ch);
    ch->at_passive = on;
    return STATUS_OK;
}

void *kmcl_channel_get_pointer_to_client_context(struct kmcl_channel *ch) { return ch->client_context; }
struct vmbus_channel *kmcl_channel_vmbus(struct kmcl_channel *ch) { return ch->vch; }
bool kmcl_channel_failed(struct kmcl_channel *ch) { return is_failed(ch); }
uint64_t kmcl_incoming_trans_id(const struct kmcl_incoming *pkt) { return pkt->trans_id; }
struct kmcl_channel *kmcl_incoming_channel(const struct kmcl_incoming *pkt) { return pkt->ch; }

void kmcl_channel_get_interface_instance(struct kmcl_channel *ch, struct vmbus_guid *type, struct vmbus_guid *instance)
{
    const struct vmbus_offer *o = vmbus_channel_offer(ch->vch);
    if (type)
        *type = o->if_type;
    if (instance)
        *instance = o->if_instance;
}

void kmcl_channel_get_stats(struct kmcl_channel *ch, struct kmcl_channel_stats *out)
{
    _Static_assert(sizeof *out % sizeof(uint64_t) == 0, "the stats are u64 counters");
    const uint64_t *from = (const uint64_t *)&ch->stats;
    uint64_t *to = (uint64_t *)out;
    for (size_t i = 0; i < sizeof *out / sizeof(uint64_t); i++)
        to[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
}

status_t kmcl_channel_create_gpadl_from_buffer(struct kmcl_channel *ch, void *buf, size_t bytes, uint32_t *handle)
{
    return vmbus_gpadl_create(ch->vch, buf, bytes, handle);
}

status_t kmcl_channel_delete_gpadl(struct kmcl_channel *ch, uint32_t handle)
{
    return vmbus_gpadl_destroy(ch->vch, handle);
}

/* ---- sending ---- */

/* Frees a transaction id of ours that will not be completed (send_lock held). */
static void drop_xact_locked(struct kmcl_channel *ch, uint64_t id)
{
    void *unused;
    if (kmcl_xact_complete(&ch->xacts, id, &unused) != STATUS_OK)
        pr_err("kmcl: %s: transaction %#llx was not outstanding", ch->name, (unsigned long long)id);
}

static void signal_host(struct kmcl_channel *ch)
{
    stat_inc(&ch->stats.signals);
    vmbus_channel_signal(ch->vch);
}

/* With send_lock held: writes one packet; STATUS_NO_SPACE leaves it for later. */
static status_t write_packet_locked(struct kmcl_channel *ch, struct kmcl_packet *pkt, const void *buf, bool *sig)
{
    uint16_t flags = (pkt->flags & KMCL_SEND_WAIT_FOR_COMPLETION) ? KMCL_PKT_FLAG_COMPLETION_REQUESTED : 0;
    struct kmcl_iov iov = { buf, pkt->len };
    bool s = false;
    status_t st;
    if (pkt->ext_count)
        st = kmcl_pkt_send_gpa_direct(&ch->out, pkt->trans_id, flags, pkt->ext, pkt->ext_count, &iov, 1, 0, &s);
    else
        st = kmcl_ring_write_buf(&ch->out, KMCL_PKT_DATA_INBAND, flags, pkt->trans_id, buf, pkt->len, 0, &s);
    *sig |= s;
    return st;
}

/* Runs the routines of packets that reached the ring (no wait-for-completion), outside the lock. */
static void run_routine(struct kmcl_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    if (pkt->routine)
        pkt->routine(pkt, status, buf, len);
}

/* Writes queued packets while they fit (send_lock held); returns them in `done` for their routines. */
static void flush_backlog_locked(struct kmcl_channel *ch, struct list *done, bool *sig)
{
    while (!list_empty(&ch->backlog)) {
        struct kmcl_packet *pkt = (struct kmcl_packet *)ch->backlog.next;
        status_t st = write_packet_locked(ch, pkt, pkt->buf, sig);
        if (st == STATUS_NO_SPACE)
            return;
        list_remove(&pkt->link);
        pkt->queued = false;
        if (st != STATUS_OK) {
            fail_channel(ch, kmcl_ring_failure(&ch->out), "writing a queued packet");
            return;
        }
        stat_inc(&ch->stats.packets_out);
        if (!(pkt->flags & KMCL_SEND_WAIT_FOR_COMPLETION))
            list_push_back(done, &pkt->link);
    }
}

static void finish_flushed(struct list *done)
{
    while (!list_empty(done)) {
        struct kmcl_packet *pkt = (struct kmcl_packet *)list_pop_front(done);
        run_routine(pkt, STATUS_OK, NULL, 0);
    }
}

status_t kmcl_packet_allocate(struct kmcl_channel *ch, struct kmcl_packet **out)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    struct kmcl_packet *pkt = kzalloc(sizeof *pkt);
    if (!pkt)
        return STATUS_NO_MEMORY;
    pkt->buf = kmalloc(ch->max_packet);
    pkt->ext_pfns = kmalloc(sizeof(uint64_t) * (ch->max_ext_bytes / 4096 + 2 * KMCL_PKT_MAX_GPA_RANGES));
    if (!pkt->buf || !pkt->ext_pfns) {
        kfree(pkt->buf);
        kfree(pkt->ext_pfns);
        kfree(pkt);
        return STATUS_NO_MEMORY;
    }
    pkt->ch = ch;
    list_init(&pkt->link);
    *out = pkt;
    return STATUS_OK;
}

void kmcl_packet_free(struct kmcl_packet *pkt)
{
    if (!pkt)
        return;
    kfree(pkt->buf);
    kfree(pkt->ext_pfns);
    kfree(pkt);
}

void kmcl_packet_set_completion_routine(struct kmcl_packet *pkt, kmcl_completion_routine_fn fn) { pkt->routine = fn; }
void kmcl_packet_set_context(struct kmcl_packet *pkt, void *ctx) { pkt->ctx = ctx; }
void *kmcl_packet_get_context(struct kmcl_packet *pkt) { return pkt->ctx; }

status_t kmcl_packet_send(struct kmcl_packet *pkt, const void *buf, uint32_t len, const struct kmcl_page_range *ext,
                          uint32_t ext_count, uint32_t flags)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    struct kmcl_channel *ch = pkt->ch;
    if (__atomic_load_n(&ch->state, __ATOMIC_ACQUIRE) != KMCL_ENABLED || is_failed(ch))
        return STATUS_INVALID_STATE;
    if (len > ch->max_packet || ext_count > ch->max_ext_ranges || (ext_count && !ext) || (len && !buf))
        return STATUS_INVALID_PARAMETER;
    uint32_t pfns = 0;
    for (uint32_t i = 0; i < ext_count; i++)
        pfns += (uint32_t)kmcl_pkt_gpa_pfn_count(ext[i].byte_offset, ext[i].byte_count);
    if (pfns > ch->max_ext_bytes / 4096 + 2 * KMCL_PKT_MAX_GPA_RANGES)
        return STATUS_INVALID_PARAMETER;
    pkt->flags = flags;
    pkt->len = len;
    pkt->ext_count = ext_count;
    pkt->abandoned = false;

    irql_t old = lock(&ch->send_lock);
    if (__atomic_load_n(&ch->state, __ATOMIC_ACQUIRE) != KMCL_ENABLED) { /* disable began meanwhile */
        unlock(&ch->send_lock, old);
        return STATUS_INVALID_STATE;
    }
    status_t st = STATUS_OK;
    pkt->trans_id = 0;
    if (flags & KMCL_SEND_WAIT_FOR_COMPLETION)
        st = kmcl_xact_alloc(&ch->xacts, pkt, &pkt->trans_id);
    if (st != STATUS_OK) {
        unlock(&ch->send_lock, old);
        return STATUS_BUSY; /* every transaction slot is outstanding */
    }
    /* Page ranges are copied: the caller's array need not outlive the call. */
    for (uint32_t i = 0, at = 0; i < ext_count; i++) {
        uint32_t n = (uint32_t)kmcl_pkt_gpa_pfn_count(ext[i].byte_offset, ext[i].byte_count);
        memcpy(pkt->ext_pfns + at, ext[i].pfns, n * sizeof(uint64_t));
        pkt->ext[i] = ext[i];
        pkt->ext[i].pfns = pkt->ext_pfns + at;
        at += n;
    }
    bool sig = false;
    bool in_ring = false;
    if (list_empty(&ch->backlog)) {
        st = write_packet_locked(ch, pkt, buf, &sig);
        in_ring = st == STATUS_OK;
    } else {
        st = STATUS_NO_SPACE; /* keep the order behind what is queued */
    }
    if (st == STATUS_NO_SPACE) {
        memcpy(pkt->buf, buf, len);
        pkt->queued = true;
        list_push_back(&ch->backlog, &pkt->link);
        stat_inc(&ch->stats.queued_sends);
        st = STATUS_OK;
    } else if (st != STATUS_OK) {
        if (pkt->trans_id)
            drop_xact_locked(ch, pkt->trans_id);
        fail_channel(ch, kmcl_ring_failure(&ch->out), "writing a packet");
        unlock(&ch->send_lock, old);
        return STATUS_INVALID_STATE;
    } else {
        stat_inc(&ch->stats.packets_out);
    }
    unlock(&ch->send_lock, old);
    if (sig)
        signal_host(ch);
    if (in_ring && !(flags & KMCL_SEND_WAIT_FOR_COMPLETION))
        run_routine(pkt, STATUS_OK, NULL, 0); /* KMCL: "placed in the ring" */
    return st;
}

/* ---- synchronous requests ---- */

struct sync_wait {
    struct event done;
    void *resp;
    uint32_t room, got;
    status_t status;
};

static void sync_routine(struct kmcl_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    struct sync_wait *w = pkt->ctx;
    w->status = status;
    w->got = len < w->room ? len : w->room;
    if (w->got)
        memcpy(w->resp, buf, w->got);
    event_set(&w->done);
}

status_t kmcl_channel_send_synchronous_request(struct kmcl_channel *ch, const void *buf, uint32_t len,
                                               const struct kmcl_page_range *ext, uint32_t ext_count, void *resp,
                                               uint32_t *resp_len, uint64_t timeout_ns)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!resp_len || (*resp_len && !resp) || (*resp_len % 8))
        return STATUS_INVALID_PARAMETER;
    if (timeout_ns == 0) {
        irql_t old = lock(&ch->send_lock);
        bool room = list_empty(&ch->backlog) &&
                    kmcl_ring_write_space(&ch->out) >= kmcl_ring_packet_bytes(0, len) + 64u * (ext_count + 1);
        unlock(&ch->send_lock, old);
        if (!room)
            return STATUS_NO_SPACE;
    }
    struct kmcl_packet *pkt;
    status_t s = kmcl_packet_allocate(ch, &pkt);
    if (s != STATUS_OK)
        return s;
    struct sync_wait w = { .resp = resp, .room = *resp_len };
    event_init(&w.done, EVENT_NOTIFICATION, false);
    kmcl_packet_set_context(pkt, &w);
    kmcl_packet_set_completion_routine(pkt, sync_routine);
    s = kmcl_packet_send(pkt, buf, len, ext, ext_count, KMCL_SEND_WAIT_FOR_COMPLETION);
    if (s != STATUS_OK) {
        kmcl_packet_free(pkt);
        return s;
    }
    s = event_wait(&w.done, timeout_ns ? timeout_ns : 1);
    if (s == STATUS_OK) {
        *resp_len = w.got;
        kmcl_packet_free(pkt);
        return w.status;
    }
    /* Timed out. If the transaction is still outstanding, the completion (or disable) retires the
     * packet when it comes; if it was just taken, its routine is about to run: wait for it. */
    irql_t old = lock(&ch->send_lock);
    void *unused;
    bool outstanding = kmcl_xact_lookup(&ch->xacts, pkt->trans_id, &unused) == STATUS_OK;
    if (outstanding)
        pkt->abandoned = true;
    unlock(&ch->send_lock, old);
    if (!outstanding) {
        s = event_wait(&w.done, WAIT_FOREVER);
        *resp_len = w.got;
        kmcl_packet_free(pkt);
        return w.status;
    }
    pr_warn("kmcl: %s (relid %u): no completion for a synchronous request in %llu ms", ch->name,
            vmbus_channel_relid(ch->vch), (unsigned long long)(timeout_ns / 1000000));
    return STATUS_TIMEOUT;
}

/* ---- incoming packets ---- */

static void resume_reading(struct kmcl_channel *ch);

static struct kmcl_incoming *incoming_get(struct kmcl_channel *ch)
{
    irql_t old = lock(&ch->in_lock);
    struct kmcl_incoming *in = (struct kmcl_incoming *)list_pop_front(&ch->free_incoming);
    unlock(&ch->in_lock, old);
    return in;
}

static void incoming_put(struct kmcl_incoming *in)
{
    struct kmcl_channel *ch = in->ch;
    if (in->copy) /* only deferred packets have one */
        kfree(in->copy);
    in->copy = NULL;
    in->view = NULL;
    in->deferred = false;
    in->redelivered = false;
    in->in_callback = 0;
    in->holds = 0;
    if (in->completion_buf != in->completion_inline)
        kfree(in->completion_buf);
    in->completion_buf = NULL;
    irql_t old = lock(&ch->in_lock);
    list_push_back(&ch->free_incoming, &in->link);
    unlock(&ch->in_lock, old);
    if (__atomic_exchange_n(&ch->starved, false, __ATOMIC_SEQ_CST))
        resume_reading(ch);
}

static bool incoming_available(struct kmcl_channel *ch)
{
    irql_t old = lock(&ch->in_lock);
    bool any = !list_empty(&ch->free_incoming);
    unlock(&ch->in_lock, old);
    return any;
}

/* Drops one hold on an incoming packet; the last one retires it. */
static void release(struct kmcl_incoming *in)
{
    if (__atomic_sub_fetch(&in->holds, 1, __ATOMIC_ACQ_REL) == 0)
        incoming_put(in);
}

/*
 * Writes the completion of `in`, or, if the ring is full (or completions already wait), queues it
 * (its payload copied, the packet held) to be written when the host makes room: a completion is
 * never lost and never waits at DISPATCH.
 */
static void send_completion(struct kmcl_channel *ch, struct kmcl_incoming *in, const void *buf, uint32_t len)
{
    irql_t old = lock(&ch->send_lock);
    /* Under send_lock: disable sets DISABLING and then takes the lock once, so after that no
     * completion is written into rings the close is about to free. */
    if (is_failed(ch) || __atomic_load_n(&ch->state, __ATOMIC_ACQUIRE) != KMCL_ENABLED) {
        unlock(&ch->send_lock, old);
        return;
    }
    bool sig = false;
    status_t st = STATUS_NO_SPACE;
    struct kmcl_iov iov = { buf, len };
    if (list_empty(&ch->completion_backlog))
        st = kmcl_pkt_send_completion(&ch->out, in->trans_id, &iov, 1, 0, &sig);
    if (st == STATUS_OK) {
        stat_inc(&ch->stats.completions_out);
    } else if (st == STATUS_NO_SPACE) {
        uint8_t *copy = len <= COMPLETION_INLINE ? in->completion_inline : kmalloc(len);
        if (!copy) {
            struct kmcl_ring_failure f = { "out of memory for a completion waiting for ring space", 0, len, 0 };
            fail_channel(ch, &f, "queueing a completion");
        } else {
            if (len)
                memcpy(copy, buf, len);
            in->completion_buf = copy;
            in->completion_len = len;
            __atomic_add_fetch(&in->holds, 1, __ATOMIC_ACQ_REL); /* released once written */
            list_push_back(&ch->completion_backlog, &in->link);
            stat_inc(&ch->stats.queued_completions);
        }
    } else {
        fail_channel(ch, kmcl_ring_failure(&ch->out), "writing a completion");
    }
    unlock(&ch->send_lock, old);
    if (sig)
        signal_host(ch);
}

/* Writes queued completions while they fit (send_lock held); the written ones go to `done`. */
static void flush_completions_locked(struct kmcl_channel *ch, struct list *done, bool *sig)
{
    while (!list_empty(&ch->completion_backlog)) {
        struct kmcl_incoming *in = (struct kmcl_incoming *)ch->completion_backlog.next;
        struct kmcl_iov iov = { in->completion_buf, in->completion_len };
        bool s = false;
        status_t st = kmcl_pkt_send_completion(&ch->out, in->trans_id, &iov, 1, 0, &s);
        *sig |= s;
        if (st == STATUS_NO_SPACE)
            return;
        if (st != STATUS_OK) {
            fail_channel(ch, kmcl_ring_failure(&ch->out), "writing a queued completion");
            return;
        }
        list_remove(&in->link);
        stat_inc(&ch->stats.completions_out);
        list_push_back(done, &in->link);
    }
}

void kmcl_channel_packet_complete(struct kmcl_incoming *in, const void *buf, uint32_t len)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    if (in->deferred && in->in_callback) {
        pr_err("kmcl: a packet deferred to passive was also completed: completion ignored");
        return;
    }
    if (__atomic_exchange_n(&in->completed, true, __ATOMIC_ACQ_REL)) {
        pr_err("kmcl: %s: a packet completed twice (trans_id %llu): ignored", in->ch->name,
               (unsigned long long)in->trans_id);
        return;
    }
    if (in->completion_requested)
        send_completion(in->ch, in, buf, len);
    release(in); /* the owner's hold; the callback's (if still inside) goes when it returns */
}

/* The executor, after process_packet returned: drops the callback's hold (retiring the packet if
 * it was completed meanwhile and its completion is written). */
static void after_callback(struct kmcl_incoming *in)
{
    in->view = NULL;
    __atomic_store_n(&in->in_callback, 0, __ATOMIC_RELEASE);
    release(in);
}

void kmcl_channel_packet_fail(struct kmcl_incoming *in, status_t status)
{
    uint32_t st = (uint32_t)status;
    kmcl_channel_packet_complete(in, &st, sizeof st);
}

status_t kmcl_channel_packet_defer_to_passive(struct kmcl_incoming *in)
{
    if (!in->in_callback || in->deferred || in->redelivered || __atomic_load_n(&in->completed, __ATOMIC_ACQUIRE))
        return STATUS_INVALID_STATE; /* only inside process_packet, once, not at PASSIVE, not once completed */
    in->deferred = true;
    return STATUS_OK;
}

status_t kmcl_channel_packet_get_external_data(struct kmcl_incoming *in, struct kmcl_pkt_gpa *gpa,
                                               struct kmcl_pkt_xfer *xfer)
{
    const struct kmcl_ring_packet *v = in->view;
    if (!v)
        return STATUS_INVALID_STATE;
    struct kmcl_ring_failure why;
    if (v->desc.type == KMCL_PKT_DATA_GPA_DIRECT && gpa)
        return kmcl_pkt_parse_gpa(v, gpa, &why);
    if (v->desc.type == KMCL_PKT_DATA_XFER_PAGES && xfer)
        return kmcl_pkt_parse_xfer(v, 0, xfer, &why);
    return STATUS_NOT_FOUND;
}

/* A completion from the host: finds its packet (send_lock for the table). */
static void take_completion(struct kmcl_channel *ch, const struct kmcl_ring_packet *p)
{
    struct kmcl_pkt_inband c;
    if (kmcl_pkt_parse_completion(p, &c) != STATUS_OK)
        return;
    irql_t old = lock(&ch->send_lock);
    void *ctx = NULL;
    status_t s = kmcl_xact_complete(&ch->xacts, c.trans_id, &ctx);
    bool abandoned = s == STATUS_OK && ((struct kmcl_packet *)ctx)->abandoned;
    stat_inc(&ch->stats.completions_in);
    unlock(&ch->send_lock, old);
    if (abandoned) { /* a synchronous request that timed out: nobody waits for it any more */
        kmcl_packet_free(ctx);
        return;
    }
    if (s != STATUS_OK) {
        struct kmcl_ring_failure f = { "completion for a transaction id never sent or already completed",
                                       p->ring_offset, c.trans_id, 0 };
        kmcl_ring_fail(&ch->in, &f);
        fail_channel(ch, &f, "reading a completion");
        return;
    }
    run_routine(ctx, STATUS_OK, c.payload, c.payload_len);
}

/* Copies a packet for later delivery at PASSIVE. */
static bool copy_for_passive(struct kmcl_incoming *in, const struct kmcl_ring_packet *p)
{
    in->copy = kmalloc(p->len ? p->len : 1);
    if (!in->copy)
        return false;
    memcpy(in->copy, p->bytes, p->len);
    in->copy_view = *p;
    in->copy_view.bytes = in->copy;
    in->copy_view.bounced = true;
    return true;
}

static void deliver(struct kmcl_channel *ch, struct kmcl_incoming *in, const struct kmcl_ring_packet *p, bool passive)
{
    in->view = p;
    __atomic_store_n(&in->completed, false, __ATOMIC_RELAXED);
    __atomic_store_n(&in->holds, 2, __ATOMIC_RELEASE); /* the callback's and the owner's */
    __atomic_store_n(&in->in_callback, 1, __ATOMIC_RELEASE);
    uint32_t flags = passive ? KMCL_PROCESS_AT_PASSIVE : 0;
    if (p->desc.type != KMCL_PKT_DATA_INBAND)
        flags |= KMCL_PROCESS_EXTERNAL_DATA;
    ch->process_packet(ch, in, kmcl_pkt_payload(p), kmcl_pkt_payload_len(p), flags);
}

/* Whether later packets must queue behind deferred ones: some are queued for the worker or being
 * delivered by it (the count drops only after the worker's delivery returned, so a packet the
 * worker has popped but not yet delivered still holds later ones back). No lock: one atomic load
 * per packet on the fast path. */
static bool deferred_pending(struct kmcl_channel *ch)
{
    return __atomic_load_n(&ch->deferred_outstanding, __ATOMIC_ACQUIRE) != 0;
}

static struct kmcl_incoming *pop_deferred(struct kmcl_channel *ch)
{
    irql_t old = lock(&ch->in_lock);
    struct kmcl_incoming *in = (struct kmcl_incoming *)list_pop_front(&ch->deferred);
    unlock(&ch->in_lock, old);
    return in;
}

static void queue_deferred(struct kmcl_channel *ch, struct kmcl_incoming *in)
{
    __atomic_add_fetch(&ch->deferred_outstanding, 1, __ATOMIC_ACQ_REL);
    irql_t old = lock(&ch->in_lock);
    list_push_back(&ch->deferred, &in->link);
    unlock(&ch->in_lock, old);
    stat_inc(&ch->stats.deferred);
    event_set(&ch->work);
}

/*
 * Drains up to budget packets (the DPC at DISPATCH, or the worker at PASSIVE for a passive channel).
 * Returns true when it stopped with packets left (budget, or no in-flight context free).
 */
static bool drain(struct kmcl_channel *ch, uint32_t budget, bool passive)
{
    bool sig_writer = false, more = false;
    uint32_t n = 0;
    kmcl_ring_begin_read(&ch->in);
    for (;;) {
        struct kmcl_ring_packet p;
        status_t s = kmcl_ring_peek(&ch->in, &p, ch->bounce, ch->bounce_size);
        if (s == STATUS_NOT_FOUND) {
            if (ch->batch && ch->processing_complete)
                ch->processing_complete(ch, ch->batch);
            if (ch->batch)
                stat_inc(&ch->stats.processing_complete_calls);
            ch->batch = 0;
            if (ch->polling) { /* the mask stays set: the poller looks again, the host need not signal */
                sig_writer |= kmcl_ring_publish_read(&ch->in);
                break;
            }
            bool sw = false;
            if (!kmcl_ring_end_read(&ch->in, &sw)) {
                sig_writer |= sw;
                break;
            }
            sig_writer |= sw;
            kmcl_ring_begin_read(&ch->in); /* a packet raced in: go on */
            continue;
        }
        if (s != STATUS_OK) {
            fail_channel(ch, kmcl_ring_failure(&ch->in), "reading the inbound ring");
            break;
        }
        if (n >= budget) {
            more = true;
            stat_inc(&ch->stats.budget_exhausted);
            break;
        }
        if (p.desc.type == KMCL_PKT_COMPLETION) {
            take_completion(ch, &p);
            if (is_failed(ch))
                break;
            kmcl_ring_consume(&ch->in);
            n++;
            continue;
        }
        if (p.desc.type != KMCL_PKT_DATA_INBAND && p.desc.type != KMCL_PKT_DATA_GPA_DIRECT &&
            p.desc.type != KMCL_PKT_DATA_XFER_PAGES) {
            struct kmcl_ring_failure f = { "packet type a client does not take", p.ring_offset, p.desc.type, 0 };
            kmcl_ring_fail(&ch->in, &f);
            fail_channel(ch, &f, "reading the inbound ring");
            break;
        }
        struct kmcl_incoming *in = incoming_get(ch);
        if (!in) {
            /* Every context is in flight: resume when one is retired (incoming_put), not by
             * spinning here, which would starve the worker that retires them on this CPU. */
            __atomic_store_n(&ch->starved, true, __ATOMIC_SEQ_CST);
            if (!incoming_available(ch))
                break;
            __atomic_store_n(&ch->starved, false, __ATOMIC_SEQ_CST); /* one came back meanwhile */
            continue;
        }
        in->trans_id = p.desc.trans_id;
        in->completion_requested = p.desc.flags & KMCL_PKT_FLAG_COMPLETION_REQUESTED;
        stat_inc(&ch->stats.packets_in);
        ch->batch++;
        if ((!passive && ch->at_passive) || deferred_pending(ch)) {
            /* In order behind packets already waiting for the worker. */
            if (!copy_for_passive(in, &p)) { /* out of memory: the packet stays; read again next pass */
                incoming_put(in);
                __atomic_sub_fetch(&ch->stats.packets_in, 1, __ATOMIC_RELAXED);
                ch->batch--;
                more = true;
                break;
            }
            queue_deferred(ch, in);
        } else {
            deliver(ch, in, &p, passive);
            if (in->deferred) {
                in->in_callback = 0; /* nobody may complete a deferred packet */
                in->holds = 0;       /* until the worker delivers it again */
                in->view = NULL;
                if (!copy_for_passive(in, &p)) {
                    struct kmcl_ring_failure f = { "out of memory for a deferred packet", p.ring_offset, p.len, 0 };
                    fail_channel(ch, &f, "deferring a packet");
                    incoming_put(in);
                    break;
                }
                in->deferred = false;
                queue_deferred(ch, in);
            } else {
                after_callback(in);
            }
        }
        kmcl_ring_consume(&ch->in);
        n++;
        if (n % 16 == 0)
            sig_writer |= kmcl_ring_publish_read(&ch->in);
    }
    if (more)
        sig_writer |= kmcl_ring_publish_read(&ch->in);
    if (sig_writer)
        signal_host(ch);
    return more && !is_failed(ch);
}

/* The send side's part of an interrupt: the host made room. */
static void flush_sends(struct kmcl_channel *ch)
{
    struct list done, completed;
    list_init(&done);
    list_init(&completed);
    bool sig = false;
    irql_t old = lock(&ch->send_lock);
    flush_completions_locked(ch, &completed, &sig);
    flush_backlog_locked(ch, &done, &sig);
    unlock(&ch->send_lock, old);
    if (sig)
        signal_host(ch);
    while (!list_empty(&completed))
        release((struct kmcl_incoming *)list_pop_front(&completed));
    finish_flushed(&done);
}

static void channel_dpc(struct dpc *d, void *ctx)
{
    (void)d;
    struct kmcl_channel *ch = ctx;
    __atomic_store_n(&ch->dpc_running, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&ch->state, __ATOMIC_SEQ_CST) == KMCL_ENABLED && !is_failed(ch)) {
        stat_inc(&ch->stats.dpc_passes);
        flush_sends(ch);
        if (ch->polling)
            ; /* the poller reads the ring; a signal still flushed the sends above */
        else if (ch->flags & KMCL_CHANNEL_FLAG_SUPPRESS_QUEUE_MANAGEMENT) {
            if (!__atomic_load_n(&ch->paused, __ATOMIC_ACQUIRE) && ch->queue_cb(ch))
                dpc_queue(&ch->dpc); /* the driver stopped with packets left: again, after other DPCs */
        } else if (ch->at_passive)
            event_set(&ch->work);
        else if (!__atomic_load_n(&ch->paused, __ATOMIC_ACQUIRE) && drain(ch, KMCL_DRAIN_BUDGET, false))
            dpc_queue(&ch->dpc); /* budget used up: let other DPCs run, then go on */
    }
    __atomic_store_n(&ch->dpc_running, 0, __ATOMIC_RELEASE);
}

/* Reading stopped for want of a context and one is back: the reader of this channel goes on. */
static void resume_reading(struct kmcl_channel *ch)
{
    if (__atomic_load_n(&ch->state, __ATOMIC_ACQUIRE) != KMCL_ENABLED)
        return; /* disable retires contexts after the DPC is cancelled: no new pass then */
    if (ch->polling)
        return; /* the poller looks again anyway */
    if (ch->at_passive)
        event_set(&ch->work);
    else
        dpc_queue(&ch->dpc);
}

static void on_interrupt(struct vmbus_channel *vch, void *ctx)
{
    (void)vch;
    struct kmcl_channel *ch = ctx;
    stat_inc(&ch->stats.interrupts);
    dpc_queue(&ch->dpc);
}

/* The passive-level executor: deferred packets in order, and the whole ring for passive channels. */
static void worker_main(void *arg)
{
    struct kmcl_channel *ch = arg;
    for (;;) {
        status_t s = event_wait(&ch->work, WAIT_FOREVER);
        (void)s;
        if (__atomic_load_n(&ch->worker_stop, __ATOMIC_ACQUIRE))
            break;
        struct kmcl_incoming *in;
        while ((in = pop_deferred(ch)) != NULL) {
            stat_inc(&ch->stats.passive_deliveries);
            in->redelivered = true; /* defer_to_passive refuses it now */
            deliver(ch, in, &in->copy_view, true);
            after_callback(in);
            __atomic_sub_fetch(&ch->deferred_outstanding, 1, __ATOMIC_ACQ_REL);
        }
        if (ch->at_passive && !__atomic_load_n(&ch->paused, __ATOMIC_ACQUIRE) && !is_failed(ch))
            while (drain(ch, KMCL_DRAIN_BUDGET, true))
                thread_yield();
    }
}

/* ---- enable, disable, pause, start ---- */

status_t kmcl_channel_init_set_polling(struct kmcl_channel *ch, uint32_t cpu)
{
    INIT_ONLY(ch);
    if (cpu >= MAX_CPUS || !cpus[cpu] || !cpus[cpu]->online || ch->at_passive)
        return STATUS_INVALID_PARAMETER;
    ch->polling = true;
    ch->poll_cpu = cpu;
    return STATUS_OK;
}

/* Polling mode: spins on the ring at DISPATCH in budgeted passes, PASSIVE in between so the CPU's
 * scheduler and DPCs still run. The ring's interrupt mask is never cleared (drain() does not end
 * the read), so the host does not signal. */
static void poller_main(void *arg)
{
    struct kmcl_channel *ch = arg;
    while (!__atomic_load_n(&ch->worker_stop, __ATOMIC_ACQUIRE)) {
        irql_t old = irql_raise(IRQL_DISPATCH);
        if (!__atomic_load_n(&ch->paused, __ATOMIC_ACQUIRE) && !is_failed(ch)) {
            stat_inc(&ch->stats.polls);
            flush_sends(ch);
            (void)drain(ch, KMCL_DRAIN_BUDGET, false);
        }
        irql_lower(old);
        cpu_relax();
    }
}

status_t kmcl_channel_enable(struct kmcl_channel *ch)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    bool suppressed = ch && (ch->flags & KMCL_CHANNEL_FLAG_SUPPRESS_QUEUE_MANAGEMENT);
    if (ch && ch->polling && ch->at_passive)
        return STATUS_INVALID_PARAMETER; /* two readers of one ring: the poller and the worker */
    if (!ch || ch->state != KMCL_INITIALIZING || (suppressed ? !ch->queue_cb || ch->at_passive || ch->polling
                                                             : !ch->process_packet))
        return STATUS_INVALID_PARAMETER;
    ch->bounce_size = ch->in_pages * 4096;
    ch->bounce = kmalloc(ch->bounce_size);
    if (!ch->bounce)
        return STATUS_NO_MEMORY;
    dpc_init(&ch->dpc, channel_dpc, ch);
    dpc_set_target(&ch->dpc, (int32_t)ch->target_cpu);
    ch->worker_stop = false;
    status_t s = thread_create("kmcl-worker", worker_main, ch, (int)ch->target_cpu, &ch->worker);
    if (s != STATUS_OK) {
        kfree(ch->bounce);
        ch->bounce = NULL;
        return s;
    }
    struct vmbus_open_params p = { .out_ring_bytes = ch->out_pages * 4096, .in_ring_bytes = ch->in_pages * 4096,
                                   .target_cpu = ch->target_cpu, .on_interrupt = on_interrupt, .ctx = ch };
    s = vmbus_channel_open(ch->vch, &p);
    uint32_t out_bytes = 0, in_bytes = 0;
    void *out = s == STATUS_OK ? vmbus_channel_out_ring(ch->vch, &out_bytes) : NULL;
    void *in = s == STATUS_OK ? vmbus_channel_in_ring(ch->vch, &in_bytes) : NULL;
    /* The rings were zeroed by the bus; the host may already have written (a service that sends as
     * soon as it sees the open), so the reader takes over the indices it finds. */
    if (s == STATUS_OK)
        s = kmcl_ring_attach_pages(&ch->out, KMCL_RING_WRITER, out, out_bytes, 0);
    if (s == STATUS_OK)
        s = kmcl_ring_attach_pages(&ch->in, KMCL_RING_READER, in, in_bytes, 0);
    if (s != STATUS_OK) {
        __atomic_store_n(&ch->worker_stop, true, __ATOMIC_RELEASE);
        event_set(&ch->work);
        thread_join(ch->worker);
        ch->worker = NULL;
        if (vmbus_channel_is_open(ch->vch) && vmbus_channel_close(ch->vch) != STATUS_OK)
            pr_warn("kmcl: %s: close after a failed enable failed", ch->name);
        kfree(ch->bounce);
        ch->bounce = NULL;
        return s;
    }
    __atomic_store_n(&ch->state, KMCL_ENABLED, __ATOMIC_RELEASE);
    if (ch->polling && thread_create("kmcl-poll", poller_main, ch, (int)ch->poll_cpu, &ch->poller) != STATUS_OK) {
        pr_warn("kmcl: %s: no polling thread: interrupts stay the way in", ch->name);
        ch->polling = false;
    }
    if (ch->states.opened)
        ch->states.opened(ch);
    if (ch->states.started)
        ch->states.started(ch);
    if (ch->states.post_started)
        ch->states.post_started(ch);
    dpc_queue(&ch->dpc); /* anything the host wrote before we attached */
    return STATUS_OK;
}

void kmcl_channel_pause(struct kmcl_channel *ch)
{
    __atomic_store_n(&ch->paused, true, __ATOMIC_RELEASE);
}

void kmcl_channel_start(struct kmcl_channel *ch)
{
    __atomic_store_n(&ch->paused, false, __ATOMIC_RELEASE);
    if (__atomic_load_n(&ch->state, __ATOMIC_ACQUIRE) == KMCL_ENABLED)
        dpc_queue(&ch->dpc);
}

void kmcl_channel_disable(struct kmcl_channel *ch)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!ch || ch->state != KMCL_ENABLED)
        return;
    if (ch->states.suspend)
        ch->states.suspend(ch);
    /* seq_cst with the DPC's dpc_running store then state load: either it sees DISABLING, or we see
     * it running and wait. */
    __atomic_store_n(&ch->state, KMCL_DISABLING, __ATOMIC_SEQ_CST);
    irql_t fence = lock(&ch->send_lock); /* writers that saw ENABLED under the lock are done */
    unlock(&ch->send_lock, fence);
    /* Stop every reader of the rings before the bus frees them: the poller, the DPC (one already
     * running finishes first), the worker. */
    __atomic_store_n(&ch->worker_stop, true, __ATOMIC_RELEASE);
    if (ch->poller) {
        thread_join(ch->poller);
        ch->poller = NULL;
    }
    dpc_cancel(&ch->dpc);
    while (__atomic_load_n(&ch->dpc_running, __ATOMIC_SEQ_CST))
        thread_yield();
    event_set(&ch->work);
    thread_join(ch->worker);
    ch->worker = NULL;
    if (vmbus_channel_close(ch->vch) != STATUS_OK)
        pr_warn("kmcl: %s (relid %u): the host did not confirm the close", ch->name, vmbus_channel_relid(ch->vch));
    dpc_cancel(&ch->dpc); /* an interrupt that came in meanwhile queued it again: it finds DISABLING */
    /* Deferred packets never delivered: retired without a completion (the channel is gone). */
    struct kmcl_incoming *in;
    while ((in = pop_deferred(ch)) != NULL) {
        incoming_put(in);
        __atomic_sub_fetch(&ch->deferred_outstanding, 1, __ATOMIC_ACQ_REL);
    }
    /* Completions still waiting for ring space: nothing to write them into any more. */
    struct list unwritten;
    list_init(&unwritten);
    irql_t cold = lock(&ch->send_lock);
    while (!list_empty(&ch->completion_backlog))
        list_push_back(&unwritten, list_pop_front(&ch->completion_backlog));
    unlock(&ch->send_lock, cold);
    while (!list_empty(&unwritten))
        release((struct kmcl_incoming *)list_pop_front(&unwritten));
    /* Sends still queued or waiting for a completion: their routines see STATUS_CANCELLED. */
    struct list cancelled;
    list_init(&cancelled);
    irql_t old = lock(&ch->send_lock);
    while (!list_empty(&ch->backlog)) {
        struct kmcl_packet *pkt = (struct kmcl_packet *)list_pop_front(&ch->backlog);
        pkt->queued = false;
        if (pkt->trans_id)
            drop_xact_locked(ch, pkt->trans_id);
        if (pkt->abandoned)
            kmcl_packet_free(pkt); /* a synchronous request that timed out while queued: nobody waits */
        else
            list_push_back(&cancelled, &pkt->link);
    }
    uint64_t id;
    void *ctx;
    while (kmcl_xact_take_any(&ch->xacts, &id, &ctx) == STATUS_OK) {
        struct kmcl_packet *pkt = ctx;
        if (pkt->abandoned)
            kmcl_packet_free(pkt); /* its requester timed out long ago */
        else
            list_push_back(&cancelled, &pkt->link);
    }
    unlock(&ch->send_lock, old);
    while (!list_empty(&cancelled))
        run_routine((struct kmcl_packet *)list_pop_front(&cancelled), STATUS_CANCELLED, NULL, 0);
    kfree(ch->bounce);
    ch->bounce = NULL;
    __atomic_store_n(&ch->state, KMCL_DISABLED, __ATOMIC_RELEASE);
    if (ch->states.closed)
        ch->states.closed(ch);
}

void kmcl_channel_cleanup(struct kmcl_channel *ch)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!ch)
        return;
    kmcl_channel_disable(ch);
    struct vmbus_channel *vch = ch->vch;
    kfree(ch->client_context);
    kfree(ch);
    vmbus_channel_release(vch);
}
