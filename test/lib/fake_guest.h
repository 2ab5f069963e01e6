/*
 * The fake guest of the host-component tests (test/host/): one guest, written once, that plays a
 * Hyper-V guest against an in-process hvsim (sim/hvsim.h) and, when there is one, hvsim's VMBus
 * server (sim/vmbus_server.h), on the test's own thread.
 *
 * It does what a guest does, the way a guest does it, and nothing hvsim could not see: the SynIC set
 * up through hvsim_wrmsr, HvPostMessage and HvSignalEvent with their inputs in guest RAM, messages
 * read from a SINT's slot (atomic loads, message_type cleared last, EOM when another is pending),
 * event flags taken from the SIEF page, rings allocated and initialised in guest RAM with kmcl's ring
 * layer as the guest's endpoints (writer of the guest -> host ring, reader of the host -> guest ring).
 *
 * A test embeds a struct fake_guest in its fixture (fg_fixture_new, fg_init ... fg_destroy in its
 * release function, fg_teardown as the cmocka teardown) and reaches hvsim and the server through it
 * (fg->sim, fg->vb). The fixture's own records (device callbacks, interrupts) may
 * share fg->lock and fg->changed, which guard the log record.
 *
 * Per VP: the SynIC pages and the hypercall input page of each VP are at fixed addresses (FG_*_GPA
 * below, for up to FG_MAX_VPS VPs), so functions that act on one VP take it as a parameter and may be
 * called from that VP's thread (the ones that assert only from cmocka's thread). The VMBus side
 * (messages, GPADLs, channels) runs on the test thread: it posts from VP 0 and receives on
 * (ctl_vp, ctl_sint), VP 0 and SINT 2 by default.
 *
 * Parameters, where the four tests differ:
 *  - retries: fg_post_once is one hypercall; fg_post_on retries INSUFFICIENT_BUFFERS as a guest
 *    does and returns the status; fg_post asserts success.
 *  - GPADL handles: the caller names one (fg_create_gpadl, fg_create_contiguous), or takes the next
 *    free one from fg_next_gpadl (fg_ch_open does).
 *  - a full guest -> host ring: struct fg_channel's when_full (strict: wait for the host's signal,
 *    a lost one fails; or poll).
 *
 * Every wait is bounded (FG_WAIT_MS, generous: the tests also run under ASan/UBSan and TSan on a
 * loaded machine). Include after <cmocka.h> (and its prerequisites).
 */
#ifndef TEST_LIB_FAKE_GUEST_H
#define TEST_LIB_FAKE_GUEST_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/proto/hvdefs.h"
#include "hv/vmbus/proto/vmbus_proto.h"
#include "kmcl/core/packet.h"
#include "kmcl/core/ring.h"
#include "sim/hvsim.h"
#include "sim/vmbus_server.h"
#include "test/lib/test_util.h"

/* Guest-physical layout (RAM of at least 8 MiB when the arena is used, 4 MiB otherwise). */
#define FG_MAX_VPS 16u
#define FG_HYPERCALL_GPA 0x1000u
#define FG_SIMP_GPA(vp) (0x100000u + (vp) * 0x2000u)
#define FG_SIEFP_GPA(vp) (0x101000u + (vp) * 0x2000u)
#define FG_INPUT_GPA(vp) (0x200000u + (vp) * 0x1000u) /* hypercall input, one page per VP */
#define FG_INT_PAGE_GPA 0x210000u                      /* the VMBus interrupt page (below 5.0) */
#define FG_MON1_GPA 0x211000u
#define FG_MON2_GPA 0x212000u
#define FG_ARENA_GPA 0x400000u /* fg_alloc_pages hands out pages from here on */
#define FG_SINT_VECTOR(s) (0x30u + (s))
#define FG_GUEST_OS_ID (HV_GUEST_OS_ID_OPEN_SOURCE | (0x7full << 56))
#define FG_WAIT_MS 5000
#define FG_MAX_OFFERS 64
#define FG_FIRST_GPADL 0x100u /* fg_next_gpadl's first handle */

