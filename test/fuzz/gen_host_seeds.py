#!/usr/bin/env python3
"""Seeds for fuzz_host (test/fuzz/fuzz_host.c): host scripts after the system tests' scenarios.

An input is: 8 bytes of schedule seed, 1 machine byte (bit 0: two VPs, bits 1-2: preemption, bit 3: two
NIC queues, bits 4-5: VMBus version, bit 6: a NIC, bit 7: a sub-channel on the test device), then
3-byte actions {op, a, b}; op % 16:
  0,1,2 wait   3 answer pending request a (status b)   4 replay answer a   5 forged offer relid a
  6 forged rescind   7 real rescind   8 stray signal (with a NIC and b bit 7: a NIC action, a % 4:
  0 frame, 1 raw RNDIS bytes from the script, 2 link, 3 frame of any length)   9 completion for id (b&3: 0 any number, 1 an id seen, 2/3 a guess: KNOWN_BUGS)
  10 read a packets (b: answer mode)   11 data packet   12 move a ring index   13 signal
  14 hot-add   15 stop reading for a while
After the script the host reads and answers everything until the guest's workload ends.
Deterministic: the same files every run. Writes test/fuzz/corpus/host/.
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "host")

WAIT, ANSWER, REPLAY, OFFER, FRESCIND, RESCIND, STRAY, COMPLETE, READ, DATA, INDEX, SIGNAL, HOTADD, STOP = (
    0, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)


def seed(n, machine, actions):
    return struct.pack("<QB", n, machine) + b"".join(bytes([op, a & 255, b & 255]) for op, a, b in actions)


def serve(rounds, mode=1):
    """A well-behaved host: reads and answers everything, with time in between."""
    return [(WAIT, 20, 0), (READ, 31, mode)] * rounds


SEEDS = {
    # The workload against a host that answers in order (test_kmcl's echo and completions).
    "serve-in-order": seed(1, 0x00, serve(12)),
    "serve-two-vps": seed(2, 0x03, serve(12)),
    "serve-v50-subchannel": seed(3, 0x91, serve(10)),
    # Answers twice (a duplicate completion for every request).
    "serve-twice": seed(4, 0x02, serve(10, mode=3)),
    # The host reads but keeps the ids, then completes them in another order, some twice.
    "late-completions": seed(5, 0x00, [(WAIT, 30, 0), (READ, 31, 0), (WAIT, 10, 0)] +
                             [(COMPLETE, k, 5) for k in (3, 1, 2, 0, 2, 5, 4)] + serve(4)),
    # Completions for ids the guest never used, and for small ids it will use next (test_kmcl's
    # corrupt-ring case, and issue 13 item 1: an id still on the send backlog).
    "unknown-ids": seed(6, 0x00, [(WAIT, 10, 0)] + [(COMPLETE, k, 4) for k in range(1, 9)] + serve(4)),
    # A host that stops reading: the guest's ring fills and its sends queue (test_kmcl send backlog).
    "stop-reading": seed(7, 0x00, [(STOP, 255, 0)] * 6 + [(DATA, 8, 1)] * 6 + serve(6)),
    # Data packets that ask for completions, and signals with nothing to read.
    "host-data": seed(8, 0x01, [(DATA, k, k | 1) for k in range(1, 20)] + [(SIGNAL, 0, 0)] * 3 + serve(4)),
    # Ring indices moved (test_kmcl corrupt ring): write index, read index, mask, pending size.
    "move-indices": seed(9, 0x00, serve(2) + [(INDEX, 0x7f, 0), (WAIT, 5, 0), (INDEX, 0x11, 1), (INDEX, 1, 2),
                                               (INDEX, 0xff, 3)] + serve(3)),
    # VMBus answers forged for pending requests, in any order, with failure statuses, and replays
    # of earlier answers (test_vmbus hazards: unasked and duplicate responses).
    "forged-answers": seed(10, 0x00, [(ANSWER, k, s) for k, s in ((0, 0), (1, 0), (0, 250), (2, 0), (1, 201))] +
                           [(WAIT, 3, 0), (REPLAY, 0, 0), (REPLAY, 1, 0), (ANSWER, 3, 0)] + serve(6)),
    "forged-answers-v40": seed(11, 0x30, [(WAIT, 1, 0), (ANSWER, 0, 0)] * 8 + [(REPLAY, k, 0) for k in range(6)] +
                               serve(4)),
    # Offers the server never made (bad relids, sub-channels without primaries), forged rescinds of
    # relids nobody holds, stray signals (test_vmbus bad offers and stray interrupts).
    "forged-offers": seed(12, 0x00, [(OFFER, r, h) for r, h in ((40, 0), (41, 1), (42, 0x12), (43, 0x83), (0, 0))] +
                          [(FRESCIND, 40, 0), (FRESCIND, 30, 0), (STRAY, 5, 0), (STRAY, 0, 0)] + serve(6)),
    # The NIC (test_netvsc): frames, a link flap, raw RNDIS bytes with moved ranges and NVSP types.
    "nic-frames-and-link": seed(14, 0x41, serve(3) + [(STRAY, 0, 0x80 | k) for k in range(1, 40, 3)] +
                                [(STRAY, 2, 0x80), (WAIT, 20, 0), (STRAY, 2, 0x81)] + serve(6)),
    "nic-raw-rndis": seed(15, 0x49, serve(3) + [(STRAY, 1, 0x80 | 0x70 | 2)] + [(1, 0, 0)] * 12 +
                          [(STRAY, 1, 0x80 | 0x40 | 1)] + [(0x10, 0x20, 0x30)] * 8 + serve(6)),
    # Real rescinds and hot-adds through the server (test_vmbus rescind of an offered channel).
    "rescind-and-hot-add": seed(13, 0x01, [(HOTADD, 1, 0), (WAIT, 30, 0), (RESCIND, 2, 0), (HOTADD, 0, 0),
                                            (WAIT, 30, 0), (RESCIND, 3, 0)] + serve(8)),
}


# Reproducers of the bugs issue 13 lists as being fixed: they crash under KNOWN_BUGS=1 until the
# fixes land (and do nothing harmful without it). Not in corpus/host, so that `make test`'s fuzz run
# starts green; docs/TESTING.md says how to replay them.
KNOWN_BUG_SEEDS = {
    # Item 1: the host stops reading, the guest's sends queue on the backlog with transaction ids
    # already assigned, and the host completes those ids (guessed: generation 1, slots 1..64).
    "item1-completion-for-backlogged-id": seed(21, 0x00, [(STOP, 255, 0)] * 4 +
                                               [(COMPLETE, k, 0x06) for k in range(64)] + serve(8)),
}


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
    kb = os.path.join(HERE, "corpus", "host-known-bugs")
    os.makedirs(kb, exist_ok=True)
    for name, data in KNOWN_BUG_SEEDS.items():
        with open(os.path.join(kb, name), "wb") as f:
            f.write(data)
    print(f"{len(SEEDS)} seeds in {OUT}, {len(KNOWN_BUG_SEEDS)} in {kb}")


if __name__ == "__main__":
    main()
