# test/dsim: the deterministic simulation platform (tests only): the guest layers and hvsim in one OS
# thread, contexts switched by a seeded scheduler, virtual time (docs/TESTING.md). It replaces
# test/hosted; programs on it are built in the -dsim flavours (tools/hosted.mk).
MODULES += test/dsim
SRCS.test/dsim := test/dsim/dsim.c
DEPS.test/dsim := sim kernel
