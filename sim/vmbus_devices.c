/*
 * vmbus_devices: hvsim's standard device set (sim/vmbus_server.h hvsim_vmbus_default_devices).
 *
 * Offer fields as OpenVMM's host offers them (microsoft/openvmm vmbus_server channels.rs, the
 * ChannelType -> offer flags mapping): device channels (NIC, SCSI, the test device) carry no offer
 * flags; pipe channels (the integration services: hyperv_ic ShutdownIc, KvpIc, TimesyncIc, ...) set
 * ENUMERATE_DEVICE_INTERFACE | NAMED_PIPE_MODE with pipe type MESSAGE (VMBUS_PIPE_TYPE_MESSAGE = 4,
 * linux:include/linux/hyperv.h) in the first u32 of user_defined. Instance GUIDs are this project's,
 * fixed so that a guest sees the same devices on every boot.
 *
 * The test device is served by sim/vsp/vsp_test.c (echo, completions, SEND_N, GPA-direct checksums;
 * a guest signal that finds nothing to do is still answered by a signal, as apps/vmbusprobe
 * expects); the others have no VSP yet.
 */
#include "sim/vmbus_internal.h"
#include "sim/vsp/vsp_test.h"

#define VMBUS_PIPE_TYPE_MESSAGE 4u

/* 68767369-6d00-4000-8000-0000000000NN ("hvsim"). */
#define HVSIM_INSTANCE(nn) VMBUS_GUID_INIT(0x68767369, 0x6d00, 0x4000, 0x80, 0x00, 0, 0, 0, 0, 0, (nn))

#define IC_DEVICE(label, guid, nn)                                                                             \
    {                                                                                                          \
        .name = (label), .type = guid, .instance = HVSIM_INSTANCE(nn),                                        \
        .flags = VMBUS_OFFER_ENUMERATE_DEVICE_INTERFACE | VMBUS_OFFER_NAMED_PIPE_MODE,                          \
        .user_defined = { VMBUS_PIPE_TYPE_MESSAGE },                                                            \
    }

const struct hvsim_vmbus_device hvsim_vmbus_default_devices[] = {
    { .name = "netvsc", .type = VMBUS_GUID_NIC, .instance = HVSIM_INSTANCE(0x01), .monitored = true },
    { .name = "storvsc", .type = VMBUS_GUID_SCSI, .instance = HVSIM_INSTANCE(0x02), .monitored = true },
    IC_DEVICE("heartbeat", VMBUS_GUID_HEARTBEAT, 0x03),
    IC_DEVICE("shutdown", VMBUS_GUID_SHUTDOWN, 0x04),
    IC_DEVICE("timesync", VMBUS_GUID_TIMESYNC, 0x05),
    IC_DEVICE("kvp", VMBUS_GUID_KVP, 0x06),
    { .name = "hvsim-test", .type = VMBUS_GUID_HVSIM_TEST, .instance = HVSIM_INSTANCE(0x07), .monitored = true,
      .sub_channels = 2, .on_open = hvsim_vsp_test_on_open, .on_close = hvsim_vsp_test_on_close,
      .on_signal = hvsim_vsp_test_on_signal }, /* ctx NULL: the default instance of sim/vsp/vsp_test.h */
};

const uint32_t hvsim_vmbus_default_device_count =
    sizeof hvsim_vmbus_default_devices / sizeof hvsim_vmbus_default_devices[0];
