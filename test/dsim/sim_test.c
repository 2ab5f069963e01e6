/*
 * sim_test: the seeded system simulation. Per seed, on the deterministic platform (test/dsim/dsim.h):
 * a random machine (1-4 VPs), a random VMBus host (hvsim's server: version, hazards, response
 * delays, a random device set with test devices served by sim/vsp/vsp_test.c), a host that acts at
 * random virtual times (rescinds, hot-added offers, sub-channel offers), and guest workers on random
 * VPs that run the real guest layers through a random workload (raw VMBus channels: open, signal,
 * GPADLs, retarget, close; kmcl channels: enable, echo, synchronous requests, bulk SEND_N, disable).
 *
 * Invariants checked per seed: no sanitizer report (the process aborts), no hang (bounded virtual
 * time and steps, no deadlock: dsim), every operation returns with a status (a worker that never
 * finishes is a hang), the statuses are ones the contract allows for what the host did, every kmcl
 * send's completion routine runs exactly once, and at the end (everything closed, before UNLOAD) the
 * host holds no GPADL and no open channel and the guest has every ring page back, unless a wait
 * timed out (the contract then leaves pages to the host on purpose).
 *
 * A failing seed prints "seed N: reason"; `sim_test --seed N` replays it (same trace hash).
 *
 *   sim_test --seeds A:B [--known-bugs[=G,...]] [--jobs-per-child K]   seeds A..B-1 in fresh children
 *   sim_test --seed N [--known-bugs] [-v]                      one seed, in this process
 *   sim_test --seeds A:B --replay-check                         each seed alone = after the others
 *
 * --known-bugs also draws the hazards that reach the bugs issue 13 lists as being fixed (rescind at
 * any step of a channel in use, RESCIND_DURING_OPEN, sub-channel rescinds before their open, ...);
 * without it those are left out so that the suite stays green until the fixes land.
 * --known-bugs=GROUP,... turns on some (test/dsim/known_bugs.h); so does KNOWN_BUGS=... .
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test/dsim/dsim.h"
#include "test/dsim/known_bugs.h"
#include "test/dsim/scenario.h"

#undef clock_gettime /* the runner's own wall clock (seeds per second) */

static double wall_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A child's exit status for a failed invariant: not 1, which is what ASan and UBSan exit with. */
#define RUN_FAILED 3

static int run_one(uint64_t seed, const struct scenario_options *o, bool print_ok, uint64_t *hash)
{
    struct scenario_result r;
    enum dsim_result dr = scenario_run(seed, o, &r);
    if (dr != DSIM_OK) {
        char kb[256];
        printf("seed %llu: FAILED: %s (replay: %s --seed %llu%s)\n", (unsigned long long)seed, dsim_failure(),
               o->argv0, (unsigned long long)seed, known_bugs_option(o->known_bugs, kb, sizeof kb));
        fflush(stdout);
        fflush(stderr);
        _exit(RUN_FAILED); /* the run's contexts are abandoned mid-flight: no leak report, no atexit */
    }
    if (hash)
        *hash = dsim_trace_hash();
    if (print_ok)
        printf("seed %llu: ok: %s; trace %016llx, %llu steps, %.3f s virtual\n", (unsigned long long)seed, r.summary,
               (unsigned long long)dsim_trace_hash(), (unsigned long long)dsim_steps(), r.virtual_s);
    return 0;
}

/* Seeds [from, to) in children of `per_child` seeds each; a child stops at its first failure
 * (the guest's state is undefined after one) and the next child goes on after it. Each child reports
 * {seed, trace hash} pairs through a pipe (hash 0: started, not finished); hashes[i - from] gets the
 * trace of seed i when hashes is not NULL. */
static int run_range(uint64_t from, uint64_t to, uint32_t per_child, const struct scenario_options *o,
                     uint64_t *hashes, bool quiet)
{
    double t0 = wall_s();
    uint64_t failed = 0, done = 0;
    uint64_t s = from;
    while (s < to) {
        int fds[2];
        if (pipe(fds) != 0)
            return 2;
        fflush(stdout);
        pid_t pid = fork();
        if (pid < 0)
            return 2;
        uint64_t end = s + per_child < to ? s + per_child : to;
        if (pid == 0) {
            close(fds[0]);
            for (uint64_t k = s; k < end; k++) {
                uint64_t msg[2] = { k, 0 };
                if (write(fds[1], msg, sizeof msg) != sizeof msg)
                    _exit(2);
                if (run_one(k, o, false, &msg[1]) != 0)
                    _exit(RUN_FAILED);
                if (write(fds[1], msg, sizeof msg) != sizeof msg)
                    _exit(2);
            }
            uint64_t all[2] = { UINT64_MAX, 0 };
            if (write(fds[1], all, sizeof all) != sizeof all)
                _exit(2);
            _exit(0);
        }
        close(fds[1]);
        uint64_t last = s, v[2];
        bool finished = false;
        while (read(fds[0], v, sizeof v) == sizeof v) {
            if (v[0] == UINT64_MAX) {
                finished = true;
            } else {
                last = v[0];
                if (hashes && v[1])
                    hashes[v[0] - from] = v[1];
            }
        }
        close(fds[0]);
        int st = 0;
        waitpid(pid, &st, 0);
        if (finished && WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            done += end - s;
            s = end;
            continue;
        }
        char kb[256];
        if (!(WIFEXITED(st) && WEXITSTATUS(st) == RUN_FAILED)) /* a crash (sanitizer report, abort) */
            printf("seed %llu: FAILED: the process died (%s %d; the report is above) (replay: %s --seed %llu%s)\n",
                   (unsigned long long)last, WIFSIGNALED(st) ? "signal" : "exit code",
                   WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), o->argv0, (unsigned long long)last,
                   known_bugs_option(o->known_bugs, kb, sizeof kb));
        failed++;
        done += last + 1 - s;
        s = last + 1;
        if (failed >= o->max_failures)
            break;
    }
    double dt = wall_s() - t0;
    char kb[256];
    if (!quiet)
        printf("sim_test: %llu seeds (%llu..%llu%s), %llu failed, %.1f s, %.0f seeds/s\n", (unsigned long long)done,
           (unsigned long long)from, (unsigned long long)(from + done - 1), known_bugs_option(o->known_bugs, kb, sizeof kb),
           (unsigned long long)failed, dt, dt > 0 ? (double)done / dt : 0.0);
    return failed ? 1 : 0;
}

