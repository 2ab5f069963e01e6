/*
 * vmbus: the guest side of VMBus channel management, over the hv layer (hv/hv.h): the connection
 * (version negotiation from 6.0 down to 3.0), offers and the device registry, GPADLs, channel
 * open/close/rescind/retarget, signalling both ways, and UNLOAD at power-off. Wire formats are in
 * hv/vmbus/proto/vmbus_proto.h; the ring buffers and packets on top of an open channel are kmcl's (kmcl/).
 *
 * Lifetime: vmbus_init() once at PASSIVE after hv_init(); it connects, collects the offers, prints
 * the device listing and probes the registered drivers. A power-off hook sends UNLOAD and waits for
 * UNLOAD_RESPONSE; afterwards the bus is down and vmbus_init() may connect afresh.
 *
 * Host messages arrive on SINT 2 and are handled at DISPATCH from the SynIC's DPC; everything the
 * host sends is read once from its SynIC slot (hv/synic.c), checked (hv/vmbus/proto/vmbus_msg.c, then
 * relids, handles, states), and a bad or unasked message is logged and dropped without disturbing
 * anything else. Every wait for the host has a timeout (vmbus_set_timeout_ms, default 5 s) and
 * says what it waited for when it gives up.
 *
 * Buffers: a GPADL's buffer belongs to its creator, who must not free it before vmbus_gpadl_destroy
 * returned STATUS_OK (after a timeout the host may still use it: it is then leaked on purpose, with a
 * log line). A channel's ring memory belongs to the bus from open to close.
 *
 * Channel lifetime. A struct vmbus_channel is reference counted; the host can rescind it at any
 * step, and that ends its relid, never memory someone still holds:
 *  - The relid table holds a reference from the offer until the relid is released. Every pointer
 *    the bus hands out is valid while the bus's own reference or one of the caller's lasts:
 *      probe(), remove(), rescind() of a driver: the bus holds a reference for a bound driver from
 *        probe() on until remove() returned, or, for a channel the host rescinded, until the
 *        driver's vmbus_channel_close() handed the relid back (its last call on ch); a failed
 *        probe() lets go at once.
 *      vmbus_for_each_channel(): during the callback (the bus lock is held).
 *      vmbus_channel_wait_sub_channels(): the sub-channels it returns are held for the caller.
 *      vmbus_channel_primary(): while the caller's reference on the sub-channel lasts (a
 *        sub-channel holds its primary).
 *  - Anything kept past that (kmcl's channel, a driver's queue, an app) takes a reference of its
 *    own with vmbus_channel_hold() and drops it with vmbus_channel_release(); the memory goes with
 *    the last reference. A held channel that was rescinded still answers every accessor, refuses
 *    open (STATUS_CANCELLED) and closes as usual.
 *  - RELID_RELEASED goes to the host when the guest is done with the relid, independent of who
 *    still holds the memory: the channel is rescinded, not open and no open or close is in flight,
 *    no GPADL of it is being created or live, and no driver is bound (a bound driver's
 *    vmbus_channel_close() of the rescinded channel unbinds it). Until then the relid stays in the
 *    table (and is not reused by the host).
 *  - UNLOAD (vmbus_unload, power-off) drops the table's and the drivers' references without
 *    remove(); channels still held read as rescinded.
 */
#ifndef HV_VMBUS_H
#define HV_VMBUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "hv/vmbus/proto/vmbus_proto.h"
#include "kernel/status.h"

struct vmbus_channel;

/* ---- the bus ---- */

/* Connects (at most `max_version`, 0 for the newest this code knows), requests the offers, waits
 * for ALLOFFERS_DELIVERED, prints the listing and probes drivers. At PASSIVE, after hv_init(). */
status_t vmbus_init(uint32_t max_version) WARN_UNUSED;
bool vmbus_connected(void);
uint32_t vmbus_version(void);              /* negotiated, 0 when not connected */
uint32_t vmbus_host_features(void);        /* 6.0 feature flags the host reported */
uint32_t vmbus_message_connection_id(void); /* where channel messages are posted */
void vmbus_set_timeout_ms(uint32_t ms);    /* for every wait on the host; 0: back to 5000 */
/* The lsvmbus-style listing (type, instance, relid, sub-channel index, monitor id, state). Any IRQL
 * <= DISPATCH. */
void vmbus_list(void);
/* The bus's view of the offers, in relid order: calls fn for each live channel. At <= DISPATCH;
 * fn runs with the bus lock held and must not call back into vmbus except the accessors and
 * vmbus_channel_hold: ch is valid during the call, and a hold keeps it past it. */
void vmbus_for_each_channel(void (*fn)(struct vmbus_channel *ch, void *ctx), void *ctx);
/* UNLOAD now (what the power-off hook does): closes nothing itself, tells the host the guest is
 * leaving and resets the bus state. At PASSIVE. */
