/*
 * channel: the life cycle of kmcl's client channel (contract in kmcl/channel.h): allocate, the
 * init-set functions, enable, pause/start, the host's rescind, disable, cleanup, the getters.
 * Sending is kmcl/send.c, receiving (the executors) kmcl/receive.c; what they share,
 * kmcl/internal.h; the engine under both endpoints, kmcl/core/endpoint.h.
 */
#include "kmcl/internal.h"

#include "arch-x86_64/cpu.h"
#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/percpu.h"
#include "kernel/string.h"

#define DEFAULT_MAX_PACKET 4096u
#define MAX_PACKET_LIMIT 65536u
#define DEFAULT_RING_PAGES 16u /* 64 KiB per direction, control page included */

_Static_assert(KMCL_CHANNEL_FLAG_SUPPRESS_QUEUE_MANAGEMENT == KMCL_EP_FLAG_SUPPRESS_QUEUE_MANAGEMENT, "one flag");
_Static_assert(KMCL_PROCESS_EXTERNAL_DATA == KMCL_EP_PROCESS_EXTERNAL_DATA, "one flag");

static const struct kmcl_ep_alloc client_mem = { kmalloc, kzalloc, kfree };

#define EP(ch) ((ch) ? &(ch)->ep : NULL)

/* ---- failure, state callbacks ---- */

void kmcl_fail_channel(struct kmcl_channel *ch, const struct kmcl_ring_failure *f, const char *where)
{
    if (__atomic_exchange_n(&ch->failed, true, __ATOMIC_ACQ_REL))
        return; /* reported once */
    pr_err("kmcl: %s (relid %u): %s: %s (offset %u, value %llu, limit %llu): channel failed, not read again",
           ch->name, ch->relid, where, f && f->reason ? f->reason : "?", f ? f->offset : 0,
           (unsigned long long)(f ? f->value : 0), (unsigned long long)(f ? f->limit : 0));
}

void kmcl_state_cb(struct kmcl_channel *ch, enum kmcl_ep_event e)
{
    if (ch->ep.states[e])
        ((kmcl_state_fn)ch->ep.states[e])(ch);
}

void kmcl_closed_once(struct kmcl_channel *ch)
{
    if (!__atomic_exchange_n(&ch->closed_called, true, __ATOMIC_ACQ_REL))
        kmcl_state_cb(ch, KMCL_EP_CLOSED);
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
    status_t s = kmcl_ep_init(&ch->ep, KMCL_EP_CLIENT, &client_mem, ch->xact_slots, XACT_CAPACITY,
                              DEFAULT_MAX_PACKET, MAX_PACKET_LIMIT);
    if (s != STATUS_OK) {
        kfree(ch);
        return s;
    }
    ch->vch = vch;
    ch->relid = vmbus_channel_relid(vch);
    const struct vmbus_offer *o = vmbus_channel_offer(vch);
    ch->if_type = o->if_type;
    ch->if_instance = o->if_instance;
    const char *t = vmbus_channel_type_name(vch);
    size_t n = strlen(t);
    memcpy(ch->name, t, n < sizeof ch->name ? n : sizeof ch->name - 1);
    ch->max_ext_ranges = KMCL_PKT_MAX_GPA_RANGES;
    ch->max_ext_bytes = 64u * 4096;
    ch->out_pages = ch->in_pages = DEFAULT_RING_PAGES;
    ch->target_cpu = this_cpu() ? this_cpu()->id : 0;
    list_init(&ch->deferred);
    for (uint32_t i = 0; i < KMCL_MAX_IN_FLIGHT; i++) {
        ch->pool[i].ch = ch;
        kmcl_ep_add_incoming(&ch->ep, &ch->pool[i].ep);
    }
    event_init(&ch->work, EVENT_SYNCHRONIZATION, false);
    vmbus_channel_hold(vch); /* valid across a rescind until the channel is freed */
    ch->held = vch;
    *out = ch;
    return STATUS_OK;
}

/* Init-set from PASSIVE, for a channel still INITIALIZING (NULL: refused too). */
#define INIT_ONLY(ch)                                                                                          \
    do {                                                                                                       \
        IRQL_ASSERT_MAX(IRQL_PASSIVE);                                                                         \
        status_t init_only_ = kmcl_ep_init_only(EP(ch));                                                       \
        if (init_only_ != STATUS_OK)                                                                           \
            return init_only_;                                                                                 \
    } while (0)

