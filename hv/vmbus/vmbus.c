/*
 * vmbus: the connection, the host's channel messages, offers, the driver registry, the listing and
 * UNLOAD (contract in hv/vmbus/vmbus.h; GPADLs and channels in hv/vmbus/vmbus_channel.c).
 *
 * The SINT 2 handler runs at DISPATCH (the SynIC's DPC) on the private copy hv/synic.c read once
 * from the slot. It checks it (hv/vmbus/proto/vmbus_msg.c), then its row of the message table
 * (host_msgs[] below) says what to do: hand an answer to the request waiting for it (the requester
 * runs at PASSIVE and waits on an event with a timeout) or apply an offer or a rescind.
 */
#include "hv/vmbus/vmbus_internal.h"

#include "arch-x86_64/paging.h"
#include "arch-x86_64/tsc.h"
#include "hv/hv.h"
#include "kernel/fmt.h"
#include "kernel/log.h"
#include "kernel/mm.h"
#include "kernel/percpu.h"
#include "kernel/power.h"
#include "kernel/string.h"

struct vmbus_bus vmbus_bus;
static bool hook_registered, sint_registered;
static const struct vmbus_driver *drivers[VMBUS_MAX_DRIVERS];
static void probe_all(const struct vmbus_driver *d);
static bool add_driver(const struct vmbus_driver *d);

/* The ladder, newest first (hyperv-facts.md §3.7). Gen2 needs 3.0 or newer. */
static const uint32_t version_ladder[] = {
    VMBUS_VERSION_COPPER,   VMBUS_VERSION_WIN10_V5_3, VMBUS_VERSION_WIN10_V5_2, VMBUS_VERSION_WIN10_V5_1,
    VMBUS_VERSION_WIN10_V5, VMBUS_VERSION_WIN10_RS3,  VMBUS_VERSION_WIN10,      VMBUS_VERSION_WIN8_1,
};

static const struct {
    struct vmbus_guid type;
    const char *name, *what;
} known_types[] = {
    { VMBUS_GUID_NIC, "netvsc", "Synthetic network adapter" },
    { VMBUS_GUID_SCSI, "storvsc", "Synthetic SCSI controller" },
    { VMBUS_GUID_IDE, "ide", "Synthetic IDE controller" },
    { VMBUS_GUID_SHUTDOWN, "shutdown", "Shutdown service" },
    { VMBUS_GUID_TIMESYNC, "timesync", "Time synchronization service" },
    { VMBUS_GUID_HEARTBEAT, "heartbeat", "Heartbeat service" },
    { VMBUS_GUID_KVP, "kvp", "Data exchange (KVP) service" },
    { VMBUS_GUID_VSS, "vss", "Backup (VSS) service" },
    { VMBUS_GUID_FCOPY, "fcopy", "Guest file copy service" },
    { VMBUS_GUID_BALLOON, "balloon", "Dynamic memory" },
    { VMBUS_GUID_KEYBOARD, "keyboard", "Synthetic keyboard" },
    { VMBUS_GUID_MOUSE, "mouse", "Synthetic mouse" },
    { VMBUS_GUID_VIDEO, "video", "Synthetic video" },
    { VMBUS_GUID_VPCI, "vpci", "PCI pass-through" },
    { VMBUS_GUID_HVSIM_TEST, "hvsim-test", "hvsim test device" },
};

static const char *version_name(uint32_t v)
{
    switch (v) {
    case VMBUS_VERSION_COPPER: return "6.0 (Copper)";
    case VMBUS_VERSION_WIN10_V5_3: return "5.3 (Iron: WS2022, Windows 11)";
    case VMBUS_VERSION_WIN10_V5_2: return "5.2 (WS2019)";
    case VMBUS_VERSION_WIN10_V5_1: return "5.1 (Windows 10 1803)";
    case VMBUS_VERSION_WIN10_V5: return "5.0 (Windows 10 1709, multiclient)";
    case VMBUS_VERSION_WIN10_RS3: return "4.1 (Windows 10 1709)";
    case VMBUS_VERSION_WIN10: return "4.0 (WS2016)";
    case VMBUS_VERSION_WIN8_1: return "3.0 (WS2012 R2)";
    default: return "?";
    }
}

static bool worth_logging(uint64_t count)
{
    return count <= 10 || count % 1000 == 0;
}

/* ---- small accessors ---- */

void vmbus_guid_format(const struct vmbus_guid *g, char out[37])
{
    static const char hex[] = "0123456789abcdef";
    /* Text order: bytes 3..0, 5..4, 7..6 (the little-endian fields), then 8..15. */
    static const uint8_t order[16] = { 3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15 };
    char *p = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        uint8_t b = g->b[order[i]];
        *p++ = hex[b >> 4];
        *p++ = hex[b & 15];
    }
    *p = 0;
}

static int type_index(const struct vmbus_guid *type)
{
    for (unsigned i = 0; i < sizeof known_types / sizeof known_types[0]; i++)
        if (vmbus_guid_equal(&known_types[i].type, type))
            return (int)i;
    return -1;
}

const char *vmbus_channel_type_name(const struct vmbus_channel *ch)
{
    int i = type_index(&ch->offer.if_type);
    return i < 0 ? "unknown" : known_types[i].name;
}

