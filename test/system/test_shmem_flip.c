/*
 * Single fetch of host-shared memory, checked by a host that changes the bytes while the guest
 * parses them (issue 13, "Machines that find the next one"). A thread flips random bits - seeded:
 * FLIP_SEED=n replays the choices (the interleaving is the scheduler's), the seed is printed - in
 *  - the inbound ring of kmcl's test-device channel (the data area and, but under TSan, the
 *    host-owned write index), while echoes and SEND_N batches stream through it;
 *  - netvsc's receive buffer (the RNDIS headers of the sub-allocations above all), while frames are
 *    echoed; then netvsc's inbound ring (the transfer-page packets and their ranges);
 *  - the message slot of the VMBus SINT in every VP's SynIC message page, while channels are opened
 *    and closed and GPADLs created and torn down.
 * What must hold (kernel/readonce.h is the rule: what a checker checked is what its caller uses):
 *  - no sanitizer report (ASan: a read past a heap copy, a stack buffer overrun; TSan: the guest's
 *    own concurrency stays race-free on its failure paths);
 *  - nothing bad is accepted: every packet kmcl delivers lies inside the ring or its own copy, every
 *    frame netvsc delivers inside its receive-buffer sub-allocation (inside the buffer once the ring
 *    with the ranges is corrupted too), 14 .. MTU + 14 bytes (test/system/layers.h);
 *  - every wait of the guest ends (guest_run's deadlines);
 *  - the channel goes on or fails cleanly: once the flipping stops, kmcl's channel has been marked
 *    FAILED or a fresh request gets its exact answer; netvsc (whose receive buffer the host rewrites
 *    for every frame) echoes every frame again.
 * The flipping thread races the guest's reads on purpose. Its stores are relaxed atomics in a
 * function built without ThreadSanitizer's instrumentation (no_sanitize("thread")): TSan then sees
 * neither side of that deliberate race, and still every race among the guest's and hvsim's threads.
 * No suppression file is needed.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hv/proto/hvdefs.h"
#include "hv/vmbus/vmbus.h"
#include "kernel/mm.h"
#include "sim/hvsim.h"
#include "test/hosted/hosted.h"
#include "test/lib/test_util.h"
#include "test/system/layers.h"

#define FLIP_MS 1500 /* per test, while the traffic runs */
#define PAGE 4096u

/* ---- the flipping thread ---- */

struct region {
    uint8_t *base;
    uint32_t len, weight;
    uint32_t stride, hot; /* > 0: three flips in four land in the first `hot` bytes of a `stride` */
};

static struct region regions[8];
static uint32_t nregions, total_weight;
static uint32_t flipping;
static uint64_t flips, seed;
static pthread_t flip_thread;

static void add_region(void *base, uint32_t len, uint32_t weight, uint32_t stride, uint32_t hot)
{
    assert_non_null(base);
    assert_true(nregions < 8 && len > 0);
    regions[nregions++] = (struct region){ base, len, weight, stride, hot };
    total_weight += weight;
}

/* The one store to shared memory the guest may be reading right now: outside TSan's view. */
__attribute__((no_sanitize("thread"), noinline)) static void flip(uint8_t *p, uint8_t mask)
{
    __atomic_fetch_xor(p, mask, __ATOMIC_RELAXED);
}

struct flip_args {
    uint64_t seed;
    uint32_t gap_us; /* mean pause between flips; 0: a few microseconds of spinning */
};

