/*
 * bench_ring: what the kmcl ring layer (kmcl/core/ring.h, kmcl/core/packet.h) costs on this machine.
 * Built with -O2, no sanitizers (kmcl/kmcl.mk: `make bench-kmcl`). Prints its method with its
 * results:
 *
 *   1. One-way throughput: a writer thread and a reader thread pinned to two different CPUs, one
 *      256 KiB ring, in-band packets of 64, 256, 1500 and 4096 payload bytes for a fixed time
 *      each. The reader copies every payload out (as a driver handing data up would). Signals are
 *      real in the sense that matters here: a side that the ring tells to signal increments the
 *      other side's "doorbell" counter, and a side that runs out of work (reader: ring empty after
 *      end_read; writer: NO_SPACE) spins until its doorbell moves, so a lost signal hangs (and is
 *      reported after 10 s). Unbatched: every write publishes, the reader publishes after every
 *      packet. Batched: writes are deferred and flushed every 16 packets, the reader publishes
 *      every 16 packets. Each size is compared with a plain memcpy of the same bytes (single
 *      thread, into a 256 KiB buffer, same run). Every figure is the median of 3 runs (the
 *      machine is shared: single runs vary by up to 2x).
 *   2. Round trip: a 64-byte request with completion requested, answered by an 8-byte completion
 *      on a second ring, between two spinning threads on two CPUs; median and p99 in TSC cycles
 *      and ns (TSC rate measured against CLOCK_MONOTONIC).
 *   3. Instructions per packet: this program re-runs itself under `valgrind --tool=callgrind` in
 *      a single-threaded loop (write a 64-byte in-band packet, peek and use the view's type,
 *      trans_id, payload and length, consume, publish) with collection toggled on for the loop
 *      function only, and divides its instruction count (Ir) by the number of packets; unbatched
 *      and batched (16 per publish), with the inline API and with the out-of-line calls, and with
 *      the payload size a compile-time constant.
 *
 * Options: --quick (shorter runs), --callgrind-loop N MODE (the loop alone: used under valgrind by
 * the program itself; modes in loops[]), --no-callgrind.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "kmcl/core/packet.h"
#include "kmcl/core/ring.h"

#define RING_BYTES (256u * 1024)
#define BATCH 16u
#define STOP_ID UINT64_MAX

static double run_seconds = 0.5;

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static double tsc_per_ns;

static void calibrate_tsc(void)
{
    int64_t t0 = now_ns();
    uint64_t c0 = __rdtsc();
    while (now_ns() - t0 < 200000000)
        ;
    int64_t t1 = now_ns();
    uint64_t c1 = __rdtsc();
    tsc_per_ns = (double)(c1 - c0) / (double)(t1 - t0);
}

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int e = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (e)
        fprintf(stderr, "bench_ring: cannot pin to cpu%d: %s\n", cpu, strerror(e));
}

struct mem {
    struct kmcl_ring_control *ctrl;
    uint8_t *data;
};

static struct mem mem_new(uint32_t size)
{
    struct mem m;
    m.ctrl = aligned_alloc(4096, 4096);
    m.data = aligned_alloc(4096, size);
    if (!m.ctrl || !m.data) {
        perror("aligned_alloc");
        exit(1);
    }
    memset(m.ctrl, 0, 4096);
    memset(m.data, 0, size);
    return m;
}

static void mem_free(struct mem *m)
{
    free(m->ctrl);
    free(m->data);
}

static void must(status_t s, const char *what)
{
    if (s != STATUS_OK) {
        fprintf(stderr, "bench_ring: %s: %s\n", what, status_name(s));
        exit(1);
    }
}

/* A doorbell: one counter on its own cache line. */
struct doorbell {
    _Alignas(64) uint64_t n;
    char pad[56];
};

static void ring_bell(struct doorbell *d)
{
    __atomic_fetch_add(&d->n, 1, __ATOMIC_RELEASE);
}

