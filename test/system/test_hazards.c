/*
 * The hazard matrix: every misbehaviour hvsim can show (the VMBus server's hazards, hvsim's SynIC
 * faults, host actions such as rescinds, device-level faults of the VSPs) alone and in pairs,
 * against every guest layer of test/system/layers.h (kmcl on the test device, netvsc with two
 * queues; a new layer is one row of layer_table there). Each cell - a layer and a hazard or a pair -
 * runs in its own process: a fresh hosted machine, the layer brought up under the hazard, a short
 * workload of three rounds, the teardown, and the checks of what must hold whatever the host does:
 *  - the guest never crashes, panics or trips a sanitizer (the child's exit status and its stderr);
 *  - every wait of the guest ends, with STATUS_OK or a clear error status, and after a rescind
 *    within 2 s (the jobs run under deadlines: guest_run);
 *  - nothing is left after the teardown: channels, GPADLs, relids, guest pages (layer_check_clean),
 *    heap memory (LeakSanitizer at the child's exit);
 *  - what the guest accepts is well formed (layers.h), and where the hazard is benign the workload's
 *    results are exact; a lossy hazard (the link flaps) ends with one more round, settled, that is.
 * One line per cell: PASS, FAIL (with the reasons) or KNOWN (a failure explained by the list of known
 * bugs below, with the item of issue 13 that fixes it: the suite stays green meanwhile; when the fix
 * lands, delete its lines). The cmocka-style line after each (OK, FAILED, SKIPPED for KNOWN) is what
 * test/run_tests.py counts.
 *
 * Under ThreadSanitizer (test_hazards_tsan) only the singles run unless HAZARDS_PAIRS=1.
 * Environment: HAZARDS_FILTER=substring (the cells whose name contains it; =name: that cell),
 * HAZARDS_JOBS=n (cells at once, default 2), HAZARDS_REPEAT=n (each cell n times), HAZARDS_SEED=n
 * (the agitators' random choices; printed), HAZARDS_PAIRS=0/1, HAZARDS_NOTES=1 (the known entries
 * that explained nothing), VERBOSE=1 (the guest's and hvsim's log lines in the cell's output),
 * HAZARDS_OUTPUT=1 (print every cell's output).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fnmatch.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "drivers/netvsc/proto/rndis_msg.h"
#include "hv/proto/hvdefs.h"
#include "hv/vmbus/vmbus.h"
#include "test/hosted/hosted.h"
#include "test/lib/test_util.h"
#include "test/system/layers.h"

#define ROUNDS 3
#define CELL_TIMEOUT_S 90 /* a child that runs longer is killed: its wait did not end */
#define REPORT 4096      /* a child's failure lines */
#define REPORT_MAX (REPORT + 512)

/* ---- hazards ---- */

enum hz_class { BENIGN, LOSSY, DESTRUCTIVE };

struct cell_ctx {
    const struct layer *layer;
    struct rng rng;
    bool link_down, sub_rescinded;
    uint32_t bad_msg, lie;
};

struct hazard {
    const char *name;
    enum hz_class cls;
    bool host_lies, primary_only;
    bool single_only;          /* slow (the guest's own timeouts): not paired */
    const char *pairs_with;    /* slow: paired with this hazard only */
    bool late_teardown;        /* every answer 300 ms late; the guest's teardown waits 100 ms for each */
    bool spare_teardown;       /* its ticks stop after the rounds */
    const char *only_layer;    /* NULL: every layer */
    struct machine_config mc;  /* OR-ed / max-ed over a pair */
    bool rescind_at_open;      /* the server rescinds the layer's device 1 ms after it opens */
    struct device_faults faults;
    void (*start)(struct cell_ctx *c); /* once the layer is up */
    void (*round)(struct cell_ctx *c, uint32_t r);
    void (*tick)(struct cell_ctx *c);  /* every tick_us from the bring-up to the end of the teardown */
    uint32_t tick_us;
    void (*stop)(struct cell_ctx *c);  /* the agitator stopped */
};

/* A burst of refused posts the guest's retries (HV_POST_RETRIES, backing off) outlast. */
static void fail_posts_tick(struct cell_ctx *c)
{
    (void)c;
    hvsim_fail_next_posts(hosted_sim(), 5, HV_STATUS_INSUFFICIENT_BUFFERS);
}