uint32_t vmbus_channel_relid(const struct vmbus_channel *ch) { return ch->relid; }
uint16_t vmbus_channel_sub_index(const struct vmbus_channel *ch) { return ch->sub_index; }
const struct vmbus_offer *vmbus_channel_offer(const struct vmbus_channel *ch) { return &ch->offer; }
bool vmbus_channel_rescinded(const struct vmbus_channel *ch) { return __atomic_load_n(&ch->rescinded, __ATOMIC_ACQUIRE); }
uint32_t vmbus_channel_target_cpu(const struct vmbus_channel *ch) { return ch->target_cpu; }
struct vmbus_channel *vmbus_channel_primary(struct vmbus_channel *ch) { return ch->primary ? ch->primary : ch; }
void vmbus_channel_set_driver_context(struct vmbus_channel *ch, void *ctx) { ch->driver_ctx = ctx; }
void *vmbus_channel_driver_context(const struct vmbus_channel *ch) { return ch->driver_ctx; }
bool vmbus_connected(void) { return vmbus_bus.connected; }
uint32_t vmbus_version(void) { return vmbus_bus.connected ? vmbus_bus.version : 0; }
uint32_t vmbus_host_features(void) { return vmbus_bus.features; }
uint32_t vmbus_message_connection_id(void) { return vmbus_bus.msg_conn_id; }

void vmbus_set_timeout_ms(uint32_t ms)
{
    vmbus_bus.timeout_ms = ms ? ms : VMBUS_DEFAULT_TIMEOUT_MS;
}

void vmbus_get_stats(struct vmbus_stats *out)
{
    irql_t old = spin_lock(&vmbus_bus.lock);
    *out = vmbus_bus.stats;
    spin_unlock(&vmbus_bus.lock, old);
    out->channel_objects = vmbus_channel_object_count();
}

/* ---- the message table ---- */

static void on_offer(uint32_t type, const uint8_t *m, uint32_t size);
static void on_rescind(uint32_t type, const uint8_t *m, uint32_t size);
static void on_all_offers(uint32_t type, const uint8_t *m, uint32_t size);
static void on_answer(uint32_t type, const uint8_t *m, uint32_t size);

/* What the guest does with each channel message a host sends: the one table that drives the SINT 2
 * dispatch (in the manner of OpenBSD's hv_msg_dispatch[] and FreeBSD's VMBUS_CHANMSG_PROC). A row's
 * index is its type; the type's name, minimum size and sender are the protocol's, shared with
 * hvsim (hv/vmbus/proto/vmbus_msg.c: vmbus_msg_check runs before a row is looked at, and a
 * guest-to-host type has no row). An answer names the request it answers and where its match keys
 * sit (byte offsets, 0: not part of the match); outlives_rescind: the host answers it even after
 * rescinding the channel, so a rescind does not end the wait. */
#define AT(msg, field) ((uint8_t)offsetof(struct vmbus_msg_##msg, field))
static const struct host_msg {
    uint32_t answers;
    uint8_t relid_at, key_at;
    bool outlives_rescind;
    void (*handle)(uint32_t type, const uint8_t *m, uint32_t size);
} host_msgs[VMBUS_MSG_COUNT] = {
    [VMBUS_MSG_OFFERCHANNEL] = { .handle = on_offer },
    [VMBUS_MSG_RESCIND_CHANNELOFFER] = { .handle = on_rescind },
    [VMBUS_MSG_ALLOFFERS_DELIVERED] = { .answers = VMBUS_MSG_REQUESTOFFERS, .handle = on_all_offers },
    [VMBUS_MSG_VERSION_RESPONSE] = { .answers = VMBUS_MSG_INITIATE_CONTACT, .handle = on_answer },
    [VMBUS_MSG_OPENCHANNEL_RESULT] = { VMBUS_MSG_OPENCHANNEL, AT(open_result, child_relid), AT(open_result, open_id),
                                       false, on_answer },
    [VMBUS_MSG_GPADL_CREATED] = { VMBUS_MSG_GPADL_HEADER, AT(gpadl_created, child_relid), AT(gpadl_created, gpadl),
                                  true, on_answer },
    [VMBUS_MSG_GPADL_TORNDOWN] = { VMBUS_MSG_GPADL_TEARDOWN, 0, AT(gpadl_torndown, gpadl), true, on_answer },
    [VMBUS_MSG_UNLOAD_RESPONSE] = { .answers = VMBUS_MSG_UNLOAD, .handle = on_answer },
    [VMBUS_MSG_MODIFYCHANNEL_RESPONSE] = { VMBUS_MSG_MODIFYCHANNEL, AT(modify_channel_response, child_relid), 0,
                                           false, on_answer },
};
#undef AT

/* The row of the answer to `request`, or NULL. */
static const struct host_msg *answer_to(uint32_t request)
{
    for (uint32_t t = 0; t < VMBUS_MSG_COUNT; t++)
        if (host_msgs[t].answers == request && host_msgs[t].handle)
            return &host_msgs[t];
    return NULL;
}

static uint32_t key_at(const uint8_t *m, uint8_t at)
{
    uint32_t v = 0;
    if (at)
        memcpy(&v, m + at, sizeof v); /* within the message: vmbus_msg_check saw its minimum size */
    return v;
}

/* ---- requests ---- */

