/*
 * hv_internal: state shared by the files of the Hyper-V layer (hv.c, synic.c, reftime.c,
 * stimer.c). Not for users of the layer.
 */
#ifndef HV_HV_INTERNAL_H
#define HV_HV_INTERNAL_H

#include <stdint.h>

#include "hv/binding.h"
#include "hv/hv.h"
#include "kernel/dpc.h"
#include "kernel/percpu.h"

/* One per CPU, indexed by the kernel's CPU id; touched only by its CPU after set-up. */
struct hv_cpu {
    bool up;
    uint32_t vp_index;
    struct hv_message_page *simp;          /* this CPU's SynIC message page */
    struct hv_event_flags_page *siefp;     /* and event flags page */
    void *hypercall_in, *hypercall_out;    /* slow-hypercall input/output pages */
    uint64_t hypercall_in_gpa, hypercall_out_gpa;
    struct dpc synic_dpc;                  /* runs the DISPATCH-level SINT handlers */
    struct hv_synic_stats stats;
};

extern const struct hv_binding *hv_bind;
extern struct hv_cpu hv_cpus[MAX_CPUS];

/* Runs fn(&status[cpu]) on every online CPU (one pinned thread each) and waits: at PASSIVE. */
status_t hv_on_each_cpu(void (*fn)(void *status), status_t status[MAX_CPUS]);
status_t hv_synic_init(void);          /* once: the SINT vector */
status_t hv_synic_cpu_init(void);      /* on each CPU, at PASSIVE */
void hv_synic_cpu_shutdown(void);      /* this CPU: SINTs masked, SynIC and pages off */
void hv_reftime_init(void);            /* once, after the hypercall page */
void hv_reftime_shutdown(void);
void hv_stimer_cpu_stop(void);         /* this CPU's timer 0 off */
/* After shutdown: forget handlers, vector and timer mode, so hv_init() can start afresh. */
void hv_synic_forget(void);
void hv_stimer_forget(void);

#endif
