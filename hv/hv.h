/*
 * hv: the Hyper-V platform layer: discovery, the guest OS id, hypercalls, the SynIC on every CPU,
 * reference time and synthetic timers, over one binding (hv/binding.h): real Hyper-V, hvsim under
 * QEMU, or in-process hvsim in the hosted tests. Nothing here is touched before ExitBootServices.
 *
 * Lifetime: hv_init() once, at PASSIVE on the boot CPU, after all CPUs are up; it sets up the SynIC
 * of every CPU. Power-off (a shutdown hook) masks the SINTs, stops the timers and disables the SynIC
 * and the hypercall page on every CPU.
 *
 * IRQL: hv_post_message() and hv_signal_event() at <= DISPATCH (post_message sleeps between retries
 * only at PASSIVE; above it, it spins with a bound). hv_ref_time() at any level.
 */
#ifndef HV_HV_H
#define HV_HV_H

#include <stdbool.h>
#include <stdint.h>

#include "arch-x86_64/irql.h"
#include "hv/proto/hvdefs.h"
#include "kernel/status.h"

/* What CPUID 0x40000000..0x40000005 said (hyperv-facts 3.1). */
struct hv_features {
    char vendor[13];
    uint32_t max_leaf;
    uint32_t interface;           /* HV_INTERFACE_HV1 */
    uint32_t build, major, minor, service_pack, service_branch, service_number;
    uint32_t privileges_low;      /* 0x40000003 eax */
    uint32_t privileges_high;     /* 0x40000003 ebx */
    uint32_t features;            /* 0x40000003 edx */
    uint32_t recommendations;     /* 0x40000004 eax */
    uint32_t max_vps;             /* 0x40000005 eax */
};

typedef void (*hv_cpuid_fn)(uint32_t leaf, uint32_t subleaf, uint32_t regs[4]);
/* Reads the leaves through cpuid; false if the vendor or interface is not Microsoft's Hv#1. */
bool hv_features_read(hv_cpuid_fn cpuid, struct hv_features *f);
/* The name of the first privilege this layer needs that f lacks, or NULL if all are there. */
const char *hv_features_missing(const struct hv_features *f);
/* One line per group: "privileges: SynicRegs HypercallMsrs ...". */
void hv_features_log(const struct hv_features *f);

/* Brings the layer up. STATUS_NOT_FOUND: no Hyper-V and no hvsim (said plainly in the log);
 * STATUS_NOT_SUPPORTED: a required privilege is missing (named in the log). */
status_t hv_init(void) WARN_UNUSED;
bool hv_active(void);
const char *hv_binding_name(void);  /* "hyper-v", "hvsim", "hosted" or "none" */
const struct hv_features *hv_get_features(void);
uint32_t hv_vp_index(uint32_t cpu_id);

/* HvCallPostMessage with up to HV_POST_RETRIES tries on the transient statuses
 * (INSUFFICIENT_BUFFERS, INSUFFICIENT_MEMORY), backing off from 20 us, doubling, to 10 ms. Returns
 * the final Hyper-V status. size <= 240. */
#define HV_POST_RETRIES 20
uint16_t hv_post_message(uint32_t connection_id, uint32_t message_type, const void *payload, uint32_t size);
/* HvCallSignalEvent, fast form. */
uint16_t hv_signal_event(uint32_t connection_id, uint16_t flag);
const char *hv_status_name(uint16_t status);

/* ---- SynIC (hv/synic.c) ---- */
/* A SINT's consumer. message(): a valid message (payload_size <= 240) read once from the calling
 * CPU's slot into a private copy (the host cannot change it under the handler), readable only
 * during the call; return STATUS_NOT_SUPPORTED for a type it does not know (logged and dropped). event(): a flag that was set (already cleared) among the first event_flags of the SINT's
 * block. Both run on the CPU that took the interrupt, at `irql`: IRQL_DISPATCH (from the SynIC's
 * DPC) or hv_sint_device_irql() (from the interrupt itself). */
struct hv_sint_handler {
    const char *name;
    irql_t irql;
    status_t (*message)(void *ctx, uint32_t cpu, const struct hv_message *msg);
    void (*event)(void *ctx, uint32_t cpu, uint32_t flag);
    uint32_t event_flags; /* how many flags of the block belong to this handler (<= 2048) */
    void *ctx;
};
/* Registers and unmasks `sint` on every CPU. At PASSIVE, after hv_init(). */
status_t hv_sint_register(uint8_t sint, const struct hv_sint_handler *h) WARN_UNUSED;
void hv_sint_unregister(uint8_t sint);
irql_t hv_sint_device_irql(void);
uint8_t hv_sint_vector(void);

struct hv_synic_stats {
    uint64_t interrupts, messages, events, eoms, dropped_no_handler, dropped_bad_size, dropped_unknown_type,
        stray_events;
};
void hv_synic_get_stats(uint32_t cpu, struct hv_synic_stats *out);

/* ---- reference time (hv/reftime.c) ---- */
/* 100 ns units since the partition started: the reference TSC page when valid, else the
 * TIME_REF_COUNT MSR. */
uint64_t hv_ref_time(void);
const char *hv_ref_time_source(void); /* "tsc page", "msr" */

/* ---- synthetic timer 0 (hv/stimer.c) ---- */
/* Timer 0 of every CPU, one-shot at absolute reference times. Direct mode (the interrupt on
 * direct_vector, whose handler the caller registered and which must call the expiry work itself)
 * when the host offers it and allow_direct; else message mode: a timer message on HV_STIMER_SINT,
 * whose handler (at hv_sint_device_irql()) calls expired(). At PASSIVE, after hv_init(). */
#define HV_STIMER_SINT 4
enum hv_stimer_mode { HV_STIMER_OFF, HV_STIMER_MODE_DIRECT, HV_STIMER_MODE_MESSAGE };
status_t hv_stimer_start(void (*expired)(void), bool allow_direct, uint8_t direct_vector) WARN_UNUSED;
enum hv_stimer_mode hv_stimer_mode(void);
const char *hv_stimer_mode_name(void);
void hv_stimer_arm(uint64_t due);  /* this CPU, any IRQL: fire once at reference time due */
void hv_stimer_stop(void);         /* this CPU */
uint64_t hv_stimer_messages(uint32_t cpu); /* timer messages taken on a CPU (message mode) */

/* Makes synthetic timer 0 the kernel's clock event (kernel/timer.h) on every CPU: direct mode on
 * VECTOR_TIMER where offered and allowed. At PASSIVE, after hv_init(). hv_init() already does this
 * on real Hyper-V (binding.h stimer_clock); a second call finds the clock installed and returns
 * STATUS_OK, keeping the mode chosen first. */
status_t hv_clock_install(bool allow_direct) WARN_UNUSED;

#endif
