/*
 * server: kmcl's server (host) endpoint, the VSP side of a channel, with the same KMCL semantics as
 * the client endpoint (kmcl/channel.h; docs/KMCL.md maps the names). hvsim's VSPs run on it; the
 * guest never does, so this file is hosted only (pthreads) and is not part of the kernel image.
 *
 * Life of a channel: kmcl_server_channel_allocate (INITIALIZING: the init_set functions), then,
 * when the guest has opened the channel and the VMBus server hands over its rings,
 * kmcl_server_channel_enable (attaches as READER of the guest -> host ring and WRITER of the host ->
 * guest ring, taking over the indices the guest left; opened, started, post_started), packets flow,
 * kmcl_server_channel_disable (suspend, cancels what is queued, closed) when the channel closes,
 * kmcl_server_channel_cleanup frees it.
 *
 * The executor: there is no DPC on a host thread. The VMBus server calls
 * kmcl_server_channel_interrupt when the guest signals; it runs on that thread: it writes what is
 * queued for the guest, then drains the inbound ring in batches: process_packet once per packet
 * (payload only, valid during the call), every call eventually matched by
 * kmcl_server_packet_complete or _fail (from any thread, any time); processing_complete each time
 * the ring goes from non-empty to empty after at least one packet. Completions from the guest
 * complete packets sent with KMCL_SERVER_SEND_WAIT_FOR_COMPLETION and never reach process_packet.
 * Reading that stopped (paused, at the quota) and may go on again is resumed by the outermost call
 * that makes it possible (start, the completion that frees a slot) on its own thread, when that
 * call returns: callbacks may run on any thread that calls this API, one at a time (the lock).
 *
 * Flow control (a host must bound what a guest can make it queue): incoming requests are not read
 * while (a) the channel is paused, (b) the transaction quota of packets delivered and not yet
 * completed is reached (default 256; kmcl_server_channel_set_transaction_quota, KMCL's
 * VmbChannelSetTransactionQuota), or (c) anything is queued for the guest (a packet or completion
 * that found the host -> guest ring full). In each case reading resumes by itself: start, the
 * completion that frees a slot, or the guest's signal once it made the room asked for in
 * pending_send_sz. So a guest that does not read its ring sees its own ring fill, and answers keep
 * the order of the requests. The guest's completions are read in case (b) and (c) too: they free
 * the host's packets and never cause an answer, and a guest whose completions wait for room in
 * its ring would otherwise wait for a host that waits for it.
 *
 * Sending never fails for lack of room: a packet or completion that does not fit is copied and
 * queued (in order) and written when the guest makes room. A packet's completion routine runs once
 * the packet is in the ring, or, with KMCL_SERVER_SEND_WAIT_FOR_COMPLETION, when the guest's
 * completion arrives (its payload passed on), or with STATUS_CANCELLED when the channel fails or is
 * disabled (by the time disable returns). Routines of packets placed in the ring run on that
 * thread, still holding the lock, one after the other, once the call that placed them returned: when
 * the outermost call of this API is about to return (the send itself, or the interrupt, start or
 * complete whose executor wrote a queued packet), or, for packets sent from process_packet, by the
 * executor after that process_packet returned (before the next packet). A routine that sends the
 * next packet of a stream does not recurse.
 *
 * Queue-management suppression (KMCL_SERVER_FLAG_SUPPRESS_QUEUE_MANAGEMENT, init only): the
 * endpoint does not read the inbound ring at all; each interrupt calls the queue callback instead,
 * and the VSP reads the ring itself with kmcl_server_channel_inbound_ring (kmcl/core/ring.h rules; sends
 * still go through this API). For VSPs with their own batching.
 *
 * Bad input from the guest (a broken ring or packet, a completion for a transaction never sent, a
 * packet type a server does not take) marks the channel FAILED with one line through the
 * transport's log naming the reason; it is then neither read, written nor signalled again.
 *
 * Threads and locks: one recursive mutex per channel, held while the executor runs and during every
 * call; callbacks and routines run with it held, so they may call any function of this API for
 * their channel, and must not wait for another thread that needs it. Any function may be called
 * from any thread except disable and cleanup from a callback.
 */
