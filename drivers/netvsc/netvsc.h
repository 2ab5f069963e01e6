/*
 * netvsc: the guest driver of Hyper-V's synthetic NIC (VMBUS_GUID_NIC), a kmcl client
 * (kmcl/channel.h). Protocol: drivers/netvsc/proto/PROTOCOL.md (NVSP + RNDIS); wire formats and checkers:
 * nvsp_msg.h, rndis_msg.h.
 *
 * A vmbus_driver (VMBUS_DRIVER: linking drivers/netvsc into an image binds it). The bus calls its
 * probe at PASSIVE for each NIC offer; the probe runs the whole handshake on the primary channel
 * and registers a network device (kernel/netdev.h, "net0", ...), which is how applications and
 * stacks use the NIC (lib/net's net_attach); this header is only the driver's own extras.
 *
 * The handshake: NVSP INIT from the
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
 * message with rndis_msg_check; each frame goes to the netdev's holder (netdev_rx: valid during the
 * call, it points into the receive buffer, which the host owns again once the packet is completed,
 * right after); the packet is completed back to the host. Status indications (media
 * connect/disconnect) update the link state (netdev_set_link). Anything malformed is dropped with a
 * counter and a rate-limited log line; the channel goes on.
 *
 * Transmit, zero copy (the netdev's tx_begin/tx_end): tx_begin reserves a send-buffer section and
 * returns where the frame goes (after room for the RNDIS header); tx_end writes the header and sends NVSP
 * SEND_RNDIS_PACKET naming the section; the section is free again when the host completes it.
 * No free section: tx_begin returns NULL (counted). A frame larger than a section (a jumbo MTU)
 * is written into the queue's page-backed bounce instead and goes GPA-direct (one such frame in
 * flight per queue). Any CPU, <= DISPATCH; one frame per call.
 *
 * Configuration: netvsc_configure(cfg) before vmbus_init (e.g. a test); without it each probe reads
 * the kernel command line (netvsc_config_from_cmdline): queues=N (0: one per CPU), nvsp=61|6|5|4|2|1
 * (the newest NVSP version to ask for), rxbuf=KiB (the receive buffer, 64..16384); everything
 * else at its default. These are the keys udp-echo has always taken.
 *
 * The device going away:
 *   - rescind (the bus's callback, DISPATCH): the NIC is marked gone at once, so every transmit
 *     fails from then on (tx_begin NULL, tx_end, keep-alives and control requests
 *     STATUS_CANCELLED), and netdev_gone tells the holder. The teardown (channels closed, which
 *     releases the relid; buffers freed unless the host kept them) runs at PASSIVE as the netdev's
 *     release, when the holder has closed it (devreg.h): without the host, so it waits for nothing
 *     but the GPADL teardowns the bus still answers. A rescind during the probe fails the probe at
 *     its next step.
 *   - remove (the bus's, PASSIVE, vmbus_driver_unregister): netdev_unregister (the holder is told
 *     and closes), then RNDIS HALT, the buffers revoked, the channels closed, all freed.
 *   - power-off (a shutdown hook, PASSIVE, before the bus's UNLOAD): every NIC still bound is gone
 *     for its holder, halted and its channels closed; freed unless someone still holds it.
 *
 * Ownership: the driver owns the buffers, channels, packets and the struct netdev.
 */
#ifndef DRIVERS_NETVSC_NETVSC_H
#define DRIVERS_NETVSC_NETVSC_H

#include <stdbool.h>
#include <stdint.h>

#include "hv/vmbus/vmbus.h"
#include "kernel/cmdline.h"
#include "kernel/netdev.h"
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

struct netvsc_stats {
    uint64_t rx_frames, rx_bytes, tx_frames, tx_bytes, tx_completions;
    uint64_t rx_packets;          /* transfer-page packets */
    uint64_t rx_bad_range;        /* a range outside the receive buffer */
    uint64_t rx_bad_rndis;        /* a malformed RNDIS message */
    uint64_t rx_bad_nvsp;         /* a malformed or unexpected NVSP message */
    uint64_t rx_bad_frame;        /* too short or too long a frame */
    uint64_t rx_no_handler;       /* frames while nobody held the netdev */
    uint64_t tx_no_section;       /* tx_begin found no free section or packet */
    uint64_t tx_too_big, tx_send_failed, tx_host_errors;
    uint64_t tx_gpa_direct;       /* frames larger than a section, sent GPA-direct from a bounce */
    uint64_t tx_gone;             /* transmits refused because the NIC went */
    uint64_t link_changes, indications, control_messages, indirection_tables, keepalives;
};

/* The driver, bound by the VMBus registry (VMBUS_DRIVER in netvsc.c). */
extern const struct vmbus_driver netvsc_driver;

/* PASSIVE, before vmbus_init: NICs probed from now on use *cfg (copied); NULL: the command line
 * again. */
void netvsc_configure(const struct netvsc_config *cfg);
/* The command line's keys (queues=, nvsp=, rxbuf=, see above) into cfg (the rest zeroed). */
void netvsc_config_from_cmdline(const struct cmdline *cl, struct netvsc_config *cfg);

/* The NIC behind a network device; NULL if dev is not netvsc's. Valid as long as dev is. */
struct netvsc *netvsc_from_netdev(struct netdev *dev);

void netvsc_get_mac(const struct netvsc *nv, uint8_t mac[6]);
uint32_t netvsc_mtu(const struct netvsc *nv);
bool netvsc_link_up(const struct netvsc *nv);
bool netvsc_gone(const struct netvsc *nv); /* rescinded */
uint64_t netvsc_link_speed_bps(const struct netvsc *nv);
uint32_t netvsc_queue_count(const struct netvsc *nv);
uint32_t netvsc_queue_cpu(const struct netvsc *nv, uint32_t queue);
uint64_t netvsc_queue_rx_frames(const struct netvsc *nv, uint32_t queue); /* frames received on it */
bool netvsc_rss_enabled(const struct netvsc *nv); /* the host took our RSS parameters */
uint32_t netvsc_nvsp_version(const struct netvsc *nv);
uint32_t netvsc_ndis_version(const struct netvsc *nv);
void netvsc_get_stats(const struct netvsc *nv, struct netvsc_stats *out);

/* ---- control (PASSIVE) ---- */

/* RNDIS KEEPALIVE: STATUS_OK when the device answered in time (also the netdev's check). */
status_t netvsc_keepalive(struct netvsc *nv) WARN_UNUSED;

#endif