/* Determinism: seeds [from, to) run one after another in one process, then each alone in a fresh
 * one; every seed must give the same trace both ways (and so replay from its number alone). */
static int replay_check(uint64_t from, uint64_t to, const struct scenario_options *o)
{
    uint64_t n = to - from;
    uint64_t *batch = calloc(n, sizeof *batch), *alone = calloc(n, sizeof *alone);
    if (!batch || !alone)
        return 2;
    int rc = run_range(from, to, (uint32_t)n, o, batch, true);
    for (uint64_t i = 0; i < n && rc == 0; i++)
        rc = run_range(from + i, from + i + 1, 1, o, alone + i, true);
    uint64_t same = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (batch[i] && batch[i] == alone[i])
            same++;
        else
            printf("seed %llu: FAILED: not deterministic: trace %016llx after other seeds, %016llx alone\n",
                   (unsigned long long)(from + i), (unsigned long long)batch[i], (unsigned long long)alone[i]);
    }
    printf("sim_test: replay: %llu of %llu seeds gave the same trace alone as after other seeds\n",
           (unsigned long long)same, (unsigned long long)n);
    free(batch);
    free(alone);
    return rc == 0 && same == n ? 0 : 1;
}

int main(int argc, char **argv)
{
    struct scenario_options o = { .argv0 = argv[0], .max_failures = 10, .known_bugs = KB_FIXED };
    const char *env = getenv("KNOWN_BUGS"), *bad = NULL;
    if (env && *env)
        o.known_bugs = known_bugs_parse(env, &bad); /* as fuzz_host; --known-bugs overrides */
    uint64_t seed = 0, from = 0, to = 0;
    bool one = false, replay = false;
    uint32_t per_child = 500; /* a fork of an ASan process and its exit cost ~100 ms of system time */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], NULL, 0);
            one = true;
        } else if (!strcmp(argv[i], "--seeds") && i + 1 < argc) {
            char *colon;
            from = strtoull(argv[++i], &colon, 0);
            to = *colon == ':' ? strtoull(colon + 1, NULL, 0) : from + 1;
        } else if (!strcmp(argv[i], "--replay-check")) {
            replay = true;
        } else if (!strncmp(argv[i], "--known-bugs", 12) && (argv[i][12] == 0 || argv[i][12] == '=')) {
            const char *bad;
            o.known_bugs = known_bugs_parse(argv[i][12] ? argv[i] + 13 : NULL, &bad);
            if (bad) {
                fprintf(stderr, "%s: unknown group in --known-bugs: %s (groups:", argv[0], bad);
                for (uint32_t g = 0; g < KNOWN_BUG_GROUPS; g++)
                    fprintf(stderr, " %s", known_bug_names[g].name);
                fprintf(stderr, ")\n");
                return 2;
            }
        } else if (!strcmp(argv[i], "--jobs-per-child") && i + 1 < argc) {
            per_child = (uint32_t)strtoul(argv[++i], NULL, 0);
        } else if (!strcmp(argv[i], "--max-failures") && i + 1 < argc) {
            o.max_failures = (uint32_t)strtoul(argv[++i], NULL, 0);
        } else if (!strcmp(argv[i], "-v")) {
            o.verbose = true;
        } else {
            fprintf(stderr,
                    "usage: %s --seed N [--known-bugs] [-v] | --seeds A:B [--known-bugs] [--jobs-per-child K] "
                    "[--max-failures F] [--replay-check]\n",
                    argv[0]);
            return 2;
        }
    }
    if (one)
        return run_one(seed, &o, true, NULL);
    if (to <= from) {
        fprintf(stderr, "%s: --seed or --seeds A:B (A < B)\n", argv[0]);
        return 2;
    }
    if (replay)
        return replay_check(from, to, &o);
    return run_range(from, to, per_child ? per_child : 1, &o, NULL, false);
}
