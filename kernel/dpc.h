/*
 * dpc: deferred procedure calls (KDPC). A DPC queued from any IRQL runs once, at DISPATCH, on its
 * target CPU (the queuing CPU unless set), from the DPC/dispatch software interrupt (vector 0x2F):
 * raised by a self-IPI, or an IPI for another CPU, and delivered as soon as that CPU's IRQL drops
 * below DISPATCH. DPCs on one CPU run in queue order, one at a time.
 * The caller owns struct dpc; it must stay valid while queued (dpc_cancel before freeing).
 */
#ifndef KERNEL_DPC_H
#define KERNEL_DPC_H

#include <stdbool.h>
#include <stdint.h>

#include "kernel/list.h"

struct cpu;
struct dpc;
typedef void (*dpc_fn)(struct dpc *dpc, void *ctx);

struct dpc {
    struct list link;
    dpc_fn fn;
    void *ctx;
    struct cpu *queued_on; /* NULL when not queued */
    int32_t target_cpu;    /* -1: the CPU that queues it */
};

void dpc_init(struct dpc *d, dpc_fn fn, void *ctx);
void dpc_set_target(struct dpc *d, int32_t cpu);
/* Any IRQL. Returns false if it was already queued (it then runs once). */
bool dpc_queue(struct dpc *d);
/* Any IRQL. Returns true if it was queued and now is not (it will not run). */
bool dpc_cancel(struct dpc *d);

/* Asks `c` to take its dispatch interrupt (run DPCs, maybe reschedule). */
void dispatch_request(struct cpu *c);
/* The vector-0x2F handler's body, at DISPATCH. */
void dpc_drain(void);

#endif