static uint64_t bell(struct doorbell *d)
{
    return __atomic_load_n(&d->n, __ATOMIC_ACQUIRE);
}

static void wait_bell(struct doorbell *d, uint64_t seen, const char *who)
{
    int64_t deadline = 0;
    for (unsigned spins = 0; bell(d) == seen; spins++) {
        _mm_pause();
        if ((spins & 0xFFFF) == 0xFFFF) {
            int64_t t = now_ns();
            if (!deadline)
                deadline = t + 10000000000ll;
            else if (t > deadline) {
                fprintf(stderr, "bench_ring: %s: no signal for 10 s: a lost wake-up\n", who);
                exit(2);
            }
        }
    }
}

/* ---- 1. throughput ---- */

struct tput {
    struct mem m;
    uint32_t payload;
    bool batched;
    struct doorbell to_reader, to_writer;
    /* results */
    uint64_t sent, received, signals_to_reader, signals_to_writer, writer_waits, reader_waits;
    int64_t t_start, t_end;
};

static void *tput_writer(void *arg)
{
    struct tput *t = arg;
    pin(0);
    struct kmcl_ring w;
    must(kmcl_ring_attach(&w, KMCL_RING_WRITER, t->m.ctrl, t->m.data, RING_BYTES, 0), "attach writer");
    static uint8_t src[4096];
    memset(src, 0x42, sizeof src);
    struct kmcl_iov iov = { src, t->payload };
    int64_t end = now_ns() + (int64_t)(run_seconds * 1e9);
    uint64_t n = 0, signals = 0, waits = 0; /* local: no cache line shared with the reader */
    bool stop = false;
    while (!stop) {
        if ((n & 1023) == 0 && now_ns() >= end)
            stop = true;
        uint64_t id = stop ? STOP_ID : n;
        uint32_t flags = (t->batched && !stop && (n + 1) % BATCH) ? KMCL_RING_WRITE_DEFER : 0;
        for (;;) {
            uint64_t seen = bell(&t->to_writer);
            bool sig;
            status_t s = kmcl_pkt_send_inband(&w, id, 0, &iov, 1, flags, &sig);
            if (sig) {
                signals++;
                ring_bell(&t->to_reader);
            }
            if (s == STATUS_OK)
                break;
            if (s != STATUS_NO_SPACE)
                must(s, "write");
            waits++;
            wait_bell(&t->to_writer, seen, "writer");
        }
        n++;
    }
    t->sent = n;
    t->signals_to_reader = signals;
    t->writer_waits = waits;
    return NULL;
}

static void *tput_reader(void *arg)
{
    struct tput *t = arg;
    pin(1);
    struct kmcl_ring r;
    must(kmcl_ring_attach(&r, KMCL_RING_READER, t->m.ctrl, t->m.data, RING_BYTES, 0), "attach reader");
    static uint8_t bounce[8192], dst[8192];
    uint64_t n = 0, signals = 0, waits = 0;
    unsigned since_publish = 0;
    bool done = false;
    t->t_start = now_ns();
    while (!done) {
        uint64_t seen = bell(&t->to_reader);
        kmcl_ring_begin_read(&r);
        struct kmcl_ring_packet pk;
        status_t s;
        while ((s = kmcl_ring_peek_inline(&r, &pk, bounce, sizeof bounce)) == STATUS_OK) {
            memcpy(dst, kmcl_pkt_payload(&pk), kmcl_pkt_payload_len(&pk));
            __asm__ volatile("" : : "r"(dst) : "memory");
            if (pk.desc.trans_id == STOP_ID)
                done = true;
            kmcl_ring_consume(&r);
            n++;
            if (++since_publish == (t->batched ? BATCH : 1)) {
                since_publish = 0;
                if (kmcl_ring_publish_read_inline(&r)) {
                    signals++;
                    ring_bell(&t->to_writer);
                }
            }
        }
        if (s != STATUS_NOT_FOUND)
            must(s, "peek");
        bool sig;
        bool more = kmcl_ring_end_read(&r, &sig);
        since_publish = 0;
        if (sig) {
            signals++;
            ring_bell(&t->to_writer);
        }
        if (!more && !done) {
            waits++;
            wait_bell(&t->to_reader, seen, "reader");
        }
    }
    t->t_end = now_ns();
    t->received = n;
    t->signals_to_writer = signals;
    t->reader_waits = waits;
    return NULL;
}

