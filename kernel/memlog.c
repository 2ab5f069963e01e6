#include "kernel/memlog.h"

void memlog_init(struct memlog *m, char *buf, size_t size_pow2)
{
    m->buf = buf;
    m->size = size_pow2;
    m->head = 0;
}

void memlog_write(struct memlog *m, const char *s, size_t n)
{
    if (n > m->size) { /* only the tail survives anyway */
        m->head += n - m->size;
        s += n - m->size;
        n = m->size;
    }
    for (size_t i = 0; i < n; i++)
        m->buf[(m->head + i) & (m->size - 1)] = s[i];
    m->head += n;
}

uint64_t memlog_oldest(const struct memlog *m)
{
    return m->head > m->size ? m->head - m->size : 0;
}

size_t memlog_read(const struct memlog *m, uint64_t *pos, char *out, size_t n)
{
    uint64_t oldest = memlog_oldest(m);
    if (*pos < oldest)
        *pos = oldest;
    size_t copied = 0;
    while (copied < n && *pos < m->head) {
        out[copied++] = m->buf[*pos & (m->size - 1)];
        (*pos)++;
    }
    return copied;
}