static void *flipper(void *arg)
{
    const struct flip_args *a = arg;
    struct rng r;
    rng_seed(&r, a->seed);
    while (__atomic_load_n(&flipping, __ATOMIC_ACQUIRE)) {
        uint32_t w = (uint32_t)rng_below(&r, total_weight), i = 0;
        while (w >= regions[i].weight)
            w -= regions[i++].weight;
        const struct region *g = &regions[i];
        uint32_t off;
        if (g->stride && g->len >= g->stride && rng_below(&r, 4))
            off = (uint32_t)rng_below(&r, g->len / g->stride) * g->stride + (uint32_t)rng_below(&r, g->hot);
        else
            off = (uint32_t)rng_below(&r, g->len);
        flip(g->base + off, (uint8_t)(1u << rng_below(&r, 8)));
        __atomic_add_fetch(&flips, 1, __ATOMIC_RELAXED);
        if (a->gap_us)
            sleep_us((long)rng_below(&r, 2 * a->gap_us + 1));
        else
            for (uint64_t spin = rng_below(&r, 4000); spin; spin--)
                __builtin_ia32_pause();
    }
    return NULL;
}

static void start_flipping(uint64_t s, uint32_t gap_us)
{
    static struct flip_args args;
    args = (struct flip_args){ s, gap_us };
    __atomic_store_n(&flipping, 1, __ATOMIC_RELEASE);
    assert_int_equal(pthread_create(&flip_thread, NULL, flipper, &args), 0);
}

static void stop_flipping(void)
{
    __atomic_store_n(&flipping, 0, __ATOMIC_RELEASE);
    pthread_join(flip_thread, NULL);
    nregions = total_weight = 0;
}

/* ---- set-up ---- */

static void hung(const char *step, unsigned limit_ms)
{
    fprintf(stderr, "FLIP_SEED=%llu: %s: the guest's wait did not end in %u ms\n", (unsigned long long)seed, step,
            limit_ms);
    abort();
}

static const struct expect loose = { 0 };
static const struct expect exact = { .strict = true };

static void finish(void)
{
    if (layer_failures())
        printf("FLIP_SEED=%llu:\n%s", (unsigned long long)seed, layer_failure_text());
    assert_int_equal(layer_failures(), 0);
}

/* One way of corrupting a layer's shared memory. */
struct flip_case {
    const struct layer *layer;
    const char *what;
    void (*regions)(const struct layer *l);
    bool honest_ranges; /* the rings that carry netvsc's ranges are left alone */
    bool settles;       /* once the flipping stops, every request gets its exact answer again */
    bool goes_on;       /* else: a fresh request is answered right, or the guest has failed the channel */
    bool clean;         /* the teardown leaves nothing (VMBus messages are not corrupted) */
};

/* A fresh request after the flipping: answered right, unless the guest has failed the channel. */
static void goes_on_or_failed(const struct layer *l, uint32_t round)
{
    if (l->failed())
        return;
    struct layer_stats before, after;
    l->get_stats(&before);
    uint32_t fails = layer_failures();
    l->set_content_checks(true);
    l->round(round, &loose);
    l->get_stats(&after);
    if (after.answered == before.answered && !l->failed())
        layer_fail("%s: the channel is not failed, yet a fresh request after the flipping got no answer", l->name);
    if (layer_failures() != fails)
        layer_fail("%s: a fresh request after the flipping took wrong bytes", l->name);
}

/* Epochs until FLIP_MS have passed: a fresh machine and layer, flipping while rounds run until the
 * time is up, the guest failed the channel or a round got no answer; then the checks. Epoch k
 * flips with seed + k. */
