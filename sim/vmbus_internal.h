/*
 * vmbus_internal: the VMBus server's state and the functions its files share (sim/vmbus_server.c:
 * creation, the thread, the inbox/outbox/callback queues, ports, signals, stats, the public entry
 * points; sim/vmbus_channels.c: the channel-management protocol - contact, offers, GPADLs,
 * open/close, rescind, sub-channels, MODIFYCHANNEL, UNLOAD, monitor pages; sim/vmbus_devices.c: the
 * default devices). Embedders use sim/vmbus_server.h only.
 *
 * Locks, outermost first (never taken in the other order):
 *  1. state_lock: the connection, the channel table, the GPADL table. Held while the thread handles
 *     a guest message and by the public host actions. With it held the server may call into hvsim
 *     (port registration, logging) and take q_lock.
 *  2. the hvsim mutex: port handlers run under it and take q_lock only.
 *  3. q_lock (a leaf): the inbox, the signalled-relid bitmap, the outbox, the callback queue and the
 *     thread's timers. Nothing is called with it held.
 * Device callbacks and outbox posts (hvsim_post/hvsim_signal) run on the thread with no lock held.
 * Fields read without state_lock (by hvsim_vmbus_signal_guest and the port handlers) are accessed
 * with __atomic builtins: a channel's state and target_vp, and the connection's version, message
 * SINT and interrupt page. Counters in stats are atomic adds.
 */
#ifndef SIM_VMBUS_INTERNAL_H
#define SIM_VMBUS_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sim/hvsim_internal.h"
#include "sim/vmbus_server.h"

#define VB_DEFAULT_MONITOR_LATENCY_US 100u
#define VB_REORDER_WINDOW_NS 2000000ll   /* REORDER_RESPONSES without a response delay */
#define VB_OUTBOX_HIGH 4096u             /* stop taking guest messages while more wait to go out */
#define VB_RETRY_MIN_NS 50000ll          /* backoff while the guest's SINT queue is full */
#define VB_RETRY_MAX_NS 2000000ll
#define VB_RELIDS (VMBUS_MAX_RELID + 1u)
#define VB_NAME_MAX 32u

enum vb_channel_state {
    VB_CH_FREE = 0,  /* relid not in use */
    VB_CH_OFFERED,   /* offered (to the guest once it asks), not open */
    VB_CH_OPEN,
    VB_CH_RESCINDED, /* closed and rescinded; the relid waits for RELID_RELEASED */
};

/* Slot `relid` of the server's table: its address is the handle VSPs get and stays valid for the
 * server's life, so a callback queued for an earlier use of the relid never dangles. */
struct hvsim_vmbus_channel {
    struct hvsim_vmbus *vb;
    const struct hvsim_vmbus_device *dev; /* the server's copy */
    uint32_t relid;
    uint32_t state;     /* enum vb_channel_state (atomic) */
    uint32_t target_vp; /* while open (atomic) */
    uint32_t primary;   /* the primary's relid; == relid for a primary */
    uint16_t sub_index;
    bool monitored;
    uint8_t monitor_id;
    bool sent;          /* its OFFERCHANNEL went to the guest in this connection */
    uint32_t open_id, ring_gpadl;
    uint64_t seq;       /* offer order: REQUESTOFFERS sends in this order */
};

struct vb_gpadl {
    uint32_t handle, relid, pages, received, byte_offset;
    uint32_t ring_of;       /* relid of the open channel whose rings these pages are, 0: none */
    bool teardown_pending;  /* GPADL_TEARDOWN came while ring_of: answered when that channel closes */
    bool answer_late;       /* complete, refused, its GPADL_CREATED on the late list: still outstanding */
    uint64_t pfn[];
};

/* A host -> guest control message held back until due_ns (the late-answer hazards), then queued to
 * the outbox by vb_periodic; remove_gpadl names a GPADL (answer_late) that goes with it, 0: none. */
struct vb_late {
    struct vb_late *next;
    int64_t due_ns;
    uint32_t remove_gpadl, size;
    uint8_t payload[HV_MESSAGE_PAYLOAD_MAX];
};

/* A guest message as the port handler copied it. */
struct vb_inbox_entry {
    uint32_t vp, conn, type, size;
    uint8_t payload[HV_MESSAGE_PAYLOAD_MAX];
};

enum vb_out_kind { VB_OUT_MESSAGE, VB_OUT_SIGNAL };

struct vb_out {
    struct vb_out *next;
    enum vb_out_kind kind;
    uint32_t vp, sint, size; /* MESSAGE: where to and the payload size */
    uint32_t relid;          /* SIGNAL: the channel */
    bool reorderable;
    uint64_t burst;          /* REORDER_RESPONSES: the window this item belongs to, 0 once released */
    int64_t due_ns;
    uint8_t payload[HV_MESSAGE_PAYLOAD_MAX];
};

enum vb_callback_kind { VB_CB_OPEN, VB_CB_CLOSE, VB_CB_SIGNAL };

struct vb_callback {
    struct vb_callback *next;
    enum vb_callback_kind kind;
    struct hvsim_vmbus_channel *ch;
    const struct hvsim_vmbus_device *dev;
    void *in_ring, *out_ring;
    uint32_t in_bytes, out_bytes;
};

/* A device's copy (the table's, and hot-added ones), with its name. */
struct vb_device {
    struct vb_device *next;
    struct hvsim_vmbus_device dev;
    char name[VB_NAME_MAX];
};