void vmbus_request_arm(struct vmbus_request *r, uint32_t request, bool match_relid, uint32_t relid, bool match_key,
                       uint32_t key)
{
    memset(r, 0, sizeof *r);
    const struct host_msg *a = answer_to(request);
    r->request = request;
    r->match_relid = match_relid;
    r->relid = relid;
    r->match_key = match_key;
    r->key = key;
    r->outlives_rescind = a && a->outlives_rescind;
    event_init(&r->done, EVENT_NOTIFICATION, false);
    irql_t old = spin_lock(&vmbus_bus.lock);
    list_push_back(&vmbus_bus.requests, &r->link);
    spin_unlock(&vmbus_bus.lock, old);
}

void vmbus_request_disarm(struct vmbus_request *r)
{
    irql_t old = spin_lock(&vmbus_bus.lock);
    if (list_linked(&r->link))
        list_remove(&r->link);
    spin_unlock(&vmbus_bus.lock, old);
}

status_t vmbus_request_wait(struct vmbus_request *r, const char *what)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    uint32_t ms = vmbus_bus.timeout_ms ? vmbus_bus.timeout_ms : VMBUS_DEFAULT_TIMEOUT_MS;
    status_t s = event_wait(&r->done, (uint64_t)ms * 1000000ull);
    irql_t old = spin_lock(&vmbus_bus.lock);
    bool answered = !list_linked(&r->link); /* the handler unlinks before it sets the event */
    if (!answered) {
        list_remove(&r->link);
        vmbus_bus.stats.timeouts++;
    }
    spin_unlock(&vmbus_bus.lock, old);
    if (!answered) {
        (void)s;
        pr_err("vmbus: host did not answer %s in %u.%u s", what, ms / 1000, ms % 1000 / 100);
        return STATUS_TIMEOUT;
    }
    return r->cancelled ? STATUS_CANCELLED : STATUS_OK;
}

void vmbus_cancel_requests_locked(uint32_t relid)
{
    struct list *n = vmbus_bus.requests.next;
    while (n != &vmbus_bus.requests) {
        struct vmbus_request *r = container_of(n, struct vmbus_request, link);
        n = n->next;
        if (r->match_relid && r->relid == relid && !r->outlives_rescind) {
            list_remove(&r->link);
            r->cancelled = true;
            event_set(&r->done);
        }
    }
}

/* Hands an answer to its request; false if nobody asked (with the bus lock held). */
static bool complete_request_locked(const struct host_msg *row, const uint8_t *m, uint32_t size)
{
    uint32_t relid = key_at(m, row->relid_at), key = key_at(m, row->key_at);
    for (struct list *n = vmbus_bus.requests.next; n != &vmbus_bus.requests; n = n->next) {
        struct vmbus_request *r = container_of(n, struct vmbus_request, link);
        if (r->request != row->answers || (r->match_relid && r->relid != relid) || (r->match_key && r->key != key))
            continue;
        list_remove(&r->link);
        memcpy(r->answer, m, size);
        r->size = size;
        event_set(&r->done);
        return true;
    }
    return false;
}

status_t vmbus_post(const void *msg, uint32_t size)
{
    uint16_t hs = hv_post_message(vmbus_bus.msg_conn_id, HV_MESSAGE_VMBUS, msg, size);
    if (hs == HV_STATUS_SUCCESS)
        return STATUS_OK;
    uint32_t type;
    memcpy(&type, msg, sizeof type);
    pr_err("vmbus: posting %s on connection %u failed: %s", vmbus_msg_name(type), vmbus_bus.msg_conn_id,
           hv_status_name(hs));
    return STATUS_DEVICE_ERROR;
}

/* ---- offers and rescinds (DISPATCH) ---- */

static struct vmbus_channel *find_primary_locked(const struct vmbus_offer *o)
{
    for (struct list *n = vmbus_bus.channels.next; n != &vmbus_bus.channels; n = n->next) {
        struct vmbus_channel *c = (struct vmbus_channel *)n;
        if (c->sub_index == 0 && !c->released && vmbus_guid_equal(&c->offer.if_type, &o->if_type) &&
            vmbus_guid_equal(&c->offer.if_instance, &o->if_instance))
            return c;
    }
    return NULL;
}

static void insert_by_relid_locked(struct vmbus_channel *ch)
{
    struct list *n = vmbus_bus.channels.next;
    while (n != &vmbus_bus.channels && ((struct vmbus_channel *)n)->relid < ch->relid)
        n = n->next;
    list_insert_before(n, &ch->link);
}

