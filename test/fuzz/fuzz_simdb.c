/*
 * libFuzzer harness for the hvsim doorbell (sim/doorbell.c) and, behind it, the model's handling of
 * whatever a guest leaves in its mailbox (sim/hvsim.c, synic.c, hypercall.c, stimer.c).
 *
 * Part 1, the byte parser: the input is a doorbell byte stream. The events simdb_parse reports must
 * equal those of a plain reference scanner (a HELLO wherever a valid 13-byte frame starts, a KICK for
 * any other KICK byte, nothing for a frame still incomplete at the end; test/lib/simdb_events.h,
 * which test_hvsim.c compares with too), whether the stream is fed at once or in chunks of 1..16
 * bytes (the chunk size is the input's first byte).
 *
 * Part 2, the mailbox: the same bytes, read as a program (test/fuzz/fuzz_input.h), fill a small guest
 * RAM and up to 24 requests (CPUID, RDMSR, WRMSR, hypercalls with fuzzed controls and GPAs) that
 * simdb_serve executes against a fresh model, with KICKs in between and timers run. Checked: no
 * sanitizer report, serve never answers more requests than VPs, a served MSR request says 0 or 1 in
 * ret[1], a hypercall result is a 16-bit status the model can return.
 *
 * Seeds: test/fuzz/corpus/simdb.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hv/proto/hvdefs.h"
#include "hv/proto/simdb.h"
#include "sim/doorbell.h"
#include "sim/hvsim.h"
#include "test/fuzz/fuzz_check.h"
#include "test/fuzz/fuzz_input.h"
#include "test/lib/simdb_events.h"

#define RAM_SIZE (64u * 1024)

static void check_parser(const uint8_t *data, size_t size)
{
    static struct simdb_events whole, chunked, want; /* large: off the stack */
    whole = simdb_events_parse(data, size, size ? size : 1);
    chunked = simdb_events_parse(data, size, size ? 1 + data[0] % 16 : 1);
    want = simdb_events_reference(data, size);
    CHECK(simdb_events_equal(&whole, &want));
    CHECK(simdb_events_equal(&chunked, &want));
}

/* ---- part 2 ---- */

static struct simdb_mailbox *mailbox;

static void quiet(void *ctx, const char *line)
{
    (void)ctx;
    CHECK(strncmp(line, "hvsim: ", 7) == 0);
}

static void raise_pending(void *ctx, uint32_t vp, uint8_t vector)
{
    (void)ctx;
    CHECK(simdb_set_pending(mailbox, vp, vector));
}

/* Mostly small GPAs inside (or just past) the RAM, sometimes anything. */
static uint64_t take_gpa(struct reader *r)
{
    uint64_t v = take64(r);
    return (v & 1) ? v : (v >> 1) % (RAM_SIZE + 8192);
}

static uint32_t take_msr(struct reader *r)
{
    static const uint32_t msrs[] = { HV_MSR_GUEST_OS_ID, HV_MSR_HYPERCALL, HV_MSR_VP_INDEX, HV_MSR_TIME_REF_COUNT,
                                     HV_MSR_REFERENCE_TSC, HV_MSR_TSC_FREQUENCY, HV_MSR_SCONTROL, HV_MSR_SIEFP,
                                     HV_MSR_SIMP, HV_MSR_EOM };
    uint8_t k = take8(r);
    if (k < 10)
        return msrs[k];
    if (k < 40)
        return HV_MSR_SINT0 + k % 16;
    if (k < 60)
        return HV_MSR_STIMER0_CONFIG + k % 8;
    return 0x40000000u + take8(r);
}

static uint64_t take_msr_value(struct reader *r, uint32_t msr)
{
    uint64_t v = take64(r);
    if (msr == HV_MSR_SIMP || msr == HV_MSR_SIEFP || msr == HV_MSR_HYPERCALL || msr == HV_MSR_REFERENCE_TSC)
        return (take_gpa(r) & ~0xfffull) | (v & 0xfff);
    if (msr == HV_MSR_STIMER0_COUNT || msr == HV_MSR_STIMER0_COUNT + 2)
        return v % 4 ? v % 100000 : v;
    return v;
}

