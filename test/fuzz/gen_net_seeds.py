#!/usr/bin/env python3
"""Writes the seeds of test/fuzz/fuzz_net.c into test/fuzz/corpus/net (deterministic).

Each seed: a set-up byte (0 DHCP selecting, 1 DHCP requesting, 2 static 10.0.2.15/24, 3 DHCP bound,
4 unconfigured; + 8: every third tx_begin fails, + 16: every third tx_end fails), then records: a frame is an op byte ((flags << 3) | 0; flags: 1 queue 1, 2 repair
checksums, 4 patch the DHCP xid/chaddr, 8 destination = our MAC, 16 = broadcast), a 16-bit
little-endian length and the bytes; 4 = tick (16-bit count of 10 ms), 5 = link (byte), 6 = send,
7 = control (byte)."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus", "net")

OUR_MAC = bytes.fromhex("02155d000001")
PEER_MAC = bytes.fromhex("02155d000002")
SRV_MAC = bytes.fromhex("02155d000004")
BCAST = b"\xff" * 6
OUR_IP = bytes([10, 0, 2, 15])
PEER_IP = bytes([10, 0, 2, 20])
SRV_IP = bytes([10, 0, 2, 3])
GW_IP = bytes([10, 0, 2, 2])
ALL = b"\xff" * 4
ZERO4 = bytes(4)


def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def eth(dst, src, t):
    return dst + src + struct.pack("!H", t)


def ipv4(proto, src, dst, payload, opts=b""):
    hl = 20 + len(opts)
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | hl // 4, 0, hl + len(payload), 0x1234, 0, 64, proto, 0, src, dst) + opts
    h = h[:10] + struct.pack("!H", csum(h)) + h[12:]
    return h + payload


def udp(src, dst, sport, dport, data):
    u = struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data
    ph = src + dst + struct.pack("!BBH", 0, 17, len(u))
    c = csum(ph + u) or 0xFFFF
    return u[:6] + struct.pack("!H", c) + u[8:]


def udp_frame(dst_mac, src_mac, src, dst, sport, dport, data):
    return eth(dst_mac, src_mac, 0x0800) + ipv4(17, src, dst, udp(src, dst, sport, dport, data))


def echo(data, opts=b""):
    m = struct.pack("!BBHHH", 8, 0, 0, 0x77, 1) + data
    m = m[:2] + struct.pack("!H", csum(m)) + m[4:]
    return eth(OUR_MAC, PEER_MAC, 0x0800) + ipv4(1, PEER_IP, OUR_IP, m, opts)


def arp(dst, op, sha, spa, tha, tpa):
    return eth(dst, sha, 0x0806) + struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, op, sha, spa, tha, tpa)


def dhcp(mtype, yiaddr=OUR_IP, lease=600, extra=b"", raw_opts=None):
    m = struct.pack("!BBBBIHH4s4s4s4s16s64s128sI", 2, 1, 6, 0, 0, 0, 0, ZERO4, yiaddr, SRV_IP, ZERO4,
                    OUR_MAC + bytes(10), bytes(64), bytes(128), 0x63825363)
    if raw_opts is None:
        o = bytes([53, 1, mtype, 54, 4]) + SRV_IP + bytes([1, 4, 255, 255, 255, 0, 3, 4]) + GW_IP
        o += bytes([51, 4]) + struct.pack("!I", lease) + bytes([58, 4]) + struct.pack("!I", 100)
        o += bytes([59, 4]) + struct.pack("!I", 200) + extra + bytes([255])
    else:
        o = raw_opts
    return udp_frame(OUR_MAC, SRV_MAC, SRV_IP, OUR_IP, 67, 68, m + o)


def frame(f, flags=0):
    return bytes([(flags << 3) | 0]) + struct.pack("<H", len(f)) + f


def tick(steps):
    return bytes([4]) + struct.pack("<H", steps)


def ctl(what):
    return bytes([7, what])


def link(up):
    return bytes([5, up])


def send(ip, port):
    return bytes([6]) + struct.pack("<HHH", int.from_bytes(ip[:2], "big"), int.from_bytes(ip[2:], "big"), port)


REPAIR_DHCP = 2 | 4

seeds = {
    "static_arp_request": bytes([2]) + frame(arp(BCAST, 1, PEER_MAC, PEER_IP, bytes(6), OUR_IP)),
    "static_arp_reply_send": bytes([2]) + send(PEER_IP, 9) + frame(arp(OUR_MAC, 2, PEER_MAC, PEER_IP, OUR_MAC, OUR_IP))
    + send(PEER_IP, 9) + tick(100),
    "static_icmp_echo": bytes([2]) + frame(echo(b"abcdefghijklmnop")) + frame(echo(b"xyz", b"\x01" * 4), 1),
    "static_udp_echo": bytes([2]) + frame(udp_frame(OUR_MAC, PEER_MAC, PEER_IP, OUR_IP, 5000, 7, b"hello world")),
    "static_udp_bcast": bytes([2]) + frame(udp_frame(BCAST, PEER_MAC, PEER_IP, ALL, 5000, 7, b"b"), 1)
    + frame(udp_frame(BCAST, PEER_MAC, PEER_IP, bytes([10, 0, 2, 255]), 5000, 7, b"s")),
    "static_conflict": bytes([2]) + frame(arp(BCAST, 1, PEER_MAC, OUR_IP, bytes(6), OUR_IP)) + tick(1500),
    "static_link_flap": bytes([2]) + link(0) + tick(100) + link(1) + tick(300),
    "selecting_offer": bytes([0]) + frame(dhcp(2), REPAIR_DHCP) + frame(dhcp(5), REPAIR_DHCP),
    "selecting_offer_bcast": bytes([0]) + frame(dhcp(2), REPAIR_DHCP | 16),
    "selecting_retransmit": bytes([0]) + tick(500) + tick(900) + tick(1700) + tick(3300),
    "requesting_ack": bytes([1]) + frame(dhcp(5), REPAIR_DHCP),
    "requesting_nak": bytes([1]) + frame(dhcp(6), REPAIR_DHCP),
    "requesting_bad_opts": bytes([1]) + frame(dhcp(5, raw_opts=bytes([53, 1, 5, 51, 200, 0])), REPAIR_DHCP)
    + frame(dhcp(5, raw_opts=bytes([53, 1, 5, 54, 4]) + SRV_IP), REPAIR_DHCP)
    + frame(dhcp(5, extra=bytes([52, 1, 3, 61, 7, 1]) + OUR_MAC), REPAIR_DHCP),
    "bound_renew": bytes([3]) + tick(10000) + tick(10) + frame(dhcp(5, lease=1200), REPAIR_DHCP),
    "bound_rebind_expire": bytes([3]) + tick(20100) + frame(dhcp(6), REPAIR_DHCP) + ctl(4),
    "bound_link_reboot": bytes([3]) + link(1) + frame(dhcp(5), REPAIR_DHCP) + link(1) + tick(6000),
    "bound_udp": bytes([3]) + frame(udp_frame(OUR_MAC, PEER_MAC, PEER_IP, OUR_IP, 5000, 7, bytes(64)))
    + send(bytes([192, 0, 2, 7]), 9) + tick(100),
    "off_misc": bytes([4]) + frame(eth(OUR_MAC, PEER_MAC, 0x86DD) + bytes(40)) + frame(eth(OUR_MAC, PEER_MAC, 0x8100) + bytes(40))
    + ctl(0) + ctl(2) + ctl(5) + ctl(7) + b"\x07\x00" + ctl(3),
    "static_tx_no_buffer": bytes([2 | 8]) + frame(udp_frame(OUR_MAC, PEER_MAC, PEER_IP, OUR_IP, 5000, 7, b"a")) * 3
    + frame(echo(b"e")) * 3 + frame(arp(BCAST, 1, PEER_MAC, PEER_IP, bytes(6), OUR_IP)) * 3,
    "bound_tx_end_fails": bytes([3 | 16]) + frame(udp_frame(OUR_MAC, PEER_MAC, PEER_IP, OUR_IP, 5000, 7, b"a")) * 3
    + tick(10010) + tick(10000),
    "ip_options_padding": bytes([2]) + frame(eth(OUR_MAC, PEER_MAC, 0x0800) + ipv4(17, PEER_IP, OUR_IP, udp(PEER_IP, OUR_IP, 1, 7, b"p"), b"\x01" * 8) + bytes(10)),
}
os.makedirs(OUT, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
print(f"wrote {len(seeds)} seeds to {OUT}")
