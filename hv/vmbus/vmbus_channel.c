/*
 * vmbus_channel: GPADLs, channel open/close/retarget, interrupts from the host and signals to it
 * (contract in hv/vmbus/vmbus.h; bus state in hv/vmbus/vmbus_internal.h).
 */
#include "hv/vmbus/vmbus_internal.h"

#include "arch-x86_64/paging.h"
#include "hv/hv.h"
#include "kernel/fmt.h"
#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/percpu.h"
#include "kernel/string.h"
#include "kernel/thread.h"

/* ---- the channel object and its references ---- */

static uint32_t channel_objects; /* atomic: struct vmbus_channel in memory (vmbus_stats.channel_objects) */

uint32_t vmbus_channel_object_count(void)
{
    return __atomic_load_n(&channel_objects, __ATOMIC_RELAXED);
}

struct vmbus_channel *vmbus_channel_new(void)
{
    struct vmbus_channel *ch = kzalloc(sizeof *ch);
    if (!ch)
        return NULL;
    ch->refs = 1; /* the relid table's */
    __atomic_add_fetch(&channel_objects, 1, __ATOMIC_RELAXED);
    return ch;
}

void vmbus_channel_hold(struct vmbus_channel *ch)
{
    __atomic_add_fetch(&ch->refs, 1, __ATOMIC_RELAXED);
}

