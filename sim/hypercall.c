/*
 * hvsim hypercalls: HvCallPostMessage (0x5C) and HvCallSignalEvent (0x5D) with the statuses the TLFS
 * gives (T:hypercall-interface.md, T:hypercalls/HvCallPostMessage.md, HvCallSignalEvent.md), the
 * injected transient failures, and the built-in test ports of sim/hvsim.h (echo, event echo,
 * control).
 *
 * Order of the checks (the TLFS leaves it open but prefers ACCESS_DENIED first):
 *  1. the hypercall page is not enabled: INVALID_HYPERCALL_CODE (real hardware raises #UD, since
 *     there is no page to call; hvsim can only answer with a status);
 *  2. an unknown call code: INVALID_HYPERCALL_CODE;
 *  3. the PostMessages / SignalEvents privilege is denied: ACCESS_DENIED;
 *  4. reserved control bits, a variable header size, a rep count or rep start index on these simple
 *     calls, or the fast form of HvCallPostMessage (its 256-byte input does not fit the registers
 *     and hvsim offers no XMM input): INVALID_HYPERCALL_INPUT;
 *  5. an input GPA not 8-byte aligned, crossing a page or outside guest RAM: INVALID_ALIGNMENT
 *     (the TLFS lists "not within the bounds of the GPA space" under that status);
 *  6. the call's own parameters (INVALID_PARAMETER), the connection (INVALID_CONNECTION_ID, or
 *     INVALID_PORT_ID for a port of the other kind), then the port's answer.
 * The output GPA is ignored: neither call has output.
 */
#include <string.h>

#include "sim/hvsim_internal.h"

/* Hypercall input value fields (T:hypercall-interface.md). */
#define HC_VARIABLE_HEADER_MASK (0x3ffull << 17)
#define HC_REP_COUNT_MASK (0xfffull << 32)
#define HC_REP_START_MASK (0xfffull << 48)
#define HC_RESERVED_MASK ((0x1full << 27) | (0xfull << 44) | (0xfull << 60))

/* Checks 3 and 4, which both calls make: the partition holds the call's privilege (a bit of CPUID
 * 0x40000003 ebx), and the control value has none of the fields a simple call must leave 0. */
static uint16_t check_call(const struct hvsim *sim, uint32_t privilege, uint64_t control)
{
    if (!(sim->privileges_high & privilege))
        return HV_STATUS_ACCESS_DENIED;
    if (control & (HC_RESERVED_MASK | HC_VARIABLE_HEADER_MASK | HC_REP_COUNT_MASK | HC_REP_START_MASK))
        return HV_STATUS_INVALID_HYPERCALL_INPUT;
    return HV_STATUS_SUCCESS;
}

/* The input block at gpa, len bytes: aligned, within one page, in RAM; NULL otherwise. */
static const void *input_block(struct hvsim *sim, uint64_t gpa, uint64_t len)
{
    if (gpa % 8 || (gpa % HVSIM_PAGE_SIZE) + len > HVSIM_PAGE_SIZE)
        return NULL;
    return hvsim_gpa(sim, gpa, len);
}

static uint16_t post_message(struct hvsim *sim, uint32_t vp, uint64_t control, uint64_t input_gpa)
{
    uint16_t status = check_call(sim, HV_PRIV_POST_MESSAGES, control);
    if (status)
        return status;
    if (control & HV_HYPERCALL_FAST)
        return HV_STATUS_INVALID_HYPERCALL_INPUT;
    const void *guest = input_block(sim, input_gpa, sizeof(struct hv_input_post_message));
    if (!guest)
        return HV_STATUS_INVALID_ALIGNMENT;
    /* One copy: the guest may change its page while the port looks at the message. */
    struct hv_input_post_message in;
    memcpy(&in, guest, sizeof in);
    if (in.payload_size > HV_MESSAGE_PAYLOAD_MAX || in.message_type == HV_MESSAGE_NONE ||
        (in.message_type & 0x80000000u))
        return HV_STATUS_INVALID_PARAMETER;
    const struct hvsim_port *port = hvsim_find_port(sim, in.connection_id);
    if (!port)
        return HV_STATUS_INVALID_CONNECTION_ID;
    if (!port->message_fn)
        return HV_STATUS_INVALID_PORT_ID;
    if (sim->fail_posts) {
        sim->fail_posts--;
        return sim->fail_status;
    }
    return port->message_fn(sim, port->ctx, vp, in.connection_id, in.message_type, in.payload, in.payload_size);
}

