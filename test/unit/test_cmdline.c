/*
 * Unit tests for kernel/cmdline.c: parsing `key=value` words and the typed getters.
 *
 * Every report is captured (test_util.h: struct reports) so tests can assert that a malformed word or
 * value was reported, and that the message names the offending word.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "kernel/cmdline.h"
#include "test/lib/test_util.h"

static struct cmdline cl;
static struct reports rep;

static void parse(const char *text)
{
    reports_clear(&rep);
    cmdline_parse(&cl, text, reports_record, &rep);
}

/* Asserts that exactly one message was reported and that it contains `needle`. */
static void assert_one_report_with(const char *needle)
{
    if (rep.count != 1 || !strstr(rep.msg[0], needle)) {
        print_message("expected one report containing \"%s\"\n", needle);
        reports_dump(&rep);
    }
    assert_int_equal(rep.count, 1);
    assert_non_null(strstr(rep.msg[0], needle));
}

/* A NULL or blank command line yields no words and no reports. */
static void test_empty(void **state)
{
    (void)state;
    parse(NULL);
    assert_int_equal(cl.count, 0);
    assert_int_equal(rep.count, 0);
    assert_null(cmdline_find(&cl, "a"));
    parse("");
    assert_int_equal(cl.count, 0);
    parse(" \t\r\n  ");
    assert_int_equal(cl.count, 0);
    assert_int_equal(rep.count, 0);
}

/* Words are split on space, tab, CR and LF; the first '=' separates key and value; an empty value is
 * allowed. */
static void test_basic_words(void **state)
{
    (void)state;
    parse("  a=1 b=two\tc=x=y\n\nempty= d.e-f_G9=v  ");
    assert_int_equal(rep.count, 0);
    assert_int_equal(cl.count, 5);
    assert_string_equal(cmdline_find(&cl, "a"), "1");
    assert_string_equal(cmdline_find(&cl, "b"), "two");
    assert_string_equal(cmdline_find(&cl, "c"), "x=y");
    assert_string_equal(cmdline_find(&cl, "empty"), "");
    assert_string_equal(cmdline_find(&cl, "d.e-f_G9"), "v");
    /* Keys are matched exactly: case-sensitive, no prefixes. */
    assert_null(cmdline_find(&cl, "A"));
    assert_null(cmdline_find(&cl, "d.e"));
    assert_null(cmdline_find(&cl, "x"));
    /* Words are kept in order. */
    assert_string_equal(cl.words[0].key, "a");
    assert_string_equal(cl.words[4].key, "d.e-f_G9");
}

/* cmdline_str returns the value, or the default when the key is absent. */
static void test_str(void **state)
{
    (void)state;
    parse("console=serial empty=");
    assert_string_equal(cmdline_str(&cl, "console", "vga"), "serial");
    assert_string_equal(cmdline_str(&cl, "empty", "dflt"), "");
    assert_string_equal(cmdline_str(&cl, "missing", "dflt"), "dflt");
    assert_null(cmdline_str(&cl, "missing", NULL));
    assert_int_equal(rep.count, 0);
}

/* Each malformed word is skipped and reported with a message naming the word; the good words around
 * it are kept. */
static void test_malformed_words(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "novalue",         /* no '=' */
        "=value",          /* empty key */
        "a/b=1",           /* key character outside [A-Za-z0-9_.-] */
        "k\x01y=1",        /* control character in the key */
        "key=va\x01ue",    /* control character in the value */
        "key=caf\xc3\xa9", /* non-ASCII byte in the value */
        "key=\x7f",        /* DEL in the value */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[128];
        snprintf(text, sizeof text, "good1=1 %s good2=2", bad[i]);
        parse(text);
        assert_int_equal(cl.count, 2);
        assert_string_equal(cmdline_find(&cl, "good1"), "1");
        assert_string_equal(cmdline_find(&cl, "good2"), "2");
        assert_null(cmdline_find(&cl, "key"));
        /* The message names the word; unprintable characters are shown as '?'. */
        char shown[64];
        size_t n = 0;
        for (const char *p = bad[i]; *p; p++)
            shown[n++] = (*p >= 0x20 && *p < 0x7f) ? *p : '?';
        shown[n] = '\0';
        char quoted[80];
        snprintf(quoted, sizeof quoted, "'%s'", shown);
        assert_one_report_with(quoted);
    }
}

