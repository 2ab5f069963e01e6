#include "kernel/cmdline.h"

#include "kernel/fmt.h"
#include "kernel/string.h"

static void reportf(const struct cmdline *cl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reportf(const struct cmdline *cl, const char *fmt, ...)
{
    if (!cl->report)
        return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    fmt_vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cl->report(cl->report_ctx, msg);
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static bool is_key_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

static struct cmdline_word *lookup(const struct cmdline *cl, const char *key)
{
    for (unsigned i = 0; i < cl->count; i++)
        if (strcmp(cl->words[i].key, key) == 0)
            return (struct cmdline_word *)&cl->words[i];
    return NULL;
}

static void add_word(struct cmdline *cl, const char *w, size_t n)
{
    /* The word as text, clipped for messages. */
    char shown[64];
    size_t sn = n < sizeof shown - 4 ? n : sizeof shown - 4;
    for (size_t i = 0; i < sn; i++)
        shown[i] = (w[i] >= 0x20 && w[i] < 0x7f) ? w[i] : '?';
    if (sn < n)
        shown[sn++] = '.', shown[sn++] = '.', shown[sn++] = '.';
    shown[sn] = '\0';

    size_t eq = 0;
    while (eq < n && w[eq] != '=')
        eq++;
    if (eq == n) {
        reportf(cl, "cmdline: word '%s' ignored: expected key=value", shown);
        return;
    }
    if (eq == 0) {
        reportf(cl, "cmdline: word '%s' ignored: empty key", shown);
        return;
    }
    if (eq > CMDLINE_KEY_MAX) {
        reportf(cl, "cmdline: word '%s' ignored: key longer than %d characters", shown, CMDLINE_KEY_MAX);
        return;
    }
    for (size_t i = 0; i < eq; i++) {
        if (!is_key_char(w[i])) {
            reportf(cl, "cmdline: word '%s' ignored: key has a character other than letters, digits, _ - .",
                    shown);
            return;
        }
    }
    size_t vlen = n - eq - 1;
    if (vlen > CMDLINE_VALUE_MAX) {
        reportf(cl, "cmdline: word '%s' ignored: value longer than %d characters", shown, CMDLINE_VALUE_MAX);
        return;
    }
    for (size_t i = eq + 1; i < n; i++) {
        if ((unsigned char)w[i] < 0x21 || (unsigned char)w[i] > 0x7e) {
            reportf(cl, "cmdline: word '%s' ignored: value has a non-printable character", shown);
            return;
        }
    }
    char key[CMDLINE_KEY_MAX + 1];
    memcpy(key, w, eq);
    key[eq] = '\0';
    struct cmdline_word *slot = lookup(cl, key);
    if (slot) {
        reportf(cl, "cmdline: word '%s' repeats key '%s'; the last one counts", shown, key);
    } else {
        if (cl->count == CMDLINE_MAX_WORDS) {
            reportf(cl, "cmdline: word '%s' ignored: more than %d words", shown, CMDLINE_MAX_WORDS);
            return;
        }
        slot = &cl->words[cl->count++];
        memcpy(slot->key, key, eq + 1);
    }
    memcpy(slot->value, w + eq + 1, vlen);
    slot->value[vlen] = '\0';
}

void cmdline_parse(struct cmdline *cl, const char *text, cmdline_report_fn report, void *ctx)
{
    memset(cl, 0, sizeof *cl);
    cl->report = report;
    cl->report_ctx = ctx;
    if (!text)
        return;
    const char *p = text;
    for (;;) {
        while (is_space(*p))
            p++;
        if (!*p)
            break;
        const char *w = p;
        while (*p && !is_space(*p))
            p++;
        add_word(cl, w, (size_t)(p - w));
    }
}

const char *cmdline_find(const struct cmdline *cl, const char *key)
{
    const struct cmdline_word *w = lookup(cl, key);
    return w ? w->value : NULL;
}

const char *cmdline_str(const struct cmdline *cl, const char *key, const char *dflt)
{
    const char *v = cmdline_find(cl, key);
    return v ? v : dflt;
}

static bool parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    unsigned base = 10;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        base = 16;
        s += 2;
    }
    const char *digits = s;
    for (; *s; s++) {
        unsigned d;
        if (*s >= '0' && *s <= '9')
            d = (unsigned)(*s - '0');
        else if (base == 16 && *s >= 'a' && *s <= 'f')
            d = (unsigned)(*s - 'a' + 10);
        else if (base == 16 && *s >= 'A' && *s <= 'F')
            d = (unsigned)(*s - 'A' + 10);
        else
            break;
        if (v > (UINT64_MAX - d) / base)
            return false;
        v = v * base + d;
    }
    if (s == digits) /* a bare suffix such as "k" or "0x" is not a number */
        return false;
    unsigned shift = 0;
    if (*s == 'k' || *s == 'K')
        shift = 10;
    else if (*s == 'm' || *s == 'M')
        shift = 20;
    else if (*s == 'g' || *s == 'G')
        shift = 30;
    if (shift) {
        if (v > (UINT64_MAX >> shift))
            return false;
        v <<= shift;
        s++;
    }
    if (*s)
        return false;
    *out = v;
    return true;
}