/* A channel message as received (the payload of the SynIC message). */
struct fg_msg {
    uint32_t type, size;
    union {
        uint8_t bytes[HV_MESSAGE_PAYLOAD_MAX + 16];
        struct vmbus_msg_header hdr;
        struct vmbus_msg_offer_channel offer;
        struct vmbus_msg_relid relid;
        struct vmbus_msg_version_response2 version;
        struct vmbus_msg_gpadl_created created;
        struct vmbus_msg_gpadl_torndown torndown;
        struct vmbus_msg_open_result open;
        struct vmbus_msg_modify_channel_response modify;
    } u;
};

struct fg_config {
    struct hvsim_config hv; /* vp_count (1..FG_MAX_VPS) etc.; log and log_ctx are the fake guest's */
    uint64_t ram_size;
    hvsim_raise_fn raise;   /* NULL: interrupts are ignored */
    void *raise_ctx;
    /* Also given each log line (fg->lock held), e.g. to count some of them. NULL: none. */
    void (*on_log)(void *ctx, const char *line);
    void *on_log_ctx;
};

struct fake_guest {
    uint8_t *ram;
    uint64_t ram_size;
    uint32_t vp_count;
    struct hvsim *sim;
    struct hvsim_vmbus *vb; /* fg_vmbus_start; NULL before (and after a test destroys it) */
    /* The host's threads log into this record; lock guards it (and may guard the fixture's own
     * records, with changed broadcast when they change). */
    pthread_mutex_t lock;
    pthread_cond_t changed;
    struct reports logs;
    void (*on_log)(void *ctx, const char *line);
    void *on_log_ctx;
    /* The guest's VMBus side (test thread only). */
    uint32_t msg_conn;               /* where channel messages are posted */
    uint32_t ctl_vp, ctl_sint;       /* where the host's answers arrive */
    struct vmbus_msg_offer_channel offers[FG_MAX_OFFERS]; /* every OFFERCHANNEL seen, in order */
    unsigned offer_count;
    uint32_t rescinded[FG_MAX_OFFERS]; /* relids of every RESCIND_CHANNELOFFER seen */
    unsigned rescind_count;
    uint64_t next_page;  /* arena bump pointer (GPA) */
    uint32_t next_gpadl; /* fg_next_gpadl */
};

/* ---- the running test's fixture ---- */

/* A zeroed fixture of `size` bytes for the running test, which fg_teardown frees: release(fixture)
 * first (it destroys what the fixture holds, its fake guest included, but not the fixture's memory;
 * it must cope with a fixture only partly set up, as an assertion may fail half-way). One at a time:
 * a test that wants another frees the first with fg_teardown(NULL). */
void *fg_fixture_new(size_t size, void (*release)(void *fixture));
/* A cmocka teardown (state unused): frees the running test's fixture, if any, also after a failed
 * assertion. */
int fg_teardown(void **state);

/* ---- the model ---- */

/* Guest RAM (zeroed) and the hvsim model; SynIC off, no hypercall page. Asserts on failure. */
void fg_init(struct fake_guest *fg, const struct fg_config *cfg);
/* Destroys the server (if any), the model and the RAM. */
void fg_destroy(struct fake_guest *fg);

/* hvsim's log callback (ctx: the fake guest), for the sim's other parts (a VSP's config). */
void fg_log(void *ctx, const char *line);
void fg_dump_logs(struct fake_guest *fg);
/* How many log lines contain a (and b, unless NULL). */
unsigned fg_log_matches(struct fake_guest *fg, const char *a, const char *b);
/* *counter read under fg->lock; fg_wait_count waits (on fg->changed) until it is >= n or
 * timeout_ms passed, and returns it. */
unsigned fg_count(struct fake_guest *fg, const unsigned *counter);
unsigned fg_wait_count(struct fake_guest *fg, const unsigned *counter, unsigned n, int timeout_ms);

void fg_wrmsr(struct fake_guest *fg, uint32_t vp, uint32_t msr, uint64_t v); /* a #GP fails */
uint64_t fg_rdmsr(struct fake_guest *fg, uint32_t vp, uint32_t msr);
/* The guest OS id and the hypercall page (on VP 0). */
void fg_enable_hypercalls(struct fake_guest *fg);
/* SIMP, SIEFP, every SINT unmasked with vector FG_SINT_VECTOR(s), SCONTROL on. */
void fg_enable_synic(struct fake_guest *fg, uint32_t vp);
/* Both, on every VP. */
void fg_ready(struct fake_guest *fg);

