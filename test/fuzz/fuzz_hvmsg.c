/*
 * libFuzzer harness for what the host writes into SynIC pages: hv/message.h (the slot check and
 * the timer payload parse) and hv/reftime.h (the reference TSC page reader).
 *
 * The input is a 256-byte message slot followed by a reference TSC page image. Checked: a slot is
 * delivered only with a non-zero type and a payload size within 240, and then every byte the
 * handler may read lies inside the slot; a timer payload parses only from a well-formed timer
 * message and equals its bytes; the TSC page reader returns INVALID exactly for sequence 0 and
 * computes ((tsc * scale) >> 64) + offset otherwise (a page that does not change settles).
 *
 * Seeds: test/fuzz/corpus/hvmsg.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hv/message.h"
#include "hv/reftime.h"
#include "test/fuzz/fuzz_check.h"

static uint64_t fuzz_tsc;

static uint64_t read_fuzz_tsc(void)
{
    return fuzz_tsc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct hv_message slot;
    static struct hv_reference_tsc_page page;
    memset(&slot, 0, sizeof slot);
    memset(&page, 0, sizeof page);
    size_t n = size < sizeof slot ? size : sizeof slot;
    memcpy(&slot, data, n);
    size_t rest = size - n;
    memcpy(&page, data + n, rest < 32 ? rest : 32);
    fuzz_tsc = rest > 40 ? ((const uint64_t *)(const void *)(data + n + 32))[0] : 0x123456789ull;

    enum hv_slot_verdict v = hv_slot_check(slot.header.message_type, slot.header.payload_size);
    if (slot.header.message_type == 0)
        CHECK(v == HV_SLOT_EMPTY);
    else if (slot.header.payload_size > HV_MESSAGE_PAYLOAD_MAX)
        CHECK(v == HV_SLOT_BAD_SIZE);
    else
        CHECK(v == HV_SLOT_DELIVER && offsetof(struct hv_message, payload) + slot.header.payload_size <= sizeof slot);

    struct hv_timer_message_payload p;
    if (hv_timer_message_parse(&slot, &p)) {
        CHECK(slot.header.message_type == HV_MESSAGE_TIMER_EXPIRED);
        CHECK(slot.header.payload_size >= sizeof p && slot.header.payload_size <= HV_MESSAGE_PAYLOAD_MAX);
        CHECK(memcmp(&p, slot.payload, sizeof p) == 0);
    } else {
        CHECK(slot.header.message_type != HV_MESSAGE_TIMER_EXPIRED || slot.header.payload_size < sizeof p ||
              slot.header.payload_size > HV_MESSAGE_PAYLOAD_MAX);
    }

    uint64_t t = 0;
    enum hv_tsc_page_result r = hv_tsc_page_read(&page, read_fuzz_tsc, &t);
    if (page.tsc_sequence == 0) {
        CHECK(r == HV_TSC_PAGE_INVALID);
    } else {
        CHECK(r == HV_TSC_PAGE_OK);
        uint64_t want = (uint64_t)(((unsigned __int128)fuzz_tsc * page.tsc_scale) >> 64) + (uint64_t)page.tsc_offset;
        CHECK(t == want);
    }
    return 0;
}