status_t vmbus_unload(void) WARN_UNUSED;

struct vmbus_stats {
    uint64_t messages, dropped_bad, dropped_unasked, offers, rescinds, interrupts, stray_interrupts, signals,
        monitor_signals, gpadls_created, gpadls_torn_down, opens, closes, open_failures, timeouts;
    uint32_t channels, gpadls_live, leaked_gpadls;
    uint32_t channel_objects; /* channels in memory: those on offer and rescinded ones still held */
};
void vmbus_get_stats(struct vmbus_stats *out);

/* ---- drivers ---- */

/* A driver for one interface type. probe() and remove() run at PASSIVE in the thread that called
 * vmbus_init() or vmbus_driver_register(). A probe that fails leaves the channel unbound; the bus
 * and the other devices are not affected. Sub-channels are never probed: they belong to the
 * primary's driver (vmbus_channel_wait_sub_channels).
 *
 * rescind(ch) runs when the host withdraws a bound primary or any sub-channel of one, open or not
 * (possibly while probe() still runs): at DISPATCH, from the VMBus message DPC on the CPU that
 * connected the bus, with no bus lock held, before the bus gives the relid back. ch is rescinded
 * already and valid during the call. The driver may look at it (the accessors), take a reference
 * (vmbus_channel_hold), mark its own state, and queue a DPC or set an event; it must not block or
 * call what needs PASSIVE (open, close, GPADLs, waits). Sends on the channel fail from now on (the
 * host closed its side). Later, at PASSIVE, it calls vmbus_channel_close(ch): for a primary that
 * hands the relid back and ends the bus's reference for the driver; for an open sub-channel it
 * hands that relid back (a sub-channel that is not open is released at once). */
struct vmbus_driver {
    const char *name;
    struct vmbus_guid type;
    status_t (*probe)(struct vmbus_channel *ch);
    void (*remove)(struct vmbus_channel *ch);
    void (*rescind)(struct vmbus_channel *ch);
};
#define VMBUS_MAX_DRIVERS 16
/* Linking a driver into an image is enough to bind it: VMBUS_DRIVER(d) puts &d into the
 * vmbus_drivers section, and vmbus_init() registers every driver found there (after the offers
 * are in) and probes the offers of its type, at PASSIVE. */
#define VMBUS_DRIVER(d)                                                                                  \
    static const struct vmbus_driver *const vmbus_driver_entry_##d                                      \
        __attribute__((used, section("vmbus_drivers"), aligned(8))) = &(d)
/* The section's bounds (the kernel's linker.ld, or the linker's own start/stop symbols hosted). */
extern const struct vmbus_driver *const __start_vmbus_drivers[] __attribute__((weak));
extern const struct vmbus_driver *const __stop_vmbus_drivers[] __attribute__((weak));
/* Registers and probes every matching unbound primary channel offered so far. At PASSIVE. */
status_t vmbus_driver_register(const struct vmbus_driver *d) WARN_UNUSED;
/* Calls remove() for each channel bound to d, then forgets d. At PASSIVE. */
void vmbus_driver_unregister(const struct vmbus_driver *d);

/* ---- a channel (an offer) ---- */

/* References (the lifetime rule at the top of this file). hold: any IRQL, on a channel the caller
 * may use at that moment (also inside a vmbus_for_each_channel callback). release: at <= DISPATCH,
 * not inside a vmbus_for_each_channel callback; the last one frees the channel (and drops a
 * sub-channel's reference on its primary). */
void vmbus_channel_hold(struct vmbus_channel *ch);
void vmbus_channel_release(struct vmbus_channel *ch);

uint32_t vmbus_channel_relid(const struct vmbus_channel *ch);
uint16_t vmbus_channel_sub_index(const struct vmbus_channel *ch);
const struct vmbus_offer *vmbus_channel_offer(const struct vmbus_channel *ch);
const char *vmbus_channel_type_name(const struct vmbus_channel *ch); /* "netvsc", ..., "unknown" */
bool vmbus_channel_is_open(const struct vmbus_channel *ch);
bool vmbus_channel_rescinded(const struct vmbus_channel *ch);
uint32_t vmbus_channel_target_cpu(const struct vmbus_channel *ch);
struct vmbus_channel *vmbus_channel_primary(struct vmbus_channel *ch); /* itself for a primary */
void vmbus_channel_set_driver_context(struct vmbus_channel *ch, void *ctx);
void *vmbus_channel_driver_context(const struct vmbus_channel *ch);
/* Formats a GUID as text (36 chars + NUL). */
void vmbus_guid_format(const struct vmbus_guid *g, char out[37]);

