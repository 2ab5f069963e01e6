/*
 * vmbus_server: the server's machinery around the protocol (contract: sim/vmbus_server.h; state and
 * locking: sim/vmbus_internal.h): creation and destruction, the port handlers that queue the guest's
 * messages and signals, the server thread, the outbox with its delays, reordering and retries, the
 * callback queue, host -> guest signals, stats and the public host actions. The protocol itself is
 * in vmbus_channels.c.
 *
 * Why a thread and queues: port handlers run with the hvsim mutex held, so they can neither call a
 * device back (a VSP calls hvsim) nor wait; and a host that answers inline could never show a guest
 * the delays, reordering and full-queue retries real hosts produce. The thread takes one guest message
 * at a time (in arrival order), then runs the callbacks that produced, then posts what is due.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sim/vmbus_internal.h"

int64_t vb_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000ll + t.tv_nsec;
}

/* The hvsim log contract: the callback runs with the model mutex held, so take it (the server never
 * logs from a port handler, where it is already held). */
void vb_log(struct hvsim_vmbus *vb, int verbosity, const char *fmt, ...)
{
    if (verbosity > vb->sim->cfg.verbosity)
        return;
    char line[448];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&vb->sim->lock);
    hvsim_log(vb->sim, verbosity, "vmbus: %s", line);
    pthread_mutex_unlock(&vb->sim->lock);
}