/* Single-threaded memcpy of `count` blocks of `size` bytes into a ring-sized buffer. */
static double memcpy_bytes_per_s(uint32_t size)
{
    static uint8_t src[4096];
    uint8_t *dst = aligned_alloc(4096, RING_BYTES);
    memset(dst, 0, RING_BYTES);
    memset(src, 1, sizeof src);
    uint64_t count = 0;
    uint32_t off = 0;
    int64_t t0 = now_ns(), t1;
    do {
        for (int i = 0; i < 1024; i++) {
            if (off + size > RING_BYTES)
                off = 0;
            memcpy(dst + off, src, size);
            __asm__ volatile("" : : "r"(dst) : "memory");
            off += (size + 7) & ~7u;
        }
        count += 1024;
        t1 = now_ns();
    } while (t1 - t0 < (int64_t)(run_seconds * 0.5e9));
    free(dst);
    return (double)count * size / ((double)(t1 - t0) / 1e9);
}

struct tput_result {
    double pps;
    double signals_per_packet;
};

static struct tput_result tput_run(uint32_t payload, bool batched)
{
    static struct tput t;
    memset(&t, 0, sizeof t);
    t.m = mem_new(RING_BYTES);
    t.payload = payload;
    t.batched = batched;
    struct kmcl_ring init;
    must(kmcl_ring_attach(&init, KMCL_RING_WRITER, t.m.ctrl, t.m.data, RING_BYTES, KMCL_RING_ATTACH_INIT), "init");
    pthread_t a, b;
    pthread_create(&b, NULL, tput_reader, &t);
    pthread_create(&a, NULL, tput_writer, &t);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    if (t.received != t.sent) {
        fprintf(stderr, "bench_ring: sent %llu, received %llu\n", (unsigned long long)t.sent,
                (unsigned long long)t.received);
        exit(1);
    }
    mem_free(&t.m);
    double secs = (double)(t.t_end - t.t_start) / 1e9;
    return (struct tput_result){ (double)t.received / secs,
                                 (double)(t.signals_to_reader + t.signals_to_writer) / (double)t.received };
}

#define REPEAT 3

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void throughput(void)
{
    static const uint32_t sizes[] = { 64, 256, 1500, 4096 };
    printf("\n== one-way throughput: writer on cpu0, reader on cpu1, %u KiB ring, %.1f s per run, median of %d runs "
           "==\n",
           RING_BYTES / 1024, run_seconds, REPEAT);
    printf("%-6s %-9s %12s %21s %9s %12s %12s %11s\n", "bytes", "signals", "packets/s", "(min .. max)", "MB/s",
           "memcpy MB/s", "memcpy/ring", "signals/pkt");
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        double mc[REPEAT];
        for (int k = 0; k < REPEAT; k++)
            mc[k] = memcpy_bytes_per_s(sizes[i]);
        qsort(mc, REPEAT, sizeof mc[0], cmp_double);
        double memcpy_bps = mc[REPEAT / 2];
        for (int batched = 0; batched < 2; batched++) {
            struct tput_result r[REPEAT];
            double pps[REPEAT];
            for (int k = 0; k < REPEAT; k++) {
                r[k] = tput_run(sizes[i], batched);
                pps[k] = r[k].pps;
            }
            qsort(pps, REPEAT, sizeof pps[0], cmp_double);
            double sig = 0;
            for (int k = 0; k < REPEAT; k++)
                if (r[k].pps == pps[REPEAT / 2])
                    sig = r[k].signals_per_packet;
            double bps = pps[REPEAT / 2] * sizes[i];
            printf("%-6u %-9s %12.0f %10.0f .. %-9.0f %9.0f %12.0f %11.2fx %11.4f\n", sizes[i],
                   batched ? "batch 16" : "each", pps[REPEAT / 2], pps[0], pps[REPEAT - 1], bps / 1e6, memcpy_bps / 1e6,
                   memcpy_bps / bps, sig);
        }
    }
    printf("memcpy/ring: how many times longer the ring takes than one memcpy of the same payload bytes\n"
           "(the ring copies each payload twice, in and out, on two CPUs, plus descriptor and trailer).\n"
           "signals/pkt: doorbells rung (to the reader: ring was empty and unmasked; to the writer:\n"
           "pending_send_sz crossed) per packet.\n");
}

