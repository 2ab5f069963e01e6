/*
 * cmdline: the boot command line, a string of `key=value` words separated by spaces.
 *
 * Parsing never fails as a whole: a malformed word (no '=', empty key, over-long key or value,
 * control characters) is reported through the report callback, naming the word, and skipped; a
 * value that does not parse as what its getter expects is reported and the default is used.
 * Words whose key no consumer declared are reported by cmdline_check_known().
 * Not thread-safe: parse once at boot (PASSIVE), then read.
 */
#ifndef KERNEL_CMDLINE_H
#define KERNEL_CMDLINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CMDLINE_MAX_WORDS 32
#define CMDLINE_KEY_MAX 31
#define CMDLINE_VALUE_MAX 127

typedef void (*cmdline_report_fn)(void *ctx, const char *message);

struct cmdline_word {
    char key[CMDLINE_KEY_MAX + 1];
    char value[CMDLINE_VALUE_MAX + 1];
};

struct cmdline {
    unsigned count;
    struct cmdline_word words[CMDLINE_MAX_WORDS];
    cmdline_report_fn report;
    void *report_ctx;
};

/* Parses text (may be NULL). Later duplicates replace earlier ones (reported). */
void cmdline_parse(struct cmdline *cl, const char *text, cmdline_report_fn report, void *ctx);

/* The raw value of key, or NULL when absent. */
const char *cmdline_find(const struct cmdline *cl, const char *key);

const char *cmdline_str(const struct cmdline *cl, const char *key, const char *dflt);
/* Decimal or 0x-hex, optionally with a k/m/g suffix (powers of 1024); range-checked. */
uint64_t cmdline_u64(const struct cmdline *cl, const char *key, uint64_t dflt, uint64_t min, uint64_t max);
/* 1/0, yes/no, on/off, true/false. */
bool cmdline_bool(const struct cmdline *cl, const char *key, bool dflt);
/* Index of the value in the NULL-terminated choices, or dflt. */
int cmdline_choice(const struct cmdline *cl, const char *key, const char *const *choices, int dflt);

/* Reports every word whose key is in none of the NULL-terminated lists (the list of lists ends with
 * NULL). Returns how many were unknown. */
unsigned cmdline_check_known(const struct cmdline *cl, const char *const *const *known_lists);

#endif
