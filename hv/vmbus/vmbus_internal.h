/*
 * vmbus_internal: the bus state shared by hv/vmbus/vmbus.c (connection, messages, offers, drivers) and
 * hv/vmbus/vmbus_channel.c (GPADLs, open/close, signalling). Not for drivers: they use hv/vmbus/vmbus.h.
 *
 * Locking: bus.lock (a spinlock at DISPATCH) protects the relid table, every channel's state fields,
 * the request list and the counters. It is never held across a hypercall or a wait.
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
    struct list link;              /* bus.channels, in relid order */
    uint32_t relid;
    struct vmbus_offer offer;
    uint32_t connection_id;
    uint8_t monitor_id;
    bool monitored, dedicated_interrupt;
    uint16_t sub_index;
    struct vmbus_channel *primary; /* NULL for a primary */
    uint32_t sub_count;            /* a primary: sub-channels offered */

    enum vmbus_channel_state state;
    bool rescinded;                /* the host withdrew it */
    bool released;                 /* RELID_RELEASED sent: the relid is the host's again */
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

    const struct vmbus_driver *driver;
    void *driver_ctx;
    struct vmbus_channel_stats stats;
};

/* A request waiting for the host's answer: matched by type and keys in the SINT 2 handler. */
struct vmbus_request {
    struct list link;
    uint32_t type;                 /* the answer's message type */
    uint32_t relid, key;           /* 0 when not part of the match */
    bool match_relid, match_key;
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
/* Arms `r` for an answer of `type` (keys: see struct vmbus_request) before the request is sent. */
void vmbus_request_arm(struct vmbus_request *r, uint32_t type, bool match_relid, uint32_t relid, bool match_key,
                       uint32_t key);
/* Waits for the armed request. STATUS_TIMEOUT (logged: "host did not answer WHAT in N s"),
 * STATUS_CANCELLED (rescinded), else STATUS_OK with r->answer filled. */
status_t vmbus_request_wait(struct vmbus_request *r, const char *what) WARN_UNUSED;
/* Forgets an armed request that will not be sent after all. */
void vmbus_request_disarm(struct vmbus_request *r);
/* Cancels every waiting request that concerns relid (with the bus lock held). */
void vmbus_cancel_requests_locked(uint32_t relid);

/* hv/vmbus/vmbus_channel.c: the host signalled relid (DISPATCH, bus lock NOT held). */
void vmbus_channel_interrupt(uint32_t relid);
/* hv/vmbus/vmbus_channel.c, with the bus lock held. rescind: marks ch rescinded and cancels its requests;
 * release: frees a rescinded channel nobody holds any more (closed, no open in flight). Both return
 * the relid to send RELID_RELEASED for (ch is then freed), or 0. A channel with a driver is
 * released when the driver closes it. */
uint32_t vmbus_channel_rescind_locked(struct vmbus_channel *ch);
uint32_t vmbus_channel_release_locked(struct vmbus_channel *ch);
void vmbus_send_relid_released(uint32_t relid);

#endif