static uint16_t signal_event(struct hvsim *sim, uint32_t vp, uint64_t control, uint64_t input)
{
    uint16_t status = check_call(sim, HV_PRIV_SIGNAL_EVENTS, control);
    if (status)
        return status;
    struct hv_input_signal_event in;
    if (control & HV_HYPERCALL_FAST) {
        memcpy(&in, &input, sizeof in); /* RDX holds the 8-byte input, little-endian */
    } else {
        const void *guest = input_block(sim, input, sizeof in);
        if (!guest)
            return HV_STATUS_INVALID_ALIGNMENT;
        memcpy(&in, guest, sizeof in);
    }
    const struct hvsim_port *port = hvsim_find_port(sim, in.connection_id);
    if (!port)
        return HV_STATUS_INVALID_CONNECTION_ID;
    if (!port->event_fn)
        return HV_STATUS_INVALID_PORT_ID;
    if (in.flag_number >= HV_EVENT_FLAGS_PER_SINT) /* every hvsim port has the full 2048 flags */
        return HV_STATUS_INVALID_PARAMETER;
    return port->event_fn(sim, port->ctx, vp, in.connection_id, in.flag_number);
}

static uint16_t hypercall_locked(struct hvsim *sim, uint32_t vp, uint64_t control, uint64_t input)
{
    if (vp >= sim->cfg.vp_count)
        return HV_STATUS_INVALID_PARAMETER;
    if (!(sim->hypercall_msr & HV_HYPERCALL_ENABLE))
        return HV_STATUS_INVALID_HYPERCALL_CODE;
    switch (HV_HYPERCALL_CODE(control)) {
    case HV_CALL_POST_MESSAGE: {
        uint16_t status = post_message(sim, vp, control, input);
        if (status == HV_STATUS_SUCCESS)
            sim->stats.posts_ok++;
        else
            sim->stats.posts_failed++;
        return status;
    }
    case HV_CALL_SIGNAL_EVENT: {
        uint16_t status = signal_event(sim, vp, control, input);
        if (status == HV_STATUS_SUCCESS)
            sim->stats.signals++;
        return status;
    }
    default:
        return HV_STATUS_INVALID_HYPERCALL_CODE;
    }
}

uint64_t hvsim_hypercall(struct hvsim *sim, uint32_t vp, uint64_t control, uint64_t input, uint64_t output)
{
    (void)output; /* neither call has output */
    pthread_mutex_lock(&sim->lock);
    sim->stats.hypercalls++;
    uint16_t status = hypercall_locked(sim, vp, control, input);
    /* A rejected hypercall is the guest's to report (it gets the status; hvprobe measures with
     * deliberately rejected ones): a line only with --verbose. A call without a hypercall page or
     * with an unknown code is a guest bug: always a line. */
    int verbosity = status == HV_STATUS_INVALID_HYPERCALL_CODE ? 0 : 1;
    hvsim_log(sim, verbosity, "vp%u: hypercall 0x%llx input 0x%llx: status 0x%x%s", vp, (unsigned long long)control,
              (unsigned long long)input, status,
              (sim->hypercall_msr & HV_HYPERCALL_ENABLE) ? ""
                                                          : " (no hypercall page enabled; real Hyper-V: #UD)");
    pthread_mutex_unlock(&sim->lock);
    return status; /* bits 15:0; reps completed 0 (simple calls) */
}

void hvsim_fail_next_posts(struct hvsim *sim, uint32_t count, uint16_t status)
{
    pthread_mutex_lock(&sim->lock);
    sim->fail_posts = status == HV_STATUS_SUCCESS ? 0 : count;
    sim->fail_status = status;
    pthread_mutex_unlock(&sim->lock);
}

/* ---- built-in ports (sim/hvsim.h) ---- */

/* The target VP can take a message: its SynIC and SIM page are on (HvCallPostMessage statuses). */
static bool target_accepts_messages(const struct hvsim *sim, uint32_t vp)
{
    const struct hvsim_vp *v = &sim->vp[vp];
    return (v->scontrol & HV_SCONTROL_ENABLE) && (v->simp & HV_PAGE_ENABLE);
}

static uint16_t echo_message(struct hvsim *sim, void *ctx, uint32_t vp, uint32_t connection_id, uint32_t type,
                             const void *payload, uint32_t size)
{
    (void)ctx;
    (void)vp;
    (void)connection_id;
    const uint8_t *p = payload;
    if (size < 2 || p[0] >= sim->cfg.vp_count || p[1] >= HV_SINT_COUNT)
        return HV_STATUS_INVALID_PARAMETER;
    if (!target_accepts_messages(sim, p[0]))
        return HV_STATUS_INVALID_SYNIC_STATE;
    return synic_post(sim, p[0], p[1], type, payload, size, false, 0) ? HV_STATUS_SUCCESS
                                                                       : HV_STATUS_INSUFFICIENT_BUFFERS;
}

