/*
 * libFuzzer harness for kernel/cmdline.c.
 *
 * The input, NUL-terminated, is a command line. After cmdline_parse the harness checks the parsed
 * words against the rules of kernel/cmdline.h, then calls every getter on every parsed key (and on a
 * few fixed ones) and compares the results with a small reference implementation written from the
 * header's description. A violation aborts.
 *
 * Known bug tolerated unless KNOWN_BUGS=1 is set in the environment: cmdline_u64 accepts a suffix with
 * no digits ("k", "0xm") as 0 (see the test report / test_cmdline.c test_u64_suffix_without_digits).
 *
 * Seeds: test/fuzz/corpus/cmdline.
 */
#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "kernel/cmdline.h"
#include "test/fuzz/fuzz_check.h"

static unsigned reports;

static void fuzz_report(void *ctx, const char *message)
{
    (void)ctx;
    size_t n = strlen(message);
    CHECK(n > 0 && n < 256);
    reports++;
}

static bool key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.';
}

/* The value of c as a digit of base 10 or 16 (either case), or -1. Looked up in a digit string
 * rather than decoded by ranges as kernel/cmdline.c does: a reference should not share the code it
 * checks. */
static int digit_value(char c, unsigned base)
{
    static const char digits[] = "0123456789abcdef";
    const char *p = memchr(digits, tolower((unsigned char)c), base);
    return p ? (int)(p - digits) : -1;
}

/* Reference: decimal or 0x-hex digits (at least one), optional k/m/g (either case), nothing else. */
static bool ref_u64(const char *s, uint64_t *out, bool *no_digits)
{
    unsigned base = strncasecmp(s, "0x", 2) == 0 ? 16 : 10;
    if (base == 16)
        s += 2;
    uint64_t v = 0;
    int digits = 0;
    for (int d; (d = digit_value(*s, base)) >= 0; s++, digits++) {
        unsigned __int128 w = (unsigned __int128)v * base + (unsigned)d;
        if (w > UINT64_MAX)
            return false;
        v = (uint64_t)w;
    }
    *no_digits = digits == 0;
    unsigned shift = 0;
    switch (*s) {
    case 'k': case 'K': shift = 10; break;
    case 'm': case 'M': shift = 20; break;
    case 'g': case 'G': shift = 30; break;
    default: break;
    }
    if (shift) {
        if ((unsigned __int128)v << shift > UINT64_MAX)
            return false;
        v <<= shift;
        s++;
    }
    if (*s || digits == 0)
        return false;
    *out = v;
    return true;
}

static int ref_bool(const char *v)
{
    static const char *const yes[] = { "1", "yes", "on", "true" }, *const no[] = { "0", "no", "off", "false" };
    for (int i = 0; i < 4; i++) {
        if (!strcmp(v, yes[i]))
            return 1;
        if (!strcmp(v, no[i]))
            return 0;
    }
    return -1;
}

static bool known_bugs(void)
{
    static int cached = -1;
    if (cached < 0) {
        const char *e = getenv("KNOWN_BUGS");
        cached = e && !strcmp(e, "1");
    }
    return cached;
}

