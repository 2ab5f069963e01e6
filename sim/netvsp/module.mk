# sim/netvsp: hvsim's netvsp and its user-mode gateway (host).
MODULES += sim/netvsp
SRCS.sim/netvsp := $(wildcard sim/netvsp/*.c)
DEPS.sim/netvsp := sim/vsp drivers/netvsc/proto
