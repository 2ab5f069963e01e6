# drivers/netvsc: the synthetic NIC driver (guest), a kmcl client bound by the VMBus registry.
MODULES += drivers/netvsc
SRCS.drivers/netvsc := $(wildcard drivers/netvsc/*.c)
DEPS.drivers/netvsc := drivers/netvsc/proto kmcl
