/*
 * known_bugs: the switch of sim_test and fuzz_host for the hazards that reach bugs known and being
 * fixed (issue 13, and the ones these tools found: docs/TESTING.md). Each group turns one kind of
 * hazard (or check) back on, so that a fix can enable its own group in the suite as it lands while
 * the others stay off. `--known-bugs` / KNOWN_BUGS=1 turns every group on; `--known-bugs=a,b` /
 * KNOWN_BUGS=a,b some.
 */
#ifndef TEST_DSIM_KNOWN_BUGS_H
#define TEST_DSIM_KNOWN_BUGS_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum known_bug {
    KB_RESCIND_HELD = 1u << 0,        /* rescind an offered channel a worker holds (channel lifetime) */
    KB_RESCIND_DURING_OPEN = 1u << 1, /* item 2: hvsim's RESCIND_DURING_OPEN, rescinds while OPENING */
    KB_RESCIND_OPEN = 1u << 2,        /* items 4, 5: rescind an open channel in use */
    KB_RESCIND_SUB = 1u << 3,         /* item 3: rescind sub-channels (before or after their open) */
    KB_PROCESSING_COMPLETE = 1u << 4, /* item 10: check processing-complete's counts */
    KB_GPADL_LEAK = 1u << 5,          /* item 8: check for pages left after rescinds */
    KB_GUESSED_IDS = 1u << 6,         /* item 1: complete guessed transaction ids (fuzz_host) */
    KB_BACKLOG_READ_INDEX = 1u << 7,  /* new: a bad read index met while flushing kmcl's backlog */
    KB_CROSS_CPU_DPC = 1u << 8,       /* new: disable on another CPU than the channel's DPC */
};
#define KB_ALL 0x1ffu
/* On by default (sim_test, fuzz_host, and so make test): the groups whose bugs are fixed. Off until
 * their fixes land: RESCIND_DURING_OPEN (kmcl sessions then time out a SEND_N, under study) and
 * RESCIND_OPEN (netvsc does not yet pass a rescind on to kmcl). KNOWN_BUGS=0 turns everything off. */
#define KB_FIXED (KB_RESCIND_HELD | KB_RESCIND_SUB | KB_PROCESSING_COMPLETE | KB_GPADL_LEAK | KB_GUESSED_IDS | \
                  KB_BACKLOG_READ_INDEX | KB_CROSS_CPU_DPC)
#define KB_ANY_RESCIND (KB_RESCIND_HELD | KB_RESCIND_DURING_OPEN | KB_RESCIND_OPEN | KB_RESCIND_SUB)

static const struct {
    const char *name;
    uint32_t bit;
} known_bug_names[] = {
    { "rescind-held", KB_RESCIND_HELD },     { "rescind-during-open", KB_RESCIND_DURING_OPEN },
    { "rescind-open", KB_RESCIND_OPEN },     { "rescind-sub", KB_RESCIND_SUB },
    { "processing-complete", KB_PROCESSING_COMPLETE }, { "gpadl-leak", KB_GPADL_LEAK },
    { "guessed-ids", KB_GUESSED_IDS },       { "backlog-read-index", KB_BACKLOG_READ_INDEX },
    { "cross-cpu-dpc", KB_CROSS_CPU_DPC },
};
#define KNOWN_BUG_GROUPS (sizeof known_bug_names / sizeof known_bug_names[0])

/* "1", "all" or NULL-free "" for all; a comma list of names; 0 and *bad set for an unknown name. */
static inline uint32_t known_bugs_parse(const char *s, const char **bad)
{
    *bad = NULL;
    if (!s || !*s || !strcmp(s, "1") || !strcmp(s, "all"))
        return KB_ALL;
    if (!strcmp(s, "0"))
        return 0;
    uint32_t bits = 0;
    while (*s) {
        size_t n = strcspn(s, ",");
        uint32_t i = 0;
        while (i < KNOWN_BUG_GROUPS && (strlen(known_bug_names[i].name) != n || strncmp(known_bug_names[i].name, s, n)))
            i++;
        if (i == KNOWN_BUG_GROUPS) {
            *bad = s;
            return 0;
        }
        bits |= known_bug_names[i].bit;
        s += n + (s[n] == ',');
    }
    return bits;
}

/* The option that gives these groups back ("" for none). */
static inline const char *known_bugs_option(uint32_t bits, char *buf, size_t size)
{
    if (!bits)
        return "";
    if (bits == KB_ALL)
        return " --known-bugs";
    size_t at = (size_t)snprintf(buf, size, " --known-bugs=");
    for (uint32_t i = 0; i < KNOWN_BUG_GROUPS && at < size; i++)
        if (bits & known_bug_names[i].bit)
            at += (size_t)snprintf(buf + at, size - at, "%s%s", buf[at - 1] == '=' ? "" : ",", known_bug_names[i].name);
    return buf;
}

#endif
