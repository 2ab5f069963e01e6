/*
 * vsp: hvsim's VSPs on kmcl's server endpoint (sim/kmcl/server.h). This glue turns a VMBus server
 * device (struct hvsim_vmbus_device) into kmcl server channels: for every channel the guest opens
 * (primary or sub-channel) it allocates a kmcl_server_channel, lets the VSP set it up (callbacks,
 * context, limits), and enables it on the channel's rings with a transport that signals the guest
 * through the server, reaches guest memory through hvsim_gpa and logs through the hvsim log
 * ("hvsim: vmbus: <device> relid N: ...", verbosity 0). Each guest signal runs the channel's
 * executor (kmcl_server_channel_interrupt) on the server's thread; on close the channel is disabled
 * and freed.
 *
 * Threads: the server calls the device callbacks one at a time; the VSP's own threads (a network
 * gateway, timers) may use the kmcl server API of an open channel at any time (its lock), and learn
 * about closes through the VSP's teardown, after which the channel must not be used.
 */
#ifndef SIM_VSP_H
#define SIM_VSP_H

#include <stdbool.h>

#include "sim/kmcl/server.h"
#include "sim/vmbus_server.h"

struct hvsim_vsp_ops {
    /* A channel was opened: set ch up (init_set_*; the client context is the VSP's per-channel
     * state). Anything but STATUS_OK leaves the channel unserved (logged). */
    status_t (*setup)(void *ctx, struct hvsim_vmbus_channel *vch, struct kmcl_server_channel *ch);
    /* After each guest signal's executor run; did: whether it read or wrote anything. May be NULL. */
    void (*after_interrupt)(void *ctx, struct kmcl_server_channel *ch, bool did);
    /* A signal of this channel reached the guest (kmcl's or the VSP's own). May be NULL. */
    void (*signalled)(void *ctx, struct kmcl_server_channel *ch);
    /* The channel closed and is disabled (its closed callback ran); it is freed after this returns.
     * May be NULL. */
    void (*teardown)(void *ctx, struct hvsim_vmbus_channel *vch, struct kmcl_server_channel *ch);
};

struct hvsim_vsp;

/* NULL: out of memory. ops is copied; ctx stays the caller's. */
struct hvsim_vsp *hvsim_vsp_create(const struct hvsim_vsp_ops *ops, void *ctx);
/* After every server that uses it is destroyed. */
void hvsim_vsp_destroy(struct hvsim_vsp *vsp);
/* Fills the device's on_open, on_close, on_signal and ctx so that vsp serves it. */
void hvsim_vsp_bind(struct hvsim_vsp *vsp, struct hvsim_vmbus_device *dev);
/* The device callbacks hvsim_vsp_bind installs (ctx: the struct hvsim_vsp *), for VSPs that wrap
 * them. */
void hvsim_vsp_open(void *ctx, struct hvsim_vmbus_channel *vch, void *in_ring, uint32_t in_bytes, void *out_ring,
                    uint32_t out_bytes);
void hvsim_vsp_close(void *ctx, struct hvsim_vmbus_channel *vch);
void hvsim_vsp_signal(void *ctx, struct hvsim_vmbus_channel *vch);
/* The VMBus channel a kmcl server channel of this glue serves (relid, sub-channel index...). */
struct hvsim_vmbus_channel *hvsim_vsp_vmbus_channel(struct kmcl_server_channel *ch);

#endif
