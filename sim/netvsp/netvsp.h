/*
 * netvsp: hvsim's host side of the Hyper-V synthetic NIC ("netvsc", VMBUS_GUID_NIC): NVSP and RNDIS
 * over kmcl's server endpoint (sim/kmcl/server.h, through the VSP glue sim/vsp/vsp.h), as
 * drivers/netvsc/proto/PROTOCOL.md describes them; where that says "openvmm does X", this does X. Frames the
 * guest transmits go to a backend (the user-mode gateway sim/netvsp/netgw.h, a TAP device, or a test's
 * callback); frames for the guest come in through hvsim_netvsp_deliver from any thread.
 *
 * ---- What the guest sees ----
 *
 * Handshake (primary channel; every message checked with nvsp_msg_check(NVSP_TO_HOST)):
 *  - INIT {v}: v one of 1, 2, 4, 5, 6, 6.1 and not above the configured highest: INIT_COMPLETE
 *    {negotiated_version 0xFFFFFFFF (2 for v1), max_mdl_chain_len 34, status SUCCESS}, else status
 *    NONE (the guest tries its next version). Padded to 28 bytes. As openvmm.
 *  - SEND_NDIS_CONFIG (v >= 2) and SEND_NDIS_VERSION: an empty completion if RC. An MTU outside
 *    1514..9216 becomes 1514 (openvmm).
 *  - SEND_RECEIVE_BUFFER {gpadl, id}: needs SEND_NDIS_CONFIG first from v2 on. The GPADL's pages
 *    (hvsim_vmbus_gpadl_pfns) are cut into sub-allocations of 256 + MTU + 36 bytes (openvmm
 *    sub_allocation_size_for_mtu, no rounding: 1806 for MTU 1514), count = buffer / size:
 *    SEND_RECEIVE_BUFFER_COMPLETE {SUCCESS, 1 section {0, size, count, size * count}}. An unknown
 *    or incomplete GPADL, a missing NDIS config or a buffer smaller than one sub-allocation:
 *    {FAILURE, 0 sections} and a log line (openvmm stops serving the channel instead).
 *  - SEND_SEND_BUFFER {gpadl, id}: {SUCCESS, section size 6144}; an unknown GPADL: {FAILURE, 0}.
 *  - The channel is ready once NDIS config (v >= 2), NDIS version and both buffers are in, or at
 *    the first SEND_RNDIS_PACKET once everything but the send buffer is (openvmm
 *    is_ready_to_initialize).
 *  - SUB_CHANNEL {ALLOCATE, n} (v >= 5): n < queues: completion {SUCCESS, n} (type 133), then n
 *    sub-channels are offered (hvsim_vmbus_offer_sub_channels) and, once every one is open,
 *    SEND_INDIRECTION_TABLE {16 entries i % channels, offset 12} in-band without RC on the primary.
 *    Else {FAILURE, 0}.
 *  - OID_QUERY_EX (v >= 5): {NOT_SUPPORTED, 0}. SWITCH_DATA_PATH (v >= 4): an empty completion if
 *    RC (no VF here). REVOKE_RECEIVE_BUFFER / REVOKE_SEND_BUFFER: the buffers are dropped and the
 *    primary channel is no longer read (openvmm ends the channel's worker): the guest closes it.
 *  Protocol errors fail the channel, as openvmm ends its worker: a message nvsp_msg_check refuses
 *  (unknown type, wrong direction, too short), a type newer than the negotiated version, anything
 *  but INIT before a version, a repeated INIT, NDIS config/version or buffer, anything but
 *  SEND_RNDIS_PACKET on a sub-channel, a transfer-page packet from the guest. One log line, counted
 *  in nvsp_errors; the guest sees a silent channel.
 *
 * RNDIS (SEND_RNDIS_PACKET, channel type ignored: the RNDIS type decides): the message is read from
 * send-buffer section index * 6144 (size bytes, <= 6144, inside the buffer) or from the GPA-direct
 * ranges (at most HVSIM_NETVSP_MAX_TX_BYTES), copied into host memory first and then walked with
 * rndis_iter (RNDIS_ITER_PACKETS). A packet without RC is dropped (openvmm MissingTransactionId).
 *  - PACKETs (several back to back allowed): each frame (14 bytes .. the NDIS MTU) goes to the
 *    backend; OOB data or a vc_handle refuse the packet (openvmm). The NVSP packet is completed with
 *    SEND_RNDIS_PACKET_COMPLETE {SUCCESS}, or {FAILURE} when anything fails the checks (lying
 *    lengths or offsets, a section out of range, a range outside RAM): nothing of it is sent,
 *    counted, one rate-limited log line.
 *  - Control messages (primary only; on a sub-channel: FAILURE): the NVSP completion {SUCCESS}
 *    first, then the answer as a transfer-page packet (type 7, RC, pageset id = the receive
 *    buffer's id, one range = the message) with SEND_RNDIS_PACKET {1, 0xFFFFFFFF, 0}. The guest
 *    completes it; its sub-allocation is free again then. INITIALIZE -> INITIALIZE_CMPLT (openvmm's
 *    values: connectionless, 802.3, 8 packets per message, 0xEFFFFFFF, alignment 2^3); a second
 *    INITIALIZE gets status FAILURE (openvmm stops serving). QUERY -> QUERY_CMPLT for
 *    SUPPORTED_LIST, HARDWARE_STATUS, MEDIA_SUPPORTED/IN_USE, MAXIMUM_FRAME_SIZE (MTU - 14),
 *    MAXIMUM_TOTAL_SIZE, LINK_SPEED (100 bit/s units), CURRENT_PACKET_FILTER, MEDIA_CONNECT_STATUS
 *    (the link state: openvmm always says connected, this host can be unplugged),
 *    802_3_PERMANENT/CURRENT_ADDRESS, 802_3_MAXIMUM_LIST_SIZE (0), RECEIVE_SCALE_CAPABILITIES;
 *    others NOT_SUPPORTED. SET -> SET_CMPLT: CURRENT_PACKET_FILTER, RECEIVE_SCALE_PARAMETERS (as
 *    openvmm: a 40-byte Toeplitz key, a table of queue indexes), NETWORK_LAYER_ADDRESSES (ignored,
 *    as openvmm); others NOT_SUPPORTED (offloads are not offered). KEEPALIVE -> KEEPALIVE_CMPLT.
 *    HALT: nothing (openvmm). RESET, INDICATE_STATUS, completions: counted and ignored.
 *    Sub-allocations 0 .. min(16, count / 2) - 1 are kept for these answers (openvmm
 *    RX_RESERVED_CONTROL_BUFFERS); when none is free the answer waits (in order) until the guest
 *    completes one.
 *  - Link: hvsim_netvsp_set_link sends INDICATE_STATUS MEDIA_CONNECT / MEDIA_DISCONNECT (no buffer)
 *    once RNDIS is initialized; while down no frame goes either way. openvmm delays a second change
 *    by 5 s; this host sends each change at once (tests toggle on purpose).
 *
 * Receive (host -> guest): only with RNDIS initialized, a non-zero packet filter that takes the
 * frame (DIRECTED for our MAC, BROADCAST, MULTICAST/ALL_MULTICAST, PROMISCUOUS), the link up. The
 * queue: IPv4 TCP/UDP frames are hashed (Toeplitz with the guest's RSS key and table when it set
 * RECEIVE_SCALE_PARAMETERS, else a simple hash of the 4-tuple over the open channels), the rest go
 * to the primary. A free data sub-allocation gets the RNDIS PACKET: by default as openvmm writes
 * it (buffers.rs): msg_len = the whole sub-allocation, one checksum PPI (value 0: nothing claimed)
 * at offset 44, the frame at offset 256 (data_offset 248), the range = the whole sub-allocation;
 * with rx_compact as rndis_build_packet writes it (PPI right after the header, frame after it,
 * msg_len and range = the message). Sub-allocations that straddle pages are written piecewise
 * through the GPADL's page list. Then a transfer-page packet (type 7, WAIT_FOR_COMPLETION, one
 * range) with SEND_RNDIS_PACKET {0, 0xFFFFFFFF, 0}; the guest's completion frees the
 * sub-allocation. No free sub-allocation, or HVSIM_NETVSP_BACKLOG packets already queued for a full
 * ring: dropped and counted in rx_no_buffer. One frame per transfer-page packet (no batching).
 *
 * ---- Threads and locks ----
 * The VMBus server's thread runs every channel's executor (NVSP and RNDIS handling, the guest's
 * completions) and the glue's callbacks. hvsim_netvsp_deliver, hvsim_netvsp_set_link and the stats
 * may be called from any thread. Locks: each channel's kmcl lock (sim/kmcl/server.h), then the netvsp's
 * mutex, which guards the session state (version, buffers, sub-allocation free lists, packet
 * filter, RSS, the queue table, pending control answers) and is a leaf: nothing calls kmcl with it
 * held. kmcl calls from outside the executor (deliver, link changes) take one channel's lock at a
 * time; the one place two are held is a sub-channel's opened callback sending the indirection table
 * on the primary (sub-channel, then primary; never the reverse). A channel's state stays valid for
 * a deliver in progress: its teardown waits for every user to leave. The backend's tx callback runs
 * on the server's thread with a channel's lock held: it must copy the frame and return (it may not
 * call hvsim_netvsp_deliver; hand the frame to another thread). Counters are atomics.
 */