/* The SynIC message slot of (vp, sint) and its fields, read as a guest reads them. */
uint8_t *fg_slot(struct fake_guest *fg, uint32_t vp, uint32_t sint);
uint32_t fg_slot_type(struct fake_guest *fg, uint32_t vp, uint32_t sint);
uint8_t fg_slot_flags(struct fake_guest *fg, uint32_t vp, uint32_t sint);
uint8_t fg_slot_size(struct fake_guest *fg, uint32_t vp, uint32_t sint);
const uint8_t *fg_slot_payload(struct fake_guest *fg, uint32_t vp, uint32_t sint);
/* The guest's consume protocol: fg_slot_free frees the slot (full barrier: a seq_cst store and
 * load, as gcc's TSan supports no fence) and says whether a message is pending; fg_consume also
 * writes EOM then. fg_slot_free asserts nothing (VP threads use it). */
bool fg_slot_free(struct fake_guest *fg, uint32_t vp, uint32_t sint);
void fg_consume(struct fake_guest *fg, uint32_t vp, uint32_t sint);
/* Event flag `flag` of (vp, sint) in the SIEF page: its word, the bit, clearing it, and taking it
 * (clear, and say whether it was set). */
uint64_t fg_event_word(struct fake_guest *fg, uint32_t vp, uint32_t sint, uint32_t flag);
bool fg_event_flag(struct fake_guest *fg, uint32_t vp, uint32_t sint, uint32_t flag);
void fg_event_clear(struct fake_guest *fg, uint32_t vp, uint32_t sint, uint32_t flag);
bool fg_event_take(struct fake_guest *fg, uint32_t vp, uint32_t sint, uint32_t flag);

/* HvPostMessage from vp with its input at gpa (fg_post_once: the VP's input page); the status.
 * size is the payload_size field (up to HV_MESSAGE_PAYLOAD_MAX bytes copied). */
uint16_t fg_post_at(struct fake_guest *fg, uint32_t vp, uint64_t gpa, uint32_t conn, uint32_t type,
                    const void *payload, uint32_t size);
uint16_t fg_post_once(struct fake_guest *fg, uint32_t vp, uint32_t conn, uint32_t type, const void *payload,
                      uint32_t size);
/* HvSignalEvent from vp, fast (registers) and slow (input page) forms; the status. */
uint16_t fg_signal_fast(struct fake_guest *fg, uint32_t vp, uint32_t conn, uint16_t flag);
uint16_t fg_signal_slow(struct fake_guest *fg, uint32_t vp, uint32_t conn, uint16_t flag);

/* ---- the guest's VMBus side ---- */

/* Creates the server (asserted) and resets the VMBus side: posts on VMBUS_CONN_MESSAGE, answers on
 * VP 0 SINT 2, arena and handles from the start. */
void fg_vmbus_start(struct fake_guest *fg, const struct hvsim_vmbus_config *cfg);
/* A copy of hvsim's default device table (calloc'ed: the caller frees it), to change and serve. */
struct hvsim_vmbus_device *fg_default_devices(void);
/* Waits for the server to go idle (a stuck server fails). */
void fg_flush(struct fake_guest *fg);

/* A channel message from VP 0, retrying INSUFFICIENT_BUFFERS as a guest does (100 us apart, a
 * bounded number of times); the last status. fg_post: on msg_conn, and it must succeed. */
uint16_t fg_post_on(struct fake_guest *fg, uint32_t conn, const void *msg, uint32_t size);
void fg_post(struct fake_guest *fg, const void *msg, uint32_t size);

/* The next message in (vp, sint)'s slot within timeout_ms: true and *m filled, consumed. */
bool fg_recv_on(struct fake_guest *fg, uint32_t vp, uint32_t sint, struct fg_msg *m, int timeout_ms);
/* The guest's receive loop: offers and rescinds may come at any time (sub-channels, rescinds) and
 * are recorded; the next other message must be of `type` (anything else, or nothing within
 * FG_WAIT_MS, fails). */
void fg_expect(struct fake_guest *fg, uint32_t type, struct fg_msg *m);
/* Once the server is idle: nothing more arrives / every offer and rescind waiting is recorded
 * (anything else fails). */