/* Refusals re-armed faster than the guest's back-off grows: some posts fail for good. */
static void starve_posts_tick(struct cell_ctx *c)
{
    (void)c;
    hvsim_fail_next_posts(hosted_sim(), 3, HV_STATUS_INSUFFICIENT_BUFFERS);
}

static void stray_tick(struct cell_ctx *c)
{
    (void)hvsim_signal(hosted_sim(), (uint32_t)rng_below(&c->rng, LAYERS_VPS), VMBUS_MESSAGE_SINT,
                       (uint32_t)rng_below(&c->rng, HV_EVENT_FLAGS_PER_SINT));
}

/* What test_vmbus's test_bad_host_messages sends, one at a time, to a random VP. */
static void bad_msg_tick(struct cell_ctx *c)
{
    uint8_t m[HV_MESSAGE_PAYLOAD_MAX + 16];
    memset(m, 0, sizeof m);
    uint32_t type, size = 16, relid = 2000, handle = 0x7e57;
    bool raw = false;
    switch (c->bad_msg++ % 8) {
    case 0: type = VMBUS_MSG_OFFERCHANNEL; size = 20; break;          /* too short */
    case 1: type = 77; break;                                          /* unknown */
    case 2: type = VMBUS_MSG_OPENCHANNEL; size = 148; break;           /* guest to host */
    case 3: type = VMBUS_MSG_RESCIND_CHANNELOFFER; size = 12; break;   /* a relid never offered */
    case 4: type = VMBUS_MSG_GPADL_TORNDOWN; size = 12; break;         /* a GPADL never torn down */
    case 5: type = VMBUS_MSG_OPENCHANNEL_RESULT; size = 20; break;     /* an open nobody asked for */
    case 6: type = VMBUS_MSG_VERSION_RESPONSE; size = 250; raw = true; break; /* payload_size > 240 */
    default: type = 0; break; /* a SynIC message type the guest does not know */
    }
    memcpy(m, &type, 4);
    memcpy(m + 8, type == VMBUS_MSG_GPADL_TORNDOWN ? &handle : &relid, 4);
    (void)hvsim_post(hosted_sim(), (uint32_t)rng_below(&c->rng, LAYERS_VPS), VMBUS_MESSAGE_SINT,
                     type ? HV_MESSAGE_VMBUS : 0x7e57u, m, size, raw);
}

static void link_tick(struct cell_ctx *c)
{
    c->link_down = !c->link_down;
    hvsim_netvsp_set_link(machine.nvsp, !c->link_down);
}

static void link_stop(struct cell_ctx *c)
{
    c->link_down = false;
    hvsim_netvsp_set_link(machine.nvsp, true);
}

/* The lies of test_netvsc's test_hostile_host, one at a time, between honest frames. */
static void lie_tick(struct cell_ctx *c)
{
    static const struct hvsim_netvsp_raw lies[] = {
        { .range_offset_delta = 3 << 20 }, { .range_offset_delta = -(int64_t)(4u << 20) },
        { .range_len = 0x7fffffffu },      { .pageset_id = 0x1234 },
        { .nvsp_type = 999 },
    };
    uint8_t b[256] = { 0 };
    uint32_t h = rndis_build_packet(b, sizeof b, NULL, 0, 60); /* an honest RNDIS PACKET of a 60-byte frame */
    if (h)
        (void)hvsim_netvsp_deliver_raw(machine.nvsp, b, h + 60, &lies[c->lie++ % (sizeof lies / sizeof lies[0])]);
}

static void rescind_sub_tick(struct cell_ctx *c)
{
    if (c->sub_rescinded)
        return;
    uint32_t relid = layer_sub_relid(c->layer);
    if (relid && hvsim_vmbus_rescind(machine.vb, relid))
        c->sub_rescinded = true;
}

static void rescind_in_use_round(struct cell_ctx *c, uint32_t r)
{
    uint32_t relid = r == 1 ? layer_primary_relid(c->layer) : 0;
    if (relid && !hvsim_vmbus_rescind(machine.vb, relid))
        layer_fail("the host could not rescind relid %u", relid);
}

