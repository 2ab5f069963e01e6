#include "kernel/heap.h"

#include "kernel/string.h"

#define PAGE 4096u
#define MAGIC_LIVE 0x4c495645u /* "LIVE" */
#define MAGIC_FREE 0x46524545u /* "FREE" */
#define LARGE_CLASS 0xffu
#define POISON 0xdf

struct heap_header {
    uint32_t magic;
    uint8_t cls;      /* size class, or LARGE_CLASS */
    uint8_t pad[3];
    uint64_t pages;   /* LARGE_CLASS: pages of the whole allocation */
};
_Static_assert(sizeof(struct heap_header) == HEAP_HEADER, "heap header keeps payload 16-byte aligned");

struct heap_block {
    struct heap_header hdr;
    struct heap_block *next; /* in the free list; overlaps the payload */
};

static size_t class_size(unsigned cls)
{
    return (size_t)16 << cls;
}

void heap_init(struct heap *h, void *(*page_alloc)(void *, size_t), void (*page_free)(void *, void *, size_t),
               void (*corrupt)(void *, const char *, const void *), void *ctx)
{
    memset(h, 0, sizeof *h);
    h->page_alloc = page_alloc;
    h->page_free = page_free;
    h->corrupt = corrupt;
    h->ctx = ctx;
}

static int refill(struct heap *h, unsigned cls)
{
    unsigned char *page = h->page_alloc(h->ctx, 1);
    if (!page)
        return 0;
    h->pages_held++;
    size_t stride = HEAP_HEADER + class_size(cls);
    for (size_t off = 0; off + stride <= PAGE; off += stride) {
        struct heap_block *b = (struct heap_block *)(page + off);
        b->hdr.magic = MAGIC_FREE;
        b->hdr.cls = (uint8_t)cls;
        b->hdr.pages = 0;
        b->next = h->free_list[cls];
        h->free_list[cls] = b;
    }
    return 1;
}

void *heap_alloc(struct heap *h, size_t size)
{
    if (size == 0)
        size = 1;
    for (unsigned cls = 0; cls < HEAP_CLASSES; cls++) {
        if (size > class_size(cls))
            continue;
        if (!h->free_list[cls] && !refill(h, cls))
            return NULL;
        struct heap_block *b = h->free_list[cls];
        if (b->hdr.magic != MAGIC_FREE || b->hdr.cls != cls) {
            h->corrupt(h->ctx, "free list entry damaged (use after free?)", b);
            return NULL;
        }
        h->free_list[cls] = b->next;
        b->hdr.magic = MAGIC_LIVE;
        h->bytes_in_use += class_size(cls);
        h->live_blocks++;
        return (unsigned char *)b + HEAP_HEADER;
    }
    if (size > SIZE_MAX - HEAP_HEADER - PAGE)
        return NULL;
    size_t pages = (size + HEAP_HEADER + PAGE - 1) / PAGE;
    struct heap_header *hdr = h->page_alloc(h->ctx, pages);
    if (!hdr)
        return NULL;
    h->pages_held += pages;
    hdr->magic = MAGIC_LIVE;
    hdr->cls = LARGE_CLASS;
    hdr->pages = pages;
    h->bytes_in_use += pages * PAGE - HEAP_HEADER;
    h->live_blocks++;
    return (unsigned char *)hdr + HEAP_HEADER;
}

static struct heap_header *header_of(const struct heap *h, const void *ptr)
{
    if (((uintptr_t)ptr & 15) != 0) {
        h->corrupt(h->ctx, "pointer not from the heap (misaligned)", ptr);
        return NULL;
    }
    struct heap_header *hdr = (struct heap_header *)((uintptr_t)ptr - HEAP_HEADER);
    if (hdr->magic == MAGIC_FREE) {
        h->corrupt(h->ctx, "double free", ptr);
        return NULL;
    }
    if (hdr->magic != MAGIC_LIVE || (hdr->cls >= HEAP_CLASSES && hdr->cls != LARGE_CLASS)) {
        h->corrupt(h->ctx, "pointer not from the heap (bad header)", ptr);
        return NULL;
    }
    return hdr;
}

size_t heap_block_size(const struct heap *h, const void *ptr)
{
    const struct heap_header *hdr = header_of(h, ptr);
    if (!hdr)
        return 0;
    return hdr->cls == LARGE_CLASS ? hdr->pages * PAGE - HEAP_HEADER : class_size(hdr->cls);
}

void heap_free(struct heap *h, void *ptr)
{
    if (!ptr)
        return;
    struct heap_header *hdr = header_of(h, ptr);
    if (!hdr)
        return;
    h->live_blocks--;
    if (hdr->cls == LARGE_CLASS) {
        size_t pages = hdr->pages;
        h->bytes_in_use -= pages * PAGE - HEAP_HEADER;
        hdr->magic = MAGIC_FREE;
        h->pages_held -= pages;
        h->page_free(h->ctx, hdr, pages);
        return;
    }
    unsigned cls = hdr->cls;
    h->bytes_in_use -= class_size(cls);
    struct heap_block *b = (struct heap_block *)hdr;
    memset((unsigned char *)ptr, POISON, class_size(cls));
    b->hdr.magic = MAGIC_FREE;
    b->next = h->free_list[cls];
    h->free_list[cls] = b;
}