/* Returns a reason to drop the offer, or NULL. */
static const char *take_offer_locked(const struct vmbus_msg_offer_channel *m)
{
    uint32_t relid = m->child_relid;
    const char *why = vmbus_offer_check(m);
    if (why)
        return why;
    struct vmbus_channel *old = vmbus_bus.by_relid[relid];
    if (old && !old->released)
        return "duplicate relid (already offered)";
    struct vmbus_channel *primary = NULL;
    if (m->offer.sub_channel_index != 0) {
        primary = find_primary_locked(&m->offer);
        if (!primary)
            return "sub-channel without its primary channel";
    }
    struct vmbus_channel *ch = vmbus_channel_new();
    if (!ch)
        return "out of memory";
    ch->relid = relid;
    ch->offer = m->offer;
    ch->connection_id = m->connection_id;
    ch->sub_index = m->offer.sub_channel_index;
    ch->primary = primary;
    if (primary)
        vmbus_channel_hold(primary); /* vmbus_channel_primary() is valid while ch is */
    ch->dedicated_interrupt = m->is_dedicated_interrupt & 1;
    if (m->monitor_allocated & 1) {
        if (m->monitor_id < VMBUS_MONITOR_IDS) {
            ch->monitored = true;
            ch->monitor_id = m->monitor_id;
        } else if (worth_logging(++vmbus_bus.stats.dropped_bad)) {
            pr_warn("vmbus: offer for relid %u has monitor id %u (max 127): signalling it by event instead", relid,
                    m->monitor_id);
        }
    }
    __atomic_store_n(&ch->state, VMBUS_CH_OFFERED, __ATOMIC_RELEASE);
    vmbus_bus.by_relid[relid] = ch;
    insert_by_relid_locked(ch);
    if (primary)
        primary->sub_count++;
    vmbus_bus.stats.offers++;
    vmbus_bus.stats.channels++;
    return NULL;
}

static void on_offer(uint32_t type, const uint8_t *m, uint32_t size)
{
    (void)type;
    (void)size;
    const struct vmbus_msg_offer_channel *o = (const void *)m;
    irql_t old = spin_lock(&vmbus_bus.lock);
    const char *why = take_offer_locked(o);
    bool late = vmbus_bus.offers_done && !why && o->offer.sub_channel_index == 0;
    uint64_t drops = why ? ++vmbus_bus.stats.dropped_bad : 0;
    spin_unlock(&vmbus_bus.lock, old);
    if (why) {
        if (worth_logging(drops))
            pr_warn("vmbus: OFFERCHANNEL for relid %u dropped: %s", o->child_relid, why);
        return;
    }
    event_set(&vmbus_bus.offers_changed);
    if (late)
        pr_info("vmbus: relid %u offered after ALLOFFERS_DELIVERED; drivers registered from now on will see it",
                o->child_relid);
}

static void on_rescind(uint32_t type, const uint8_t *m, uint32_t size)
{
    (void)type;
    (void)size;
    uint32_t relid = ((const struct vmbus_msg_relid *)m)->child_relid;
    irql_t old = spin_lock(&vmbus_bus.lock);
    struct vmbus_channel *ch = relid && relid <= VMBUS_MAX_RELID ? vmbus_bus.by_relid[relid] : NULL;
    if (!ch || ch->released || ch->rescinded) {
        uint64_t drops = ++vmbus_bus.stats.dropped_bad;
        spin_unlock(&vmbus_bus.lock, old);
        if (worth_logging(drops))
            pr_warn("vmbus: RESCIND_CHANNELOFFER for relid %u, which is not on offer: dropped", relid);
        return;
    }
    vmbus_bus.stats.rescinds++;
    vmbus_channel_hold(ch); /* for the callback and the release below, whatever its holders do meanwhile */
    const char *name = vmbus_channel_type_name(ch);
    /* A sub-channel belongs to its primary's driver (vmbus.h struct vmbus_driver). */
    const struct vmbus_driver *drv = ch->driver ? ch->driver : ch->primary ? ch->primary->driver : NULL;
    bool busy = ch->state != VMBUS_CH_OFFERED, bound = ch->driver != NULL;
    vmbus_channel_rescind_locked(ch);
    spin_unlock(&vmbus_bus.lock, old);
    if (drv && drv->rescind)
        drv->rescind(ch);
    bool released = vmbus_channel_settle(ch);
    pr_info("vmbus: host rescinded relid %u (%s%s)", relid, name,
            released ? ", released at once"
            : bound  ? ", released when its driver closes it"
            : busy   ? ", released when its open or close finishes"
                     : ", released when its GPADLs are gone");
    event_set(&vmbus_bus.offers_changed);
    vmbus_channel_release(ch);
}

static void on_all_offers(uint32_t type, const uint8_t *m, uint32_t size)
{
    (void)type;
    irql_t old = spin_lock(&vmbus_bus.lock);
    vmbus_bus.offers_done = true;
    (void)complete_request_locked(&host_msgs[VMBUS_MSG_ALLOFFERS_DELIVERED], m, size); /* vmbus_init may wait */
    spin_unlock(&vmbus_bus.lock, old);
}

static void on_answer(uint32_t type, const uint8_t *m, uint32_t size)
{
    const struct host_msg *row = &host_msgs[type];
    irql_t old = spin_lock(&vmbus_bus.lock);
    bool asked = complete_request_locked(row, m, size);
    uint64_t n = asked ? 0 : ++vmbus_bus.stats.dropped_unasked;
    spin_unlock(&vmbus_bus.lock, old);
    if (!asked && worth_logging(n))
        pr_warn("vmbus: %s (relid %u, id %#x) that nobody asked for: dropped", vmbus_msg_name(type),
                key_at(m, row->relid_at), key_at(m, row->key_at));
}

/* ---- the SINT 2 handler (DISPATCH) ---- */

/* msg is the SynIC layer's private copy of the slot (hv/synic.c reads each slot once), so what is
 * checked here is what the handlers act on. */
