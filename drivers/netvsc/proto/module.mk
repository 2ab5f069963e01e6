# drivers/netvsc/proto: NVSP and RNDIS wire formats, checkers and builders (guest and host).
MODULES += drivers/netvsc/proto
SRCS.drivers/netvsc/proto := $(wildcard drivers/netvsc/proto/*.c)
