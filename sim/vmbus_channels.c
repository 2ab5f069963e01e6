/*
 * vmbus_channels: the channel-management protocol as a host plays it (hyperv-facts.md 3.7-3.13;
 * message layouts in hv/vmbus/proto/vmbus_proto.h): version negotiation, offers, the GPADL table, open/close,
 * rescind, sub-channels, MODIFYCHANNEL, UNLOAD, the monitor pages. Every function here runs with
 * state_lock held (sim/vmbus_internal.h); answers go to the outbox, device callbacks to the callback
 * queue, both served by the server thread in vmbus_server.c.
 *
 * Choices where the protocol leaves room (each also in sim/README.md):
 *  - GPADL handles are global (Linux allocates them so); a GPADL names its owner relid, which must be
 *    an offered channel, and any complete GPADL may be a channel's ring.
 *  - GPADL_BODY's msg_number is not checked: OpenVMM's client sends 0 there ("rsvd") and Linux does
 *    not number its bodies either; bodies are taken in arrival order and must not carry more PFNs
 *    than the header announced. A body for a handle with no GPADL being built cannot be answered
 *    (the relid is not known), so it is only logged.
 *  - GPADL_TEARDOWN of the ring of an open channel is answered when that channel closes, as Hyper-V
 *    does (OpenVMM: "the host may not send the GpadlTorndown message immediately ... if the channel
 *    is still open"); it is still logged as a guest error.
 *  - A GPADL that completes on a rescinded channel is refused (GPADL_CREATED with a failure status),
 *    as OpenVMM refuses it; RELID_RELEASED while a GPADL of the relid is still being built or not yet
 *    answered is a guest error (the guest released the relid before it was done with it).
 *  - Sub-channels are offered when their primary opens and rescinded when it closes (or is
 *    rescinded); UNLOAD drops them without messages, and the next open offers them again.
 *  - Channel interrupts use the connection's message SINT (2 unless the guest chose another on the
 *    multiclient port at >= 5.0).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim/vmbus_internal.h"

/* Every version a host may answer, newest first (hyperv-facts.md 3.7). */
static const uint32_t version_ladder[] = {
    VMBUS_VERSION_COPPER,     VMBUS_VERSION_WIN10_V5_3, VMBUS_VERSION_WIN10_V5_2, VMBUS_VERSION_WIN10_V5_1,
    VMBUS_VERSION_WIN10_V5,   VMBUS_VERSION_WIN10_RS3,  VMBUS_VERSION_WIN10,      VMBUS_VERSION_WIN8_1,
    VMBUS_VERSION_WIN8,       VMBUS_VERSION_WIN7,       VMBUS_VERSION_WS2008,
};

/* The instance GUID of the BAD_OFFERS hazard's offers, which are no device of the server's. */
static const struct vmbus_guid bad_instance =
    VMBUS_GUID_INIT(0x68767369, 0x6d00, 0x4000, 0x80, 0x00, 0x0b, 0xad, 0x0b, 0xad, 0x0b, 0xad);
#define UNASKED_GPADL 0x0BAD0BADu
#define UNASKED_OPEN_ID 0xBADu
#define BAD_OFFER_RELID 4096u
#define BAD_OFFER_SHORT_SIZE 100u
#define BAD_MESSAGE_TYPE 99u
/* The OFFER_CHURN device's instance. */
static const struct vmbus_guid churn_instance =
    VMBUS_GUID_INIT(0x68767369, 0x6d00, 0x4000, 0x80, 0x00, 0x0c, 0x4c, 0x4c, 0x4c, 0x4c, 0x4c);

bool vb_version_known(uint32_t version)
{
    for (size_t i = 0; i < sizeof version_ladder / sizeof version_ladder[0]; i++)
        if (version_ladder[i] == version)
            return true;
    return false;
}

const char *vb_version_name(uint32_t version, char buf[16])
{
    snprintf(buf, 16, "%u.%u", VMBUS_VERSION_MAJOR(version), VMBUS_VERSION_MINOR(version));
    return buf;
}

/* ---- channels ---- */

static void set_state(struct hvsim_vmbus_channel *ch, uint32_t state)
{
    __atomic_store_n(&ch->state, state, __ATOMIC_RELEASE);
}

/* A channel the guest was offered and may name: offered or open. */
static struct hvsim_vmbus_channel *guest_channel(struct hvsim_vmbus *vb, uint32_t relid)
{
    if (relid == 0 || relid >= VB_RELIDS)
        return NULL;
    struct hvsim_vmbus_channel *ch = &vb->channels[relid];
    return (ch->state == VB_CH_OFFERED || ch->state == VB_CH_OPEN) && ch->sent ? ch : NULL;
}

static const char *sub_label(const struct hvsim_vmbus_channel *ch, char buf[24])
{
    if (ch->sub_index)
        snprintf(buf, 24, " sub-channel %u", ch->sub_index);
    else
        buf[0] = '\0';
    return buf;
}

/* A message to the connection's control target (not a reply to the message being handled). */
static void queue_control(struct hvsim_vmbus *vb, const void *payload, uint32_t size, bool reorderable)
{
    vb_queue_message(vb, vb->conn_vp, vb->conn_sint, payload, size, reorderable);
}

/* How late the late-answer hazards answer. */
static int64_t late_ns(const struct hvsim_vmbus *vb)
{
    return (int64_t)(vb->cfg.late_ms ? vb->cfg.late_ms : 50u) * 1000000ll;
}

/* Holds a control message back for late_ns (sim/vmbus_internal.h struct vb_late). */
static void queue_late(struct hvsim_vmbus *vb, const void *payload, uint32_t size, uint32_t remove_gpadl)
{
    struct vb_late *l = vb_alloc(sizeof *l);
    l->due_ns = vb_now_ns() + late_ns(vb);
    l->remove_gpadl = remove_gpadl;
    l->size = size < sizeof l->payload ? size : (uint32_t)sizeof l->payload;
    memcpy(l->payload, payload, l->size);
    struct vb_late **tail = &vb->late;
    while (*tail)
        tail = &(*tail)->next;
    *tail = l; /* in order: due times only grow */
}

static void drop_late(struct hvsim_vmbus *vb)
{
    while (vb->late) {
        struct vb_late *l = vb->late;
        vb->late = l->next;
        free(l);
    }
}

/* The host's side of monitor page 1 for a monitored channel: its scan latency and the connection
 * its monitor id signals (Linux shows both per channel in sysfs as the host's values). Cleared when
 * the monitor id is freed. Atomic stores: the guest may read the page at any time. */
static void write_monitor_parameters(struct hvsim_vmbus *vb, const struct hvsim_vmbus_channel *ch, bool set)
{
    uint8_t *page = vb->monitor1 ? hvsim_gpa(vb->sim, vb->monitor1, HVSIM_PAGE_SIZE) : NULL;
    if (!page || !ch->monitored)
        return;
    uint32_t latency = vb->cfg.monitor_latency_us * 10u; /* 100 ns units */
    uint16_t *lat = (uint16_t *)(page + offsetof(struct vmbus_monitor_page, latency)) + ch->monitor_id;
    uint8_t *param = page + offsetof(struct vmbus_monitor_page, parameter) +
                     (size_t)ch->monitor_id * sizeof(struct vmbus_monitor_parameter);
    __atomic_store_n(lat, set ? (uint16_t)(latency < UINT16_MAX ? latency : UINT16_MAX) : 0, __ATOMIC_RELAXED);
    __atomic_store_n((uint32_t *)(param + offsetof(struct vmbus_monitor_parameter, connection_id)),
                     set ? HVSIM_VMBUS_CONN_CHANNEL_BASE + ch->relid : 0, __ATOMIC_RELAXED);
    __atomic_store_n((uint16_t *)(param + offsetof(struct vmbus_monitor_parameter, flag_number)), 0,
                     __ATOMIC_RELAXED);
}