void vb_guest_error(struct hvsim_vmbus *vb, const char *fmt, ...)
{
    VB_COUNT(vb, guest_errors);
    char line[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    vb_log(vb, 0, "guest error: %s", line);
}

void *vb_alloc(size_t size)
{
    void *p = calloc(1, size);
    if (!p) {
        fprintf(stderr, "hvsim: vmbus: out of memory\n");
        abort();
    }
    return p;
}

/* ---- the outbox ---- */

static void enqueue_out(struct hvsim_vmbus *vb, struct vb_out *o)
{
    int64_t now = vb_now_ns();
    int64_t delay = (int64_t)vb->cfg.response_delay_us * 1000;
    pthread_mutex_lock(&vb->q_lock);
    if (vb->cfg.hazards & HVSIM_VMBUS_REORDER_RESPONSES) {
        if (!vb->burst_id || now >= vb->burst_end_ns) {
            vb->burst_id++;
            vb->burst_end_ns = now + (delay ? delay : VB_REORDER_WINDOW_NS);
        }
        o->burst = vb->burst_id;
        o->due_ns = vb->burst_end_ns;
    } else {
        o->due_ns = now + ((vb->cfg.hazards & HVSIM_VMBUS_DELAY_RESPONSES) ? delay : 0);
    }
    if (vb->out_tail)
        vb->out_tail->next = o;
    else
        vb->out_head = o;
    vb->out_tail = o;
    vb->out_count++;
    pthread_cond_signal(&vb->work);
    pthread_mutex_unlock(&vb->q_lock);
}

void vb_queue_message(struct hvsim_vmbus *vb, uint32_t vp, uint32_t sint, const void *payload, uint32_t size,
                      bool reorderable)
{
    struct vb_out *o = vb_alloc(sizeof *o);
    o->kind = VB_OUT_MESSAGE;
    o->vp = vp;
    o->sint = sint;
    o->size = size < sizeof o->payload ? size : (uint32_t)sizeof o->payload;
    o->reorderable = reorderable;
    memcpy(o->payload, payload, o->size);
    enqueue_out(vb, o);
}

void vb_reply(struct hvsim_vmbus *vb, const void *payload, uint32_t size, bool reorderable)
{
    vb_queue_message(vb, vb->reply_vp, vb->reply_sint, payload, size, reorderable);
}

void vb_queue_signal(struct hvsim_vmbus *vb, uint32_t relid)
{
    struct vb_out *o = vb_alloc(sizeof *o);
    o->kind = VB_OUT_SIGNAL;
    o->relid = relid;
    enqueue_out(vb, o);
}

/* The head's reorder window is over: the reorderable items of that window (a run at the head, since
 * windows follow each other) swap places so that they go out newest first; the others stay put. */
static void release_burst_locked(struct hvsim_vmbus *vb)
{
    uint64_t burst = vb->out_head->burst;
    uint32_t n = 0;
    for (struct vb_out *o = vb->out_head; o && o->burst == burst; o = o->next)
        n++;
    struct vb_out **run = vb_alloc(n * sizeof *run);
    uint32_t *movable = vb_alloc(n * sizeof *movable);
    uint32_t m = 0;
    struct vb_out *o = vb->out_head;
    for (uint32_t i = 0; i < n; i++, o = o->next) {
        run[i] = o;
        if (o->reorderable)
            movable[m++] = i;
    }
    struct vb_out *rest = o;
    for (uint32_t i = 0; i < m / 2; i++) {
        struct vb_out *t = run[movable[i]];
        run[movable[i]] = run[movable[m - 1 - i]];
        run[movable[m - 1 - i]] = t;
    }
    for (uint32_t i = 0; i < n; i++) {
        run[i]->burst = 0;
        run[i]->next = i + 1 < n ? run[i + 1] : rest;
    }
    vb->out_head = run[0];
    if (!rest)
        vb->out_tail = run[n - 1];
    free(movable);
    free(run);
}

/* Posts one outbox item (no lock held); false if the guest's SINT queue is full. */
static bool deliver(struct hvsim_vmbus *vb, const struct vb_out *o)
{
    if (o->kind == VB_OUT_SIGNAL) {
        /* A hazard signal: the channel may have closed meanwhile, then there is nothing to tell. */
        vb_signal_channel(&vb->channels[o->relid]);
        return true;
    }
    if (!hvsim_post(vb->sim, o->vp, o->sint, HV_MESSAGE_VMBUS, o->payload, o->size, false))
        return false;
    VB_COUNT(vb, messages_out);
    uint32_t type = 0;
    if (o->size >= sizeof type)
        memcpy(&type, o->payload, sizeof type);
    vb_log(vb, 1, "-> vp%u sint%u: %s (%u bytes)", o->vp, o->sint, vmbus_msg_name(type), o->size);
    return true;
}

static void deliver_due(struct hvsim_vmbus *vb)
{
    for (;;) {
        int64_t now = vb_now_ns();
        pthread_mutex_lock(&vb->q_lock);
        if (!vb->out_head || vb->out_head->due_ns > now || vb->retry_at_ns > now) {
            pthread_mutex_unlock(&vb->q_lock);
            return;
        }
        if (vb->out_head->burst)
            release_burst_locked(vb);
        struct vb_out *o = vb->out_head; /* only this thread removes items; others append */
        pthread_mutex_unlock(&vb->q_lock);

        bool ok = deliver(vb, o);

        pthread_mutex_lock(&vb->q_lock);
        if (ok) {
            vb->out_head = o->next;
            if (!vb->out_head)
                vb->out_tail = NULL;
            vb->out_count--;
            vb->retry_at_ns = 0;
            vb->retry_backoff_ns = 0;
        } else {
            /* SINT queue full: the guest has not consumed its slot. Retry later, in order. */
            vb->retry_backoff_ns = vb->retry_backoff_ns ? vb->retry_backoff_ns * 2 : VB_RETRY_MIN_NS;
            if (vb->retry_backoff_ns > VB_RETRY_MAX_NS)
                vb->retry_backoff_ns = VB_RETRY_MAX_NS;
            vb->retry_at_ns = now + vb->retry_backoff_ns;
        }
        pthread_mutex_unlock(&vb->q_lock);
        if (!ok) {
            VB_COUNT(vb, post_retries);
            return;
        }
        free(o);
    }
}

/* ---- callbacks ---- */

void vb_queue_callback(struct hvsim_vmbus *vb, const struct vb_callback *cb)
{
    struct vb_callback *c = vb_alloc(sizeof *c);
    *c = *cb;
    c->next = NULL;
    pthread_mutex_lock(&vb->q_lock);
    if (vb->cb_tail)
        vb->cb_tail->next = c;
    else
        vb->cb_head = c;
    vb->cb_tail = c;
    pthread_cond_signal(&vb->work);
    pthread_mutex_unlock(&vb->q_lock);
}

static void run_callbacks(struct hvsim_vmbus *vb)
{
    for (;;) {
        pthread_mutex_lock(&vb->q_lock);
        struct vb_callback *c = vb->cb_head;
        if (c) {
            vb->cb_head = c->next;
            if (!vb->cb_head)
                vb->cb_tail = NULL;
        }
        pthread_mutex_unlock(&vb->q_lock);
        if (!c)
            return;
        const struct hvsim_vmbus_device *d = c->dev;
        switch (c->kind) {
        case VB_CB_OPEN:
            if (d->on_open)
                d->on_open(d->ctx, c->ch, c->in_ring, c->in_bytes, c->out_ring, c->out_bytes);
            break;
        case VB_CB_CLOSE:
            if (d->on_close)
                d->on_close(d->ctx, c->ch);
            break;
        case VB_CB_SIGNAL:
            if (d->on_signal)
                d->on_signal(d->ctx, c->ch);
            break;
        }
        free(c);
    }
}

/* ---- port handlers (hvsim mutex held: q_lock only, hvsim_log directly) ---- */

static uint16_t message_port(struct hvsim *sim, void *ctx, uint32_t vp, uint32_t connection_id, uint32_t type,
                             const void *payload, uint32_t size)
{
    struct hvsim_vmbus *vb = ctx;
    pthread_mutex_lock(&vb->q_lock);
    if (vb->in_count == HVSIM_VMBUS_INBOX_DEPTH) {
        pthread_mutex_unlock(&vb->q_lock);
        hvsim_log(sim, 1, "vmbus: vp%u: %u messages wait for the server: INSUFFICIENT_BUFFERS", vp,
                  HVSIM_VMBUS_INBOX_DEPTH);
        return HV_STATUS_INSUFFICIENT_BUFFERS;
    }
    struct vb_inbox_entry *e = &vb->inbox[(vb->in_head + vb->in_count) % HVSIM_VMBUS_INBOX_DEPTH];
    e->vp = vp;
    e->conn = connection_id;
    e->type = type;
    e->size = size; /* hvsim checked size <= 240 */
    memcpy(e->payload, payload, size);
    vb->in_count++;
    pthread_cond_signal(&vb->work);
    pthread_mutex_unlock(&vb->q_lock);
    return HV_STATUS_SUCCESS;
}

/* HvSignalEvent on a channel's connection id. The flag number is not used: the connection id names
 * the channel (Linux signals with flag 0). */
uint16_t vb_channel_event(struct hvsim *sim, void *ctx, uint32_t vp, uint32_t connection_id, uint16_t flag)
{
    (void)sim;
    (void)vp;
    (void)flag;
    struct hvsim_vmbus *vb = ctx;
    uint32_t relid = connection_id - HVSIM_VMBUS_CONN_CHANNEL_BASE; /* registered for 1..2047 only */
    pthread_mutex_lock(&vb->q_lock);
    vb->signalled[relid / 64] |= 1ull << (relid % 64);
    VB_COUNT(vb, guest_signals);
    pthread_cond_signal(&vb->work);
    pthread_mutex_unlock(&vb->q_lock);
    return HV_STATUS_SUCCESS;
}

/* HvSignalEvent on VMBUS_CONN_EVENT: the WS2008/WIN7 way, the guest set its channels' relid bits in
 * the child -> parent half of the interrupt page first. Each bit is taken (exchanged with 0). */
static uint16_t legacy_event(struct hvsim *sim, void *ctx, uint32_t vp, uint32_t connection_id, uint16_t flag)
{
    (void)vp;
    (void)connection_id;
    (void)flag;
    struct hvsim_vmbus *vb = ctx;
    uint64_t page = __atomic_load_n(&vb->interrupt_page, __ATOMIC_ACQUIRE);
    uint64_t *half = page ? hvsim_gpa(sim, page + VMBUS_INTERRUPT_PAGE_HALF, VMBUS_INTERRUPT_PAGE_HALF) : NULL;
    pthread_mutex_lock(&vb->q_lock);
    VB_COUNT(vb, guest_signals);
    if (half) {
        for (uint32_t w = 0; w < VB_RELIDS / 64; w++) /* bits past relid 2047 name no channel */
            vb->signalled[w] |= __atomic_exchange_n(&half[w], 0, __ATOMIC_SEQ_CST);
        pthread_cond_signal(&vb->work);
    }
    pthread_mutex_unlock(&vb->q_lock);
    return HV_STATUS_SUCCESS;
}

/* ---- host -> guest signals ---- */

bool vb_signal_channel(struct hvsim_vmbus_channel *ch)
{
    struct hvsim_vmbus *vb = ch->vb;
    if (__atomic_load_n(&ch->state, __ATOMIC_ACQUIRE) != VB_CH_OPEN)
        return false;
    uint32_t vp = __atomic_load_n(&ch->target_vp, __ATOMIC_RELAXED);
    uint32_t version = __atomic_load_n(&vb->version, __ATOMIC_ACQUIRE);
    uint32_t sint = __atomic_load_n(&vb->conn_sint, __ATOMIC_RELAXED);
    if (vp == VMBUS_TARGET_VP_NO_INTERRUPT || !version)
        return false;
    bool ok;
    if (version >= VMBUS_VERSION_WIN8) {
        ok = hvsim_signal(vb->sim, vp, sint, ch->relid);
    } else {
        /* WS2008/WIN7: flag 0 says "look at the interrupt page", whose first half has a bit per
         * relid (hyperv-facts.md 3.10). */
        uint64_t page = __atomic_load_n(&vb->interrupt_page, __ATOMIC_ACQUIRE);
        uint64_t *half = hvsim_gpa(vb->sim, page, VMBUS_INTERRUPT_PAGE_HALF);
        if (!half)
            return false;
        __atomic_fetch_or(&half[ch->relid / 64], 1ull << (ch->relid % 64), __ATOMIC_SEQ_CST);
        ok = hvsim_signal(vb->sim, vp, sint, 0);
    }
    if (ok)
        VB_COUNT(vb, host_signals);
    return ok;
}

/* ---- the thread ---- */

static bool any_signalled_locked(const struct hvsim_vmbus *vb)
{
    for (uint32_t w = 0; w < VB_RELIDS / 64; w++)
        if (vb->signalled[w])
            return true;
    return false;
}

/* Is there work now? If not, *wake is when there will be (0: only when woken). */
static bool work_ready_locked(const struct hvsim_vmbus *vb, int64_t now, int64_t *wake)
{
    *wake = 0;
    if ((vb->in_count && vb->out_count < VB_OUTBOX_HIGH) || vb->cb_head || any_signalled_locked(vb))
        return true;
    if (vb->out_head) {
        int64_t t = vb->out_head->due_ns > vb->retry_at_ns ? vb->out_head->due_ns : vb->retry_at_ns;
        if (t <= now)
            return true;
        *wake = t;
    }
    if (vb->wake_at_ns) {
        if (vb->wake_at_ns <= now)
            return true;
        if (!*wake || vb->wake_at_ns < *wake)
            *wake = vb->wake_at_ns;
    }
    return false;
}

static bool idle_locked(const struct hvsim_vmbus *vb)
{
    return !vb->busy && !vb->in_count && !vb->cb_head && !vb->out_head && !any_signalled_locked(vb);
}

static void run_once(struct hvsim_vmbus *vb)
{
    /* Guest messages, one at a time, in order; none while the outbox is backed up (the inbox then
     * fills and the guest's posts get INSUFFICIENT_BUFFERS: flow control as on a busy host). */
    for (;;) {
        struct vb_inbox_entry e;
        pthread_mutex_lock(&vb->q_lock);
        bool have = vb->in_count && vb->out_count < VB_OUTBOX_HIGH;
        if (have) {
            e = vb->inbox[vb->in_head];
            vb->in_head = (vb->in_head + 1) % HVSIM_VMBUS_INBOX_DEPTH;
            vb->in_count--;
        }
        pthread_mutex_unlock(&vb->q_lock);
        if (!have)
            break;
        pthread_mutex_lock(&vb->state_lock);
        vb_handle_message(vb, &e);
        pthread_mutex_unlock(&vb->state_lock);
    }

    uint64_t bits[VB_RELIDS / 64];
    pthread_mutex_lock(&vb->q_lock);
    bool signalled = any_signalled_locked(vb);
    memcpy(bits, vb->signalled, sizeof bits);
    memset(vb->signalled, 0, sizeof vb->signalled);
    pthread_mutex_unlock(&vb->q_lock);

    int64_t now = vb_now_ns();
    pthread_mutex_lock(&vb->state_lock);
    if (signalled)
        vb_dispatch_signals(vb, bits);
    int64_t next = vb_periodic(vb, now);
    pthread_mutex_unlock(&vb->state_lock);
    pthread_mutex_lock(&vb->q_lock);
    vb->wake_at_ns = next;
    pthread_mutex_unlock(&vb->q_lock);

    /* Callbacks before posts: a device's on_open runs before the guest can see OPENCHANNEL_RESULT. */
    run_callbacks(vb);
    deliver_due(vb);
}

static void *thread_main(void *arg)
{
    struct hvsim_vmbus *vb = arg;
    pthread_mutex_lock(&vb->q_lock);
    while (!vb->stop) {
        int64_t wake;
        if (!work_ready_locked(vb, vb_now_ns(), &wake)) {
            if (wake) {
                struct timespec ts = { .tv_sec = wake / 1000000000ll, .tv_nsec = wake % 1000000000ll };
                pthread_cond_timedwait(&vb->work, &vb->q_lock, &ts);
            } else {
                pthread_cond_wait(&vb->work, &vb->q_lock);
            }
            continue;
        }
        vb->busy = true;
        pthread_mutex_unlock(&vb->q_lock);
        run_once(vb);
        pthread_mutex_lock(&vb->q_lock);
        vb->busy = false;
        if (idle_locked(vb))
            pthread_cond_broadcast(&vb->idle);
    }
    pthread_mutex_unlock(&vb->q_lock);
    return NULL;
}

/* ---- creation and destruction ---- */

static bool init_conds(struct hvsim_vmbus *vb)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return false;
    bool ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0;
    if (ok && pthread_cond_init(&vb->work, &ca) != 0)
        ok = false;
    else if (ok && pthread_cond_init(&vb->idle, &ca) != 0) {
        pthread_cond_destroy(&vb->work);
        ok = false;
    }
    pthread_condattr_destroy(&ca);
    return ok;
}