#ifndef SIM_NETVSP_H
#define SIM_NETVSP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim/vmbus_server.h"

#define HVSIM_NETVSP_MAX_QUEUES 8u
#define HVSIM_NETVSP_SEND_SECTION_SIZE 6144u    /* openvmm */
#define HVSIM_NETVSP_RESERVED_CONTROL 16u       /* openvmm RX_RESERVED_CONTROL_BUFFERS (at most) */
#define HVSIM_NETVSP_MAX_TX_BYTES (64u * 1024u) /* RNDIS bytes taken from one GPA-direct packet */
#define HVSIM_NETVSP_BACKLOG 64u                /* packets queued for a full ring before rx drops */
#define HVSIM_NETVSP_PENDING_CONTROL 64u        /* control answers waiting for a sub-allocation */
#define HVSIM_NETVSP_MAX_FRAME 9216u            /* the largest NDIS MTU openvmm accepts */

/* Guest -> host frames (the backend). Server thread, a channel's lock held: copy and return. */
typedef void (*hvsim_netvsp_tx_fn)(void *ctx, const uint8_t *frame, uint32_t len);

struct hvsim_netvsp_config {
    uint32_t max_version;   /* the highest NVSP version accepted (NVSP_VERSION_*); 0: 6.1 */
    uint32_t queues;        /* 1..HVSIM_NETVSP_MAX_QUEUES (the primary + sub-channels); 0: 1 */
    uint8_t mac[6];         /* all zero: 00:15:5d:00:00:01 */
    uint32_t mtu;           /* the IP MTU reported (OID_GEN_MAXIMUM_FRAME_SIZE, capped by the
                             * guest's NDIS MTU - 14); 0: 1500 */
    uint64_t link_speed_bps; /* OID_GEN_LINK_SPEED; 0: 10 Gbit/s */
    bool link_down;         /* start unplugged */
    bool rx_compact;        /* the rndis_build_packet layout for received frames (see above) */
    /* One line, no newline ("net: ..."); NULL: stderr with "hvsim: " in front. Called with no lock
     * of the netvsp's held, from any of the threads above. */
    void (*log)(void *ctx, const char *line);
    void *log_ctx;
};