/* ---- 2. round trip ---- */

#define RT_WARMUP 20000
#define RT_ROUNDS 200000

struct rt {
    struct mem req, comp;
    uint64_t *cycles;
    unsigned rounds;
};

static void *rt_responder(void *arg)
{
    struct rt *t = arg;
    pin(1);
    struct kmcl_ring in, out;
    must(kmcl_ring_attach(&in, KMCL_RING_READER, t->req.ctrl, t->req.data, RING_BYTES, 0), "attach");
    must(kmcl_ring_attach(&out, KMCL_RING_WRITER, t->comp.ctrl, t->comp.data, RING_BYTES, 0), "attach");
    static uint8_t bounce[256];
    for (unsigned i = 0; i < t->rounds;) {
        struct kmcl_ring_packet pk;
        status_t s = kmcl_ring_peek_inline(&in, &pk, bounce, sizeof bounce);
        if (s == STATUS_NOT_FOUND) {
            _mm_pause();
            continue;
        }
        must(s, "responder peek");
        uint64_t id = pk.desc.trans_id;
        kmcl_ring_consume(&in);
        bool sig = kmcl_ring_publish_read_inline(&in);
        (void)sig;
        struct kmcl_iov c = { &id, 8 };
        must(kmcl_pkt_send_completion(&out, id, &c, 1, 0, &sig), "completion");
        i++;
    }
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void round_trip(void)
{
    static struct rt t;
    t.req = mem_new(RING_BYTES);
    t.comp = mem_new(RING_BYTES);
    t.rounds = RT_WARMUP + RT_ROUNDS;
    t.cycles = malloc(sizeof *t.cycles * RT_ROUNDS);
    struct kmcl_ring out, in;
    must(kmcl_ring_attach(&out, KMCL_RING_WRITER, t.req.ctrl, t.req.data, RING_BYTES, KMCL_RING_ATTACH_INIT), "attach");
    must(kmcl_ring_attach(&in, KMCL_RING_READER, t.comp.ctrl, t.comp.data, RING_BYTES, KMCL_RING_ATTACH_INIT),
         "attach");
    pthread_t b;
    pthread_create(&b, NULL, rt_responder, &t);
    pin(0);
    static uint8_t req[64], bounce[256];
    struct kmcl_iov iov = { req, sizeof req };
    for (unsigned i = 0; i < t.rounds; i++) {
        _mm_lfence();
        uint64_t c0 = __rdtsc();
        bool sig;
        must(kmcl_pkt_send_inband(&out, i, KMCL_PKT_FLAG_COMPLETION_REQUESTED, &iov, 1, 0, &sig), "request");
        struct kmcl_ring_packet pk;
        status_t s;
        while ((s = kmcl_ring_peek_inline(&in, &pk, bounce, sizeof bounce)) == STATUS_NOT_FOUND)
            _mm_pause();
        must(s, "completion peek");
        if (pk.desc.type != KMCL_PKT_COMPLETION || pk.desc.trans_id != i) {
            fprintf(stderr, "bench_ring: wrong completion\n");
            exit(1);
        }
        kmcl_ring_consume(&in);
        sig = kmcl_ring_publish_read_inline(&in);
        (void)sig;
        unsigned int aux;
        uint64_t c1 = __rdtscp(&aux);
        if (i >= RT_WARMUP)
            t.cycles[i - RT_WARMUP] = c1 - c0;
    }
    pthread_join(b, NULL);
    qsort(t.cycles, RT_ROUNDS, sizeof *t.cycles, cmp_u64);
    uint64_t med = t.cycles[RT_ROUNDS / 2], p99 = t.cycles[RT_ROUNDS * 99 / 100], mn = t.cycles[0];
    printf("\n== round trip: 64-byte request (completion requested) -> 8-byte completion, two spinning threads "
           "on cpu0/cpu1 ==\n");
    printf("rounds %u (after %u warm-up); TSC %.3f GHz\n", RT_ROUNDS, RT_WARMUP, tsc_per_ns);
    printf("median %llu cycles = %.0f ns; p99 %llu cycles = %.0f ns; min %llu cycles = %.0f ns\n",
           (unsigned long long)med, med / tsc_per_ns, (unsigned long long)p99, p99 / tsc_per_ns,
           (unsigned long long)mn, mn / tsc_per_ns);
    free(t.cycles);
    mem_free(&t.req);
    mem_free(&t.comp);
}

/* ---- 3. instructions per packet ---- */

struct loop_rings {
    struct mem m;
    struct kmcl_ring w, r;
};

/* What a receiver takes from each packet: type, transaction id, payload pointer and length. Kept
 * live (an empty asm that uses them) so that the compiler cannot drop the work of producing them. */
#define USE_VIEW(pk)                                                                                         \
    __asm__ volatile("" : : "r"((pk).desc.type), "r"((pk).desc.trans_id), "r"(kmcl_pkt_payload(&(pk))),       \
                     "r"(kmcl_pkt_payload_len(&(pk))))

/* The measured loops (callgrind collects inside the noinline functions only). inl: the inline API
 * (kmcl_pkt_send_inband, kmcl_ring_peek_inline, kmcl_ring_publish_read_inline), else the
 * out-of-line calls (kmcl_ring_write_buf, kmcl_ring_peek, kmcl_ring_publish_read). The payload
 * pointer and length are opaque to the compiler (as a driver's message usually is) unless
 * const_len: then they are a static 64-byte buffer and its size, and the copy is inlined. */
static inline __attribute__((always_inline)) status_t loop_send(struct kmcl_ring *w, bool inl, uint64_t id,
                                                                const uint8_t *payload, uint32_t len, uint32_t flags,
                                                                bool *sig)
{
    if (inl) {
        struct kmcl_iov iov = { payload, len };
        return kmcl_pkt_send_inband(w, id, 0, &iov, 1, flags, sig);
    }
    return kmcl_ring_write_buf(w, KMCL_PKT_DATA_INBAND, 0, id, payload, len, flags, sig);
}

static inline __attribute__((always_inline)) void loop_plain(struct loop_rings *lr, uint64_t n, bool inl,
                                                             bool const_len)
{
    static uint8_t buf[64];
    const uint8_t *payload = buf;
    uint32_t len = sizeof buf;
    if (!const_len)
        __asm__("" : "+r"(payload), "+r"(len));
    for (uint64_t i = 0; i < n; i++) {
        bool sig;
        if (loop_send(&lr->w, inl, i, payload, len, 0, &sig) != STATUS_OK)
            abort();
        __asm__ volatile("" : : "r"(sig));
        struct kmcl_ring_packet pk;
        if ((inl ? kmcl_ring_peek_inline(&lr->r, &pk, NULL, 0) : kmcl_ring_peek(&lr->r, &pk, NULL, 0)) != STATUS_OK)
            abort();
        USE_VIEW(pk);
        kmcl_ring_consume(&lr->r);
        sig = inl ? kmcl_ring_publish_read_inline(&lr->r) : kmcl_ring_publish_read(&lr->r);
        __asm__ volatile("" : : "r"(sig));
    }
}

static inline __attribute__((always_inline)) void loop_batched(struct loop_rings *lr, uint64_t n, bool inl,
                                                               bool const_len)
{
    static uint8_t buf[64];
    const uint8_t *payload = buf;
    uint32_t len = sizeof buf;
    if (!const_len)
        __asm__("" : "+r"(payload), "+r"(len));
    for (uint64_t i = 0; i < n; i += BATCH) {
        bool sig;
        for (unsigned k = 0; k < BATCH; k++)
            if (loop_send(&lr->w, inl, i + k, payload, len, KMCL_RING_WRITE_DEFER, &sig) != STATUS_OK)
                abort();
        sig = kmcl_ring_flush(&lr->w);
        __asm__ volatile("" : : "r"(sig));
        for (unsigned k = 0; k < BATCH; k++) {
            struct kmcl_ring_packet pk;
            if ((inl ? kmcl_ring_peek_inline(&lr->r, &pk, NULL, 0) : kmcl_ring_peek(&lr->r, &pk, NULL, 0)) !=
                STATUS_OK)
                abort();
            USE_VIEW(pk);
            kmcl_ring_consume(&lr->r);
        }
        sig = inl ? kmcl_ring_publish_read_inline(&lr->r) : kmcl_ring_publish_read(&lr->r);
        __asm__ volatile("" : : "r"(sig));
    }
}

__attribute__((noinline)) void bench_loop_plain(struct loop_rings *lr, uint64_t n)
{
    loop_plain(lr, n, true, false);
}

__attribute__((noinline)) void bench_loop_batched(struct loop_rings *lr, uint64_t n)
{
    loop_batched(lr, n, true, false);
}

__attribute__((noinline)) void bench_loop_plain_call(struct loop_rings *lr, uint64_t n)
{
    loop_plain(lr, n, false, false);
}

__attribute__((noinline)) void bench_loop_batched_call(struct loop_rings *lr, uint64_t n)
{
    loop_batched(lr, n, false, false);
}

__attribute__((noinline)) void bench_loop_plain_const(struct loop_rings *lr, uint64_t n)
{
    loop_plain(lr, n, true, true);
}

__attribute__((noinline)) void bench_loop_batched_const(struct loop_rings *lr, uint64_t n)
{
    loop_batched(lr, n, true, true);
}

static const struct {
    const char *mode;
    void (*fn)(struct loop_rings *, uint64_t);
    const char *fn_name;
    const char *what;
} loops[] = {
    { "plain", bench_loop_plain, "bench_loop_plain", "inline API, publish every packet" },
    { "batched", bench_loop_batched, "bench_loop_batched", "inline API, publish per 16      " },
    { "plain_call", bench_loop_plain_call, "bench_loop_plain_call", "calls,      publish every packet" },
    { "batched_call", bench_loop_batched_call, "bench_loop_batched_call", "calls,      publish per 16      " },
    { "plain_const", bench_loop_plain_const, "bench_loop_plain_const", "inline API, constant size, each  " },
    { "batched_const", bench_loop_batched_const, "bench_loop_batched_const", "inline API, constant size, per 16" },
};
#define NLOOPS (sizeof loops / sizeof loops[0])

static int callgrind_loop(uint64_t n, const char *mode)
{
    /* 64 KiB ring: 88-byte packets never wrap in the same place, so wrapped (bounced) packets
     * would need a bounce buffer: a ring size that is a multiple of 88 keeps every packet whole. */
    static struct loop_rings lr;
    uint32_t size = 88 * 745; /* 65560 bytes */
    lr.m = mem_new(65536 + 4096);
    must(kmcl_ring_attach(&lr.w, KMCL_RING_WRITER, lr.m.ctrl, lr.m.data, size, KMCL_RING_ATTACH_INIT), "attach");
    must(kmcl_ring_attach(&lr.r, KMCL_RING_READER, lr.m.ctrl, lr.m.data, size, 0), "attach");
    for (unsigned i = 0; i < NLOOPS; i++)
        if (strcmp(mode, loops[i].mode) == 0) {
            loops[i].fn(&lr, n);
            mem_free(&lr.m);
            return 0;
        }
    fprintf(stderr, "bench_ring: unknown loop %s\n", mode);
    return 2;
}

static long long callgrind_ir(const char *self, const char *fn, uint64_t n, const char *mode)
{
    char out[64], cmd[4096 + 512];
    snprintf(out, sizeof out, "/tmp/bench_ring.callgrind.%d", (int)getpid());
    snprintf(cmd, sizeof cmd,
             "valgrind --tool=callgrind --toggle-collect=%s --callgrind-out-file=%s %s --callgrind-loop %llu %s "
             ">/dev/null 2>&1",
             fn, out, self, (unsigned long long)n, mode);
    if (system(cmd) != 0)
        return -1;
    FILE *f = fopen(out, "r");
    if (!f)
        return -1;
    char line[256];
    long long ir = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "totals:", 7) == 0 || strncmp(line, "summary:", 8) == 0)
            ir = atoll(strchr(line, ':') + 1);
    fclose(f);
    unlink(out);
    return ir;
}