#ifndef KMCL_SERVER_H
#define KMCL_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernel/status.h"
#include "kmcl/core/packet.h"
#include "kmcl/core/ring.h"

struct kmcl_server_channel;
struct kmcl_server_packet;   /* an outgoing packet (VMBPACKET) */
struct kmcl_server_incoming; /* an incoming packet's completion context (VMBPACKETCOMPLETION) */

/* What the VMBus server provides for one open channel. */
struct kmcl_server_transport {
    void *ctx;
    /* Tell the guest the host -> guest ring has data (or room it asked for); false: not delivered. */
    bool (*signal_guest)(void *ctx);
    /* The host address of guest memory [gpa, gpa + len), or NULL if any of it is outside guest RAM. */
    void *(*guest_memory)(void *ctx, uint64_t gpa, uint32_t len);
    /* One line (no newline) about this channel, e.g. a failure; the line does not name the channel:
     * the transport adds that. May be NULL. */
    void (*log)(void *ctx, const char *line);
};

#define KMCL_SERVER_DRAIN_BUDGET 64u     /* packets read before queued sends are looked at again */
#define KMCL_SERVER_DEFAULT_QUOTA 256u   /* incoming packets delivered and not yet completed */

/* process_packet flags */
#define KMCL_SERVER_PROCESS_EXTERNAL_DATA 0x1u /* GPA direct or transfer pages: get_external_data */

/* init_set_flags */
#define KMCL_SERVER_FLAG_SUPPRESS_QUEUE_MANAGEMENT 0x1u

typedef void (*kmcl_server_process_packet_fn)(struct kmcl_server_channel *ch, struct kmcl_server_incoming *pkt,
                                              const void *buf, uint32_t len, uint32_t flags);
typedef void (*kmcl_server_processing_complete_fn)(struct kmcl_server_channel *ch, uint32_t packets_processed);
typedef void (*kmcl_server_completion_routine_fn)(struct kmcl_server_packet *pkt, status_t status, const void *buf,
                                                  uint32_t len);
typedef void (*kmcl_server_state_fn)(struct kmcl_server_channel *ch);
/* Suppressed queue management: the guest signalled (or start was called). */
typedef void (*kmcl_server_queue_fn)(struct kmcl_server_channel *ch);

struct kmcl_server_state_callbacks {
    kmcl_server_state_fn opened, closed, started, suspend, post_started;
};

/* ---- channels ---- */

status_t kmcl_server_channel_allocate(const char *name, struct kmcl_server_channel **out) WARN_UNUSED;
status_t kmcl_server_channel_init_set_client_context_size(struct kmcl_server_channel *ch, size_t bytes) WARN_UNUSED;
status_t kmcl_server_channel_init_set_maximum_packet_size(struct kmcl_server_channel *ch, uint32_t bytes) WARN_UNUSED;
status_t kmcl_server_channel_init_set_flags(struct kmcl_server_channel *ch, uint32_t flags) WARN_UNUSED;
status_t kmcl_server_channel_init_set_process_packet_callbacks(struct kmcl_server_channel *ch,
                                                                kmcl_server_process_packet_fn process_packet,
                                                                kmcl_server_processing_complete_fn processing_complete)
    WARN_UNUSED;
status_t kmcl_server_channel_init_set_queue_callback(struct kmcl_server_channel *ch, kmcl_server_queue_fn fn) WARN_UNUSED;
status_t kmcl_server_channel_init_set_state_change_callbacks(struct kmcl_server_channel *ch,
                                                              const struct kmcl_server_state_callbacks *cbs) WARN_UNUSED;
/* May be called at any time; a lower quota than the packets in flight just stops reading until
 * enough are completed (KMCL's rule); a higher one resumes reading stopped at the old one.
 * 0 < quota <= 4 * KMCL_SERVER_DEFAULT_QUOTA. */