struct hvsim_netvsp;

/* NULL: a bad configuration (logged) or out of memory. */
struct hvsim_netvsp *hvsim_netvsp_create(const struct hvsim_netvsp_config *cfg);
/* After every VMBus server that used it is destroyed (no channel open). */
void hvsim_netvsp_destroy(struct hvsim_netvsp *nv);
/* The "netvsc" entry of hvsim_vmbus_default_devices (same GUIDs, monitored, no sub-channels at
 * open) with its callbacks bound to this netvsp: put it in a copy of the device table. */
struct hvsim_vmbus_device hvsim_netvsp_device(struct hvsim_netvsp *nv);
/* Where guest frames go (fn NULL: dropped, counted). Any thread; when it returns, no call of the
 * previous backend is running or will start, so the old ctx may be freed. */
void hvsim_netvsp_set_backend(struct hvsim_netvsp *nv, hvsim_netvsp_tx_fn fn, void *ctx);
/* A frame for the guest (copied before return). true: placed in a channel (or queued behind a
 * full ring); false: dropped (counted by reason). Any thread; never from the backend callback. */
bool hvsim_netvsp_deliver(struct hvsim_netvsp *nv, const void *frame, uint32_t len);
/* A hostile host, for tests of guest drivers: `bytes` (at most a sub-allocation) written as they
 * are into a free data sub-allocation of the guest's receive buffer, then a transfer-page packet on
 * the primary naming them, with the range moved or resized and another page set id or NVSP type
 * when asked (0: the honest value). The guest's completion frees the sub-allocation as usual.
 * false: not ready or no sub-allocation free. Any thread. */