void fg_expect_nothing(struct fake_guest *fg);
void fg_drain_async(struct fake_guest *fg);
/* The last offer of relid (NULL: none); waits for it (fails after FG_WAIT_MS). */
const struct vmbus_msg_offer_channel *fg_offer_of(const struct fake_guest *fg, uint32_t relid);
void fg_wait_offer(struct fake_guest *fg, uint32_t relid);
bool fg_was_rescinded(const struct fake_guest *fg, uint32_t relid);

/* INITIATE_CONTACT with the monitor pages at FG_MON1_GPA / FG_MON2_GPA. */
struct vmbus_msg_initiate_contact fg_contact_msg(uint32_t version, uint32_t vp, uint64_t target_info);
/* The target info a Linux-like guest sends: the interrupt page below 5.0, SINT 2 from 5.0 on. */
uint64_t fg_target_info_for(uint32_t version, uint32_t features);
/* Negotiates exactly `version` from ctl_vp (conn 4 from 5.0 on, as Linux does); messages then go to
 * the connection id the host returned. */
void fg_connect(struct fake_guest *fg, uint32_t version);
/* REQUESTOFFERS; how many offers came before ALLOFFERS_DELIVERED. */
unsigned fg_request_offers(struct fake_guest *fg);

/* n contiguous zeroed guest pages from the arena (GPA). */
uint64_t fg_alloc_pages(struct fake_guest *fg, uint32_t n);
/* The next handle of the fake guest's own (FG_FIRST_GPADL, then up). */
uint32_t fg_next_gpadl(struct fake_guest *fg);
/* GPADL_HEADER + GPADL_BODYs for the given PFNs (one range, whole pages). */
void fg_send_gpadl(struct fake_guest *fg, uint32_t relid, uint32_t handle, const uint64_t *pfns, uint32_t n);
/* That, and GPADL_CREATED's status (the answer must name the handle and relid). */
uint32_t fg_create_gpadl(struct fake_guest *fg, uint32_t relid, uint32_t handle, const uint64_t *pfns, uint32_t n);
/* A GPADL that must succeed over n contiguous pages at gpa / over n new pages (their GPA returned). */
void fg_create_gpadl_at(struct fake_guest *fg, uint32_t relid, uint32_t handle, uint64_t gpa, uint32_t n);
uint64_t fg_create_contiguous(struct fake_guest *fg, uint32_t relid, uint32_t handle, uint32_t n);
/* GPADL_TEARDOWN, and its GPADL_TORNDOWN. */
void fg_teardown_gpadl(struct fake_guest *fg, uint32_t relid, uint32_t handle);
/* OPENCHANNEL (open id relid + 100; offset: the host -> guest ring's first page); fg_open_channel
 * also waits for the result and returns its status. */
void fg_send_open(struct fake_guest *fg, uint32_t relid, uint32_t handle, uint32_t offset, uint32_t vp);
uint32_t fg_open_channel(struct fake_guest *fg, uint32_t relid, uint32_t handle, uint32_t offset, uint32_t vp);
/* A GPADL of `pages` for relid and the channel opened on it (offset pages / 2, VP 0): its GPA. */
uint64_t fg_open_with_ring(struct fake_guest *fg, uint32_t relid, uint32_t handle, uint32_t pages);
/* A message that is only a relid (CLOSECHANNEL, RELID_RELEASED). */
void fg_send_relid(struct fake_guest *fg, uint32_t type, uint32_t relid);
/* The pending word of monitor id's trigger group in monitor page 2 (child -> parent), and setting
 * the id's bit as Linux signals a monitored channel. */
uint32_t *fg_monitor_pending(struct fake_guest *fg, uint32_t id);
void fg_set_monitor_bit(struct fake_guest *fg, uint32_t id);

/* ---- channels: the guest's ends of the rings ---- */

/* HvSignalEvent on relid's connection (from VP 0; must succeed). */
void fg_guest_signal(struct fake_guest *fg, uint32_t relid);
/* The host's signal for relid (its flag in VP 0's SINT 2 SIEF block): taken if set / waited for. */
bool fg_take_signal(struct fake_guest *fg, uint32_t relid);
bool fg_wait_signal(struct fake_guest *fg, uint32_t relid, int timeout_ms);

/* What a writer does while the guest -> host ring is full: reads what the host sent, and then */
enum fg_when_full {
    FG_FULL_WAIT_SIGNAL, /* waits for the host's signal: a signal the host forgets fails */
    FG_FULL_POLL,        /* sleeps briefly and tries again, for FG_WAIT_MS */
};

