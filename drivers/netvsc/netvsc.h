/*
 * netvsc: the guest driver of Hyper-V's synthetic NIC (VMBUS_GUID_NIC), a kmcl client
 * (kmcl/channel.h). Protocol: drivers/netvsc/proto/PROTOCOL.md (NVSP + RNDIS); wire formats and checkers:
 * nvsp_msg.h, rndis_msg.h.
 *
 * netvsc_attach (PASSIVE) runs the whole handshake on the primary channel: NVSP INIT from the
 * newest version the config allows down to 1 (the NDIS version that goes with it), NDIS config,
 * the receive buffer (a GPADL, cfg.recv_buf_bytes) and the send buffer (cfg.send_buf_bytes), RNDIS
 * INITIALIZE, queries of the MAC address, MTU, link speed and media state, the packet filter, and,
 * with NVSP 5 or later and more than one queue asked for, sub-channels (vRSS): one queue per
 * channel, each on its own CPU, and RSS parameters (Toeplitz over IPv4 TCP/UDP 4-tuples, an
 * indirection table spreading the 128 entries over the queues) so the host picks a flow's queue;
 * the host's send indirection table is recorded. Every step waits for its
 * answer with a timeout and a clear error.
 *
 * Receive: the host's transfer-page packets (ranges of the receive buffer holding RNDIS messages)
 * are handled at DISPATCH on the queue's CPU: every range checked against the buffer, every RNDIS
 * message with rndis_msg_check; each frame goes to ops->receive (valid during the call: it points
 * into the receive buffer, which the host owns again once the packet is completed, right after);
 * the packet is completed back to the host. Status indications (media connect/disconnect) update
 * the link state and call ops->link. Anything malformed is dropped with a counter and a
 * rate-limited log line; the channel goes on.
 *
 * Transmit, zero copy: netvsc_tx_begin reserves a send-buffer section and returns where the frame
 * goes (after room for the RNDIS header); netvsc_tx_end writes the header and sends NVSP
 * SEND_RNDIS_PACKET naming the section; the section is free again when the host completes it.
 * No free section: tx_begin returns NULL (counted). A frame larger than a section (a jumbo MTU)
 * is written into the queue's page-backed bounce instead and goes GPA-direct (one such frame in
 * flight per queue). Any CPU, <= DISPATCH; one frame per call.
 *
 * Ownership: the driver owns the buffers, channels and packets; ops->ctx stays the caller's.
 */
#ifndef APPS_NETVSC_NETVSC_H
#define APPS_NETVSC_NETVSC_H

#include <stdbool.h>
#include <stdint.h>

#include "hv/vmbus/vmbus.h"
#include "kernel/status.h"

#define NETVSC_MAX_QUEUES 8u

struct netvsc;

struct netvsc_config {
    uint32_t max_nvsp_version; /* NVSP_VERSION_*; 0: 6.1 */
    uint32_t recv_buf_bytes;   /* multiple of 4096; 0: 4 MiB */
    uint32_t send_buf_bytes;   /* multiple of 4096; 0: 1 MiB */
    uint32_t queues;           /* 0: one per CPU (at most NETVSC_MAX_QUEUES and what the host grants) */
    uint32_t ring_pages;       /* per direction, control page included; 0: 64 */
    uint32_t mtu;              /* 0: 1500 */
    uint32_t first_cpu;        /* queue i runs on CPU (first_cpu + i) mod the CPU count (e.g. 1: keep
                                  CPU 0 for the application's thread) */
};

struct netvsc_ops {
    void *ctx;
    /* A received Ethernet frame (no FCS) on queue q, at DISPATCH on that queue's CPU. */
    void (*receive)(void *ctx, uint32_t queue, const void *frame, uint32_t len);
    /* After a batch of receives on queue q (the inbound ring went empty). May be NULL. */
    void (*receive_done)(void *ctx, uint32_t queue);
    /* The link went up or down (DISPATCH). May be NULL. */
    void (*link)(void *ctx, bool up);
};

struct netvsc_stats {
    uint64_t rx_frames, rx_bytes, tx_frames, tx_bytes, tx_completions;
    uint64_t rx_packets;          /* transfer-page packets */
    uint64_t rx_bad_range;        /* a range outside the receive buffer */
    uint64_t rx_bad_rndis;        /* a malformed RNDIS message */
    uint64_t rx_bad_nvsp;         /* a malformed or unexpected NVSP message */
    uint64_t rx_bad_frame;        /* too short or too long a frame */
    uint64_t rx_no_handler;       /* frames while ops->receive is NULL */
    uint64_t tx_no_section;       /* tx_begin found no free section or packet */
    uint64_t tx_too_big, tx_send_failed, tx_host_errors;
    uint64_t tx_gpa_direct;       /* frames larger than a section, sent GPA-direct from a bounce */
    uint64_t link_changes, indications, control_messages, indirection_tables, keepalives;
};

/* PASSIVE. The primary channel of a NIC offer (its driver's probe, or vmbus_for_each_channel). */
status_t netvsc_attach(struct vmbus_channel *primary, const struct netvsc_config *cfg, const struct netvsc_ops *ops,
                       struct netvsc **out) WARN_UNUSED;
/* PASSIVE: RNDIS HALT, buffers revoked, channels closed, everything freed. */
void netvsc_detach(struct netvsc *nv);

void netvsc_get_mac(const struct netvsc *nv, uint8_t mac[6]);
uint32_t netvsc_mtu(const struct netvsc *nv);
bool netvsc_link_up(const struct netvsc *nv);
uint64_t netvsc_link_speed_bps(const struct netvsc *nv);
uint32_t netvsc_queue_count(const struct netvsc *nv);
uint32_t netvsc_queue_cpu(const struct netvsc *nv, uint32_t queue);
uint64_t netvsc_queue_rx_frames(const struct netvsc *nv, uint32_t queue); /* frames received on it */
bool netvsc_rss_enabled(const struct netvsc *nv); /* the host took our RSS parameters */
uint32_t netvsc_nvsp_version(const struct netvsc *nv);
uint32_t netvsc_ndis_version(const struct netvsc *nv);
void netvsc_get_stats(const struct netvsc *nv, struct netvsc_stats *out);

/* ---- transmit (any CPU, <= DISPATCH) ---- */

/* Room for a frame of len bytes (<= MTU + 14) in a send-buffer section, or for a larger one in
 * the queue's bounce, to be sent on queue (mod the queue count); NULL: none free, or too long. */
void *netvsc_tx_begin(struct netvsc *nv, uint32_t queue, uint32_t len);
/* Sends the frame written at `frame` (from tx_begin on the same queue), len bytes (<= the len given
 * to tx_begin). */
status_t netvsc_tx_end(struct netvsc *nv, uint32_t queue, void *frame, uint32_t len) WARN_UNUSED;
/* Copies and sends a frame (tx_begin + memcpy + tx_end). */
status_t netvsc_send(struct netvsc *nv, uint32_t queue, const void *frame, uint32_t len) WARN_UNUSED;

/* ---- control (PASSIVE) ---- */

/* RNDIS KEEPALIVE: STATUS_OK when the device answered in time. */
status_t netvsc_keepalive(struct netvsc *nv) WARN_UNUSED;

#endif
