# hv: the Hyper-V platform layer (guest): discovery, hypercalls, SynIC, reference time, synthetic timers,
# the two bindings. Hosted, the test platform (test/hosted) is the binding and the clock.
MODULES += hv
SRCS.hv := $(wildcard hv/*.c)
HSRCS.hv := hv/hv.c hv/synic.c hv/reftime.c hv/stimer.c
DEPS.hv := hv/proto kernel
