#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0 OR BSD-3-Clause
"""Writes the seed corpora in seeds/<target>/ (committed; rerun after a
format change): well-formed requests and the malformed shapes a hostile
guest sends, laid out as each fuzz target reads its input."""

import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

NEXT, WRITE, INDIRECT = 1, 2, 4
ALLOC, FREE, RESET, GRANT, RETURN, RECONCILE = 1, 2, 3, 4, 5, 6
FIRST, LAST = 1, 2


def req(op, tag=0, pasid=0, lo=0, hi=0, flags=0):
    return struct.pack("<HHIQII", op, flags, pasid, tag, lo, hi)


def lease(op, tag, count, cached=0, lo=0, hi=0, flags=0):
    """A GRANT or RETURN header: count and cached share the pasid word."""
    return struct.pack("<HHHHQII", op, flags, count, cached, tag, lo, hi)


def write(name, target, data):
    d = os.path.join(HERE, "seeds", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# request_decode: one request (24 bytes) that is also read as a response
# and, padded, as a config space.
for name, data in {
    "alloc": req(ALLOC, 7, 0, 1, 0xFFFFF),
    "free": req(FREE, 8, 17),
    "reset": req(RESET, 9),
    "bad_opcode": req(0x99, 1),
    "bad_flags": req(ALLOC, 1, 0, 1, 10, flags=0x8000),
    "config": struct.pack("<IIIIIIQ", 1, 20, 1, 0xFFFFF, 4096, 0, 0xABCDEF01),
    "grant": lease(GRANT, 10, 32, 4, 1, 0xFFFFF),
    "grant_count_0": lease(GRANT, 11, 0),
    "return_list": lease(RETURN, 12, 3, 5) + struct.pack("<III", 7, 8, 9),
    "return_count_65": lease(RETURN, 13, 65),
    "reconcile_list": lease(RECONCILE, 14, 2, 1, flags=FIRST | LAST)
    + struct.pack("<II", 7, 8),
    "reconcile_empty": lease(RECONCILE, 15, 0, flags=FIRST | LAST),
    "reconcile_bad_flags": lease(RECONCILE, 16, 1, flags=FIRST | 4),
    "reconcile_count_65": lease(RECONCILE, 17, 65, flags=LAST),
}.items():
    write(name, "request_decode", data)

# request_queue: options byte, then guest memory from address 0.
DESC, AVAIL, USED, BUF = 0x0, 0x100, 0x200, 0x300


class Image:
    def __init__(self):
        self.mem = bytearray(0x1000)
        self.heads = []

    def put(self, addr, data):
        self.mem[addr:addr + len(data)] = data

    def desc(self, i, addr, length, flags=0, nxt=0, table=DESC):
        self.put(table + 16 * i, struct.pack("<QIHH", addr, length, flags, nxt))

    def avail(self, qsize, idx=None):
        idx = len(self.heads) if idx is None else idx
        self.put(AVAIL, struct.pack("<HH", 0, idx))
        for i, h in enumerate(self.heads):
            self.put(AVAIL + 4 + 2 * (i % qsize), struct.pack("<H", h))

    def bytes(self, opts):
        return bytes([opts]) + bytes(self.mem)


def simple(requests, qlog=4, opts=0x08):
    """Each request as a readable + writable descriptor pair."""
    img = Image()
    for i, r in enumerate(requests):
        at = BUF + 0x40 * i
        img.put(at, r)
        img.desc(2 * i, at, 24, NEXT, 2 * i + 1)
        img.desc(2 * i + 1, at + 0x20, 16, WRITE)
        img.heads.append(2 * i)
    img.avail(1 << qlog)
    return img.bytes(opts | qlog)


write("good_batch", "request_queue", simple([
    req(ALLOC, 1, 0, 1, 255), req(ALLOC, 2, 0, 50, 60), req(FREE, 3, 2),
    req(RESET, 4), req(ALLOC, 5, 0, 0, 0),
]))
write("good_no_event_idx_twice", "request_queue", simple([req(ALLOC, 1, 0, 1, 255)], opts=0x10))
write("rate_limited", "request_queue", simple([req(ALLOC, i, 0, 1, 255) for i in range(6)], opts=0x28))
write("quota_flood", "request_queue", simple([req(ALLOC, i, 0, 1, 255) for i in range(8)]))

# A request straddling the two adjacent regions, a response split in two.
img = Image()
img.put(0x7F0, req(ALLOC, 0x51, 0, 1, 255))
img.desc(0, 0x7F0, 24, NEXT, 1)
img.desc(1, 0x900, 5, WRITE | NEXT, 2)
img.desc(2, 0x905, 11, WRITE)
img.heads = [0]
img.avail(16)
write("straddle_split", "request_queue", img.bytes(0x0C))

# Indirect table at 0x400 holding the pair.
img = Image()
img.put(BUF, req(ALLOC, 0x61, 0, 1, 255))
img.desc(0, 0x400, 32, INDIRECT)
img.desc(0, BUF, 24, NEXT, 1, table=0x400)
img.desc(1, BUF + 0x20, 16, WRITE, table=0x400)
img.heads = [0]
img.avail(16)
write("indirect", "request_queue", img.bytes(0x0C))

# Nested indirect table, and an indirect table that loops.
img = Image()
img.desc(0, 0x400, 16, INDIRECT)
img.desc(0, 0x480, 32, INDIRECT, table=0x400)
img.heads = [0]
img.avail(16)
write("indirect_nested", "request_queue", img.bytes(0x0C))
img = Image()
img.put(BUF, req(ALLOC, 0x71, 0, 1, 255))
img.desc(0, 0x400, 32, INDIRECT)
img.desc(0, BUF, 24, NEXT, 1, table=0x400)
img.desc(1, BUF + 0x20, 16, WRITE | NEXT, 0, table=0x400)
img.heads = [0]
img.avail(16)
write("indirect_loop", "request_queue", img.bytes(0x0C))

# A direct loop, a next index outside the table, buffers in the gap and
# in the far region, a readable after a writable, zero and huge lengths.
img = Image()
img.put(BUF, req(ALLOC, 0x81, 0, 1, 255))
img.desc(0, BUF, 24, NEXT, 1)
img.desc(1, BUF + 0x20, 16, WRITE | NEXT, 0)
img.desc(2, BUF, 24, NEXT, 3)
img.desc(3, BUF + 0x20, 16, WRITE | NEXT, 200)
img.desc(4, 0x2000, 24, NEXT, 5)
img.desc(5, 0x10000, 16, WRITE)
img.desc(6, BUF + 0x20, 16, WRITE | NEXT, 7)
img.desc(7, BUF, 24)
img.desc(8, BUF, 0, NEXT, 9)
img.desc(9, BUF + 0x20, 0xFFFFFFFF, WRITE)
img.heads = [0, 2, 4, 6, 8]
img.avail(16)
write("malformed_mix", "request_queue", img.bytes(0x0C))

# An avail index far ahead of the queue.
img = Image()
img.heads = [0]
img.avail(16, idx=0x4000)
write("avail_jump", "request_queue", img.bytes(0x0C))

# Leases (option bit 6: lease cap 4, F_LEASE negotiated): a GRANT with room
# for its list, a RETURN with its list, and the malformed shapes: a RETURN
# whose readable part does not match its count, a GRANT whose writable part
# is short, a count of 0.
img = Image()
img.put(BUF, lease(GRANT, 0x91, 4, 0, 1, 255))
img.desc(0, BUF, 24, NEXT, 1)
img.desc(1, BUF + 0x20, 16 + 16, WRITE)
img.put(BUF + 0x60, lease(RETURN, 0x92, 2, 4) + struct.pack("<II", 2, 3))
img.desc(2, BUF + 0x60, 32, NEXT, 3)
img.desc(3, BUF + 0x80, 16, WRITE)
img.put(BUF + 0xA0, lease(RETURN, 0x93, 3, 2) + struct.pack("<II", 4, 4))
img.desc(4, BUF + 0xA0, 32, NEXT, 5)
img.desc(5, BUF + 0xC0, 16, WRITE)
img.put(BUF + 0xE0, lease(GRANT, 0x94, 8, 0, 1, 255))
img.desc(6, BUF + 0xE0, 24, NEXT, 7)
img.desc(7, BUF + 0x100, 20, WRITE)
img.put(BUF + 0x120, lease(GRANT, 0x95, 0, 0, 1, 255))
img.desc(8, BUF + 0x120, 24, NEXT, 9)
img.desc(9, BUF + 0x140, 16, WRITE)
img.heads = [0, 2, 4, 6, 8]
img.avail(16)
write("lease_mix", "request_queue", img.bytes(0x4C))
write("lease_not_negotiated", "request_queue", img.bytes(0x0C))

# RECONCILE (option bit 7: F_RECONCILE negotiated): an ALLOC, then a
# reconcile over two requests naming a PASID held, a free one, 0 and one
# out of range; a LAST without FIRST after it; and a writable part too
# short for the results.
img = Image()
img.put(BUF, req(ALLOC, 0xA0, 0, 1, 255))
img.desc(0, BUF, 24, NEXT, 1)
img.desc(1, BUF + 0x20, 16, WRITE)
img.put(BUF + 0x40, lease(RECONCILE, 0xA1, 2, 0, flags=FIRST)
        + struct.pack("<II", 2, 9))
img.desc(2, BUF + 0x40, 32, NEXT, 3)
img.desc(3, BUF + 0x60, 24, WRITE)
img.put(BUF + 0x80, lease(RECONCILE, 0xA2, 2, 0, flags=LAST)
        + struct.pack("<II", 0, 250))
img.desc(4, BUF + 0x80, 32, NEXT, 5)
img.desc(5, BUF + 0xA0, 24, WRITE)
img.put(BUF + 0xC0, lease(RECONCILE, 0xA3, 1, 0, flags=LAST)
        + struct.pack("<I", 3))
img.desc(6, BUF + 0xC0, 28, NEXT, 7)
img.desc(7, BUF + 0xE0, 20, WRITE)
img.put(BUF + 0x100, lease(RECONCILE, 0xA4, 1, 0, flags=FIRST | LAST)
        + struct.pack("<I", 3))
img.desc(8, BUF + 0x100, 28, NEXT, 9)
img.desc(9, BUF + 0x120, 16, WRITE)
img.heads = [0, 2, 4, 6, 8]
img.avail(16)
write("reconcile_mix", "request_queue", img.bytes(0x8C))
write("reconcile_not_negotiated", "request_queue", img.bytes(0x0C))

# control_line: access byte, then request lines.
lines = [
    {"cmd": "pasids"}, {"cmd": "vms"}, {"cmd": "stats"}, {"cmd": "metrics"},
    {"cmd": "get", "holder": "op", "pasid": 5},
    {"cmd": "put", "holder": "iommu", "pasid": 4},
    {"cmd": "release", "vm": "web"},
    {"cmd": "quota", "vm": "db", "quota": 1},
    {"cmd": "pasids", "vm": "web"},
    {"cmd": "release", "vm": "db", "force": True},
    {"cmd": "get", "holder": "a b", "pasid": 5},
]
text = "\n".join(json.dumps(l, separators=(",", ":")) for l in lines).encode()
write("all_full", "control_line", b"\x00" + text)
write("all_read_only", "control_line", b"\x01" + text)
write("malformed", "control_line", b"\x00" + b"\n".join([
    b"{}", b'{"cmd":"nope"}', b'{"cmd":"get","holder":"web","pasid":5}',
    b'{"cmd":"get","holder":"x","pasid":-1}', b'{"cmd":"vms","extra":1}',
    b'{"cmd":"quota","vm":"web","quota":4294967295}', b"[" * 64,
]))

# state_decode: mode byte, then a snapshot (0), records (1) or a commit
# frame (2), laid out as docs/state.md describes.
import zlib


def limits(quota, lo, hi):
    return struct.pack("<III", quota, lo, hi)


def name(s):
    b = s.encode()
    return struct.pack("<H", len(b)) + b


def resp(status, tag, pasid=0xFFFFFFFF):
    return struct.pack("<HHIQ", status, 0, pasid, tag)


def answered(pos, request, response, replayed=0, pasids=(), results=()):
    """An answer; with `pasids`, flag bit 1 and the PASID list follow; with
    `results` (a RECONCILE's), flag bit 2 and the results after that."""
    flags = replayed | (2 if pasids else 0) | (4 if results else 0)
    out = struct.pack("<HB", pos, flags) + request + response
    for words in (pasids, results):
        if words:
            out += struct.pack("<B", len(words))
            out += b"".join(struct.pack("<I", w) for w in words)
    return out


def owner(kind, nm, lim, configured, window, holdings):
    out = struct.pack("<B", kind) + name(nm) + lim
    out += b"\x01" + configured if configured else b"\x00"
    out += struct.pack("<H", len(window)) + b"".join(window)
    out += struct.pack("<I", len(holdings))
    out += b"".join(struct.pack("<II", p, r) for p, r in holdings)
    return out


body = struct.pack("<IQI", 12, 0x1234567, 4)
body += owner(1, "web", limits(16, 4, 4095), limits(16, 4, 4095),
              [answered(10, req(ALLOC, 3, 0, 0, 4095), resp(0, 3, 7))],
              [(4, 1), (5, 2), (7, 1)])
body += owner(1, "db", limits(16, 4, 4095), None, [], [(6, 1)])
body += owner(2, "", limits(0, 1, 1), None, [], [])  # a vacant index
body += owner(2, "iommu", limits(0xFFFFFFFF, 1, 4095), None, [], [(4, 3)])
snap = b"VPASIDS\x01" + struct.pack("<IQQ", 1, 5, len(body)) + body
snap += struct.pack("<I", zlib.crc32(snap))
write("snapshot", "state_decode", b"\x00" + snap)

records = b"".join([
    struct.pack("<BIH", 1, 0, 3)
    + answered(20, req(ALLOC, 40, 0, 0, 4095), resp(0, 40, 9))
    + answered(21, req(FREE, 41, 4), resp(0, 41))
    + answered(22, req(RESET, 42), resp(0, 42, 3), replayed=1),
    struct.pack("<BI", 2, 1),
    struct.pack("<BI", 3, 1) + limits(2, 100, 200),
    struct.pack("<BB", 4, 2) + name("drv") + limits(0xFFFFFFFF, 1, 4095),
    struct.pack("<BII", 5, 2, 5),
    struct.pack("<BII", 6, 2, 5),
    struct.pack("<BI", 7, 2),
])
write("records", "state_decode", b"\x01" + records)

lease_records = struct.pack("<BIH", 1, 0, 2) + answered(
    30, lease(GRANT, 50, 4, 0, 0, 4095), resp(0, 50, 3), pasids=(20, 21, 22)
) + answered(31, lease(RETURN, 51, 2, 3), resp(0, 51, 2), pasids=(20, 22))
write("lease_records", "state_decode", b"\x01" + lease_records)

reconcile_records = struct.pack("<BIH", 1, 0, 2) + answered(
    40, req(ALLOC, 60, 0, 0, 4095), resp(0, 60, 1)
) + answered(41, lease(RECONCILE, 61, 2, 0, flags=FIRST | LAST),
             resp(0, 61, 0), pasids=(1, 2), results=(0, 1))
write("reconcile_records", "state_decode", b"\x01" + reconcile_records)
seq = 1
crc = zlib.crc32(struct.pack("<QIQ", 1, len(records), seq) + records)
write("frame", "state_decode",
      b"\x02" + struct.pack("<IQI", len(records), seq, crc) + records)
