/*
 * channel: kmcl's channel and packet API for the client (guest) endpoint, with the semantics of
 * Windows' VMBus Kernel Mode Client Library (docs/KMCL.md maps every name to its KMCL original).
 * It sits on a VMBus channel (hv/vmbus/vmbus.h) and on the engine both kmcl endpoints share
 * (kmcl/core/endpoint.h, over the ring/packet layer kmcl/core/ring.h, kmcl/core/packet.h). The
 * implementation: kmcl/channel.c (life cycle), kmcl/send.c, kmcl/receive.c (kmcl/internal.h).
 *
 * Life of a channel: kmcl_channel_allocate (state INITIALIZING: the init_set functions are allowed),
 * kmcl_channel_enable (opens the VMBus channel, attaches the rings, calls opened, started and
 * post_started), then packets flow; kmcl_channel_pause / kmcl_channel_start stop and resume the
 * delivery of incoming packets; kmcl_channel_disable (suspend, closes the VMBus channel, closed);
 * kmcl_channel_cleanup frees it.
 *
 * Incoming packets (the interrupt-level executor): the host's signal queues the channel's DPC on
 * its target CPU; the DPC drains the inbound ring at DISPATCH, at most KMCL_DRAIN_BUDGET packets per
 * pass (then it queues itself again, so other channels' DPCs run in between; a packet that raced in
 * after the ring looked empty costs the budget too, so a host that moves write_index back and forth
 * cannot hold the DPC). process_packet is called once per packet, with the payload (the VMBus
 * headers stripped); its buffer is valid only during the call. Every call must eventually be
 * matched by kmcl_channel_packet_complete (or _fail), from within the callback or later, from any
 * CPU at <= DISPATCH. processing_complete is called by each executor after the last process_packet
 * of its batch, with the number of packets it delivered in that batch: by the DPC (at DISPATCH)
 * each time the inbound ring goes from non-empty to empty, and by the worker (at PASSIVE) each
 * time its queue of deferred packets empties. It never counts a packet that has not been delivered.
 * Completion packets from the host never reach process_packet: they complete the packet sent with
 * KMCL_SEND_WAIT_FOR_COMPLETION.
 *
 * The passive-level executor: kmcl_channel_packet_defer_to_passive, only from inside
 * process_packet, hands the packet (copied) to the channel's worker thread, which delivers it again
 * at PASSIVE; later packets queue behind it, so the order is kept (and are delivered, and counted,
 * by the worker). A channel set with kmcl_channel_set_incoming_processing_at_passive has every
 * packet delivered by its worker.
 *
 * Sending: kmcl_packet_send copies the packet into the outbound ring, or, when the ring is full,
 * into the packet's own buffer (maximum packet size) to be written as soon as the host frees space:
 * a send never fails for lack of space. The completion routine runs when the packet is in the ring,
 * or, with KMCL_SEND_WAIT_FOR_COMPLETION, when the host's completion packet arrives (status OK,
 * with the host's completion payload), or with STATUS_CANCELLED when the channel is disabled or
 * rescinded first. A transaction id is given to a packet only when it is written to the ring: the
 * host cannot complete a packet still waiting in the backlog (a completion for an id never written
 * fails the channel).
 *
 * Rescind (the host withdraws the open channel): the bus calls the driver's vmbus_driver.rescind at
 * DISPATCH, which calls kmcl_channel_rescind. From then on sends (kmcl_packet_send,
 * send_synchronous_request) fail at once with STATUS_CANCELLED, every packet queued or waiting for a
 * completion (synchronous requests included) ends with STATUS_CANCELLED, completions of incoming
 * packets are no longer written (complete still retires them), the ring is not read and the host
 * not signalled; one log line says so. Then the driver's closed callback runs once, at PASSIVE, on
 * the channel's worker thread (KMCL's EvtVmbChannelClosed: "the opposite endpoint rescinds or
 * closes the channel"); it must not call kmcl_channel_disable or _cleanup itself (they wait for that
 * thread): the driver does so from a thread of its own, which closes the VMBus channel and so
 * releases its relid. Disable after a rescind calls no suspend, and closed only if the worker has
 * not yet.
 *
 * Lifetimes: the VMBus channel given to allocate must stay valid until disable returns; kmcl uses
 * it only until then (kmcl_channel_vmbus returns NULL afterwards: a rescinded channel is freed by
 * its close). The kmcl channel lives until cleanup; a cleanup while incoming packets are still
 * delivered and not completed (a driver bug) is logged and deferred: the channel is freed when the
 * last of them is completed. kmcl_packet objects are the driver's; each must not be used after the
 * channel is freed.
 *
 * Bad input from the host (a malformed ring or packet, a completion for an unknown transaction)
 * marks the channel FAILED with one log line naming the reason; it is not read again.
 *
 * IRQL: allocate, the init_set functions, enable, disable, cleanup, send_synchronous_request, the
 * GPADL functions: PASSIVE. Send, complete, fail, pause, start, rescind, the getters: <= DISPATCH.
 * defer_to_passive and get_external_data: only inside process_packet.
 */