status_t kmcl_channel_init_set_client_context_size(struct kmcl_channel *ch, size_t bytes)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    return kmcl_ep_init_set_client_context_size(EP(ch), bytes);
}

status_t kmcl_channel_init_set_friendly_name(struct kmcl_channel *ch, const char *name)
{
    INIT_ONLY(ch);
    if (!name)
        return STATUS_INVALID_PARAMETER;
    size_t n = strlen(name);
    memset(ch->name, 0, sizeof ch->name);
    memcpy(ch->name, name, n < sizeof ch->name ? n : sizeof ch->name - 1);
    return STATUS_OK;
}

status_t kmcl_channel_init_set_maximum_packet_size(struct kmcl_channel *ch, uint32_t bytes)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    return kmcl_ep_init_set_maximum_packet_size(EP(ch), bytes);
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

static bool cpu_usable(uint32_t cpu)
{
    return cpu < MAX_CPUS && cpus[cpu] && cpus[cpu]->online;
}

status_t kmcl_channel_init_set_target_cpu(struct kmcl_channel *ch, uint32_t cpu)
{
    INIT_ONLY(ch);
    if (!cpu_usable(cpu))
        return STATUS_INVALID_PARAMETER;
    ch->target_cpu = cpu;
    return STATUS_OK;
}

status_t kmcl_channel_init_set_process_packet_callbacks(struct kmcl_channel *ch, kmcl_process_packet_fn process_packet,
                                                         kmcl_processing_complete_fn processing_complete)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    return kmcl_ep_init_set_process_packet_callbacks(EP(ch), KMCL_EP_FN(process_packet),
                                                     KMCL_EP_FN(processing_complete));
}

status_t kmcl_channel_init_set_flags(struct kmcl_channel *ch, uint32_t flags)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    return kmcl_ep_init_set_flags(EP(ch), flags);
}

status_t kmcl_channel_init_set_queue_callback(struct kmcl_channel *ch, kmcl_queue_fn fn)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    return kmcl_ep_init_set_queue_callback(EP(ch), KMCL_EP_FN(fn));
}

status_t kmcl_channel_init_set_state_change_callbacks(struct kmcl_channel *ch, const struct kmcl_state_callbacks *cbs)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    return kmcl_ep_init_set_state_change_callbacks(EP(ch), cbs ? KMCL_EP_STATE_FNS(cbs) : NULL);
}

status_t kmcl_channel_set_incoming_processing_at_passive(struct kmcl_channel *ch, bool on)
{
    INIT_ONLY(ch);
    ch->at_passive = on;
    return STATUS_OK;
}

status_t kmcl_channel_init_set_polling(struct kmcl_channel *ch, uint32_t cpu)
{
    INIT_ONLY(ch);
    if (!cpu_usable(cpu) || ch->at_passive)
        return STATUS_INVALID_PARAMETER;
    ch->polling = true;
    ch->poll_cpu = cpu;
    return STATUS_OK;
}

/* ---- getters ---- */

void *kmcl_channel_get_pointer_to_client_context(struct kmcl_channel *ch) { return ch->ep.client_context; }
void *kmcl_channel_context_of_size(struct kmcl_channel *ch, size_t bytes) { return kmcl_ep_context(&ch->ep, bytes); }
struct vmbus_channel *kmcl_channel_vmbus(struct kmcl_channel *ch) { return ch->vch; }
bool kmcl_channel_failed(struct kmcl_channel *ch) { return kmcl_is_failed(ch); }
bool kmcl_channel_rescinded(struct kmcl_channel *ch) { return kmcl_is_rescinded(ch); }
struct kmcl_ring *kmcl_channel_inbound_ring(struct kmcl_channel *ch) { return &ch->ep.in; }

void kmcl_channel_get_interface_instance(struct kmcl_channel *ch, struct vmbus_guid *type, struct vmbus_guid *instance)
{
    if (type)
        *type = ch->if_type;
    if (instance)
        *instance = ch->if_instance;
}