static void build_offer(const struct hvsim_vmbus_channel *ch, struct vmbus_msg_offer_channel *m)
{
    memset(m, 0, sizeof *m);
    m->hdr.type = VMBUS_MSG_OFFERCHANNEL;
    m->offer.if_type = ch->dev->type;
    m->offer.if_instance = ch->dev->instance;
    m->offer.chn_flags = ch->dev->flags;
    memcpy(m->offer.user_defined, ch->dev->user_defined, sizeof m->offer.user_defined);
    m->offer.sub_channel_index = ch->sub_index;
    m->child_relid = ch->relid;
    m->monitor_id = ch->monitored ? ch->monitor_id : 0;
    m->monitor_allocated = ch->monitored;
    m->is_dedicated_interrupt = ch->dev->dedicated_interrupt;
    m->connection_id = HVSIM_VMBUS_CONN_CHANNEL_BASE + ch->relid;
}

static void send_offer(struct hvsim_vmbus *vb, struct hvsim_vmbus_channel *ch)
{
    struct vmbus_msg_offer_channel m;
    build_offer(ch, &m);
    queue_control(vb, &m, sizeof m, false);
    ch->sent = true;
    write_monitor_parameters(vb, ch, true);
}

struct hvsim_vmbus_channel *vb_new_offer(struct hvsim_vmbus *vb, const struct hvsim_vmbus_device *dev,
                                         uint32_t primary_relid, uint16_t sub_index)
{
    uint32_t relid = 0;
    for (uint32_t r = 1; r < VB_RELIDS && !relid; r++)
        if (vb->channels[r].state == VB_CH_FREE)
            relid = r;
    if (!relid) {
        vb_log(vb, 0, "offer of %s refused: all %u relids in use", dev->name, VMBUS_MAX_RELID);
        return NULL;
    }
    int monitor = -1;
    for (uint32_t id = 0; dev->monitored && id < VMBUS_MONITOR_IDS && monitor < 0; id++)
        if (!vb->monitor_owner[id])
            monitor = (int)id;
    if (dev->monitored && monitor < 0)
        vb_log(vb, 0, "%s (relid %u) offered without a monitor id: all %u in use", dev->name, relid,
               VMBUS_MONITOR_IDS);
    if (!hvsim_register_event_port(vb->sim, HVSIM_VMBUS_CONN_CHANNEL_BASE + relid, vb_channel_event, vb))
        return NULL; /* hvsim logged why (its port table is full) */
    struct hvsim_vmbus_channel *ch = &vb->channels[relid];
    ch->dev = dev;
    ch->primary = primary_relid ? primary_relid : relid;
    ch->sub_index = sub_index;
    ch->monitored = monitor >= 0;
    ch->monitor_id = monitor >= 0 ? (uint8_t)monitor : 0;
    ch->sent = false;
    ch->open_id = 0;
    ch->ring_gpadl = 0;
    __atomic_store_n(&ch->target_vp, 0, __ATOMIC_RELAXED);
    ch->seq = ++vb->next_seq;
    if (ch->monitored)
        vb->monitor_owner[monitor] = relid;
    set_state(ch, VB_CH_OFFERED);
    char sub[24];
    vb_log(vb, 1, "relid %u: %s%s offered%s", relid, dev->name, sub_label(ch, sub),
           vb->connected && vb->offers_requested ? "" : " (sent when the guest asks for offers)");
    if (vb->connected && vb->offers_requested)
        send_offer(vb, ch);
    return ch;
}

/* ---- the GPADL table ---- */

static struct vb_gpadl *find_gpadl(struct hvsim_vmbus *vb, uint32_t handle, uint32_t *index)
{
    for (uint32_t i = 0; i < vb->gpadl_count; i++) {
        if (vb->gpadls[i]->handle == handle) {
            *index = i;
            return vb->gpadls[i];
        }
    }
    return NULL;
}

static void remove_gpadl(struct hvsim_vmbus *vb, uint32_t index)
{
    free(vb->gpadls[index]);
    vb->gpadls[index] = vb->gpadls[--vb->gpadl_count];
    vb->gpadls[vb->gpadl_count] = NULL;
}

static void send_torndown(struct hvsim_vmbus *vb, uint32_t handle)
{
    struct vmbus_msg_gpadl_torndown m = { .hdr.type = VMBUS_MSG_GPADL_TORNDOWN, .gpadl = handle };
    queue_control(vb, &m, sizeof m, true);
    VB_COUNT(vb, gpadls_torn_down);
}

/* Frees a relid: its GPADLs go with it (a host drops the table entries of a channel that no longer
 * exists), its monitor id and its event port too. */
static void free_channel(struct hvsim_vmbus *vb, struct hvsim_vmbus_channel *ch)
{
    for (uint32_t i = vb->gpadl_count; i-- > 0;)
        if (vb->gpadls[i]->relid == ch->relid)
            remove_gpadl(vb, i);
    if (ch->monitored) {
        write_monitor_parameters(vb, ch, false);
        vb->monitor_owner[ch->monitor_id] = 0;
    }
    if (vb->rescind_timer_relid == ch->relid)
        vb->rescind_timer_relid = 0;
    hvsim_unregister_port(vb->sim, HVSIM_VMBUS_CONN_CHANNEL_BASE + ch->relid);
    set_state(ch, VB_CH_FREE);
    ch->dev = NULL;
    ch->sent = false;
    ch->monitored = false;
    ch->sub_index = 0;
    ch->primary = 0;
}

/* ---- close and rescind ---- */

/* Closes an open channel host-side: its ring GPADL is released (a teardown that waited for the close
 * is answered now, unless quiet), the device gets on_close. */
static void close_channel(struct hvsim_vmbus *vb, struct hvsim_vmbus_channel *ch, uint32_t new_state,
                          const char *why, bool quiet)
{
    set_state(ch, new_state);
    if (ch->monitored)
        vb->monitored_open--;
    uint32_t index;
    struct vb_gpadl *g = find_gpadl(vb, ch->ring_gpadl, &index);
    if (g && g->ring_of == ch->relid) {
        g->ring_of = 0;
        if (g->teardown_pending) {
            uint32_t handle = g->handle;
            remove_gpadl(vb, index);
            if (!quiet)
                send_torndown(vb, handle);
        }
    }
    ch->ring_gpadl = 0;
    struct vb_callback cb = { .kind = VB_CB_CLOSE, .ch = ch, .dev = ch->dev };
    vb_queue_callback(vb, &cb);
    VB_COUNT(vb, closes);
    char sub[24];
    vb_log(vb, 0, "channel %u (%s%s) closed: %s", ch->relid, ch->dev->name, sub_label(ch, sub), why);
}

static void rescind_sub_channels(struct hvsim_vmbus *vb, const struct hvsim_vmbus_channel *primary)
{
    for (uint32_t r = 1; r < VB_RELIDS; r++) {
        struct hvsim_vmbus_channel *ch = &vb->channels[r];
        if (ch->sub_index && ch->primary == primary->relid)
            vb_rescind(vb, ch); /* false for one already rescinded or free */
    }
}