#ifndef KMCL_CHANNEL_H
#define KMCL_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/vmbus/vmbus.h"
#include "kernel/status.h"
#include "kmcl/core/packet.h"

struct kmcl_channel;
struct kmcl_packet;   /* an outgoing packet (VMBPACKET) */
struct kmcl_incoming; /* an incoming packet's completion context (VMBPACKETCOMPLETION) */

#define KMCL_DRAIN_BUDGET 64u        /* packets per DPC pass */
#define KMCL_MAX_IN_FLIGHT 256u      /* incoming packets delivered and not yet completed */

/* process_packet flags */
#define KMCL_PROCESS_EXTERNAL_DATA 0x1u /* GPA-direct or transfer-page ranges: get_external_data */
#define KMCL_PROCESS_AT_PASSIVE 0x2u    /* delivered by the worker thread */

typedef void (*kmcl_process_packet_fn)(struct kmcl_channel *ch, struct kmcl_incoming *pkt, const void *buf,
                                       uint32_t len, uint32_t flags);
typedef void (*kmcl_processing_complete_fn)(struct kmcl_channel *ch, uint32_t packets_processed);
typedef void (*kmcl_completion_routine_fn)(struct kmcl_packet *pkt, status_t status, const void *buf, uint32_t len);
typedef void (*kmcl_state_fn)(struct kmcl_channel *ch);

struct kmcl_state_callbacks {
    kmcl_state_fn opened, closed, started, suspend, post_started;
};

/* ---- channels ---- */

status_t kmcl_channel_allocate(struct vmbus_channel *vch, struct kmcl_channel **out) WARN_UNUSED;
status_t kmcl_channel_init_set_client_context_size(struct kmcl_channel *ch, size_t bytes) WARN_UNUSED;
status_t kmcl_channel_init_set_friendly_name(struct kmcl_channel *ch, const char *name) WARN_UNUSED;
status_t kmcl_channel_init_set_maximum_packet_size(struct kmcl_channel *ch, uint32_t bytes) WARN_UNUSED;
status_t kmcl_channel_init_set_maximum_external_data(struct kmcl_channel *ch, uint32_t bytes, uint32_t ranges) WARN_UNUSED;
status_t kmcl_channel_init_set_ring_buffer_page_count(struct kmcl_channel *ch, uint32_t out_pages, uint32_t in_pages) WARN_UNUSED;
status_t kmcl_channel_init_set_target_cpu(struct kmcl_channel *ch, uint32_t cpu) WARN_UNUSED;
status_t kmcl_channel_init_set_process_packet_callbacks(struct kmcl_channel *ch, kmcl_process_packet_fn process_packet,
                                                         kmcl_processing_complete_fn processing_complete) WARN_UNUSED;
status_t kmcl_channel_init_set_state_change_callbacks(struct kmcl_channel *ch,
                                                       const struct kmcl_state_callbacks *cbs) WARN_UNUSED;
status_t kmcl_channel_set_incoming_processing_at_passive(struct kmcl_channel *ch, bool on) WARN_UNUSED;
/* Polling mode, for latency work: a thread pinned to `cpu` spins on the inbound ring (delivering at
 * DISPATCH there) with the host's interrupts masked in the ring (interrupt_mask stays set), so no
 * signal and no SynIC interrupt is involved; the CPU is given to the channel. Init only. */