/* A word with only '=' or with '=' first is an empty key; a bare word has no '='. Distinct reasons. */
static void test_malformed_reasons(void **state)
{
    (void)state;
    parse("justaword");
    assert_one_report_with("key=value");
    parse("=");
    assert_one_report_with("empty key");
    parse("==x");
    assert_one_report_with("empty key");
    assert_int_equal(cl.count, 0);
}

/* Keys up to CMDLINE_KEY_MAX and values up to CMDLINE_VALUE_MAX characters are kept; one more is
 * rejected and reported. */
static void test_length_limits(void **state)
{
    (void)state;
    char key_ok[CMDLINE_KEY_MAX + 1], key_long[CMDLINE_KEY_MAX + 2];
    char val_ok[CMDLINE_VALUE_MAX + 1], val_long[CMDLINE_VALUE_MAX + 2];
    memset(key_ok, 'k', CMDLINE_KEY_MAX);
    key_ok[CMDLINE_KEY_MAX] = '\0';
    memset(key_long, 'K', CMDLINE_KEY_MAX + 1);
    key_long[CMDLINE_KEY_MAX + 1] = '\0';
    memset(val_ok, 'v', CMDLINE_VALUE_MAX);
    val_ok[CMDLINE_VALUE_MAX] = '\0';
    memset(val_long, 'V', CMDLINE_VALUE_MAX + 1);
    val_long[CMDLINE_VALUE_MAX + 1] = '\0';

    char text[1024];
    snprintf(text, sizeof text, "%s=%s", key_ok, val_ok);
    parse(text);
    assert_int_equal(rep.count, 0);
    assert_string_equal(cmdline_find(&cl, key_ok), val_ok);

    snprintf(text, sizeof text, "%s=1", key_long);
    parse(text);
    assert_int_equal(cl.count, 0);
    /* The message names the word (the start of it, at least) and the limit. */
    assert_one_report_with(key_long);
    char limit[16];
    snprintf(limit, sizeof limit, "%d", CMDLINE_KEY_MAX);
    assert_non_null(strstr(rep.msg[0], limit));

    snprintf(text, sizeof text, "short=%s", val_long);
    parse(text);
    assert_int_equal(cl.count, 0);
    /* Long words are clipped in the message; at least the key and the start of the value are named. */
    assert_one_report_with("'short=VVVVVVVVVV");
    snprintf(limit, sizeof limit, "%d", CMDLINE_VALUE_MAX);
    assert_non_null(strstr(rep.msg[0], limit));
}

/* A later word with the same key replaces the earlier value, once, and the repeat is reported. */
static void test_duplicates(void **state)
{
    (void)state;
    parse("a=1 b=2 a=3");
    assert_int_equal(cl.count, 2);
    assert_string_equal(cmdline_find(&cl, "a"), "3");
    assert_string_equal(cmdline_find(&cl, "b"), "2");
    assert_one_report_with("'a=3'");
    assert_non_null(strstr(rep.msg[0], "'a'"));

    /* A malformed repeat does not replace the good value. */
    parse("a=1 a=\x01");
    assert_string_equal(cmdline_find(&cl, "a"), "1");
    assert_int_equal(rep.count, 1);
}

/* At most CMDLINE_MAX_WORDS distinct keys are kept; further new keys are reported and dropped, while a
 * repeat of a kept key still updates it. */
