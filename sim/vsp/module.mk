# sim/vsp: the glue from hvsim's VMBus server to kmcl's server endpoint, and the test device's VSP (host).
MODULES += sim/vsp
SRCS.sim/vsp := $(wildcard sim/vsp/*.c)
DEPS.sim/vsp := sim/kmcl sim
