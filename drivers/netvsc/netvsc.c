/*
 * netvsc: the synthetic NIC's guest driver (contract in drivers/netvsc/netvsc.h, protocol in
 * PROTOCOL.md).
 *
 * Locks: sec_lock (DISPATCH) guards the free send-buffer sections and each queue's free transmit
 * packets; everything else on the data path is per queue and runs on the queue's DPC. Control
 * requests (RNDIS INITIALIZE, QUERY, SET, KEEPALIVE) are one at a time under ctrl_mutex (PASSIVE):
 * the request goes out GPA-direct from ctrl_page, the NVSP completion is waited for as a
 * synchronous request, and the RNDIS answer, which comes like received data, is copied by the DPC
 * into ctrl_resp and signalled with ctrl_done.
 *
 * Binding: bind_lock (DISPATCH) guards the channel -> NIC mapping (the primary channel's driver
 * context) and each NIC's registered/gone/removing/releasing flags, so the bus's rescind callback
 * (DISPATCH) meets probe, remove and the netdev's release (PASSIVE) in one order.
 */
#include "drivers/netvsc/netvsc.h"

#include "drivers/netvsc/proto/nvsp_msg.h"
#include "drivers/netvsc/proto/rndis_msg.h"
#include "arch-x86_64/paging.h"
#include "arch-x86_64/spinlock.h"
#include "arch-x86_64/tsc.h"
#include "kernel/log.h"
#include "kernel/app.h"
#include "kernel/mm.h"
#include "kernel/percpu.h"
#include "kernel/power.h"
#include "kernel/string.h"
#include "kernel/sync.h"
#include "kmcl/channel.h"
#include "drivers/netvsc/proto/nvsp_proto.h"

#define DEFAULT_RECV_BYTES (4u << 20)
#define DEFAULT_SEND_BYTES (1u << 20)
#define DEFAULT_RING_PAGES 64u
#define DEFAULT_MTU 1500u
#define TX_PACKETS 256u           /* kmcl packets per queue (frames in flight) */
#define TIMEOUT_NS 5000000000ull  /* every wait for the host */
#define CTRL_RESP_MAX 256u
#define LOG_INTERVAL_NS 1000000000ull
#define ETH_HEADER 14u
#define ETH_MIN 14u               /* a header at least (padding to 60 is the sender's business) */
#define RNDIS_HDR (sizeof(struct rndis_packet)) /* 44: no PPIs on transmit */
#define BIG_SLOTS 32u             /* jumbo frames in flight per queue */

/* One frame in flight: its kmcl packet and the send-buffer section it occupies. */
struct tx_slot {
    struct netvsc_queue *q;
    struct kmcl_packet *pkt;
    uint32_t section;
};

struct netvsc_queue {
    struct netvsc *nv;
    uint32_t index, cpu;
    uint64_t rx_frames; /* this queue's (its DPC's) */
    /* Frames larger than a send-buffer section (jumbo MTUs) go GPA-direct from page-backed bounces:
     * RNDIS header, then the frame; each busy until the host completes it. */
    struct big_slot {
        struct netvsc_queue *q;
        uint8_t *buf;
        uint32_t pages, busy;
        struct kmcl_packet *pkt;
    } big[BIG_SLOTS];
    uint32_t big_pages; /* per bounce; 0: no bounces (every frame fits a section) */
    struct vmbus_channel *vch;
    struct kmcl_channel *ch;
    struct tx_slot slots[TX_PACKETS];
    struct tx_slot *tx_free[TX_PACKETS]; /* under sec_lock */
    uint32_t tx_free_count;
    struct kmcl_xfer_range ranges[NVSP_MAX_PACKETS_PER_RECEIVE];
};

struct netvsc {
    struct netdev dev;             /* what the NIC is to its users (kernel/netdev.h) */
    struct netvsc_config cfg;
    bool gone;                     /* atomic: rescinded or being removed: every transmit fails at once */
    /* The transmit path's limits, 0 once gone (atomics): the checks it makes anyway (the frame's
     * length) also refuse every transmit of a NIC that went, at no cost to the others. */
    uint32_t tx_max;               /* mtu + 14: the longest frame */
    uint32_t tx_fit;               /* section_size - RNDIS_HDR: the longest frame in a section */
    bool rescinded;                /* atomic: the host withdrew it: requests fail at once too */
    bool registered, removing, releasing; /* under bind_lock */
    struct list link;              /* in `bound` while registered (under bind_lock) */
    bool quiesced;                 /* channels closed (quiesce ran) */
    uint32_t nvsp_version, ndis_version, msg_size;
    uint8_t mac[6];
    uint32_t mtu;
    uint64_t link_speed_bps;
    bool link_up;

    uint8_t *recv_buf;
    uint32_t recv_bytes, recv_gpadl;
    uint8_t *send_buf;
    uint32_t send_bytes, send_gpadl, section_size, section_count;
    bool recv_sent, send_sent; /* the host has them (revoke at detach) */
    bool recv_ready;           /* the host accepted the receive buffer (atomic): transfer pages make sense */
    bool leak_recv, leak_send; /* their GPADL teardown failed: the host may still write, never free */

    spinlock_t sec_lock;
    uint32_t *free_sections, free_count;
    struct tx_slot **section_slot;    /* the slot a reserved section goes out with */

    struct netvsc_queue q[NETVSC_MAX_QUEUES];
    uint32_t queues;
    uint32_t indirection[NVSP_RSS_TABLE_MAX], indirection_count;
    bool rss;                      /* our RSS parameters were taken */

    struct mutex ctrl_mutex;
    uint8_t *ctrl_page;            /* one page: the RNDIS control request */
    uint32_t ctrl_request_id;      /* the request waited for (0: none) */
    uint32_t next_request_id;
    struct event ctrl_done;
    uint32_t ctrl_type, ctrl_status, ctrl_resp_len;
    uint8_t ctrl_resp[CTRL_RESP_MAX];

    uint64_t last_log_ns;
    struct netvsc_stats st;
};

static spinlock_t bind_lock = SPINLOCK_INIT;
static struct list bound = LIST_INIT(bound); /* the registered NICs, for the power-off hook */
static bool hook_registered;

static inline void bump(uint64_t *c, uint64_t n) { __atomic_fetch_add(c, n, __ATOMIC_RELAXED); }
static inline bool is_gone(const struct netvsc *nv) { return __atomic_load_n(&nv->gone, __ATOMIC_RELAXED); }
static inline uint32_t tx_limit(const uint32_t *l) { return __atomic_load_n(l, __ATOMIC_RELAXED); }

/* Every transmit fails from now on (DISPATCH or PASSIVE). */
static void mark_gone(struct netvsc *nv)
{
    __atomic_store_n(&nv->gone, true, __ATOMIC_RELAXED);
    __atomic_store_n(&nv->tx_max, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&nv->tx_fit, 0, __ATOMIC_RELAXED);
}
static inline bool is_rescinded(const struct netvsc *nv) { return __atomic_load_n(&nv->rescinded, __ATOMIC_ACQUIRE); }

/* One line per second at most for what the host gets wrong on the data path. */
#define rate_limited(nv, ...)                                                                                   \
    do {                                                                                                       \
        uint64_t now_ = tsc_ns_since_boot() | 1, last_ = __atomic_load_n(&(nv)->last_log_ns, __ATOMIC_RELAXED); \
        if ((last_ == 0 || now_ - last_ >= LOG_INTERVAL_NS) && /* 0: never logged */                           \
            __atomic_compare_exchange_n(&(nv)->last_log_ns, &last_, now_, false, __ATOMIC_RELAXED,             \
                                        __ATOMIC_RELAXED))                                                     \
            pr_warn(__VA_ARGS__);                                                                              \
    } while (0)

/* ---- receive ---- */