static void run_case(const struct flip_case *fc)
{
    const struct layer *l = fc->layer;
    layer_hung = hung;
    int64_t end = now_ns() + FLIP_MS * 1000000ll;
    uint64_t total_flips = 0, refused = 0;
    uint32_t epochs = 0, failed = 0, rounds_total = 0, answers = 0;
    while (now_ns() < end) {
        struct machine_config mc = { 0 };
        assert_true(machine_start(&mc));
        l->set_content_checks(false); /* the payloads are corrupted on purpose */
        assert_true(l->up(&exact));
        layer_honest_ranges = fc->honest_ranges;
        fc->regions(l);
        flips = 0;
        start_flipping(seed + epochs, 0);
        uint32_t rounds = 0;
        struct layer_stats st;
        l->get_stats(&st);
        uint32_t answered = st.answered;
        while (now_ns() < end && !l->failed()) {
            l->round(rounds++, &loose);
            l->get_stats(&st);
            if (st.answered == answered)
                break; /* the host gave up on the channel (a corrupted id it never sent) */
            answered = st.answered;
        }
        stop_flipping();
        total_flips += flips;
        rounds_total += rounds;
        l->get_stats(&st);
        refused += st.refused;
        answers += st.answered;
        bool f = l->failed();
        failed += f;
        l->check(&loose);
        if (fc->settles) {
            l->set_content_checks(true);
            l->round(rounds, &exact);
        } else if (fc->goes_on) {
            goes_on_or_failed(l, rounds);
        }
        l->set_content_checks(true);
        l->down();
        if (fc->clean)
            layer_check_clean(&loose);
        machine_stop();
        layer_honest_ranges = true;
        epochs++;
    }
    printf("  %s: %u epochs (seeds %llu..), %u rounds, %u answers taken (each inside its ring or buffer), %llu "
           "bytes flipped, %llu bad inputs refused and counted, %u channels failed by the guest\n", fc->what, epochs,
           (unsigned long long)seed, rounds_total, answers, (unsigned long long)total_flips,
           (unsigned long long)refused, failed);
    finish();
}

/* ---- kmcl: the inbound ring ---- */

static void ring_regions(const struct layer *l)
{
    uint32_t bytes = 0;
    uint8_t *ring = layer_in_ring(l, &bytes);
    assert_non_null(ring);
    add_region(ring + PAGE, bytes - PAGE, 99, 0, 0); /* descriptors, payloads, trailers */
#ifndef __SANITIZE_THREAD__
    /* The write index (the host's). Not under ThreadSanitizer: a write index moved ahead makes the
     * guest read bytes hvsim is writing at that moment, a race the corruption itself causes (of
     * the flipper's kind, but between hvsim's and the guest's instrumented code): ASan covers it. */
    add_region(ring, 4, 1, 0, 0);
#endif
}

static void test_kmcl_ring(void **state)
{
    (void)state;
    const struct flip_case fc = { &layer_kmcl, "kmcl inbound ring", ring_regions, true, false, true, true };
    run_case(&fc);
}

/* ---- netvsc: the receive buffer, then the inbound ring ---- */

static void rx_regions(const struct layer *l)
{
    (void)l;
    uint32_t bytes = 0, sub = 0;
    uint8_t *rx = layer_rx_buffer(&bytes, &sub);
    assert_non_null(rx);
    /* The host hands out the lowest free data sub-allocation (after 16 kept for control answers)
     * and gets it back at once: the frames in flight are in the first few. Three flips in four go
     * to their RNDIS PACKET header and PPI. */
    assert_true(bytes >= 48 * sub);
    add_region(rx + 16 * sub, 32 * sub, 9, sub, 64);
    add_region(rx, bytes, 1, 0, 0);
}

static void test_netvsc_receive_buffer(void **state)
{
    (void)state;
    /* The host writes every frame afresh: once it stops flipping, every frame gets through. */
    const struct flip_case fc = { &layer_netvsc, "netvsc receive buffer", rx_regions, true, true, false, true };
    run_case(&fc);
}

static void test_netvsc_ring(void **state)
{
    (void)state;
    /* The ranges travel in the ring: only the buffer's bounds hold. A corrupted transaction id makes
     * the host fail the channel (a completion for a packet it never sent): the guest only has to
     * end its waits, and the teardown's. */
    const struct flip_case fc = { &layer_netvsc, "netvsc inbound ring", ring_regions, false, false, false, true };
    run_case(&fc);
}

/* ---- the SynIC message slots of the VMBus SINT ---- */

struct churn {
    int64_t end;
    uint32_t opens, opened, gpadls;
};