static void tsc_unsettled(struct cell_ctx *c)
{
    (void)c;
    hvsim_set_tsc_unsettled(hosted_sim(), true);
}

static void tsc_settled(struct cell_ctx *c)
{
    (void)c;
    hvsim_set_tsc_unsettled(hosted_sim(), false);
}

static void stop_reading_start(struct cell_ctx *c)
{
    (void)c;
    __atomic_store_n(&layer_faults.stop_reading, true, __ATOMIC_RELEASE);
}

static const struct hazard hazards[] = {
    { .name = "irq-before-open-result", .mc.vmbus_hazards = HVSIM_VMBUS_IRQ_BEFORE_OPEN_RESULT },
    { .name = "send-on-open", .mc.vmbus_hazards = HVSIM_VMBUS_SEND_ON_OPEN },
    { .name = "delay-responses", .mc = { .vmbus_hazards = HVSIM_VMBUS_DELAY_RESPONSES, .response_delay_us = 2000 } },
    { .name = "reorder-responses", .mc.vmbus_hazards = HVSIM_VMBUS_REORDER_RESPONSES },
    { .name = "bad-offers", .mc.vmbus_hazards = HVSIM_VMBUS_BAD_OFFERS },
    { .name = "unasked-responses", .mc.vmbus_hazards = HVSIM_VMBUS_UNASKED_RESPONSES },
    { .name = "posts-refused", .tick = fail_posts_tick, .tick_us = 50000 },
    { .name = "posts-starved", .cls = DESTRUCTIVE, .single_only = true, .spare_teardown = true,
      .tick = starve_posts_tick, .tick_us = 2000 },
    { .name = "sint-queue-1", .mc.queue_depth = 1 },
    { .name = "stray-events", .tick = stray_tick, .tick_us = 200 },
    { .name = "bad-messages", .tick = bad_msg_tick, .tick_us = 1000 },
    { .name = "host-stalls", .faults = { .stall_every = 8, .stall_ms = 20 } },
    { .name = "tsc-unsettled", .start = tsc_unsettled, .stop = tsc_settled },
    { .name = "hostile-frames", .host_lies = true, .only_layer = "netvsc", .tick = lie_tick, .tick_us = 3000 },
    { .name = "link-flap", .cls = LOSSY, .only_layer = "netvsc", .spare_teardown = true, .tick = link_tick,
      .tick_us = 15000, .stop = link_stop },
    { .name = "rescind-during-open", .cls = DESTRUCTIVE, .mc.vmbus_hazards = HVSIM_VMBUS_RESCIND_DURING_OPEN },
    { .name = "rescind-at-open", .cls = DESTRUCTIVE, .rescind_at_open = true },
    { .name = "rescind-in-use", .cls = DESTRUCTIVE, .round = rescind_in_use_round },
    { .name = "rescind-sub-channel", .cls = DESTRUCTIVE, .primary_only = true, .tick = rescind_sub_tick,
      .tick_us = 200 },
    { .name = "stop-reading", .cls = DESTRUCTIVE, .single_only = true, .start = stop_reading_start },
    { .name = "late-teardown", .late_teardown = true, .pairs_with = "rescind-in-use" },
};
#define HAZARDS (sizeof hazards / sizeof hazards[0])

/* ---- known failures ----
 *
 * Bugs of issue 13's "Found" list that cells hit today. An entry names the cells (a glob over
 * "layer/hazard[+hazard]") and a piece of the failure line it explains; a failing cell is KNOWN
 * when every one of its failure lines is explained by an entry that names it (anything else fails
 * the run). When a fix lands, delete its entries: nothing else changes. At the end the run says
 * which entries explained nothing (their fix may have landed). */

struct known {
    const char *cells;
    unsigned item; /* issue 13, "Found" */
    const char *seen; /* a substring of the failure line */
};