/* An RNDIS answer to the control request being waited for. */
static void take_control_answer(struct netvsc *nv, const struct rndis_msg *m)
{
    bump(&nv->st.control_messages, 1);
    /* Claimed by one CAS (id -> 0): a duplicated answer on another queue, or one racing with the
     * waiter's timeout, finds 0 and is dropped, so the answer fields have one writer. */
    uint32_t id = m->request_id;
    if (id == 0 || !__atomic_compare_exchange_n(&nv->ctrl_request_id, &id, 0, false, __ATOMIC_ACQ_REL,
                                                __ATOMIC_ACQUIRE)) {
        rate_limited(nv, "netvsc: RNDIS %s for request %u, which nobody waits for: dropped", rndis_msg_name(m->type),
                     m->request_id);
        return;
    }
    nv->ctrl_type = m->type;
    nv->ctrl_status = m->status;
    const uint8_t *info = NULL;
    uint32_t n = 0;
    if (m->type == RNDIS_MSG_QUERY_CMPLT) {
        info = m->u.query_cmplt.info;
        n = m->u.query_cmplt.info_len;
    }
    if (n > CTRL_RESP_MAX)
        n = CTRL_RESP_MAX;
    if (n)
        memcpy(nv->ctrl_resp, info, n);
    nv->ctrl_resp_len = n;
    event_set(&nv->ctrl_done);
}

static void take_indication(struct netvsc *nv, const struct rndis_msg *m)
{
    bump(&nv->st.indications, 1);
    bool up;
    if (m->status == RNDIS_STATUS_MEDIA_CONNECT)
        up = true;
    else if (m->status == RNDIS_STATUS_MEDIA_DISCONNECT)
        up = false;
    else
        return; /* link speed, network change...: nothing to do here */
    bool was = __atomic_exchange_n(&nv->link_up, up, __ATOMIC_ACQ_REL);
    if (was == up)
        return;
    bump(&nv->st.link_changes, 1);
    pr_info("netvsc: link %s", up ? "up" : "down");
    netdev_set_link(&nv->dev, up);
}

/* One RNDIS message from a receive-buffer range. */
static void take_rndis(struct netvsc_queue *q, const struct rndis_msg *m)
{
    struct netvsc *nv = q->nv;
    switch (m->type) {
    case RNDIS_MSG_PACKET: {
        uint32_t len = m->u.packet.data_len;
        if (len < ETH_MIN || len > nv->mtu + ETH_HEADER) {
            bump(&nv->st.rx_bad_frame, 1);
            rate_limited(nv, "netvsc: queue %u: a frame of %u bytes (MTU %u): dropped", q->index, len, nv->mtu);
            return;
        }
        bump(&nv->st.rx_frames, 1);
        bump(&nv->st.rx_bytes, len);
        bump(&q->rx_frames, 1);
        if (!netdev_rx(&nv->dev, q->index, m->u.packet.data, len))
            bump(&nv->st.rx_no_handler, 1);
        return;
    }
    case RNDIS_MSG_INDICATE_STATUS:
        take_indication(nv, m);
        return;
    case RNDIS_MSG_INITIALIZE_CMPLT:
    case RNDIS_MSG_QUERY_CMPLT:
    case RNDIS_MSG_SET_CMPLT:
    case RNDIS_MSG_KEEPALIVE_CMPLT:
    case RNDIS_MSG_RESET_CMPLT:
        take_control_answer(nv, m);
        return;
    default:
        bump(&nv->st.rx_bad_rndis, 1);
        rate_limited(nv, "netvsc: queue %u: RNDIS message %s (0x%x) not expected from the host: dropped", q->index,
                     rndis_msg_name(m->type), m->type);
        return;
    }
}

/* A transfer-page packet: NVSP SEND_RNDIS_PACKET naming ranges of the receive buffer. */
static uint32_t take_xfer(struct netvsc_queue *q, struct kmcl_incoming *pkt, const void *buf, uint32_t len)
{
    struct netvsc *nv = q->nv;
    struct nvsp_msg m;
    const char *why = NULL;
    if (!__atomic_load_n(&nv->recv_ready, __ATOMIC_ACQUIRE)) {
        bump(&nv->st.rx_bad_nvsp, 1);
        rate_limited(nv, "netvsc: queue %u: transfer-page packet before the receive buffer: dropped", q->index);
        return NVSP_STATUS_FAILURE;
    }
    if (nvsp_msg_check(buf, len, NVSP_TO_GUEST, &m, &why) != STATUS_OK || m.type != NVSP_MSG1_SEND_RNDIS_PACKET) {
        bump(&nv->st.rx_bad_nvsp, 1);
        rate_limited(nv, "netvsc: queue %u: transfer-page packet without SEND_RNDIS_PACKET (%s): dropped", q->index,
                     why ? why : nvsp_msg_name(m.type));
        return NVSP_STATUS_FAILURE;
    }
    struct kmcl_pkt_xfer x = { .ranges = q->ranges, .max_ranges = NVSP_MAX_PACKETS_PER_RECEIVE };
    status_t s = kmcl_channel_packet_get_external_data(pkt, NULL, &x);
    if (s != STATUS_OK || x.pageset_id != NVSP_RECV_BUF_ID) {
        bump(&nv->st.rx_bad_range, 1);
        rate_limited(nv, "netvsc: queue %u: transfer-page packet with %u ranges of set 0x%x (status %d): dropped",
                     q->index, x.range_count, x.pageset_id, (int)s);
        return NVSP_STATUS_FAILURE;
    }
    bump(&nv->st.rx_packets, 1);
    uint32_t status = NVSP_STATUS_SUCCESS;
    for (uint32_t i = 0; i < x.range_count; i++) {
        uint64_t off = q->ranges[i].byte_offset, n = q->ranges[i].byte_count;
        if (off + n > nv->recv_bytes || n == 0) {
            bump(&nv->st.rx_bad_range, 1);
            rate_limited(nv, "netvsc: queue %u: receive range %llu+%llu outside the %u-byte buffer: dropped", q->index,
                         (unsigned long long)off, (unsigned long long)n, nv->recv_bytes);
            status = NVSP_STATUS_FAILURE;
            continue;
        }
        struct rndis_iter it;
        struct rndis_msg r;
        rndis_iter_init(&it, nv->recv_buf + off, (uint32_t)n, RNDIS_ITER_ONE);
        status_t rs;
        while ((rs = rndis_iter_next(&it, &r, &why)) == STATUS_OK)
            take_rndis(q, &r);
        if (rs == STATUS_BAD_DATA) {
            bump(&nv->st.rx_bad_rndis, 1);
            rate_limited(nv, "netvsc: queue %u: bad RNDIS message: %s: dropped", q->index, why ? why : "?");
            status = NVSP_STATUS_INVALID_RNDIS_PACKET;
        }
    }
    return status;
}

/* An in-band NVSP message from the host (the indirection table; anything else is unexpected). */
static void take_inband(struct netvsc_queue *q, const void *buf, uint32_t len)
{
    struct netvsc *nv = q->nv;
    struct nvsp_msg m;
    const char *why = NULL;
    if (nvsp_msg_check(buf, len, NVSP_TO_GUEST, &m, &why) != STATUS_OK) {
        bump(&nv->st.rx_bad_nvsp, 1);
        rate_limited(nv, "netvsc: queue %u: bad NVSP message from the host: %s", q->index, why ? why : "?");
        return;
    }
    if (m.type == NVSP_MSG5_SEND_INDIRECTION_TABLE) {
        nvsp_indirection_table_hyperv_fixup(&m, buf, nv->nvsp_version);
        uint32_t n = nvsp_indirection_table_copy(&m, nv->indirection, NVSP_RSS_TABLE_MAX);
        __atomic_store_n(&nv->indirection_count, n, __ATOMIC_RELEASE);
        bump(&nv->st.indirection_tables, 1);
        return;
    }
    bump(&nv->st.rx_bad_nvsp, 1);
    rate_limited(nv, "netvsc: queue %u: NVSP %s not expected in-band: ignored", q->index, nvsp_msg_name(m.type));
}