/* A channel as the guest holds it (its rings in guest RAM, targeting VP 0). */
struct fg_channel {
    uint32_t relid;
    uint64_t gpa; /* the ring pages: guest -> host ring, then host -> guest ring */
    uint32_t tx_pages, rx_pages;
    struct kmcl_ring tx, rx; /* writer of the guest -> host ring, reader of the other */
    uint8_t *bounce;         /* for wrapped packets (malloc'ed; fg_ch_free) */
    uint32_t bounce_size;
    uint64_t bounced; /* packets read through the bounce buffer */
    enum fg_when_full when_full; /* FG_FULL_WAIT_SIGNAL after fg_ch_rings */
};

/* Allocates and initialises the rings (as a guest does before OPENCHANNEL) and attaches the
 * guest's endpoints; c need not be initialised (and is not freed: fg_ch_free first to reuse one). */
void fg_ch_rings(struct fake_guest *fg, struct fg_channel *c, uint32_t relid, uint32_t tx_pages, uint32_t rx_pages);
/* A GPADL over both rings (fg_next_gpadl) and OPENCHANNEL to VP 0: the result must be success. */
void fg_ch_open_rings(struct fake_guest *fg, struct fg_channel *c);
void fg_ch_open(struct fake_guest *fg, struct fg_channel *c, uint32_t relid, uint32_t tx_pages, uint32_t rx_pages);
/* CLOSECHANNEL, then the server idle. */
void fg_ch_close(struct fake_guest *fg, struct fg_channel *c);
void fg_ch_free(struct fg_channel *c);
struct kmcl_ring_control *fg_ch_tx_control(struct fake_guest *fg, const struct fg_channel *c);
struct kmcl_ring_control *fg_ch_rx_control(struct fake_guest *fg, const struct fg_channel *c);

/* Called for each packet read (valid during the call). */
typedef void (*fg_pkt_fn)(void *ctx, const struct kmcl_ring_packet *p);

/* Reads up to max packets that are there now (fn for each), publishing as a guest does and
 * signalling the host when the reader says so; a bad ring fails. Returns how many were read. */
unsigned fg_ch_drain(struct fake_guest *fg, struct fg_channel *c, unsigned max, fg_pkt_fn fn, void *ctx);
/* One attempt to write into c->tx (signal: set when the host is to be signalled). */
typedef status_t (*fg_write_fn)(struct kmcl_ring *tx, void *ctx, bool *signal);
/* Writes with `write` until it fits, signalling as the writer says; while the ring is full, reads the
 * host's packets (fn) and then acts as c->when_full says. */
void fg_ch_send(struct fake_guest *fg, struct fg_channel *c, fg_write_fn write, void *wctx, fg_pkt_fn fn, void *ctx);
/* The same for one packet (kmcl_ring_write), and for an in-band one. */
void fg_ch_write(struct fake_guest *fg, struct fg_channel *c, const struct kmcl_ring_out *out, fg_pkt_fn fn,
                 void *ctx);
void fg_ch_inband(struct fake_guest *fg, struct fg_channel *c, uint64_t trans, uint16_t flags, const void *payload,
                  uint32_t len, fg_pkt_fn fn, void *ctx);
/* Reads what is there (fn for each packet); if nothing, waits for the host's signal: false if none
 * came within FG_WAIT_MS. */
bool fg_ch_more(struct fake_guest *fg, struct fg_channel *c, fg_pkt_fn fn, void *ctx);

/* A packet copied out, for tests that look at one answer at a time (fg_copy_pkt as the fn). */
struct fg_copy {
    unsigned count;
    struct kmcl_pkt_desc desc;
    uint32_t len;
    uint8_t payload[16384];
};
void fg_copy_pkt(void *ctx, const struct kmcl_ring_packet *p);
/* As a fn where no packet may come: any fails. */
void fg_no_pkt(void *ctx, const struct kmcl_ring_packet *p);
/* The next packet from the host into *cp (waits for the host's signal, FG_WAIT_MS). */
void fg_ch_one(struct fake_guest *fg, struct fg_channel *c, struct fg_copy *cp);
/* The host has nothing for us: an idle server, an empty ring. */
void fg_ch_expect_none(struct fake_guest *fg, struct fg_channel *c);

#endif