/* The server's own message and event ports (bits of ports_registered), so that a failed creation
 * removes only what it registered. */
static const struct {
    uint32_t connection_id;
    bool message, multiclient_host_only;
} server_ports[] = {
    { VMBUS_CONN_MESSAGE, true, false },
    { VMBUS_CONN_EVENT, false, false },
    { VMBUS_CONN_MESSAGE_MULTICLIENT, true, true },
    { HVSIM_VMBUS_CONN_REDIRECT, true, true },
};

static bool register_ports(struct hvsim_vmbus *vb)
{
    for (uint32_t i = 0; i < sizeof server_ports / sizeof server_ports[0]; i++) {
        /* A host older than 5.0 has no multiclient port: the guest's post there gets
         * INVALID_CONNECTION_ID, which is how it learns (hyperv-facts.md 3.7). */
        if (server_ports[i].multiclient_host_only && vb->cfg.max_version < VMBUS_VERSION_WIN10_V5)
            continue;
        bool ok = server_ports[i].message
                      ? hvsim_register_message_port(vb->sim, server_ports[i].connection_id, message_port, vb)
                      : hvsim_register_event_port(vb->sim, server_ports[i].connection_id, legacy_event, vb);
        if (!ok)
            return false;
        vb->ports_registered |= 1u << i;
    }
    return true;
}