static status_t on_message(void *ctx, uint32_t cpu, const struct hv_message *msg)
{
    (void)ctx;
    (void)cpu;
    const uint8_t *m = msg->payload;
    uint32_t size = msg->header.payload_size; /* <= 240: checked by hv_slot_check */
    uint32_t type = 0;
    const char *why = vmbus_msg_check(m, size, &type);
    const struct host_msg *row = why ? NULL : &host_msgs[type]; /* checked: a known type, < VMBUS_MSG_COUNT */
    if (row && !vmbus_msg_from_host(type))
        why = "a guest-to-host message type";
    else if (row && !row->handle)
        why = "a host message this guest does not handle";
    irql_t old = spin_lock(&vmbus_bus.lock);
    vmbus_bus.stats.messages++;
    uint64_t n = why ? ++vmbus_bus.stats.dropped_bad : 0;
    spin_unlock(&vmbus_bus.lock, old);
    if (why) {
        if (worth_logging(n))
            pr_warn("vmbus: host message dropped: %s (type %u %s, %u bytes; its minimum is %u)", why, type,
                    vmbus_msg_name(type), size, vmbus_msg_min_size(type));
        return STATUS_OK;
    }
    row->handle(type, m, size);
    return STATUS_OK;
}

static void on_event(void *ctx, uint32_t cpu, uint32_t flag)
{
    (void)ctx;
    (void)cpu;
    vmbus_channel_interrupt(flag);
}

/* ---- connecting ---- */

static status_t contact(uint32_t version, uint32_t conn, uint16_t *hv_status, struct vmbus_request *r)
{
    struct vmbus_msg_initiate_contact m = {
        .hdr.type = VMBUS_MSG_INITIATE_CONTACT,
        .version = version,
        .target_vcpu = vmbus_bus.target_vp,
        .monitor_page1 = virt_to_phys(&vmbus_bus.monitor_pages[0]),
        .monitor_page2 = virt_to_phys(&vmbus_bus.monitor_pages[1]),
    };
    if (version >= VMBUS_VERSION_WIN10_V5)
        m.target_info = VMBUS_TARGET_INFO(VMBUS_MESSAGE_SINT, 0, 0);
    else
        m.target_info = virt_to_phys(vmbus_bus.int_page);
    vmbus_request_arm(r, VMBUS_MSG_INITIATE_CONTACT, false, 0, false, 0);
    *hv_status = hv_post_message(conn, HV_MESSAGE_VMBUS, &m, sizeof m);
    if (*hv_status != HV_STATUS_SUCCESS) {
        vmbus_request_disarm(r);
        return STATUS_DEVICE_ERROR;
    }
    char what[64];
    fmt_snprintf(what, sizeof what, "INITIATE_CONTACT %u.%u", VMBUS_VERSION_MAJOR(version), VMBUS_VERSION_MINOR(version));
    return vmbus_request_wait(r, what);
}

static void log_features(uint32_t f)
{
    static const char *const names[] = { "guest-signal-params", "channel-interrupt-redirection",
                                         "modify-connection",   "client-id",
                                         "confidential-channels", "pause-resume",
                                         "server-monitor-pages", "gpa-pinning" };
    char buf[256];
    size_t n = 0;
    buf[0] = 0;
    for (unsigned i = 0; i < 8; i++)
        if (f & (1u << i))
            n += (size_t)fmt_snprintf(buf + n, sizeof buf - n, " %s", names[i]);
    if (f >> 8)
        fmt_snprintf(buf + n, sizeof buf - n, " unknown:%#x", f >> 8);
    pr_info("vmbus: host features %#x:%s", f, f ? buf : " none");
}

static status_t negotiate(uint32_t max_version)
{
    bool multiclient = true;
    struct vmbus_request r;
    for (unsigned i = 0; i < sizeof version_ladder / sizeof version_ladder[0]; i++) {
        uint32_t v = version_ladder[i];
        if (max_version && v > max_version)
            continue;
        uint32_t conn = v >= VMBUS_VERSION_WIN10_V5 && multiclient ? VMBUS_CONN_MESSAGE_MULTICLIENT
                                                                    : VMBUS_CONN_MESSAGE;
        uint16_t hs;
        status_t s = contact(v, conn, &hs, &r);
        if (s == STATUS_DEVICE_ERROR && hs == HV_STATUS_INVALID_CONNECTION_ID && conn == VMBUS_CONN_MESSAGE_MULTICLIENT) {
            pr_info("vmbus: host has no multiclient connection id (4): using connection id 1");
            multiclient = false;
            conn = VMBUS_CONN_MESSAGE;
            s = contact(v, conn, &hs, &r);
        }
        if (s == STATUS_DEVICE_ERROR) {
            pr_err("vmbus: INITIATE_CONTACT %u.%u on connection %u: %s", VMBUS_VERSION_MAJOR(v), VMBUS_VERSION_MINOR(v),
                   conn, hv_status_name(hs));
            return s;
        }
        if (s != STATUS_OK)
            return s;
        const struct vmbus_msg_version_response *vr = (const void *)r.answer;
        if (!vr->version_supported) {
            pr_info("vmbus: host refuses version %s", version_name(v));
            continue;
        }
        vmbus_bus.version = v;
        vmbus_bus.msg_conn_id = VMBUS_CONN_MESSAGE;
        if (v >= VMBUS_VERSION_WIN10_V5)
            vmbus_bus.msg_conn_id = vr->msg_conn_id ? vr->msg_conn_id : conn;
        vmbus_bus.features = 0;
        if (v >= VMBUS_VERSION_COPPER && r.size >= sizeof(struct vmbus_msg_version_response2))
            vmbus_bus.features = ((const struct vmbus_msg_version_response2 *)r.answer)->supported_features;
        pr_info("vmbus: connected: version %s; messages on connection id %u; control messages to VP %u",
                version_name(v), vmbus_bus.msg_conn_id, vmbus_bus.target_vp);
        if (v >= VMBUS_VERSION_COPPER)
            log_features(vmbus_bus.features);
        return STATUS_OK;
    }
    pr_err("vmbus: the host accepts none of the versions 6.0 .. 3.0%s", max_version ? " (within the limit asked)" : "");
    return STATUS_NOT_SUPPORTED;
}

