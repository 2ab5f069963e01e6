/*
 * scenario: one seed of the system simulation (test/dsim/sim_test.c runs many): the random machine,
 * host, device set, hazards and guest workload that the seed decides, run on test/dsim/dsim.h, with
 * the invariants checked (see sim_test.c). Deterministic: the same seed and options, the same run.
 */
#ifndef TEST_DSIM_SCENARIO_H
#define TEST_DSIM_SCENARIO_H

#include <stdbool.h>
#include <stdint.h>

#include "test/dsim/dsim.h"

struct scenario_options {
    const char *argv0;
    uint32_t known_bugs;   /* enum known_bug groups (test/dsim/known_bugs.h): also the hazards that
                            * reach the bugs being fixed; 0 for the suite */
    bool verbose;          /* the run's log on stderr */
    uint32_t max_failures; /* sim_test's range runs stop after this many */
};

struct scenario_result {
    char summary[400];     /* what the seed chose and what happened, one line */
    double virtual_s;
};

/* Runs seed; on a failure the reason is in dsim_failure() and the process should exit. */
enum dsim_result scenario_run(uint64_t seed, const struct scenario_options *o, struct scenario_result *r);

#endif