static void test_max_words(void **state)
{
    (void)state;
    char text[2048];
    size_t n = 0;
    for (int i = 0; i < CMDLINE_MAX_WORDS + 3; i++)
        n += (size_t)snprintf(text + n, sizeof text - n, "k%d=%d ", i, i);
    snprintf(text + n, sizeof text - n, "k0=updated");
    parse(text);
    assert_int_equal(cl.count, CMDLINE_MAX_WORDS);
    for (int i = 0; i < CMDLINE_MAX_WORDS + 3; i++) {
        char key[16], val[16];
        snprintf(key, sizeof key, "k%d", i);
        snprintf(val, sizeof val, "%d", i);
        if (i == 0)
            assert_string_equal(cmdline_find(&cl, key), "updated");
        else if (i < CMDLINE_MAX_WORDS)
            assert_string_equal(cmdline_find(&cl, key), val);
        else
            assert_null(cmdline_find(&cl, key));
    }
    /* Three dropped words and one repeat. */
    assert_int_equal(rep.count, 4);
    for (int i = CMDLINE_MAX_WORDS; i < CMDLINE_MAX_WORDS + 3; i++) {
        char word[32];
        snprintf(word, sizeof word, "'k%d=%d'", i, i);
        assert_int_equal(reports_matching(&rep, word), 1);
    }
    assert_int_equal(reports_matching(&rep, "'k0=updated'"), 1);
}

/* Parsing never reads or depends on the report callback being present. */
static void test_no_report_callback(void **state)
{
    (void)state;
    cmdline_parse(&cl, "bad =x a=1 a=2 n=zz", NULL, NULL);
    assert_int_equal(cl.count, 2);
    assert_string_equal(cmdline_find(&cl, "a"), "2");
    assert_int_equal(cmdline_u64(&cl, "n", 5, 0, 10), 5);
    assert_false(cmdline_bool(&cl, "n", false));
}

/* cmdline_u64: decimal and 0x hex, with k/m/g (1024-based, either case) suffixes. */
static void test_u64_valid(void **state)
{
    (void)state;
    parse("d=12345 h=0x1F H=0XfF z=0 k=4k K=4K m=3m M=3M g=2g G=2G hk=0x10k big=18446744073709551615 "
          "maxg=17179869183g lead=007");
    assert_int_equal(rep.count, 0);
    const uint64_t any = 999;
    assert_int_equal(cmdline_u64(&cl, "d", any, 0, UINT64_MAX), 12345);
    assert_int_equal(cmdline_u64(&cl, "h", any, 0, UINT64_MAX), 0x1f);
    assert_int_equal(cmdline_u64(&cl, "H", any, 0, UINT64_MAX), 0xff);
    assert_int_equal(cmdline_u64(&cl, "z", any, 0, UINT64_MAX), 0);
    assert_int_equal(cmdline_u64(&cl, "k", any, 0, UINT64_MAX), 4096);
    assert_int_equal(cmdline_u64(&cl, "K", any, 0, UINT64_MAX), 4096);
    assert_int_equal(cmdline_u64(&cl, "m", any, 0, UINT64_MAX), 3ull << 20);
    assert_int_equal(cmdline_u64(&cl, "M", any, 0, UINT64_MAX), 3ull << 20);
    assert_int_equal(cmdline_u64(&cl, "g", any, 0, UINT64_MAX), 2ull << 30);
    assert_int_equal(cmdline_u64(&cl, "G", any, 0, UINT64_MAX), 2ull << 30);
    assert_int_equal(cmdline_u64(&cl, "hk", any, 0, UINT64_MAX), 16ull << 10);
    assert_true(cmdline_u64(&cl, "big", any, 0, UINT64_MAX) == UINT64_MAX);
    assert_true(cmdline_u64(&cl, "maxg", any, 0, UINT64_MAX) == 17179869183ull << 30);
    assert_int_equal(cmdline_u64(&cl, "lead", any, 0, UINT64_MAX), 7);
    /* An absent key gives the default without a report, even outside the range. */
    assert_int_equal(cmdline_u64(&cl, "absent", 77, 100, 200), 77);
    assert_int_equal(rep.count, 0);
}

/* Values that are not numbers, or overflow 64 bits (before or after the suffix), give the default and
 * are reported naming key and value. */
