#!/bin/sh
# Guest-side instructions per echoed 64-byte UDP datagram through the whole hosted network path
# (make bench-netsys): the bench program runs its first case (1 queue) under callgrind with
# collection only inside kmcl's channel DPC, i.e. everything the guest's queue does per interrupt:
# kmcl's reader, netvsc (NVSP/RNDIS checks, transfer-page completion), the IPv4 stack and the echo,
# the transmit (send-buffer section, NVSP message, ring write), the completions of earlier
# transmits, and the in-process hypercalls of its signals. Valgrind runs the threads one at a time,
# so batches are smaller than at full speed: an upper bound for the per-packet cost.
set -eu
exe=$1
count=${2:-5000}
warmup=2000 # the bench's warm-up echoes before each case (test/system/test_netvsc.c)
out=$(mktemp)
log=$(NETSYS_BENCH=1 NETSYS_CASE=0 NETSYS_COUNT="$count" valgrind --tool=callgrind --callgrind-out-file="$out" \
    --toggle-collect=channel_dpc "$exe" 2>&1)
collected=$(printf '%s\n' "$log" | sed -n 's/.*Collected : \([0-9]*\).*/\1/p' | tail -1)
rm -f "$out"
if [ -z "$collected" ]; then
    printf '%s\n' "$log" | tail -20
    echo "netsys callgrind: no instruction count (valgrind failed?)"
    exit 1
fi
echoes=$((count + warmup))
echo "netsys callgrind: 64-byte payload, 1 queue: $collected instructions in the guest's channel DPC for $echoes echoes"
echo "netsys callgrind: $((collected / echoes)) instructions per echoed datagram (guest side; method above)"
