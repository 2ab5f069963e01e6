#!/usr/bin/env python3
"""Writes the seeds of test/fuzz/fuzz_nvsp.c and test/fuzz/fuzz_rndis.c (deterministic) into
test/fuzz/corpus/nvsp and test/fuzz/corpus/rndis.

nvsp seeds: a flag byte (bit 0: 0 = to the host, 1 = to the guest; bit 1: apply the Hyper-V
indirection-table fix-up) then one NVSP message, padded as guests (40) and hosts (28/40) pad them.
rndis seeds: a mode byte (0 = one message, 1 = iterate one message per range, 2 = iterate
concatenated PACKETs) then the bytes of the range. Layouts follow drivers/netvsc/proto/PROTOCOL.md."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
TO_HOST, TO_GUEST, FIXUP = 0, 1, 2


def u32(*v):
    return struct.pack("<%dI" % len(v), *v)


def pad(b, n):
    return b + bytes(max(0, n - len(b)))


# ---- NVSP (drivers/netvsc/proto/nvsp_proto.h) ----
V1, V2, V4, V5, V6, V61 = 0x2, 0x30002, 0x40000, 0x50000, 0x60000, 0x60001
nvsp = {
    "init_v61": (TO_HOST, pad(u32(1, V61, V61), 40)),
    "init_v1_natural": (TO_HOST, u32(1, V1, V1)),
    "ndis_config": (TO_HOST, pad(u32(125, 1514, 0) + struct.pack("<Q", 0x0C), 40)),
    "ndis_version": (TO_HOST, pad(u32(100, 6, 30), 40)),
    "send_recv_buf": (TO_HOST, pad(u32(101, 0xE1E10) + struct.pack("<HH", 0xCAFE, 0), 40)),
    "send_recv_buf_10": (TO_HOST, u32(101, 0xE1E10) + struct.pack("<H", 0xCAFE)),
    "send_send_buf": (TO_HOST, pad(u32(104, 0xE1E11) + struct.pack("<HH", 0xFACE, 0), 40)),
    "revoke_recv": (TO_HOST, pad(u32(103) + struct.pack("<H", 0xCAFE), 40)),
    "revoke_send": (TO_HOST, pad(u32(106) + struct.pack("<H", 0xFACE), 40)),
    "rndis_data_section": (TO_HOST, pad(u32(107, 0, 5, 1514), 40)),
    "rndis_ctrl_gpa": (TO_HOST, pad(u32(107, 1, 0xFFFFFFFF, 0), 40)),
    "rndis_ack": (TO_HOST, pad(u32(108, 1), 40)),
    "subch_req": (TO_HOST, pad(u32(133, 1, 7), 40)),
    "switch_dp": (TO_HOST, pad(u32(129, 1), 40)),
    "oid_query_ex": (TO_HOST, pad(u32(131, 0x00120080, 0x00010203), 40)),
    "init_complete": (TO_GUEST, pad(u32(2, 0xFFFFFFFF, 34, 1), 28)),
    "init_complete_none": (TO_GUEST, pad(u32(2, 0xFFFFFFFF, 34, 0), 32)),
    "recv_buf_complete": (TO_GUEST, u32(102, 1, 1, 0, 1806, 9289, 1806 * 9289)),
    "recv_buf_complete_2sect": (TO_GUEST, u32(102, 1, 2, 0, 1806, 100, 180600, 180600, 256, 10, 183160)),
    "recv_buf_complete_fail": (TO_GUEST, pad(u32(102, 2, 0), 28)),
    "send_buf_complete": (TO_GUEST, pad(u32(105, 1, 6144), 40)),
    "rndis_rx": (TO_GUEST, pad(u32(107, 0, 0xFFFFFFFF, 0), 28)),
    "rndis_tx_complete": (TO_GUEST, pad(u32(108, 1), 40)),
    "vf_assoc": (TO_GUEST, pad(u32(128, 1, 0x1234), 28)),
    "switch_dp_host": (TO_GUEST, pad(u32(129, 0), 28)),
    "oid_query_ex_complete": (TO_GUEST, pad(u32(132, 0xC00000BB, 0), 28)),
    "subch_complete": (TO_GUEST, pad(u32(133, 1, 3), 40)),
    "send_table_openvmm": (TO_GUEST, u32(134, 16, 12) + u32(*[i % 4 for i in range(16)])),
    "send_table_hyperv": (TO_GUEST | FIXUP, pad(u32(134, 16, 28), 40) + u32(*[i % 2 for i in range(16)])),
    "send_table_128": (TO_GUEST, u32(134, 128, 12) + u32(*range(128))),
    "bad_short": (TO_HOST, u32(1)[:3]),
    "bad_unknown": (TO_HOST, pad(u32(109), 40)),
    "bad_direction": (TO_GUEST, pad(u32(1, V5, V5), 40)),
    "bad_sections": (TO_GUEST, u32(102, 1, 5) + bytes(80)),
    "bad_table_offset": (TO_GUEST, u32(134, 16, 8) + bytes(64)),
}

# ---- RNDIS (drivers/netvsc/proto/rndis_proto.h) ----
def rndis(t, body):
    return u32(t, 8 + len(body)) + body


def ppi(t, v):
    return u32(16, t, 12, v)


def packet(frame, ppis=b"", msg_len=None, data_off=None):
    hdr_len = 44 + len(ppis)
    data_off = hdr_len - 8 if data_off is None else data_off
    body_len = hdr_len + len(frame)
    msg_len = body_len if msg_len is None else msg_len
    h = u32(1, msg_len, data_off, len(frame), 0, 0, 0, 36 if ppis else 0, len(ppis), 0, 0)
    return h + ppis + frame


frame = bytes(range(60))
openvmm_rx = bytearray(1806)  # the whole sub-allocation, msg_len = 1806, frame at 256
openvmm_rx[0:44] = u32(1, 1806, 248, 98, 0, 0, 0, 36, 32, 0, 0)
openvmm_rx[44:76] = ppi(0, 0x28) + ppi(6, (5 << 4) | 1)
openvmm_rx[256:256 + 98] = bytes([0x42]) * 98

def packed_batch(n):
    out = b""
    for i in range(n):
        p = packet(bytes([i + 1]) * (60 + i))
        ln = (len(p) + 7) & ~7
        p = p[:4] + u32(ln) + p[8:]
        out += pad(p, ln)
    return out


init_cmplt = rndis(0x80000002, u32(1, 0, 1, 0, 1, 0, 8, 0xEFFFFFFF, 3, 0, 0))
rndis_seeds = {
    "init": (0, rndis(2, u32(1, 1, 0, 0x4000))),
    "halt": (0, rndis(3, u32(2))),
    "query_mac": (0, rndis(4, u32(3, 0x01010101, 0, 20, 0))),
    "query_rss_caps": (0, rndis(4, u32(4, 0x00010203, 18, 20, 0) + bytes([0x88, 2, 18, 0]) + bytes(14))),
    "set_filter": (0, rndis(5, u32(5, 0x0001010E, 4, 20, 0) + u32(0x9))),
    "reset": (0, rndis(6, u32(0))),
    "keepalive": (0, rndis(8, u32(6))),
    "keepalive_cmplt": (0, rndis(0x80000008, u32(6, 0))),
    "init_cmplt": (1, init_cmplt + bytes(100)),
    "init_cmplt_48": (0, u32(0x80000002, 48) + init_cmplt[8:48]),
    "query_cmplt_mac": (1, rndis(0x80000004, u32(3, 0, 6, 16) + bytes([0, 0x15, 0x5d, 1, 2, 3])) + bytes(30)),
    "query_cmplt_fail": (0, rndis(0x80000004, u32(3, 0xC00000BB, 0, 16))),
    "set_cmplt": (1, rndis(0x80000005, u32(5, 0))),
    "reset_cmplt": (0, rndis(0x80000006, u32(0, 1))),
    "status_connect": (1, rndis(7, u32(0x4001000B, 0, 0))),
    "status_netchange": (0, rndis(7, u32(0x40010018, 4, 12) + u32(2))),
    "packet_tx": (0, packet(frame)),
    "packet_tx_ppi": (2, packet(frame, ppi(0, 0x15) + ppi(6, 42 << 4))),
    "packet_rx_all_ppi": (1, packet(frame, ppi(0, 0x28) + ppi(6, 7 << 4) + ppi(8, 0xDEADBEEF) + ppi(9, 0x201) + ppi(2, 0x12345))),
    "packet_rx_openvmm": (1, bytes(openvmm_rx)),
    "packet_batch": (2, packed_batch(4)),
    "packet_unaligned": (0, u32(1, 45 + 59, 37, 59, 0, 0, 0, 0, 0, 0, 0) + bytes(1) + frame[:59]),
    "ctrl_then_pad": (2, rndis(4, u32(7, 0x00010107, 0, 20, 0)) + bytes(40)),
    "bad_ppi_size0": (0, u32(1, 44 + 16 + 20, 36 + 16, 20, 0, 0, 0, 36, 16, 0, 0) + u32(0, 0, 0, 0) + bytes(20)),
    "bad_trailing": (2, packet(frame) + bytes(5)),
    "bad_msg_len": (0, u32(1, 0xFFFFFFFF) + bytes(36)),
}

written = 0
for sub, seeds in (("nvsp", nvsp), ("rndis", rndis_seeds)):
    out = os.path.join(HERE, "corpus", sub)
    os.makedirs(out, exist_ok=True)
    for name, (flag, data) in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(bytes([flag]) + data)
        written += 1
print(f"wrote {written} seeds to {os.path.join(HERE, 'corpus')}/{{nvsp,rndis}}")
