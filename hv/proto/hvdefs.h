/*
 * hvdefs: the Hyper-V architectural interface as numbers and wire structs (x64): CPUID leaves and
 * bits, synthetic MSRs, hypercall codes and statuses, the SynIC message and event-flag pages, the
 * reference TSC page and the hypercall inputs this project uses.
 *
 * Portable: no kernel dependencies, shared by the guest (hv/), hvsim (sim/) and the hosted tests.
 * Sources (see ../shared/hyperv-facts.md §3.1-3.6): the Hyper-V TLFS in
 * MicrosoftDocs/Virtualization-Documentation:virtualization/hyper-v-on-windows/tlfs/ (named T:file),
 * microsoft/openvmm:vm/hv1/hvdef/src/lib.rs (openvmm:hvdef).
 */
#ifndef HV_HVDEFS_H
#define HV_HVDEFS_H

#include <stddef.h>
#include <stdint.h>

/* ---- CPUID (T:feature-discovery.md) ---- */
#define HV_CPUID_VENDOR            0x40000000u /* eax = max leaf, ebx:ecx:edx = "Microsoft Hv" */
#define HV_CPUID_INTERFACE         0x40000001u /* eax = HV_INTERFACE_HV1 */
#define HV_CPUID_VERSION           0x40000002u /* eax build, ebx major<<16|minor, ecx SP, edx branch<<24|number */
#define HV_CPUID_FEATURES          0x40000003u /* eax/ebx privilege mask, edx features */
#define HV_CPUID_RECOMMENDATIONS   0x40000004u
#define HV_CPUID_LIMITS            0x40000005u /* eax max VPs, ebx max LPs */
#define HV_INTERFACE_HV1           0x31237648u /* "Hv#1" */

/* Partition privilege mask, low half (eax of 0x40000003) (T:datatypes/hv_partition_privilege_mask.md). */
#define HV_PRIV_ACCESS_VP_RUNTIME        (1u << 0)
#define HV_PRIV_ACCESS_PARTITION_REFCOUNT (1u << 1)
#define HV_PRIV_ACCESS_SYNIC_REGS        (1u << 2)
#define HV_PRIV_ACCESS_SYNTHETIC_TIMERS  (1u << 3)
#define HV_PRIV_ACCESS_INTR_CTRL_REGS    (1u << 4)
#define HV_PRIV_ACCESS_HYPERCALL_MSRS    (1u << 5)
#define HV_PRIV_ACCESS_VP_INDEX          (1u << 6)
#define HV_PRIV_ACCESS_RESET             (1u << 7)
#define HV_PRIV_ACCESS_STATS             (1u << 8)
#define HV_PRIV_ACCESS_REFERENCE_TSC     (1u << 9)
#define HV_PRIV_ACCESS_GUEST_IDLE        (1u << 10)
#define HV_PRIV_ACCESS_FREQUENCY_MSRS    (1u << 11)
/* High half (ebx of 0x40000003). */
#define HV_PRIV_POST_MESSAGES            (1u << 4)
#define HV_PRIV_SIGNAL_EVENTS            (1u << 5)
/* Features (edx of 0x40000003). */
#define HV_FEATURE_XMM_HYPERCALL_INPUT   (1u << 4)
#define HV_FEATURE_GUEST_IDLE            (1u << 5)
#define HV_FEATURE_FREQUENCY_MSRS        (1u << 8)
#define HV_FEATURE_XMM_HYPERCALL_OUTPUT  (1u << 15)
#define HV_FEATURE_SINT_POLLING          (1u << 17)
#define HV_FEATURE_DIRECT_STIMER         (1u << 19)
/* Recommendations (eax of 0x40000004). */
#define HV_RECOMMEND_DEPRECATING_AEOI    (1u << 9)