static const struct known known[] = {
    /* A rescind during OPENCHANNEL: the failed open frees the driverless channel, kmcl_channel_enable
     * then asks vmbus_channel_is_open of it (the primary, or a sub-channel the host rescinds with it). */
    { "*rescind-during-open*", 2, "heap-use-after-free in vmbus_channel_is_open " },
    { "*rescind-at-open*", 2, "heap-use-after-free in vmbus_channel_is_open " },
    { "*rescind-sub-channel*", 2, "heap-use-after-free in vmbus_channel_is_open " },
    /* A sub-channel rescinded between vmbus_channel_wait_sub_channels and its open is freed under
     * its opener (kmcl_channel_allocate, vmbus_channel_open); a rescinded sub-channel 1 also makes
     * the wait for one sub-channel run to its 5 s timeout (it counts from index 1, contiguous). */
    { "*rescind-at-open*", 3, "heap-use-after-free in vmbus_channel_open " },
    { "*rescind-sub-channel*", 3, "heap-use-after-free in vmbus_channel_open " },
    { "*rescind-at-open*", 3, "heap-use-after-free in vmbus_guid_equal " },
    { "*rescind-sub-channel*", 3, "heap-use-after-free in vmbus_guid_equal " },
    { "kmcl/*rescind-sub-channel*", 3, "kmcl up (after the host's rescind" },
    { "kmcl/*rescind-at-open*", 3, "kmcl up (after the host's rescind" },
    { "netvsc/*rescind-sub-channel*", 3, "netvsc attach (after the host's rescind" },
    /* A rescinded open channel whose GPADL teardown is answered late is freed inside
     * vmbus_channel_close; kmcl_channel_disable then logs its relid. */
    { "kmcl/*late-teardown*", 4, "heap-use-after-free in vmbus_channel_relid " },
    /* Sends after a rescind are taken into the dead ring and wait for their timeouts (kmcl's
     * requests, netvsc's NVSP/RNDIS requests during attach and its HALT at detach: 5 s each). */
    { "*rescind-at-open*", 5, "issue 13 item 5" },
    { "*rescind-in-use*", 5, "issue 13 item 5" },
    { "*rescind-sub-channel*", 5, "issue 13 item 5" },
    { "netvsc/*rescind-at-open*", 5, "netvsc attach (after the host's rescind" },
    { "netvsc/*rescind-in-use*", 5, "netvsc detach (after the host's rescind" },
    { "netvsc/*rescind-sub-channel*", 5, "netvsc detach (after the host's rescind" },
    { "kmcl/*rescind-*", 5, "kmcl round (after the host's rescind" },
    /* A rescind while netvsc's buffers' GPADLs are being created: the guest leaves one to the host
     * (its pages leaked) although the host dropped it with the channel. */
    { "netvsc/*rescind-at-open*", 8, "1 left to the host" },
    /* netvsc's attach (in its probe) reads nv->link_up plainly for its summary line while a link
     * indication stores it. */
    { "netvsc/*link-flap*", 0, "data race in attach drivers/netvsc/netvsc.c" },
    { "netvsc/*link-flap*", 0, "data race in take_indication " },
    { NULL, 0, NULL },
};
#define KNOWN (sizeof known / sizeof known[0] - 1)
static unsigned known_hits[KNOWN + 1];

/* Whether every failure line of cell (why: joined by " | ") is explained by a known entry; counts
 * the entries' hits. */
static bool explained(const char *cell, const char *why, uint32_t *items)
{
    char lines[REPORT_MAX];
    snprintf(lines, sizeof lines, "%s", why);
    bool all = lines[0] != '\0' && strncmp(lines, "killed", 6) != 0;
    unsigned hit[KNOWN] = { 0 };
    for (char *save = NULL, *line = strtok_r(lines, "|", &save); line; line = strtok_r(NULL, "|", &save)) {
        while (*line == ' ')
            line++;
        bool found = false;
        for (size_t k = 0; k < KNOWN && !found; k++)
            if (fnmatch(known[k].cells, cell, 0) == 0 && strstr(line, known[k].seen)) {
                found = true;
                hit[k] = 1;
                *items |= 1u << known[k].item;
            }
        all &= found || strncmp(line, "exit status ", 12) == 0; /* the lines after it say why */
    }
    for (size_t k = 0; all && k < KNOWN; k++)
        known_hits[k] += hit[k];
    return all;
}

/* ---- one cell, in the child ---- */