void vmbus_channel_release(struct vmbus_channel *ch)
{
    if (__atomic_sub_fetch(&ch->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    /* Nobody can find it any more: it left the table when its relid was released. */
    struct vmbus_channel *primary = ch->primary;
    dpc_cancel(&ch->held_dpc);
    kfree(ch);
    __atomic_sub_fetch(&channel_objects, 1, __ATOMIC_RELAXED);
    if (primary)
        vmbus_channel_release(primary); /* a sub-channel's reference on its primary */
}

/* ---- GPADLs ---- */

static uint32_t new_gpadl_handle_locked(void)
{
    uint32_t h = vmbus_bus.next_gpadl++;
    if (h == 0)
        h = vmbus_bus.next_gpadl++; /* 0 is "no GPADL" */
    return h;
}

/* The GPADL is gone from the guest's view (torn down, refused, or given up on). */
static void gpadl_gone(struct vmbus_channel *ch, bool leaked)
{
    irql_t old = spin_lock(&vmbus_bus.lock);
    if (ch->gpadls)
        ch->gpadls--;
    if (leaked)
        vmbus_bus.stats.leaked_gpadls++;
    spin_unlock(&vmbus_bus.lock, old);
}

/* GPADL_TEARDOWN and its answer. The GPADL leaves the relid's count when the host confirmed it or
 * the guest gave up (a timeout: the pages are the host's then). */
static status_t teardown(struct vmbus_channel *ch, uint32_t handle)
{
    struct vmbus_msg_gpadl_teardown m = { .hdr.type = VMBUS_MSG_GPADL_TEARDOWN, .child_relid = ch->relid,
                                          .gpadl = handle };
    struct vmbus_request r;
    /* Keyed by handle only (GPADL_TORNDOWN carries no relid); the host answers it after a rescind too. */
    vmbus_request_arm(&r, VMBUS_MSG_GPADL_TEARDOWN, false, 0, true, handle);
    status_t s = vmbus_post(&m, sizeof m);
    if (s != STATUS_OK) {
        vmbus_request_disarm(&r);
        return s; /* never sent: the GPADL is still live */
    }
    char what[64];
    fmt_snprintf(what, sizeof what, "GPADL_TEARDOWN of GPADL %#x (relid %u)", handle, ch->relid);
    s = vmbus_request_wait(&r, what);
    if (s == STATUS_OK) {
        irql_t old = spin_lock(&vmbus_bus.lock);
        vmbus_bus.stats.gpadls_torn_down++;
        vmbus_bus.stats.gpadls_live--;
        spin_unlock(&vmbus_bus.lock, old);
    }
    gpadl_gone(ch, s != STATUS_OK);
    return s;
}

/* GPADL_HEADER (+ GPADL_BODY ...) and the host's GPADL_CREATED (vmbus.h vmbus_gpadl_create). */
static status_t gpadl_create(struct vmbus_channel *ch, void *buf, size_t bytes, uint32_t *handle)
{
    uint32_t pages = (uint32_t)(bytes / 4096);
    irql_t old = spin_lock(&vmbus_bus.lock);
    bool rescinded = ch->rescinded;
    uint32_t h = rescinded ? 0 : new_gpadl_handle_locked();
    if (!rescinded)
        ch->gpadls++; /* from the header on, the relid is in use until the host answered */
    spin_unlock(&vmbus_bus.lock, old);
    if (rescinded)
        return STATUS_CANCELLED;
    uint8_t msg[HV_MESSAGE_PAYLOAD_MAX];
    struct vmbus_msg_gpadl_header *hdr = (void *)msg;
    uint32_t first = pages < VMBUS_GPADL_HEADER_PFNS ? pages : (uint32_t)VMBUS_GPADL_HEADER_PFNS;
    memset(hdr, 0, sizeof *hdr);
    hdr->hdr.type = VMBUS_MSG_GPADL_HEADER;
    hdr->child_relid = ch->relid;
    hdr->gpadl = h;
    hdr->range_buflen = (uint16_t)(8 + 8 * pages); /* pages <= VMBUS_GPADL_MAX_PAGES: fits (vmbus_proto.h) */
    hdr->range_count = 1;
    hdr->byte_count = (uint32_t)bytes;
    hdr->byte_offset = 0;
    for (uint32_t i = 0; i < first; i++) {
        uint64_t pfn = virt_to_phys((char *)buf + (size_t)i * 4096) >> 12;
        memcpy(msg + sizeof *hdr + 8 * i, &pfn, 8);
    }
    struct vmbus_request r;
    vmbus_request_arm(&r, VMBUS_MSG_GPADL_HEADER, true, ch->relid, true, h);
    status_t s = vmbus_post(msg, (uint32_t)sizeof *hdr + 8 * first);
    for (uint32_t done = first, number = 1; s == STATUS_OK && done < pages; number++) {
        struct vmbus_msg_gpadl_body *body = (void *)msg;
        uint32_t n = pages - done < VMBUS_GPADL_BODY_PFNS ? pages - done : (uint32_t)VMBUS_GPADL_BODY_PFNS;
        body->hdr.type = VMBUS_MSG_GPADL_BODY;
        body->hdr.padding = 0;
        body->msg_number = number;
        body->gpadl = h;
        for (uint32_t i = 0; i < n; i++) {
            uint64_t pfn = virt_to_phys((char *)buf + (size_t)(done + i) * 4096) >> 12;
            memcpy(msg + sizeof *body + 8 * i, &pfn, 8);
        }
        s = vmbus_post(msg, (uint32_t)sizeof *body + 8 * n);
        done += n;
    }
    if (s != STATUS_OK) {
        vmbus_request_disarm(&r);
        gpadl_gone(ch, false);
        return s;
    }
    char what[80];
    fmt_snprintf(what, sizeof what, "GPADL_HEADER for relid %u (GPADL %#x, %u pages)", ch->relid, h, pages);
    /* A rescind does not end this wait: the host still answers the GPADL (OpenVMM refuses one that
     * completes on a revoked channel), and until it has, it may hold the pages. */
    s = vmbus_request_wait(&r, what);
    if (s != STATUS_OK) {
        gpadl_gone(ch, true);
        pr_warn("vmbus: GPADL %#x of relid %u in an unknown state (%s): its %u pages are left to the host", h,
                ch->relid, status_name(s), pages);
        return s;
    }
    uint32_t status = ((const struct vmbus_msg_gpadl_created *)r.answer)->status;
    if (status != 0) {
        gpadl_gone(ch, false);
        if (vmbus_channel_rescinded(ch)) {
            pr_info("vmbus: relid %u was rescinded while GPADL %#x was being created: the host refused it", ch->relid,
                    h);
            return STATUS_CANCELLED;
        }
        pr_err("vmbus: host refused GPADL %#x (%u pages) for relid %u: status %#x", h, pages, ch->relid, status);
        return STATUS_DEVICE_ERROR;
    }
    old = spin_lock(&vmbus_bus.lock);
    vmbus_bus.stats.gpadls_created++;
    vmbus_bus.stats.gpadls_live++;
    spin_unlock(&vmbus_bus.lock, old);
    if (vmbus_channel_rescinded(ch)) {
        /* Created after all, for a channel that is gone: take the pages back before saying so. */
        pr_info("vmbus: relid %u was rescinded while GPADL %#x was being created: tearing it down", ch->relid, h);
        s = teardown(ch, h);
        return s == STATUS_OK ? STATUS_CANCELLED : s;
    }
    *handle = h;
    return STATUS_OK;
}

status_t vmbus_gpadl_create(struct vmbus_channel *ch, void *buf, size_t bytes, uint32_t *handle)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!vmbus_bus.connected)
        return STATUS_INVALID_STATE;
    if (!buf || ((uintptr_t)buf & 4095) || !bytes || (bytes & 4095) || bytes / 4096 > VMBUS_GPADL_MAX_PAGES)
        return STATUS_INVALID_PARAMETER;
    vmbus_channel_hold(ch);
    status_t s = gpadl_create(ch, buf, bytes, handle);
    vmbus_channel_settle(ch); /* a rescinded channel may be done with its relid now */
    vmbus_channel_release(ch);
    return s;
}