struct hvsim_netvsp_raw {
    int64_t range_offset_delta; /* added to the sub-allocation's offset */
    uint32_t range_len;         /* 0: len */
    uint16_t pageset_id;        /* 0: the receive buffer's id */
    uint32_t nvsp_type;         /* 0: SEND_RNDIS_PACKET */
};
bool hvsim_netvsp_deliver_raw(struct hvsim_netvsp *nv, const void *bytes, uint32_t len,
                              const struct hvsim_netvsp_raw *how);
/* For tests that check where the guest's frames come from or corrupt the buffer on purpose: the
 * host address of the receive buffer's first page, its size and the size of its sub-allocations
 * (each received frame's RNDIS message is written into one, from its start), when the guest has
 * handed one over and its pages are one contiguous run of host memory (as guest RAM is in the
 * hosted tests). false: no receive buffer, or a scattered one. The memory is guest RAM (valid while
 * that lives). Any thread. */
bool hvsim_netvsp_rx_buffer(struct hvsim_netvsp *nv, void **base, uint32_t *bytes, uint32_t *sub_size);
/* Plugs or unplugs the cable: INDICATE_STATUS to an initialized guest. Any thread. */
void hvsim_netvsp_set_link(struct hvsim_netvsp *nv, bool up);
bool hvsim_netvsp_link_up(struct hvsim_netvsp *nv);
void hvsim_netvsp_mac(const struct hvsim_netvsp *nv, uint8_t mac[6]);

struct hvsim_netvsp_stats {
    /* now */
    uint32_t version;        /* NVSP version of the current session, 0: none */
    uint32_t queues_open;    /* channels open (primary + sub-channels) */
    uint32_t packet_filter;  /* the guest's OID_GEN_CURRENT_PACKET_FILTER */
    bool link_up, rndis_ready;
    uint32_t rx_sub_allocs, rx_sub_allocs_free; /* of the receive buffer, 0 without one */
    /* counters */
    uint64_t opens, closes;
    uint64_t tx_frames, tx_bytes;   /* guest -> backend */
    uint64_t rx_frames, rx_bytes;   /* host -> guest, handed to a channel */
    uint64_t rx_completions;        /* transfer-page packets the guest completed (data and control) */
    uint64_t tx_bad_rndis;          /* RNDIS that failed the checks: NVSP packet completed FAILURE */
    uint64_t tx_bad_section;        /* section index/size outside the send buffer, or none */
    uint64_t tx_bad_range;          /* GPA ranges outside RAM, too long, or missing */
    uint64_t tx_no_rc;              /* SEND_RNDIS_PACKET without a completion request: dropped */
    uint64_t tx_dropped;            /* frames not sent: runt/oversize, link down, no backend */
    uint64_t rx_no_buffer;          /* no free sub-allocation, or the channel's backlog is full */
    uint64_t rx_filtered;           /* the packet filter (0, or not for this filter) */
    uint64_t rx_link_down;
    uint64_t rx_not_ready;          /* no RNDIS session or receive buffer */
    uint64_t rx_bad;                /* shorter than 14 bytes or longer than the NDIS MTU */
    uint64_t nvsp_control;          /* NVSP control messages handled (all but SEND_RNDIS_PACKET) */
    uint64_t nvsp_errors;           /* protocol errors that failed the channel */
    uint64_t buffer_refusals;       /* receive/send buffers refused (FAILURE status) */
    uint64_t rndis_control;         /* RNDIS control messages handled */
    uint64_t rndis_answers;         /* *_CMPLT and INDICATE_STATUS sent */
    uint64_t rndis_ignored;         /* HALT, RESET, INDICATE_STATUS, completions from the guest */
    uint64_t oids_unsupported;      /* QUERY/SET answered NOT_SUPPORTED */
    uint64_t control_waits;         /* answers that had to wait for a sub-allocation */
    uint64_t control_dropped;       /* answers dropped: the waiting queue was full */
    uint64_t link_changes, indications;
    uint64_t sub_channels_offered, indirection_tables;
    uint64_t revokes;
    uint64_t channel_failures;      /* channels that failed (protocol errors, bad rings, completions
                                     * for transactions never sent) */
};
void hvsim_netvsp_get_stats(struct hvsim_netvsp *nv, struct hvsim_netvsp_stats *out);
/* One line of the counters (no newline) for exit reports and the control port. */
void hvsim_netvsp_format_stats(const struct hvsim_netvsp_stats *s, char *buf, size_t size);

#endif
