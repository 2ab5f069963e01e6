/*
 * netvsp: the host side of the synthetic NIC (contract and behaviour: sim/netvsp/netvsp.h; the protocol:
 * drivers/netvsc/proto/PROTOCOL.md). Every NVSP and RNDIS byte is checked with the shared checkers
 * (drivers/netvsc/proto/nvsp_msg.h, rndis_msg.h) and every answer built with the shared builders.
 *
 * State: one session per open primary channel (struct session: the negotiated version, the NDIS
 * config, the receive buffer, the send buffer, RNDIS, the packet filter, RSS, pending control
 * answers) and one struct nv_queue per open channel (the kmcl server channel's client context),
 * indexed by sub-channel index. The receive buffer is a refcounted struct rbuf: the session holds
 * one reference, every transfer-page packet in flight one, so a revoke or a close never frees
 * pages a packet still names.
 *
 * Locks (netvsp.h): kmcl's channel lock, then nv->lock (a leaf: no kmcl call with it held).
 * nv->log_lock only orders log lines.
 */
#include "sim/netvsp/netvsp.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "drivers/netvsc/proto/nvsp_msg.h"
#include "drivers/netvsc/proto/rndis_msg.h"
#include "sim/kmcl/server.h"
#include "sim/vmbus_internal.h" /* the channel's model (guest memory) and server (sub-channel offers) */
#include "sim/vsp/vsp.h"

#define PAGE 4096u
#define RX_HEADER_LEN 256u   /* openvmm buffers.rs RX_HEADER_LEN: the frame starts here */
#define RX_FOOTER_LEN 36u    /* openvmm BROKEN_CO_NETVSC_FOOTER_LEN: never used */
#define DEFAULT_NDIS_MTU 1514u /* openvmm DEFAULT_MTU (= MIN_MTU) */
#define MAX_NDIS_MTU 9216u   /* openvmm MAX_MTU */
#define ETH_HLEN 14u
#define MAX_MDL_CHAIN 34u    /* openvmm INIT_COMPLETE maximum_mdl_chain_length */
#define MAX_PACKET 512u      /* the largest NVSP message this host sends (the indirection table: 76) */
#define RSS_TABLE 128u       /* NDIS_RSS_INDIRECTION_TABLE_MAX_SIZE_REVISION_1 */
#define RSS_KEY 40u
#define DEFAULT_LINK_BPS 10000000000ull
#define LOG_BURST 20u        /* rate-limited lines per window */
#define LOG_WINDOW_NS 10000000000ll

/* NDIS objects this host writes or reads (openvmm rndisprot.rs). */
#define NDIS_OBJECT_TYPE_RSS_CAPABILITIES 0x88u
#define NDIS_RSS_CAPS_SIZE_REV2 18u
#define NDIS_RSS_CAPS_HASH_TYPE_TCP_IPV4 0x00000100u
#define NDIS_RSS_CAPS_HASH_TYPE_UDP_IPV4 0x00000800u
#define NDIS_HASH_FUNCTION_TOEPLITZ 0x00000001u
#define NDIS_HASH_FUNCTION_MASK 0x000000FFu
#define NDIS_HASH_IPV4 0x00000100u
#define NDIS_HASH_TCP_IPV4 0x00000200u
#define NDIS_HASH_UDP_IPV4 0x00004000u
#define NDIS_RSS_PARAM_FLAG_DISABLE_RSS 0x0010u
#define NDIS_RSS_PARAMS_MIN 28u /* NDIS_SIZEOF_RECEIVE_SCALE_PARAMETERS_REVISION_1 */
#define OID_GEN_NETWORK_LAYER_ADDRESSES 0x00010118u

#define COUNT(nv, field, n) __atomic_fetch_add(&(nv)->st.field, (uint64_t)(n), __ATOMIC_RELAXED)

enum nv_state { NV_NONE = 0, NV_INIT, NV_READY, NV_REVOKED };

/* The receive buffer: the guest's pages as host pointers, cut into sub-allocations. */
struct rbuf {
    unsigned refs;           /* nv->lock */
    uint16_t id;             /* the guest's id: the transfer page set id */
    uint32_t sub_size, count, reserved;
    uint8_t **pages;
    uint32_t npages;
    uint32_t *free_ctl, nfree_ctl;   /* sub-allocations [0, reserved): control answers */
    uint32_t *free_data, nfree_data; /* [reserved, count): frames (and control when the rest is used) */
};

/* An answer waiting for a sub-allocation. */
struct pending {
    struct pending *next;
    bool counted;
    uint32_t len;
    uint8_t msg[];
};

struct session {
    enum nv_state state;
    uint32_t version;
    bool have_config, have_ndis_version, have_send;
    uint32_t ndis_mtu;
    uint32_t ndis_major, ndis_minor;
    struct rbuf *rbuf;
    uint8_t **send_pages;
    uint32_t send_npages;
    bool rndis_up;
    uint32_t filter;
    bool rss_on;
    uint32_t rss_hash_info;
    uint8_t rss_key[RSS_KEY];
    uint32_t rss_table[RSS_TABLE];
    uint32_t requested_queues; /* 1 + sub-channels granted */
    uint32_t sub_offered;
    bool table_sent;
    struct pending *pending_head, **pending_tail;
    uint32_t pending_count;
};

struct nv_queue;

/* One transfer-page packet (a received frame or a control answer) and its sub-allocation. */
struct rxpkt {
    struct rxpkt *next_free, *next_all;
    struct kmcl_server_packet *pkt;
    struct nv_queue *q;
    struct rbuf *rb; /* while in flight */
    uint32_t sub;
};

/* A channel (the kmcl server channel's client context). */
struct nv_queue {
    struct hvsim_netvsp *nv;
    struct kmcl_server_channel *ch;
    struct hvsim_vmbus_channel *vch;
    struct hvsim *sim;
    uint16_t index;            /* sub-channel index, 0: primary */
    /* nv->lock */
    bool alive;                /* enabled and not failed/closed: deliveries may use it */
    unsigned users;            /* deliveries and sends in progress outside the executor */
    struct rxpkt *free_pkts, *all_pkts;
    /* the executor's (server thread, channel lock held) */
    bool failure_counted;
    uint8_t *txbuf;            /* the guest's RNDIS bytes, copied */
    struct kmcl_gpa_range *ranges;
    uint32_t max_ranges;
    uint64_t *pfns;
    uint32_t max_pfns;
};

struct hvsim_netvsp {
    struct hvsim_netvsp_config cfg; /* resolved */
    struct hvsim_vsp *glue;
    pthread_mutex_t lock;
    pthread_cond_t idle;            /* users / tx_calls went to 0 */
    /* ---- nv->lock ---- */
    struct nv_queue *queues[HVSIM_NETVSP_MAX_QUEUES];
    struct session s;
    bool link_up;
    bool flushing;                  /* control_flush is running */
    hvsim_netvsp_tx_fn tx;
    void *tx_ctx;
    unsigned tx_calls;
    /* ---- log_lock ---- */
    pthread_mutex_t log_lock;
    int64_t log_window;
    unsigned log_lines, log_suppressed;
    /* ---- atomics ---- */
    struct hvsim_netvsp_stats st;
};

/* ---- logging ---- */

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000ll + t.tv_nsec;
}

static void emit(struct hvsim_netvsp *nv, const char *line)
{
    if (nv->cfg.log)
        nv->cfg.log(nv->cfg.log_ctx, line);
    else
        fprintf(stderr, "hvsim: %s\n", line);
}

static void vlog_line(struct hvsim_netvsp *nv, bool limited, const char *fmt, va_list ap)
{
    char line[448];
    int n = snprintf(line, sizeof line, "net: ");
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    pthread_mutex_lock(&nv->log_lock);
    if (limited) {
        int64_t t = now_ns();
        if (t - nv->log_window > LOG_WINDOW_NS) {
            nv->log_window = t;
            nv->log_lines = 0;
        }
        if (nv->log_lines >= LOG_BURST) {
            nv->log_suppressed++;
            pthread_mutex_unlock(&nv->log_lock);
            return;
        }
        nv->log_lines++;
        if (nv->log_suppressed) {
            size_t used = strlen(line);
            snprintf(line + used, sizeof line - used, " (%u similar lines suppressed before)", nv->log_suppressed);
            nv->log_suppressed = 0;
        }
    }
    emit(nv, line);
    pthread_mutex_unlock(&nv->log_lock);
}