status_t vmbus_gpadl_destroy(struct vmbus_channel *ch, uint32_t handle)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!vmbus_bus.connected)
        return STATUS_INVALID_STATE;
    vmbus_channel_hold(ch);
    status_t s = teardown(ch, handle);
    vmbus_channel_settle(ch);
    vmbus_channel_release(ch);
    return s;
}

/* ---- rescind and the relid's release ---- */

void vmbus_channel_rescind_locked(struct vmbus_channel *ch)
{
    __atomic_store_n(&ch->rescinded, true, __ATOMIC_RELEASE);
    vmbus_cancel_requests_locked(ch->relid);
}

void vmbus_channel_unbind_locked(struct vmbus_channel *ch)
{
    ch->driver = NULL; /* driver_ctx stays: the driver may still read it through its own reference */
}

bool vmbus_channel_settle(struct vmbus_channel *ch)
{
    irql_t old = spin_lock(&vmbus_bus.lock);
    bool done = ch->rescinded && !ch->released && ch->state == VMBUS_CH_OFFERED && !ch->gpadls && !ch->driver;
    uint32_t relid = ch->relid;
    if (done) {
        ch->released = true;
        list_remove(&ch->link);
        if (vmbus_bus.by_relid[relid] == ch)
            vmbus_bus.by_relid[relid] = NULL;
        vmbus_bus.stats.channels--;
        if (ch->primary && ch->primary->sub_count)
            ch->primary->sub_count--;
    }
    spin_unlock(&vmbus_bus.lock, old);
    if (!done)
        return false;
    struct vmbus_msg_relid m = { .hdr.type = VMBUS_MSG_RELID_RELEASED, .child_relid = relid };
    if (vmbus_post(&m, sizeof m) != STATUS_OK)
        pr_warn("vmbus: RELID_RELEASED for relid %u not sent: the host keeps the relid", relid);
    vmbus_channel_release(ch); /* the table's reference */
    return true;
}

/* ---- open and close ---- */

static bool is_ring_size(uint32_t bytes)
{
    return bytes >= 8192 && !(bytes & 4095) && bytes / 4096 < VMBUS_GPADL_MAX_PAGES;
}

static void deliver_held_interrupt(struct dpc *d, void *ctx)
{
    (void)d;
    vmbus_channel_interrupt((uint32_t)(uintptr_t)ctx);
}

