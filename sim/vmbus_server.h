/*
 * vmbus_server: hvsim's VMBus server, the host side of channel management (hv/vmbus/proto/vmbus_proto.h): version
 * negotiation, offers, the GPADL table, open/close, rescind, sub-channels, MODIFYCHANNEL, UNLOAD,
 * monitor pages, and channel signalling both ways. It sits on a struct hvsim (sim/hvsim.h): it takes
 * the guest's channel messages on message ports and its channel signals on event ports, and answers
 * by posting SynIC messages to the guest's message SINT and setting SIEF bits.
 *
 * Devices are offered from a table given at creation; the VSPs behind them attach through the
 * callbacks of struct hvsim_vmbus_device (the test device's, sim/vsp/vsp_test.c, serves its rings with
 * kmcl's ring layer). Without callbacks a device accepts open and close and does nothing else.
 *
 * Nothing the guest sends is trusted: every message is checked (vmbus_msg_check, then relids, GPADL
 * handles, PFNs against guest RAM, ring offsets), a bad one is logged as a guest error through the
 * hvsim log ("hvsim: vmbus: guest error: ...", verbosity 0) and answered with a failure status where
 * the protocol has one (HVSIM_VMBUS_STATUS_FAILED), else dropped. Notable events (version
 * negotiated, channel opened/closed, rescind, unload) are logged at verbosity 0, every message in
 * and out at verbosity 1.
 *
 * Threads: the guest's messages are queued by the port handlers (HvPostMessage gets
 * INSUFFICIENT_BUFFERS while that inbox holds HVSIM_VMBUS_INBOX_DEPTH messages, as a busy host
 * answers) and handled on the server's own thread, in arrival order. Host -> guest messages go
 * through an outbox served by that thread, which applies the configured delays and reordering and
 * retries while the guest's SINT queue is full: a message is never dropped. Every function may be
 * called from any thread that does not hold the hvsim mutex, except where noted.
 * Lifetime: hvsim_vmbus_create after hvsim_create; hvsim_vmbus_destroy before hvsim_destroy.
 *
 * Limitation: hvsim hands a VSP each ring as one host pointer, so each ring of a channel (the pages
 * before the downstream offset, and the pages from it on) must be physically contiguous in guest
 * memory; OPENCHANNEL with a scattered ring is refused with a failure status and a log line. A real
 * host maps any PFN list; hvrt's guest allocates rings contiguously.
 */
#ifndef SIM_VMBUS_SERVER_H
#define SIM_VMBUS_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include "hv/vmbus/proto/vmbus_proto.h"
#include "sim/hvsim.h"

struct hvsim_vmbus;
struct hvsim_vmbus_channel;

/* The message connection id VERSION_RESPONSE returns from 5.0 on: the guest posts every later message
 * there (Hyper-V's and OpenVMM's VMBUS_MESSAGE_REDIRECT_CONNECTION_ID, mu_msvm ChannelMessages.h).
 * The server also keeps taking messages on 1 and 4 and counts which one the guest used. */
#define HVSIM_VMBUS_CONN_REDIRECT 0x800074u
/* Channel relid r has connection id BASE + r (its OFFERCHANNEL connection_id and event port). */
#define HVSIM_VMBUS_CONN_CHANNEL_BASE 0x2000u
/* The status of every refused GPADL, open and modify (NT STATUS_UNSUCCESSFUL; guests test != 0). */
#define HVSIM_VMBUS_STATUS_FAILED 0xC0000001u
#define HVSIM_VMBUS_MAX_GPADLS 4096u     /* live GPADLs (created or being built) */
#define HVSIM_VMBUS_INBOX_DEPTH 1024u    /* guest messages waiting for the server thread */
#define HVSIM_VMBUS_MAX_SUB_CHANNELS 64u /* per primary channel */