status_t kmcl_server_channel_set_transaction_quota(struct kmcl_server_channel *ch, uint32_t quota) WARN_UNUSED;
/* The guest opened the channel: in_ring is the guest -> host ring (control page + data), out_ring
 * the host -> guest one, both valid until disable returns. Failure to attach (bad indices left by
 * the guest) fails the channel (logged) but still enables it: the guest sees a silent host. */
status_t kmcl_server_channel_enable(struct kmcl_server_channel *ch, const struct kmcl_server_transport *t,
                                    void *in_ring, uint32_t in_bytes, void *out_ring, uint32_t out_bytes) WARN_UNUSED;
/* The guest signalled: the executor runs here. Returns whether it did anything (read or wrote a
 * packet, or called the queue callback). */
bool kmcl_server_channel_interrupt(struct kmcl_server_channel *ch);
/* Stops reading requests (the guest's completions are still read, see "Flow control"). */
void kmcl_server_channel_pause(struct kmcl_server_channel *ch);
/* Resumes reading (on the calling thread, at once). */
void kmcl_server_channel_start(struct kmcl_server_channel *ch);
/* suspend, everything queued or waiting for a completion STATUS_CANCELLED (routines run here),
 * closed. Not from a callback. */
void kmcl_server_channel_disable(struct kmcl_server_channel *ch);
/* Disables first if needed, then frees the channel (not its packets). */
void kmcl_server_channel_cleanup(struct kmcl_server_channel *ch);
void *kmcl_server_channel_get_pointer_to_client_context(struct kmcl_server_channel *ch);
/* The client context as the VSP's own type (NULL if smaller than the type), as on the client. */
#define KMCL_SERVER_CHANNEL_CONTEXT(ch, type) ((type *)kmcl_server_channel_context_of_size((ch), sizeof(type)))
void *kmcl_server_channel_context_of_size(struct kmcl_server_channel *ch, size_t bytes);
const char *kmcl_server_channel_name(const struct kmcl_server_channel *ch);
/* The largest in-band payload a send can ever take (the outbound ring's size and the maximum
 * packet size); 0 before enable. */
uint32_t kmcl_server_channel_max_inband_payload(struct kmcl_server_channel *ch);
/* The transport's ctx given at enable (NULL before). */
void *kmcl_server_channel_transport_context(struct kmcl_server_channel *ch);
bool kmcl_server_channel_failed(struct kmcl_server_channel *ch);
/* Fails the channel from the VSP's side (e.g. a protocol violation above the ring): logged, then
 * neither read, written nor signalled. */
void kmcl_server_channel_fail(struct kmcl_server_channel *ch, const char *reason);
/* Signals the guest (for VSPs that need an explicit signal; the writes signal by themselves). */
bool kmcl_server_channel_signal(struct kmcl_server_channel *ch);
/* Suppressed queue management only: the guest -> host ring, to be read under the channel's rules
 * (from the queue callback, or with kmcl_server_channel_lock held). */
struct kmcl_ring *kmcl_server_channel_inbound_ring(struct kmcl_server_channel *ch);
/* Suppressed queue management: a completion packet the VSP read from the inbound ring completes
 * the packet it answers (its routine runs). STATUS_BAD_DATA: no such transaction (the channel
 * failed, logged). */
status_t kmcl_server_channel_complete_transaction(struct kmcl_server_channel *ch, const struct kmcl_ring_packet *p)
    WARN_UNUSED;
void kmcl_server_channel_lock(struct kmcl_server_channel *ch);
void kmcl_server_channel_unlock(struct kmcl_server_channel *ch);

struct kmcl_server_channel_stats {
    uint64_t packets_in, completions_in, packets_out, completions_out, interrupts, signals, queued, queued_now,
        processing_complete_calls, quota_stalls, backlog_stalls, cancelled;
};
void kmcl_server_channel_get_stats(struct kmcl_server_channel *ch, struct kmcl_server_channel_stats *out);