/* HVSIM_CONN_EVENT_ECHO + s: the flag in the caller's own SIEF block for SINT s. A disabled SynIC or
 * SIEF page, or a masked SINT, is INVALID_SYNIC_STATE (T:inter-partition-communication.md). */
static uint16_t echo_event(struct hvsim *sim, void *ctx, uint32_t vp, uint32_t connection_id, uint16_t flag)
{
    (void)ctx;
    uint32_t sint = connection_id - HVSIM_CONN_EVENT_ECHO;
    const struct hvsim_vp *v = &sim->vp[vp];
    if (!(v->scontrol & HV_SCONTROL_ENABLE) || !(v->siefp & HV_PAGE_ENABLE) || !synic_sint_open(v->sint[sint]))
        return HV_STATUS_INVALID_SYNIC_STATE;
    return hvsim_signal_locked(sim, vp, sint, flag) ? HV_STATUS_SUCCESS : HV_STATUS_INVALID_SYNIC_STATE;
}

static uint16_t control_message(struct hvsim *sim, void *ctx, uint32_t vp, uint32_t connection_id, uint32_t type,
                                const void *payload, uint32_t size)
{
    (void)ctx;
    (void)connection_id;
    (void)type;
    struct hvsim_control_msg c;
    if (size < sizeof c)
        return HV_STATUS_INVALID_PARAMETER;
    memcpy(&c, payload, sizeof c);
    if (c.vp >= sim->cfg.vp_count || c.sint >= HV_SINT_COUNT)
        return HV_STATUS_INVALID_PARAMETER;
    /* Bytes after the command are the payload of a message it delivers. */
    const uint8_t *extra = (const uint8_t *)payload + sizeof c;
    uint32_t extra_size = size - (uint32_t)sizeof c;
    hvsim_log(sim, 0, "vp%u: control command %u (vp %u, sint %u, arg %u)", vp, c.cmd, c.vp, c.sint, c.arg);
    switch (c.cmd) {
    case HVSIM_CTL_FAIL_POSTS:
        sim->fail_posts = c.arg;
        sim->fail_status = HV_STATUS_INSUFFICIENT_BUFFERS;
        return HV_STATUS_SUCCESS;
    case HVSIM_CTL_BAD_SIZE: {
        if (c.arg > UINT8_MAX)
            return HV_STATUS_INVALID_PARAMETER;
        uint8_t body[HV_MESSAGE_PAYLOAD_MAX] = { 0 };
        memcpy(body, extra, extra_size);
        return synic_post(sim, c.vp, c.sint, HV_MESSAGE_VMBUS, body, c.arg, true, 0) ? HV_STATUS_SUCCESS
                                                                                      : HV_STATUS_INSUFFICIENT_BUFFERS;
    }
    case HVSIM_CTL_UNKNOWN_TYPE:
        if (c.arg == HV_MESSAGE_NONE)
            return HV_STATUS_INVALID_PARAMETER;
        return synic_post(sim, c.vp, c.sint, c.arg, extra, extra_size, false, 0) ? HV_STATUS_SUCCESS
                                                                                 : HV_STATUS_INSUFFICIENT_BUFFERS;
    case HVSIM_CTL_STRAY_EVENT:
        if (c.arg >= HV_EVENT_FLAGS_PER_SINT)
            return HV_STATUS_INVALID_PARAMETER;
        return hvsim_signal_locked(sim, c.vp, c.sint, c.arg) ? HV_STATUS_SUCCESS : HV_STATUS_INVALID_SYNIC_STATE;
    case HVSIM_CTL_TSC_UNSETTLED:
        if (c.arg > 1)
            return HV_STATUS_INVALID_PARAMETER;
        clock_set_unsettled(sim, c.arg);
        return HV_STATUS_SUCCESS;
    default:
        return HV_STATUS_INVALID_PARAMETER;
    }
}

bool hypercall_register_builtin_ports(struct hvsim *sim)
{
    if (!hvsim_register_message_port(sim, HVSIM_CONN_ECHO, echo_message, NULL) ||
        !hvsim_register_message_port(sim, HVSIM_CONN_CONTROL, control_message, NULL))
        return false;
    for (uint32_t s = 0; s < HV_SINT_COUNT; s++)
        if (!hvsim_register_event_port(sim, HVSIM_CONN_EVENT_ECHO + s, echo_event, NULL))
            return false;
    return true;
}