static void nv_log(struct hvsim_netvsp *nv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void nv_log(struct hvsim_netvsp *nv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog_line(nv, false, fmt, ap);
    va_end(ap);
}

/* Guest errors and drops: at most LOG_BURST lines per 10 s. */
static void nv_warn(struct hvsim_netvsp *nv, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void nv_warn(struct hvsim_netvsp *nv, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog_line(nv, true, fmt, ap);
    va_end(ap);
}

static const char *version_name(uint32_t v)
{
    switch (v) {
    case NVSP_VERSION_1: return "1";
    case NVSP_VERSION_2: return "2";
    case NVSP_VERSION_4: return "4";
    case NVSP_VERSION_5: return "5";
    case NVSP_VERSION_6: return "6";
    case NVSP_VERSION_61: return "6.1";
    default: return "?";
    }
}

/* ---- the receive buffer (nv->lock for the lists and refs) ---- */

static void rbuf_unref(struct rbuf *rb)
{
    if (!rb || --rb->refs)
        return;
    free(rb->pages);
    free(rb->free_ctl);
    free(rb->free_data);
    free(rb);
}

static void rbuf_put(struct rbuf *rb, uint32_t sub)
{
    if (sub < rb->reserved)
        rb->free_ctl[rb->nfree_ctl++] = sub;
    else
        rb->free_data[rb->nfree_data++] = sub;
}

static bool rbuf_take_data(struct rbuf *rb, uint32_t *sub)
{
    if (!rb->nfree_data)
        return false;
    *sub = rb->free_data[--rb->nfree_data];
    return true;
}

static bool rbuf_take_control(struct rbuf *rb, uint32_t *sub)
{
    if (rb->nfree_ctl) {
        *sub = rb->free_ctl[--rb->nfree_ctl];
        return true;
    }
    return rbuf_take_data(rb, sub);
}

/* Writes into the buffer at off (inside it: callers stay within a sub-allocation), page by page:
 * a sub-allocation may straddle pages that are not contiguous in guest memory. */
static void rbuf_write(const struct rbuf *rb, uint64_t off, const void *src, uint32_t len)
{
    const uint8_t *s = src;
    while (len) {
        uint32_t page = (uint32_t)(off / PAGE), in = (uint32_t)(off % PAGE);
        uint32_t n = PAGE - in < len ? PAGE - in : len;
        memcpy(rb->pages[page] + in, s, n);
        s += n;
        off += n;
        len -= n;
    }
}

/* Host pointers for a GPADL's pages (each checked inside RAM). NULL: a page outside or no memory. */
static uint8_t **map_pages(struct hvsim *sim, const uint64_t *pfns, uint32_t n)
{
    uint8_t **p = calloc(n, sizeof *p);
    for (uint32_t i = 0; p && i < n; i++) {
        p[i] = pfns[i] <= UINT64_MAX / PAGE ? hvsim_gpa(sim, pfns[i] * PAGE, PAGE) : NULL;
        if (!p[i]) {
            free(p);
            p = NULL;
        }
    }
    return p;
}

/* ---- the session (nv->lock) ---- */

static void session_reset(struct hvsim_netvsp *nv)
{
    struct session *s = &nv->s;
    rbuf_unref(s->rbuf);
    free(s->send_pages);
    while (s->pending_head) {
        struct pending *p = s->pending_head;
        s->pending_head = p->next;
        free(p);
    }
    memset(s, 0, sizeof *s);
    s->pending_tail = &s->pending_head;
    s->ndis_mtu = DEFAULT_NDIS_MTU;
    s->requested_queues = 1;
}

static bool primary_ready_locked(const struct hvsim_netvsp *nv)
{
    const struct nv_queue *q = nv->queues[0];
    return nv->s.state == NV_READY && nv->s.rbuf && q && q->alive;
}

static uint32_t host_pad(uint32_t version)
{
    return nvsp_host_msg_size(version);
}

/* ---- sending (no nv->lock held) ---- */

static void free_when_sent(struct kmcl_server_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    (void)status;
    (void)buf;
    (void)len;
    kmcl_server_packet_free(pkt); /* its routine is over: nothing uses it after return */
}

/* An in-band packet without completion (the indirection table): a packet of its own, freed when it
 * is in the ring (or cancelled). */
static bool send_inband_once(struct kmcl_server_channel *ch, const void *buf, uint32_t len)
{
    struct kmcl_server_packet *pkt;
    if (kmcl_server_packet_allocate(ch, &pkt) != STATUS_OK)
        return false;
    kmcl_server_packet_set_completion_routine(pkt, free_when_sent);
    kmcl_server_packet_set_transaction_id(pkt, 0);
    if (kmcl_server_packet_send(pkt, buf, len, 0) != STATUS_OK) {
        kmcl_server_packet_free(pkt);
        return false;
    }
    return true;
}

static void rx_done(struct kmcl_server_packet *pkt, status_t status, const void *buf, uint32_t len);

/* A packet for q (taken from its free list under the lock, or allocated here). */
static struct rxpkt *rxpkt_new(struct nv_queue *q)
{
    struct rxpkt *rp = calloc(1, sizeof *rp);
    if (!rp)
        return NULL;
    if (kmcl_server_packet_allocate(q->ch, &rp->pkt) != STATUS_OK) {
        free(rp);
        return NULL;
    }
    rp->q = q;
    kmcl_server_packet_set_context(rp->pkt, rp);
    kmcl_server_packet_set_completion_routine(rp->pkt, rx_done);
    pthread_mutex_lock(&q->nv->lock);
    rp->next_all = q->all_pkts;
    q->all_pkts = rp;
    pthread_mutex_unlock(&q->nv->lock);
    return rp;
}

/* Gives back what a send that did not happen took (nv->lock held). */
static void undo_locked(struct nv_queue *q, struct rxpkt *rp, struct rbuf *rb, uint32_t sub)
{
    rbuf_put(rb, sub);
    rbuf_unref(rb);
    if (rp) {
        rp->rb = NULL;
        rp->next_free = q->free_pkts;
        q->free_pkts = rp;
    }
}

static void leave_locked(struct hvsim_netvsp *nv, struct nv_queue *q)
{
    if (--q->users == 0)
        pthread_cond_broadcast(&nv->idle);
}

/* The transfer-page packet naming [sub * size, + range_len) of rb, SEND_RNDIS_PACKET {channel_type}.
 * The content is written already. true: in the ring or queued; false: nothing sent (the caller
 * undoes). */
static bool send_xfer(struct rxpkt *rp, struct rbuf *rb, uint32_t sub, uint32_t range_len, uint32_t channel_type,
                      uint32_t version)
{
    uint8_t msg[NVSP_MSG_SIZE_V61];
    uint32_t n = nvsp_build_rndis_pkt(msg, sizeof msg, host_pad(version), channel_type, NVSP_NO_SECTION, 0);
    struct kmcl_xfer_range r = { .byte_count = range_len, .byte_offset = sub * rb->sub_size };
    rp->rb = rb;
    rp->sub = sub;
    return n && kmcl_server_packet_send_xfer(rp->pkt, rb->id, &r, 1, msg, n, KMCL_SERVER_SEND_WAIT_FOR_COMPLETION) ==
                    STATUS_OK;
}

/* The guest completed a transfer-page packet (or the channel went away: CANCELLED): its
 * sub-allocation is free again. Runs with the channel's lock held. */
static void rx_done(struct kmcl_server_packet *pkt, status_t status, const void *buf, uint32_t len)
{
    (void)buf;
    (void)len;
    struct rxpkt *rp = kmcl_server_packet_get_context(pkt);
    struct nv_queue *q = rp->q;
    struct hvsim_netvsp *nv = q->nv;
    if (status == STATUS_OK)
        COUNT(nv, rx_completions, 1); /* its payload (SEND_RNDIS_PACKET_COMPLETE) says nothing we use */
    pthread_mutex_lock(&nv->lock);
    if (rp->rb) {
        rbuf_put(rp->rb, rp->sub);
        rbuf_unref(rp->rb);
        rp->rb = NULL;
    }
    rp->next_free = q->free_pkts;
    q->free_pkts = rp;
    pthread_mutex_unlock(&nv->lock);
}

/* Sends the control answers that wait, in order, while sub-allocations are free. Any thread with no
 * nv->lock; one flusher at a time (a second caller leaves its work to the running one). */
static void control_flush(struct hvsim_netvsp *nv)
{
    pthread_mutex_lock(&nv->lock);
    if (nv->flushing) {
        pthread_mutex_unlock(&nv->lock);
        return;
    }
    nv->flushing = true;
    for (;;) {
        struct session *s = &nv->s;
        struct pending *p = s->pending_head;
        if (!p || !primary_ready_locked(nv))
            break;
        struct rbuf *rb = s->rbuf;
        uint32_t sub;
        if (!rbuf_take_control(rb, &sub)) {
            if (!p->counted) {
                p->counted = true;
                COUNT(nv, control_waits, 1);
            }
            break;
        }
        s->pending_head = p->next;
        if (!s->pending_head)
            s->pending_tail = &s->pending_head;
        s->pending_count--;
        struct nv_queue *q = nv->queues[0];
        struct rxpkt *rp = q->free_pkts;
        if (rp)
            q->free_pkts = rp->next_free;
        rb->refs++;
        q->users++;
        uint32_t version = s->version;
        pthread_mutex_unlock(&nv->lock);

        if (!rp)
            rp = rxpkt_new(q);
        bool ok = false;
        if (rp && p->len <= rb->sub_size) {
            rbuf_write(rb, (uint64_t)sub * rb->sub_size, p->msg, p->len);
            ok = send_xfer(rp, rb, sub, p->len, NVSP_CHANNEL_TYPE_CONTROL, version);
        }
        pthread_mutex_lock(&nv->lock);
        if (!ok) {
            undo_locked(q, rp, rb, sub);
            COUNT(nv, control_dropped, 1);
        } else {
            COUNT(nv, rndis_answers, 1);
        }
        leave_locked(nv, q);
        free(p);
    }
    nv->flushing = false;
    pthread_mutex_unlock(&nv->lock);
}

/* Queues a control answer for the guest and sends what can go. No nv->lock held. */
static void control_send(struct hvsim_netvsp *nv, const void *msg, uint32_t len)
{
    struct pending *p = malloc(sizeof *p + len);
    if (!p) {
        COUNT(nv, control_dropped, 1);
        return;
    }
    p->next = NULL;
    p->counted = false;
    p->len = len;
    memcpy(p->msg, msg, len);
    pthread_mutex_lock(&nv->lock);
    bool full = nv->s.pending_count >= HVSIM_NETVSP_PENDING_CONTROL;
    if (!full) {
        *nv->s.pending_tail = p;
        nv->s.pending_tail = &p->next;
        nv->s.pending_count++;
    }
    pthread_mutex_unlock(&nv->lock);
    if (full) {
        free(p);
        COUNT(nv, control_dropped, 1);
        nv_warn(nv, "control answer dropped: %u answers already wait for a free receive sub-allocation "
                    "(the guest does not complete its transfer-page packets)",
                HVSIM_NETVSP_PENDING_CONTROL);
        return;
    }
    control_flush(nv);
}

/* SEND_INDIRECTION_TABLE once every requested channel is open (openvmm: when num_sub_channels_opened
 * reaches requested_num_queues). No nv->lock held; may be called with a sub-channel's lock. */
static void maybe_send_table(struct hvsim_netvsp *nv)
{
    pthread_mutex_lock(&nv->lock);
    struct session *s = &nv->s;
    uint32_t open = 0;
    for (uint32_t i = 0; i < s->requested_queues && i < HVSIM_NETVSP_MAX_QUEUES; i++)
        open += nv->queues[i] && nv->queues[i]->alive;
    if (s->state != NV_READY || s->requested_queues < 2 || s->table_sent || s->version < NVSP_VERSION_5 ||
        !nv->queues[0] || !nv->queues[0]->alive || open < s->requested_queues) {
        pthread_mutex_unlock(&nv->lock);
        return;
    }
    s->table_sent = true;
    uint32_t entries[NVSP_SEND_TABLE_ENTRIES];
    for (uint32_t i = 0; i < NVSP_SEND_TABLE_ENTRIES; i++)
        entries[i] = i % open;
    struct nv_queue *q = nv->queues[0];
    q->users++;
    pthread_mutex_unlock(&nv->lock);
    uint8_t msg[MAX_PACKET];
    uint32_t n = nvsp_build_indirection_table(msg, sizeof msg, entries, NVSP_SEND_TABLE_ENTRIES);
    if (n && send_inband_once(q->ch, msg, n)) {
        COUNT(nv, indirection_tables, 1);
        nv_log(nv, "indirection table sent: %u channels", open);
    }
    pthread_mutex_lock(&nv->lock);
    leave_locked(nv, q);
    pthread_mutex_unlock(&nv->lock);
}

/* ---- protocol errors ---- */

/* The channel is no longer served (openvmm ends the channel's worker). */
static void protocol_error(struct nv_queue *q, struct kmcl_server_incoming *in, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void protocol_error(struct nv_queue *q, struct kmcl_server_incoming *in, const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    COUNT(q->nv, nvsp_errors, 1);
    nv_warn(q->nv, "guest error on channel %u (relid %u): %s: channel no longer served", q->index,
            hvsim_vmbus_channel_relid(q->vch), why);
    char reason[300];
    snprintf(reason, sizeof reason, "netvsp: %s", why);
    kmcl_server_channel_fail(q->ch, reason);
    kmcl_server_packet_complete(in, NULL, 0); /* retires it; nothing is written on a failed channel */
}

/* ---- RNDIS control (primary channel, its lock held) ---- */

static const uint32_t supported_oids[] = {
    RNDIS_OID_GEN_SUPPORTED_LIST,       RNDIS_OID_GEN_HARDWARE_STATUS,      RNDIS_OID_GEN_MEDIA_SUPPORTED,
    RNDIS_OID_GEN_MEDIA_IN_USE,         RNDIS_OID_GEN_MAXIMUM_FRAME_SIZE,   RNDIS_OID_GEN_LINK_SPEED,
    RNDIS_OID_GEN_CURRENT_PACKET_FILTER, RNDIS_OID_GEN_MAXIMUM_TOTAL_SIZE,  RNDIS_OID_GEN_MEDIA_CONNECT_STATUS,
    RNDIS_OID_GEN_RECEIVE_SCALE_CAPABILITIES, RNDIS_OID_GEN_RECEIVE_SCALE_PARAMETERS,
    RNDIS_OID_802_3_PERMANENT_ADDRESS,  RNDIS_OID_802_3_CURRENT_ADDRESS,    RNDIS_OID_802_3_MAXIMUM_LIST_SIZE,
};

static void put32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint16_t get16(const uint8_t *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

/* The answer to a QUERY: bytes written into info, *status. */
static uint32_t oid_query(struct hvsim_netvsp *nv, uint32_t oid, uint8_t *info, uint32_t cap, uint32_t *status)
{
    if (cap < 64) { /* every answer below fits in 64 bytes */
        *status = RNDIS_STATUS_FAILURE;
        return 0;
    }
    pthread_mutex_lock(&nv->lock);
    uint32_t ndis_mtu = nv->s.ndis_mtu, filter = nv->s.filter;
    bool link = nv->link_up;
    pthread_mutex_unlock(&nv->lock);
    uint32_t frame = ndis_mtu - ETH_HLEN < nv->cfg.mtu ? ndis_mtu - ETH_HLEN : nv->cfg.mtu;
    uint64_t speed = nv->cfg.link_speed_bps / 100;
    *status = RNDIS_STATUS_SUCCESS;
    uint32_t v;
    switch (oid) {
    case RNDIS_OID_GEN_SUPPORTED_LIST:
        memcpy(info, supported_oids, sizeof supported_oids);
        return sizeof supported_oids;
    case RNDIS_OID_GEN_HARDWARE_STATUS: v = 0; break; /* NdisHardwareStatusReady */
    case RNDIS_OID_GEN_MEDIA_SUPPORTED:
    case RNDIS_OID_GEN_MEDIA_IN_USE: v = RNDIS_MEDIUM_802_3; break;
    case RNDIS_OID_GEN_MAXIMUM_FRAME_SIZE: v = frame; break;
    case RNDIS_OID_GEN_MAXIMUM_TOTAL_SIZE: v = frame + ETH_HLEN; break;
    case RNDIS_OID_GEN_LINK_SPEED: v = speed > UINT32_MAX ? UINT32_MAX : (uint32_t)speed; break;
    case RNDIS_OID_GEN_CURRENT_PACKET_FILTER: v = filter; break;
    case RNDIS_OID_GEN_MEDIA_CONNECT_STATUS:
        v = link ? RNDIS_MEDIA_STATE_CONNECTED : RNDIS_MEDIA_STATE_DISCONNECTED;
        break;
    case RNDIS_OID_802_3_MAXIMUM_LIST_SIZE: v = 0; break;
    case RNDIS_OID_802_3_PERMANENT_ADDRESS:
    case RNDIS_OID_802_3_CURRENT_ADDRESS:
        memcpy(info, nv->cfg.mac, 6);
        return 6;
    case RNDIS_OID_GEN_RECEIVE_SCALE_CAPABILITIES: /* NDIS_RECEIVE_SCALE_CAPABILITIES revision 2 */
        memset(info, 0, NDIS_RSS_CAPS_SIZE_REV2);
        info[0] = NDIS_OBJECT_TYPE_RSS_CAPABILITIES;
        info[1] = 2;
        info[2] = NDIS_RSS_CAPS_SIZE_REV2;
        put32(info + 4, NDIS_RSS_CAPS_HASH_TYPE_TCP_IPV4 | NDIS_RSS_CAPS_HASH_TYPE_UDP_IPV4 | NDIS_HASH_FUNCTION_TOEPLITZ);
        put32(info + 8, 1);               /* interrupt messages */
        put32(info + 12, nv->cfg.queues); /* receive queues */
        info[16] = (uint8_t)RSS_TABLE;    /* indirection table entries (u16) */
        info[17] = 0;
        return NDIS_RSS_CAPS_SIZE_REV2;
    default:
        *status = RNDIS_STATUS_NOT_SUPPORTED;
        COUNT(nv, oids_unsupported, 1);
        return 0;
    }
    put32(info, v);
    return 4;
}

/* OID_GEN_RECEIVE_SCALE_PARAMETERS (NDIS_RECEIVE_SCALE_PARAMETERS; openvmm oid_set_rss_parameters:
 * the header is not validated, disabling is a flag or hash function 0). */
static uint32_t set_rss(struct hvsim_netvsp *nv, const uint8_t *info, uint32_t len)
{
    uint8_t p[NDIS_RSS_PARAMS_MIN];
    memset(p, 0, sizeof p);
    memcpy(p, info, len < sizeof p ? len : sizeof p);
    uint16_t flags = get16(p + 4), table_size = get16(p + 12), key_size = get16(p + 20);
    uint32_t hash_info = get32(p + 8), table_off = get32(p + 16), key_off = get32(p + 24);
    if ((flags & NDIS_RSS_PARAM_FLAG_DISABLE_RSS) || (hash_info & NDIS_HASH_FUNCTION_MASK) == 0) {
        pthread_mutex_lock(&nv->lock);
        nv->s.rss_on = false;
        pthread_mutex_unlock(&nv->lock);
        return RNDIS_STATUS_SUCCESS;
    }
    if (key_size != RSS_KEY || table_size % 4 || table_size == 0 || (uint64_t)key_off + RSS_KEY > len ||
        (uint64_t)table_off + table_size > len)
        return RNDIS_STATUS_INVALID_DATA;
    uint32_t n = table_size / 4 < RSS_TABLE ? table_size / 4u : RSS_TABLE;
    uint32_t table[RSS_TABLE];
    for (uint32_t i = 0; i < n; i++) {
        table[i] = get32(info + table_off + 4 * i);
        if (table[i] >= nv->cfg.queues)
            return RNDIS_STATUS_INVALID_DATA;
    }
    for (uint32_t i = n; i < RSS_TABLE; i++) /* repeated to fill the table (openvmm) */
        table[i] = table[i % n];
    pthread_mutex_lock(&nv->lock);
    nv->s.rss_on = true;
    nv->s.rss_hash_info = hash_info;
    memcpy(nv->s.rss_key, info + key_off, RSS_KEY);
    memcpy(nv->s.rss_table, table, sizeof table);
    pthread_mutex_unlock(&nv->lock);
    nv_log(nv, "RSS on: %u table entries, hash 0x%x", n, hash_info);
    return RNDIS_STATUS_SUCCESS;
}

static uint32_t oid_set(struct hvsim_netvsp *nv, uint32_t oid, const uint8_t *info, uint32_t len)
{
    switch (oid) {
    case RNDIS_OID_GEN_CURRENT_PACKET_FILTER: {
        if (len < 4)
            return RNDIS_STATUS_INVALID_LENGTH;
        uint32_t f = get32(info);
        pthread_mutex_lock(&nv->lock);
        uint32_t old = nv->s.filter;
        nv->s.filter = f;
        pthread_mutex_unlock(&nv->lock);
        if (old != f)
            nv_log(nv, "packet filter 0x%x", f);
        return RNDIS_STATUS_SUCCESS;
    }
    case RNDIS_OID_GEN_RECEIVE_SCALE_PARAMETERS:
        return set_rss(nv, info, len);
    case OID_GEN_NETWORK_LAYER_ADDRESSES: /* accepted and ignored, as openvmm */
        return RNDIS_STATUS_SUCCESS;
    default:
        COUNT(nv, oids_unsupported, 1);
        return RNDIS_STATUS_NOT_SUPPORTED;
    }
}

static void handle_control(struct nv_queue *q, const struct rndis_msg *m)
{
    struct hvsim_netvsp *nv = q->nv;
    uint8_t out[512], info[256];
    uint32_t n = 0;
    COUNT(nv, rndis_control, 1);
    switch (m->type) {
    case RNDIS_MSG_INITIALIZE: {
        pthread_mutex_lock(&nv->lock);
        bool again = nv->s.rndis_up;
        nv->s.rndis_up = true;
        pthread_mutex_unlock(&nv->lock);
        const struct rndis_init_info ii = { .device_flags = RNDIS_DF_CONNECTIONLESS, .medium = RNDIS_MEDIUM_802_3,
                                            .max_pkts_per_msg = 8, .max_xfer_size = 0xEFFFFFFFu,
                                            .pkt_align_factor = 3 };
        if (again)
            nv_warn(nv, "RNDIS INITIALIZE again (request %u): answered FAILURE", m->request_id);
        else
            nv_log(nv, "RNDIS initialized (request %u)", m->request_id);
        n = rndis_build_init_cmplt(out, sizeof out, m->request_id, again ? RNDIS_STATUS_FAILURE : RNDIS_STATUS_SUCCESS,
                                   &ii);
        break;
    }
    case RNDIS_MSG_QUERY: {
        uint32_t status;
        uint32_t len = oid_query(nv, m->u.oid_req.oid, info, sizeof info, &status);
        n = rndis_build_query_cmplt(out, sizeof out, m->request_id, status, info, len);
        break;
    }
    case RNDIS_MSG_SET: {
        /* The information buffer is in our copy of the message: read it as bytes, once. */
        uint32_t len = m->u.oid_req.info_len;
        uint32_t status = oid_set(nv, m->u.oid_req.oid, m->u.oid_req.info, len);
        if (status != RNDIS_STATUS_SUCCESS)
            nv_warn(nv, "RNDIS SET of OID 0x%08x (%u bytes): status 0x%08x", m->u.oid_req.oid, len, status);
        n = rndis_build_set_cmplt(out, sizeof out, m->request_id, status);
        break;
    }
    case RNDIS_MSG_KEEPALIVE:
        n = rndis_build_keepalive_cmplt(out, sizeof out, m->request_id, RNDIS_STATUS_SUCCESS);
        break;
    case RNDIS_MSG_HALT: /* no answer (DPDK relies on the NVSP completion); openvmm ignores it */
        nv_log(nv, "RNDIS HALT (request %u)", m->request_id);
        return;
    default: /* RESET, INDICATE_STATUS, completions: openvmm does not implement them */
        COUNT(nv, rndis_ignored, 1);
        nv_warn(nv, "RNDIS %s (0x%08x) from the guest: ignored", rndis_msg_name(m->type), m->type);
        return;
    }
    if (n)
        control_send(nv, out, n);
}

/* ---- SEND_RNDIS_PACKET ---- */

static void complete_rndis(struct kmcl_server_incoming *in, uint32_t status, uint32_t version)
{
    uint8_t msg[NVSP_MSG_SIZE_V61];
    uint32_t n = nvsp_build_rndis_pkt_complete(msg, sizeof msg, host_pad(version), status);
    kmcl_server_packet_complete(in, msg, n);
}

struct copy_state {
    uint8_t *dst;
    uint32_t used;
};

static bool copy_piece(void *arg, const uint8_t *p, uint32_t n)
{
    struct copy_state *c = arg;
    memcpy(c->dst + c->used, p, n); /* the total was bounded before */
    c->used += n;
    return true;
}

/* The GPA-direct bytes into q->txbuf. 0 and *why on failure. */
static uint32_t read_gpa(struct nv_queue *q, struct kmcl_server_incoming *in, const char **why)
{
    struct kmcl_pkt_gpa g;
    status_t st;
    for (;;) {
        g = (struct kmcl_pkt_gpa){ .ranges = q->ranges, .max_ranges = q->max_ranges, .pfns = q->pfns,
                                   .max_pfns = q->max_pfns };
        st = kmcl_server_packet_get_external_data(in, &g, NULL);
        if (st != STATUS_NO_SPACE)
            break;
        if (g.range_count > q->max_ranges) {
            struct kmcl_gpa_range *n = realloc(q->ranges, (size_t)g.range_count * sizeof *n);
            if (!n)
                break;
            q->ranges = n;
            q->max_ranges = g.range_count;
        }
        if (g.pfn_total > q->max_pfns) {
            uint64_t *n = realloc(q->pfns, (size_t)g.pfn_total * sizeof *n);
            if (!n)
                break;
            q->pfns = n;
            q->max_pfns = g.pfn_total;
        }
    }
    if (st != STATUS_OK) {
        *why = st == STATUS_NOT_FOUND ? "no GPA ranges and no send-buffer section" : "host out of memory";
        return 0;
    }
    uint64_t total = 0;
    for (uint32_t i = 0; i < g.range_count; i++)
        total += g.ranges[i].byte_count;
    if (total == 0 || total > HVSIM_NETVSP_MAX_TX_BYTES) {
        *why = total ? "GPA ranges longer than the host takes" : "empty GPA ranges";
        return 0;
    }
    struct copy_state c = { .dst = q->txbuf };
    if (kmcl_server_gpa_for_each(q->ch, &g, total, copy_piece, &c) != STATUS_OK) {
        *why = "GPA range outside guest RAM";
        return 0;
    }
    return c.used;
}

static void to_backend(struct hvsim_netvsp *nv, const uint8_t *frame, uint32_t len)
{
    pthread_mutex_lock(&nv->lock);
    hvsim_netvsp_tx_fn fn = nv->tx;
    void *ctx = nv->tx_ctx;
    bool link = nv->link_up;
    uint32_t mtu = nv->s.ndis_mtu;
    if (fn && link && len >= ETH_HLEN && len <= mtu)
        nv->tx_calls++;
    else
        fn = NULL;
    pthread_mutex_unlock(&nv->lock);
    if (!fn) {
        COUNT(nv, tx_dropped, 1);
        return;
    }
    fn(ctx, frame, len);
    COUNT(nv, tx_frames, 1);
    COUNT(nv, tx_bytes, len);
    pthread_mutex_lock(&nv->lock);
    if (--nv->tx_calls == 0)
        pthread_cond_broadcast(&nv->idle);
    pthread_mutex_unlock(&nv->lock);
}

static void handle_rndis(struct nv_queue *q, struct kmcl_server_incoming *in, const struct nvsp_msg *m)
{
    struct hvsim_netvsp *nv = q->nv;
    pthread_mutex_lock(&nv->lock);
    uint32_t version = nv->s.version;
    pthread_mutex_unlock(&nv->lock);

    if (!kmcl_server_incoming_completion_requested(in)) { /* openvmm: MissingTransactionId */
        COUNT(nv, tx_no_rc, 1);
        nv_warn(nv, "SEND_RNDIS_PACKET without a completion request (trans %llu): dropped",
                (unsigned long long)kmcl_server_incoming_trans_id(in));
        kmcl_server_packet_complete(in, NULL, 0);
        return;
    }
    uint32_t index = m->u.rndis_pkt.section_index, size = m->u.rndis_pkt.section_size, len;
    const char *why = NULL;
    if (index != NVSP_NO_SECTION) {
        /* Copied under the lock: the send buffer may go (REVOKE on the primary) while a
         * sub-channel's executor runs elsewhere. */
        uint64_t off = (uint64_t)index * HVSIM_NETVSP_SEND_SECTION_SIZE;
        pthread_mutex_lock(&nv->lock);
        uint8_t **send_pages = nv->s.send_pages;
        bool ok = send_pages && size > 0 && size <= HVSIM_NETVSP_SEND_SECTION_SIZE &&
                  off + size <= (uint64_t)nv->s.send_npages * PAGE;
        for (uint32_t done = 0; ok && done < size;) {
            uint64_t o = off + done;
            uint32_t in_page = (uint32_t)(o % PAGE), n = PAGE - in_page < size - done ? PAGE - in_page : size - done;
            memcpy(q->txbuf + done, send_pages[o / PAGE] + in_page, n);
            done += n;
        }
        pthread_mutex_unlock(&nv->lock);
        if (!ok) {
            COUNT(nv, tx_bad_section, 1);
            nv_warn(nv, "SEND_RNDIS_PACKET section %u size %u: %s: completed FAILURE", index, size,
                    !send_pages ? "no send buffer" : "outside the send buffer");
            complete_rndis(in, NVSP_STATUS_FAILURE, version);
            return;
        }
        len = size;
    } else {
        len = read_gpa(q, in, &why);
        if (!len) {
            COUNT(nv, tx_bad_range, 1);
            nv_warn(nv, "SEND_RNDIS_PACKET (GPA direct): %s: completed FAILURE", why);
            complete_rndis(in, NVSP_STATUS_FAILURE, version);
            return;
        }
    }

    /* First pass: check everything (our copy cannot change under us). */
    struct rndis_iter it;
    struct rndis_msg msg, first;
    memset(&first, 0, sizeof first);
    uint32_t packets = 0;
    status_t st;
    rndis_iter_init(&it, q->txbuf, len, RNDIS_ITER_PACKETS);
    while (why == NULL) {
        const uint8_t *start = it.p;
        st = rndis_iter_next(&it, &msg, &why);
        if (st == STATUS_NOT_FOUND)
            break;
        if (st != STATUS_OK)
            break;
        if (packets++ == 0)
            first = msg;
        if (msg.type == RNDIS_MSG_PACKET && (msg.u.packet.oob_len || get32(start + 36) /* vc_handle */))
            why = msg.u.packet.oob_len ? "PACKET with OOB data" : "PACKET with a VC handle";
    }
    if (why || packets == 0) {
        COUNT(nv, tx_bad_rndis, 1);
        nv_warn(nv, "SEND_RNDIS_PACKET on channel %u (%u bytes, %s): %s: completed FAILURE", q->index, len,
                index != NVSP_NO_SECTION ? "send buffer" : "GPA direct", why ? why : "no RNDIS message");
        complete_rndis(in, NVSP_STATUS_FAILURE, version);
        return;
    }
    if (first.type != RNDIS_MSG_PACKET) {
        if (q->index != 0) { /* openvmm NotSupportedOnSubChannel */
            COUNT(nv, tx_bad_rndis, 1);
            nv_warn(nv, "RNDIS %s on sub-channel %u: completed FAILURE", rndis_msg_name(first.type), q->index);
            complete_rndis(in, NVSP_STATUS_FAILURE, version);
            return;
        }
        complete_rndis(in, NVSP_STATUS_SUCCESS, version); /* before the answer, as openvmm */
        handle_control(q, &first);
        return;
    }
    /* Second pass: the frames. */
    rndis_iter_init(&it, q->txbuf, len, RNDIS_ITER_PACKETS);
    while (rndis_iter_next(&it, &msg, &why) == STATUS_OK)
        to_backend(nv, msg.u.packet.data, msg.u.packet.data_len);
    complete_rndis(in, NVSP_STATUS_SUCCESS, version);
}

/* ---- NVSP ---- */

/* Everything for the ready state is in (openvmm is_ready_to_initialize). nv->lock held. */
static bool buffers_complete_locked(const struct session *s, bool allow_missing_send)
{
    return (s->have_config || s->version < NVSP_VERSION_2) && s->have_ndis_version && s->rbuf &&
           (s->have_send || allow_missing_send);
}

static void refuse_recv_buf(struct nv_queue *q, struct kmcl_server_incoming *in, uint32_t version, const char *why,
                            uint32_t gpadl)
{
    uint8_t msg[NVSP_MSG_SIZE_V61];
    COUNT(q->nv, buffer_refusals, 1);
    nv_warn(q->nv, "SEND_RECEIVE_BUFFER (GPADL 0x%x) refused: %s", gpadl, why);
    uint32_t n = nvsp_build_recv_buf_complete(msg, sizeof msg, host_pad(version), NVSP_STATUS_FAILURE, NULL, 0);
    kmcl_server_packet_complete(in, msg, n);
}

static void take_recv_buf(struct nv_queue *q, struct kmcl_server_incoming *in, const struct nvsp_msg *m)
{
    struct hvsim_netvsp *nv = q->nv;
    pthread_mutex_lock(&nv->lock);
    uint32_t version = nv->s.version, mtu = nv->s.ndis_mtu;
    bool config = nv->s.have_config;
    pthread_mutex_unlock(&nv->lock);
    uint32_t gpadl = m->u.send_buf.gpadl;
    if (version >= NVSP_VERSION_2 && !config) { /* openvmm SendReceiveBufferMissingMTU */
        refuse_recv_buf(q, in, version, "no SEND_NDIS_CONFIG before it (NVSP >= 2)", gpadl);
        return;
    }
    uint64_t *pfns;
    uint32_t npages;
    if (!hvsim_vmbus_gpadl_pfns(q->vch, gpadl, &pfns, &npages)) {
        refuse_recv_buf(q, in, version, "no such complete GPADL of this channel (or not starting at byte 0)", gpadl);
        return;
    }
    uint32_t sub_size = RX_HEADER_LEN + mtu + RX_FOOTER_LEN; /* openvmm sub_allocation_size_for_mtu */
    uint64_t bytes = (uint64_t)npages * PAGE;
    uint32_t count = bytes / sub_size > UINT32_MAX ? UINT32_MAX : (uint32_t)(bytes / sub_size);
    struct rbuf *rb = count ? calloc(1, sizeof *rb) : NULL;
    if (rb) {
        rb->pages = map_pages(q->sim, pfns, npages);
        rb->free_ctl = malloc(sizeof(uint32_t) * count);
        rb->free_data = malloc(sizeof(uint32_t) * count);
    }
    free(pfns);
    if (!rb || !rb->pages || !rb->free_ctl || !rb->free_data) {
        if (rb) {
            free(rb->pages);
            free(rb->free_ctl);
            free(rb->free_data);
            free(rb);
        }
        refuse_recv_buf(q, in, version, count ? "host out of memory" : "smaller than one sub-allocation", gpadl);
        return;
    }
    rb->refs = 1;
    rb->id = m->u.send_buf.id;
    rb->sub_size = sub_size;
    rb->count = count;
    rb->npages = npages;
    rb->reserved = count / 2 < HVSIM_NETVSP_RESERVED_CONTROL ? count / 2 : HVSIM_NETVSP_RESERVED_CONTROL;
    for (uint32_t i = count; i-- > rb->reserved;) /* handed out lowest first */
        rb->free_data[rb->nfree_data++] = i;
    for (uint32_t i = rb->reserved; i-- > 0;)
        rb->free_ctl[rb->nfree_ctl++] = i;
    pthread_mutex_lock(&nv->lock);
    nv->s.rbuf = rb;
    if (buffers_complete_locked(&nv->s, false))
        nv->s.state = NV_READY;
    pthread_mutex_unlock(&nv->lock);
    nv_log(nv, "receive buffer: GPADL 0x%x, id 0x%x, %u pages, %u sub-allocations of %u bytes (%u for control)",
           gpadl, rb->id, npages, count, sub_size, rb->reserved);
    struct nvsp_recv_section sec = { .offset = 0, .sub_alloc_size = sub_size, .num_sub_allocs = count,
                                     .end_offset = sub_size * count };
    uint8_t msg[64];
    uint32_t n = nvsp_build_recv_buf_complete(msg, sizeof msg, host_pad(version), NVSP_STATUS_SUCCESS, &sec, 1);
    kmcl_server_packet_complete(in, msg, n);
}

static void take_send_buf(struct nv_queue *q, struct kmcl_server_incoming *in, const struct nvsp_msg *m)
{
    struct hvsim_netvsp *nv = q->nv;
    pthread_mutex_lock(&nv->lock);
    uint32_t version = nv->s.version;
    pthread_mutex_unlock(&nv->lock);
    uint8_t msg[NVSP_MSG_SIZE_V61];
    uint64_t *pfns;
    uint32_t npages;
    uint8_t **pages = NULL;
    if (hvsim_vmbus_gpadl_pfns(q->vch, m->u.send_buf.gpadl, &pfns, &npages)) {
        pages = map_pages(q->sim, pfns, npages);
        free(pfns);
    }
    if (!pages) {
        COUNT(nv, buffer_refusals, 1);
        nv_warn(nv, "SEND_SEND_BUFFER (GPADL 0x%x) refused: no such complete GPADL of this channel",
                m->u.send_buf.gpadl);
        uint32_t n = nvsp_build_send_buf_complete(msg, sizeof msg, host_pad(version), NVSP_STATUS_FAILURE, 0);
        kmcl_server_packet_complete(in, msg, n);
        return;
    }
    pthread_mutex_lock(&nv->lock);
    nv->s.send_pages = pages;
    nv->s.send_npages = npages;
    nv->s.have_send = true;
    if (buffers_complete_locked(&nv->s, false))
        nv->s.state = NV_READY;
    pthread_mutex_unlock(&nv->lock);
    nv_log(nv, "send buffer: GPADL 0x%x, %u pages, sections of %u bytes", m->u.send_buf.gpadl, npages,
           HVSIM_NETVSP_SEND_SECTION_SIZE);
    uint32_t n = nvsp_build_send_buf_complete(msg, sizeof msg, host_pad(version), NVSP_STATUS_SUCCESS,
                                              HVSIM_NETVSP_SEND_SECTION_SIZE);
    kmcl_server_packet_complete(in, msg, n);
}

static void take_sub_channel(struct nv_queue *q, struct kmcl_server_incoming *in, const struct nvsp_msg *m)
{
    struct hvsim_netvsp *nv = q->nv;
    uint32_t want = m->u.subchannel_req.num_subchannels;
    bool ok = m->u.subchannel_req.op == NVSP_SUBCHANNEL_ALLOCATE && want < nv->cfg.queues;
    pthread_mutex_lock(&nv->lock);
    uint32_t version = nv->s.version, more = 0;
    if (ok && want > 0) {
        nv->s.requested_queues = want + 1;
        nv->s.table_sent = false;
        if (want > nv->s.sub_offered) {
            more = want - nv->s.sub_offered;
            nv->s.sub_offered = want;
        }
    }
    pthread_mutex_unlock(&nv->lock);
    uint8_t msg[NVSP_MSG_SIZE_V61];
    uint32_t n = nvsp_build_subchannel_complete(msg, sizeof msg, host_pad(version),
                                                ok ? NVSP_STATUS_SUCCESS : NVSP_STATUS_FAILURE, ok ? want : 0);
    kmcl_server_packet_complete(in, msg, n);
    if (!ok) {
        nv_warn(nv, "SUB_CHANNEL op %u for %u sub-channels refused (this NIC has %u queues)",
                m->u.subchannel_req.op, want, nv->cfg.queues);
        return;
    }
    nv_log(nv, "SUB_CHANNEL: %u sub-channels granted, %u more offered", want, more);
    if (more) {
        if (hvsim_vmbus_offer_sub_channels(q->vch->vb, hvsim_vmbus_channel_relid(q->vch), (uint16_t)more))
            COUNT(nv, sub_channels_offered, more);
        else
            nv_warn(nv, "offering %u sub-channels failed (relids or ports ran out)", more);
    }
    maybe_send_table(nv); /* all may be open already (a second request for fewer) */
}

static void revoke(struct nv_queue *q, struct kmcl_server_incoming *in, const struct nvsp_msg *m)
{
    struct hvsim_netvsp *nv = q->nv;
    pthread_mutex_lock(&nv->lock);
    rbuf_unref(nv->s.rbuf);
    nv->s.rbuf = NULL;
    free(nv->s.send_pages);
    nv->s.send_pages = NULL;
    nv->s.send_npages = 0;
    nv->s.state = NV_REVOKED;
    pthread_mutex_unlock(&nv->lock);
    COUNT(nv, revokes, 1);
    nv_log(nv, "%s (id 0x%x): buffers dropped, the primary channel is no longer read", nvsp_msg_name(m->type),
           m->u.revoke.id);
    kmcl_server_packet_complete(in, NULL, 0);
    kmcl_server_channel_pause(q->ch); /* openvmm ends the worker (BufferRevoked) */
}

static void process_packet(struct kmcl_server_channel *ch, struct kmcl_server_incoming *in, const void *buf,
                           uint32_t len, uint32_t flags)
{
    (void)flags;
    struct nv_queue *q = kmcl_server_channel_get_pointer_to_client_context(ch);
    struct hvsim_netvsp *nv = q->nv;
    if (kmcl_server_incoming_type(in) == KMCL_PKT_DATA_XFER_PAGES) {
        protocol_error(q, in, "a transfer-page packet from the guest");
        return;
    }
    struct nvsp_msg m;
    const char *why;
    if (nvsp_msg_check(buf, len, NVSP_TO_HOST, &m, &why) != STATUS_OK) {
        protocol_error(q, in, "%s (type %u, %u bytes)", why, m.type, len);
        return;
    }
    pthread_mutex_lock(&nv->lock);
    struct session *s = &nv->s;
    enum nv_state state = s->state;
    uint32_t version = s->version;
    pthread_mutex_unlock(&nv->lock);

    if (m.type != NVSP_MSG1_SEND_RNDIS_PACKET)
        COUNT(nv, nvsp_control, 1);
    if (q->index != 0 && m.type != NVSP_MSG1_SEND_RNDIS_PACKET) {
        protocol_error(q, in, "%s on a sub-channel", nvsp_msg_name(m.type));
        return;
    }
    if (m.type != NVSP_MSG_INIT && state == NV_NONE) {
        protocol_error(q, in, "%s before INIT", nvsp_msg_name(m.type));
        return;
    }
    if (m.type != NVSP_MSG_INIT && nvsp_msg_min_version(m.type) > version) {
        protocol_error(q, in, "%s is newer than the negotiated NVSP %s", nvsp_msg_name(m.type), version_name(version));
        return;
    }
    uint8_t msg[NVSP_MSG_SIZE_V61];
    switch (m.type) {
    case NVSP_MSG_INIT: {
        if (state != NV_NONE) {
            protocol_error(q, in, "INIT after NVSP %s was negotiated", version_name(version));
            return;
        }
        uint32_t v = m.u.init.ver_min; /* openvmm checks protocol_version only */
        bool ok = nvsp_version_known(v) && v <= nv->cfg.max_version;
        uint32_t n = nvsp_build_init_complete(msg, sizeof msg, NVSP_MSG_SIZE_LEGACY,
                                              ok && v == NVSP_VERSION_1 ? NVSP_VERSION_1 : NVSP_VERSION_INVALID,
                                              MAX_MDL_CHAIN, ok ? NVSP_STATUS_SUCCESS : NVSP_STATUS_NONE);
        if (ok) {
            pthread_mutex_lock(&nv->lock);
            s->state = NV_INIT;
            s->version = v;
            pthread_mutex_unlock(&nv->lock);
            nv_log(nv, "NVSP %s negotiated", version_name(v));
        } else {
            nv_log(nv, "INIT for version 0x%x: not supported (status NONE)", v);
        }
        kmcl_server_packet_complete(in, msg, n);
        return;
    }
    case NVSP_MSG2_SEND_NDIS_CONFIG:
    case NVSP_MSG1_SEND_NDIS_VERSION:
    case NVSP_MSG1_SEND_RECEIVE_BUFFER:
    case NVSP_MSG1_SEND_SEND_BUFFER: {
        pthread_mutex_lock(&nv->lock);
        bool dup = m.type == NVSP_MSG2_SEND_NDIS_CONFIG   ? s->have_config
                   : m.type == NVSP_MSG1_SEND_NDIS_VERSION ? s->have_ndis_version
                   : m.type == NVSP_MSG1_SEND_RECEIVE_BUFFER ? s->rbuf != NULL
                                                            : s->have_send;
        if (state == NV_INIT && !dup) {
            if (m.type == NVSP_MSG2_SEND_NDIS_CONFIG) {
                uint32_t mtu = m.u.ndis_config.mtu;
                s->ndis_mtu = mtu >= DEFAULT_NDIS_MTU && mtu <= MAX_NDIS_MTU ? mtu : DEFAULT_NDIS_MTU;
                s->have_config = true;
            } else if (m.type == NVSP_MSG1_SEND_NDIS_VERSION) {
                s->ndis_major = m.u.ndis_version.major;
                s->ndis_minor = m.u.ndis_version.minor;
                s->have_ndis_version = true;
            }
            if (buffers_complete_locked(s, false))
                s->state = NV_READY;
        }
        uint32_t mtu = s->ndis_mtu;
        pthread_mutex_unlock(&nv->lock);
        if (state != NV_INIT || dup) {
            protocol_error(q, in, "%s %s", nvsp_msg_name(m.type), dup ? "again" : "after the channel became ready");
            return;
        }
        if (m.type == NVSP_MSG2_SEND_NDIS_CONFIG) {
            nv_log(nv, "NDIS config: MTU %u (asked %u), capabilities 0x%llx", mtu, m.u.ndis_config.mtu,
                   (unsigned long long)m.u.ndis_config.capabilities);
            kmcl_server_packet_complete(in, NULL, 0); /* empty if RC: "The UEFI client expects a completion" */
        } else if (m.type == NVSP_MSG1_SEND_NDIS_VERSION) {
            kmcl_server_packet_complete(in, NULL, 0);
        } else if (m.type == NVSP_MSG1_SEND_RECEIVE_BUFFER) {
            take_recv_buf(q, in, &m);
        } else {
            take_send_buf(q, in, &m);
        }
        return;
    }
    case NVSP_MSG1_SEND_RNDIS_PACKET:
        if (state == NV_INIT) {
            pthread_mutex_lock(&nv->lock);
            bool ok = buffers_complete_locked(s, true); /* openvmm: the send buffer may be missing */
            if (ok)
                s->state = state = NV_READY;
            pthread_mutex_unlock(&nv->lock);
        }
        if (state == NV_REVOKED) { /* a sub-channel still read after the primary's revoke */
            COUNT(nv, tx_dropped, 1);
            complete_rndis(in, NVSP_STATUS_FAILURE, version);
            return;
        }
        if (state != NV_READY) {
            protocol_error(q, in, "SEND_RNDIS_PACKET before the NDIS version and the receive buffer");
            return;
        }
        handle_rndis(q, in, &m);
        return;
    case NVSP_MSG1_REVOKE_RECEIVE_BUFFER:
    case NVSP_MSG1_REVOKE_SEND_BUFFER:
        if (state != NV_READY) {
            protocol_error(q, in, "%s before the channel was ready", nvsp_msg_name(m.type));
            return;
        }
        revoke(q, in, &m);
        return;
    case NVSP_MSG5_SUB_CHANNEL:
        if (state != NV_READY) {
            protocol_error(q, in, "SUB_CHANNEL before the channel was ready");
            return;
        }
        take_sub_channel(q, in, &m);
        return;
    case NVSP_MSG5_OID_QUERY_EX: {
        uint32_t n = nvsp_build_oid_query_ex_complete(msg, sizeof msg, host_pad(version), RNDIS_STATUS_NOT_SUPPORTED, 0);
        kmcl_server_packet_complete(in, msg, n);
        return;
    }
    case NVSP_MSG4_SWITCH_DATA_PATH:
        if (state != NV_READY) {
            protocol_error(q, in, "SWITCH_DATA_PATH before the channel was ready");
            return;
        }
        kmcl_server_packet_complete(in, NULL, 0); /* no VF: nothing switches (openvmm) */
        return;
    default: /* SEND_RNDIS_PACKET_COMPLETE in-band and the like: openvmm "unexpected packet" */
        protocol_error(q, in, "%s is not a request a host takes", nvsp_msg_name(m.type));
        return;
    }
}

/* ---- receive (host -> guest) ---- */

static bool filter_accepts(uint32_t filter, const uint8_t *dst, const uint8_t *mac)
{
    if (filter & RNDIS_PACKET_TYPE_PROMISCUOUS)
        return true;
    if (dst[0] & 1) {
        static const uint8_t bcast[6] = { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF };
        if (memcmp(dst, bcast, 6) == 0)
            return filter & RNDIS_PACKET_TYPE_BROADCAST;
        return filter & (RNDIS_PACKET_TYPE_MULTICAST | RNDIS_PACKET_TYPE_ALL_MULTICAST);
    }
    return (filter & RNDIS_PACKET_TYPE_DIRECTED) && memcmp(dst, mac, 6) == 0;
}

/* Toeplitz (the RSS hash): the key's bits slide over the input, bit by bit. */
static uint32_t toeplitz(const uint8_t *key, const uint8_t *in, uint32_t n)
{
    uint32_t h = 0, window = (uint32_t)key[0] << 24 | (uint32_t)key[1] << 16 | (uint32_t)key[2] << 8 | key[3];
    uint32_t next = 32; /* the key bit that enters the window next */
    for (uint32_t i = 0; i < n; i++) {
        for (int b = 7; b >= 0; b--) {
            if (in[i] & (1u << b))
                h ^= window;
            uint32_t bit = next < RSS_KEY * 8 ? (key[next / 8] >> (7 - next % 8)) & 1u : 0;
            window = window << 1 | bit;
            next++;
        }
    }
    return h;
}

/* The receive queue of a frame (nv->lock held): IPv4 TCP/UDP by hash, everything else 0. */
static uint32_t pick_queue_locked(const struct hvsim_netvsp *nv, const uint8_t *f, uint32_t len)
{
    const struct session *s = &nv->s;
    if (s->requested_queues < 2 && !s->rss_on)
        return 0;
    if (len < ETH_HLEN + 20 || f[12] != 0x08 || f[13] != 0x00 || (f[14] >> 4) != 4)
        return 0;
    uint32_t ihl = (f[14] & 15u) * 4u;
    uint8_t proto = f[23];
    bool frag = ((f[20] & 0x3F) | f[21]) != 0;
    uint8_t tuple[12];
    memcpy(tuple, f + 26, 8); /* source, destination address */
    uint32_t n = 8;
    bool l4 = (proto == 6 || proto == 17) && !frag && ihl >= 20 && len >= ETH_HLEN + ihl + 4;
    if (l4) {
        memcpy(tuple + 8, f + ETH_HLEN + ihl, 4); /* source, destination port */
        n = 12;
    }
    if (s->rss_on) {
        uint32_t hi = s->rss_hash_info;
        bool ports = l4 && ((proto == 6 && (hi & NDIS_HASH_TCP_IPV4)) || (proto == 17 && (hi & NDIS_HASH_UDP_IPV4)));
        if (!ports && !(hi & NDIS_HASH_IPV4))
            return 0;
        uint32_t h = toeplitz(s->rss_key, tuple, ports ? 12 : 8);
        return s->rss_table[h % RSS_TABLE];
    }
    uint32_t h = 2166136261u; /* FNV-1a over the tuple */
    for (uint32_t i = 0; i < n; i++)
        h = (h ^ tuple[i]) * 16777619u;
    return h % s->requested_queues;
}

bool hvsim_netvsp_deliver(struct hvsim_netvsp *nv, const void *frame, uint32_t len)
{
    const uint8_t *f = frame;
    if (!f || len < ETH_HLEN || len > HVSIM_NETVSP_MAX_FRAME) {
        COUNT(nv, rx_bad, 1);
        return false;
    }
    pthread_mutex_lock(&nv->lock);
    struct session *s = &nv->s;
    if (!primary_ready_locked(nv) || !s->rndis_up) {
        pthread_mutex_unlock(&nv->lock);
        COUNT(nv, rx_not_ready, 1);
        return false;
    }
    if (!nv->link_up) {
        pthread_mutex_unlock(&nv->lock);
        COUNT(nv, rx_link_down, 1);
        return false;
    }
    if (len > s->ndis_mtu) {
        pthread_mutex_unlock(&nv->lock);
        COUNT(nv, rx_bad, 1);
        return false;
    }
    if (!filter_accepts(s->filter, f, nv->cfg.mac)) { /* openvmm pends frames while the filter is 0 */
        pthread_mutex_unlock(&nv->lock);
        COUNT(nv, rx_filtered, 1);
        return false;
    }
    uint32_t qi = pick_queue_locked(nv, f, len);
    struct nv_queue *q = qi < HVSIM_NETVSP_MAX_QUEUES ? nv->queues[qi] : NULL;
    if (!q || !q->alive)
        q = nv->queues[0];
    struct rbuf *rb = s->rbuf;
    uint32_t sub;
    if (!rbuf_take_data(rb, &sub)) {
        pthread_mutex_unlock(&nv->lock);
        COUNT(nv, rx_no_buffer, 1);
        return false;
    }
    struct rxpkt *rp = q->free_pkts;
    if (rp)
        q->free_pkts = rp->next_free;
    rb->refs++;
    q->users++;
    uint32_t version = s->version;
    pthread_mutex_unlock(&nv->lock);

    bool ok = false;
    struct kmcl_server_channel_stats ks;
    kmcl_server_channel_get_stats(q->ch, &ks);
    if (ks.queued_now < HVSIM_NETVSP_BACKLOG && (rp || (rp = rxpkt_new(q)) != NULL)) {
        uint64_t base = (uint64_t)sub * rb->sub_size;
        uint32_t range;
        struct rndis_ppi_u32 csum = { .type = RNDIS_PPI_CHECKSUM, .value = 0 }; /* nothing claimed */
        if (nv->cfg.rx_compact) { /* rndis_build_packet: PPI after the header, the frame after it */
            uint8_t hdr[64];
            uint32_t h = rndis_build_packet(hdr, sizeof hdr, &csum, 1, len);
            rbuf_write(rb, base, hdr, h);
            rbuf_write(rb, base + h, f, len);
            range = h + len;
        } else { /* openvmm buffers.rs write_header: the whole sub-allocation, frame at 256 */
            uint8_t hdr[sizeof(struct rndis_packet) + RNDIS_PPI_U32_SIZE];
            struct rndis_packet p = { .hdr = { .type = RNDIS_MSG_PACKET, .msg_len = rb->sub_size },
                                      .data_offset = RX_HEADER_LEN - RNDIS_OFFSET_BASE, .data_len = len,
                                      .ppi_offset = RNDIS_PACKET_OFFSET_MIN, .ppi_len = RNDIS_PPI_U32_SIZE };
            struct rndis_ppi e = { .size = RNDIS_PPI_U32_SIZE, .type = csum.type, .ppi_offset = sizeof e };
            memcpy(hdr, &p, sizeof p);
            memcpy(hdr + sizeof p, &e, sizeof e);
            memcpy(hdr + sizeof p + sizeof e, &csum.value, 4);
            rbuf_write(rb, base, hdr, sizeof hdr);
            rbuf_write(rb, base + RX_HEADER_LEN, f, len);
            range = rb->sub_size;
        }
        ok = send_xfer(rp, rb, sub, range, NVSP_CHANNEL_TYPE_DATA, version);
    }
    pthread_mutex_lock(&nv->lock);
    if (!ok)
        undo_locked(q, rp, rb, sub);
    leave_locked(nv, q);
    pthread_mutex_unlock(&nv->lock);
    if (ok) {
        COUNT(nv, rx_frames, 1);
        COUNT(nv, rx_bytes, len);
    } else {
        COUNT(nv, rx_no_buffer, 1);
    }
    return ok;
}

bool hvsim_netvsp_deliver_raw(struct hvsim_netvsp *nv, const void *bytes, uint32_t len,
                              const struct hvsim_netvsp_raw *how)
{
    struct hvsim_netvsp_raw none = { 0 };
    if (!how)
        how = &none;
    pthread_mutex_lock(&nv->lock);
    struct session *s = &nv->s;
    struct rbuf *rb = primary_ready_locked(nv) && s->rndis_up ? s->rbuf : NULL;
    uint32_t sub;
    if (!rb || len > rb->sub_size || !rbuf_take_data(rb, &sub)) {
        pthread_mutex_unlock(&nv->lock);
        return false;
    }
    struct nv_queue *q = nv->queues[0];
    struct rxpkt *rp = q->free_pkts;
    if (rp)
        q->free_pkts = rp->next_free;
    rb->refs++;
    q->users++;
    uint32_t version = s->version;
    pthread_mutex_unlock(&nv->lock);

    bool ok = false;
    if (rp || (rp = rxpkt_new(q)) != NULL) {
        uint64_t base = (uint64_t)sub * rb->sub_size;
        if (len)
            rbuf_write(rb, base, bytes, len);
        uint8_t msg[NVSP_MSG_SIZE_V61];
        uint32_t n = nvsp_build_rndis_pkt(msg, sizeof msg, host_pad(version), NVSP_CHANNEL_TYPE_DATA, NVSP_NO_SECTION, 0);
        if (how->nvsp_type) /* a message that is not SEND_RNDIS_PACKET */
            memcpy(msg, &how->nvsp_type, 4);
        struct kmcl_xfer_range r = { .byte_count = how->range_len ? how->range_len : len,
                                     .byte_offset = (uint32_t)(base + how->range_offset_delta) };
        rp->rb = rb;
        rp->sub = sub;
        ok = n && kmcl_server_packet_send_xfer(rp->pkt, how->pageset_id ? how->pageset_id : rb->id, &r, 1, msg, n,
                                               KMCL_SERVER_SEND_WAIT_FOR_COMPLETION) == STATUS_OK;
    }
    pthread_mutex_lock(&nv->lock);
    if (!ok)
        undo_locked(q, rp, rb, sub);
    leave_locked(nv, q);
    pthread_mutex_unlock(&nv->lock);
    return ok;
}

/* ---- link ---- */

void hvsim_netvsp_set_link(struct hvsim_netvsp *nv, bool up)
{
    pthread_mutex_lock(&nv->lock);
    bool changed = nv->link_up != up, tell = changed && nv->s.rndis_up && nv->s.state == NV_READY;
    nv->link_up = up;
    pthread_mutex_unlock(&nv->lock);
    if (!changed)
        return;
    COUNT(nv, link_changes, 1);
    nv_log(nv, "link %s%s", up ? "up" : "down", tell ? ": INDICATE_STATUS to the guest" : "");
    if (tell) {
        uint8_t msg[64];
        uint32_t n = rndis_build_indicate_status(msg, sizeof msg,
                                                 up ? RNDIS_STATUS_MEDIA_CONNECT : RNDIS_STATUS_MEDIA_DISCONNECT, NULL, 0);
        if (n) {
            COUNT(nv, indications, 1);
            control_send(nv, msg, n);
        }
    }
}

bool hvsim_netvsp_link_up(struct hvsim_netvsp *nv)
{
    pthread_mutex_lock(&nv->lock);
    bool up = nv->link_up;
    pthread_mutex_unlock(&nv->lock);
    return up;
}

void hvsim_netvsp_mac(const struct hvsim_netvsp *nv, uint8_t mac[6])
{
    memcpy(mac, nv->cfg.mac, 6);
}

/* ---- channels (the VSP glue's callbacks) ---- */

static void note_failure(struct nv_queue *q)
{
    if (!q->failure_counted && kmcl_server_channel_failed(q->ch)) {
        q->failure_counted = true;
        COUNT(q->nv, channel_failures, 1);
        pthread_mutex_lock(&q->nv->lock);
        q->alive = false;
        pthread_mutex_unlock(&q->nv->lock);
    }
}

static void opened(struct kmcl_server_channel *ch)
{
    struct nv_queue *q = kmcl_server_channel_get_pointer_to_client_context(ch);
    bool failed = kmcl_server_channel_failed(ch);
    pthread_mutex_lock(&q->nv->lock);
    q->alive = !failed;
    pthread_mutex_unlock(&q->nv->lock);
    COUNT(q->nv, opens, 1);
    nv_log(q->nv, "channel %u (relid %u) open%s", q->index, hvsim_vmbus_channel_relid(q->vch),
           failed ? " but failed (bad ring indices)" : "");
    note_failure(q);
    if (q->index)
        maybe_send_table(q->nv); /* this sub-channel's lock, then the primary's */
}

static void closed(struct kmcl_server_channel *ch)
{
    struct nv_queue *q = kmcl_server_channel_get_pointer_to_client_context(ch);
    pthread_mutex_lock(&q->nv->lock);
    q->alive = false;
    pthread_mutex_unlock(&q->nv->lock);
}

static status_t setup(void *ctx, struct hvsim_vmbus_channel *vch, struct kmcl_server_channel *ch)
{
    struct hvsim_netvsp *nv = ctx;
    uint16_t index = hvsim_vmbus_channel_sub_index(vch);
    if (index >= HVSIM_NETVSP_MAX_QUEUES)
        return STATUS_INVALID_PARAMETER;
    struct kmcl_server_state_callbacks states = { .opened = opened, .closed = closed };
    status_t s = kmcl_server_channel_init_set_client_context_size(ch, sizeof(struct nv_queue));
    if (s == STATUS_OK)
        s = kmcl_server_channel_init_set_process_packet_callbacks(ch, process_packet, NULL);
    if (s == STATUS_OK)
        s = kmcl_server_channel_init_set_state_change_callbacks(ch, &states);
    if (s == STATUS_OK)
        s = kmcl_server_channel_init_set_maximum_packet_size(ch, MAX_PACKET);
    if (s != STATUS_OK)
        return s;
    struct nv_queue *q = kmcl_server_channel_get_pointer_to_client_context(ch);
    q->txbuf = malloc(HVSIM_NETVSP_MAX_TX_BYTES);
    if (!q->txbuf)
        return STATUS_NO_MEMORY;
    q->nv = nv;
    q->ch = ch;
    q->vch = vch;
    q->sim = vch->vb->sim;
    q->index = index;
    pthread_mutex_lock(&nv->lock);
    if (index == 0)
        session_reset(nv); /* a fresh primary: a fresh session */
    nv->queues[index] = q;
    pthread_mutex_unlock(&nv->lock);
    return STATUS_OK;
}

static void after_interrupt(void *ctx, struct kmcl_server_channel *ch, bool did)
{
    (void)did;
    struct hvsim_netvsp *nv = ctx;
    note_failure(kmcl_server_channel_get_pointer_to_client_context(ch));
    control_flush(nv); /* completions may have freed sub-allocations answers wait for */
}

static void teardown(void *ctx, struct hvsim_vmbus_channel *vch, struct kmcl_server_channel *ch)
{
    (void)vch;
    struct hvsim_netvsp *nv = ctx;
    struct nv_queue *q = kmcl_server_channel_get_pointer_to_client_context(ch);
    pthread_mutex_lock(&nv->lock);
    q->alive = false;
    if (nv->queues[q->index] == q)
        nv->queues[q->index] = NULL;
    while (q->users) /* deliveries still inside kmcl calls for this channel */
        pthread_cond_wait(&nv->idle, &nv->lock);
    if (q->index == 0)
        session_reset(nv);
    struct rxpkt *all = q->all_pkts;
    q->all_pkts = q->free_pkts = NULL;
    pthread_mutex_unlock(&nv->lock);
    while (all) { /* disable ran every routine (cancelled): none is in flight */
        struct rxpkt *rp = all;
        all = rp->next_all;
        kmcl_server_packet_free(rp->pkt);
        free(rp);
    }
    free(q->txbuf);
    free(q->ranges);
    free(q->pfns);
    COUNT(nv, closes, 1);
    nv_log(nv, "channel %u (relid %u) closed", q->index, hvsim_vmbus_channel_relid(q->vch));
}

static const struct hvsim_vsp_ops ops = { .setup = setup, .after_interrupt = after_interrupt, .teardown = teardown };

/* ---- instances ---- */

struct hvsim_netvsp *hvsim_netvsp_create(const struct hvsim_netvsp_config *cfg)
{
    struct hvsim_netvsp_config c = cfg ? *cfg : (struct hvsim_netvsp_config){ 0 };
    if (!c.max_version)
        c.max_version = NVSP_VERSION_61;
    if (!c.queues)
        c.queues = 1;
    if (!c.mtu)
        c.mtu = 1500;
    if (!c.link_speed_bps)
        c.link_speed_bps = DEFAULT_LINK_BPS;
    static const uint8_t zero[6], dflt[6] = { 0x00, 0x15, 0x5d, 0x00, 0x00, 0x01 };
    if (memcmp(c.mac, zero, 6) == 0)
        memcpy(c.mac, dflt, 6);
    const char *bad = !nvsp_version_known(c.max_version) ? "unknown NVSP version"
                      : c.queues > HVSIM_NETVSP_MAX_QUEUES ? "too many queues"
                      : c.mtu < 576 || c.mtu > MAX_NDIS_MTU - ETH_HLEN ? "MTU outside 576..9202"
                      : (c.mac[0] & 1) ? "multicast MAC address"
                                       : NULL;
    if (bad) {
        char line[128];
        snprintf(line, sizeof line, "net: netvsp not created: %s", bad);
        if (c.log)
            c.log(c.log_ctx, line);
        else
            fprintf(stderr, "hvsim: %s\n", line);
        return NULL;
    }
    struct hvsim_netvsp *nv = calloc(1, sizeof *nv);
    if (!nv)
        return NULL;
    nv->cfg = c;
    nv->link_up = !c.link_down;
    pthread_mutex_init(&nv->lock, NULL);
    pthread_mutex_init(&nv->log_lock, NULL);
    pthread_cond_init(&nv->idle, NULL);
    session_reset(nv);
    nv->glue = hvsim_vsp_create(&ops, nv);
    if (!nv->glue) {
        hvsim_netvsp_destroy(nv);
        return NULL;
    }
    return nv;
}

void hvsim_netvsp_destroy(struct hvsim_netvsp *nv)
{
    if (!nv)
        return;
    hvsim_vsp_destroy(nv->glue); /* closes what a server left open (it should not) */
    session_reset(nv);
    pthread_cond_destroy(&nv->idle);
    pthread_mutex_destroy(&nv->log_lock);
    pthread_mutex_destroy(&nv->lock);
    free(nv);
}

struct hvsim_vmbus_device hvsim_netvsp_device(struct hvsim_netvsp *nv)
{
    const struct vmbus_guid nic = VMBUS_GUID_NIC;
    struct hvsim_vmbus_device d = { .name = "netvsc", .type = nic, .monitored = true };
    for (uint32_t i = 0; i < hvsim_vmbus_default_device_count; i++)
        if (vmbus_guid_equal(&hvsim_vmbus_default_devices[i].type, &nic))
            d = hvsim_vmbus_default_devices[i];
    hvsim_vsp_bind(nv->glue, &d);
    return d;
}

void hvsim_netvsp_set_backend(struct hvsim_netvsp *nv, hvsim_netvsp_tx_fn fn, void *ctx)
{
    pthread_mutex_lock(&nv->lock);
    while (nv->tx_calls)
        pthread_cond_wait(&nv->idle, &nv->lock);
    nv->tx = fn;
    nv->tx_ctx = ctx;
    pthread_mutex_unlock(&nv->lock);
}

#define LOAD(field) out->field = __atomic_load_n(&nv->st.field, __ATOMIC_RELAXED)

bool hvsim_netvsp_rx_buffer(struct hvsim_netvsp *nv, void **base, uint32_t *bytes, uint32_t *sub_size)
{
    pthread_mutex_lock(&nv->lock);
    const struct rbuf *rb = nv->s.rbuf;
    bool ok = rb && rb->npages;
    for (uint32_t i = 1; ok && i < rb->npages; i++)
        ok = rb->pages[i] == rb->pages[0] + (size_t)i * PAGE;
    if (ok) {
        *base = rb->pages[0];
        *bytes = rb->npages * PAGE;
        *sub_size = rb->sub_size;
    }
    pthread_mutex_unlock(&nv->lock);
    return ok;
}

void hvsim_netvsp_get_stats(struct hvsim_netvsp *nv, struct hvsim_netvsp_stats *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&nv->lock);
    out->version = nv->s.state != NV_NONE ? nv->s.version : 0;
    for (uint32_t i = 0; i < HVSIM_NETVSP_MAX_QUEUES; i++)
        out->queues_open += nv->queues[i] && nv->queues[i]->alive;
    out->packet_filter = nv->s.filter;
    out->link_up = nv->link_up;
    out->rndis_ready = nv->s.rndis_up && nv->s.state == NV_READY;
    if (nv->s.rbuf) {
        out->rx_sub_allocs = nv->s.rbuf->count;
        out->rx_sub_allocs_free = nv->s.rbuf->nfree_ctl + nv->s.rbuf->nfree_data;
    }
    pthread_mutex_unlock(&nv->lock);
    LOAD(opens);
    LOAD(closes);
    LOAD(tx_frames);
    LOAD(tx_bytes);
    LOAD(rx_frames);
    LOAD(rx_bytes);
    LOAD(rx_completions);
    LOAD(tx_bad_rndis);
    LOAD(tx_bad_section);
    LOAD(tx_bad_range);
    LOAD(tx_no_rc);
    LOAD(tx_dropped);
    LOAD(rx_no_buffer);
    LOAD(rx_filtered);
    LOAD(rx_link_down);
    LOAD(rx_not_ready);
    LOAD(rx_bad);
    LOAD(nvsp_control);
    LOAD(nvsp_errors);
    LOAD(buffer_refusals);
    LOAD(rndis_control);
    LOAD(rndis_answers);
    LOAD(rndis_ignored);
    LOAD(oids_unsupported);
    LOAD(control_waits);
    LOAD(control_dropped);
    LOAD(link_changes);
    LOAD(indications);
    LOAD(sub_channels_offered);
    LOAD(indirection_tables);
    LOAD(revokes);
    LOAD(channel_failures);
}

void hvsim_netvsp_format_stats(const struct hvsim_netvsp_stats *s, char *buf, size_t size)
{
    snprintf(buf, size,
             "NVSP %s, link %s, %u queues open, filter 0x%x, tx %llu frames %llu bytes, rx %llu frames %llu bytes "
             "(%llu completed), tx drops: %llu bad RNDIS, %llu bad section, %llu bad range, %llu without RC, %llu "
             "frames; rx drops: %llu no buffer, %llu filtered, %llu link down, %llu not ready, %llu bad; %llu NVSP "
             "control, %llu NVSP errors, %llu buffer refusals, %llu RNDIS control, %llu answers (%llu waited, %llu "
             "dropped), %llu unsupported OIDs, %llu link changes, %llu sub-channels offered, %llu revokes, %llu "
             "channel failures",
             s->version ? version_name(s->version) : "-", s->link_up ? "up" : "down", s->queues_open,
             s->packet_filter, (unsigned long long)s->tx_frames, (unsigned long long)s->tx_bytes,
             (unsigned long long)s->rx_frames, (unsigned long long)s->rx_bytes, (unsigned long long)s->rx_completions,
             (unsigned long long)s->tx_bad_rndis, (unsigned long long)s->tx_bad_section,
             (unsigned long long)s->tx_bad_range, (unsigned long long)s->tx_no_rc, (unsigned long long)s->tx_dropped,
             (unsigned long long)s->rx_no_buffer, (unsigned long long)s->rx_filtered,
             (unsigned long long)s->rx_link_down, (unsigned long long)s->rx_not_ready, (unsigned long long)s->rx_bad,
             (unsigned long long)s->nvsp_control, (unsigned long long)s->nvsp_errors,
             (unsigned long long)s->buffer_refusals, (unsigned long long)s->rndis_control,
             (unsigned long long)s->rndis_answers, (unsigned long long)s->control_waits,
             (unsigned long long)s->control_dropped, (unsigned long long)s->oids_unsupported,
             (unsigned long long)s->link_changes, (unsigned long long)s->sub_channels_offered,
             (unsigned long long)s->revokes, (unsigned long long)s->channel_failures);
}