static void on_packet(struct kmcl_channel *ch, struct kmcl_incoming *pkt, const void *buf, uint32_t len,
                      uint32_t flags)
{
    struct netvsc_queue *q = *(struct netvsc_queue **)kmcl_channel_get_pointer_to_client_context(ch);
    if (flags & KMCL_PROCESS_EXTERNAL_DATA) {
        uint32_t status = take_xfer(q, pkt, buf, len);
        uint8_t ack[NVSP_MSG_SIZE_LEGACY];
        uint32_t n = nvsp_build_rndis_pkt_complete(ack, sizeof ack, 0, status);
        kmcl_channel_packet_complete(pkt, ack, n);
        return;
    }
    take_inband(q, buf, len);
    kmcl_channel_packet_complete(pkt, NULL, 0);
}

static void on_batch_done(struct kmcl_channel *ch, uint32_t n)
{
    (void)n;
    struct netvsc_queue *q = *(struct netvsc_queue **)kmcl_channel_get_pointer_to_client_context(ch);
    netdev_rx_done(&q->nv->dev, q->index);
}

/* ---- transmit ---- */

/* The section and the slot go back to the pools. */
static void tx_release(struct tx_slot *t)
{
    struct netvsc_queue *q = t->q;
    struct netvsc *nv = q->nv;
    irql_t old = spin_lock(&nv->sec_lock);
    nv->section_slot[t->section] = NULL;
    nv->free_sections[nv->free_count++] = t->section;
    q->tx_free[q->tx_free_count++] = t;
    spin_unlock(&nv->sec_lock, old);
}

/* A transmit's completion: only its type and status are used, so only those 8 bytes are read
 * (once, from the ring the host shares): SEND_RNDIS_PACKET_COMPLETE with SUCCESS, or an error. */
static bool tx_completion_ok(status_t status, const void *buf, uint32_t len)
{
    uint32_t w[2];
    if (status != STATUS_OK || len < sizeof w || !buf)
        return false;
    memcpy(w, buf, sizeof w);
    return w[0] == NVSP_MSG1_SEND_RNDIS_PACKET_COMPLETE && w[1] == NVSP_STATUS_SUCCESS;
}

static void tx_done(struct kmcl_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    struct tx_slot *t = kmcl_packet_get_context(pkt);
    struct netvsc *nv = t->q->nv;
    if (!tx_completion_ok(status, buf, len))
        bump(&nv->st.tx_host_errors, 1);
    bump(&nv->st.tx_completions, 1);
    tx_release(t);
}

static void big_done(struct kmcl_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    struct big_slot *b = kmcl_packet_get_context(pkt);
    struct netvsc_queue *q = b->q;
    if (!tx_completion_ok(status, buf, len))
        bump(&q->nv->st.tx_host_errors, 1);
    bump(&q->nv->st.tx_completions, 1);
    __atomic_store_n(&b->busy, 0, __ATOMIC_RELEASE);
}

static void *tx_begin(void *drv, uint32_t queue, uint32_t len)
{
    struct netvsc *nv = drv;
    struct netvsc_queue *q = &nv->q[queue % nv->queues];
    if (__builtin_expect(len > tx_limit(&nv->tx_max), 0)) {
        /* gone: nothing reaches the host any more; fail at once */
        bump(is_gone(nv) ? &nv->st.tx_gone : &nv->st.tx_too_big, 1);
        return NULL;
    }
    if (len > tx_limit(&nv->tx_fit)) {
        for (uint32_t i = 0; __atomic_load_n(&q->big_pages, __ATOMIC_ACQUIRE) && i < BIG_SLOTS; i++)
            if (!__atomic_exchange_n(&q->big[i].busy, 1, __ATOMIC_ACQ_REL))
                return q->big[i].buf + RNDIS_HDR;
        bump(&nv->st.tx_no_section, 1);
        return NULL;
    }
    irql_t old = spin_lock(&nv->sec_lock);
    if (!nv->free_count || !q->tx_free_count) {
        spin_unlock(&nv->sec_lock, old);
        bump(&nv->st.tx_no_section, 1);
        return NULL;
    }
    uint32_t sec = nv->free_sections[--nv->free_count];
    struct tx_slot *t = q->tx_free[--q->tx_free_count];
    t->section = sec;
    nv->section_slot[sec] = t;
    spin_unlock(&nv->sec_lock, old);
    return nv->send_buf + (size_t)sec * nv->section_size + RNDIS_HDR;
}

/* A frame in a bounce: GPA direct, one range over the RNDIS header and the frame. */
static status_t tx_end_big(struct netvsc *nv, struct netvsc_queue *q, struct big_slot *b, uint32_t len)
{
    if (is_gone(nv)) {
        bump(&nv->st.tx_gone, 1);
        __atomic_store_n(&b->busy, 0, __ATOMIC_RELEASE);
        return STATUS_CANCELLED;
    }
    uint32_t h = rndis_build_packet(b->buf, RNDIS_HDR, NULL, 0, len);
    uint8_t msg[NVSP_GUEST_MSG_SIZE];
    uint32_t n = nvsp_build_rndis_pkt(msg, sizeof msg, nv->msg_size, NVSP_CHANNEL_TYPE_DATA, NVSP_NO_SECTION, 0);
    uint64_t pfns[8];
    uint32_t pages = (h + len + 4095) / 4096;
    status_t s = h == RNDIS_HDR && n && pages <= q->big_pages && pages <= 8 ? STATUS_OK : STATUS_INVALID_PARAMETER;
    for (uint32_t i = 0; s == STATUS_OK && i < pages; i++)
        pfns[i] = (virt_to_phys(b->buf) >> 12) + i;
    struct kmcl_page_range r = { .byte_count = h + len, .byte_offset = 0, .pfns = pfns };
    if (s == STATUS_OK)
        s = kmcl_packet_send(b->pkt, msg, n, &r, 1, KMCL_SEND_WAIT_FOR_COMPLETION);
    if (s != STATUS_OK) {
        bump(&nv->st.tx_send_failed, 1);
        __atomic_store_n(&b->busy, 0, __ATOMIC_RELEASE);
        return s;
    }
    bump(&nv->st.tx_frames, 1);
    bump(&nv->st.tx_bytes, len);
    bump(&nv->st.tx_gpa_direct, 1);
    return STATUS_OK;
}

static status_t tx_end(void *drv, uint32_t queue, void *frame, uint32_t len)
{
    struct netvsc *nv = drv;
    struct netvsc_queue *q = &nv->q[queue % nv->queues];
    for (uint32_t i = 0; q->big_pages && i < BIG_SLOTS; i++)
        if (frame == q->big[i].buf + RNDIS_HDR)
            return len <= nv->mtu + ETH_HEADER ? tx_end_big(nv, q, &q->big[i], len) : STATUS_INVALID_PARAMETER;
    uintptr_t at = (uintptr_t)frame - (uintptr_t)nv->send_buf;
    uint32_t sec = (uint32_t)(at / nv->section_size);
    if ((uint8_t *)frame < nv->send_buf || sec >= nv->section_count || at % nv->section_size != RNDIS_HDR ||
        !nv->section_slot[sec] || len > tx_limit(&nv->tx_fit)) {
        if (!is_gone(nv) || (uint8_t *)frame < nv->send_buf || sec >= nv->section_count ||
            at % nv->section_size != RNDIS_HDR || !nv->section_slot[sec])
            return STATUS_INVALID_PARAMETER;
        bump(&nv->st.tx_gone, 1); /* gone since tx_begin: the section goes back, nothing is sent */
        tx_release(nv->section_slot[sec]);
        return STATUS_CANCELLED;
    }
    struct tx_slot *t = nv->section_slot[sec];
    uint8_t *hdr = nv->send_buf + (size_t)sec * nv->section_size;
    uint32_t h = rndis_build_packet(hdr, RNDIS_HDR, NULL, 0, len);
    uint8_t msg[NVSP_GUEST_MSG_SIZE];
    uint32_t n = nvsp_build_rndis_pkt(msg, sizeof msg, nv->msg_size, NVSP_CHANNEL_TYPE_DATA, sec, h + len);
    status_t s = h == RNDIS_HDR && n ? kmcl_packet_send(t->pkt, msg, n, NULL, 0, KMCL_SEND_WAIT_FOR_COMPLETION)
                                     : STATUS_INVALID_PARAMETER;
    if (s != STATUS_OK) {
        bump(&nv->st.tx_send_failed, 1);
        tx_release(t); /* never sent: no completion will come */
        return s;
    }
    bump(&nv->st.tx_frames, 1);
    bump(&nv->st.tx_bytes, len);
    return STATUS_OK;
}

