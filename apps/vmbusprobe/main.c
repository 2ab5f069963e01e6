/*
 * vmbusprobe: VMBus end to end on whatever host is there (Hyper-V, or hvsim under QEMU): connects,
 * prints the device listing, then opens and closes a channel on every offer, opens the sub-channels
 * of hvsim's test device, signals both ways on an open channel, moves its interrupts to another CPU,
 * measures open and close, and leaves with UNLOAD at power-off.
 *
 * Command line: vmbus=X.Y (the newest version to ask for, default the newest known), cycles=N
 * (open/close cycles measured per channel, default 20), selftest=0 (listing only).
 * Exit status: 0 all checks passed, 1 some failed, 3 no Hyper-V and no hvsim, 4 no VMBus.
 */
#include "arch-x86_64/tsc.h"
#include "hv/hv.h"
#include "hv/vmbus.h"
#include "kernel/app.h"
#include "kernel/cmdline.h"
#include "kernel/log.h"
#include "kernel/percpu.h"
#include "kernel/selfcheck.h"
#include "kernel/string.h"
#include "kernel/sync.h"
#include "kernel/thread.h"

const char *const app_name = "vmbusprobe";
const char *const app_cmdline_keys[] = { "vmbus", "cycles", "selftest", NULL };

#define MAX_CHANNELS 64

struct probe_channel {
    struct vmbus_channel *ch;
    volatile uint32_t interrupts;
    volatile int32_t last_cpu;
    struct event got;
};
static struct probe_channel chans[MAX_CHANNELS];
static uint32_t nchans;

static void collect(struct vmbus_channel *ch, void *ctx)
{
    (void)ctx;
    if (nchans < MAX_CHANNELS && !vmbus_channel_rescinded(ch))
        chans[nchans++].ch = ch;
}

static void on_interrupt(struct vmbus_channel *ch, void *ctx)
{
    (void)ch;
    struct probe_channel *p = ctx;
    p->last_cpu = (int32_t)this_cpu()->id;
    __atomic_add_fetch(&p->interrupts, 1, __ATOMIC_RELEASE);
    event_set(&p->got);
}

static uint32_t online_cpus(void)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < MAX_CPUS; i++)
        n += cpus[i] && cpus[i]->online;
    return n;
}

static status_t open_one(struct probe_channel *p, uint32_t cpu)
{
    struct vmbus_open_params o = { .out_ring_bytes = 4 * 4096, .in_ring_bytes = 4 * 4096, .target_cpu = cpu,
                                   .on_interrupt = on_interrupt, .ctx = p };
    return vmbus_channel_open(p->ch, &o);
}

/* Open and close every offer once; then `cycles` more on each, timed. */
static void check_open_close_all(uint32_t cycles)
{
    uint64_t open_ns = 0, close_ns = 0, n = 0;
    for (uint32_t i = 0; i < nchans; i++) {
        struct probe_channel *p = &chans[i];
        event_init(&p->got, EVENT_SYNCHRONIZATION, false);
        uint32_t cpu = i % online_cpus();
        status_t s = open_one(p, cpu);
        status_t c = s == STATUS_OK ? vmbus_channel_close(p->ch) : s;
        CHECK(s == STATUS_OK && c == STATUS_OK, "relid %u (%s, sub-channel %u): opened on cpu%u and closed: %s / %s",
              vmbus_channel_relid(p->ch), vmbus_channel_type_name(p->ch), vmbus_channel_sub_index(p->ch), cpu,
              status_name(s), status_name(c));
        for (uint32_t k = 0; k < cycles && s == STATUS_OK && c == STATUS_OK; k++) {
            uint64_t t0 = rdtsc();
            s = open_one(p, cpu);
            uint64_t t1 = rdtsc();
            c = s == STATUS_OK ? vmbus_channel_close(p->ch) : s;
            uint64_t t2 = rdtsc();
            open_ns += tsc_to_ns(t1 - t0);
            close_ns += tsc_to_ns(t2 - t1);
            n++;
        }
        if (cycles)
            CHECK(s == STATUS_OK && c == STATUS_OK, "relid %u: %u more open/close cycles", vmbus_channel_relid(p->ch),
                  cycles);
    }
    if (n)
        kprintf("  measured: open %llu us, close %llu us (mean of %llu cycles, GPADL + OPENCHANNEL / CLOSECHANNEL "
                "+ GPADL_TEARDOWN)\n",
                (unsigned long long)(open_ns / n / 1000), (unsigned long long)(close_ns / n / 1000),
                (unsigned long long)n);
}

static struct probe_channel *find(struct vmbus_guid type)
{
    for (uint32_t i = 0; i < nchans; i++)
        if (vmbus_guid_equal(&vmbus_channel_offer(chans[i].ch)->if_type, &type) && !vmbus_channel_sub_index(chans[i].ch))
            return &chans[i];
    return NULL;
}

/* Signals the channel and waits (2 s) for the interrupt the test device sends back. */
static status_t signal_and_wait(struct probe_channel *p, bool low_latency)
{
    uint32_t before = __atomic_load_n(&p->interrupts, __ATOMIC_ACQUIRE);
    event_reset(&p->got);
    vmbus_channel_set_low_latency(p->ch, low_latency);
    vmbus_channel_signal(p->ch);
    for (int i = 0; i < 20; i++) {
        if (__atomic_load_n(&p->interrupts, __ATOMIC_ACQUIRE) > before)
            return STATUS_OK;
        status_t s = event_wait(&p->got, 100000000ull);
        (void)s; /* re-checked above: the count says whether it came */
    }
    return STATUS_TIMEOUT;
}