/* Waits until the primary (held by the caller) has at least `count` sub-channels offered, until the
 * bus timeout from the call on (STATUS_TIMEOUT; offers and rescinds of other channels meanwhile do
 * not extend it), or until the primary is rescinded (STATUS_CANCELLED). On STATUS_OK and subs !=
 * NULL: the first `count` of them, in sub-channel index order, each held for the caller, who
 * releases each (vmbus_channel_release) when done; one may be rescinded by then (its open returns
 * STATUS_CANCELLED). PASSIVE. */
status_t vmbus_channel_wait_sub_channels(struct vmbus_channel *primary, uint32_t count,
                                         struct vmbus_channel **subs) WARN_UNUSED;

/* ---- GPADLs ---- */

/* Describes `bytes` (a multiple of 4096, page-aligned `buf`, at most VMBUS_GPADL_MAX_PAGES = 8190
 * pages: STATUS_INVALID_PARAMETER above) to the host on channel ch; returns the handle once the host
 * answered GPADL_CREATED with status 0. A rescind meanwhile does not end the wait (the host still
 * answers): STATUS_CANCELLED then, the GPADL refused or torn down again, and buf is the caller's
 * again. STATUS_DEVICE_ERROR: refused, buf is the caller's. STATUS_TIMEOUT: buf is left to the host.
 * PASSIVE. */
status_t vmbus_gpadl_create(struct vmbus_channel *ch, void *buf, size_t bytes, uint32_t *handle) WARN_UNUSED;
/* GPADL_TEARDOWN, waits for GPADL_TORNDOWN (also after a rescind: the host still answers). PASSIVE. */
status_t vmbus_gpadl_destroy(struct vmbus_channel *ch, uint32_t handle) WARN_UNUSED;

/* ---- open, close, interrupts, signalling ---- */

/* Called at DISPATCH on the channel's target CPU each time the host signals the channel (its SIEF
 * bit). A signal that arrives while the open is still in flight is held and delivered once, just
 * after the channel is open. */
typedef void (*vmbus_interrupt_fn)(struct vmbus_channel *ch, void *ctx);

struct vmbus_open_params {
    uint32_t out_ring_bytes;  /* guest -> host ring incl. its 4 KiB control page; multiple of 4096, >= 8192 */
    uint32_t in_ring_bytes;   /* host -> guest ring, the same rules */
    uint32_t target_cpu;      /* where interrupts arrive */
    const void *user_data;    /* OPENCHANNEL user data, up to 120 bytes */
    uint32_t user_data_len;
    vmbus_interrupt_fn on_interrupt;
    void *ctx;
};
/* Allocates the rings, describes them in one GPADL (so out + in pages <= VMBUS_GPADL_MAX_PAGES),
 * sends OPENCHANNEL and waits for the result. STATUS_CANCELLED if the host rescinded the channel
 * before or meanwhile (the rings are freed once the host let go of their GPADL); STATUS_DEVICE_ERROR
 * if it refused. PASSIVE. */
status_t vmbus_channel_open(struct vmbus_channel *ch, const struct vmbus_open_params *p) WARN_UNUSED;
/* Stops interrupts (waits for a running callback), sends CLOSECHANNEL (unless rescinded), tears the
 * ring GPADL down and frees the rings (a teardown the host does not answer in time leaves them to
 * it: STATUS_TIMEOUT). On a rescinded channel it then hands the relid back (lifetime rule above) and
 * unbinds its driver. Closing a channel that is not open is otherwise a no-op. ch stays valid for
 * a caller that holds it. PASSIVE. */
status_t vmbus_channel_close(struct vmbus_channel *ch) WARN_UNUSED;
/* The rings of an open channel (control page first). */
void *vmbus_channel_out_ring(const struct vmbus_channel *ch, uint32_t *bytes);
void *vmbus_channel_in_ring(const struct vmbus_channel *ch, uint32_t *bytes);
/* Tells the host the channel has something for it: the monitor page trigger when the offer has a
 * monitor id and low latency is off, else HvSignalEvent on the offer's connection id. <= DISPATCH. */
void vmbus_channel_signal(struct vmbus_channel *ch);
/* Low latency: signal with HvSignalEvent even when the offer is monitored (no host scan delay). */
void vmbus_channel_set_low_latency(struct vmbus_channel *ch, bool on);
/* MODIFYCHANNEL (4.1+): interrupts go to target_cpu from now on; at 5.3+ waits for the host's
 * response. STATUS_NOT_SUPPORTED below 4.1. PASSIVE. */
status_t vmbus_channel_set_target_cpu(struct vmbus_channel *ch, uint32_t target_cpu) WARN_UNUSED;

struct vmbus_channel_stats {
    uint64_t interrupts, signals, monitor_signals;
};
void vmbus_channel_get_stats(const struct vmbus_channel *ch, struct vmbus_channel_stats *out);

#endif
