/*
 * stimer: synthetic timer 0 of every CPU (T:timers.md), one-shot at absolute reference times, in
 * direct mode (its own interrupt vector) or message mode (a timer message on HV_STIMER_SINT).
 */
#include "hv/hv_internal.h"
#include "hv/message.h"
#include "kernel/log.h"

static enum hv_stimer_mode mode;
static void (*expired_fn)(void);
static uint64_t config_value;
static uint64_t messages_taken[MAX_CPUS];

enum hv_stimer_mode hv_stimer_mode(void)
{
    return mode;
}

const char *hv_stimer_mode_name(void)
{
    return mode == HV_STIMER_MODE_DIRECT ? "direct" : mode == HV_STIMER_MODE_MESSAGE ? "message" : "off";
}

uint64_t hv_stimer_messages(uint32_t cpu)
{
    return cpu < MAX_CPUS ? messages_taken[cpu] : 0;
}

static status_t timer_message(void *ctx, uint32_t cpu, const struct hv_message *msg)
{
    (void)ctx;
    if (msg->header.message_type != HV_MESSAGE_TIMER_EXPIRED)
        return STATUS_NOT_SUPPORTED;
    struct hv_timer_message_payload p;
    if (!hv_timer_message_parse(msg, &p)) {
        pr_warn("hv: cpu%u timer message with %u payload bytes (want %zu): ignored", cpu, msg->header.payload_size,
                sizeof p);
        return STATUS_OK;
    }
    if (p.timer_index != 0) {
        pr_warn("hv: cpu%u timer message for timer %u, which is not armed: ignored", cpu, p.timer_index);
        return STATUS_OK;
    }
    messages_taken[cpu]++;
    expired_fn();
    return STATUS_OK;
}

static void configure_cpu(void *arg)
{
    (void)arg;
    hv_bind->wrmsr(HV_MSR_STIMER0_CONFIG, config_value);
}

status_t hv_stimer_start(void (*expired)(void), bool allow_direct, uint8_t direct_vector)
{
    IRQL_ASSERT_MAX(IRQL_PASSIVE);
    const struct hv_features *f = hv_get_features();
    if (!f)
        return STATUS_INVALID_STATE;
    if (!(f->privileges_low & HV_PRIV_ACCESS_SYNTHETIC_TIMERS)) {
        pr_warn("hv: no AccessSyntheticTimerRegs privilege: no synthetic timer");
        return STATUS_NOT_SUPPORTED;
    }
    if (mode != HV_STIMER_OFF)
        return STATUS_INVALID_STATE;
    expired_fn = expired;
    if (allow_direct && (f->features & HV_FEATURE_DIRECT_STIMER) && direct_vector >= HV_SINT_MIN_VECTOR) {
        mode = HV_STIMER_MODE_DIRECT;
        config_value = HV_STIMER_DIRECT | ((uint64_t)direct_vector << HV_STIMER_VECTOR_SHIFT) | HV_STIMER_AUTO_ENABLE;
    } else {
        struct hv_sint_handler h = { .name = "stimer", .irql = hv_sint_device_irql(), .message = timer_message };
        status_t s = hv_sint_register(HV_STIMER_SINT, &h);
        if (s != STATUS_OK)
            return s;
        mode = HV_STIMER_MODE_MESSAGE;
        config_value = ((uint64_t)HV_STIMER_SINT << HV_STIMER_SINT_SHIFT) | HV_STIMER_AUTO_ENABLE;
    }
    status_t st[MAX_CPUS];
    status_t s = hv_on_each_cpu(configure_cpu, st);
    pr_info("hv: synthetic timer 0 in %s mode on every CPU (%s)", hv_stimer_mode_name(),
            mode == HV_STIMER_MODE_DIRECT ? "host offers direct mode" :
            (f->features & HV_FEATURE_DIRECT_STIMER) ? "direct mode not chosen" : "host offers no direct mode");
    return s;
}

void hv_stimer_arm(uint64_t due)
{
    /* With auto-enable, writing the count (an absolute reference time) enables the timer. */
    hv_bind->wrmsr(HV_MSR_STIMER0_COUNT, due ? due : 1);
}

void hv_stimer_stop(void)
{
    hv_bind->wrmsr(HV_MSR_STIMER0_COUNT, 0);
}

void hv_stimer_cpu_stop(void)
{
    if (mode == HV_STIMER_OFF)
        return;
    hv_bind->wrmsr(HV_MSR_STIMER0_CONFIG, 0);
}

void hv_stimer_forget(void)
{
    mode = HV_STIMER_OFF;
    for (uint32_t i = 0; i < MAX_CPUS; i++)
        messages_taken[i] = 0;
}
