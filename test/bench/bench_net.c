/*
 * bench_net: the cost of the IPv4 stack's echo path (lib/net): one received UDP datagram through
 * net_input -> the UDP handler -> net_udp_reply -> tx_begin/tx_end, and an ICMP echo, single thread,
 * hot caches, built -O2 without sanitizers (the guest builds the stack -O2 too, but freestanding;
 * the code is the same C).
 *
 * 1. Time: a loop of echoes timed with the TSC (calibrated against CLOCK_MONOTONIC).
 * 2. Instructions: this program re-runs itself under `valgrind --tool=callgrind` with collection
 *    on inside the measured loop only (--toggle-collect), and reads the totals, and the self cost
 *    of the checksum functions (net_csum_partial, net_csum_copy) from callgrind_annotate, so that
 *    "excluding the checksum loops" is measured, not estimated.
 *
 * The driver side is minimal: tx_begin returns one static buffer, tx_end does nothing (an empty asm
 * keeps the frame live). The lock is never taken on this path (it has no lock callbacks here, and
 * the unit tests check that the path takes none).
 *
 * Options: --quick, --no-callgrind, --callgrind-loop N MODE (used under valgrind by the program).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <x86intrin.h>

#include "lib/net/net.h"

static const uint8_t OUR_MAC[6] = { 0x02, 0x15, 0x5d, 0, 0, 1 };
static const uint8_t PEER_MAC[6] = { 0x02, 0x15, 0x5d, 0, 0, 2 };
#define OUR_IP 0x0A00020Fu
#define PEER_IP 0x0A000214u

static uint8_t txbuf[2048] __attribute__((aligned(64)));
static uint64_t tx_count;

static void *b_tx_begin(void *ctx, uint32_t queue, uint32_t len)
{
    (void)ctx;
    (void)queue;
    (void)len;
    return txbuf;
}

static status_t b_tx_end(void *ctx, uint32_t queue, void *frame, uint32_t len)
{
    (void)ctx;
    (void)queue;
    __asm__ volatile("" : : "r"(frame), "r"(len) : "memory");
    tx_count++;
    return STATUS_OK;
}

static void echo(struct net_if *nif, uint32_t queue, const struct net_udp_meta *m, const void *payload, uint32_t len,
                 void *arg)
{
    (void)arg;
    if (net_udp_reply(nif, queue, m, payload, len) != STATUS_OK)
        abort();
}

/* ---- request frames (built here with a plain checksum) ---- */
static void p16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}
static void p32(uint8_t *p, uint32_t v)
{
    p16(p, (uint16_t)(v >> 16));
    p16(p + 2, (uint16_t)v);
}
static uint16_t csum(const uint8_t *p, size_t n, uint32_t s)
{
    for (size_t i = 0; i + 1 < n; i += 2)
        s += (uint32_t)(p[i] << 8 | p[i + 1]);
    if (n & 1)
        s += (uint32_t)p[n - 1] << 8;
    while (s >> 16)
        s = (s & 0xFFFF) + (s >> 16);
    return (uint16_t)~s;
}

static size_t build(uint8_t *f, uint8_t proto, size_t payload, bool udp_csum)
{
    memcpy(f, OUR_MAC, 6);
    memcpy(f + 6, PEER_MAC, 6);
    p16(f + 12, 0x0800);
    uint8_t *ip = f + 14;
    size_t l4 = 8 + payload; /* UDP or ICMP echo header */
    memset(ip, 0, 20);
    ip[0] = 0x45;
    p16(ip + 2, (uint16_t)(20 + l4));
    ip[8] = 64;
    ip[9] = proto;
    p32(ip + 12, PEER_IP);
    p32(ip + 16, OUR_IP);
    p16(ip + 10, csum(ip, 20, 0));
    uint8_t *u = ip + 20;
    for (size_t i = 0; i < payload; i++)
        u[8 + i] = (uint8_t)(i * 13 + 1);
    if (proto == 17) {
        p16(u, 40000);
        p16(u + 2, 7);
        p16(u + 4, (uint16_t)l4);
        p16(u + 6, 0);
        if (udp_csum) {
            uint32_t ps = (PEER_IP >> 16) + (PEER_IP & 0xFFFF) + (OUR_IP >> 16) + (OUR_IP & 0xFFFF) + 17 + (uint32_t)l4;
            uint16_t c = csum(u, l4, ps);
            p16(u + 6, c ? c : 0xFFFF);
        }
    } else {
        u[0] = 8;
        u[1] = 0;
        p16(u + 4, 1);
        p16(u + 6, 1);
        p16(u + 2, 0);
        p16(u + 2, csum(u, l4, 0));
    }
    return 34 + l4;
}