static void reset_state(void)
{
    irql_t old = spin_lock(&vmbus_bus.lock);
    struct list all;
    list_init(&all);
    while (!list_empty(&vmbus_bus.channels)) {
        struct list *n = vmbus_bus.channels.next;
        struct vmbus_channel *ch = (struct vmbus_channel *)n;
        list_remove(n);
        list_push_back(&all, n);
        /* The connection took every relid with it: the channel reads as rescinded and released;
         * its holders keep their references. */
        __atomic_store_n(&ch->rescinded, true, __ATOMIC_RELEASE);
        ch->released = true;
    }
    memset(vmbus_bus.by_relid, 0, sizeof vmbus_bus.by_relid);
    vmbus_bus.connected = false;
    vmbus_bus.offers_done = false;
    vmbus_bus.version = 0;
    memset(&vmbus_bus.stats, 0, sizeof vmbus_bus.stats); /* counters are per connection */
    spin_unlock(&vmbus_bus.lock, old);
    /* The host has let go of the interrupt and monitor pages: the next connection gets new ones.
     * Ring memory of channels still open at unload is not freed: it is power-off (or a test)
     * anyway, and a driver may still look at it. */
    if (vmbus_bus.int_page)
        page_free(vmbus_bus.int_page, 1);
    if (vmbus_bus.monitor_pages)
        page_free(vmbus_bus.monitor_pages, 2);
    vmbus_bus.int_page = NULL;
    vmbus_bus.monitor_pages = NULL;
    while (!list_empty(&all)) {
        struct vmbus_channel *ch = (struct vmbus_channel *)all.next;
        list_remove(&ch->link);
        dpc_cancel(&ch->held_dpc);
        old = spin_lock(&vmbus_bus.lock);
        bool bound = ch->driver != NULL;
        if (bound)
            vmbus_channel_unbind_locked(ch); /* no remove(): the bus is gone */
        spin_unlock(&vmbus_bus.lock, old);
        if (bound)
            vmbus_channel_release(ch);
        vmbus_channel_release(ch); /* the table's */
    }
}

static void shutdown_hook(void)
{
    /* The hv layer's hook runs next and forgets every SINT handler, and power-off consumes the
     * hooks: a later vmbus_init() (the hosted tests power off and start again) registers both anew. */
    sint_registered = false;
    hook_registered = false;
    if (!vmbus_bus.connected) {
        reset_state(); /* a connection that never came up: give the pages back */
        return;
    }
    if (irql_current() != IRQL_PASSIVE) {
        pr_warn("vmbus: power-off above PASSIVE (a panic): no UNLOAD");
        return;
    }
    if (vmbus_unload() != STATUS_OK)
        pr_warn("vmbus: leaving without the host's UNLOAD_RESPONSE");
}

status_t vmbus_unload(void)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!vmbus_bus.connected)
        return STATUS_INVALID_STATE;
    struct vmbus_msg_header m = { .type = VMBUS_MSG_UNLOAD };
    struct vmbus_request r;
    vmbus_request_arm(&r, VMBUS_MSG_UNLOAD, false, 0, false, 0);
    status_t s = vmbus_post(&m, sizeof m);
    if (s == STATUS_OK)
        s = vmbus_request_wait(&r, "UNLOAD");
    else
        vmbus_request_disarm(&r);
    if (s == STATUS_OK)
        pr_info("vmbus: unloaded (host answered UNLOAD_RESPONSE)");
    reset_state();
    return s;
}