/* Guest memory through the transport: calls fn(arg, host pointer, bytes) for each piece of the
 * bytes the GPA ranges describe, in order, at most `limit` bytes in all. STATUS_BAD_DATA if a page
 * is outside guest RAM (fn may have been called for earlier pieces); fn returning false stops
 * (STATUS_CANCELLED). Inside process_packet, with get_external_data's result. */
status_t kmcl_server_gpa_for_each(struct kmcl_server_channel *ch, const struct kmcl_pkt_gpa *gpa, uint64_t limit,
                                  bool (*fn)(void *arg, const uint8_t *p, uint32_t n), void *arg) WARN_UNUSED;

/* ---- outgoing packets ---- */

#define KMCL_SERVER_SEND_WAIT_FOR_COMPLETION 0x1u

status_t kmcl_server_packet_allocate(struct kmcl_server_channel *ch, struct kmcl_server_packet **out) WARN_UNUSED;
void kmcl_server_packet_free(struct kmcl_server_packet *pkt);
void kmcl_server_packet_set_completion_routine(struct kmcl_server_packet *pkt, kmcl_server_completion_routine_fn fn);
void kmcl_server_packet_set_context(struct kmcl_server_packet *pkt, void *ctx);
void *kmcl_server_packet_get_context(struct kmcl_server_packet *pkt);
/* The transaction id the guest sees on the packet's next send without
 * KMCL_SERVER_SEND_WAIT_FOR_COMPLETION (default 0; with it, the id comes from the channel's table).
 * For protocols whose unsolicited packets echo a request's id. */
void kmcl_server_packet_set_transaction_id(struct kmcl_server_packet *pkt, uint64_t id);
/* In-band. The packet must not be sent again before its routine ran. STATUS_INVALID_STATE: not
 * enabled or FAILED; STATUS_INVALID_PARAMETER: larger than the maximum packet size or than the ring
 * can ever hold; STATUS_BUSY: every transaction id is outstanding. */
status_t kmcl_server_packet_send(struct kmcl_server_packet *pkt, const void *buf, uint32_t len, uint32_t flags) WARN_UNUSED;
/* Transfer pages (the netvsp receive path): ranges of the guest's transfer page set, then buf. */
status_t kmcl_server_packet_send_xfer(struct kmcl_server_packet *pkt, uint16_t pageset_id,
                                      const struct kmcl_xfer_range *ranges, uint32_t range_count, const void *buf,
                                      uint32_t len, uint32_t flags) WARN_UNUSED;

/* ---- incoming packets ---- */

/* Retires an incoming packet; if the guest asked for a completion, one carrying buf is written (or
 * queued, in order, if the ring is full: it is never lost). */
void kmcl_server_packet_complete(struct kmcl_server_incoming *pkt, const void *buf, uint32_t len);
/* The same with a failure: a completion carrying {u32 status}, if one was asked for. */
void kmcl_server_packet_fail(struct kmcl_server_incoming *pkt, status_t status);
/* Only inside process_packet: the GPA-direct ranges (page numbers into the caller's storage) or the
 * transfer-page ranges, as kmcl_pkt_parse_gpa / kmcl_pkt_parse_xfer (STATUS_NO_SPACE: more room
 * needed, counts set). */
status_t kmcl_server_packet_get_external_data(struct kmcl_server_incoming *pkt, struct kmcl_pkt_gpa *gpa,
                                              struct kmcl_pkt_xfer *xfer) WARN_UNUSED;
uint64_t kmcl_server_incoming_trans_id(const struct kmcl_server_incoming *pkt);
bool kmcl_server_incoming_completion_requested(const struct kmcl_server_incoming *pkt);
uint16_t kmcl_server_incoming_type(const struct kmcl_server_incoming *pkt); /* KMCL_PKT_* */
struct kmcl_server_channel *kmcl_server_incoming_channel(const struct kmcl_server_incoming *pkt);

#endif
