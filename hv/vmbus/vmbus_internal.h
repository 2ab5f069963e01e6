/*
 * vmbus_internal: the bus state shared by hv/vmbus/vmbus.c (connection, messages, offers, drivers) and
 * hv/vmbus/vmbus_channel.c (GPADLs, open/close, signalling). Not for drivers: they use hv/vmbus/vmbus.h.
 *
 * Locking: bus.lock (a spinlock at DISPATCH) protects the relid table, every channel's state fields,
 * the request list and the counters. It is never held across a hypercall or a wait. A channel's
 * reference count is atomic and needs no lock (vmbus_channel_hold may run under bus.lock, in a
 * vmbus_for_each_channel callback).
 *
 * The references a channel counts (the rule itself is in hv/vmbus/vmbus.h): one for the relid table
 * from the offer until the relid is released (or the bus resets at UNLOAD), one for a bound driver,
 * one for each of its sub-channels (a sub-channel keeps its primary), one per holder, and a
 * temporary one the bus takes while it works on a channel without the lock (a rescind callback, an
 * open, a close, a GPADL).
 */
#ifndef HV_VMBUS_INTERNAL_H
#define HV_VMBUS_INTERNAL_H

#include "arch-x86_64/spinlock.h"
#include "hv/vmbus/vmbus.h"
#include "kernel/dpc.h"
#include "kernel/list.h"
#include "kernel/sync.h"

#define VMBUS_DEFAULT_TIMEOUT_MS 5000u

enum vmbus_channel_state {
    VMBUS_CH_OFFERED,   /* closed */
    VMBUS_CH_OPENING,   /* OPENCHANNEL in flight */
    VMBUS_CH_OPEN,
    VMBUS_CH_CLOSING,
};

struct vmbus_channel {
    struct list link;              /* bus.channels, in relid order, until the relid is released */
    uint32_t refs;                 /* atomic; the channel is freed when it drops to 0 */
    uint32_t relid;
    struct vmbus_offer offer;
    uint32_t connection_id;
    uint8_t monitor_id;
    bool monitored, dedicated_interrupt;
    uint16_t sub_index;
    struct vmbus_channel *primary; /* NULL for a primary; a sub-channel holds a reference on it */
    uint32_t sub_count;            /* a primary: sub-channels offered */

    enum vmbus_channel_state state;
    bool rescinded;                /* the host withdrew it */
    bool released;                 /* RELID_RELEASED sent (or the bus reset): the relid is the host's again */
    uint32_t gpadls;               /* GPADLs of this relid being created or live: the relid is still in use */
    bool low_latency;
    bool interrupt_held;           /* a signal came while OPENING */
    struct dpc held_dpc;           /* delivers it on the target CPU once open */
    uint32_t callbacks_running;    /* on_interrupt calls in progress (close waits for 0) */
    uint32_t open_id;
    uint32_t target_cpu, target_vp;

    void *ring;                    /* out ring then in ring, one allocation */
    uint32_t ring_pages, out_pages;
    uint32_t ring_gpadl;
    vmbus_interrupt_fn on_interrupt;
    void *irq_ctx;

    const struct vmbus_driver *driver; /* bound (or being probed): the bus holds a reference for it */
    void *driver_ctx;
    struct vmbus_channel_stats stats;
};

/* A request waiting for the host's answer: the SINT 2 handler matches an answer to it by the message
 * table of hv/vmbus/vmbus.c (the answer's row names the request type it answers, and where its relid
 * and key are). */
struct vmbus_request {
    struct list link;
    uint32_t request;              /* the message type sent (VMBUS_MSG_OPENCHANNEL, ...) */
    uint32_t relid, key;           /* 0 when not part of the match */
    bool match_relid, match_key;
    bool outlives_rescind;         /* the host answers it even after a rescind: the wait goes on */
    struct event done;
    bool cancelled;                /* the channel was rescinded meanwhile */
    uint32_t size;
    uint8_t answer[HV_MESSAGE_PAYLOAD_MAX];
};

struct vmbus_bus {
    spinlock_t lock;
    bool connected;
    uint32_t version, features, msg_conn_id, target_vp, timeout_ms;
    void *int_page;                /* interrupt page: [0, 2 KiB) host -> guest, [2 KiB, 4 KiB) guest -> host */
    struct vmbus_monitor_page *monitor_pages; /* [0] host -> guest, [1] guest -> host */
    struct vmbus_channel *by_relid[VMBUS_MAX_RELID + 1];
    struct list channels;
    struct list requests;
    bool offers_done;
    struct event offers_changed;   /* notification: set on every offer; waiters reset it first */
    uint32_t next_gpadl;
    struct vmbus_stats stats;
};

extern struct vmbus_bus vmbus_bus;

/* Sends a channel message on the negotiated message connection id (retries inside
 * hv_post_message). STATUS_DEVICE_ERROR with a log line naming the message if Hyper-V refused it. */
status_t vmbus_post(const void *msg, uint32_t size) WARN_UNUSED;
/* Arms `r` for the answer to a `request` (the message type about to be sent; keys: see struct
 * vmbus_request) before it is sent. */
void vmbus_request_arm(struct vmbus_request *r, uint32_t request, bool match_relid, uint32_t relid, bool match_key,
                       uint32_t key);
/* Waits for the armed request. STATUS_TIMEOUT (logged: "host did not answer WHAT in N s"),
 * STATUS_CANCELLED (rescinded), else STATUS_OK with r->answer filled. */
status_t vmbus_request_wait(struct vmbus_request *r, const char *what) WARN_UNUSED;
/* Forgets an armed request that will not be sent after all. */
void vmbus_request_disarm(struct vmbus_request *r);
/* Cancels every waiting request that concerns relid and does not outlive a rescind (with the bus
 * lock held). */
void vmbus_cancel_requests_locked(uint32_t relid);

/* hv/vmbus/vmbus_channel.c: the host signalled relid (DISPATCH, bus lock NOT held). */
void vmbus_channel_interrupt(uint32_t relid);
/* hv/vmbus/vmbus_channel.c. A new channel of an offer (one reference: the table's), or NULL. */
struct vmbus_channel *vmbus_channel_new(void);
/* With the bus lock held: marks ch rescinded and cancels its requests. */
void vmbus_channel_rescind_locked(struct vmbus_channel *ch);
/* Gives the relid back if the guest is done with it (rescinded; not open, opening or closing; no
 * GPADL being created or live; no driver bound): takes ch off the table, sends RELID_RELEASED and
 * drops the table's reference. Any IRQL <= DISPATCH, bus lock NOT held; the caller holds a
 * reference. Called wherever one of those conditions may have become true. */
bool vmbus_channel_settle(struct vmbus_channel *ch); /* true: released now */
/* Channel objects in memory (vmbus_stats.channel_objects). */
uint32_t vmbus_channel_object_count(void);
/* With the bus lock held: unbinds ch's driver; the caller drops the driver's reference afterwards
 * (vmbus_channel_release, without the lock). */
void vmbus_channel_unbind_locked(struct vmbus_channel *ch);

#endif
