# hv/proto: TLFS numbers and the hvsim doorbell protocol (wire formats; guest and host). Headers only.
MODULES += hv/proto
SRCS.hv/proto :=