static bool known_status(uint64_t s)
{
    switch (s) {
    case HV_STATUS_SUCCESS:
    case HV_STATUS_INVALID_HYPERCALL_CODE:
    case HV_STATUS_INVALID_HYPERCALL_INPUT:
    case HV_STATUS_INVALID_ALIGNMENT:
    case HV_STATUS_INVALID_PARAMETER:
    case HV_STATUS_ACCESS_DENIED:
    case HV_STATUS_INSUFFICIENT_MEMORY:
    case HV_STATUS_INVALID_PORT_ID:
    case HV_STATUS_INVALID_CONNECTION_ID:
    case HV_STATUS_INSUFFICIENT_BUFFERS:
    case HV_STATUS_INVALID_SYNIC_STATE:
        return true;
    default:
        return false;
    }
}

static void check_mailbox(const uint8_t *data, size_t size)
{
    static uint8_t *ram;
    if (!ram) {
        ram = aligned_alloc(4096, RAM_SIZE);
        CHECK(ram);
    }
    struct reader r = { data, size };
    /* Guest RAM: the input repeated (hypercall inputs, SIM contents), the mailbox at 0. */
    for (size_t i = 0; i < RAM_SIZE; i++)
        ram[i] = size ? data[i % size] : 0;
    const char *why = NULL;
    mailbox = simdb_mailbox_at(ram, RAM_SIZE, 0, &why);
    CHECK(mailbox);
    memset(mailbox, 0, sizeof *mailbox);
    struct hvsim_config cfg = { .vp_count = 1 + take8(&r) % 4, .log = quiet, .queue_depth = 1 + take8(&r) % 8 };
    uint8_t opts = take8(&r);
    cfg.no_direct_stimer = opts & 1;
    cfg.no_reference_tsc = opts & 2;
    cfg.deny_privileges_high = (opts & 4) ? HV_PRIV_POST_MESSAGES : 0;
    cfg.deny_privileges_low = (opts & 8) ? HV_PRIV_ACCESS_SYNIC_REGS : 0;
    struct hvsim *sim = hvsim_create(&cfg, ram, RAM_SIZE, raise_pending, NULL);
    CHECK(sim);
    for (int round = 0; round < 24 && r.n; round++) {
        uint32_t slot = take8(&r) % (cfg.vp_count + 1); /* one past: never served */
        struct simdb_request *q = &mailbox->req[slot];
        uint8_t kind = take8(&r);
        q->vp = (kind & 0x80) ? take8(&r) : slot;
        q->op = (kind & 0x40) ? take8(&r) : 1 + kind % 4;
        switch (q->op) {
        case SIMDB_OP_CPUID:
            q->arg[0] = 0x40000000u + take8(&r) % 8;
            q->arg[1] = take8(&r);
            break;
        case SIMDB_OP_RDMSR:
        case SIMDB_OP_WRMSR:
            q->arg[0] = take_msr(&r);
            q->arg[1] = take_msr_value(&r, (uint32_t)q->arg[0]);
            break;
        default: {
            static const uint16_t codes[] = { HV_CALL_POST_MESSAGE, HV_CALL_SIGNAL_EVENT, 0x5e, 0 };
            uint64_t control = codes[take8(&r) % 4];
            uint8_t bits = take8(&r);
            if (bits & 1)
                control |= HV_HYPERCALL_FAST;
            if (bits & 2)
                control |= take64(&r) & ~0xffffull;
            q->arg[0] = control;
            q->arg[1] = (bits & 4) ? take64(&r) : take_gpa(&r) & ~7ull;
            q->arg[2] = take64(&r);
            break;
        }
        }
        q->seq++;
        if (take8(&r) & 1) {
            unsigned served = simdb_serve(sim, mailbox, cfg.vp_count, quiet, NULL);
            CHECK(served <= cfg.vp_count);
            if (q->done == q->seq && q->vp == slot) {
                if (q->op == SIMDB_OP_RDMSR || q->op == SIMDB_OP_WRMSR)
                    CHECK(q->ret[1] <= 1);
                if (q->op == SIMDB_OP_HYPERCALL)
                    CHECK(known_status(q->ret[0]));
            }
            hvsim_run_timers(sim);
        }
    }
    hvsim_destroy(sim);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    check_parser(data, size);
    check_mailbox(data, size);
    return 0;
}
