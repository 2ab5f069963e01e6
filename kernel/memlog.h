/*
 * memlog: the in-memory log, a byte ring that keeps the newest output. Unlocked and portable; the
 * kernel's log module serialises writers. Readers address bytes by their absolute position in the
 * stream (0 = the first byte ever written); positions older than the ring are gone.
 */
#ifndef KERNEL_MEMLOG_H
#define KERNEL_MEMLOG_H

#include <stddef.h>
#include <stdint.h>

struct memlog {
    char *buf;
    size_t size;     /* power of two */
    uint64_t head;   /* bytes ever written */
};

void memlog_init(struct memlog *m, char *buf, size_t size_pow2);
void memlog_write(struct memlog *m, const char *s, size_t n);
/* Oldest position still held. */
uint64_t memlog_oldest(const struct memlog *m);
/* Copies up to n bytes starting at *pos (moved up to the oldest held byte if it was older) and
 * advances *pos; returns bytes copied. */
size_t memlog_read(const struct memlog *m, uint64_t *pos, char *out, size_t n);

#endif