uint64_t cmdline_u64(const struct cmdline *cl, const char *key, uint64_t dflt, uint64_t min, uint64_t max)
{
    const char *v = cmdline_find(cl, key);
    if (!v)
        return dflt;
    uint64_t n;
    if (!parse_u64(v, &n)) {
        reportf(cl, "cmdline: '%s=%s': not a number; using %llu", key, v, (unsigned long long)dflt);
        return dflt;
    }
    if (n < min || n > max) {
        reportf(cl, "cmdline: '%s=%s': outside %llu..%llu; using %llu", key, v, (unsigned long long)min,
                (unsigned long long)max, (unsigned long long)dflt);
        return dflt;
    }
    return n;
}

/* The index of v in the NULL-terminated list of words, or -1. */
static int word_index(const char *v, const char *const *words)
{
    for (int i = 0; words[i]; i++)
        if (strcmp(v, words[i]) == 0)
            return i;
    return -1;
}

bool cmdline_bool(const struct cmdline *cl, const char *key, bool dflt)
{
    static const char *const yes[] = { "1", "yes", "on", "true", NULL };
    static const char *const no[] = { "0", "no", "off", "false", NULL };
    const char *v = cmdline_find(cl, key);
    if (!v)
        return dflt;
    if (word_index(v, yes) >= 0)
        return true;
    if (word_index(v, no) >= 0)
        return false;
    reportf(cl, "cmdline: '%s=%s': not a boolean (1/0, yes/no, on/off, true/false); using %s", key, v,
            dflt ? "1" : "0");
    return dflt;
}

int cmdline_choice(const struct cmdline *cl, const char *key, const char *const *choices, int dflt)
{
    const char *v = cmdline_find(cl, key);
    if (!v)
        return dflt;
    int found = word_index(v, choices);
    if (found >= 0)
        return found;
    char list[160];
    size_t n = 0;
    list[0] = '\0';
    for (int i = 0; choices[i] && n < sizeof list; i++)
        n += (size_t)fmt_snprintf(list + n, sizeof list - n, "%s%s", i ? "|" : "", choices[i]);
    int count = 0;
    while (choices[count])
        count++;
    reportf(cl, "cmdline: '%s=%s': expected one of %s; using %s", key, v, list,
            dflt >= 0 && dflt < count ? choices[dflt] : "the default");
    return dflt;
}

unsigned cmdline_check_known(const struct cmdline *cl, const char *const *const *known_lists)
{
    unsigned unknown = 0;
    for (unsigned i = 0; i < cl->count; i++) {
        bool found = false;
        for (unsigned l = 0; known_lists && known_lists[l] && !found; l++)
            for (unsigned k = 0; known_lists[l][k] && !found; k++)
                found = strcmp(known_lists[l][k], cl->words[i].key) == 0;
        if (!found) {
            unknown++;
            reportf(cl, "cmdline: word '%s=%s' ignored: unknown key '%s'", cl->words[i].key, cl->words[i].value,
                    cl->words[i].key);
        }
    }
    return unknown;
}