static void test_u64_invalid(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",      "abc", "12x", "-1",  "+1", "0x", "0xg1", "1kk", "1kb", "1.5", "1e3", "0x1p",
        "18446744073709551616", /* 2^64 */
        "99999999999999999999999",
        "0x10000000000000000", /* 2^64 */
        "17179869184g",        /* 2^34 g = 2^64 */
        "18014398509481984k",  /* 2^54 k = 2^64 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[64];
        snprintf(text, sizeof text, "n=%s", bad[i]);
        parse(text);
        assert_int_equal(rep.count, 0);
        assert_int_equal(cmdline_u64(&cl, "n", 4242, 0, UINT64_MAX), 4242);
        char named[80];
        snprintf(named, sizeof named, "'n=%s'", bad[i]);
        assert_one_report_with(named);
        assert_non_null(strstr(rep.msg[0], "4242")); /* says which value is used instead */
    }
}

/* A suffix with no digits before it ("k", "0xm") is not a number. */
static void test_u64_suffix_without_digits(void **state)
{
    (void)state;
    static const char *const bad[] = { "k", "M", "g", "0xk", "0XG" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char text[64];
        snprintf(text, sizeof text, "n=%s", bad[i]);
        parse(text);
        uint64_t v = cmdline_u64(&cl, "n", 4242, 0, UINT64_MAX);
        if (v != 4242)
            print_message("n=%s parsed as %llu\n", bad[i], (unsigned long long)v);
        assert_int_equal(v, 4242);
        assert_one_report_with("not a number");
    }
}

/* Values outside [min, max] give the default and are reported with the range; the bounds themselves
 * are accepted. */
static void test_u64_range(void **state)
{
    (void)state;
    parse("lo=9 min=10 max=20 hi=21 suf=1k");
    assert_int_equal(cmdline_u64(&cl, "min", 15, 10, 20), 10);
    assert_int_equal(cmdline_u64(&cl, "max", 15, 10, 20), 20);
    assert_int_equal(rep.count, 0);
    assert_int_equal(cmdline_u64(&cl, "lo", 15, 10, 20), 15);
    assert_one_report_with("'lo=9'");
    assert_non_null(strstr(rep.msg[0], "10..20"));
    reports_clear(&rep);
    assert_int_equal(cmdline_u64(&cl, "hi", 15, 10, 20), 15);
    assert_one_report_with("'hi=21'");
    reports_clear(&rep);
    /* The range applies after the suffix. */
    assert_int_equal(cmdline_u64(&cl, "suf", 1, 0, 1023), 1);
    assert_one_report_with("'suf=1k'");
    reports_clear(&rep);
    assert_int_equal(cmdline_u64(&cl, "suf", 1, 0, 1024), 1024);
    assert_int_equal(rep.count, 0);
}

/* cmdline_bool accepts exactly 1/0, yes/no, on/off, true/false; anything else is reported and the
 * default used. */
static void test_bool(void **state)
{
    (void)state;
    parse("a=1 b=yes c=on d=true e=0 f=no g=off h=false x=maybe y= z=2");
    assert_int_equal(rep.count, 0);
    const char *t[] = { "a", "b", "c", "d" }, *f[] = { "e", "f", "g", "h" };
    for (int i = 0; i < 4; i++) {
        assert_true(cmdline_bool(&cl, t[i], false));
        assert_true(cmdline_bool(&cl, t[i], true));
        assert_false(cmdline_bool(&cl, f[i], false));
        assert_false(cmdline_bool(&cl, f[i], true));
    }
    assert_int_equal(rep.count, 0);
    assert_true(cmdline_bool(&cl, "absent", true));
    assert_false(cmdline_bool(&cl, "absent", false));
    assert_int_equal(rep.count, 0);
    static const char *const bad[] = { "x", "y", "z" };
    for (int i = 0; i < 3; i++) {
        reports_clear(&rep);
        assert_true(cmdline_bool(&cl, bad[i], true));
        assert_int_equal(rep.count, 1);
        reports_clear(&rep);
        assert_false(cmdline_bool(&cl, bad[i], false));
        char named[16];
        snprintf(named, sizeof named, "'%s=", bad[i]);
        assert_one_report_with(named);
    }
}

/* cmdline_choice returns the index of the value in the list; an unlisted value is reported (with the
 * choices) and gives the default. */