/* ---- NVSP requests (PASSIVE) ---- */

/* Sends an NVSP message and waits for the host's completion, checked; *m gets it. */
static status_t nvsp_request(struct netvsc *nv, const void *msg, uint32_t len, uint32_t want_type, struct nvsp_msg *m,
                             const char *what)
{
    uint8_t resp[64];
    uint32_t resp_len = sizeof resp;
    status_t s = is_rescinded(nv) ? STATUS_CANCELLED
                                  : kmcl_channel_send_synchronous_request(nv->q[0].ch, msg, len, NULL, 0, resp,
                                                                          &resp_len, TIMEOUT_NS);
    if (s != STATUS_OK) {
        pr_err("netvsc: %s: no answer from the host (%s)", what,
               is_rescinded(nv) ? "the NIC was rescinded" : status_name(s));
        return s;
    }
    const char *why = NULL;
    if (nvsp_msg_check(resp, resp_len, NVSP_TO_GUEST, m, &why) != STATUS_OK || m->type != want_type) {
        pr_err("netvsc: %s: the host answered with %s", what, why ? why : nvsp_msg_name(m->type));
        return STATUS_BAD_DATA;
    }
    return STATUS_OK;
}

/* An NVSP message the host does not answer (NDIS config and version: PROTOCOL.md steps 2-3). */
static void free_when_sent(struct kmcl_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    (void)status;
    (void)buf;
    (void)len;
    kmcl_packet_free(pkt);
}

static status_t nvsp_oneway(struct netvsc *nv, const void *msg, uint32_t len)
{
    struct kmcl_packet *pkt;
    status_t s = kmcl_packet_allocate(nv->q[0].ch, &pkt);
    if (s != STATUS_OK)
        return s;
    kmcl_packet_set_completion_routine(pkt, free_when_sent);
    s = kmcl_packet_send(pkt, msg, len, NULL, 0, 0);
    if (s != STATUS_OK)
        kmcl_packet_free(pkt);
    return s;
}

static const uint32_t versions[] = { NVSP_VERSION_61, NVSP_VERSION_6, NVSP_VERSION_5,
                                     NVSP_VERSION_4, NVSP_VERSION_2, NVSP_VERSION_1 };

static status_t negotiate(struct netvsc *nv)
{
    for (unsigned i = 0; i < sizeof versions / sizeof versions[0]; i++) {
        uint32_t v = versions[i];
        if (v > nv->cfg.max_nvsp_version)
            continue;
        uint8_t msg[NVSP_GUEST_MSG_SIZE];
        uint32_t n = nvsp_build_init(msg, sizeof msg, NVSP_GUEST_MSG_SIZE, v, v);
        struct nvsp_msg m;
        status_t s = nvsp_request(nv, msg, n, NVSP_MSG_INIT_COMPLETE, &m, "NVSP INIT");
        if (s != STATUS_OK)
            return s;
        if (m.u.init_complete.status == NVSP_STATUS_SUCCESS) {
            nv->nvsp_version = v;
            nv->ndis_version = nvsp_ndis_version_for(v);
            return STATUS_OK;
        }
    }
    pr_err("netvsc: the host accepts no NVSP version up to 0x%x", nv->cfg.max_nvsp_version);
    return STATUS_NOT_SUPPORTED;
}

static status_t send_buffers(struct netvsc *nv)
{
    uint8_t msg[NVSP_GUEST_MSG_SIZE];
    struct nvsp_msg m;
    nv->recv_buf = page_alloc(nv->recv_bytes / 4096);
    nv->send_buf = page_alloc(nv->send_bytes / 4096);
    if (!nv->recv_buf || !nv->send_buf)
        return STATUS_NO_MEMORY;
    status_t s = kmcl_channel_create_gpadl_from_buffer(nv->q[0].ch, nv->recv_buf, nv->recv_bytes, &nv->recv_gpadl);
    if (s != STATUS_OK)
        return s;
    uint32_t n = nvsp_build_send_recv_buf(msg, sizeof msg, NVSP_GUEST_MSG_SIZE, nv->recv_gpadl, NVSP_RECV_BUF_ID);
    s = nvsp_request(nv, msg, n, NVSP_MSG1_SEND_RECEIVE_BUFFER_COMPLETE, &m, "SEND_RECEIVE_BUFFER");
    if (s != STATUS_OK)
        return s;
    nv->recv_sent = true;
    __atomic_store_n(&nv->recv_ready, true, __ATOMIC_RELEASE); /* transfer pages are taken from now */
    if (m.u.recv_buf_complete.status != NVSP_STATUS_SUCCESS || m.u.recv_buf_complete.num_sections != 1 ||
        !nvsp_recv_section_fits(&m.u.recv_buf_complete.sections[0], nv->recv_bytes)) {
        pr_err("netvsc: the host refused the %u-byte receive buffer (status %u, %u sections)", nv->recv_bytes,
               m.u.recv_buf_complete.status, m.u.recv_buf_complete.num_sections);
        return STATUS_DEVICE_ERROR;
    }
    s = kmcl_channel_create_gpadl_from_buffer(nv->q[0].ch, nv->send_buf, nv->send_bytes, &nv->send_gpadl);
    if (s != STATUS_OK)
        return s;
    n = nvsp_build_send_send_buf(msg, sizeof msg, NVSP_GUEST_MSG_SIZE, nv->send_gpadl, NVSP_SEND_BUF_ID);
    s = nvsp_request(nv, msg, n, NVSP_MSG1_SEND_SEND_BUFFER_COMPLETE, &m, "SEND_SEND_BUFFER");
    if (s != STATUS_OK)
        return s;
    nv->send_sent = true;
    uint32_t size = m.u.send_buf_complete.section_size;
    if (m.u.send_buf_complete.status != NVSP_STATUS_SUCCESS || size < RNDIS_HDR + ETH_MIN || size % 4 ||
        size > nv->send_bytes) {
        pr_err("netvsc: the host refused the send buffer (status %u, section size %u)", m.u.send_buf_complete.status,
               size);
        return STATUS_DEVICE_ERROR;
    }
    nv->section_size = size;
    nv->section_count = nv->send_bytes / size;
    nv->free_sections = kmalloc(nv->section_count * sizeof *nv->free_sections);
    nv->section_slot = kzalloc(nv->section_count * sizeof *nv->section_slot);
    if (!nv->free_sections || !nv->section_slot)
        return STATUS_NO_MEMORY;
    for (uint32_t i = 0; i < nv->section_count; i++)
        nv->free_sections[i] = nv->section_count - 1 - i;
    nv->free_count = nv->section_count;
    return STATUS_OK;
}

/* ---- RNDIS control requests (PASSIVE, one at a time) ---- */

/* Sends the RNDIS message built in ctrl_page (len bytes, request id `id`) and waits for its answer
 * of type want; the answer's status and info are in ctrl_status / ctrl_resp. */