struct hvsim_vmbus {
    struct hvsim *sim;
    struct hvsim_vmbus_config cfg; /* resolved: max_version and monitor_latency_us set */
    char rescind_device[VB_NAME_MAX];
    pthread_t thread;
    uint32_t ports_registered;       /* bits of server_ports (vmbus_server.c) */

    pthread_mutex_t state_lock;
    /* ---- under state_lock ---- */
    bool connected, offers_requested;
    uint32_t conn_vp;                /* target_vcpu: control messages go there */
    uint64_t monitor1, monitor2;     /* GPAs, 0: none */
    struct hvsim_vmbus_channel channels[VB_RELIDS]; /* index = relid; 0 unused */
    uint32_t monitor_owner[VMBUS_MONITOR_IDS];      /* relid using each monitor id, 0: free */
    struct vb_gpadl **gpadls;        /* HVSIM_VMBUS_MAX_GPADLS slots, gpadl_count used */
    uint32_t gpadl_count;
    uint64_t next_seq;
    struct vb_device *devices;
    bool rescind_timer_used;         /* --vmbus-rescind-after-ms: armed once per server, */
    uint32_t rescind_timer_relid;    /* for this relid (0: not armed or fired) */
    int64_t rescind_timer_due_ns;
    uint32_t monitored_open;         /* open channels with a monitor id: the scan runs while > 0 */
    struct vb_late *late;            /* held-back answers, oldest first */
    struct vb_device *churn_dev;     /* OFFER_CHURN: the device it adds and rescinds */
    uint32_t churn_left, churn_relid; /* rounds to go; the live churn offer (0: none) */
    int64_t churn_due_ns;            /* the next round (0: not started) */
    uint32_t reply_vp, reply_sint;   /* where replies to the message being handled go */
    int64_t next_monitor_ns;         /* the thread's next monitor page scan */

    /* ---- atomics (see the top of this file) ---- */
    uint32_t version, conn_sint;
    uint64_t interrupt_page;

    pthread_mutex_t q_lock;
    pthread_cond_t work;             /* the thread waits here */
    pthread_cond_t idle;             /* hvsim_vmbus_flush waits here */
    /* ---- under q_lock ---- */
    struct vb_inbox_entry *inbox;    /* HVSIM_VMBUS_INBOX_DEPTH entries */
    uint32_t in_head, in_count;
    uint64_t signalled[VB_RELIDS / 64];
    struct vb_out *out_head, *out_tail;
    uint32_t out_count;
    struct vb_callback *cb_head, *cb_tail;
    uint64_t burst_id;
    int64_t burst_end_ns;
    int64_t retry_at_ns, retry_backoff_ns; /* the outbox head could not be posted: try again then */
    int64_t wake_at_ns;              /* the state side's next timer (monitor scan, rescind), 0: none */
    bool busy, stop;

    struct hvsim_vmbus_stats stats;  /* counters only; the gauges are computed by get_stats */
};

#define VB_COUNT(vb, field) __atomic_fetch_add(&(vb)->stats.field, 1, __ATOMIC_RELAXED)

/* vmbus_server.c */
int64_t vb_now_ns(void);
/* calloc, or abort with a message: a host model without memory cannot keep its promise never to drop
 * a message. */
void *vb_alloc(size_t size);
void vb_log(struct hvsim_vmbus *vb, int verbosity, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void vb_guest_error(struct hvsim_vmbus *vb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Queues a message for (vp, sint) (state_lock held by the caller, q_lock not). */
void vb_queue_message(struct hvsim_vmbus *vb, uint32_t vp, uint32_t sint, const void *payload, uint32_t size,
                      bool reorderable);
/* A reply to the message being handled: to reply_vp/reply_sint. */
void vb_reply(struct hvsim_vmbus *vb, const void *payload, uint32_t size, bool reorderable);
void vb_queue_signal(struct hvsim_vmbus *vb, uint32_t relid);
void vb_queue_callback(struct hvsim_vmbus *vb, const struct vb_callback *cb);
bool vb_signal_channel(struct hvsim_vmbus_channel *ch); /* no lock needed */
uint16_t vb_channel_event(struct hvsim *sim, void *ctx, uint32_t vp, uint32_t connection_id, uint16_t flag);

/* vmbus_channels.c (state_lock held) */
void vb_handle_message(struct hvsim_vmbus *vb, const struct vb_inbox_entry *in);
/* Offers a new channel for dev (primary: primary_relid 0); returns it or NULL. */
struct hvsim_vmbus_channel *vb_new_offer(struct hvsim_vmbus *vb, const struct hvsim_vmbus_device *dev,
                                         uint32_t primary_relid, uint16_t sub_index);
bool vb_rescind(struct hvsim_vmbus *vb, struct hvsim_vmbus_channel *ch);
bool vb_offer_sub_channels(struct hvsim_vmbus *vb, struct hvsim_vmbus_channel *primary, uint16_t count);
/* The thread's periodic work: the monitor page scan and the rescind timer; returns when it wants to
 * run again (0: never). */
int64_t vb_periodic(struct hvsim_vmbus *vb, int64_t now);
/* Queues on_signal for every open channel among the signalled relids. */
void vb_dispatch_signals(struct hvsim_vmbus *vb, const uint64_t *bits);
/* At destruction (thread stopped): closes open channels with on_close called directly, frees. */
void vb_close_all_for_destroy(struct hvsim_vmbus *vb);
void vb_free_tables(struct hvsim_vmbus *vb);
const char *vb_version_name(uint32_t version, char buf[16]);
bool vb_version_known(uint32_t version);

#endif