static void unregister_ports(struct hvsim_vmbus *vb)
{
    for (uint32_t i = 0; i < sizeof server_ports / sizeof server_ports[0]; i++)
        if (vb->ports_registered & (1u << i))
            hvsim_unregister_port(vb->sim, server_ports[i].connection_id);
    vb->ports_registered = 0;
    /* A channel slot in use has its event port (vb_new_offer registers it before using the slot). */
    for (uint32_t r = 1; r < VB_RELIDS; r++)
        if (vb->channels[r].state != VB_CH_FREE)
            hvsim_unregister_port(vb->sim, HVSIM_VMBUS_CONN_CHANNEL_BASE + r);
}

static void free_queues(struct hvsim_vmbus *vb)
{
    while (vb->out_head) {
        struct vb_out *o = vb->out_head;
        vb->out_head = o->next;
        free(o);
    }
    vb->out_tail = NULL;
    free(vb->inbox);
}

static const char *check_config(struct hvsim *sim, const struct hvsim_vmbus_config *cfg)
{
    if (!sim || !cfg)
        return "no model or configuration";
    if (cfg->max_version && !vb_version_known(cfg->max_version))
        return "max_version is not a VMBus version";
    if (cfg->device_count > VMBUS_MAX_RELID || (cfg->device_count && !cfg->devices))
        return "device table missing or over 2047 devices";
    for (uint32_t i = 0; i < cfg->device_count; i++)
        if (!cfg->devices[i].name || strlen(cfg->devices[i].name) >= VB_NAME_MAX ||
            cfg->devices[i].sub_channels > HVSIM_VMBUS_MAX_SUB_CHANNELS)
            return "a device without a name (or over 31 characters) or with over 64 sub-channels";
    if (cfg->rescind_device && (strlen(cfg->rescind_device) >= VB_NAME_MAX || !cfg->rescind_after_ms))
        return "rescind_device over 31 characters or rescind_after_ms 0";
    return NULL;
}

