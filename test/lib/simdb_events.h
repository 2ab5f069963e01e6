/*
 * simdb_events: what hvsim's doorbell parser (sim/doorbell.h) reports for a byte stream, recorded in
 * order, and a plain reference scanner written from the frame rules of hv/proto/simdb.h that a test
 * compares it with. Shared by test/host/test_hvsim.c and test/fuzz/fuzz_simdb.c (header only; the
 * fuzzer links no test library).
 */
#ifndef TEST_LIB_SIMDB_EVENTS_H
#define TEST_LIB_SIMDB_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "hv/proto/simdb.h"
#include "sim/doorbell.h"

#define SIMDB_EVENTS_MAX 4096
#define KICK_EVENT UINT64_MAX /* a KICK; any other event is a HELLO's mailbox GPA */

struct simdb_events {
    size_t n;                      /* every event, also those past SIMDB_EVENTS_MAX */
    uint64_t ev[SIMDB_EVENTS_MAX]; /* the first SIMDB_EVENTS_MAX */
};

static inline void simdb_events_add(struct simdb_events *e, uint64_t v)
{
    if (e->n < SIMDB_EVENTS_MAX)
        e->ev[e->n] = v;
    e->n++;
}

static inline void simdb_events_kick(void *ctx)
{
    simdb_events_add(ctx, KICK_EVENT);
}

static inline void simdb_events_hello(void *ctx, uint64_t gpa)
{
    simdb_events_add(ctx, gpa);
}

/* The parser's events for b[0, n) fed to a fresh parser in pieces of `chunk` bytes (chunk > 0). */
static inline struct simdb_events simdb_events_parse(const uint8_t *b, size_t n, size_t chunk)
{
    struct simdb_events e = { 0 };
    struct simdb_sink sink = { simdb_events_kick, simdb_events_hello, &e };
    struct simdb_parser p;
    simdb_parser_init(&p);
    for (size_t i = 0; i < n; i += chunk)
        simdb_parse(&p, b + i, n - i < chunk ? n - i : chunk, &sink);
    return e;
}

/* The reference over a whole stream: a HELLO wherever a valid frame starts (taking its 13 bytes), a
 * KICK for any other KICK byte; it stops where a frame could still be completing. */
static inline struct simdb_events simdb_events_reference(const uint8_t *b, size_t n)
{
    struct simdb_events e = { 0 };
    size_t i = 0;
    while (i < n) {
        if (b[i] == 'H') {
            size_t have = n - i < SIMDB_HELLO_LEN ? n - i : SIMDB_HELLO_LEN;
            bool prefix = true;
            for (size_t k = 1; k < have && k < 4; k++)
                prefix = prefix && b[i + k] == "HVS1"[k];
            if (prefix && have < SIMDB_HELLO_LEN)
                break;
            if (prefix && simdb_checksum(b + i, SIMDB_HELLO_LEN) == 0) {
                uint64_t gpa = 0;
                for (int k = 7; k >= 0; k--)
                    gpa = gpa << 8 | b[i + 4 + k];
                simdb_events_add(&e, gpa);
                i += SIMDB_HELLO_LEN;
                continue;
            }
        } else if (b[i] == SIMDB_KICK) {
            simdb_events_add(&e, KICK_EVENT);
        }
        i++;
    }
    return e;
}

/* The same events in the same order (as far as they were kept). */
static inline bool simdb_events_equal(const struct simdb_events *a, const struct simdb_events *b)
{
    size_t n = a->n < SIMDB_EVENTS_MAX ? a->n : SIMDB_EVENTS_MAX;
    return a->n == b->n && memcmp(a->ev, b->ev, n * sizeof a->ev[0]) == 0;
}

#endif
