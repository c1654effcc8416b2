#!/usr/bin/env python3
"""User-space IPIP decapsulator for a real server of Tandem's virtual rack.

The rack's kernel has no `ipip` module, so a real server cannot terminate VS/TUN tunnels the
usual way (`ip link add tunl0 type ipip`). This script does what tunl0 would: it takes IPv4
packets of protocol 4 (IP-in-IP, RFC 2003) addressed to the server's own address, strips the
outer header and hands the inner packet to the kernel through a TUN device, as if it had arrived
on that device. The kernel then delivers it to the VIP held on `lo` and answers the client
directly (the reply is routed by the server's policy rules, never through the director).

Receiving: a raw IPv4 socket of protocol 4. The kernel delivers to it exactly the protocol-4
packets addressed to one of this host's addresses, after its own checks (header checksum,
martians) and after reassembling fragments. Because a raw socket for the protocol exists, the
kernel also no longer answers each tunnelled packet with ICMP "protocol unreachable" to the
director (it would with an AF_PACKET sniffer alone), which keeps the wire and the director's
counters clean. The outer destination is still checked against `--address`, so packets
tunnelled to the VIP itself (or any other local address) are counted and ignored.

The TUN device (IFF_TUN | IFF_NO_PI) is created persistent by the rack (`ip tuntap add dev tnl0
mode tun`, up, rp_filter 0); this script attaches to it. When the script is gone the device
stays, without carrier, and packets for it are dropped.

Bounded lifetime: exits on SIGTERM/SIGINT, when the path given by `--watch` disappears (the
rack's state directory: the rack was torn down), when `--parent-pid` is gone, or after
`--max-seconds`. Counters are written as JSON to `--stats` (replaced atomically) every second
while they change, and on exit.

`--self-test` runs the packet parser's checks on literal packets and exits (no root needed).
"""

import argparse
import fcntl
import json
import os
import select
import signal
import socket
import struct
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IPPROTO_IPIP = 4
MAX_PACKET = 65535

COUNTERS = (
    "received",  # packets read from the raw socket
    "decapsulated",  # inner packets extracted
    "written",  # inner packets written to the TUN device
    "not_for_us",  # outer destination is not one of --address
    "not_ipip",  # outer protocol is not 4 (cannot happen with a protocol-4 raw socket)
    "fragments",  # outer fragments (the kernel reassembles before raw delivery; counted anyway)
    "malformed_outer",  # truncated or inconsistent outer header
    "malformed_inner",  # the payload is not a complete IPv4 packet
    "write_errors",  # the TUN device refused the packet
)


def decapsulate(packet, own):
    """Returns (verdict, inner): verdict is "decapsulated" with the inner packet, or the name
    of the counter that explains why the packet was dropped (inner is then None).

    `packet` starts at the outer IPv4 header; `own` is a set of the server's addresses as
    4-byte strings."""
    if len(packet) < 20:
        return "malformed_outer", None
    ver_ihl = packet[0]
    if ver_ihl >> 4 != 4:
        return "malformed_outer", None
    ihl = (ver_ihl & 0x0F) * 4
    total = struct.unpack_from("!H", packet, 2)[0]
    if ihl < 20 or total < ihl or total > len(packet):
        return "malformed_outer", None
    if packet[9] != IPPROTO_IPIP:
        return "not_ipip", None
    if bytes(packet[16:20]) not in own:
        return "not_for_us", None
    frag = struct.unpack_from("!H", packet, 6)[0]
    if frag & 0x3FFF:  # MF set or a non-zero offset
        return "fragments", None
    inner = packet[ihl:total]
    if len(inner) < 20 or inner[0] >> 4 != 4:
        return "malformed_inner", None
    inner_ihl = (inner[0] & 0x0F) * 4
    inner_total = struct.unpack_from("!H", inner, 2)[0]
    if inner_ihl < 20 or inner_total < inner_ihl or inner_total > len(inner):
        return "malformed_inner", None
    return "decapsulated", bytes(inner[:inner_total])


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