static struct net_if nif;

static void setup(void)
{
    struct net_ops ops = { .tx_begin = b_tx_begin, .tx_end = b_tx_end };
    if (net_if_init(&nif, OUR_MAC, 1500, 1, &ops) != STATUS_OK ||
        net_set_static(&nif, OUR_IP, 0xFFFFFF00u, 0x0A000202u, 1) != STATUS_OK ||
        net_udp_bind(&nif, 7, echo, NULL) != STATUS_OK) {
        fprintf(stderr, "bench_net: set-up failed\n");
        exit(1);
    }
}

/* ---- the measured loops (callgrind collects inside these noinline functions only) ---- */
struct mode {
    const char *name;
    uint8_t proto;
    size_t payload;
    bool udp_csum;
    const char *what;
};

static const struct mode modes[] = {
    { "udp64", 17, 64, true, "UDP echo, 64-byte payload, checksums in and out" },
    { "udp64_nocsum", 17, 64, false, "UDP echo, 64-byte payload, received without UDP checksum" },
    { "udp1400", 17, 1400, true, "UDP echo, 1400-byte payload, checksums in and out" },
    { "icmp56", 1, 56, true, "ICMP echo (ping), 56 data bytes" },
};
#define NMODES (sizeof modes / sizeof modes[0])

__attribute__((noinline)) void bench_loop(const uint8_t *frame, uint32_t len, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        net_input(&nif, 0, frame, len, 1000);
        __asm__ volatile("" ::: "memory");
    }
}

static const struct mode *find_mode(const char *name)
{
    for (size_t i = 0; i < NMODES; i++)
        if (strcmp(modes[i].name, name) == 0)
            return &modes[i];
    return NULL;
}

static uint8_t frame[2048];

static int callgrind_loop(uint64_t n, const char *name)
{
    const struct mode *m = find_mode(name);
    if (!m)
        return 2;
    setup();
    tx_count = 0; /* the announcement of the address */
    size_t len = build(frame, m->proto, m->payload, m->udp_csum);
    bench_loop(frame, (uint32_t)len, n);
    return tx_count == n ? 0 : 3;
}

/* Runs the loop under callgrind; returns the total, and the self cost of the checksum functions. */
static bool callgrind(const char *self, const char *mode, uint64_t n, long long *total, long long *csum_ir)
{
    char out[64], cmd[4096 + 512];
    snprintf(out, sizeof out, "/tmp/bench_net.callgrind.%d", (int)getpid());
    snprintf(cmd, sizeof cmd,
             "valgrind --tool=callgrind --toggle-collect=bench_loop --callgrind-out-file=%s %s --callgrind-loop %llu %s "
             ">/dev/null 2>&1",
             out, self, (unsigned long long)n, mode);
    if (system(cmd) != 0)
        return false;
    *total = -1;
    *csum_ir = 0;
    FILE *f = fopen(out, "r");
    if (!f)
        return false;
    char line[512];
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "totals:", 7) == 0 || strncmp(line, "summary:", 8) == 0)
            *total = atoll(strchr(line, ':') + 1);
    fclose(f);
    /* The per-function table: "  1,234,567 (12.34%)  file:function [object]"; inlined helpers appear as
     * their header's file with the function they were inlined into. */
    snprintf(cmd, sizeof cmd, "callgrind_annotate --inclusive=no --auto=no %s 2>/dev/null", out);
    FILE *p = popen(cmd, "r");
    if (p) {
        while (fgets(line, sizeof line, p)) {
            char *pct = strstr(line, "%)");
            if (!pct)
                continue;
            char *fn = strrchr(pct, ':');
            if (!fn || (strncmp(fn + 1, "net_csum_partial", 16) != 0 && strncmp(fn + 1, "net_csum_copy", 13) != 0))
                continue;
            long long v = 0;
            for (const char *c = line; *c && *c != '('; c++)
                if (*c >= '0' && *c <= '9')
                    v = v * 10 + (*c - '0');
            *csum_ir += v;
        }
        pclose(p);
    }
    unlink(out);
    return *total >= 0;
}

