# sim/hvsim.mk: the hvsim program, which QEMU's doorbell socket talks to (sim/README.md).
$(call hosted,$(BUILD)/sim/hvsim,bench,sim/hvsim_main.c,sim)