struct hvsim_vmbus *hvsim_vmbus_create(struct hvsim *sim, const struct hvsim_vmbus_config *cfg)
{
    const char *why = check_config(sim, cfg);
    if (why) {
        if (sim) {
            pthread_mutex_lock(&sim->lock);
            hvsim_log(sim, 0, "vmbus: create: bad configuration: %s", why);
            pthread_mutex_unlock(&sim->lock);
        }
        return NULL;
    }
    struct hvsim_vmbus *vb = vb_alloc(sizeof *vb);
    vb->sim = sim;
    vb->cfg = *cfg;
    if (!vb->cfg.max_version)
        vb->cfg.max_version = VMBUS_VERSION_COPPER;
    if (!vb->cfg.monitor_latency_us)
        vb->cfg.monitor_latency_us = VB_DEFAULT_MONITOR_LATENCY_US;
    vb->cfg.devices = NULL; /* copied below, one by one */
    vb->cfg.device_count = 0;
    if (cfg->rescind_device)
        strcpy(vb->rescind_device, cfg->rescind_device);
    vb->cfg.rescind_device = NULL;
    vb->conn_sint = VMBUS_MESSAGE_SINT;
    for (uint32_t r = 0; r < VB_RELIDS; r++) {
        vb->channels[r].vb = vb;
        vb->channels[r].relid = r;
    }
    vb->inbox = vb_alloc(HVSIM_VMBUS_INBOX_DEPTH * sizeof *vb->inbox);
    vb->gpadls = vb_alloc(HVSIM_VMBUS_MAX_GPADLS * sizeof *vb->gpadls);
    if (pthread_mutex_init(&vb->state_lock, NULL) != 0) {
        free(vb->gpadls);
        free(vb->inbox);
        free(vb);
        return NULL;
    }
    if (pthread_mutex_init(&vb->q_lock, NULL) != 0 || !init_conds(vb)) {
        pthread_mutex_destroy(&vb->state_lock);
        free(vb->gpadls);
        free(vb->inbox);
        free(vb);
        return NULL;
    }
    bool ok = register_ports(vb);
    pthread_mutex_lock(&vb->state_lock);
    for (uint32_t i = 0; ok && i < cfg->device_count; i++) {
        struct vb_device *d = vb_alloc(sizeof *d);
        d->dev = cfg->devices[i];
        strcpy(d->name, cfg->devices[i].name);
        d->dev.name = d->name;
        d->next = vb->devices;
        vb->devices = d;
        ok = vb_new_offer(vb, &d->dev, 0, 0) != NULL;
    }
    pthread_mutex_unlock(&vb->state_lock);
    if (ok)
        ok = pthread_create(&vb->thread, NULL, thread_main, vb) == 0;
    if (!ok) {
        vb_log(vb, 0, "create: cannot register its ports or offer its devices, or start its thread");
        unregister_ports(vb);
        vb_free_tables(vb);
        free_queues(vb);
        pthread_cond_destroy(&vb->idle);
        pthread_cond_destroy(&vb->work);
        pthread_mutex_destroy(&vb->q_lock);
        pthread_mutex_destroy(&vb->state_lock);
        free(vb);
        return NULL;
    }
    char v[16];
    vb_log(vb, 1, "server up: versions up to %s, %u devices, hazards 0x%x", vb_version_name(vb->cfg.max_version, v),
           cfg->device_count, vb->cfg.hazards);
    return vb;
}