static void check_getters(const struct cmdline *cl, const char *key)
{
    static const char dflt_str[] = "<dflt>";
    const char *v = cmdline_find(cl, key);
    CHECK(cmdline_str(cl, key, dflt_str) == (v ? v : dflt_str));

    /* cmdline_u64: the reference value or, with a report, the default. */
    const uint64_t dflt = 0x5eedull;
    unsigned before = reports;
    uint64_t got = cmdline_u64(cl, key, dflt, 0, UINT64_MAX);
    if (!v) {
        CHECK(got == dflt && reports == before);
    } else {
        uint64_t want = 0;
        bool no_digits = false;
        bool ok = ref_u64(v, &want, &no_digits);
        if (!ok && no_digits && got == 0 && !known_bugs()) {
            /* known bug: "k", "0xm", ... parse as 0 */
        } else if (ok) {
            CHECK(got == want && reports == before);
            /* Range: the bounds are inclusive; outside gives the default with a report. */
            CHECK(cmdline_u64(cl, key, dflt, want, want) == want);
            if (want < UINT64_MAX) {
                before = reports;
                CHECK(cmdline_u64(cl, key, dflt, want + 1, UINT64_MAX) == dflt && reports == before + 1);
            }
            if (want > 0) {
                before = reports;
                CHECK(cmdline_u64(cl, key, dflt, 0, want - 1) == dflt && reports == before + 1);
            }
        } else {
            CHECK(got == dflt && reports == before + 1);
        }
    }

    /* cmdline_bool */
    before = reports;
    bool bt = cmdline_bool(cl, key, true), bf = cmdline_bool(cl, key, false);
    int rb = v ? ref_bool(v) : -1;
    if (rb >= 0) {
        CHECK(bt == (rb == 1) && bf == (rb == 1) && reports == before);
    } else {
        CHECK(bt && !bf);
        CHECK(reports == before + (v ? 2u : 0u));
    }

    /* cmdline_choice */
    static const char *const choices[] = { "off", "serial", "vga", "1", "", NULL };
    before = reports;
    int c = cmdline_choice(cl, key, choices, 2), c2 = cmdline_choice(cl, key, choices, -1);
    int rc = -1;
    for (int i = 0; v && choices[i]; i++)
        if (!strcmp(v, choices[i]) && rc < 0)
            rc = i;
    if (rc >= 0)
        CHECK(c == rc && c2 == rc && reports == before);
    else
        CHECK(c == 2 && c2 == -1 && reports == before + (v ? 2u : 0u));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = '\0';

    static struct cmdline cl;
    reports = 0;
    cmdline_parse(&cl, text, fuzz_report, NULL);

    /* The parsed words obey the rules: bounded count, valid unique keys, printable bounded values. */
    CHECK(cl.count <= CMDLINE_MAX_WORDS);
    for (unsigned i = 0; i < cl.count; i++) {
        const struct cmdline_word *w = &cl.words[i];
        size_t kl = strnlen(w->key, sizeof w->key), vl = strnlen(w->value, sizeof w->value);
        CHECK(kl >= 1 && kl <= CMDLINE_KEY_MAX);
        CHECK(vl <= CMDLINE_VALUE_MAX);
        for (size_t k = 0; k < kl; k++)
            CHECK(key_char(w->key[k]));
        for (size_t k = 0; k < vl; k++)
            CHECK(w->value[k] >= 0x21 && w->value[k] <= 0x7e);
        for (unsigned j = 0; j < i; j++)
            CHECK(strcmp(cl.words[j].key, w->key) != 0);
        CHECK(cmdline_find(&cl, w->key) == w->value);
        /* The word (key=value) occurs in the text. */
        char word[CMDLINE_KEY_MAX + CMDLINE_VALUE_MAX + 3];
        snprintf(word, sizeof word, "%s=%s", w->key, w->value);
        CHECK(strstr(text, word) != NULL);
    }

    /* Every input word that was not kept was reported (a kept word may replace an earlier one). */
    unsigned words = 0;
    for (const char *p = text; *p;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
            p++;
        if (!*p)
            break;
        words++;
        while (*p && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            p++;
    }
    CHECK(cl.count + reports == words);

    for (unsigned i = 0; i < cl.count; i++)
        check_getters(&cl, cl.words[i].key);
    static const char *const fixed[] = { "mem", "console", "debug", "a", "", "k", NULL };
    for (int i = 0; fixed[i]; i++)
        check_getters(&cl, fixed[i]);

    /* cmdline_check_known: each word with an unknown key reported once. */
    static const char *const l1[] = { "mem", "console", NULL }, *const l2[] = { "debug", "a", NULL };
    static const char *const *const lists[] = { l1, l2, NULL };
    unsigned unknown = 0;
    for (unsigned i = 0; i < cl.count; i++) {
        const char *k = cl.words[i].key;
        unknown += strcmp(k, "mem") && strcmp(k, "console") && strcmp(k, "debug") && strcmp(k, "a");
    }
    unsigned before = reports;
    CHECK(cmdline_check_known(&cl, lists) == unknown);
    CHECK(reports == before + unknown);

    free(text);
    return 0;
}