static status_t rndis_request(struct netvsc *nv, uint32_t len, uint32_t id, uint32_t want, const char *what)
{
    if (is_rescinded(nv))
        return STATUS_CANCELLED;
    event_reset(&nv->ctrl_done);
    __atomic_store_n(&nv->ctrl_request_id, id, __ATOMIC_RELEASE);
    uint8_t msg[NVSP_GUEST_MSG_SIZE];
    uint32_t n = nvsp_build_rndis_pkt(msg, sizeof msg, NVSP_GUEST_MSG_SIZE, NVSP_CHANNEL_TYPE_CONTROL, NVSP_NO_SECTION,
                                      0);
    uint64_t pfn = virt_to_phys(nv->ctrl_page) >> 12;
    struct kmcl_page_range r = { .byte_count = len, .byte_offset = 0, .pfns = &pfn };
    uint8_t resp[64];
    uint32_t resp_len = sizeof resp;
    status_t s = kmcl_channel_send_synchronous_request(nv->q[0].ch, msg, n, &r, 1, resp, &resp_len, TIMEOUT_NS);
    struct nvsp_msg m;
    const char *why = NULL;
    if (s == STATUS_OK && (nvsp_msg_check(resp, resp_len, NVSP_TO_GUEST, &m, &why) != STATUS_OK ||
                           m.type != NVSP_MSG1_SEND_RNDIS_PACKET_COMPLETE ||
                           m.u.rndis_pkt_complete.status != NVSP_STATUS_SUCCESS))
        s = STATUS_DEVICE_ERROR;
    if (s == STATUS_OK)
        s = event_wait(&nv->ctrl_done, TIMEOUT_NS);
    if (s == STATUS_OK && is_rescinded(nv))
        s = STATUS_CANCELLED; /* woken by the rescind, or the answer is moot */
    uint32_t armed = id;
    if (!__atomic_compare_exchange_n(&nv->ctrl_request_id, &armed, 0, false, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE) &&
        s != STATUS_OK) /* a DPC claimed the answer just now: it is being written; take it */
        s = event_wait(&nv->ctrl_done, TIMEOUT_NS);
    if (s != STATUS_OK) {
        pr_err("netvsc: RNDIS %s: %s", what,
               is_rescinded(nv)       ? "the NIC was rescinded"
               : s == STATUS_TIMEOUT ? "no answer from the host in 5 s"
                                     : status_name(s));
        return s;
    }
    if (nv->ctrl_type != want || nv->ctrl_status != RNDIS_STATUS_SUCCESS) {
        pr_err("netvsc: RNDIS %s: the host answered %s with status 0x%x", what, rndis_msg_name(nv->ctrl_type),
               nv->ctrl_status);
        return STATUS_DEVICE_ERROR;
    }
    return STATUS_OK;
}

static status_t rndis_query(struct netvsc *nv, uint32_t oid, void *out, uint32_t size, const char *what)
{
    uint32_t id = ++nv->next_request_id;
    uint32_t n = rndis_build_query(nv->ctrl_page, 4096, id, oid, NULL, 0);
    status_t s = n ? rndis_request(nv, n, id, RNDIS_MSG_QUERY_CMPLT, what) : STATUS_INVALID_PARAMETER;
    if (s != STATUS_OK)
        return s;
    if (nv->ctrl_resp_len < size) {
        pr_err("netvsc: RNDIS query %s: %u bytes, %u expected", what, nv->ctrl_resp_len, size);
        return STATUS_BAD_DATA;
    }
    memcpy(out, nv->ctrl_resp, size);
    return STATUS_OK;
}

static status_t rndis_set_u32(struct netvsc *nv, uint32_t oid, uint32_t value, const char *what)
{
    uint32_t id = ++nv->next_request_id;
    uint32_t n = rndis_build_set(nv->ctrl_page, 4096, id, oid, &value, sizeof value);
    return n ? rndis_request(nv, n, id, RNDIS_MSG_SET_CMPLT, what) : STATUS_INVALID_PARAMETER;
}

static status_t rndis_start(struct netvsc *nv)
{
    uint32_t id = ++nv->next_request_id;
    uint32_t n = rndis_build_init(nv->ctrl_page, 4096, id, 0x4000);
    status_t s = n ? rndis_request(nv, n, id, RNDIS_MSG_INITIALIZE_CMPLT, "INITIALIZE") : STATUS_INVALID_PARAMETER;
    if (s != STATUS_OK)
        return s;
    if ((s = rndis_query(nv, RNDIS_OID_802_3_PERMANENT_ADDRESS, nv->mac, 6, "MAC address")) != STATUS_OK)
        return s;
    uint32_t frame = 0, speed = 0, media = 0;
    if ((s = rndis_query(nv, RNDIS_OID_GEN_MAXIMUM_FRAME_SIZE, &frame, 4, "maximum frame size")) != STATUS_OK)
        return s;
    if (frame < 576 || frame > 9216) {
        pr_err("netvsc: the host reports a maximum frame size of %u", frame);
        return STATUS_BAD_DATA;
    }
    nv->mtu = frame < nv->cfg.mtu ? frame : nv->cfg.mtu;
    if ((s = rndis_query(nv, RNDIS_OID_GEN_LINK_SPEED, &speed, 4, "link speed")) != STATUS_OK)
        return s;
    nv->link_speed_bps = (uint64_t)speed * 100;
    if ((s = rndis_query(nv, RNDIS_OID_GEN_MEDIA_CONNECT_STATUS, &media, 4, "media state")) != STATUS_OK)
        return s;
    __atomic_store_n(&nv->link_up, media == RNDIS_MEDIA_STATE_CONNECTED, __ATOMIC_RELEASE);
    return rndis_set_u32(nv, RNDIS_OID_GEN_CURRENT_PACKET_FILTER,
                         RNDIS_PACKET_TYPE_DIRECTED | RNDIS_PACKET_TYPE_BROADCAST, "packet filter");
}

status_t netvsc_keepalive(struct netvsc *nv)
{
    mutex_lock(&nv->ctrl_mutex);
    uint32_t id = ++nv->next_request_id;
    uint32_t n = rndis_build_keepalive(nv->ctrl_page, 4096, id);
    status_t s = n ? rndis_request(nv, n, id, RNDIS_MSG_KEEPALIVE_CMPLT, "KEEPALIVE") : STATUS_INVALID_PARAMETER;
    mutex_unlock(&nv->ctrl_mutex);
    if (s == STATUS_OK)
        bump(&nv->st.keepalives, 1);
    return s;
}

/* ---- channels ---- */

static status_t open_big(struct netvsc *nv, struct netvsc_queue *q)
{
    uint32_t need = RNDIS_HDR + nv->mtu + ETH_HEADER;
    if (need <= nv->section_size)
        return STATUS_OK;
    uint32_t pages = (need + 4095) / 4096;
    for (uint32_t i = 0; i < BIG_SLOTS; i++) {
        struct big_slot *b = &q->big[i];
        b->q = q;
        b->pages = pages;
        b->buf = page_alloc(pages);
        if (!b->buf)
            return STATUS_NO_MEMORY;
        status_t s = kmcl_packet_allocate(q->ch, &b->pkt);
        if (s != STATUS_OK)
            return s;
        kmcl_packet_set_context(b->pkt, b);
        kmcl_packet_set_completion_routine(b->pkt, big_done);
    }
    __atomic_store_n(&q->big_pages, pages, __ATOMIC_RELEASE); /* last: tx_begin uses them once all are there */
    return STATUS_OK;
}

static status_t open_queue(struct netvsc *nv, uint32_t i, struct vmbus_channel *vch)
{
    struct netvsc_queue *q = &nv->q[i];
    q->nv = nv;
    q->index = i;
    q->vch = vch;
    q->cpu = cpu_count ? (nv->cfg.first_cpu + i) % cpu_count : 0;
    status_t s = kmcl_channel_allocate(vch, &q->ch);
    if (s != STATUS_OK)
        return s;
    struct kmcl_channel *ch = q->ch;
    s = kmcl_channel_init_set_client_context_size(ch, sizeof q);
    if (s == STATUS_OK) {
        *(struct netvsc_queue **)kmcl_channel_get_pointer_to_client_context(ch) = q;
        s = kmcl_channel_init_set_friendly_name(ch, i ? "netvsc-sub" : "netvsc");
    }
    if (s == STATUS_OK)
        s = kmcl_channel_init_set_process_packet_callbacks(ch, on_packet, on_batch_done);
    if (s == STATUS_OK)
        s = kmcl_channel_init_set_maximum_packet_size(ch, 256);
    if (s == STATUS_OK)
        s = kmcl_channel_init_set_ring_buffer_page_count(ch, nv->cfg.ring_pages, nv->cfg.ring_pages);
    if (s == STATUS_OK)
        s = kmcl_channel_init_set_target_cpu(ch, q->cpu);
    if (s == STATUS_OK)
        s = kmcl_channel_enable(ch);
    for (uint32_t k = 0; s == STATUS_OK && k < TX_PACKETS; k++) {
        q->slots[k].q = q;
        s = kmcl_packet_allocate(ch, &q->slots[k].pkt);
        if (s == STATUS_OK) {
            kmcl_packet_set_context(q->slots[k].pkt, &q->slots[k]);
            kmcl_packet_set_completion_routine(q->slots[k].pkt, tx_done);
            q->tx_free[q->tx_free_count++] = &q->slots[k];
        }
    }
    /* Jumbo frames that do not fit a section (known once the send buffer is in: queues opened
     * later; the primary gets its bounce in attach). */
    if (s == STATUS_OK && nv->section_size)
        s = open_big(nv, q);
    if (s != STATUS_OK)
        pr_err("netvsc: queue %u (relid %u): not opened: %s", i, vmbus_channel_relid(vch), status_name(s));
    return s;
}