static status_t open_channel(struct vmbus_channel *ch, const struct vmbus_open_params *p, uint32_t out_pages,
                             uint32_t pages)
{
    irql_t old = spin_lock(&vmbus_bus.lock);
    status_t s = STATUS_OK;
    if (!vmbus_bus.connected)
        s = STATUS_INVALID_STATE;
    else if (ch->rescinded)
        s = STATUS_CANCELLED;
    else if (ch->state != VMBUS_CH_OFFERED)
        s = STATUS_BUSY;
    if (s == STATUS_OK) {
        __atomic_store_n(&ch->state, VMBUS_CH_OPENING, __ATOMIC_RELEASE);
        ch->interrupt_held = false;
        ch->on_interrupt = p->on_interrupt;
        ch->irq_ctx = p->ctx;
        ch->target_cpu = p->target_cpu;
        ch->target_vp = hv_vp_index(p->target_cpu);
        ch->open_id = ch->relid;
    }
    spin_unlock(&vmbus_bus.lock, old);
    if (s != STATUS_OK)
        return s;

    void *ring = page_alloc(pages);
    uint32_t gpadl = 0;
    if (!ring)
        s = STATUS_NO_MEMORY;
    if (s == STATUS_OK)
        s = gpadl_create(ch, ring, (size_t)pages * 4096, &gpadl);
    bool ring_lost = s == STATUS_TIMEOUT; /* the host may hold it; CANCELLED gave it back */
    struct vmbus_request r;
    if (s == STATUS_OK) {
        struct vmbus_msg_open_channel m = {
            .hdr.type = VMBUS_MSG_OPENCHANNEL,
            .child_relid = ch->relid,
            .open_id = ch->open_id,
            .ring_gpadl = gpadl,
            .target_vp = ch->target_vp,
            .downstream_ring_page_offset = out_pages,
        };
        if (p->user_data_len)
            memcpy(m.user_data, p->user_data, p->user_data_len);
        vmbus_request_arm(&r, VMBUS_MSG_OPENCHANNEL, true, ch->relid, true, ch->open_id);
        s = vmbus_post(&m, sizeof m);
        if (s != STATUS_OK) {
            vmbus_request_disarm(&r);
        } else {
            char what[48];
            fmt_snprintf(what, sizeof what, "OPENCHANNEL for relid %u", ch->relid);
            s = vmbus_request_wait(&r, what);
            if (s == STATUS_OK && ((const struct vmbus_msg_open_result *)r.answer)->status != 0) {
                pr_err("vmbus: host refused to open relid %u (%s): status %#x", ch->relid, vmbus_channel_type_name(ch),
                       ((const struct vmbus_msg_open_result *)r.answer)->status);
                s = STATUS_DEVICE_ERROR;
            }
            if (s == STATUS_TIMEOUT)
                ring_lost = true; /* the host may open it late */
        }
    }

    bool deliver_held = false;
    old = spin_lock(&vmbus_bus.lock);
    if (s == STATUS_OK && ch->rescinded)
        s = STATUS_CANCELLED; /* opened, then rescinded before we looked */
    if (s == STATUS_OK) {
        ch->ring = ring;
        ch->ring_pages = pages;
        ch->out_pages = out_pages;
        ch->ring_gpadl = gpadl;
        __atomic_store_n(&ch->state, VMBUS_CH_OPEN, __ATOMIC_RELEASE);
        deliver_held = ch->interrupt_held;
        ch->interrupt_held = false;
        vmbus_bus.stats.opens++;
    } else {
        ch->on_interrupt = NULL;
        __atomic_store_n(&ch->state, VMBUS_CH_OFFERED, __ATOMIC_RELEASE);
        vmbus_bus.stats.open_failures++;
    }
    spin_unlock(&vmbus_bus.lock, old);

    if (s != STATUS_OK) {
        if (s == STATUS_CANCELLED)
            pr_warn("vmbus: relid %u was rescinded while it was being opened", ch->relid);
        /* The ring's GPADL keeps the relid in use until it is torn down (or given up on). */
        if (gpadl && !ring_lost && teardown(ch, gpadl) != STATUS_OK)
            ring_lost = true;
        if (ring && !ring_lost)
            page_free(ring, pages);
        return s;
    }
    pr_debug("vmbus: opened relid %u (%s): rings %u + %u KiB, GPADL %#x, interrupts on cpu%u (VP %u)", ch->relid,
            vmbus_channel_type_name(ch), p->out_ring_bytes / 1024, p->in_ring_bytes / 1024, gpadl, ch->target_cpu,
            ch->target_vp);
    if (deliver_held) {
        /* The host signalled before its OPENCHANNEL_RESULT: deliver it as the interrupt would have
         * been, at DISPATCH on the target CPU. The DPC carries the relid, not ch. */
        dpc_init(&ch->held_dpc, deliver_held_interrupt, (void *)(uintptr_t)ch->relid);
        dpc_set_target(&ch->held_dpc, (int32_t)ch->target_cpu);
        dpc_queue(&ch->held_dpc);
    }
    return STATUS_OK;
}

status_t vmbus_channel_open(struct vmbus_channel *ch, const struct vmbus_open_params *p)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!is_ring_size(p->out_ring_bytes) || !is_ring_size(p->in_ring_bytes) || p->user_data_len > VMBUS_OFFER_USER_DEFINED ||
        (p->user_data_len && !p->user_data) || p->target_cpu >= MAX_CPUS || !cpus[p->target_cpu] ||
        !cpus[p->target_cpu]->online)
        return STATUS_INVALID_PARAMETER;
    uint32_t out_pages = p->out_ring_bytes / 4096, pages = out_pages + p->in_ring_bytes / 4096;
    if (pages > VMBUS_GPADL_MAX_PAGES)
        return STATUS_INVALID_PARAMETER; /* both rings are one GPADL */
    vmbus_channel_hold(ch); /* a rescind meanwhile releases the relid, never the memory we work on */
    status_t s = open_channel(ch, p, out_pages, pages);
    vmbus_channel_settle(ch);
    vmbus_channel_release(ch);
    return s;
}