void hvsim_vmbus_destroy(struct hvsim_vmbus *vb)
{
    if (!vb)
        return;
    pthread_mutex_lock(&vb->q_lock);
    vb->stop = true;
    pthread_cond_signal(&vb->work);
    pthread_mutex_unlock(&vb->q_lock);
    pthread_join(vb->thread, NULL);
    /* The thread is gone: the callbacks still queued (an on_open, say) run here, then every open
     * channel gets its on_close, so a VSP always sees its channel end. */
    run_callbacks(vb);
    pthread_mutex_lock(&vb->state_lock);
    vb_close_all_for_destroy(vb);
    pthread_mutex_unlock(&vb->state_lock);
    run_callbacks(vb);
    unregister_ports(vb);
    vb_free_tables(vb);
    free_queues(vb);
    pthread_cond_destroy(&vb->idle);
    pthread_cond_destroy(&vb->work);
    pthread_mutex_destroy(&vb->q_lock);
    pthread_mutex_destroy(&vb->state_lock);
    free(vb);
}

/* ---- host actions ---- */

static struct hvsim_vmbus_channel *live_channel(struct hvsim_vmbus *vb, uint32_t relid)
{
    if (relid == 0 || relid >= VB_RELIDS)
        return NULL;
    uint32_t st = vb->channels[relid].state;
    return st == VB_CH_OFFERED || st == VB_CH_OPEN ? &vb->channels[relid] : NULL;
}