struct cell {
    const struct layer *layer;
    const struct hazard *h[2]; /* h[0] NULL: no hazard; h[1] NULL: a single */
    char name[96];
};

static struct cell_ctx ctx;
static const struct cell *running;
static uint32_t phase;      /* 0: up and rounds, 1: teardown, 2: stopped */
static uint32_t phase_seen; /* the agitator's last pass that read phase ended */

static void *agitator(void *arg)
{
    (void)arg;
    int64_t next[2] = { 0, 0 };
    uint32_t p;
    while ((p = __atomic_load_n(&phase, __ATOMIC_ACQUIRE)) < 2) {
        int64_t now = now_ns();
        for (int i = 0; i < 2; i++) {
            const struct hazard *h = running->h[i];
            if (h && h->tick && now >= next[i] && !(p && h->spare_teardown)) {
                h->tick(&ctx);
                next[i] = now + (int64_t)h->tick_us * 1000;
            }
        }
        __atomic_store_n(&phase_seen, p, __ATOMIC_RELEASE);
        sleep_us(100);
    }
    return NULL;
}

/* The answers still come, after the guest stopped waiting for them (vmbus's wait is set on VP 0,
 * where every later wait runs). */
static void short_waits_job(void *arg)
{
    (void)arg;
    vmbus_set_timeout_ms(100);
}

#define EACH_HAZARD(c, h) for (const struct hazard *const *h = (c)->h; h < (c)->h + 2 && *h; h++)

static void run_cell(const struct cell *c, uint64_t seed)
{
    running = c;
    memset(&ctx, 0, sizeof ctx);
    ctx.layer = c->layer;
    rng_seed(&ctx.rng, seed);
    struct machine_config mc = { 0 };
    enum hz_class cls = BENIGN;
    struct expect e = { 0 };
    bool ticks = false;
    EACH_HAZARD(c, h) {
        mc.vmbus_hazards |= (*h)->mc.vmbus_hazards;
        if ((*h)->mc.response_delay_us > mc.response_delay_us)
            mc.response_delay_us = (*h)->mc.response_delay_us;
        if ((*h)->mc.queue_depth)
            mc.queue_depth = (*h)->mc.queue_depth;
        if ((*h)->late_teardown) {
            mc.vmbus_hazards |= HVSIM_VMBUS_DELAY_RESPONSES;
            mc.response_delay_us = 300000;
            e.late_answers = true;
        }
        if ((*h)->rescind_at_open) {
            mc.rescind_device = c->layer->device;
            mc.rescind_after_ms = 1;
        }
        if ((*h)->faults.stall_every)
            layer_faults = (*h)->faults;
        cls = (*h)->cls > cls ? (*h)->cls : cls;
        e.host_lies |= (*h)->host_lies;
        e.primary_only |= (*h)->primary_only;
        ticks |= (*h)->tick != NULL;
    }
    e.strict = cls == BENIGN;
    if (!machine_start(&mc)) {
        machine_stop();
        return;
    }
    pthread_t agit;
    bool agitating = ticks && pthread_create(&agit, NULL, agitator, NULL) == 0;
    bool up = c->layer->up(&e);
    if (up) {
        EACH_HAZARD(c, h) if ((*h)->start) (*h)->start(&ctx);
        for (uint32_t r = 0; r < ROUNDS; r++) {
            EACH_HAZARD(c, h) if ((*h)->round) (*h)->round(&ctx, r);
            c->layer->round(r, &e);
        }
    }
    __atomic_store_n(&phase, 1, __ATOMIC_RELEASE);
    while (agitating && __atomic_load_n(&phase_seen, __ATOMIC_ACQUIRE) < 1)
        sleep_us(100); /* the agitator's last tick of a spared hazard is over */
    EACH_HAZARD(c, h) if ((*h)->stop) (*h)->stop(&ctx);
    if (up && cls == LOSSY) {
        struct expect settled = e;
        settled.strict = true;
        c->layer->round(ROUNDS, &settled); /* the host behaves again: everything gets through */
    }
    if (up)
        c->layer->check(&e);
    EACH_HAZARD(c, h) if ((*h)->late_teardown) guest_run("short waits", short_waits_job, NULL, 1000);
    c->layer->down();
    __atomic_store_n(&phase, 2, __ATOMIC_RELEASE);
    if (agitating)
        pthread_join(agit, NULL);
    layer_check_clean(&e);
    machine_stop();
}