void kmcl_channel_get_stats(struct kmcl_channel *ch, struct kmcl_channel_stats *out)
{
    _Static_assert(sizeof *out % sizeof(uint64_t) == 0, "the stats are u64 counters");
    const uint64_t *from = (const uint64_t *)&ch->stats;
    uint64_t *to = (uint64_t *)out;
    for (size_t i = 0; i < sizeof *out / sizeof(uint64_t); i++)
        to[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
}

void kmcl_channel_report_failure(struct kmcl_channel *ch)
{
    kmcl_fail_channel(ch, kmcl_ring_failure(&ch->ep.in), "reading the inbound ring (suppressed queue management)");
}

status_t kmcl_channel_create_gpadl_from_buffer(struct kmcl_channel *ch, void *buf, size_t bytes, uint32_t *handle)
{
    if (kmcl_is_rescinded(ch) || !ch->vch)
        return STATUS_CANCELLED;
    return vmbus_gpadl_create(ch->vch, buf, bytes, handle);
}

status_t kmcl_channel_delete_gpadl(struct kmcl_channel *ch, uint32_t handle)
{
    if (!ch->vch)
        return STATUS_INVALID_STATE;
    return vmbus_gpadl_destroy(ch->vch, handle);
}

/* ---- enable, pause, start ---- */

/* Stops the worker (enable's failure path and disable: nothing reads the rings afterwards). */
static void stop_worker(struct kmcl_channel *ch)
{
    __atomic_store_n(&ch->worker_stop, true, __ATOMIC_RELEASE);
    event_set(&ch->work);
    thread_join(ch->worker);
    ch->worker = NULL;
}

status_t kmcl_channel_enable(struct kmcl_channel *ch)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    status_t s = kmcl_ep_enable_check(EP(ch));
    if (s != STATUS_OK)
        return s;
    bool suppressed = ch->ep.flags & KMCL_CHANNEL_FLAG_SUPPRESS_QUEUE_MANAGEMENT;
    /* Two readers of one ring (the poller and the worker), or a driver's reader beside one of them. */
    if ((ch->polling && ch->at_passive) || (suppressed && (ch->at_passive || ch->polling)))
        return STATUS_INVALID_PARAMETER;
    if (kmcl_is_rescinded(ch))
        return STATUS_CANCELLED;
    kmcl_dpc_init(ch);
    ch->worker_stop = false;
    s = thread_create("kmcl-worker", kmcl_worker_main, ch, (int)ch->target_cpu, &ch->worker);
    if (s != STATUS_OK)
        return s;
    struct vmbus_open_params p = { .out_ring_bytes = ch->out_pages * 4096, .in_ring_bytes = ch->in_pages * 4096,
                                   .target_cpu = ch->target_cpu, .on_interrupt = kmcl_on_interrupt, .ctx = ch };
    s = vmbus_channel_open(ch->vch, &p);
    uint32_t out_bytes = 0, in_bytes = 0;
    void *out = s == STATUS_OK ? vmbus_channel_out_ring(ch->vch, &out_bytes) : NULL;
    void *in = s == STATUS_OK ? vmbus_channel_in_ring(ch->vch, &in_bytes) : NULL;
    /* The rings were zeroed by the bus; the host may already have written (a service that sends as
     * soon as it sees the open), so the reader takes over the indices it finds. */
    if (s == STATUS_OK)
        s = kmcl_ring_attach_pages(&ch->ep.out, KMCL_RING_WRITER, out, out_bytes, 0);
    if (s == STATUS_OK)
        s = kmcl_ring_attach_pages(&ch->ep.in, KMCL_RING_READER, in, in_bytes, 0);
    if (s == STATUS_OK)
        s = kmcl_ep_alloc_bounce(&ch->ep);
    if (s != STATUS_OK) {
        stop_worker(ch);
        if (vmbus_channel_is_open(ch->vch) && vmbus_channel_close(ch->vch) != STATUS_OK)
            pr_warn("kmcl: %s (relid %u): close after a failed enable failed", ch->name, ch->relid);
        kfree(ch->ep.bounce);
        ch->ep.bounce = NULL;
        return s;
    }
    __atomic_store_n(&ch->ep.state, KMCL_EP_ENABLED, __ATOMIC_SEQ_CST);
    if (ch->polling &&
        thread_create("kmcl-poll", kmcl_poller_main, ch, (int)ch->poll_cpu, &ch->poller) != STATUS_OK) {
        pr_warn("kmcl: %s: no polling thread: interrupts stay the way in", ch->name);
        ch->polling = false;
    }
    kmcl_state_cb(ch, KMCL_EP_OPENED);
    kmcl_state_cb(ch, KMCL_EP_STARTED);
    kmcl_state_cb(ch, KMCL_EP_POST_STARTED);
    dpc_queue(&ch->dpc); /* anything the host wrote before we attached */
    if (kmcl_is_rescinded(ch))
        event_set(&ch->work); /* rescinded while it opened: the worker tells the driver */
    return STATUS_OK;
}

