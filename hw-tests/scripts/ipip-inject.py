#!/usr/bin/env python3
"""Sends one hand-made IPIP packet (RFC 2003) carrying a UDP datagram, as a VS/TUN director
would: outer IPv4 header of protocol 4 from --outer-src to --outer-dst, inner IPv4 + UDP from
--src to --dst with --payload. Used by the virtual rack's tests to exercise a real server's
decapsulator without a director: run it inside a namespace of the rack (the router), through
`ip netns exec`. Sends --count packets (at most 100) and exits.
"""

import argparse
import socket
import struct
import sys


def checksum(data):
    """RFC 1071 Internet checksum."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def ipv4_header(src, dst, proto, payload_len, ttl=64):
    hdr = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + payload_len, 0, 0x4000, ttl, proto, 0, src, dst
    )
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:]


def udp(src, sport, dst, dport, payload):
    length = 8 + len(payload)
    pseudo = src + dst + struct.pack("!BBH", 0, 17, length)
    hdr = struct.pack("!HHHH", sport, dport, length, 0)
    c = checksum(pseudo + hdr + payload) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, length, c) + payload


def endpoint(s):
    host, _, port = s.rpartition(":")
    return socket.inet_aton(host), int(port)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--outer-src", required=True)
    p.add_argument("--outer-dst", required=True)
    p.add_argument("--src", required=True, help="inner source IP:PORT")
    p.add_argument("--dst", required=True, help="inner destination IP:PORT")
    p.add_argument("--payload", default="ping")
    p.add_argument("--count", type=int, default=1)
    args = p.parse_args()
    src, sport = endpoint(args.src)
    dst, dport = endpoint(args.dst)
    dgram = udp(src, sport, dst, dport, args.payload.encode())
    inner = ipv4_header(src, dst, 17, len(dgram)) + dgram
    outer_src, outer_dst = socket.inet_aton(args.outer_src), socket.inet_aton(args.outer_dst)
    packet = ipv4_header(outer_src, outer_dst, 4, len(inner)) + inner
    # IPPROTO_RAW implies IP_HDRINCL: the header above goes out as it is.
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for _ in range(max(1, min(args.count, 100))):
        s.sendto(packet, (args.outer_dst, 0))
    print("ipip-inject: sent %d x %d bytes %s -> %s carrying %s -> %s" % (
        max(1, min(args.count, 100)), len(packet), args.outer_src, args.outer_dst, args.src, args.dst))
    return 0


if __name__ == "__main__":
    sys.exit(main())