/* ---- the runner: cells in child processes ---- */

struct slot {
    pid_t pid;
    const struct cell *c;
    int64_t t0;
    int out; /* the child's stdout and stderr */
    char *report; /* shared: the child's failure lines */
};

static char *child_report;

static void report_line(const char *line)
{
    size_t n = strlen(child_report), m = strlen(line);
    if (n + m + 2 < REPORT) {
        memcpy(child_report + n, line, m);
        child_report[n + m] = '\n';
        child_report[n + m + 1] = '\0';
    }
}

static void child_hung(const char *step, unsigned limit_ms)
{
    char line[256];
    snprintf(line, sizeof line, "%s: the guest's wait did not end in %u ms", step, limit_ms);
    report_line(line);
    fprintf(stderr, "%s\n", line);
    _exit(3);
}

static void child_main(const struct slot *s, uint64_t seed)
{
    dup2(s->out, 1);
    dup2(s->out, 2);
    child_report = s->report;
    child_report[0] = '\0';
    layer_on_fail = report_line;
    layer_hung = child_hung;
    run_cell(s->c, seed);
    fflush(stdout);
    fflush(stderr);
    exit(layer_failures() ? 1 : 0); /* LeakSanitizer looks at the heap now */
}

/* What killed the child, from its output: a sanitizer's kind of error and the first two frames
 * outside the sanitizer runtime, or the first line that says what went wrong. */
static void crash_reason(int fd, char *out, size_t size)
{
    static const char *const marks[] = { "runtime error:", "PANIC", "IRQL violation", "ERROR: " };
    out[0] = '\0';
    off_t len = lseek(fd, 0, SEEK_END);
    if (len <= 0)
        return;
    char *text = malloc((size_t)len + 1);
    if (!text || pread(fd, text, (size_t)len, 0) != len) {
        free(text);
        return;
    }
    text[len] = '\0';
    if (getenv("HAZARDS_OUTPUT"))
        fwrite(text, 1, (size_t)len, stdout);
    static const char *const headers[] = { "ERROR: AddressSanitizer: ", "ERROR: LeakSanitizer: ",
                                           "WARNING: ThreadSanitizer: " };
    char *p = NULL;
    for (size_t h = 0; h < sizeof headers / sizeof headers[0] && !p; h++)
        if ((p = strstr(text, headers[h])) != NULL)
            p += strlen(headers[h]);
    if (p) {
        size_t kind = strcspn(p, "\n");
        const char *ends[] = { " on ", " (pid", ": " };
        for (size_t e = 0; e < sizeof ends / sizeof ends[0]; e++) {
            const char *q = strstr(p, ends[e]);
            if (q && (size_t)(q - p) < kind)
                kind = (size_t)(q - p);
        }
        int w = snprintf(out, size, "%.*s", (int)kind, p);
        int frames = 0;
        while (frames < 2 && (p = strstr(p, "\n    #")) != NULL) {
            char line[300];
            p += 5;
            snprintf(line, sizeof line, "%.*s", (int)strcspn(p, "\n"), p);
            if (strstr(line, "libsanitizer") || strstr(line, "sanitizer_common"))
                continue; /* the interceptor, not the caller */
            /* ASan: "#0 0x... in func file:line"; TSan: "#0 func file:line (binary+0x...)" */
            char *f = strstr(line, " in ");
            f = f ? f + 4 : line + strcspn(line, " ") + 1;
            f[strcspn(f, "(")] = '\0';
            for (size_t e = strlen(f); e && f[e - 1] == ' ';)
                f[--e] = '\0';
            w += snprintf(out + w, size - (size_t)w, "%s%s", frames++ ? " <- " : " in ", f);
            if ((size_t)w >= size)
                break;
        }
    }
    for (size_t m = 0; m < sizeof marks / sizeof marks[0] && !out[0]; m++) {
        char *q = strstr(text, marks[m]);
        if (!q)
            continue;
        while (q > text && q[-1] != '\n')
            q--;
        snprintf(out, size, "%.*s", (int)strcspn(q, "\n"), q);
    }
    free(text);
}