static void instructions(const char *self)
{
    printf("\n== instructions per 64-byte in-band packet (send + receive), valgrind --tool=callgrind ==\n");
    if (access("/usr/bin/valgrind", X_OK) != 0) {
        printf("valgrind not found (tools/deps.sh installs it): skipped\n");
        return;
    }
    const uint64_t n = 160000;
    printf("single thread, %llu packets: write (kmcl_pkt_send_inband or kmcl_ring_write_buf: descriptor, 64-byte\n"
           "payload copied in, trailer, publish + signal decision) + peek (all checks; type, trans_id, payload and\n"
           "length used) + consume + publish_read, and the loop itself. Payload pointer and length opaque to the\n"
           "compiler except in the constant-size lines.\n",
           (unsigned long long)n);
    for (unsigned i = 0; i < NLOOPS; i++) {
        long long ir = callgrind_ir(self, loops[i].fn_name, n, loops[i].mode);
        if (ir < 0)
            printf("  %s: callgrind run failed\n", loops[i].what);
        else
            printf("  %s: %lld instructions total, %.1f per packet\n", loops[i].what, ir, (double)ir / n);
    }
}

int main(int argc, char **argv)
{
    bool do_callgrind = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--callgrind-loop") == 0 && i + 2 < argc)
            return callgrind_loop(strtoull(argv[i + 1], NULL, 0), argv[i + 2]);
        if (strcmp(argv[i], "--quick") == 0)
            run_seconds = 0.15;
        else if (strcmp(argv[i], "--no-callgrind") == 0)
            do_callgrind = false;
        else {
            fprintf(stderr, "usage: %s [--quick] [--no-callgrind] | --callgrind-loop N plain|batched|plain_call|...\n",
                    argv[0]);
            return 2;
        }
    }
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    calibrate_tsc();
    printf("bench_ring: kmcl ring layer, %ld CPUs online, TSC %.3f GHz; built -O2 without sanitizers\n", cpus,
           tsc_per_ns);
    if (cpus < 2)
        printf("warning: fewer than 2 CPUs: the two-thread numbers measure time slicing, not the ring\n");
    throughput();
    round_trip();
    if (do_callgrind) {
        char self[4096];
        ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
        if (k > 0) {
            self[k] = 0;
            instructions(self);
        }
    }
    return 0;
}