bool vb_rescind(struct hvsim_vmbus *vb, struct hvsim_vmbus_channel *ch)
{
    uint32_t st = ch->state;
    if (st != VB_CH_OFFERED && st != VB_CH_OPEN)
        return false;
    if (!ch->sub_index)
        rescind_sub_channels(vb, ch);
    if (vb->rescind_timer_relid == ch->relid)
        vb->rescind_timer_relid = 0;
    VB_COUNT(vb, rescinds);
    if (st == VB_CH_OPEN)
        close_channel(vb, ch, VB_CH_RESCINDED, "rescinded by the host", false);
    else
        set_state(ch, VB_CH_RESCINDED);
    char sub[24];
    if (ch->sent) {
        struct vmbus_msg_relid m = { .hdr.type = VMBUS_MSG_RESCIND_CHANNELOFFER, .child_relid = ch->relid };
        queue_control(vb, &m, sizeof m, false);
        vb_log(vb, 0, "relid %u (%s%s) rescinded: reserved until RELID_RELEASED", ch->relid, ch->dev->name,
               sub_label(ch, sub));
    } else {
        vb_log(vb, 1, "relid %u (%s%s) withdrawn before the guest saw it", ch->relid, ch->dev->name,
               sub_label(ch, sub));
        free_channel(vb, ch);
    }
    return true;
}

bool vb_offer_sub_channels(struct hvsim_vmbus *vb, struct hvsim_vmbus_channel *primary, uint16_t count)
{
    for (uint16_t n = 0; n < count; n++) {
        /* The lowest index no live sub-channel of this primary uses. */
        bool used[HVSIM_VMBUS_MAX_SUB_CHANNELS + 1] = { false };
        for (uint32_t r = 1; r < VB_RELIDS; r++) {
            const struct hvsim_vmbus_channel *ch = &vb->channels[r];
            if (ch->state != VB_CH_FREE && ch->sub_index && ch->primary == primary->relid)
                used[ch->sub_index] = true;
        }
        uint16_t index = 1;
        while (index <= HVSIM_VMBUS_MAX_SUB_CHANNELS && used[index])
            index++;
        if (index > HVSIM_VMBUS_MAX_SUB_CHANNELS) {
            vb_log(vb, 0, "%s (relid %u): no more sub-channels (limit %u)", primary->dev->name, primary->relid,
                   HVSIM_VMBUS_MAX_SUB_CHANNELS);
            return false;
        }
        if (!vb_new_offer(vb, primary->dev, primary->relid, index))
            return false;
    }
    return true;
}

static bool has_live_sub_channels(const struct hvsim_vmbus *vb, const struct hvsim_vmbus_channel *primary)
{
    for (uint32_t r = 1; r < VB_RELIDS; r++) {
        const struct hvsim_vmbus_channel *ch = &vb->channels[r];
        if ((ch->state == VB_CH_OFFERED || ch->state == VB_CH_OPEN) && ch->sub_index &&
            ch->primary == primary->relid)
            return true;
    }
    return false;
}

/* ---- INITIATE_CONTACT ---- */

static bool guest_page(struct hvsim_vmbus *vb, uint64_t gpa)
{
    return gpa % HVSIM_PAGE_SIZE == 0 && hvsim_gpa(vb->sim, gpa, HVSIM_PAGE_SIZE);
}

/* Why the contact's parameters are unusable (a guest error), or NULL. */
static const char *check_contact(struct hvsim_vmbus *vb, const struct vmbus_msg_initiate_contact *ic, uint32_t sint,
                                 uint32_t vtl, char *buf, size_t len)
{
    uint32_t v = ic->version;
    if (ic->target_vcpu >= vb->sim->cfg.vp_count)
        snprintf(buf, len, "target VP %u does not exist (%u VPs)", ic->target_vcpu, vb->sim->cfg.vp_count);
    else if (sint >= HV_SINT_COUNT)
        snprintf(buf, len, "message SINT %u does not exist", sint);
    else if (vtl && v >= VMBUS_VERSION_WIN10_V5_1)
        snprintf(buf, len, "VTL %u asked for: hvsim models VTL 0 only", vtl);
    else if (v < VMBUS_VERSION_WIN10_V5 && ic->target_info && !guest_page(vb, ic->target_info))
        snprintf(buf, len, "interrupt page 0x%llx is not a page of guest RAM", (unsigned long long)ic->target_info);
    else if (v < VMBUS_VERSION_WIN8 && !ic->target_info)
        snprintf(buf, len, "no interrupt page (below 2.4 channels signal through it)");
    else if ((ic->monitor_page1 && !guest_page(vb, ic->monitor_page1)) ||
             (ic->monitor_page2 && !guest_page(vb, ic->monitor_page2)))
        snprintf(buf, len, "monitor pages 0x%llx/0x%llx: not both 0 or pages of guest RAM",
                 (unsigned long long)ic->monitor_page1, (unsigned long long)ic->monitor_page2);
    else if (ic->monitor_page1 && ic->monitor_page1 == ic->monitor_page2)
        snprintf(buf, len, "monitor pages 1 and 2 are the same page 0x%llx", (unsigned long long)ic->monitor_page1);
    else
        return NULL;
    return buf;
}

static void handle_initiate_contact(struct hvsim_vmbus *vb, const struct vb_inbox_entry *in)
{
    struct vmbus_msg_initiate_contact ic;
    memcpy(&ic, in->payload, sizeof ic);
    uint32_t v = ic.version;
    /* The message SINT and VTL are honoured only on the multiclient port from 5.0 on; elsewhere the
     * SINT is 2 (OpenVMM vmbus_server handle_initiate_contact, hyperv-facts.md 3.7). */
    bool targeted = v >= VMBUS_VERSION_WIN10_V5 && in->conn == VMBUS_CONN_MESSAGE_MULTICLIENT;
    uint32_t sint = targeted ? (uint32_t)(ic.target_info & 0xff) : VMBUS_MESSAGE_SINT;
    uint32_t vtl = targeted ? (uint32_t)((ic.target_info >> 8) & 0xff) : 0;
    char name[16], max[16], reason[160];
    vb_version_name(v, name);
    const char *why = NULL;
    bool accept = false;
    if (vb->connected)
        why = "already connected: UNLOAD first";
    else if (!vb_version_known(v) || v > vb->cfg.max_version)
        vb_log(vb, 1, "INITIATE_CONTACT for version %s: not supported (this host: up to %s)", name,
               vb_version_name(vb->cfg.max_version, max));
    else if (!(why = check_contact(vb, &ic, sint, vtl, reason, sizeof reason)))
        accept = true;
    if (why)
        vb_guest_error(vb, "INITIATE_CONTACT for version %s: %s: refused", name, why);

    /* Answer where the guest waits: a connected guest at its control target, else at the target VP
     * and SINT it names where those exist. */
    uint32_t dest_vp = ic.target_vcpu < vb->sim->cfg.vp_count ? ic.target_vcpu : in->vp;
    uint32_t dest_sint = sint < HV_SINT_COUNT ? sint : VMBUS_MESSAGE_SINT;
    if (vb->connected) {
        dest_vp = vb->conn_vp;
        dest_sint = vb->conn_sint;
    }
    struct vmbus_msg_version_response2 r = { .v1.hdr.type = VMBUS_MSG_VERSION_RESPONSE };
    uint32_t size = sizeof r.v1;
    if (accept) {
        vb->connected = true;
        vb->offers_requested = false;
        vb->conn_vp = ic.target_vcpu;
        vb->monitor1 = ic.monitor_page1;
        vb->monitor2 = ic.monitor_page2;
        vb->next_monitor_ns = 0;
        __atomic_store_n(&vb->conn_sint, sint, __ATOMIC_RELAXED);
        __atomic_store_n(&vb->interrupt_page, v < VMBUS_VERSION_WIN10_V5 ? ic.target_info : 0, __ATOMIC_RELAXED);
        __atomic_store_n(&vb->version, v, __ATOMIC_RELEASE);
        r.v1.version_supported = 1;
        r.v1.msg_conn_id = v >= VMBUS_VERSION_WIN10_V5 ? HVSIM_VMBUS_CONN_REDIRECT : 0;
        if (v >= VMBUS_VERSION_COPPER) {
            r.supported_features = vb->cfg.features & (uint32_t)(ic.target_info >> 32);
            size = sizeof r;
        }
        vb_log(vb, 0,
               "version %s negotiated (INITIATE_CONTACT on connection 0x%x): control messages to VP %u SINT %u, "
               "monitor pages 0x%llx/0x%llx%s, features 0x%x",
               name, in->conn, ic.target_vcpu, sint, (unsigned long long)ic.monitor_page1,
               (unsigned long long)ic.monitor_page2,
               v >= VMBUS_VERSION_WIN10_V5 ? ", later messages expected on 0x800074" : "", r.supported_features);
    }
    vb_queue_message(vb, dest_vp, dest_sint, &r, size, false);
}

