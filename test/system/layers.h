/*
 * layers: the guest layers as the hostile-host system tests drive them (test/system/test_hazards.c,
 * test/system/test_shmem_flip.c): one hosted machine per process (test/hosted/) with hvsim's VMBus
 * server, the test device's VSP and the netvsp in-process, and for each layer a bring-up, a short
 * workload that checks every byte it gets back, a teardown and the checks of what must hold after
 * it. Adding a layer (storvsc, the integration services) is one struct layer and one row of
 * layer_table.
 *
 * The rules every layer checks, whatever the host does:
 *  - what the guest accepts is well formed: a packet kmcl hands to process_packet lies inside the
 *    inbound ring's data area or in kmcl's own (heap) copy, and every byte of it is read (ASan sees
 *    a read past a heap copy); a frame netvsc hands to the stack lies inside the receive buffer,
 *    inside the one sub-allocation the host's range named (layer_honest_ranges), and is 14 .. MTU
 *    + 14 bytes long (layer_stats.range_errors);
 *  - every guest wait ends: each guest job runs under a deadline (guest_run), and a job that
 *    outlives it is reported through layer_hung (the caller decides how to die);
 *  - with strict checks (a benign host), the workload's results are exact: every echo and data
 *    packet back, byte for byte, in order, every request completed with STATUS_OK;
 *  - after the teardown nothing is left: no channel open on either side, no GPADL live, every
 *    rescinded relid released (the host's offers equal the guest's channels), every guest page
 *    back (layer_check_clean).
 * Failures are collected as lines (layer_fail), not asserted, so one run reports all of them.
 *
 * Threads: the test's thread drives everything; guest code runs in jobs on VP 0 (guest_run); the
 * layers' callbacks run on the VPs (DPCs) and on the VMBus server's thread (the device wrappers).
 * Counters shared between them are atomics.
 */
#ifndef TEST_SYSTEM_LAYERS_H
#define TEST_SYSTEM_LAYERS_H

#include <stdbool.h>
#include <stdint.h>

#include "kernel/status.h"
#include "sim/netvsp/netvsp.h"
#include "sim/vmbus_server.h"
#include "sim/vsp/vsp_test.h"

#define LAYERS_VPS 4          /* VP 0 runs the jobs; channels' DPCs run on 1..3 */
#define LAYERS_RAM (64u << 20)

/* ---- failures ---- */

/* Records one failure line (also passed to layer_on_fail, when set, at once). */
void layer_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
uint32_t layer_failures(void);
const char *layer_failure_text(void); /* every line so far, '\n'-separated */
extern void (*layer_on_fail)(const char *line);
/* A guest job outlived its deadline: called with the step's name; must not return (the job still
 * runs on VP 0 and owns the machine). Default: print and _exit(3). */
extern void (*layer_hung)(const char *step, unsigned limit_ms);

/* Runs fn(arg) as a guest job on VP 0 at PASSIVE and waits for it, at most limit_ms, and once the
 * host has rescinded a channel (of any layer) at most 2 s from then or from the job's start: after a
 * rescind, sends fail at once and nothing waits for the channel (issue 13 item 5). */
void guest_run(const char *step, void (*fn)(void *arg), void *arg, unsigned limit_ms);

/* ---- the machine ---- */

struct machine_config {
    uint32_t vmbus_hazards;     /* enum hvsim_vmbus_hazard bits */
    uint32_t response_delay_us;
    uint32_t queue_depth;       /* hvsim's SINT queue; 0: hvsim's default */
    const char *rescind_device; /* hvsim_vmbus_config.rescind_device (NULL: none) */
    uint32_t rescind_after_ms;
};

/* Device-level faults, applied by wrappers around the VSPs' callbacks on the server's thread.
 * Written by the test's threads at any time (atomics). */
struct device_faults {
    uint32_t stall_every;  /* every Nth guest signal of a device waits stall_ms before it is served */
    uint32_t stall_ms;
    bool stop_reading;     /* guest signals are ignored: the host no longer reads any ring */
};
extern struct device_faults layer_faults;