static void close_queue(struct netvsc_queue *q)
{
    if (!q->ch)
        return;
    kmcl_channel_disable(q->ch); /* frames in flight: their routines see STATUS_CANCELLED */
    for (uint32_t k = 0; k < TX_PACKETS; k++)
        kmcl_packet_free(q->slots[k].pkt);
    for (uint32_t i = 0; i < BIG_SLOTS; i++) {
        kmcl_packet_free(q->big[i].pkt);
        if (q->big[i].buf)
            page_free(q->big[i].buf, q->big[i].pages);
        q->big[i].pkt = NULL;
        q->big[i].buf = NULL;
    }
    q->big_pages = 0;
    kmcl_channel_cleanup(q->ch);
    q->ch = NULL;
}

/* The Toeplitz key Microsoft publishes with its RSS verification suite (the usual default). */
static const uint8_t rss_key[NDIS_RSS_KEY_SIZE] = {
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3,
    0x8f, 0xb0, 0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3,
    0x80, 0x30, 0xf2, 0x0c, 0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
};

/* RSS over the open queues: Toeplitz on IPv4 (TCP and UDP 4-tuples), the indirection table spread
 * round-robin. PASSIVE, ctrl_mutex held. */
static status_t set_rss(struct netvsc *nv)
{
    uint8_t info[sizeof(struct ndis_rss_params) + 4 * NDIS_RSS_TABLE_MAX + NDIS_RSS_KEY_SIZE]; /* PASSIVE stack */
    struct ndis_rss_params p = {
        .type = NDIS_OBJECT_TYPE_RSS_PARAMETERS,
        .revision = NDIS_RSS_PARAMS_REVISION_2,
        .size = sizeof p,
        .hash_info = NDIS_RSS_HASH_FUNCTION_TOEPLITZ | NDIS_RSS_HASH_IPV4 | NDIS_RSS_HASH_TCP_IPV4 |
                     NDIS_RSS_HASH_UDP_IPV4,
        .table_size = 4 * NDIS_RSS_TABLE_MAX,
        .table_offset = sizeof p,
        .key_size = NDIS_RSS_KEY_SIZE,
        .key_offset = sizeof p + 4 * NDIS_RSS_TABLE_MAX,
    };
    memcpy(info, &p, sizeof p);
    for (uint32_t i = 0; i < NDIS_RSS_TABLE_MAX; i++) {
        uint32_t q = i % nv->queues;
        memcpy(info + sizeof p + 4 * i, &q, 4);
    }
    memcpy(info + p.key_offset, rss_key, sizeof rss_key);
    uint32_t id = ++nv->next_request_id;
    uint32_t n = rndis_build_set(nv->ctrl_page, 4096, id, RNDIS_OID_GEN_RECEIVE_SCALE_PARAMETERS, info, sizeof info);
    return n ? rndis_request(nv, n, id, RNDIS_MSG_SET_CMPLT, "RSS parameters") : STATUS_INVALID_PARAMETER;
}

/* vRSS: sub-channels from NVSP 5 on, one queue per CPU, then RSS over them. */
static void open_sub_channels(struct netvsc *nv, struct vmbus_channel *primary)
{
    uint32_t want = nv->cfg.queues ? nv->cfg.queues : cpu_count;
    if (want > NETVSC_MAX_QUEUES)
        want = NETVSC_MAX_QUEUES;
    if (want <= 1 || nv->nvsp_version < NVSP_VERSION_5)
        return;
    uint8_t msg[NVSP_GUEST_MSG_SIZE];
    uint32_t n = nvsp_build_subchannel_req(msg, sizeof msg, NVSP_GUEST_MSG_SIZE, want - 1);
    struct nvsp_msg m;
    if (nvsp_request(nv, msg, n, NVSP_MSG5_SUB_CHANNEL, &m, "SUB_CHANNEL") != STATUS_OK)
        return;
    uint32_t granted = m.u.subchannel_complete.num_subchannels;
    if (m.u.subchannel_complete.status != NVSP_STATUS_SUCCESS || granted == 0) {
        pr_info("netvsc: the host grants no sub-channels (status %u): one queue", m.u.subchannel_complete.status);
        return;
    }
    if (granted > want - 1)
        granted = want - 1;
    struct vmbus_channel *subs[NETVSC_MAX_QUEUES];
    if (vmbus_channel_wait_sub_channels(primary, granted, subs) != STATUS_OK) {
        pr_warn("netvsc: the host granted %u sub-channels but did not offer them: one queue", granted);
        return;
    }
    for (uint32_t i = 0; i < granted; i++) {
        if (open_queue(nv, i + 1, subs[i]) != STATUS_OK) {
            close_queue(&nv->q[i + 1]); /* enabled or not: nothing of it stays */
            break;
        }
        nv->queues = i + 2;
    }
    for (uint32_t i = 0; i < granted; i++)
        vmbus_channel_release(subs[i]); /* held by the wait; an open queue's kmcl channel holds its own */
    if (nv->queues > 1) {
        mutex_lock(&nv->ctrl_mutex);
        status_t s = set_rss(nv);
        mutex_unlock(&nv->ctrl_mutex);
        if (s != STATUS_OK) /* the host spreads frames its own way then; every queue still works */
            pr_warn("netvsc: RSS parameters not taken (%s): the host chooses the queues", status_name(s));
        else
            nv->rss = true;
    }
}

static void detach(struct netvsc *nv);

/* The channel's NIC (bind_lock held), or NULL. */
static void bind_channel(struct vmbus_channel *ch, struct netvsc *nv)
{
    irql_t old = spin_lock(&bind_lock);
    vmbus_channel_set_driver_context(ch, nv);
    spin_unlock(&bind_lock, old);
}

