/*
 * vmbus_msg: the checks on a VMBus channel message before anyone reads its fields (the guest's
 * receive path and hvsim's server both use them). Pure: no state, no logging.
 */
#include "hv/vmbus/proto/vmbus_proto.h"

/* Every message type this project knows: its name, the smallest well-formed size (the fixed part of
 * the variable GPADL ones) and which side sends it (hyperv-facts.md 3.8/3.9). The guest's dispatch
 * (hv/vmbus/vmbus.c host_msgs[]) and hvsim's server refer to this table and repeat none of it. */
#define HOST true  /* host -> guest */
#define GUEST false /* guest -> host */
static const struct {
    const char *name;
    uint32_t min_size;
    bool from_host;
} msg_info[VMBUS_MSG_COUNT] = {
    [VMBUS_MSG_OFFERCHANNEL] = { "OFFERCHANNEL", sizeof(struct vmbus_msg_offer_channel), HOST },
    [VMBUS_MSG_RESCIND_CHANNELOFFER] = { "RESCIND_CHANNELOFFER", sizeof(struct vmbus_msg_relid), HOST },
    [VMBUS_MSG_REQUESTOFFERS] = { "REQUESTOFFERS", sizeof(struct vmbus_msg_header), GUEST },
    [VMBUS_MSG_ALLOFFERS_DELIVERED] = { "ALLOFFERS_DELIVERED", sizeof(struct vmbus_msg_header), HOST },
    [VMBUS_MSG_OPENCHANNEL] = { "OPENCHANNEL", sizeof(struct vmbus_msg_open_channel), GUEST },
    [VMBUS_MSG_OPENCHANNEL_RESULT] = { "OPENCHANNEL_RESULT", sizeof(struct vmbus_msg_open_result), HOST },
    [VMBUS_MSG_CLOSECHANNEL] = { "CLOSECHANNEL", sizeof(struct vmbus_msg_relid), GUEST },
    [VMBUS_MSG_GPADL_HEADER] = { "GPADL_HEADER", sizeof(struct vmbus_msg_gpadl_header), GUEST },
    [VMBUS_MSG_GPADL_BODY] = { "GPADL_BODY", sizeof(struct vmbus_msg_gpadl_body), GUEST },
    [VMBUS_MSG_GPADL_CREATED] = { "GPADL_CREATED", sizeof(struct vmbus_msg_gpadl_created), HOST },
    [VMBUS_MSG_GPADL_TEARDOWN] = { "GPADL_TEARDOWN", sizeof(struct vmbus_msg_gpadl_teardown), GUEST },
    [VMBUS_MSG_GPADL_TORNDOWN] = { "GPADL_TORNDOWN", sizeof(struct vmbus_msg_gpadl_torndown), HOST },
    [VMBUS_MSG_RELID_RELEASED] = { "RELID_RELEASED", sizeof(struct vmbus_msg_relid), GUEST },
    [VMBUS_MSG_INITIATE_CONTACT] = { "INITIATE_CONTACT", sizeof(struct vmbus_msg_initiate_contact), GUEST },
    [VMBUS_MSG_VERSION_RESPONSE] = { "VERSION_RESPONSE", sizeof(struct vmbus_msg_version_response), HOST },
    [VMBUS_MSG_UNLOAD] = { "UNLOAD", sizeof(struct vmbus_msg_header), GUEST },
    [VMBUS_MSG_UNLOAD_RESPONSE] = { "UNLOAD_RESPONSE", sizeof(struct vmbus_msg_header), HOST },
    [VMBUS_MSG_MODIFYCHANNEL] = { "MODIFYCHANNEL", sizeof(struct vmbus_msg_modify_channel), GUEST },
    [VMBUS_MSG_MODIFYCHANNEL_RESPONSE] = { "MODIFYCHANNEL_RESPONSE", sizeof(struct vmbus_msg_modify_channel_response),
                                           HOST },
};
#undef HOST
#undef GUEST

uint32_t vmbus_msg_min_size(uint32_t type)
{
    return type < VMBUS_MSG_COUNT ? msg_info[type].min_size : 0;
}

const char *vmbus_msg_name(uint32_t type)
{
    return type < VMBUS_MSG_COUNT && msg_info[type].name ? msg_info[type].name : "unknown";
}

bool vmbus_msg_from_host(uint32_t type)
{
    return type < VMBUS_MSG_COUNT && msg_info[type].from_host;
}

bool vmbus_gpadl_header_pages(const struct vmbus_msg_gpadl_header *h, uint32_t size, uint32_t *pages,
                              uint32_t *pfns_here)
{
    if (size < sizeof *h || size > HV_MESSAGE_PAYLOAD_MAX || h->range_count != 1 || h->range_buflen < 16 ||
        (h->range_buflen - 8) % 8 != 0 || h->byte_offset >= 4096)
        return false;
    uint32_t n = (h->range_buflen - 8u) / 8u;
    uint64_t span = (uint64_t)h->byte_offset + h->byte_count;
    if (n == 0 || n > VMBUS_GPADL_MAX_PAGES || h->byte_count == 0 || span > (uint64_t)n * 4096 ||
        span <= (uint64_t)(n - 1) * 4096)
        return false;
    uint32_t here = (size - (uint32_t)sizeof *h) / 8u;
    if (here > n)
        here = n; /* trailing bytes past the last PFN are padding */
    *pages = n;
    *pfns_here = here;
    return true;
}

const char *vmbus_msg_check(const void *msg, uint32_t size, uint32_t *type_out)
{
    if (size < sizeof(struct vmbus_msg_header))
        return "shorter than the 8-byte channel message header";
    if (size > HV_MESSAGE_PAYLOAD_MAX)
        return "longer than 240 bytes";
    uint32_t type;
    __builtin_memcpy(&type, msg, sizeof type);
    *type_out = type;
    uint32_t min = vmbus_msg_min_size(type);
    if (!min)
        return "unknown message type";
    if (size < min)
        return "too short for its type";
    if (type == VMBUS_MSG_GPADL_HEADER) {
        uint32_t pages, here;
        if (!vmbus_gpadl_header_pages(msg, size, &pages, &here))
            return "GPADL_HEADER range fields inconsistent";
    }
    if (type == VMBUS_MSG_GPADL_BODY && (size - sizeof(struct vmbus_msg_gpadl_body)) % 8 != 0)
        return "GPADL_BODY not a whole number of PFNs";
    return NULL;
}

const char *vmbus_offer_check(const struct vmbus_msg_offer_channel *m)
{
    if (m->child_relid == 0 || m->child_relid > VMBUS_MAX_RELID)
        return "relid out of range 1..2047";
    return NULL;
}