static double tsc_per_ns;

static void calibrate(void)
{
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    uint64_t t0 = __rdtsc();
    do
        clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1000000000ll + (b.tv_nsec - a.tv_nsec) < 50000000);
    uint64_t t1 = __rdtsc();
    tsc_per_ns = (double)(t1 - t0) / (double)((b.tv_sec - a.tv_sec) * 1000000000ll + (b.tv_nsec - a.tv_nsec));
}

int main(int argc, char **argv)
{
    bool quick = false, do_callgrind = true;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--callgrind-loop") == 0 && i + 2 < argc)
            return callgrind_loop(strtoull(argv[i + 1], NULL, 0), argv[i + 2]);
        if (strcmp(argv[i], "--quick") == 0)
            quick = true;
        else if (strcmp(argv[i], "--no-callgrind") == 0)
            do_callgrind = false;
        else {
            fprintf(stderr, "usage: %s [--quick] [--no-callgrind] | --callgrind-loop N MODE\n", argv[0]);
            return 2;
        }
    }
    calibrate();
    setup();
    printf("bench_net: lib/net echo path, single thread, hot caches, -O2 without sanitizers; TSC %.3f GHz\n",
           tsc_per_ns);
    printf("per datagram: net_input (Ethernet, IPv4 header checks and checksum, UDP length and checksum,\n"
           "binding lookup) -> handler -> net_udp_reply (headers built in the tx buffer, payload copied\n"
           "with its checksum) -> tx_begin/tx_end (a static buffer; no driver cost)\n\n");
    printf("== time (TSC), %s ==\n", quick ? "200,000 echoes" : "2,000,000 echoes");
    uint64_t n = quick ? 200000 : 2000000;
    for (size_t i = 0; i < NMODES; i++) {
        size_t len = build(frame, modes[i].proto, modes[i].payload, modes[i].udp_csum);
        bench_loop(frame, (uint32_t)len, n / 10); /* warm-up */
        uint64_t t0 = __rdtsc();
        bench_loop(frame, (uint32_t)len, n);
        uint64_t t1 = __rdtsc();
        double cyc = (double)(t1 - t0) / (double)n;
        printf("  %-58s %7.1f cycles = %6.1f ns per echo\n", modes[i].what, cyc, cyc / tsc_per_ns);
    }
    struct net_stats st;
    net_get_stats(&nif, &st);
    if (st.udp_out + st.icmp_echo != st.rx_frames || st.tx_frames != st.rx_frames + 1 /* the announcement */) {
        fprintf(stderr, "bench_net: not every request was answered (rx %llu, tx %llu)\n",
                (unsigned long long)st.rx_frames, (unsigned long long)st.tx_frames);
        return 1;
    }
    if (!do_callgrind)
        return 0;
    printf("\n== instructions per echo, valgrind --tool=callgrind (collection inside the loop only) ==\n");
    if (access("/usr/bin/valgrind", X_OK) != 0) {
        printf("valgrind not found (tools/deps.sh installs it): skipped\n");
        return 0;
    }
    char self[4096];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k <= 0)
        return 1;
    self[k] = 0;
    const uint64_t cn = 100000;
    for (size_t i = 0; i < NMODES; i++) {
        long long total, cs;
        if (!callgrind(self, modes[i].name, cn, &total, &cs)) {
            printf("  %-58s callgrind run failed\n", modes[i].what);
            continue;
        }
        printf("  %-58s %7.1f total, %6.1f in the checksum loops, %6.1f the rest\n", modes[i].what,
               (double)total / cn, (double)cs / cn, (double)(total - cs) / cn);
    }
    return 0;
}
