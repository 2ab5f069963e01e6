# kernel: the machine-independent core (guest). Its portable part also runs hosted:
# UNIT: what the pure unit tests link; beside the hosted platform (test/hosted, which provides
# threads, memory and logging) only status, fmt and the DPC queues.
MODULES += kernel
SRCS.kernel := $(wildcard kernel/*.c)
UNIT.kernel := kernel/status.c kernel/fmt.c kernel/cmdline.c kernel/pmm.c kernel/heap.c kernel/memlog.c kernel/acpi.c
HSRCS.kernel := kernel/status.c kernel/fmt.c kernel/dpc.c
