/*
 * vsp_test: the VSP behind hvsim's test device ("hvsim-test", VMBUS_GUID_HVSIM_TEST): a small host
 * service on kmcl's server endpoint (sim/kmcl/server.h, through sim/vsp/vsp.h) that answers a guest's packets so
 * that the guest's channel and packet engine can be tested end to end (echo, completions, bulk
 * host -> guest traffic with backpressure, GPA-direct buffers) on hvsim, hosted or under QEMU.
 *
 * The protocol (the guest side follows it too) is hv/vmbus/proto/testdev.h.
 *
 * ---- Instances, threads, memory ----
 *
 * An instance (struct hvsim_vsp_test) holds the counters and the VSP glue (sim/vsp/vsp.h) that maps
 * each open channel to a kmcl server channel, whose client context is the VSP's per-channel state
 * (answer packets, the SEND_N batch, GPA parse storage). The device's ctx names the instance; NULL
 * (as in hvsim_vmbus_default_devices) is the process's default instance, which lives as long as
 * the process. on_open sets a channel up, on_close disables and frees it: nothing of a channel is
 * used after its close; a batch still owed is dropped (counted in backlog_dropped).
 *
 * The server calls a device's callbacks on its thread, one at a time, with no lock held (on_close
 * also from hvsim_vmbus_destroy's thread, after the server thread stopped). kmcl's channel lock is
 * held around the VSP's callbacks; the instance mutex guards only the counters (the default
 * instance is shared by every server in the process, and the stats are read from other threads)
 * and is taken inside kmcl's lock, never around it. A SEND_N batch has at most one DATA packet
 * queued at a time.
 *
 * Nothing from the guest is trusted: the rings through kmcl's checks; opcodes and counts are read
 * once from the packet into locals; GPA pages through hvsim_gpa (inside guest RAM, or BAD_RANGE).
 */
#ifndef SIM_VSP_TEST_H
#define SIM_VSP_TEST_H

#include <stdint.h>

#include "hv/vmbus/proto/testdev.h"
#include "kmcl/core/ring_format.h"
#include "sim/vmbus_server.h"

/* Counters of an instance since its creation (all channels, all servers using it). */
struct hvsim_vsp_test_stats {
    uint64_t opens, closes;            /* on_open / on_close calls */
    uint64_t channels;                 /* now: channels with state (open) */
    uint64_t signals_in;               /* on_signal calls */
    uint64_t signals_out;              /* hvsim_vmbus_signal_guest calls that set the guest's flag */
    uint64_t idle_signals;             /* of those: answers to a signal that found nothing to do */
    uint64_t packets_in[KMCL_PKT_TYPE_MAX + 1];  /* guest -> host packets by descriptor type */
    uint64_t packets_out[KMCL_PKT_TYPE_MAX + 1]; /* host -> guest packets by descriptor type */
    uint64_t echoes;                   /* ECHO answered */
    uint64_t completions_out;          /* completions sent (all kinds) */
    uint64_t completion_unrequested;   /* ECHO_COMPLETION without the completion flag: dropped */
    uint64_t completions_in;           /* type 11 from the guest */
    uint64_t send_n_requests, send_n_packets; /* SEND_N requests taken; DATA packets sent */
    uint64_t acked_requests, acked_packets;   /* SEND_N_ACKED requests; DATA packets the guest completed */
    uint64_t backlog;                  /* now: DATA packets owed (batches not yet written) */
    uint64_t backlog_dropped;          /* DATA packets owed by channels that closed */
    uint64_t ring_full;                /* writes that found the host -> guest ring full (then resumed) */
    uint64_t signal_only;              /* SIGNAL_ONLY requests */
    uint64_t hellos;                   /* send-on-open packets written */
    uint64_t gpa_requests, gpa_bytes;  /* GPA-direct packets; bytes checksummed */
    uint64_t gpa_bad_ranges;           /* GPA-direct packets with a page outside RAM */
    uint64_t unknown_opcodes, unknown_types, bad_requests;
    uint64_t too_big;                  /* answers that can never fit the host -> guest ring: skipped */
    uint64_t failures;                 /* channels failed (bad ring from the guest) */
};

struct hvsim_vsp_test;

/* The callbacks of the test device; ctx is a struct hvsim_vsp_test * or NULL (the default instance).
 * The server calls them (see struct hvsim_vmbus_device); nobody else should. */
void hvsim_vsp_test_on_open(void *ctx, struct hvsim_vmbus_channel *ch, void *in_ring, uint32_t in_bytes,
                            void *out_ring, uint32_t out_bytes);
void hvsim_vsp_test_on_close(void *ctx, struct hvsim_vmbus_channel *ch);
void hvsim_vsp_test_on_signal(void *ctx, struct hvsim_vmbus_channel *ch);

/* A new instance with its own counters (NULL: out of memory). Give it to a server as the ctx of a
 * device whose callbacks are the three above (hvsim_vsp_test_device fills one). Destroy it only
 * after every server that uses it is destroyed (all its channels closed). */
struct hvsim_vsp_test *hvsim_vsp_test_create(void);
void hvsim_vsp_test_destroy(struct hvsim_vsp_test *vsp);

/* The default device set's test device (name, GUIDs, monitored, 2 sub-channels) served by vsp
 * (NULL: the default instance). */
struct hvsim_vmbus_device hvsim_vsp_test_device(struct hvsim_vsp_test *vsp);

/* A snapshot of vsp's counters (NULL: the default instance). Any thread. */
void hvsim_vsp_test_get_stats(struct hvsim_vsp_test *vsp, struct hvsim_vsp_test_stats *out);

#endif