struct machine {
    struct hvsim_vmbus *vb;
    struct hvsim_vsp_test *vsp;
    struct hvsim_netvsp *nvsp;
    uint64_t pages_at_start; /* guest pages in use once the bus is up, before any layer */
    int64_t rescind_seen_ns; /* when guest_run first saw the host rescind a channel (0: never) */
};
extern struct machine machine;

/* Starts the VPs, hvsim, its VMBus server (the default device set with the test device and the NIC
 * served by this machine's instances) and the guest's hv layer and VMBus (vmbus_init). false: the
 * bus did not come up (a failure line says why). */
bool machine_start(const struct machine_config *cfg);
/* Powers off (UNLOAD), destroys the server and the VSPs, stops the VPs. */
void machine_stop(void);

/* ---- layers ---- */

struct layer_stats {
    uint32_t sent, answered, bad;    /* requests (echoes, datagrams); answers that came back right;
                                        answers or deliveries whose bytes were wrong */
    uint32_t range_errors;           /* deliveries outside their ring or buffer, or of a bad length */
    uint32_t errors;                 /* guest calls that ended with an error status (clear errors) */
    uint64_t refused;                /* host input the guest refused and counted (netvsc's drops) */
};

/* What a layer may expect of the host in one run. */
struct expect {
    bool strict;       /* a benign host: every result exact */
    bool host_lies;    /* the host sends malformed input on purpose: the guest's refusal counters count */
    bool primary_only; /* sub-channels may go away: only the primary channel's results are exact */
    bool late_answers; /* the host answers after the guest stopped waiting: it leaves more to the host */
};

struct layer {
    const char *name;
    const char *device;         /* the hvsim device it drives (hvsim_vmbus_device.name) */
    struct vmbus_guid type;
    /* Brings the layer up (guest jobs). false: it did not come up (a failure line when strict). */
    bool (*up)(const struct expect *e);
    /* One round of the workload, checked as e says. */
    void (*round)(uint32_t r, const struct expect *e);
    void (*down)(void);
    /* After the rounds, before down: the layer's own counters. */
    void (*check)(const struct expect *e);
    void (*get_stats)(struct layer_stats *out);
    /* Content checks off (the shared-memory flip test corrupts payloads on purpose; the structure
     * rules stay on). */
    void (*set_content_checks)(bool on);
    /* The guest has marked a channel of the layer FAILED (bad input: a clean failure). */
    bool (*failed)(void);
};

extern const struct layer layer_kmcl, layer_netvsc;
extern const struct layer *const layer_table[];
extern const uint32_t layer_count;

/* The relid of the layer's primary channel as the guest has it (0: none). */
uint32_t layer_primary_relid(const struct layer *l);
/* The first live sub-channel of the layer's primary (0: none yet). Any thread. */
uint32_t layer_sub_relid(const struct layer *l);

/* After down: nothing of the layer is left (see above): no channel open, every relid released, no
 * GPADL live but those the guest left to the host (vmbus_stats.leaked_gpadls: no answer in time),
 * each of them one the host really still has (a late host may have dropped it since), and with
 * none left every guest page is back; strict (an honest, timely host) none is left. Waits up to
 * 3 s for the last messages. */
void layer_check_clean(const struct expect *e);

/* ---- for the flip test: the shared memory a layer uses ---- */

/* The inbound ring (control page first) of the layer's primary channel while open, else NULL. */
void *layer_in_ring(const struct layer *l, uint32_t *bytes);
/* netvsc's receive buffer as the host mapped it and its sub-allocations' size (NULL: none yet). */
void *layer_rx_buffer(uint32_t *bytes, uint32_t *sub_size);
/* The host's transfer-page ranges are its sub-allocations (true unless a test corrupts the rings the
 * ranges travel in): every frame netvsc delivers then lies inside one sub-allocation. */
extern bool layer_honest_ranges;

#endif
