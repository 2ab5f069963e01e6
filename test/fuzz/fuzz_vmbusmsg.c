/*
 * libFuzzer harness for the VMBus channel-message checks both sides run before reading a field
 * (hv/vmbus/proto/vmbus_msg.c): vmbus_msg_check, vmbus_gpadl_header_pages and vmbus_offer_check.
 *
 * The input is a sequence of messages, each a length byte then that many bytes (as they would sit
 * in a SynIC slot's payload, up to 240). Checked for every message: a well-formed verdict implies a
 * known type and at least its minimum size; a GPADL_HEADER that passes describes 1..VMBUS_GPADL_MAX_PAGES (8190) pages
 * whose PFNs in the header lie inside the message, and whose byte range fits the page count; every
 * field the receivers read of an accepted message is read (under ASan) from inside the copy.
 *
 * Seeds: test/fuzz/corpus/vmbusmsg (written by test/fuzz/gen_vmbusmsg_seeds.py).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hv/vmbus/proto/vmbus_proto.h"

#define CHECK(cond)                                                                                            \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            fprintf(stderr, "fuzz_vmbusmsg: invariant failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);      \
            abort();                                                                                           \
        }                                                                                                      \
    } while (0)

static volatile uint64_t sink; /* keeps the field reads */

static void read_fields(uint32_t type, const uint8_t *m, uint32_t size)
{
    switch (type) {
    case VMBUS_MSG_OFFERCHANNEL: {
        const struct vmbus_msg_offer_channel *o = (const void *)m;
        const char *why = vmbus_offer_check(o);
        if (!why)
            CHECK(o->child_relid >= 1 && o->child_relid <= VMBUS_MAX_RELID);
        sink += o->connection_id + o->monitor_id + o->offer.sub_channel_index + o->offer.chn_flags;
        break;
    }
    case VMBUS_MSG_GPADL_HEADER: {
        const struct vmbus_msg_gpadl_header *h = (const void *)m;
        uint32_t pages = 0, here = 0;
        CHECK(vmbus_gpadl_header_pages(h, size, &pages, &here));
        CHECK(pages >= 1 && pages <= VMBUS_GPADL_MAX_PAGES && here <= pages);
        CHECK(sizeof *h + 8ull * here <= size);
        CHECK((uint64_t)h->byte_offset + h->byte_count <= (uint64_t)pages * 4096);
        for (uint32_t i = 0; i < here; i++) {
            uint64_t pfn;
            memcpy(&pfn, m + sizeof *h + 8 * i, 8);
            sink += pfn;
        }
        break;
    }
    case VMBUS_MSG_GPADL_BODY: {
        const struct vmbus_msg_gpadl_body *b = (const void *)m;
        CHECK((size - sizeof *b) % 8 == 0);
        for (uint32_t i = 0; i < (size - sizeof *b) / 8; i++) {
            uint64_t pfn;
            memcpy(&pfn, m + sizeof *b + 8 * i, 8);
            sink += pfn;
        }
        break;
    }
    case VMBUS_MSG_VERSION_RESPONSE:
        sink += ((const struct vmbus_msg_version_response *)m)->msg_conn_id;
        if (size >= sizeof(struct vmbus_msg_version_response2))
            sink += ((const struct vmbus_msg_version_response2 *)m)->supported_features;
        break;
    case VMBUS_MSG_OPENCHANNEL:
        sink += ((const struct vmbus_msg_open_channel *)m)->user_data[VMBUS_OFFER_USER_DEFINED - 1];
        break;
    default: {
        /* The fixed part of every other type. */
        uint32_t min = vmbus_msg_min_size(type);
        sink += m[min - 1];
        break;
    }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t at = 0;
    while (at < size) {
        uint32_t len = data[at++];
        if (len > size - at)
            len = (uint32_t)(size - at);
        /* Exactly len bytes on the heap, so ASan sees any read past the message. */
        uint8_t *m = malloc(len ? len : 1);
        memcpy(m, data + at, len);
        at += len;
        uint32_t type = 0;
        const char *why = vmbus_msg_check(m, len, &type);
        if (!why) {
            CHECK(len >= sizeof(struct vmbus_msg_header) && len <= HV_MESSAGE_PAYLOAD_MAX);
            CHECK(vmbus_msg_min_size(type) != 0 && len >= vmbus_msg_min_size(type));
            CHECK(strcmp(vmbus_msg_name(type), "unknown") != 0);
            read_fields(type, m, len);
        } else {
            CHECK(why[0] != 0);
        }
        free(m);
    }
    return 0;
}