/* hvsim's test device: sub-channels, signals both ways, MODIFYCHANNEL. */
static void check_test_device(void)
{
    struct probe_channel *p = find((struct vmbus_guid)VMBUS_GUID_HVSIM_TEST);
    if (!p) {
        kprintf("  (no hvsim test device: sub-channel and signalling checks skipped)\n");
        return;
    }
    status_t s = open_one(p, 0);
    CHECK(s == STATUS_OK, "test device relid %u open: %s", vmbus_channel_relid(p->ch), status_name(s));
    if (s != STATUS_OK)
        return;
    struct vmbus_channel *subs[2];
    s = vmbus_channel_wait_sub_channels(p->ch, 2, subs);
    CHECK(s == STATUS_OK, "test device offered its 2 sub-channels: %s", status_name(s));
    if (s == STATUS_OK) {
        for (int i = 0; i < 2; i++) {
            struct probe_channel sp = { .ch = subs[i] };
            event_init(&sp.got, EVENT_SYNCHRONIZATION, false);
            status_t o = open_one(&sp, (uint32_t)(i + 1) % online_cpus());
            status_t c = o == STATUS_OK ? vmbus_channel_close(subs[i]) : o;
            CHECK(o == STATUS_OK && c == STATUS_OK, "sub-channel %u (relid %u) opened and closed: %s / %s",
                  vmbus_channel_sub_index(subs[i]), vmbus_channel_relid(subs[i]), status_name(o), status_name(c));
        }
    }
    /* Guest -> host: the test device answers every signal by signalling back. */
    status_t e = signal_and_wait(p, true);
    CHECK(e == STATUS_OK && p->last_cpu == 0, "signal by HvSignalEvent answered by an interrupt on cpu%d (%s)",
          p->last_cpu, status_name(e));
    e = signal_and_wait(p, false);
    CHECK(e == STATUS_OK, "signal through the monitor page answered (%s)", status_name(e));
    if (online_cpus() > 1 && vmbus_version() >= VMBUS_VERSION_WIN10_RS3) {
        s = vmbus_channel_set_target_cpu(p->ch, 1);
        CHECK(s == STATUS_OK, "MODIFYCHANNEL moved relid %u to cpu1: %s", vmbus_channel_relid(p->ch), status_name(s));
        e = signal_and_wait(p, true);
        CHECK(e == STATUS_OK && p->last_cpu == 1, "its interrupts now arrive on cpu%d (%s)", p->last_cpu,
              status_name(e));
    }
    s = vmbus_channel_close(p->ch);
    CHECK(s == STATUS_OK, "test device closed: %s", status_name(s));
}

static uint32_t parse_version(const char *v)
{
    static const struct { const char *text; uint32_t v; } known[] = {
        { "6.0", VMBUS_VERSION_COPPER }, { "5.3", VMBUS_VERSION_WIN10_V5_3 }, { "5.2", VMBUS_VERSION_WIN10_V5_2 },
        { "5.1", VMBUS_VERSION_WIN10_V5_1 }, { "5.0", VMBUS_VERSION_WIN10_V5 }, { "4.1", VMBUS_VERSION_WIN10_RS3 },
        { "4.0", VMBUS_VERSION_WIN10 }, { "3.0", VMBUS_VERSION_WIN8_1 },
    };
    for (unsigned i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(v, known[i].text) == 0)
            return known[i].v;
    return 0;
}

int app_main(void)
{
    const struct cmdline *cl = kernel_cmdline();
    status_t s = hv_init();
    if (s != STATUS_OK) {
        kprintf("vmbusprobe: needs Hyper-V or hvsim (%s): run it with `make run APP=vmbusprobe`\n", status_name(s));
        return 3;
    }
    const char *want = cmdline_str(cl, "vmbus", "");
    uint32_t max = want[0] ? parse_version(want) : 0;
    if (want[0] && !max) {
        kprintf("vmbusprobe: vmbus=%s: expected one of 6.0 5.3 5.2 5.1 5.0 4.1 4.0 3.0\n", want);
        return 4;
    }
    kprintf("\n== VMBus ==\n");
    s = vmbus_init(max);
    if (s != STATUS_OK) {
        kprintf("vmbusprobe: VMBus did not come up: %s\n", status_name(s));
        return 4;
    }
    vmbus_for_each_channel(collect, NULL);
    kprintf("vmbusprobe: VMBus %u.%u, %u offers\n", VMBUS_VERSION_MAJOR(vmbus_version()),
            VMBUS_VERSION_MINOR(vmbus_version()), nchans);
    if (!cmdline_bool(cl, "selftest", true))
        return 0;
    kprintf("\n== self-checks ==\n");
    CHECK(nchans > 0, "the host offered %u channels", nchans);
    check_open_close_all((uint32_t)cmdline_u64(cl, "cycles", 20, 0, 100000));
    check_test_device();
    struct vmbus_stats st;
    vmbus_get_stats(&st);
    CHECK(st.gpadls_live == 0 && st.leaked_gpadls == 0, "no GPADL left (%u live, %u leaked)", st.gpadls_live,
          st.leaked_gpadls);
    kprintf("  vmbus: %llu messages, %llu dropped (bad), %llu dropped (unasked), %llu opens, %llu closes, %llu "
            "interrupts, %llu timeouts\n",
            (unsigned long long)st.messages, (unsigned long long)st.dropped_bad, (unsigned long long)st.dropped_unasked,
            (unsigned long long)st.opens, (unsigned long long)st.closes, (unsigned long long)st.interrupts,
            (unsigned long long)st.timeouts);
    kprintf("\nvmbusprobe: %u checks passed, %u failed\n", selfcheck_passed, selfcheck_failed);
    return selfcheck_failed ? 1 : 0;
}