status_t kmcl_channel_init_set_polling(struct kmcl_channel *ch, uint32_t cpu) WARN_UNUSED;
/* Queue-management suppression (KMCL_CHANNEL_FLAG_SUPPRESS_QUEUE_MANAGEMENT, init only): kmcl does
 * not read the inbound ring. On each host signal the channel's DPC (at DISPATCH, on the target
 * CPU) first writes queued sends, then calls the queue callback, which reads the ring itself
 * through kmcl_channel_inbound_ring with kmcl/core/ring.h's rules (begin_read, peek, consume,
 * publish/end_read), signals the host with kmcl_channel_signal when those say so, hands the host's
 * completions to kmcl_channel_complete_transaction (so packets sent with wait-for-completion still
 * complete) and calls kmcl_channel_report_failure when the ring fails. Returning true queues the
 * DPC again (the driver stopped with packets left). process_packet and processing_complete are
 * not used; not with polling or passive processing. For drivers with their own batching. */
#define KMCL_CHANNEL_FLAG_SUPPRESS_QUEUE_MANAGEMENT 0x1u
typedef bool (*kmcl_queue_fn)(struct kmcl_channel *ch);
status_t kmcl_channel_init_set_flags(struct kmcl_channel *ch, uint32_t flags) WARN_UNUSED;
status_t kmcl_channel_init_set_queue_callback(struct kmcl_channel *ch, kmcl_queue_fn fn) WARN_UNUSED;
struct kmcl_ring *kmcl_channel_inbound_ring(struct kmcl_channel *ch);
void kmcl_channel_signal(struct kmcl_channel *ch);
/* A completion packet read from the inbound ring: completes the packet it answers (STATUS_BAD_DATA:
 * no such transaction, the channel failed). */
status_t kmcl_channel_complete_transaction(struct kmcl_channel *ch, const struct kmcl_ring_packet *p) WARN_UNUSED;
/* Suppressed queue management: the completion of a host packet the driver read itself (one that
 * asked for it), written now; STATUS_NO_SPACE when the ring has no room (the driver keeps the
 * packet unconsumed and tries again at its next queue callback: the host signals once it has read),
 * STATUS_INVALID_STATE when the channel is not enabled or FAILED. <= DISPATCH. */
status_t kmcl_channel_send_raw_completion(struct kmcl_channel *ch, uint64_t trans_id, const void *buf, uint32_t len)
    WARN_UNUSED;
/* The inbound ring failed under the driver's reading: the channel is marked FAILED (logged). */
void kmcl_channel_report_failure(struct kmcl_channel *ch);
status_t kmcl_channel_enable(struct kmcl_channel *ch) WARN_UNUSED;
/* suspend (not after a rescind), the executors stopped, the VMBus channel closed, sends still queued
 * or waiting STATUS_CANCELLED, closed (unless a rescind's ran). */
void kmcl_channel_disable(struct kmcl_channel *ch);
void kmcl_channel_pause(struct kmcl_channel *ch); /* no more deliveries (nor host completions) */
void kmcl_channel_start(struct kmcl_channel *ch); /* deliveries again */
/* The host rescinded the channel (from the driver's vmbus_driver.rescind, at <= DISPATCH; any
 * state; once is enough, later calls do nothing): see "Rescind" above. The kmcl channel must not be
 * cleaned up meanwhile: the driver orders its rescind callback before its teardown. */
void kmcl_channel_rescind(struct kmcl_channel *ch);
bool kmcl_channel_rescinded(struct kmcl_channel *ch);
void kmcl_channel_cleanup(struct kmcl_channel *ch); /* disables first; deferred, see "Lifetimes" */
void *kmcl_channel_get_pointer_to_client_context(struct kmcl_channel *ch);
void *kmcl_channel_context_of_size(struct kmcl_channel *ch, size_t bytes);
/* The client context as the driver's own type: NULL if it is smaller than the type (or was never
 * set), e.g. struct my_queue *q = KMCL_CHANNEL_CONTEXT(ch, struct my_queue). */
#define KMCL_CHANNEL_CONTEXT(ch, type) ((type *)kmcl_channel_context_of_size((ch), sizeof(type)))
void kmcl_channel_get_interface_instance(struct kmcl_channel *ch, struct vmbus_guid *type, struct vmbus_guid *instance);
/* The VMBus channel, until disable closes it (NULL afterwards). */
struct vmbus_channel *kmcl_channel_vmbus(struct kmcl_channel *ch);
bool kmcl_channel_failed(struct kmcl_channel *ch);
status_t kmcl_channel_create_gpadl_from_buffer(struct kmcl_channel *ch, void *buf, size_t bytes, uint32_t *handle) WARN_UNUSED;
status_t kmcl_channel_delete_gpadl(struct kmcl_channel *ch, uint32_t handle) WARN_UNUSED;