static unsigned passed, failed, known_failed;

static void finish(struct slot *s, int status)
{
    double secs = (double)(now_ns() - s->t0) / 1e9;
    char crash[400];
    crash_reason(s->out, crash, sizeof crash);
    bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && !s->report[0] && !crash[0];
    char why[REPORT_MAX]; /* the failure lines, joined by " | " */
    why[0] = '\0';
    if (!ok) {
        size_t n = 0;
        if (WIFSIGNALED(status))
            n = (size_t)snprintf(why, sizeof why, "killed by signal %d%s | ", WTERMSIG(status),
                                 WTERMSIG(status) == SIGKILL ? " (a wait that never ended)" : "");
        else if (WEXITSTATUS(status) != 0 && (WEXITSTATUS(status) != 1 || (!crash[0] && !s->report[0])))
            n = (size_t)snprintf(why, sizeof why, "exit status %d | ", WEXITSTATUS(status));
        n += (size_t)snprintf(why + n, sizeof why - n, "%s%s", crash, crash[0] ? " | " : "");
        for (const char *p = s->report; *p && n + 4 < sizeof why; p++) {
            if (*p != '\n') {
                why[n++] = *p;
            } else if (p[1]) {
                memcpy(why + n, " | ", 3);
                n += 3;
            }
        }
        why[n] = '\0';
        if (n >= 3 && strcmp(why + n - 3, " | ") == 0)
            why[n - 3] = '\0';
    }
    uint32_t items = 0;
    bool is_known = !ok && explained(s->c->name, why, &items);
    if (ok) {
        passed++;
        printf("PASS   %-7s %-48s %5.1f s\n[       OK ] %s\n", s->c->layer->name, s->c->name, secs, s->c->name);
    } else if (is_known) {
        known_failed++;
        char tag[96];
        int w = 0;
        for (unsigned i = 1; i < 32; i++)
            if (items & (1u << i))
                w += snprintf(tag + w, sizeof tag - (size_t)w, "%s%u", w ? ", " : "issue 13 item ", i);
        if (items & 1u)
            snprintf(tag + w, sizeof tag - (size_t)w, "%snew, reported", w ? "; " : "");
        printf("KNOWN  %-7s %-48s %5.1f s  %s: %s\n[  SKIPPED ] %s\n", s->c->layer->name, s->c->name, secs, tag, why,
               s->c->name);
    } else {
        failed++;
        printf("FAIL   %-7s %-48s %5.1f s  %s\n[  FAILED  ] %s\n", s->c->layer->name, s->c->name, secs, why,
               s->c->name);
    }
    fflush(stdout);
    s->pid = 0;
}

static bool applies(const struct hazard *h, const struct layer *l)
{
    return !h->only_layer || strcmp(h->only_layer, l->name) == 0;
}

static uint32_t build_cells(struct cell *cells, uint32_t max, const char *filter, uint32_t repeat, bool pairs)
{
    uint32_t n = 0;
    for (uint32_t li = 0; li < layer_count; li++) {
        const struct layer *l = layer_table[li];
        for (int i = -1; i < (int)HAZARDS; i++) {
            for (int j = i; j < (int)HAZARDS; j++) {
                const struct hazard *a = i < 0 ? NULL : &hazards[i], *b = j == i ? NULL : &hazards[j];
                if (i < 0 && j >= 0)
                    continue; /* "none" only alone */
                if ((a && !applies(a, l)) || (b && !applies(b, l)))
                    continue;
                if (b && (!pairs || a->single_only || b->single_only || (a->cls == DESTRUCTIVE && b->cls == DESTRUCTIVE)))
                    continue; /* one way to lose the device per cell */
                if (b && ((a->pairs_with && strcmp(a->pairs_with, b->name)) ||
                          (b->pairs_with && strcmp(b->pairs_with, a->name))))
                    continue;
                struct cell c = { .layer = l, .h = { a, b } };
                snprintf(c.name, sizeof c.name, "%s/%s%s%s", l->name, a ? a->name : "none", b ? "+" : "",
                         b ? b->name : "");
                if (filter && (*filter == '=' ? strcmp(c.name, filter + 1) != 0 : !strstr(c.name, filter)))
                    continue;
                for (uint32_t k = 0; k < repeat && n < max; k++)
                    cells[n++] = c;
            }
        }
    }
    return n;
}

