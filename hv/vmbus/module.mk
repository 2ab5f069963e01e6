# hv/vmbus: the guest side of VMBus (connection, offers, driver registry, GPADLs, channels).
MODULES += hv/vmbus
SRCS.hv/vmbus := $(wildcard hv/vmbus/*.c)
DEPS.hv/vmbus := hv hv/vmbus/proto