struct kmcl_channel_stats {
    uint64_t packets_in, completions_in, packets_out, completions_out, deferred, passive_deliveries, dpc_passes,
        budget_exhausted, processing_complete_calls, queued_sends, interrupts, signals, polls, queued_completions;
};
void kmcl_channel_get_stats(struct kmcl_channel *ch, struct kmcl_channel_stats *out);

/* ---- outgoing packets ---- */

#define KMCL_SEND_WAIT_FOR_COMPLETION 0x1u /* completion routine when the host completes it */

status_t kmcl_packet_allocate(struct kmcl_channel *ch, struct kmcl_packet **out) WARN_UNUSED;
void kmcl_packet_free(struct kmcl_packet *pkt);
void kmcl_packet_set_completion_routine(struct kmcl_packet *pkt, kmcl_completion_routine_fn fn);
void kmcl_packet_set_context(struct kmcl_packet *pkt, void *ctx);
void *kmcl_packet_get_context(struct kmcl_packet *pkt);
/* Sends buf (and external data as page ranges: a GPA-direct packet) on the packet's channel. The
 * packet must not be sent again before its completion routine ran. STATUS_INVALID_STATE if the
 * channel is not enabled or FAILED, STATUS_CANCELLED once the host rescinded it,
 * STATUS_INVALID_PARAMETER if it is larger than the maximum, STATUS_BUSY (with wait-for-completion)
 * while every transaction id is outstanding or promised to a queued packet. */
status_t kmcl_packet_send(struct kmcl_packet *pkt, const void *buf, uint32_t len, const struct kmcl_page_range *ext,
                          uint32_t ext_count, uint32_t flags) WARN_UNUSED;
/* Sends and waits (PASSIVE) for the host's completion, copying its payload to resp (resp_len in: the
 * room, a multiple of 8; out: the bytes). timeout_ns 0: do not queue if the ring is full
 * (STATUS_NO_SPACE). STATUS_TIMEOUT: no completion in time (the packet is retired when it comes).
 * STATUS_CANCELLED: the channel was rescinded (before or while waiting) or disabled meanwhile. */
status_t kmcl_channel_send_synchronous_request(struct kmcl_channel *ch, const void *buf, uint32_t len,
                                               const struct kmcl_page_range *ext, uint32_t ext_count, void *resp,
                                               uint32_t *resp_len, uint64_t timeout_ns) WARN_UNUSED;

/* ---- incoming packets ---- */

/* Retires an incoming packet; if the host asked for a completion, sends one carrying buf. A
 * completion that finds the ring full is copied and queued (ahead of queued packets), written when
 * the host makes room: never lost, never waited for. Once per delivery (a second call is logged and
 * ignored); every delivered packet must be completed, also after disable or a rescind (the
 * completion is no longer written then, the packet is just retired), and before kmcl_channel_cleanup
 * (else the cleanup waits for the last one, see "Lifetimes"). */
void kmcl_channel_packet_complete(struct kmcl_incoming *pkt, const void *buf, uint32_t len);
/* The same with a failure status (a completion carrying {u32 status}, if one was asked for). */
void kmcl_channel_packet_fail(struct kmcl_incoming *pkt, status_t status);
/* Only inside process_packet, and not when it runs at PASSIVE for a deferred packet: deliver this
 * packet again at PASSIVE (in order). STATUS_INVALID_STATE otherwise. */
status_t kmcl_channel_packet_defer_to_passive(struct kmcl_incoming *pkt) WARN_UNUSED;
/* Only inside process_packet, for KMCL_PROCESS_EXTERNAL_DATA: the GPA-direct ranges (pfns into
 * pfn_storage) or transfer-page ranges, checked against the packet's bounds. */
status_t kmcl_channel_packet_get_external_data(struct kmcl_incoming *pkt, struct kmcl_pkt_gpa *gpa,
                                               struct kmcl_pkt_xfer *xfer) WARN_UNUSED;
uint64_t kmcl_incoming_trans_id(const struct kmcl_incoming *pkt);
struct kmcl_channel *kmcl_incoming_channel(const struct kmcl_incoming *pkt);

#endif