status_t vmbus_init(uint32_t max_version)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (vmbus_bus.connected)
        return STATUS_OK;
    if (!hv_active()) {
        pr_err("vmbus: no Hyper-V layer (neither Hyper-V nor hvsim): no VMBus");
        return STATUS_NOT_FOUND;
    }
    if (!vmbus_bus.int_page) {
        list_init(&vmbus_bus.channels);
        list_init(&vmbus_bus.requests);
        event_init(&vmbus_bus.offers_changed, EVENT_NOTIFICATION, false);
        vmbus_bus.next_gpadl = VMBUS_GPADL_FIRST_HANDLE;
        vmbus_bus.int_page = page_alloc(1);
        vmbus_bus.monitor_pages = page_alloc(2);
        if (!vmbus_bus.int_page || !vmbus_bus.monitor_pages)
            return STATUS_NO_MEMORY;
    }
    if (!vmbus_bus.timeout_ms)
        vmbus_bus.timeout_ms = VMBUS_DEFAULT_TIMEOUT_MS;
    /* Flags start clean on every connection. */
    memset(vmbus_bus.int_page, 0, 4096);
    memset(vmbus_bus.monitor_pages, 0, 2 * 4096);
    if (!sint_registered) {
        struct hv_sint_handler h = { .name = "vmbus", .irql = IRQL_DISPATCH, .message = on_message,
                                     .event = on_event, .event_flags = VMBUS_MAX_RELID + 1 };
        status_t s = hv_sint_register(VMBUS_MESSAGE_SINT, &h);
        if (s != STATUS_OK) {
            pr_err("vmbus: cannot take SINT %u: %s", VMBUS_MESSAGE_SINT, status_name(s));
            return s;
        }
        sint_registered = true;
    }
    struct cpu *c = this_cpu();
    vmbus_bus.target_vp = hv_vp_index(c ? c->id : 0);
    if (!hook_registered) {
        /* Registered after the hv layer's hook, so it runs before it (newest first). */
        power_register_shutdown_hook(shutdown_hook);
        hook_registered = true;
    }
    status_t s = negotiate(max_version);
    if (s != STATUS_OK)
        return s;
    vmbus_bus.connected = true;

    struct vmbus_msg_header m = { .type = VMBUS_MSG_REQUESTOFFERS };
    struct vmbus_request r;
    vmbus_request_arm(&r, VMBUS_MSG_REQUESTOFFERS, false, 0, false, 0);
    s = vmbus_post(&m, sizeof m);
    if (s == STATUS_OK)
        s = vmbus_request_wait(&r, "REQUESTOFFERS with ALLOFFERS_DELIVERED");
    else
        vmbus_request_disarm(&r);
    if (s != STATUS_OK)
        return s; /* connected, without a complete list: the power-off hook still unloads */
    vmbus_list();
    /* Drivers linked into the image (VMBUS_DRIVER) first, then those registered at run time. */
    for (const struct vmbus_driver *const *d = __start_vmbus_drivers; d < __stop_vmbus_drivers; d++)
        if (!add_driver(*d))
            pr_warn("vmbus: driver %s not registered: more than %u drivers", (*d)->name, VMBUS_MAX_DRIVERS);
    for (unsigned i = 0; i < VMBUS_MAX_DRIVERS; i++)
        if (drivers[i])
            probe_all(drivers[i]);
    return STATUS_OK;
}

/* ---- the listing ---- */

void vmbus_list(void)
{
    struct vmbus_stats st;
    vmbus_get_stats(&st);
    pr_info("vmbus: %u channel offers (VMBus %s):", st.channels, version_name(vmbus_bus.version));
    pr_info("vmbus:  relid sub mon  state    type        instance                              what");
    irql_t old = spin_lock(&vmbus_bus.lock);
    for (struct list *n = vmbus_bus.channels.next; n != &vmbus_bus.channels; n = n->next) {
        struct vmbus_channel *ch = (struct vmbus_channel *)n;
        char inst[37], mon[8];
        vmbus_guid_format(&ch->offer.if_instance, inst);
        if (ch->monitored)
            fmt_snprintf(mon, sizeof mon, "%u", ch->monitor_id);
        else
            fmt_snprintf(mon, sizeof mon, "-");
        static const char *const states[] = { "offered", "opening", "open", "closing" };
        int ti = type_index(&ch->offer.if_type);
        char type[37];
        if (ti < 0)
            vmbus_guid_format(&ch->offer.if_type, type);
        pr_info("vmbus:  %5u %3u %3s  %-8s %-11s %s  %s", ch->relid, ch->sub_index, mon,
                ch->rescinded ? "rescind" : states[ch->state], ti < 0 ? "unknown" : known_types[ti].name, inst,
                ti < 0 ? type : known_types[ti].what);
    }
    spin_unlock(&vmbus_bus.lock, old);
}

void vmbus_for_each_channel(void (*fn)(struct vmbus_channel *ch, void *ctx), void *ctx)
{
    irql_t old = spin_lock(&vmbus_bus.lock);
    for (struct list *n = vmbus_bus.channels.next; n && n != &vmbus_bus.channels; n = n->next)
        fn((struct vmbus_channel *)n, ctx);
    spin_unlock(&vmbus_bus.lock, old);
}

/* ---- drivers ---- */

/* The next unbound primary channel of d's type (relid > after), or NULL. */
static struct vmbus_channel *next_unbound(const struct vmbus_driver *d, uint32_t after)
{
    struct vmbus_channel *found = NULL;
    irql_t old = spin_lock(&vmbus_bus.lock);
    for (struct list *n = vmbus_bus.channels.next; n != &vmbus_bus.channels; n = n->next) {
        struct vmbus_channel *ch = (struct vmbus_channel *)n;
        if (ch->relid > after && !ch->driver && !ch->primary && !ch->rescinded &&
            vmbus_guid_equal(&ch->offer.if_type, &d->type)) {
            ch->driver = d; /* claimed: nobody else probes it meanwhile */
            vmbus_channel_hold(ch); /* the bound driver's reference */
            found = ch;
            break;
        }
    }
    spin_unlock(&vmbus_bus.lock, old);
    return found;
}

