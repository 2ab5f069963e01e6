# kmcl/core: rings, packets, transactions: the portable engine both endpoints link (guest and host).
MODULES += kmcl/core
SRCS.kmcl/core := $(wildcard kmcl/core/*.c)