static status_t close_channel(struct vmbus_channel *ch)
{
    irql_t old = spin_lock(&vmbus_bus.lock);
    if (ch->state != VMBUS_CH_OPEN) {
        status_t s = ch->state == VMBUS_CH_OFFERED ? STATUS_OK : STATUS_BUSY;
        spin_unlock(&vmbus_bus.lock, old);
        return s;
    }
    __atomic_store_n(&ch->state, VMBUS_CH_CLOSING, __ATOMIC_RELEASE);
    ch->on_interrupt = NULL;
    spin_unlock(&vmbus_bus.lock, old);
    dpc_cancel(&ch->held_dpc); /* one still running finds no callback */
    /* A callback that already looked the channel up finishes first. */
    while (__atomic_load_n(&ch->callbacks_running, __ATOMIC_ACQUIRE))
        thread_yield();

    status_t s = STATUS_OK;
    if (!vmbus_channel_rescinded(ch)) {
        struct vmbus_msg_relid m = { .hdr.type = VMBUS_MSG_CLOSECHANNEL, .child_relid = ch->relid };
        s = vmbus_post(&m, sizeof m);
    }
    bool ring_lost = false;
    if (s == STATUS_OK) {
        s = teardown(ch, ch->ring_gpadl);
        ring_lost = s != STATUS_OK;
    } else {
        ring_lost = true;
    }
    if (ring_lost)
        pr_warn("vmbus: the rings of relid %u (%u pages) are left to the host (%s)", ch->relid, ch->ring_pages,
                status_name(s));
    else
        page_free(ch->ring, ch->ring_pages);

    old = spin_lock(&vmbus_bus.lock);
    ch->ring = NULL;
    ch->ring_pages = ch->out_pages = 0;
    ch->ring_gpadl = 0;
    __atomic_store_n(&ch->state, VMBUS_CH_OFFERED, __ATOMIC_RELEASE);
    vmbus_bus.stats.closes++;
    spin_unlock(&vmbus_bus.lock, old);
    return s;
}

status_t vmbus_channel_close(struct vmbus_channel *ch)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    vmbus_channel_hold(ch);
    status_t s = close_channel(ch);
    /* A driver's close of a rescinded channel is its word that it is done with it: unbound. */
    irql_t old = spin_lock(&vmbus_bus.lock);
    bool unbind = ch->rescinded && ch->driver && ch->state == VMBUS_CH_OFFERED;
    if (unbind)
        vmbus_channel_unbind_locked(ch);
    spin_unlock(&vmbus_bus.lock, old);
    vmbus_channel_settle(ch);
    if (unbind)
        vmbus_channel_release(ch); /* the bound driver's reference */
    vmbus_channel_release(ch);
    return s;
}

bool vmbus_channel_is_open(const struct vmbus_channel *ch)
{
    return __atomic_load_n(&ch->state, __ATOMIC_ACQUIRE) == VMBUS_CH_OPEN;
}

void *vmbus_channel_out_ring(const struct vmbus_channel *ch, uint32_t *bytes)
{
    if (bytes)
        *bytes = ch->out_pages * 4096;
    return ch->ring;
}

void *vmbus_channel_in_ring(const struct vmbus_channel *ch, uint32_t *bytes)
{
    if (bytes)
        *bytes = (ch->ring_pages - ch->out_pages) * 4096;
    return ch->ring ? (char *)ch->ring + (size_t)ch->out_pages * 4096 : NULL;
}

/* ---- interrupts and signals ---- */

void vmbus_channel_interrupt(uint32_t relid)
{
    if (relid == 0 || relid > VMBUS_MAX_RELID)
        return;
    irql_t old = spin_lock(&vmbus_bus.lock);
    struct vmbus_channel *ch = vmbus_bus.by_relid[relid];
    vmbus_interrupt_fn fn = NULL;
    void *ctx = NULL;
    if (ch && ch->state == VMBUS_CH_OPEN && ch->on_interrupt) {
        fn = ch->on_interrupt;
        ctx = ch->irq_ctx;
        __atomic_fetch_add(&ch->callbacks_running, 1, __ATOMIC_RELAXED); /* the decrement is outside the lock */
        ch->stats.interrupts++;
        vmbus_bus.stats.interrupts++;
    } else if (ch && ch->state == VMBUS_CH_OPENING) {
        ch->interrupt_held = true; /* delivered once the open completes */
    } else {
        vmbus_bus.stats.stray_interrupts++;
    }
    spin_unlock(&vmbus_bus.lock, old);
    if (!fn)
        return;
    fn(ch, ctx);
    __atomic_fetch_sub(&ch->callbacks_running, 1, __ATOMIC_RELEASE);
}