/* The whole handshake (PASSIVE); on failure nothing of it stays. */
static status_t attach(struct vmbus_channel *primary, const struct netvsc_config *cfg, struct netvsc **out)
{
    struct netvsc *nv = kzalloc(sizeof *nv);
    if (!nv)
        return STATUS_NO_MEMORY;
    nv->cfg = *cfg;
    nv->q[0].vch = primary;
    bind_channel(primary, nv); /* a rescind from now on marks it gone: the next step fails at once */
    if (!nv->cfg.max_nvsp_version)
        nv->cfg.max_nvsp_version = NVSP_VERSION_61;
    if (!nv->cfg.recv_buf_bytes)
        nv->cfg.recv_buf_bytes = DEFAULT_RECV_BYTES;
    if (!nv->cfg.send_buf_bytes)
        nv->cfg.send_buf_bytes = DEFAULT_SEND_BYTES;
    if (!nv->cfg.ring_pages)
        nv->cfg.ring_pages = DEFAULT_RING_PAGES;
    if (!nv->cfg.mtu)
        nv->cfg.mtu = DEFAULT_MTU;
    nv->recv_bytes = nv->cfg.recv_buf_bytes & ~4095u;
    nv->send_bytes = nv->cfg.send_buf_bytes & ~4095u;
    nv->mtu = nv->cfg.mtu;
    nv->msg_size = NVSP_GUEST_MSG_SIZE;
    nv->queues = 1;
    mutex_init(&nv->ctrl_mutex);
    event_init(&nv->ctrl_done, EVENT_NOTIFICATION, false);
    nv->ctrl_page = page_alloc(1);
    status_t s = nv->ctrl_page ? open_queue(nv, 0, primary) : STATUS_NO_MEMORY;
    if (s == STATUS_OK)
        s = negotiate(nv);
    if (s == STATUS_OK && nv->nvsp_version >= NVSP_VERSION_2) {
        uint8_t msg[NVSP_GUEST_MSG_SIZE];
        uint32_t n = nvsp_build_ndis_config(msg, sizeof msg, NVSP_GUEST_MSG_SIZE, nv->mtu + ETH_HEADER, 0);
        s = nvsp_oneway(nv, msg, n);
    }
    if (s == STATUS_OK) {
        uint8_t msg[NVSP_GUEST_MSG_SIZE];
        uint32_t n = nvsp_build_ndis_version(msg, sizeof msg, NVSP_GUEST_MSG_SIZE, nv->ndis_version);
        s = nvsp_oneway(nv, msg, n);
    }
    if (s == STATUS_OK)
        s = send_buffers(nv);
    if (s == STATUS_OK) {
        mutex_lock(&nv->ctrl_mutex);
        s = rndis_start(nv);
        mutex_unlock(&nv->ctrl_mutex);
    }
    if (s == STATUS_OK) /* the MTU is final now: the primary's jumbo bounces (sub-channels get theirs at open) */
        s = open_big(nv, &nv->q[0]);
    irql_t old = spin_lock(&bind_lock); /* against a rescind marking it gone meanwhile */
    if (s == STATUS_OK && !is_gone(nv)) { /* transmits work from here on */
        __atomic_store_n(&nv->tx_fit, nv->section_size - RNDIS_HDR, __ATOMIC_RELAXED);
        __atomic_store_n(&nv->tx_max, nv->mtu + ETH_HEADER, __ATOMIC_RELAXED);
    }
    spin_unlock(&bind_lock, old);
    if (s != STATUS_OK) {
        bind_channel(primary, NULL);
        detach(nv);
        return s;
    }
    open_sub_channels(nv, primary);
    pr_info("netvsc: NVSP %u.%u, NDIS %u.%u, MAC %02x:%02x:%02x:%02x:%02x:%02x, MTU %u, link %s %llu Mbit/s, "
            "%u queue%s%s, receive buffer %u KiB, send buffer %u x %u bytes",
            NVSP_VERSION_MAJOR(nv->nvsp_version), NVSP_VERSION_MINOR(nv->nvsp_version), nv->ndis_version >> 16,
            nv->ndis_version & 0xFFFF, nv->mac[0], nv->mac[1], nv->mac[2], nv->mac[3], nv->mac[4], nv->mac[5],
            nv->mtu, nv->link_up ? "up" : "down", (unsigned long long)(nv->link_speed_bps / 1000000), nv->queues,
            nv->queues == 1 ? "" : "s", nv->rss ? " (RSS)" : "", nv->recv_bytes / 1024, nv->section_count, nv->section_size);
    *out = nv;
    return STATUS_OK;
}

/* RNDIS HALT, buffers revoked (unless the NIC was rescinded: nobody would answer), channels
 * closed. PASSIVE, once; the memory stays (see detach). */
static void quiesce(struct netvsc *nv)
{
    if (nv->quiesced)
        return;
    nv->quiesced = true;
    if (nv->q[0].ch && !kmcl_channel_failed(nv->q[0].ch) && !is_rescinded(nv)) {
        uint8_t msg[NVSP_GUEST_MSG_SIZE];
        if (nv->recv_sent && nv->ctrl_page) { /* HALT: no RNDIS answer ("rely on the NVS completion") */
            uint32_t n = rndis_build_halt(nv->ctrl_page, 4096, ++nv->next_request_id);
            uint32_t m = nvsp_build_rndis_pkt(msg, sizeof msg, NVSP_GUEST_MSG_SIZE, NVSP_CHANNEL_TYPE_CONTROL,
                                              NVSP_NO_SECTION, 0);
            uint64_t pfn = virt_to_phys(nv->ctrl_page) >> 12;
            struct kmcl_page_range r = { .byte_count = n, .byte_offset = 0, .pfns = &pfn };
            uint8_t resp[64];
            uint32_t resp_len = sizeof resp;
            if (n && m)
                (void)!kmcl_channel_send_synchronous_request(nv->q[0].ch, msg, m, &r, 1, resp, &resp_len, TIMEOUT_NS);
        }
        if (nv->send_sent) {
            uint32_t n = nvsp_build_revoke_send_buf(msg, sizeof msg, NVSP_GUEST_MSG_SIZE, NVSP_SEND_BUF_ID);
            (void)!nvsp_oneway(nv, msg, n);
        }
        if (nv->recv_sent) {
            uint32_t n = nvsp_build_revoke_recv_buf(msg, sizeof msg, NVSP_GUEST_MSG_SIZE, NVSP_RECV_BUF_ID);
            (void)!nvsp_oneway(nv, msg, n);
        }
    }
    for (uint32_t i = NETVSC_MAX_QUEUES; i-- > 1;)
        close_queue(&nv->q[i]);
    /* The GPADLs go before the primary closes (they belong to it). */
    if (nv->q[0].ch) {
        /* The host may still hold a buffer whose teardown failed: never reused (vmbus counts it).
         * The pointers stay: the queue's DPC may still be reading until close_queue. */
        if (nv->send_gpadl && kmcl_channel_delete_gpadl(nv->q[0].ch, nv->send_gpadl) != STATUS_OK)
            nv->leak_send = true;
        if (nv->recv_gpadl && kmcl_channel_delete_gpadl(nv->q[0].ch, nv->recv_gpadl) != STATUS_OK)
            nv->leak_recv = true;
    }
    close_queue(&nv->q[0]);
}

/* quiesce, then everything freed. PASSIVE. */
static void detach(struct netvsc *nv)
{
    quiesce(nv);
    if (nv->recv_buf && !nv->leak_recv)
        page_free(nv->recv_buf, nv->recv_bytes / 4096);
    if (nv->send_buf && !nv->leak_send)
        page_free(nv->send_buf, nv->send_bytes / 4096);
    if (nv->ctrl_page)
        page_free(nv->ctrl_page, 1);
    kfree(nv->free_sections);
    kfree(nv->section_slot);
    kfree(nv);
}

/* ---- getters ---- */

void netvsc_get_mac(const struct netvsc *nv, uint8_t mac[6]) { memcpy(mac, nv->mac, 6); }
uint32_t netvsc_mtu(const struct netvsc *nv) { return nv->mtu; }
bool netvsc_link_up(const struct netvsc *nv) { return __atomic_load_n(&nv->link_up, __ATOMIC_ACQUIRE); }
bool netvsc_gone(const struct netvsc *nv) { return __atomic_load_n(&nv->rescinded, __ATOMIC_ACQUIRE); }
uint64_t netvsc_link_speed_bps(const struct netvsc *nv) { return nv->link_speed_bps; }
uint32_t netvsc_queue_count(const struct netvsc *nv) { return nv->queues; }
uint32_t netvsc_queue_cpu(const struct netvsc *nv, uint32_t queue) { return nv->q[queue % nv->queues].cpu; }
uint64_t netvsc_queue_rx_frames(const struct netvsc *nv, uint32_t queue)
{
    return __atomic_load_n(&nv->q[queue % nv->queues].rx_frames, __ATOMIC_RELAXED);
}
bool netvsc_rss_enabled(const struct netvsc *nv) { return nv->rss; }
uint32_t netvsc_nvsp_version(const struct netvsc *nv) { return nv->nvsp_version; }
uint32_t netvsc_ndis_version(const struct netvsc *nv) { return nv->ndis_version; }