bool hvsim_vmbus_rescind(struct hvsim_vmbus *vb, uint32_t relid)
{
    pthread_mutex_lock(&vb->state_lock);
    struct hvsim_vmbus_channel *ch = live_channel(vb, relid);
    bool ok = ch && vb_rescind(vb, ch);
    pthread_mutex_unlock(&vb->state_lock);
    return ok;
}

bool hvsim_vmbus_offer_sub_channels(struct hvsim_vmbus *vb, uint32_t primary_relid, uint16_t count)
{
    pthread_mutex_lock(&vb->state_lock);
    struct hvsim_vmbus_channel *ch = live_channel(vb, primary_relid);
    bool ok = ch && ch->sub_index == 0 && vb_offer_sub_channels(vb, ch, count);
    pthread_mutex_unlock(&vb->state_lock);
    return ok;
}

uint32_t hvsim_vmbus_offer(struct hvsim_vmbus *vb, const struct hvsim_vmbus_device *dev)
{
    if (!dev || !dev->name || strlen(dev->name) >= VB_NAME_MAX || dev->sub_channels > HVSIM_VMBUS_MAX_SUB_CHANNELS)
        return 0;
    struct vb_device *d = vb_alloc(sizeof *d);
    d->dev = *dev;
    strcpy(d->name, dev->name);
    d->dev.name = d->name;
    pthread_mutex_lock(&vb->state_lock);
    d->next = vb->devices; /* kept even if the offer fails: freed with the server */
    vb->devices = d;
    struct hvsim_vmbus_channel *ch = vb_new_offer(vb, &d->dev, 0, 0);
    pthread_mutex_unlock(&vb->state_lock);
    return ch ? ch->relid : 0;
}