void kmcl_channel_pause(struct kmcl_channel *ch)
{
    __atomic_store_n(&ch->paused, true, __ATOMIC_RELEASE);
}

void kmcl_channel_start(struct kmcl_channel *ch)
{
    __atomic_store_n(&ch->paused, false, __ATOMIC_RELEASE);
    if (kmcl_state(ch) == KMCL_EP_ENABLED)
        dpc_queue(&ch->dpc);
}

/* ---- rescind, disable, cleanup ---- */

void kmcl_channel_rescind(struct kmcl_channel *ch)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    if (!ch || __atomic_exchange_n(&ch->rescinded, true, __ATOMIC_SEQ_CST))
        return;
    /* Sends that saw the channel usable under send_lock are in the engine now: cancelled with the
     * rest. Later ones see the flag (under the lock, or before it) and fail at once. */
    uint32_t n = kmcl_cancel_sends(ch);
    pr_warn("kmcl: %s (relid %u): the host rescinded the channel: %u sends cancelled; sends fail (cancelled) "
            "until the driver disables it",
            ch->name, ch->relid, n);
    if (kmcl_state(ch) == KMCL_EP_ENABLED)
        event_set(&ch->work); /* closed, at PASSIVE, from the worker */
}

void kmcl_channel_disable(struct kmcl_channel *ch)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!ch || kmcl_state(ch) != KMCL_EP_ENABLED)
        return;
    if (!kmcl_is_rescinded(ch))
        kmcl_state_cb(ch, KMCL_EP_SUSPEND); /* not after a rescind: the host ended it, closed says so */
    /* seq_cst with the DPC's dpc_running store then state load: either it sees DISABLING, or we see
     * it running and wait. */
    __atomic_store_n(&ch->ep.state, KMCL_EP_DISABLING, __ATOMIC_SEQ_CST);
    irql_t fence = kmcl_lock(&ch->send_lock); /* writers that saw ENABLED under the lock are done */
    kmcl_unlock(&ch->send_lock, fence);
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
    stop_worker(ch);
    /* From here on nothing of the VMBus channel is used (the hold only keeps its memory). */
    struct vmbus_channel *vch = ch->vch;
    ch->vch = NULL;
    status_t closed = vmbus_channel_close(vch);
    if (closed != STATUS_OK)
        pr_warn("kmcl: %s (relid %u): the host did not confirm the close (%s)", ch->name, ch->relid,
                status_name(closed));
    dpc_cancel(&ch->dpc); /* an interrupt that came in meanwhile queued it again: it finds DISABLING */
    kmcl_retire_deferred(ch);
    (void)kmcl_cancel_sends(ch); /* completions: nothing to write into; packets: STATUS_CANCELLED */
    kfree(ch->ep.bounce);
    ch->ep.bounce = NULL;
    __atomic_store_n(&ch->ep.state, KMCL_EP_DISABLED, __ATOMIC_RELEASE);
    kmcl_closed_once(ch);
}

void kmcl_free_channel(struct kmcl_channel *ch)
{
    struct vmbus_channel *held = ch->held;
    kmcl_ep_destroy(&ch->ep);
    kfree(ch);
    vmbus_channel_release(held); /* the hold of kmcl_channel_allocate (<= DISPATCH) */
}

void kmcl_channel_cleanup(struct kmcl_channel *ch)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!ch)
        return;
    kmcl_channel_disable(ch);
    /* Contexts the driver still holds point at the channel: it goes when the last is completed. */
    irql_t old = kmcl_lock(&ch->in_lock);
    uint32_t busy = ch->incoming_busy;
    ch->cleanup_pending = busy != 0;
    kmcl_unlock(&ch->in_lock, old);
    if (busy) {
        pr_warn("kmcl: %s (relid %u): cleanup with %u incoming packets not completed: the channel is freed "
                "when the last one is completed",
                ch->name, ch->relid, busy);
        return;
    }
    kmcl_free_channel(ch);
}