static void test_choice(void **state)
{
    (void)state;
    static const char *const modes[] = { "off", "serial", "vga", "both", NULL };
    parse("out=vga first=off bad=VGA");
    assert_int_equal(cmdline_choice(&cl, "out", modes, 0), 2);
    assert_int_equal(cmdline_choice(&cl, "first", modes, 3), 0);
    assert_int_equal(cmdline_choice(&cl, "absent", modes, 3), 3);
    assert_int_equal(cmdline_choice(&cl, "absent", modes, -1), -1);
    assert_int_equal(rep.count, 0);

    assert_int_equal(cmdline_choice(&cl, "bad", modes, 1), 1);
    assert_one_report_with("'bad=VGA'");
    assert_non_null(strstr(rep.msg[0], "off|serial|vga|both"));
    assert_non_null(strstr(rep.msg[0], "using serial"));
    reports_clear(&rep);
    /* A negative default has no name. */
    assert_int_equal(cmdline_choice(&cl, "bad", modes, -1), -1);
    assert_one_report_with("'bad=VGA'");
}

/* A choice list too long for the message buffer is clipped, not overrun. */
static void test_choice_long_list(void **state)
{
    (void)state;
    static char names[20][48];
    const char *list[21];
    for (int i = 0; i < 20; i++) {
        snprintf(names[i], sizeof names[i], "choice-number-%02d-with-a-long-name", i);
        list[i] = names[i];
    }
    list[20] = NULL;
    parse("c=nope d=choice-number-19-with-a-long-name");
    assert_int_equal(cmdline_choice(&cl, "c", list, 0), 0);
    assert_one_report_with("'c=nope'");
    assert_int_equal(cmdline_choice(&cl, "d", list, 0), 19);
}

/* cmdline_check_known reports each word whose key is in none of the lists, and counts them. */
static void test_check_known(void **state)
{
    (void)state;
    static const char *const mm[] = { "mem", "heap", NULL };
    static const char *const con[] = { "console", NULL };
    static const char *const empty[] = { NULL };
    static const char *const *const lists[] = { mm, empty, con, NULL };
    parse("mem=1 consol=serial console=vga heap=2 typo=3");
    assert_int_equal(cmdline_check_known(&cl, lists), 2);
    assert_int_equal(rep.count, 2);
    assert_int_equal(reports_matching(&rep, "'consol=serial'", "unknown key 'consol'"), 1);
    assert_int_equal(reports_matching(&rep, "'typo=3'", "unknown key 'typo'"), 1);

    /* All known: nothing reported. */
    parse("mem=1 console=x");
    assert_int_equal(cmdline_check_known(&cl, lists), 0);
    assert_int_equal(rep.count, 0);

    /* No lists at all: every word is unknown. */
    static const char *const *const none[] = { NULL };
    parse("a=1 b=2");
    assert_int_equal(cmdline_check_known(&cl, none), 2);
    assert_int_equal(rep.count, 2);
    parse("a=1 b=2 c=3");
    assert_int_equal(cmdline_check_known(&cl, NULL), 3);
    assert_int_equal(rep.count, 3);
}

/* A reparse starts from scratch: nothing of the previous command line survives. */
static void test_reparse_resets(void **state)
{
    (void)state;
    parse("a=1 b=2");
    parse("c=3");
    assert_int_equal(cl.count, 1);
    assert_null(cmdline_find(&cl, "a"));
    assert_string_equal(cmdline_find(&cl, "c"), "3");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_basic_words),
        cmocka_unit_test(test_str),
        cmocka_unit_test(test_malformed_words),
        cmocka_unit_test(test_malformed_reasons),
        cmocka_unit_test(test_length_limits),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_max_words),
        cmocka_unit_test(test_no_report_callback),
        cmocka_unit_test(test_u64_valid),
        cmocka_unit_test(test_u64_invalid),
        cmocka_unit_test(test_u64_suffix_without_digits),
        cmocka_unit_test(test_u64_range),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_choice),
        cmocka_unit_test(test_choice_long_list),
        cmocka_unit_test(test_check_known),
        cmocka_unit_test(test_reparse_resets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