/* Misbehaviour seen from real hosts, switchable for tests (bit flags of hvsim_vmbus_config.hazards). */
enum hvsim_vmbus_hazard {
    /* On every good OPENCHANNEL the channel's SIEF bit is set (and the SINT raised) before
     * OPENCHANNEL_RESULT is posted. */
    HVSIM_VMBUS_IRQ_BEFORE_OPEN_RESULT = 1u << 0,
    /* The device's on_open may write into its ring at once (hvsim_vmbus_send_on_open tells it) and
     * the server signals the channel right after posting OPENCHANNEL_RESULT. */
    HVSIM_VMBUS_SEND_ON_OPEN = 1u << 1,
    /* Every host -> guest message and hazard signal waits response_delay_us in the outbox (order
     * kept). */
    HVSIM_VMBUS_DELAY_RESPONSES = 1u << 2,
    /* The outbox collects what it is given for a window (response_delay_us, 0: 2 ms) and then sends
     * the responses to distinct requests in it - GPADL_CREATED, GPADL_TORNDOWN, OPENCHANNEL_RESULT,
     * MODIFYCHANNEL_RESPONSE - newest first, in the places those responses held. Every other message
     * (VERSION_RESPONSE, offers, ALLOFFERS_DELIVERED, rescinds, UNLOAD_RESPONSE) and every signal
     * keeps its place, so offers still precede ALLOFFERS_DELIVERED. Combined with DELAY_RESPONSES,
     * the window is the delay. */
    HVSIM_VMBUS_REORDER_RESPONSES = 1u << 3,
    /* Every OPENCHANNEL that would succeed is answered by RESCIND_CHANNELOFFER for the channel and
     * then OPENCHANNEL_RESULT with a failure status (Hyper-V can do either order; the relid stays
     * reserved until RELID_RELEASED); the device never sees on_open. */
    HVSIM_VMBUS_RESCIND_DURING_OPEN = 1u << 4,
    /* REQUESTOFFERS also gets, before the good offers: an offer with relid 0, one with relid 4096, an
     * OFFERCHANNEL of 100 bytes and a message of unknown type 99; and after the good offers (just
     * before ALLOFFERS_DELIVERED) a second offer with the first good offer's relid and another
     * instance GUID. None of them is a channel of the server's. */
    HVSIM_VMBUS_BAD_OFFERS = 1u << 5,
    /* After ALLOFFERS_DELIVERED: a GPADL_CREATED (handle 0x0BAD0BAD, status 0) and an
     * OPENCHANNEL_RESULT (status 0) for the first offered relid, which nobody asked for. */
    HVSIM_VMBUS_UNASKED_RESPONSES = 1u << 6,
    /* Every GPADL_HEADER for a primary channel that is not open (its ring GPADL, say) makes the server
     * rescind that channel at once, before the GPADL is complete: RESCIND_CHANNELOFFER goes out
     * first, the bodies are still taken, and the complete GPADL is answered GPADL_CREATED with a
     * failure status (what OpenVMM answers for a GPADL completed on a revoked channel), late_ms
     * later. Until that answer the GPADL is outstanding: a RELID_RELEASED for its relid meanwhile is
     * a guest error. */
    HVSIM_VMBUS_RESCIND_DURING_GPADL = 1u << 7,
    /* A GPADL_TEARDOWN for a GPADL of a rescinded channel is answered late_ms late (the GPADL itself
     * is gone at once). */
    HVSIM_VMBUS_LATE_TORNDOWN_AFTER_RESCIND = 1u << 8,
    /* The host paces sub-channel opens and withdraws a queue meanwhile: when the guest opens a
     * sub-channel, the server first rescinds the primary's highest-index sub-channel that is
     * offered and not open, then answers the open. */
    HVSIM_VMBUS_RESCIND_SUB_DURING_OPENS = 1u << 9,
    /* From REQUESTOFFERS on, every churn_period_ms the server either hot-adds a device "churn" (the
     * keyboard type, no VSP) or rescinds the one it added, churn_rounds times: offers and rescinds
     * every few ms, unrelated to anything the guest waits for. */
    HVSIM_VMBUS_OFFER_CHURN = 1u << 10,
};

/* One device to offer. The callbacks run on the server's thread, one at a time and in the order of
 * the events, with no lock held: they may call any hvsim_vmbus_* function (except
 * hvsim_vmbus_destroy and hvsim_vmbus_flush, which wait for that thread) and hvsim functions; they
 * must not block for long (the server handles nothing meanwhile). The server copies the struct; ctx
 * stays the caller's. */