/* ---- synthetic MSRs (T:hypercall-interface.md, T:inter-partition-communication.md, T:timers.md) ---- */
#define HV_MSR_GUEST_OS_ID      0x40000000u
#define HV_MSR_HYPERCALL        0x40000001u
#define HV_MSR_VP_INDEX         0x40000002u
#define HV_MSR_TIME_REF_COUNT   0x40000020u
#define HV_MSR_REFERENCE_TSC    0x40000021u
#define HV_MSR_TSC_FREQUENCY    0x40000022u
#define HV_MSR_APIC_FREQUENCY   0x40000023u
#define HV_MSR_EOI              0x40000070u
#define HV_MSR_SCONTROL         0x40000080u
#define HV_MSR_SVERSION         0x40000081u
#define HV_MSR_SIEFP            0x40000082u
#define HV_MSR_SIMP             0x40000083u
#define HV_MSR_EOM              0x40000084u
#define HV_MSR_SINT0            0x40000090u /* SINTn = SINT0 + n, n < 16 */
#define HV_MSR_STIMER0_CONFIG   0x400000B0u /* STIMERn_CONFIG = + 2n, n < 4 */
#define HV_MSR_STIMER0_COUNT    0x400000B1u /* STIMERn_COUNT = + 2n */

#define HV_HYPERCALL_ENABLE     (1ull << 0)
#define HV_HYPERCALL_LOCKED     (1ull << 1)
#define HV_PAGE_ENABLE          (1ull << 0) /* SIMP, SIEFP, REFERENCE_TSC */
#define HV_PAGE_GPA_MASK        (~0xfffull)
#define HV_SCONTROL_ENABLE      (1ull << 0)

#define HV_SINT_COUNT           16
#define HV_SINT_VECTOR_MASK     0xffull
#define HV_SINT_MASKED          (1ull << 16)
#define HV_SINT_AUTO_EOI        (1ull << 17)
#define HV_SINT_POLLING         (1ull << 18)
#define HV_SINT_MIN_VECTOR      16 /* 0-15 #GP */

#define HV_STIMER_COUNT         4
#define HV_STIMER_ENABLE        (1ull << 0)
#define HV_STIMER_PERIODIC      (1ull << 1)
#define HV_STIMER_LAZY          (1ull << 2)
#define HV_STIMER_AUTO_ENABLE   (1ull << 3)
#define HV_STIMER_VECTOR_SHIFT  4            /* bits 11:4, direct mode */
#define HV_STIMER_DIRECT        (1ull << 12)
#define HV_STIMER_SINT_SHIFT    16           /* bits 19:16, message mode */

#define HV_REF_TIME_HZ          10000000ull  /* 100 ns units */

/* ---- hypercalls (T:hypercall-interface.md, T:hypercalls/) ---- */
#define HV_CALL_POST_MESSAGE    0x005Cu
#define HV_CALL_SIGNAL_EVENT    0x005Du
#define HV_HYPERCALL_FAST       (1ull << 16)
#define HV_HYPERCALL_CODE(ctl)  ((uint16_t)((ctl) & 0xffff))
#define HV_HYPERCALL_STATUS(rv) ((uint16_t)((rv) & 0xffff))

/* Statuses (T:hypercalls/HvCallPostMessage.md; haiku hyperv_spec_private.h). */
enum hv_status {
    HV_STATUS_SUCCESS = 0x0000,
    HV_STATUS_INVALID_HYPERCALL_CODE = 0x0002,
    HV_STATUS_INVALID_HYPERCALL_INPUT = 0x0003,
    HV_STATUS_INVALID_ALIGNMENT = 0x0004,
    HV_STATUS_INVALID_PARAMETER = 0x0005,
    HV_STATUS_ACCESS_DENIED = 0x0006,
    HV_STATUS_INSUFFICIENT_MEMORY = 0x000B,
    HV_STATUS_INVALID_PORT_ID = 0x0011,
    HV_STATUS_INVALID_CONNECTION_ID = 0x0012,
    HV_STATUS_INSUFFICIENT_BUFFERS = 0x0013,
    HV_STATUS_INVALID_SYNIC_STATE = 0x0018,
};

/* ---- SynIC message page: 16 slots of 256 bytes (T:datatypes/hv_message.md) ---- */
#define HV_MESSAGE_SIZE          256
#define HV_MESSAGE_PAYLOAD_MAX   240
#define HV_MESSAGE_NONE          0x00000000u
#define HV_MESSAGE_VMBUS         0x00000001u
#define HV_MESSAGE_TIMER_EXPIRED 0x80000010u
#define HV_MESSAGE_FLAG_PENDING  0x01u

struct hv_message_header {
    uint32_t message_type;
    uint8_t payload_size;
    uint8_t message_flags;
    uint16_t reserved;
    uint64_t origination_id; /* the sender's port or partition */
} __attribute__((packed));