static void find_by_type(struct vmbus_channel *c, void *ctx)
{
    struct vmbus_channel **found = ctx;
    if (!found[0] && vmbus_channel_sub_index(c) == 0 && !vmbus_channel_rescinded(c) &&
        vmbus_guid_equal(&vmbus_channel_offer(c)->if_type, &(struct vmbus_guid)VMBUS_GUID_KVP))
        found[0] = c;
}

/* Opens and closes the KVP channel (no VSP behind it) and creates and tears down a GPADL on it: a
 * stream of VMBus messages through the slots. Every error is a clear one; the channel pointer is
 * looked up afresh each time (a corrupted message may look like its rescind). */
static void churn_job(void *arg)
{
    struct churn *c = arg;
    while (now_ns() < c->end) {
        struct vmbus_channel *ch[1] = { NULL };
        vmbus_for_each_channel(find_by_type, ch);
        if (!ch[0])
            break;
        struct vmbus_open_params p = { .out_ring_bytes = 2 * PAGE, .in_ring_bytes = 2 * PAGE, .target_cpu = 1 };
        c->opens++;
        if (vmbus_channel_open(ch[0], &p) != STATUS_OK)
            continue;
        c->opened++;
        void *pages = page_alloc(2);
        uint32_t handle;
        status_t s = pages ? vmbus_gpadl_create(ch[0], pages, 2 * PAGE, &handle) : STATUS_NO_MEMORY;
        if (s == STATUS_OK) {
            c->gpadls++;
            s = vmbus_gpadl_destroy(ch[0], handle);
        }
        /* After a timeout or a rescind the host may hold the pages: left to it (vmbus.h's rule). */
        if (pages && s != STATUS_TIMEOUT && s != STATUS_CANCELLED)
            page_free(pages, 2);
        (void)!vmbus_channel_close(ch[0]); /* its errors are clear ones too */
    }
}

static void test_sim_slots(void **state)
{
    (void)state;
    layer_hung = hung;
    struct machine_config mc = { 0 };
    assert_true(machine_start(&mc));
    vmbus_set_timeout_ms(300); /* a message the flipping destroyed costs 0.3 s, not 5 */
    for (uint32_t vp = 0; vp < LAYERS_VPS; vp++) {
        uint64_t simp = 0;
        assert_true(hvsim_rdmsr(hosted_sim(), vp, HV_MSR_SIMP, &simp));
        uint8_t *page = hvsim_gpa(hosted_sim(), simp & HV_PAGE_GPA_MASK, PAGE);
        add_region(page + VMBUS_MESSAGE_SINT * HV_MESSAGE_SIZE, HV_MESSAGE_SIZE, vp == 0 ? 7 : 1, 0, 0);
    }
    flips = 0;
    start_flipping(seed, 20);
    struct churn c = { .end = now_ns() + FLIP_MS * 1000000ll };
    guest_run("open/close churn", churn_job, &c, 60000);
    stop_flipping();
    struct vmbus_stats st;
    vmbus_get_stats(&st);
    printf("  VMBus SINT message slots: %llu bytes flipped (seed %llu); %u opens tried, %u opened, %u GPADLs; vmbus: "
           "%llu messages, %llu dropped as bad, %llu unasked, %llu timeouts\n", (unsigned long long)flips,
           (unsigned long long)seed, c.opens, c.opened, c.gpadls, (unsigned long long)st.messages,
           (unsigned long long)st.dropped_bad, (unsigned long long)st.dropped_unasked, (unsigned long long)st.timeouts);
    machine_stop(); /* UNLOAD and its wait end too */
    finish();
}

int main(void)
{
    seed = getenv("FLIP_SEED") ? strtoull(getenv("FLIP_SEED"), NULL, 0) : (uint64_t)now_ns();
    printf("shared-memory flip test: FLIP_SEED=%llu\n", (unsigned long long)seed);
    fflush(stdout);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kmcl_ring),
        cmocka_unit_test(test_netvsc_receive_buffer),
        cmocka_unit_test(test_netvsc_ring),
        cmocka_unit_test(test_sim_slots),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
