# kmcl: the KMCL client endpoint (guest), on VMBus channels.
MODULES += kmcl
SRCS.kmcl := $(wildcard kmcl/*.c)
DEPS.kmcl := kmcl/core hv/vmbus
