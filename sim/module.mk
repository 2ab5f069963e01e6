# sim: hvsim, the simulated Hyper-V root partition (host): SynIC, hypercalls, clocks, the VMBus server
# and its devices. The program adds sim/hvsim_main.c.
MODULES += sim
SRCS.sim := $(filter-out sim/hvsim_main.c,$(wildcard sim/*.c))
DEPS.sim := sim/vsp sim/netvsp hv/proto hv/vmbus/proto