bool hvsim_vmbus_signal_guest(struct hvsim_vmbus_channel *ch)
{
    return vb_signal_channel(ch);
}

uint32_t hvsim_vmbus_channel_relid(const struct hvsim_vmbus_channel *ch)
{
    return ch->relid;
}

uint32_t hvsim_vmbus_channel_target_vp(const struct hvsim_vmbus_channel *ch)
{
    return __atomic_load_n(&ch->target_vp, __ATOMIC_RELAXED);
}

uint16_t hvsim_vmbus_channel_sub_index(const struct hvsim_vmbus_channel *ch)
{
    return ch->sub_index;
}

const struct hvsim_vmbus_device *hvsim_vmbus_channel_device(const struct hvsim_vmbus_channel *ch)
{
    return ch->dev;
}

bool hvsim_vmbus_send_on_open(const struct hvsim_vmbus_channel *ch)
{
    return ch->vb->cfg.hazards & HVSIM_VMBUS_SEND_ON_OPEN;
}

bool hvsim_vmbus_gpadl_pfns(struct hvsim_vmbus_channel *ch, uint32_t handle, uint64_t **pfns_out,
                            uint32_t *count_out)
{
    struct hvsim_vmbus *vb = ch->vb;
    bool ok = false;
    *pfns_out = NULL;
    *count_out = 0;
    pthread_mutex_lock(&vb->state_lock);
    for (uint32_t i = 0; i < vb->gpadl_count; i++) {
        const struct vb_gpadl *g = vb->gpadls[i];
        if (g->handle != handle)
            continue;
        bool mine = g->relid == ch->relid || (ch->primary && g->relid == ch->primary);
        if (mine && g->pages > 0 && g->received == g->pages && g->byte_offset == 0) {
            uint64_t *copy = malloc((size_t)g->pages * sizeof *copy);
            if (copy) {
                memcpy(copy, g->pfn, (size_t)g->pages * sizeof *copy);
                *pfns_out = copy;
                *count_out = g->pages;
                ok = true;
            }
        }
        break; /* handles are unique */
    }
    pthread_mutex_unlock(&vb->state_lock);
    return ok;
}

/* ---- state ---- */

#define LOAD(field) out->field = __atomic_load_n(&vb->stats.field, __ATOMIC_RELAXED)

void hvsim_vmbus_get_stats(struct hvsim_vmbus *vb, struct hvsim_vmbus_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&vb->state_lock);
    out->version = vb->connected ? vb->version : 0;
    for (uint32_t r = 1; r < VB_RELIDS; r++) {
        const struct hvsim_vmbus_channel *ch = &vb->channels[r];
        if (ch->state == VB_CH_FREE)
            continue;
        out->offers++;
        out->channels_open += ch->state == VB_CH_OPEN;
        out->sub_channels += ch->sub_index != 0;
    }
    out->gpadls = vb->gpadl_count;
    pthread_mutex_unlock(&vb->state_lock);
    LOAD(messages_in);
    LOAD(messages_out);
    LOAD(guest_errors);
    LOAD(opens);
    LOAD(closes);
    LOAD(rescinds);
    LOAD(gpadls_created);
    LOAD(gpadls_torn_down);
    LOAD(guest_signals);
    LOAD(monitor_signals);
    LOAD(host_signals);
    LOAD(unloads);
    LOAD(messages_conn_message);
    LOAD(messages_conn_multiclient);
    LOAD(messages_conn_redirect);
    LOAD(post_retries);
}

bool hvsim_vmbus_flush(struct hvsim_vmbus *vb, uint32_t timeout_ms)
{
    int64_t deadline = vb_now_ns() + (int64_t)timeout_ms * 1000000ll;
    struct timespec ts = { .tv_sec = deadline / 1000000000ll, .tv_nsec = deadline % 1000000000ll };
    pthread_mutex_lock(&vb->q_lock);
    bool idle;
    while (!(idle = idle_locked(vb)) && vb_now_ns() < deadline)
        pthread_cond_timedwait(&vb->idle, &vb->q_lock, &ts);
    pthread_mutex_unlock(&vb->q_lock);
    return idle;
}