void vmbus_channel_signal(struct vmbus_channel *ch)
{
    IRQL_ASSERT_MAX(IRQL_DISPATCH);
    if (!ch->dedicated_interrupt) {
        /* Hosts before WIN8 look for the relid here; later ones ignore it. */
        uint8_t *send_half = (uint8_t *)vmbus_bus.int_page + VMBUS_INTERRUPT_PAGE_HALF;
        __atomic_fetch_or(&send_half[ch->relid / 8], (uint8_t)(1u << (ch->relid % 8)), __ATOMIC_SEQ_CST);
    }
    if (ch->monitored && !__atomic_load_n(&ch->low_latency, __ATOMIC_RELAXED)) {
        struct vmbus_monitor_page *mp = &vmbus_bus.monitor_pages[1];
        __atomic_fetch_or(&mp->trigger_group[ch->monitor_id / 32].pending, 1u << (ch->monitor_id % 32),
                          __ATOMIC_SEQ_CST);
        __atomic_fetch_add(&ch->stats.monitor_signals, 1, __ATOMIC_RELAXED);
        return;
    }
    uint16_t hs = hv_signal_event(ch->connection_id, 0);
    __atomic_fetch_add(&ch->stats.signals, 1, __ATOMIC_RELAXED);
    if (hs != HV_STATUS_SUCCESS)
        pr_warn("vmbus: signalling relid %u (connection %u) failed: %s", ch->relid, ch->connection_id,
                hv_status_name(hs));
}

void vmbus_channel_set_low_latency(struct vmbus_channel *ch, bool on)
{
    __atomic_store_n(&ch->low_latency, on, __ATOMIC_RELAXED);
}

void vmbus_channel_get_stats(const struct vmbus_channel *ch, struct vmbus_channel_stats *out)
{
    out->interrupts = __atomic_load_n(&ch->stats.interrupts, __ATOMIC_RELAXED);
    out->signals = __atomic_load_n(&ch->stats.signals, __ATOMIC_RELAXED);
    out->monitor_signals = __atomic_load_n(&ch->stats.monitor_signals, __ATOMIC_RELAXED);
}

status_t vmbus_channel_set_target_cpu(struct vmbus_channel *ch, uint32_t target_cpu)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (vmbus_bus.version < VMBUS_VERSION_WIN10_RS3)
        return STATUS_NOT_SUPPORTED;
    if (target_cpu >= MAX_CPUS || !cpus[target_cpu] || !cpus[target_cpu]->online)
        return STATUS_INVALID_PARAMETER;
    if (ch->rescinded)
        return STATUS_CANCELLED;
    uint32_t vp = hv_vp_index(target_cpu);
    struct vmbus_msg_modify_channel m = { .hdr.type = VMBUS_MSG_MODIFYCHANNEL, .child_relid = ch->relid,
                                          .target_vp = vp };
    bool answered = vmbus_bus.version >= VMBUS_VERSION_WIN10_V5_3;
    struct vmbus_request r;
    if (answered)
        vmbus_request_arm(&r, VMBUS_MSG_MODIFYCHANNEL, true, ch->relid, false, 0);
    status_t s = vmbus_post(&m, sizeof m);
    if (s != STATUS_OK) {
        if (answered)
            vmbus_request_disarm(&r);
        return s;
    }
    if (answered) {
        char what[48];
        fmt_snprintf(what, sizeof what, "MODIFYCHANNEL for relid %u", ch->relid);
        s = vmbus_request_wait(&r, what);
        if (s != STATUS_OK)
            return s;
        uint32_t status = ((const struct vmbus_msg_modify_channel_response *)r.answer)->status;
        if (status != 0) {
            pr_err("vmbus: host refused to move relid %u to VP %u: status %#x", ch->relid, vp, status);
            return STATUS_DEVICE_ERROR;
        }
    }
    irql_t old = spin_lock(&vmbus_bus.lock);
    ch->target_cpu = target_cpu;
    ch->target_vp = vp;
    spin_unlock(&vmbus_bus.lock, old);
    return STATUS_OK;
}
