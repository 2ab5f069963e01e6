/*
 * Helpers shared by the hosted unit tests (header only: every test program is linked from its own
 * test_<module>.c plus the kernel sources, nothing else).
 *
 * Include after <cmocka.h> (and its prerequisites).
 */
#ifndef TEST_UNIT_TEST_UTIL_H
#define TEST_UNIT_TEST_UTIL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The monotonic clock in ns, and a sleep, for the tests that wait on other threads. */
static inline int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000ll + t.tv_nsec;
}

static inline void sleep_us(long us)
{
    struct timespec t = { .tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000 };
    nanosleep(&t, NULL);
}

/* A small deterministic PRNG (xorshift64*), so randomized tests replay identically everywhere. */
struct rng {
    uint64_t s;
};

static inline void rng_seed(struct rng *r, uint64_t seed)
{
    r->s = seed ? seed : 0x9e3779b97f4a7c15ull;
}

static inline uint64_t rng_next(struct rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545f4914f6cdd1dull;
}

/* Uniform-enough value in [0, n) for small n (n > 0). */
static inline uint64_t rng_below(struct rng *r, uint64_t n)
{
    return rng_next(r) % n;
}

/*
 * Known bugs: tests that demonstrate a bug found in a kernel module and reported to its owner. They
 * assert the correct behaviour, so they fail until the module is fixed; meanwhile they are skipped
 * unless KNOWN_BUGS=1 is set in the environment, so the suite stays green. Once the bug is fixed,
 * delete the KNOWN_BUG() line from the test.
 */
static inline bool known_bugs_enabled(void)
{
    const char *e = getenv("KNOWN_BUGS");
    return e && strcmp(e, "1") == 0;
}

#define KNOWN_BUG()                                                                                            \
    do {                                                                                                       \
        if (!known_bugs_enabled()) {                                                                           \
            print_message("known bug, skipped (run with KNOWN_BUGS=1 to see it fail)\n");                     \
            skip();                                                                                            \
        }                                                                                                      \
    } while (0)

/* Messages handed to a report callback (cmdline, acpi), kept for assertions. */
#define REPORT_KEEP 64
#define REPORT_LEN 256

struct reports {
    unsigned count; /* every call, including those past REPORT_KEEP */
    char msg[REPORT_KEEP][REPORT_LEN];
};

static inline void reports_clear(struct reports *r)
{
    memset(r, 0, sizeof *r);
}

/* The callback signature shared by cmdline_report_fn and acpi_report_fn. */
static inline void reports_record(void *ctx, const char *message)
{
    struct reports *r = ctx;
    /* The message must be a NUL-terminated string; strlen under ASan checks that. */
    size_t n = strlen(message);
    if (r->count < REPORT_KEEP) {
        if (n >= REPORT_LEN)
            n = REPORT_LEN - 1;
        memcpy(r->msg[r->count], message, n);
        r->msg[r->count][n] = '\0';
    }
    r->count++;
}

/* How many kept messages contain every one of the given substrings (NULL-terminated list). */
static inline unsigned reports_matching_v(const struct reports *r, const char *const *subs)
{
    unsigned hits = 0;
    unsigned kept = r->count < REPORT_KEEP ? r->count : REPORT_KEEP;
    for (unsigned i = 0; i < kept; i++) {
        bool all = true;
        for (unsigned k = 0; subs[k] && all; k++)
            all = strstr(r->msg[i], subs[k]) != NULL;
        hits += all;
    }
    return hits;
}

#define reports_matching(r, ...) reports_matching_v((r), (const char *const[]){ __VA_ARGS__, NULL })

/* Prints what was reported (helps when an assertion on the messages fails). */
static inline void reports_dump(const struct reports *r)
{
    unsigned kept = r->count < REPORT_KEEP ? r->count : REPORT_KEEP;
    for (unsigned i = 0; i < kept; i++)
        print_message("  report[%u]: %s\n", i, r->msg[i]);
}

#endif