/* ---- REQUESTOFFERS ---- */

static int by_offer_order(const void *a, const void *b)
{
    const struct hvsim_vmbus_channel *x = *(const struct hvsim_vmbus_channel *const *)a;
    const struct hvsim_vmbus_channel *y = *(const struct hvsim_vmbus_channel *const *)b;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* HVSIM_VMBUS_BAD_OFFERS, the part before the good offers (sim/vmbus_server.h). */
static void send_bad_offers(struct hvsim_vmbus *vb)
{
    struct vmbus_msg_offer_channel m = { .hdr.type = VMBUS_MSG_OFFERCHANNEL };
    m.offer.if_type = (struct vmbus_guid)VMBUS_GUID_HVSIM_TEST;
    m.offer.if_instance = bad_instance;
    m.child_relid = 0;
    m.connection_id = HVSIM_VMBUS_CONN_CHANNEL_BASE;
    queue_control(vb, &m, sizeof m, false);
    m.child_relid = BAD_OFFER_RELID;
    m.connection_id = HVSIM_VMBUS_CONN_CHANNEL_BASE + BAD_OFFER_RELID;
    queue_control(vb, &m, sizeof m, false);
    queue_control(vb, &m, BAD_OFFER_SHORT_SIZE, false);
    struct vmbus_msg_relid unknown = { .hdr.type = BAD_MESSAGE_TYPE, .child_relid = 1 };
    queue_control(vb, &unknown, sizeof unknown, false);
    vb_log(vb, 0, "hazard: bad offers sent (relid 0, relid %u, %u bytes, type %u)", BAD_OFFER_RELID,
           BAD_OFFER_SHORT_SIZE, BAD_MESSAGE_TYPE);
}

static void handle_request_offers(struct hvsim_vmbus *vb)
{
    if (vb->offers_requested) {
        vb_guest_error(vb, "a second REQUESTOFFERS in this connection: ignored");
        return;
    }
    vb->offers_requested = true;
    struct hvsim_vmbus_channel *list[VB_RELIDS];
    uint32_t n = 0;
    for (uint32_t r = 1; r < VB_RELIDS; r++)
        if (vb->channels[r].state == VB_CH_OFFERED || vb->channels[r].state == VB_CH_OPEN)
            list[n++] = &vb->channels[r];
    qsort(list, n, sizeof list[0], by_offer_order);
    bool bad = vb->cfg.hazards & HVSIM_VMBUS_BAD_OFFERS;
    if (bad)
        send_bad_offers(vb);
    for (uint32_t i = 0; i < n; i++)
        send_offer(vb, list[i]);
    if (bad && n) {
        struct vmbus_msg_offer_channel dup;
        build_offer(list[0], &dup);
        dup.offer.if_instance = bad_instance;
        queue_control(vb, &dup, sizeof dup, false);
    }
    struct vmbus_msg_header done = { .type = VMBUS_MSG_ALLOFFERS_DELIVERED };
    queue_control(vb, &done, sizeof done, false);
    if ((vb->cfg.hazards & HVSIM_VMBUS_UNASKED_RESPONSES) && n) {
        struct vmbus_msg_gpadl_created c = { .hdr.type = VMBUS_MSG_GPADL_CREATED, .child_relid = list[0]->relid,
                                             .gpadl = UNASKED_GPADL };
        queue_control(vb, &c, sizeof c, false);
        struct vmbus_msg_open_result o = { .hdr.type = VMBUS_MSG_OPENCHANNEL_RESULT, .child_relid = list[0]->relid,
                                           .open_id = UNASKED_OPEN_ID };
        queue_control(vb, &o, sizeof o, false);
        vb_log(vb, 0, "hazard: unasked GPADL_CREATED and OPENCHANNEL_RESULT for relid %u sent", list[0]->relid);
    }
    if (vb->cfg.hazards & HVSIM_VMBUS_OFFER_CHURN) {
        vb->churn_left = vb->cfg.churn_rounds ? vb->cfg.churn_rounds : 100u;
        vb->churn_due_ns = vb_now_ns();
    }
    vb_log(vb, 1, "REQUESTOFFERS: %u offers sent", n);
}

/* ---- GPADLs ---- */

static void send_created(struct hvsim_vmbus *vb, uint32_t relid, uint32_t handle, uint32_t status)
{
    struct vmbus_msg_gpadl_created m = {
        .hdr.type = VMBUS_MSG_GPADL_CREATED, .child_relid = relid, .gpadl = handle, .status = status
    };
    vb_reply(vb, &m, sizeof m, true);
}

static void gpadl_refused(struct hvsim_vmbus *vb, const char *what, uint32_t relid, uint32_t handle,
                          const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void gpadl_refused(struct hvsim_vmbus *vb, const char *what, uint32_t relid, uint32_t handle,
                          const char *fmt, ...)
{
    char why[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    vb_guest_error(vb, "%s for handle 0x%x (relid %u): %s: refused", what, handle, relid, why);
    send_created(vb, relid, handle, HVSIM_VMBUS_STATUS_FAILED);
}

/* Copies n PFNs (unaligned in the message) into out; the index of the first outside guest RAM, or n. */
static uint32_t take_pfns(struct hvsim_vmbus *vb, const uint8_t *src, uint32_t n, uint64_t *out)
{
    for (uint32_t i = 0; i < n; i++) {
        memcpy(&out[i], src + (size_t)i * sizeof out[i], sizeof out[i]);
        if (out[i] > (UINT64_MAX >> 12) || !hvsim_gpa(vb->sim, out[i] << 12, HVSIM_PAGE_SIZE))
            return i;
    }
    return n;
}

/* Every PFN of g is in: GPADL_CREATED. A GPADL completed on a rescinded channel is refused, as
 * OpenVMM refuses it (vmbus_server channels.rs gpadl_updated), late under RESCIND_DURING_GPADL.
 * false: g is no GPADL of the table any more (the caller removes it). */
static bool gpadl_complete(struct hvsim_vmbus *vb, struct vb_gpadl *g)
{
    if (vb->channels[g->relid].state != VB_CH_RESCINDED) {
        send_created(vb, g->relid, g->handle, 0);
        VB_COUNT(vb, gpadls_created);
        vb_log(vb, 1, "GPADL 0x%x created: %u pages for relid %u", g->handle, g->pages, g->relid);
        return true;
    }
    vb_log(vb, 1, "GPADL 0x%x of rescinded relid %u complete: refused", g->handle, g->relid);
    if (!(vb->cfg.hazards & HVSIM_VMBUS_RESCIND_DURING_GPADL)) {
        send_created(vb, g->relid, g->handle, HVSIM_VMBUS_STATUS_FAILED);
        return false;
    }
    struct vmbus_msg_gpadl_created m = { .hdr.type = VMBUS_MSG_GPADL_CREATED, .child_relid = g->relid,
                                         .gpadl = g->handle, .status = HVSIM_VMBUS_STATUS_FAILED };
    queue_late(vb, &m, sizeof m, g->handle);
    g->answer_late = true;
    return true;
}

/* Why a GPADL_HEADER cannot start a GPADL (a guest error), or NULL. A second header for a handle
 * still being built also drops the first: the guest lost track of it. */
static const char *check_gpadl_header(struct hvsim_vmbus *vb, const struct vmbus_msg_gpadl_header *h, char *buf,
                                      size_t len)
{
    uint32_t index;
    struct vb_gpadl *old = find_gpadl(vb, h->gpadl, &index);
    if (h->gpadl == 0)
        return "0 is the null handle";
    if (!guest_channel(vb, h->child_relid))
        snprintf(buf, len, "relid %u is not an offered channel", h->child_relid);
    else if (old && old->received < old->pages) {
        remove_gpadl(vb, index);
        snprintf(buf, len, "the handle's GPADL was still being built: both dropped");
    } else if (old)
        snprintf(buf, len, "the handle is in use (relid %u, %u pages)", old->relid, old->pages);
    else if (vb->gpadl_count == HVSIM_VMBUS_MAX_GPADLS)
        snprintf(buf, len, "%u GPADLs live: the table is full", HVSIM_VMBUS_MAX_GPADLS);
    else
        return NULL;
    return buf;
}

static void handle_gpadl_header(struct hvsim_vmbus *vb, const struct vb_inbox_entry *in)
{
    struct vmbus_msg_gpadl_header h;
    memcpy(&h, in->payload, sizeof h);
    char reason[160];
    const char *why = check_gpadl_header(vb, &h, reason, sizeof reason);
    if (why) {
        gpadl_refused(vb, "GPADL_HEADER", h.child_relid, h.gpadl, "%s", why);
        return;
    }
    uint32_t pages, here;
    if (!vmbus_gpadl_header_pages((const struct vmbus_msg_gpadl_header *)in->payload, in->size, &pages, &here)) {
        gpadl_refused(vb, "GPADL_HEADER", h.child_relid, h.gpadl, "range fields inconsistent");
        return;
    }
    struct vb_gpadl *g = vb_alloc(sizeof *g + (size_t)pages * sizeof g->pfn[0]);
    *g = (struct vb_gpadl){ .handle = h.gpadl, .relid = h.child_relid, .pages = pages, .byte_offset = h.byte_offset };
    uint32_t bad = take_pfns(vb, in->payload + sizeof h, here, g->pfn);
    if (bad < here) {
        gpadl_refused(vb, "GPADL_HEADER", h.child_relid, h.gpadl, "page %u: PFN 0x%llx is outside guest RAM", bad,
                      (unsigned long long)g->pfn[bad]);
        free(g);
        return;
    }
    g->received = here;
    vb->gpadls[vb->gpadl_count++] = g;
    struct hvsim_vmbus_channel *ch = &vb->channels[h.child_relid];
    if ((vb->cfg.hazards & HVSIM_VMBUS_RESCIND_DURING_GPADL) && ch->state == VB_CH_OFFERED && !ch->sub_index) {
        vb_log(vb, 0, "hazard: channel %u (%s) rescinded during the creation of GPADL 0x%x", ch->relid,
               ch->dev->name, h.gpadl);
        vb_rescind(vb, ch);
    }
    if (here == pages && !gpadl_complete(vb, g))
        remove_gpadl(vb, vb->gpadl_count - 1);
}

static void handle_gpadl_body(struct hvsim_vmbus *vb, const struct vb_inbox_entry *in)
{
    struct vmbus_msg_gpadl_body b;
    memcpy(&b, in->payload, sizeof b);
    uint32_t n = (in->size - (uint32_t)sizeof b) / 8, index;
    struct vb_gpadl *g = find_gpadl(vb, b.gpadl, &index);
    if (!g) {
        vb_guest_error(vb, "GPADL_BODY for handle 0x%x: no such GPADL being built (a body before its header?): "
                           "dropped, nothing to answer",
                       b.gpadl);
        return;
    }
    if (g->received == g->pages) {
        vb_guest_error(vb, "GPADL_BODY for handle 0x%x, which is complete (%u pages): dropped", b.gpadl, g->pages);
        return;
    }
    uint32_t relid = g->relid, remain = g->pages - g->received;
    if (n == 0 || n > remain) {
        remove_gpadl(vb, index);
        gpadl_refused(vb, "GPADL_BODY", relid, b.gpadl, "it carries %u PFNs where %u remain", n, remain);
        return;
    }
    uint32_t bad = take_pfns(vb, in->payload + sizeof b, n, g->pfn + g->received);
    if (bad < n) {
        gpadl_refused(vb, "GPADL_BODY", relid, b.gpadl, "page %u: PFN 0x%llx is outside guest RAM", g->received + bad,
                      (unsigned long long)g->pfn[g->received + bad]);
        remove_gpadl(vb, index);
        return;
    }
    g->received += n;
    if (g->received == g->pages && !gpadl_complete(vb, g))
        remove_gpadl(vb, index);
}

static void handle_gpadl_teardown(struct hvsim_vmbus *vb, const struct vb_inbox_entry *in)
{
    struct vmbus_msg_gpadl_teardown t;
    memcpy(&t, in->payload, sizeof t);
    uint32_t index;
    struct vb_gpadl *g = find_gpadl(vb, t.gpadl, &index);
    if (!g || g->relid != t.child_relid) {
        vb_guest_error(vb, "GPADL_TEARDOWN for handle 0x%x of relid %u: %s: dropped", t.gpadl, t.child_relid,
                       g ? "the GPADL belongs to another relid" : "no such GPADL");
        return;
    }
    if (g->teardown_pending) {
        vb_guest_error(vb, "GPADL_TEARDOWN for handle 0x%x: already waiting for channel %u to close: dropped",
                       t.gpadl, g->ring_of);
        return;
    }
    if (g->ring_of) {
        vb_guest_error(vb, "GPADL_TEARDOWN for handle 0x%x while it is the ring of open channel %u: "
                           "GPADL_TORNDOWN follows when the channel closes",
                       t.gpadl, g->ring_of);
        g->teardown_pending = true;
        return;
    }
    if (g->received < g->pages)
        vb_log(vb, 1, "GPADL 0x%x torn down while being built (%u of %u pages)", t.gpadl, g->received, g->pages);
    bool late = (vb->cfg.hazards & HVSIM_VMBUS_LATE_TORNDOWN_AFTER_RESCIND) &&
                vb->channels[g->relid].state == VB_CH_RESCINDED;
    remove_gpadl(vb, index);
    struct vmbus_msg_gpadl_torndown m = { .hdr.type = VMBUS_MSG_GPADL_TORNDOWN, .gpadl = t.gpadl };
    if (late) {
        vb_log(vb, 0, "hazard: GPADL_TORNDOWN for GPADL 0x%x of rescinded relid %u held back %lld ms", t.gpadl,
               t.child_relid, (long long)(late_ns(vb) / 1000000));
        queue_late(vb, &m, sizeof m, 0);
    } else {
        vb_reply(vb, &m, sizeof m, true);
    }
    VB_COUNT(vb, gpadls_torn_down);
}

/* ---- OPENCHANNEL / CLOSECHANNEL / RELID_RELEASED ---- */

static void send_open_result(struct hvsim_vmbus *vb, uint32_t relid, uint32_t open_id, uint32_t status)
{
    struct vmbus_msg_open_result r = {
        .hdr.type = VMBUS_MSG_OPENCHANNEL_RESULT, .child_relid = relid, .open_id = open_id, .status = status
    };
    vb_reply(vb, &r, sizeof r, true);
}

/* RESCIND_SUB_DURING_OPENS: the highest-index sub-channel of primary_relid that is offered, not open. */
static void rescind_last_idle_sub(struct hvsim_vmbus *vb, uint32_t primary_relid)
{
    struct hvsim_vmbus_channel *last = NULL;
    for (uint32_t r = 1; r < VB_RELIDS; r++) {
        struct hvsim_vmbus_channel *c = &vb->channels[r];
        if (c->state == VB_CH_OFFERED && c->sent && c->sub_index && c->primary == primary_relid &&
            (!last || c->sub_index > last->sub_index))
            last = c;
    }
    if (!last)
        return;
    vb_log(vb, 0, "hazard: sub-channel %u (relid %u) rescinded while the guest opens its queues", last->sub_index,
           last->relid);
    vb_rescind(vb, last);
}

static bool contiguous(const uint64_t *pfn, uint32_t n)
{
    for (uint32_t i = 1; i < n; i++)
        if (pfn[i] != pfn[i - 1] + 1)
            return false;
    return true;
}

/* Why the open cannot be done (a guest error), or NULL; *g is the ring GPADL when NULL. */
static const char *check_open(struct hvsim_vmbus *vb, const struct vmbus_msg_open_channel *o,
                              struct hvsim_vmbus_channel *ch, struct vb_gpadl **g, char *buf, size_t len)
{
    uint32_t index;
    if (!ch)
        return "not an offered channel";
    if (ch->state == VB_CH_OPEN)
        return "already open";
    if (!(*g = find_gpadl(vb, o->ring_gpadl, &index)))
        snprintf(buf, len, "ring GPADL 0x%x does not exist", o->ring_gpadl);
    else if ((*g)->received < (*g)->pages)
        snprintf(buf, len, "ring GPADL 0x%x is still being built", o->ring_gpadl);
    else if ((*g)->teardown_pending || (*g)->ring_of)
        snprintf(buf, len, "ring GPADL 0x%x is %s", o->ring_gpadl,
                 (*g)->teardown_pending ? "being torn down" : "the ring of another open channel");
    else if ((*g)->byte_offset)
        snprintf(buf, len, "ring GPADL 0x%x starts at byte %u of its first page, not 0", o->ring_gpadl,
                 (*g)->byte_offset);
    else if (o->downstream_ring_page_offset < 1 || o->downstream_ring_page_offset >= (*g)->pages)
        /* Each ring needs its control page and at least one data page. */
        snprintf(buf, len, "downstream ring page offset %u outside 1..%u (GPADL of %u pages)",
                 o->downstream_ring_page_offset, (*g)->pages - 1, (*g)->pages);
    else if (o->target_vp != VMBUS_TARGET_VP_NO_INTERRUPT && o->target_vp >= vb->sim->cfg.vp_count)
        snprintf(buf, len, "target VP %u does not exist", o->target_vp);
    else
        return NULL;
    return buf;
}

static void handle_open_channel(struct hvsim_vmbus *vb, const struct vb_inbox_entry *in)
{
    struct vmbus_msg_open_channel o;
    memcpy(&o, in->payload, sizeof o);
    struct hvsim_vmbus_channel *ch = guest_channel(vb, o.child_relid);
    struct vb_gpadl *g = NULL;
    char reason[160];
    const char *why = check_open(vb, &o, ch, &g, reason, sizeof reason);
    if (why) {
        vb_guest_error(vb, "OPENCHANNEL for relid %u (open id %u): %s: refused", o.child_relid, o.open_id, why);
        send_open_result(vb, o.child_relid, o.open_id, HVSIM_VMBUS_STATUS_FAILED);
        return;
    }
    uint32_t in_pages = o.downstream_ring_page_offset, out_pages = g->pages - in_pages;
    if (!contiguous(g->pfn, in_pages) || !contiguous(g->pfn + in_pages, out_pages)) {
        vb_log(vb, 0,
               "OPENCHANNEL for relid %u refused: a ring of GPADL 0x%x is not physically contiguous, which "
               "hvsim needs to hand the device one pointer per ring (a limitation of hvsim, sim/README.md)",
               o.child_relid, o.ring_gpadl);
        send_open_result(vb, o.child_relid, o.open_id, HVSIM_VMBUS_STATUS_FAILED);
        return;
    }
    char sub[24];
    if (vb->cfg.hazards & HVSIM_VMBUS_RESCIND_DURING_OPEN) {
        vb_log(vb, 0, "hazard: channel %u (%s%s) rescinded during its open", ch->relid, ch->dev->name,
               sub_label(ch, sub));
        vb_rescind(vb, ch);
        send_open_result(vb, o.child_relid, o.open_id, HVSIM_VMBUS_STATUS_FAILED);
        return;
    }
    if ((vb->cfg.hazards & HVSIM_VMBUS_RESCIND_SUB_DURING_OPENS) && ch->sub_index)
        rescind_last_idle_sub(vb, ch->primary);
    ch->open_id = o.open_id;
    ch->ring_gpadl = g->handle;
    g->ring_of = ch->relid;
    __atomic_store_n(&ch->target_vp, o.target_vp, __ATOMIC_RELAXED);
    set_state(ch, VB_CH_OPEN);
    if (ch->monitored)
        vb->monitored_open++;
    VB_COUNT(vb, opens);
    uint32_t in_bytes = in_pages * HVSIM_PAGE_SIZE, out_bytes = out_pages * HVSIM_PAGE_SIZE;
    struct vb_callback cb = {
        .kind = VB_CB_OPEN,
        .ch = ch,
        .dev = ch->dev,
        .in_ring = hvsim_gpa(vb->sim, g->pfn[0] << 12, in_bytes),
        .in_bytes = in_bytes,
        .out_ring = hvsim_gpa(vb->sim, g->pfn[in_pages] << 12, out_bytes),
        .out_bytes = out_bytes,
    };
    vb_queue_callback(vb, &cb);
    if (vb->cfg.hazards & HVSIM_VMBUS_IRQ_BEFORE_OPEN_RESULT)
        vb_queue_signal(vb, ch->relid);
    send_open_result(vb, ch->relid, o.open_id, 0);
    if (vb->cfg.hazards & HVSIM_VMBUS_SEND_ON_OPEN)
        vb_queue_signal(vb, ch->relid);
    vb_log(vb, 0, "channel %u (%s%s) opened: rings %u + %u KiB (GPADL 0x%x), target VP %d", ch->relid, ch->dev->name,
           sub_label(ch, sub), in_bytes / 1024, out_bytes / 1024, g->handle,
           o.target_vp == VMBUS_TARGET_VP_NO_INTERRUPT ? -1 : (int)o.target_vp);
    if (!ch->sub_index && ch->dev->sub_channels && !has_live_sub_channels(vb, ch))
        vb_offer_sub_channels(vb, ch, ch->dev->sub_channels);
    if (vb->rescind_device[0] && !vb->rescind_timer_used && !ch->sub_index &&
        strcmp(ch->dev->name, vb->rescind_device) == 0) {
        vb->rescind_timer_used = true;
        vb->rescind_timer_relid = ch->relid;
        vb->rescind_timer_due_ns = vb_now_ns() + (int64_t)vb->cfg.rescind_after_ms * 1000000ll;
    }
}

static void handle_close_channel(struct hvsim_vmbus *vb, const struct vb_inbox_entry *in)
{
    struct vmbus_msg_relid m;
    memcpy(&m, in->payload, sizeof m);
    struct hvsim_vmbus_channel *ch = m.child_relid && m.child_relid < VB_RELIDS ? &vb->channels[m.child_relid] : NULL;
    if (ch && ch->state == VB_CH_RESCINDED) {
        vb_log(vb, 1, "CLOSECHANNEL for rescinded relid %u: already closed", m.child_relid);
        return;
    }
    if (!ch || ch->state != VB_CH_OPEN) {
        vb_guest_error(vb, "CLOSECHANNEL for relid %u: not an open channel: dropped", m.child_relid);
        return;
    }
    close_channel(vb, ch, VB_CH_OFFERED, "CLOSECHANNEL", false);
    if (!ch->sub_index)
        rescind_sub_channels(vb, ch);
}

static void handle_relid_released(struct hvsim_vmbus *vb, const struct vb_inbox_entry *in)
{
    struct vmbus_msg_relid m;
    memcpy(&m, in->payload, sizeof m);
    struct hvsim_vmbus_channel *ch = m.child_relid && m.child_relid < VB_RELIDS ? &vb->channels[m.child_relid] : NULL;
    if (!ch || ch->state != VB_CH_RESCINDED) {
        vb_guest_error(vb, "RELID_RELEASED for relid %u: not a rescinded channel: dropped", m.child_relid);
        return;
    }
    for (uint32_t i = 0; i < vb->gpadl_count; i++) {
        const struct vb_gpadl *g = vb->gpadls[i];
        if (g->relid == ch->relid && (g->received < g->pages || g->answer_late))
            vb_guest_error(vb, "RELID_RELEASED for relid %u while its GPADL 0x%x is %s: released too early",
                           ch->relid, g->handle, g->answer_late ? "not yet answered" : "being built");
    }
    vb_log(vb, 0, "relid %u (%s) released", ch->relid, ch->dev->name);
    free_channel(vb, ch);
}

/* ---- MODIFYCHANNEL / UNLOAD ---- */

static void handle_modify_channel(struct hvsim_vmbus *vb, const struct vb_inbox_entry *in)
{
    char name[16];
    if (vb->version < VMBUS_VERSION_WIN10_RS3) {
        vb_guest_error(vb, "MODIFYCHANNEL needs version 4.1 (negotiated %s): dropped",
                       vb_version_name(vb->version, name));
        return;
    }
    struct vmbus_msg_modify_channel m;
    memcpy(&m, in->payload, sizeof m);
    struct hvsim_vmbus_channel *ch = guest_channel(vb, m.child_relid);
    uint32_t status = 0;
    if (!ch || ch->state != VB_CH_OPEN) {
        vb_guest_error(vb, "MODIFYCHANNEL for relid %u: not an open channel: refused", m.child_relid);
        status = HVSIM_VMBUS_STATUS_FAILED;
    } else if (m.target_vp != VMBUS_TARGET_VP_NO_INTERRUPT && m.target_vp >= vb->sim->cfg.vp_count) {
        vb_guest_error(vb, "MODIFYCHANNEL for relid %u: target VP %u does not exist: refused", m.child_relid,
                       m.target_vp);
        status = HVSIM_VMBUS_STATUS_FAILED;
    } else {
        __atomic_store_n(&ch->target_vp, m.target_vp, __ATOMIC_RELAXED);
        vb_log(vb, 1, "channel %u: target VP now %d", m.child_relid,
               m.target_vp == VMBUS_TARGET_VP_NO_INTERRUPT ? -1 : (int)m.target_vp);
    }
    if (vb->version >= VMBUS_VERSION_WIN10_V5_3) {
        struct vmbus_msg_modify_channel_response r = {
            .hdr.type = VMBUS_MSG_MODIFYCHANNEL_RESPONSE, .child_relid = m.child_relid, .status = status
        };
        vb_reply(vb, &r, sizeof r, true);
    }
}

/* Back to the state before INITIATE_CONTACT: every channel closed, sub-channels and rescinded offers
 * gone, GPADLs dropped; the offers stay (same relids) for the next connection. */
static void handle_unload(struct hvsim_vmbus *vb)
{
    struct vmbus_msg_header done = { .type = VMBUS_MSG_UNLOAD_RESPONSE };
    if (!vb->connected) {
        vb_log(vb, 1, "UNLOAD while not connected: UNLOAD_RESPONSE");
        vb_reply(vb, &done, sizeof done, false);
        return;
    }
    uint32_t closed = 0;
    for (uint32_t r = 1; r < VB_RELIDS; r++) {
        struct hvsim_vmbus_channel *ch = &vb->channels[r];
        uint32_t st = ch->state;
        if (st == VB_CH_FREE)
            continue;
        if (st == VB_CH_OPEN) {
            close_channel(vb, ch, VB_CH_OFFERED, "UNLOAD", true);
            closed++;
        }
        if (ch->sub_index || st == VB_CH_RESCINDED)
            free_channel(vb, ch);
        else
            ch->sent = false;
    }
    uint32_t gpadls = vb->gpadl_count;
    while (vb->gpadl_count)
        remove_gpadl(vb, vb->gpadl_count - 1);
    drop_late(vb);
    vb->churn_left = 0;
    vb->churn_relid = 0;
    vb->connected = false;
    vb->offers_requested = false;
    vb->monitor1 = vb->monitor2 = 0;
    vb->next_monitor_ns = 0;
    __atomic_store_n(&vb->version, 0, __ATOMIC_RELEASE);
    __atomic_store_n(&vb->interrupt_page, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&vb->conn_sint, VMBUS_MESSAGE_SINT, __ATOMIC_RELAXED);
    vb_reply(vb, &done, sizeof done, false);
    VB_COUNT(vb, unloads);
    vb_log(vb, 0, "UNLOAD: %u channels closed, %u GPADLs dropped; disconnected", closed, gpadls);
}

/* ---- dispatch ---- */

void vb_handle_message(struct hvsim_vmbus *vb, const struct vb_inbox_entry *in)
{
    VB_COUNT(vb, messages_in);
    if (in->conn == VMBUS_CONN_MESSAGE)
        VB_COUNT(vb, messages_conn_message);
    else if (in->conn == VMBUS_CONN_MESSAGE_MULTICLIENT)
        VB_COUNT(vb, messages_conn_multiclient);
    else
        VB_COUNT(vb, messages_conn_redirect);
    vb->reply_vp = vb->connected ? vb->conn_vp : in->vp;
    vb->reply_sint = vb->connected ? vb->conn_sint : VMBUS_MESSAGE_SINT;
    uint32_t type = VMBUS_MSG_INVALID;
    if (in->size >= sizeof type)
        memcpy(&type, in->payload, sizeof type);
    vb_log(vb, 1, "<- vp%u connection 0x%x: %s (%u bytes)", in->vp, in->conn, vmbus_msg_name(type), in->size);
    if (in->type != HV_MESSAGE_VMBUS) {
        vb_guest_error(vb, "HvPostMessage of type %u on connection 0x%x: VMBus messages are type %u: dropped",
                       in->type, in->conn, HV_MESSAGE_VMBUS);
        return;
    }
    const char *why = vmbus_msg_check(in->payload, in->size, &type);
    if (why) {
        if (type == VMBUS_MSG_GPADL_HEADER && in->size >= sizeof(struct vmbus_msg_gpadl_header)) {
            struct vmbus_msg_gpadl_header h;
            memcpy(&h, in->payload, sizeof h);
            gpadl_refused(vb, "GPADL_HEADER", h.child_relid, h.gpadl, "%s", why);
            return;
        }
        vb_guest_error(vb, "%s of %u bytes on connection 0x%x: %s: dropped", vmbus_msg_name(type), in->size, in->conn,
                       why);
        return;
    }
    if (vmbus_msg_from_host(type)) {
        vb_guest_error(vb, "%s is a host-to-guest message: dropped", vmbus_msg_name(type));
        return;
    }
    if (!vb->connected && type != VMBUS_MSG_INITIATE_CONTACT && type != VMBUS_MSG_UNLOAD) {
        vb_guest_error(vb, "%s before a version was negotiated: dropped", vmbus_msg_name(type));
        return;
    }
    switch (type) {
    case VMBUS_MSG_INITIATE_CONTACT:
        handle_initiate_contact(vb, in);
        break;
    case VMBUS_MSG_REQUESTOFFERS:
        handle_request_offers(vb);
        break;
    case VMBUS_MSG_GPADL_HEADER:
        handle_gpadl_header(vb, in);
        break;
    case VMBUS_MSG_GPADL_BODY:
        handle_gpadl_body(vb, in);
        break;
    case VMBUS_MSG_GPADL_TEARDOWN:
        handle_gpadl_teardown(vb, in);
        break;
    case VMBUS_MSG_OPENCHANNEL:
        handle_open_channel(vb, in);
        break;
    case VMBUS_MSG_CLOSECHANNEL:
        handle_close_channel(vb, in);
        break;
    case VMBUS_MSG_RELID_RELEASED:
        handle_relid_released(vb, in);
        break;
    case VMBUS_MSG_MODIFYCHANNEL:
        handle_modify_channel(vb, in);
        break;
    case VMBUS_MSG_UNLOAD:
        handle_unload(vb);
        break;
    default:
        vb_guest_error(vb, "%s: not a message this host handles: dropped", vmbus_msg_name(type));
        break;
    }
}

/* ---- signals, the monitor page, timers ---- */

void vb_dispatch_signals(struct hvsim_vmbus *vb, const uint64_t *bits)
{
    for (uint32_t w = 0; w < VB_RELIDS / 64; w++) {
        for (uint64_t b = bits[w]; b; b &= b - 1) {
            struct hvsim_vmbus_channel *ch = &vb->channels[w * 64 + (uint32_t)__builtin_ctzll(b)];
            if (ch->state != VB_CH_OPEN || !ch->dev->on_signal)
                continue; /* a signal racing a close, or for relid 0 or a closed channel: nothing to do */
            struct vb_callback cb = { .kind = VB_CB_SIGNAL, .ch = ch, .dev = ch->dev };
            vb_queue_callback(vb, &cb);
        }
    }
}

/* The guest's monitor page 2 (child -> parent): each trigger group's pending bits are taken at once
 * (exchanged with 0), and every bit of an open channel's monitor id signals it. */
static void scan_monitor_page(struct hvsim_vmbus *vb)
{
    uint8_t *page = hvsim_gpa(vb->sim, vb->monitor2, HVSIM_PAGE_SIZE);
    if (!page)
        return;
    uint64_t fire[VB_RELIDS / 64] = { 0 };
    bool any = false;
    for (uint32_t g = 0; g < VMBUS_MONITOR_IDS / 32; g++) {
        uint32_t *pending = (uint32_t *)(page + offsetof(struct vmbus_monitor_page, trigger_group) +
                                         g * sizeof(struct vmbus_monitor_trigger_group));
        uint32_t bits = __atomic_exchange_n(pending, 0, __ATOMIC_SEQ_CST);
        for (; bits; bits &= bits - 1) {
            uint32_t id = g * 32 + (uint32_t)__builtin_ctz(bits);
            uint32_t relid = vb->monitor_owner[id];
            if (!relid || vb->channels[relid].state != VB_CH_OPEN) {
                vb_log(vb, 1, "monitor id %u pending with no open channel: ignored", id);
                continue;
            }
            fire[relid / 64] |= 1ull << (relid % 64);
            any = true;
            VB_COUNT(vb, monitor_signals);
        }
    }
    if (any)
        vb_dispatch_signals(vb, fire);
}

/* The held-back answers that are due go to the outbox; returns the next due time (0: none). */
static int64_t release_late(struct hvsim_vmbus *vb, int64_t now)
{
    int64_t next = 0;
    for (struct vb_late **p = &vb->late; *p;) {
        struct vb_late *l = *p;
        if (l->due_ns > now) {
            if (!next || l->due_ns < next)
                next = l->due_ns;
            p = &l->next;
            continue;
        }
        *p = l->next;
        uint32_t index;
        if (l->remove_gpadl && find_gpadl(vb, l->remove_gpadl, &index) && vb->gpadls[index]->answer_late)
            remove_gpadl(vb, index);
        queue_control(vb, l->payload, l->size, false);
        free(l);
    }
    return next;
}

/* OFFER_CHURN: one round (an offer, or the rescind of the last one); returns the next round's time. */
static int64_t churn(struct hvsim_vmbus *vb, int64_t now)
{
    if (!vb->churn_left)
        return 0;
    if (now < vb->churn_due_ns)
        return vb->churn_due_ns;
    if (!vb->churn_dev) {
        struct vb_device *d = vb_alloc(sizeof *d);
        strcpy(d->name, "churn");
        d->dev = (struct hvsim_vmbus_device){ .name = d->name, .type = VMBUS_GUID_KEYBOARD, .instance = churn_instance };
        d->next = vb->devices; /* freed with the server */
        vb->devices = d;
        vb->churn_dev = d;
    }
    struct hvsim_vmbus_channel *ch = vb->churn_relid ? &vb->channels[vb->churn_relid] : NULL;
    if (ch && (ch->state == VB_CH_OFFERED || ch->state == VB_CH_OPEN)) {
        vb_rescind(vb, ch);
        vb->churn_relid = 0;
    } else {
        ch = vb_new_offer(vb, &vb->churn_dev->dev, 0, 0);
        vb->churn_relid = ch ? ch->relid : 0;
    }
    if (!--vb->churn_left)
        vb_log(vb, 0, "hazard: offer churn over");
    vb->churn_due_ns = now + (int64_t)(vb->cfg.churn_period_ms ? vb->cfg.churn_period_ms : 20u) * 1000000ll;
    return vb->churn_left ? vb->churn_due_ns : 0;
}

static int64_t earliest(int64_t a, int64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

int64_t vb_periodic(struct hvsim_vmbus *vb, int64_t now)
{
    int64_t next = earliest(release_late(vb, now), churn(vb, now));
    if (vb->rescind_timer_relid) {
        if (now >= vb->rescind_timer_due_ns) {
            struct hvsim_vmbus_channel *ch = &vb->channels[vb->rescind_timer_relid];
            vb_log(vb, 0, "rescinding %s (relid %u) %u ms after it opened (--vmbus-rescind-after-ms)", ch->dev->name,
                   ch->relid, vb->cfg.rescind_after_ms);
            vb_rescind(vb, ch); /* clears the timer */
        } else {
            next = earliest(next, vb->rescind_timer_due_ns);
        }
    }
    if (vb->connected && vb->monitor2 && vb->monitored_open) {
        if (!vb->next_monitor_ns || now >= vb->next_monitor_ns) {
            scan_monitor_page(vb);
            vb->next_monitor_ns = now + (int64_t)vb->cfg.monitor_latency_us * 1000;
        }
        if (!next || vb->next_monitor_ns < next)
            next = vb->next_monitor_ns;
    } else {
        vb->next_monitor_ns = 0;
    }
    return next;
}

/* ---- destruction ---- */

void vb_close_all_for_destroy(struct hvsim_vmbus *vb)
{
    for (uint32_t r = 1; r < VB_RELIDS; r++) {
        struct hvsim_vmbus_channel *ch = &vb->channels[r];
        if (ch->state != VB_CH_OPEN)
            continue;
        set_state(ch, VB_CH_OFFERED);
        struct vb_callback cb = { .kind = VB_CB_CLOSE, .ch = ch, .dev = ch->dev };
        vb_queue_callback(vb, &cb);
    }
}

void vb_free_tables(struct hvsim_vmbus *vb)
{
    drop_late(vb);
    while (vb->gpadl_count)
        remove_gpadl(vb, vb->gpadl_count - 1);
    free(vb->gpadls);
    vb->gpadls = NULL;
    while (vb->devices) {
        struct vb_device *d = vb->devices;
        vb->devices = d->next;
        free(d);
    }
}