struct hvsim_vmbus_device {
    const char *name;               /* "netvsc", "storvsc", "heartbeat", ... for logs (copied) */
    struct vmbus_guid type, instance;
    uint16_t flags;                 /* VMBUS_OFFER_* */
    bool monitored;                 /* allocate a monitor id (guest signals through the monitor page) */
    bool dedicated_interrupt;
    uint16_t sub_channels;          /* offered when the primary channel opens (the test device) */
    uint8_t user_defined[VMBUS_OFFER_USER_DEFINED]; /* e.g. the pipe mode of the IC services */
    /* A channel opened: its rings are in guest memory at out_ring (host -> guest, the GPADL's pages
     * from downstream offset on) and in_ring (guest -> host), each control page + data; the
     * pointers stay valid until on_close returns. */
    void (*on_open)(void *ctx, struct hvsim_vmbus_channel *ch, void *in_ring, uint32_t in_bytes, void *out_ring,
                    uint32_t out_bytes);
    /* The channel closed: CLOSECHANNEL, UNLOAD, a rescind, or the server's destruction (then on the
     * destroying thread). Called exactly once per on_open. */
    void (*on_close)(void *ctx, struct hvsim_vmbus_channel *ch);
    /* The guest signalled the open channel (HvSignalEvent on its connection id, its monitor bit,
     * or below 2.4 its interrupt-page bit); signals that arrive together give one call. */
    void (*on_signal)(void *ctx, struct hvsim_vmbus_channel *ch);
    void *ctx;
};

struct hvsim_vmbus_config {
    uint32_t max_version;        /* highest version accepted (VMBUS_VERSION_*, a known one); 0: 6.0 */
    uint32_t features;           /* 6.0 features offered in VERSION_RESPONSE2; 0: none */
    uint32_t hazards;            /* enum hvsim_vmbus_hazard bits */
    uint32_t response_delay_us;  /* with HVSIM_VMBUS_DELAY_RESPONSES / _REORDER_RESPONSES */
    uint32_t monitor_latency_us; /* how often the guest's monitor page is scanned; 0: 100 */
    const struct hvsim_vmbus_device *devices;
    uint32_t device_count;       /* at most VMBUS_MAX_RELID */
    /* With rescind_device set: the first time a device of that name has its primary channel opened,
     * the server rescinds it rescind_after_ms later (hvsim --vmbus-rescind-after-ms NAME:MS). */
    const char *rescind_device;
    uint32_t rescind_after_ms;
    uint32_t late_ms;            /* RESCIND_DURING_GPADL, LATE_TORNDOWN_AFTER_RESCIND: how late; 0: 50 */
    uint32_t churn_period_ms;    /* OFFER_CHURN: 0: 20 */
    uint32_t churn_rounds;       /* OFFER_CHURN: offers plus rescinds; 0: 100 */
};

/* The standard set, in this relid order (1..9 after REQUESTOFFERS of a fresh server; instance GUIDs
 * are fixed: 68767369-6d00-4000-8000-0000000000NN with NN the list position, 01..07):
 *  netvsc (NIC, monitored), storvsc (SCSI, monitored), heartbeat, shutdown, timesync, KVP (IC
 *  services: flags ENUMERATE_DEVICE_INTERFACE | NAMED_PIPE_MODE, pipe mode MESSAGE (4) in the first
 *  user_defined u32, as OpenVMM offers them; not monitored), and hvsim's test device (monitored,
 *  2 sub-channels when its primary opens). The NIC and SCSI offers carry no flags: OpenVMM's device
 *  channels set none (bits 0x2 and 0x4 mean confidential rings there). */
extern const struct hvsim_vmbus_device hvsim_vmbus_default_devices[];
extern const uint32_t hvsim_vmbus_default_device_count;

/* NULL (with a log line) on a bad configuration, a connection id already taken (one server per
 * model) or out of resources. Registers the message port VMBUS_CONN_MESSAGE, the event port
 * VMBUS_CONN_EVENT (pre-2.4 signalling through the interrupt page), from max_version 5.0 on the
 * message ports VMBUS_CONN_MESSAGE_MULTICLIENT and HVSIM_VMBUS_CONN_REDIRECT (an older host has
 * neither: HvPostMessage on them gets INVALID_CONNECTION_ID), and one event port per offer
 * (HVSIM_VMBUS_CONN_CHANNEL_BASE + relid, from the offer until its relid is freed). */
struct hvsim_vmbus *hvsim_vmbus_create(struct hvsim *sim, const struct hvsim_vmbus_config *cfg);
/* Stops the thread, runs the callbacks still queued, closes open channels (on_close on the caller's
 * thread), unregisters the ports and frees everything. */
void hvsim_vmbus_destroy(struct hvsim_vmbus *vb);

/* Host actions. */
/* Rescinds an offer (sub-channels of a primary first): an open channel is closed host-side first
 * (on_close), then the guest gets RESCIND_CHANNELOFFER; the relid stays reserved until the guest
 * sends RELID_RELEASED (or UNLOAD). An offer the guest never saw just goes. false: no such offer. */
