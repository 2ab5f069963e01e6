# hv/vmbus/proto: VMBus wire formats and pure message checks (guest and host).
MODULES += hv/vmbus/proto
SRCS.hv/vmbus/proto := $(wildcard hv/vmbus/proto/*.c)
DEPS.hv/vmbus/proto := hv/proto
