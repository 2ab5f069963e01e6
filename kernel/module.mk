# kernel: the machine-independent core (guest). Its portable part also runs hosted:
# UNIT: what the pure unit tests link; beside the hosted platform (test/hosted, which provides
# threads, memory and logging) status, fmt, the DPC queues, the command line and the device registry.
MODULES += kernel
SRCS.kernel := $(wildcard kernel/*.c)
UNIT.kernel := kernel/status.c kernel/fmt.c kernel/cmdline.c kernel/pmm.c kernel/heap.c kernel/memlog.c kernel/acpi.c
HSRCS.kernel := kernel/status.c kernel/fmt.c kernel/dpc.c kernel/cmdline.c kernel/devreg.c kernel/netdev.c kernel/blkdev.c