void netvsc_get_stats(const struct netvsc *nv, struct netvsc_stats *out)
{
    _Static_assert(sizeof *out % sizeof(uint64_t) == 0, "the stats are u64 counters");
    const uint64_t *from = (const uint64_t *)&nv->st;
    uint64_t *to = (uint64_t *)out;
    for (size_t i = 0; i < sizeof *out / sizeof(uint64_t); i++)
        to[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
}

/* ---- the network device (kernel/netdev.h) ---- */

static void nd_get_stats(void *drv, struct netdev_stats *out)
{
    struct netvsc_stats st;
    netvsc_get_stats(drv, &st);
    *out = (struct netdev_stats){
        .rx_frames = st.rx_frames,
        .rx_bytes = st.rx_bytes,
        .tx_frames = st.tx_frames,
        .tx_bytes = st.tx_bytes,
        .rx_errors = st.rx_bad_range + st.rx_bad_rndis + st.rx_bad_nvsp + st.rx_bad_frame,
        .tx_no_buffer = st.tx_no_section,
        .tx_errors = st.tx_send_failed,
        .checks = st.keepalives,
    };
}

static uint64_t nd_queue_rx_frames(void *drv, uint32_t queue) { return netvsc_queue_rx_frames(drv, queue); }
static status_t nd_check(void *drv) { return netvsc_keepalive(drv); }
static void nd_release(struct netdev *dev);

static const struct netdev_ops netdev_ops = {
    .tx_begin = tx_begin,
    .tx_end = tx_end,
    .get_stats = nd_get_stats,
    .queue_rx_frames = nd_queue_rx_frames,
    .check = nd_check,
    .release = nd_release,
};

struct netvsc *netvsc_from_netdev(struct netdev *dev)
{
    return dev && dev->ops == &netdev_ops ? dev->drv : NULL;
}

/* ---- configuration ---- */

static struct netvsc_config configured;
static bool have_configured;

void netvsc_configure(const struct netvsc_config *cfg)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    have_configured = cfg != NULL;
    configured = cfg ? *cfg : (struct netvsc_config){ 0 };
}

static uint32_t nvsp_version_key(uint64_t v)
{
    switch (v) {
    case 1: return NVSP_VERSION_1;
    case 2: return NVSP_VERSION_2;
    case 4: return NVSP_VERSION_4;
    case 5: return NVSP_VERSION_5;
    case 6: return NVSP_VERSION_6;
    default: return NVSP_VERSION_61;
    }
}

void netvsc_config_from_cmdline(const struct cmdline *cl, struct netvsc_config *cfg)
{
    *cfg = (struct netvsc_config){
        .max_nvsp_version = nvsp_version_key(cmdline_u64(cl, "nvsp", 61, 1, 61)),
        .recv_buf_bytes = (uint32_t)cmdline_u64(cl, "rxbuf", 4096, 64, 16384) * 1024,
        .queues = (uint32_t)cmdline_u64(cl, "queues", 0, 0, NETVSC_MAX_QUEUES),
    };
}

/* ---- the VMBus driver ---- */

/* Power-off (PASSIVE, before the bus unloads): every NIC still bound is halted and its channels
 * closed, so nothing of it runs while the bus goes down; then freed if nobody holds it. A holder
 * (an application that returned without net_detach) may still look at it: it is gone for it, and
 * its memory is left allocated rather than pulled from under it. */
static void shutdown_hook(void)
{
    hook_registered = false; /* power-off consumes the hooks: the next probe registers anew */
    if (irql_current() != IRQL_PASSIVE)
        return; /* a panic: touch nothing */
    for (;;) {
        irql_t old = spin_lock(&bind_lock);
        struct list *n = list_pop_front(&bound);
        struct netvsc *nv = n ? container_of(n, struct netvsc, link) : NULL;
        if (nv) {
            nv->removing = true;
            mark_gone(nv);
            /* unbound first: closing a rescinded channel frees it, and a rescind from now on
             * finds nothing to do */
            vmbus_channel_set_driver_context(nv->q[0].vch, NULL);
        }
        spin_unlock(&bind_lock, old);
        if (!nv)
            return;
        netdev_gone(&nv->dev);
        quiesce(nv);
        if (netdev_try_unregister(&nv->dev))
            detach(nv); /* nobody refers to it: freed (the channels are closed already) */
    }
}

static status_t drv_probe(struct vmbus_channel *ch)
{
    struct netvsc_config cfg;
    if (have_configured)
        cfg = configured;
    else
        netvsc_config_from_cmdline(kernel_cmdline(), &cfg);
    struct netvsc *nv = NULL;
    status_t s = attach(ch, &cfg, &nv);
    if (s != STATUS_OK) {
        pr_err("netvsc: the network adapter did not come up: %s", status_name(s));
        return s;
    }
    struct netdev *dev = &nv->dev;
    dev->ops = &netdev_ops;
    dev->drv = nv;
    dev->driver = "netvsc";
    memcpy(dev->mac, nv->mac, 6);
    dev->mtu = nv->mtu;
    dev->queues = nv->queues;
    for (uint32_t i = 0; i < nv->queues; i++)
        dev->queue_cpu[i] = nv->q[i].cpu;
    dev->link_speed_bps = nv->link_speed_bps;
    dev->link_up = netvsc_link_up(nv);
    s = netdev_register(dev);
    if (s != STATUS_OK) {
        pr_err("netvsc: the network device was not registered: %s", status_name(s));
        bind_channel(ch, NULL);
        detach(nv);
        return s;
    }
    if (!hook_registered) { /* after the bus's (vmbus_init): so it runs before the bus unloads */
        power_register_shutdown_hook(shutdown_hook);
        hook_registered = true;
    }
    irql_t old = spin_lock(&bind_lock);
    nv->registered = true;
    list_push_back(&bound, &nv->link);
    bool gone = is_rescinded(nv); /* rescinded before it was registered: tell the registry now */
    spin_unlock(&bind_lock, old);
    if (gone)
        netdev_gone(dev);
    return STATUS_OK;
}

/* DISPATCH, from the bus: the host withdrew the NIC. */
static void drv_rescind(struct vmbus_channel *ch)
{
    irql_t old = spin_lock(&bind_lock);
    struct netvsc *nv = vmbus_channel_driver_context(ch);
    if (nv && !nv->rescinded) {
        mark_gone(nv);
        __atomic_store_n(&nv->rescinded, true, __ATOMIC_RELEASE);
        event_set(&nv->ctrl_done); /* a control request waiting for its RNDIS answer gives up now */
        /* kmcl ends what is queued or in flight on every queue with STATUS_CANCELLED (a keep-alive's
         * NVSP request no longer waits out its timeout). The queues are torn down only after the
         * NIC is unbound under bind_lock, so none is cleaned up meanwhile (kmcl/channel.h). */
        for (uint32_t i = 0; i < nv->queues; i++)
            if (nv->q[i].ch)
                kmcl_channel_rescind(nv->q[i].ch);
        pr_warn("netvsc: the host rescinded the network adapter (relid %u): it is gone", vmbus_channel_relid(ch));
        if (nv->registered)
            netdev_gone(&nv->dev); /* the holder hears it (DISPATCH) and closes it */
    }
    spin_unlock(&bind_lock, old);
}

/* PASSIVE, from the registry: gone (rescinded) and nobody holds it any more. */
static void nd_release(struct netdev *dev)
{
    struct netvsc *nv = dev->drv;
    irql_t old = spin_lock(&bind_lock);
    bool mine = !nv->removing; /* else remove (or the power-off hook) is tearing it down */
    if (mine) {
        nv->releasing = true;
        vmbus_channel_set_driver_context(nv->q[0].vch, NULL);
        list_remove(&nv->link);
    }
    spin_unlock(&bind_lock, old);
    if (mine)
        detach(nv); /* closing the rescinded channels releases their relids */
}

/* PASSIVE, from the bus (vmbus_driver_unregister). */
static void drv_remove(struct vmbus_channel *ch)
{
    irql_t old = spin_lock(&bind_lock);
    struct netvsc *nv = vmbus_channel_driver_context(ch);
    bool mine = nv && !nv->releasing && !nv->removing;
    if (mine) {
        nv->removing = true;
        mark_gone(nv); /* the holder's transmits fail from now */
        list_remove(&nv->link);
    }
    spin_unlock(&bind_lock, old);
    if (!mine)
        return;
    netdev_unregister(&nv->dev); /* the holder is told and closes; then nobody refers to it */
    bind_channel(ch, NULL);
    detach(nv);
}

const struct vmbus_driver netvsc_driver = {
    .name = "netvsc",
    .type = VMBUS_GUID_NIC,
    .probe = drv_probe,
    .remove = drv_remove,
    .rescind = drv_rescind,
};
VMBUS_DRIVER(netvsc_driver);