struct hv_message {
    struct hv_message_header header;
    uint8_t payload[HV_MESSAGE_PAYLOAD_MAX];
} __attribute__((packed, aligned(8)));

_Static_assert(sizeof(struct hv_message_header) == 16, "HV_MESSAGE_HEADER is 16 bytes");
_Static_assert(offsetof(struct hv_message_header, payload_size) == 4, "PayloadSize @4");
_Static_assert(offsetof(struct hv_message_header, message_flags) == 5, "MessageFlags @5");
_Static_assert(offsetof(struct hv_message_header, origination_id) == 8, "OriginationId @8");
_Static_assert(sizeof(struct hv_message) == HV_MESSAGE_SIZE, "HV_MESSAGE is 256 bytes");

struct hv_message_page {
    struct hv_message slot[HV_SINT_COUNT];
};
_Static_assert(sizeof(struct hv_message_page) == 4096, "SIM page");

/* Timer-expired message payload (openvmm:hvdef TimerMessagePayload; T:timers.md). */
struct hv_timer_message_payload {
    uint32_t timer_index;
    uint32_t reserved;
    uint64_t expiration_time; /* reference time the timer was due */
    uint64_t delivery_time;   /* reference time the message was written */
} __attribute__((packed));
_Static_assert(sizeof(struct hv_timer_message_payload) == 24, "timer message payload");
_Static_assert(offsetof(struct hv_timer_message_payload, expiration_time) == 8, "ExpirationTime @8");

/* ---- SynIC event flags page: 16 blocks of 2048 bits (T:inter-partition-communication.md) ---- */
#define HV_EVENT_FLAGS_PER_SINT 2048
struct hv_event_flags {
    uint64_t bits[HV_EVENT_FLAGS_PER_SINT / 64];
};
struct hv_event_flags_page {
    struct hv_event_flags sint[HV_SINT_COUNT];
};
_Static_assert(sizeof(struct hv_event_flags) == 256, "one SINT's event flags");
_Static_assert(sizeof(struct hv_event_flags_page) == 4096, "SIEF page");

/* ---- reference TSC page (T:timers.md): time = ((tsc * scale) >> 64) + offset, 100 ns units ---- */
struct hv_reference_tsc_page {
    volatile uint32_t tsc_sequence; /* 0: not valid, use TIME_REF_COUNT */
    uint32_t reserved1;
    volatile uint64_t tsc_scale;
    volatile int64_t tsc_offset;
    uint8_t reserved2[4072];
}; /* natural alignment is the layout: not packed, so the sequence can be read atomically */
_Static_assert(offsetof(struct hv_reference_tsc_page, tsc_scale) == 8, "TscScale @8");
_Static_assert(offsetof(struct hv_reference_tsc_page, tsc_offset) == 16, "TscOffset @16");
_Static_assert(sizeof(struct hv_reference_tsc_page) == 4096, "reference TSC page");

/* ---- hypercall inputs ---- */
/* HvCallPostMessage (T:hypercalls/HvCallPostMessage.md). */
struct hv_input_post_message {
    uint32_t connection_id;
    uint32_t reserved;
    uint32_t message_type; /* non-zero, MSB clear */
    uint32_t payload_size; /* <= 240 */
    uint8_t payload[HV_MESSAGE_PAYLOAD_MAX];
} __attribute__((packed));
_Static_assert(sizeof(struct hv_input_post_message) == 256, "HvCallPostMessage input");
_Static_assert(offsetof(struct hv_input_post_message, message_type) == 8, "MessageType @8");
_Static_assert(offsetof(struct hv_input_post_message, payload) == 16, "Message @16");

/* HvCallSignalEvent (T:hypercalls/HvCallSignalEvent.md); the fast form passes these 8 bytes in RDX. */
struct hv_input_signal_event {
    uint32_t connection_id;
    uint16_t flag_number;
    uint16_t reserved;
} __attribute__((packed));
_Static_assert(sizeof(struct hv_input_signal_event) == 8, "HvCallSignalEvent input");
_Static_assert(offsetof(struct hv_input_signal_event, flag_number) == 4, "FlagNumber @4");

/* Guest OS ID, open-source format (T:hypercall-interface.md): bit 63 set, 62:56 OS type, 55:48 OS
 * id, 47:16 version, 15:0 build. */
#define HV_GUEST_OS_ID_OPEN_SOURCE (1ull << 63)

#endif