def self_test():
    a = socket.inet_aton
    own = {a("172.16.0.2")}
    inner = ipv4_header(a("203.0.113.2"), a("203.0.113.20"), 17, 8 + 4) + b"\x9c\x40\x00\x35\x00\x0c\x00\x00ping"
    outer = ipv4_header(a("172.16.0.251"), a("172.16.0.2"), 4, len(inner)) + inner
    cases = [
        ("tunnelled", outer, ("decapsulated", inner)),
        ("ethernet padding after the packet", outer + b"\0" * 6, ("decapsulated", inner)),
        ("other destination", ipv4_header(a("172.16.0.251"), a("172.16.0.3"), 4, len(inner)) + inner, ("not_for_us", None)),
        ("udp, not ipip", ipv4_header(a("172.16.0.251"), a("172.16.0.2"), 17, len(inner)) + inner, ("not_ipip", None)),
        ("truncated outer", outer[:19], ("malformed_outer", None)),
        ("outer total beyond the data", outer[:-1], ("malformed_outer", None)),
        ("ipv6 version", b"\x60" + outer[1:], ("malformed_outer", None)),
        ("inner truncated", ipv4_header(a("172.16.0.251"), a("172.16.0.2"), 4, len(inner) - 1) + inner[:-1], ("malformed_inner", None)),
        ("empty inner", ipv4_header(a("172.16.0.251"), a("172.16.0.2"), 4, 0), ("malformed_inner", None)),
    ]
    frag = bytearray(outer)
    frag[6] = 0x20  # MF
    cases.append(("fragment", bytes(frag), ("fragments", None)))
    failed = 0
    for name, packet, want in cases:
        got = decapsulate(packet, own)
        if got != want:
            failed += 1
            print("FAIL %s: got %r want %r" % (name, got[0], want[0]))
    if checksum(outer[:20]) != 0:
        failed += 1
        print("FAIL outer header checksum does not verify")
    print("self-test: %d of %d cases passed" % (len(cases) - failed, len(cases)))
    return 1 if failed else 0


class Stats:
    def __init__(self, path, meta):
        self.path = path
        self.meta = meta
        self.counts = {k: 0 for k in COUNTERS}
        self.dirty = True

    def bump(self, name):
        self.counts[name] += 1
        self.dirty = True

    def write(self, final=False):
        if not self.dirty and not final:
            return
        doc = dict(self.meta)
        doc["unix_ms"] = int(time.time() * 1000)
        doc["exited"] = final
        doc["counters"] = self.counts
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(doc, f, sort_keys=True)
            f.write("\n")
        os.replace(tmp, self.path)
        self.dirty = False


def open_tun(name):
    fd = os.open("/dev/net/tun", os.O_RDWR)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--address", action="append", default=[], help="this server's outer address (repeatable)")
    p.add_argument("--tun", default="tnl0", help="the TUN device to write inner packets into")
    p.add_argument("--stats", help="JSON counters file")
    p.add_argument("--watch", help="exit when this path no longer exists")
    p.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    p.add_argument("--max-seconds", type=float, default=0.0, help="exit after this long (0: no limit)")
    p.add_argument("--self-test", action="store_true", help="check the parser on literal packets and exit")
    args = p.parse_args()
    if args.self_test:
        return self_test()
    if not args.address or not args.stats:
        p.error("--address and --stats are required")
    own = {socket.inet_aton(a) for a in args.address}

    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append("SIGTERM"))
    signal.signal(signal.SIGINT, lambda *_: stop.append("SIGINT"))

    tun = open_tun(args.tun)
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_IPIP)
    stats = Stats(args.stats, {"pid": os.getpid(), "tun": args.tun, "addresses": args.address})
    stats.write()
    print("ipip-decap: pid %d, %s -> %s, ready" % (os.getpid(), ",".join(args.address), args.tun), flush=True)
    started = time.monotonic()
    last_write = started
    why = None
    while why is None:
        if stop:
            why = stop[0]
            break
        try:
            readable, _, _ = select.select([sock], [], [], 0.5)
        except InterruptedError:
            continue
        if readable:
            # Drain what is queued, bounded so the lifetime checks below still run under load.
            for _ in range(256):
                try:
                    packet = sock.recv(MAX_PACKET, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    break
                stats.bump("received")
                verdict, inner = decapsulate(packet, own)
                stats.bump(verdict)
                if inner is None:
                    continue
                try:
                    os.write(tun, inner)
                    stats.bump("written")
                except OSError as e:
                    stats.bump("write_errors")
                    print("ipip-decap: write to %s: %s" % (args.tun, e), file=sys.stderr, flush=True)
        now = time.monotonic()
        if now - last_write >= 1.0:
            stats.write()
            last_write = now
        if args.watch and not os.path.exists(args.watch):
            why = "%s is gone" % args.watch
        elif args.parent_pid and not os.path.exists("/proc/%d" % args.parent_pid):
            why = "parent pid %d is gone" % args.parent_pid
        elif args.max_seconds and now - started >= args.max_seconds:
            why = "lifetime of %.0f s reached" % args.max_seconds
    try:
        stats.write(final=True)
    except OSError:
        pass  # the state directory may already be gone
    print("ipip-decap: exiting (%s): %s" % (why, json.dumps(stats.counts, sort_keys=True)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
