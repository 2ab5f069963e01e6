/*
 * heap: a small-object allocator (size classes 16..2048 bytes carved from pages) with large
 * allocations going straight to whole pages. Every block carries a 16-byte header so heap_free()
 * needs no size and catches double frees and foreign pointers (it panics through the report hook:
 * heap corruption is never survivable).
 *
 * Unlocked and portable: the kernel wrapper (kernel/mm.h: kmalloc/kfree) serialises; the hosted tests
 * use it directly. Pages come from the caller's callbacks. Blocks are 16-byte aligned.
 */
#ifndef KERNEL_HEAP_H
#define KERNEL_HEAP_H

#include <stddef.h>
#include <stdint.h>

#define HEAP_CLASSES 8 /* 16, 32, ... 2048 bytes of payload */
#define HEAP_HEADER 16

struct heap_block;

struct heap {
    void *(*page_alloc)(void *ctx, size_t pages); /* page-aligned, or NULL */
    void (*page_free)(void *ctx, void *p, size_t pages);
    void (*corrupt)(void *ctx, const char *what, const void *ptr); /* must not return in the kernel */
    void *ctx;
    struct heap_block *free_list[HEAP_CLASSES];
    uint64_t bytes_in_use;   /* payload bytes of live allocations (rounded to their class) */
    uint64_t live_blocks;
    uint64_t pages_held;     /* pages obtained from page_alloc and not returned */
};

void heap_init(struct heap *h, void *(*page_alloc)(void *, size_t), void (*page_free)(void *, void *, size_t),
               void (*corrupt)(void *, const char *, const void *), void *ctx);
void *heap_alloc(struct heap *h, size_t size);
void heap_free(struct heap *h, void *ptr);
/* The usable size of a live block. */
size_t heap_block_size(const struct heap *h, const void *ptr);

#endif