static bool add_driver(const struct vmbus_driver *d)
{
    int slot = -1;
    for (int i = 0; i < VMBUS_MAX_DRIVERS; i++) {
        if (drivers[i] == d)
            slot = i;
        else if (!drivers[i] && slot < 0)
            slot = i;
    }
    if (slot < 0)
        return false;
    drivers[slot] = d;
    return true;
}

status_t vmbus_driver_register(const struct vmbus_driver *d)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    if (!add_driver(d))
        return STATUS_NO_SPACE;
    if (vmbus_bus.connected)
        probe_all(d);
    return STATUS_OK;
}

/* Probes every unbound primary channel of d's type (failures are logged per channel). */
static void probe_all(const struct vmbus_driver *d)
{
    uint32_t after = 0;
    struct vmbus_channel *ch;
    while ((ch = next_unbound(d, after)) != NULL) {
        after = ch->relid;
        /* The probe's own reference: a probe that fails on a rescinded channel may close it, which
         * ends the driver's reference (and can free the channel) before we log and unbind. */
        vmbus_channel_hold(ch);
        status_t s = d->probe ? d->probe(ch) : STATUS_OK;
        if (s != STATUS_OK) {
            pr_warn("vmbus: driver %s failed to probe relid %u: %s (the channel stays unbound)", d->name, ch->relid,
                    status_name(s));
            irql_t old = spin_lock(&vmbus_bus.lock);
            bool still_bound = ch->driver == d; /* else the driver's close already let go */
            if (still_bound)
                vmbus_channel_unbind_locked(ch);
            spin_unlock(&vmbus_bus.lock, old);
            vmbus_channel_settle(ch); /* rescinded meanwhile: its relid goes back now */
            if (still_bound)
                vmbus_channel_release(ch); /* the driver's reference */
        } else {
            pr_info("vmbus: driver %s bound to relid %u", d->name, ch->relid);
        }
        vmbus_channel_release(ch);
    }
}

void vmbus_driver_unregister(const struct vmbus_driver *d)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    for (;;) {
        struct vmbus_channel *ch = NULL;
        irql_t old = spin_lock(&vmbus_bus.lock);
        for (struct list *n = vmbus_bus.channels.next; n != &vmbus_bus.channels; n = n->next)
            if (((struct vmbus_channel *)n)->driver == d) {
                ch = (struct vmbus_channel *)n;
                vmbus_channel_hold(ch); /* remove() may close a rescinded ch, which unbinds it */
                break;
            }
        spin_unlock(&vmbus_bus.lock, old);
        if (!ch)
            break;
        if (d->remove)
            d->remove(ch);
        old = spin_lock(&vmbus_bus.lock);
        bool bound = ch->driver == d;
        if (bound)
            vmbus_channel_unbind_locked(ch);
        spin_unlock(&vmbus_bus.lock, old);
        vmbus_channel_settle(ch);
        if (bound)
            vmbus_channel_release(ch); /* the driver's */
        vmbus_channel_release(ch);
    }
    for (int i = 0; i < VMBUS_MAX_DRIVERS; i++)
        if (drivers[i] == d)
            drivers[i] = NULL;
}

status_t vmbus_channel_wait_sub_channels(struct vmbus_channel *primary, uint32_t count, struct vmbus_channel **subs)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    uint32_t ms = vmbus_bus.timeout_ms ? vmbus_bus.timeout_ms : VMBUS_DEFAULT_TIMEOUT_MS;
    /* A deadline, not a quiet period: offers and rescinds of other channels wake the wait but do not
     * extend it. */
    uint64_t deadline = tsc_ns_since_boot() + (uint64_t)ms * 1000000ull;
    for (;;) {
        event_reset(&vmbus_bus.offers_changed); /* an offer from here on sets it again */
        irql_t old = spin_lock(&vmbus_bus.lock);
        uint32_t have = 0;
        for (uint32_t idx = 1; have < count && idx <= 0xffff; idx++) {
            struct vmbus_channel *sub = NULL;
            for (struct list *n = vmbus_bus.channels.next; n != &vmbus_bus.channels; n = n->next) {
                struct vmbus_channel *c = (struct vmbus_channel *)n;
                if (c->primary == primary && c->sub_index == idx && !c->rescinded)
                    sub = c;
            }
            if (!sub)
                break;
            if (subs)
                subs[have] = sub;
            have++;
        }
        if (have >= count && subs)
            for (uint32_t i = 0; i < count; i++)
                vmbus_channel_hold(subs[i]); /* the caller's, until vmbus_channel_release */
        bool rescinded = primary->rescinded;
        spin_unlock(&vmbus_bus.lock, old);
        if (have >= count)
            return STATUS_OK;
        if (rescinded)
            return STATUS_CANCELLED;
        uint64_t now = tsc_ns_since_boot();
        if (now >= deadline) {
            pr_err("vmbus: host did not offer %u sub-channels of relid %u in %u.%u s (has %u)", count, primary->relid,
                   ms / 1000, ms % 1000 / 100, have);
            return STATUS_TIMEOUT;
        }
        status_t w = event_wait(&vmbus_bus.offers_changed, deadline - now); /* woken by every offer and rescind */
        (void)w; /* the loop looks again either way */
    }
}