int main(void)
{
    static struct cell cells[1024];
    const char *filter = getenv("HAZARDS_FILTER");
    uint32_t repeat = getenv("HAZARDS_REPEAT") ? (uint32_t)atoi(getenv("HAZARDS_REPEAT")) : 1;
#ifdef __SANITIZE_THREAD__
    bool pairs = false; /* ThreadSanitizer is slow: the singles in `make test`, the pairs on demand */
#else
    bool pairs = true;
#endif
    if (getenv("HAZARDS_PAIRS"))
        pairs = atoi(getenv("HAZARDS_PAIRS")) != 0;
    uint32_t n = build_cells(cells, 1024, filter, repeat ? repeat : 1, pairs);
    uint32_t jobs = getenv("HAZARDS_JOBS") ? (uint32_t)atoi(getenv("HAZARDS_JOBS")) : 2;
    if (jobs < 1 || jobs > 16)
        jobs = 2;
    uint64_t seed = getenv("HAZARDS_SEED") ? strtoull(getenv("HAZARDS_SEED"), NULL, 0) : (uint64_t)now_ns();
    printf("hazard matrix: %u cells (%u layers, %zu hazards%s), %u at once, seed %llu (HAZARDS_SEED)\n", n,
           layer_count, HAZARDS, pairs ? " and pairs" : ", no pairs: HAZARDS_PAIRS=1", jobs, (unsigned long long)seed);
    fflush(stdout);
    struct slot slots[16];
    char *shm = mmap(NULL, (size_t)REPORT * jobs, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shm == MAP_FAILED)
        return 2;
    for (uint32_t i = 0; i < jobs; i++) {
        char path[] = "/tmp/hazards-XXXXXX";
        slots[i] = (struct slot){ .out = mkstemp(path), .report = shm + (size_t)i * REPORT };
        if (slots[i].out < 0)
            return 2;
        unlink(path);
    }
    int64_t t0 = now_ns();
    uint32_t next = 0, busy = 0;
    while (next < n || busy) {
        for (uint32_t i = 0; i < jobs && next < n; i++) {
            struct slot *s = &slots[i];
            if (s->pid)
                continue;
            if (ftruncate(s->out, 0) != 0 || lseek(s->out, 0, SEEK_SET) != 0) /* the offset is shared with the child */
                return 2;
            s->c = &cells[next++];
            s->t0 = now_ns();
            s->report[0] = '\0';
            fflush(stdout);
            pid_t pid = fork();
            if (pid == 0)
                child_main(s, seed);
            if (pid < 0)
                return 2;
            s->pid = pid;
            busy++;
        }
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid > 0) {
            for (uint32_t i = 0; i < jobs; i++)
                if (slots[i].pid == pid) {
                    finish(&slots[i], status);
                    busy--;
                }
            continue;
        }
        for (uint32_t i = 0; i < jobs; i++)
            if (slots[i].pid && now_ns() - slots[i].t0 > CELL_TIMEOUT_S * 1000000000ll)
                kill(slots[i].pid, SIGKILL);
        sleep_us(2000);
    }
    unsigned idle = 0;
    for (size_t k = 0; k < KNOWN; k++)
        if (!known_hits[k]) {
            idle++;
            if (getenv("HAZARDS_NOTES"))
                printf("note: known entry %s (issue 13 item %u, \"%s\") explained no failure\n", known[k].cells,
                       known[k].item, known[k].seen);
        }
    if (idle && !filter)
        printf("note: %u of %zu known entries explained no failure in this run (races vary from run to run; "
               "HAZARDS_NOTES=1 lists them): an entry that never does any more has had its fix land\n", idle, KNOWN);
    printf("hazard matrix: %u cells in %.0f s: %u passed, %u known failures (issue 13), %u failed\n", n,
           (double)(now_ns() - t0) / 1e9, passed, known_failed, failed);
    return failed ? 1 : 0;
}