bool hvsim_vmbus_rescind(struct hvsim_vmbus *vb, uint32_t relid);
/* Offers count more sub-channels of an offered primary (the lowest indexes no live sub-channel of it
 * uses).
 * false: no such primary, or relids, ports or the per-primary limit ran out (some may have been
 * offered). */
bool hvsim_vmbus_offer_sub_channels(struct hvsim_vmbus *vb, uint32_t primary_relid, uint16_t count);
/* Hot-adds a device (copied): offered at once if the guest already asked for offers. Returns its
 * relid, 0 if relids or ports ran out. */
uint32_t hvsim_vmbus_offer(struct hvsim_vmbus *vb, const struct hvsim_vmbus_device *dev);
/* Tells the guest the channel has data: from 2.4 on its relid bit in the SIEF block of the
 * connection's message SINT (2 unless the guest chose another at >= 5.0) on its target VP, the SINT
 * raised if the bit was clear; below 2.4 bit 0 there and the relid bit in the parent -> child half of
 * the interrupt page. false: the channel is not open, its target VP is VMBUS_TARGET_VP_NO_INTERRUPT,
 * or that VP's SynIC/SIEF page is off. Any thread, also from callbacks. */
bool hvsim_vmbus_signal_guest(struct hvsim_vmbus_channel *ch);
uint32_t hvsim_vmbus_channel_relid(const struct hvsim_vmbus_channel *ch);
uint32_t hvsim_vmbus_channel_target_vp(const struct hvsim_vmbus_channel *ch);
uint16_t hvsim_vmbus_channel_sub_index(const struct hvsim_vmbus_channel *ch); /* 0: primary */
/* The server's copy of the channel's device (valid until hvsim_vmbus_destroy). */
const struct hvsim_vmbus_device *hvsim_vmbus_channel_device(const struct hvsim_vmbus_channel *ch);
/* HVSIM_VMBUS_SEND_ON_OPEN is on: a VSP may write its first packet into the ring in on_open. */
bool hvsim_vmbus_send_on_open(const struct hvsim_vmbus_channel *ch);
/* The page list of a GPADL the guest created for this channel or its primary (VSPs that map
 * buffers the guest hands over by GPADL handle, e.g. netvsc's receive and send buffers). Only a
 * complete GPADL (every PFN received) that starts at byte 0 of its first page qualifies, as the
 * buffers of netvsc and every ring do. true: *pfns_out is a malloc'd copy of its *count_out (> 0)
 * page numbers, each a page of guest RAM (checked when the GPADL was created), freed by the
 * caller. false (nothing allocated): no such handle, another device's, still being built, a
 * nonzero byte offset, or out of memory. Any thread, also from callbacks. A later GPADL_TEARDOWN
 * does not reach the copy: a VSP that keeps using the pages after the guest tore the GPADL down
 * only touches guest RAM (the guest's problem, as on Hyper-V with a guest that revokes late). */
bool hvsim_vmbus_gpadl_pfns(struct hvsim_vmbus_channel *ch, uint32_t handle, uint64_t **pfns_out,
                            uint32_t *count_out);

/* State, for tests and the exit report. */
struct hvsim_vmbus_stats {
    uint32_t version;             /* negotiated, 0 if none */
    uint32_t offers, channels_open, gpadls, sub_channels; /* now: offers (relids in use), open channels,
                                                             live GPADLs, sub-channel offers */
    uint64_t messages_in, messages_out, guest_errors, opens, closes, rescinds, gpadls_created, gpadls_torn_down,
        guest_signals, monitor_signals, host_signals, unloads;
    /* Which connection id the guest's messages came on (messages_in is their sum). */
    uint64_t messages_conn_message, messages_conn_multiclient, messages_conn_redirect;
    uint64_t post_retries;        /* outbox posts retried because the guest's SINT queue was full */
};
void hvsim_vmbus_get_stats(struct hvsim_vmbus *vb, struct hvsim_vmbus_stats *out);
/* Blocks until the server is idle: every guest message handled, every callback run and the outbox
 * empty (each message in the guest's SINT slot or hvsim's queue behind it), or timeout_ms: false.
 * For tests; not from a callback. */
bool hvsim_vmbus_flush(struct hvsim_vmbus *vb, uint32_t timeout_ms);

#endif
