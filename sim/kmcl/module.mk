# sim/kmcl: kmcl's server endpoint (host): KMCL semantics on the VSP side of a channel.
MODULES += sim/kmcl
SRCS.sim/kmcl := $(wildcard sim/kmcl/*.c)
DEPS.sim/kmcl := kmcl/core
