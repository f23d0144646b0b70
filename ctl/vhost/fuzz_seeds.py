#!/usr/bin/python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# Seed inputs for the libFuzzer harnesses of nk-vhost-vsock: a few
# well-formed conversations, so that a short run starts deep in the state
# machine (open, data both ways, buffering, shutdown, host CONNECT) rather
# than rediscovering it.  The byte layouts are the harnesses' own input
# formats (see fuzz_pkt.c and fuzz_vu.c).  For nkd's configuration parser
# (ctl/fuzz_nkd_config.c): configurations that use every key.  For nkctl's
# command line (ctl/fuzz_nkctl_args.c): every command and keyword.
#
#   fuzz_seeds.py HARNESS DIR      write HARNESS's seeds into DIR

import os
import struct
import sys

# fuzz_pkt steps
TX, RAW, REAP, PEER, HOST, EXPIRE = 0, 3, 4, 5, 6, 7
REQUEST, RESPONSE, RST, SHUTDOWN, RW, CREDIT_UPDATE, CREDIT_REQUEST = 1, 2, 3, 4, 5, 6, 7


def pkt(op, gport=0, hport=0, flags=0, payload_units=0, ndesc=1, fwd=0):
    """A tx_packet step: gport/hport index the harness's port tables."""
    sel = (gport & 3) | (hport & 3) << 2
    b = bytes([TX, sel, ndesc - 1, op, flags]) + struct.pack("<I", fwd)
    b += bytes([payload_units, 0])
    return b + bytes((i * 7) & 0xff for i in range(payload_units * 17))


def peer(action, index=0, arg=0):
    """A peer_op step: 0/1 write arg*32 bytes (the only ones taking arg),
    2/3 read, 4 SHUT_WR, 5 SHUT_RD, 6/7 close."""
    b = bytes([PEER, (index << 3) | action])
    return b + bytes([arg]) if action in (0, 1) else b


def pkt_seeds():
    open_ = pkt(REQUEST) + bytes([REAP])
    seeds = {
        "open-data-close": open_ + pkt(RW, payload_units=20, ndesc=2) +
        peer(2) + peer(0, arg=200) + bytes([REAP]) + peer(0, arg=255) + bytes([REAP]) +
        pkt(SHUTDOWN, flags=3) + bytes([REAP]),
        # the harness shrinks the backend's socket buffer: 8 KiB fill it
        "buffering": open_ + pkt(RW, payload_units=100, ndesc=3) * 6 + peer(2) +
        bytes([REAP]) + peer(2) + pkt(CREDIT_REQUEST) + bytes([REAP]) +
        pkt(SHUTDOWN, flags=3) + peer(2) + bytes([REAP]),
        "credit-overrun": open_ + pkt(RW, payload_units=200, ndesc=3) * 6 + bytes([REAP]),
        "half-close": open_ + pkt(SHUTDOWN, flags=2) + peer(0, arg=100) + peer(4) +
        bytes([REAP, REAP]) + pkt(RST),
        "peer-closes": open_ + peer(0, arg=30) + peer(7) + bytes([REAP]) + pkt(RW, payload_units=3),
        "refused": pkt(REQUEST, hport=2) + bytes([REAP]),
        "host-connect": bytes([HOST, 1, 1]) + bytes([REAP]) + pkt(RESPONSE, hport=3) +
        peer(0, index=0, arg=20) + bytes([REAP]) + pkt(RW, hport=3, payload_units=5) +
        bytes([REAP]) + pkt(SHUTDOWN, hport=3, flags=3),
        "host-timeout": bytes([HOST, 1, 1, REAP, EXPIRE]),
        "host-garbage": bytes([HOST, 0, 12]) + b"CONNECT x\nyz" + bytes([EXPIRE]),
    }
    return seeds


def vu_msg(req, payload=b"", flags=1, extra=b""):
    """A fuzz_vu message: request, flags, size/2, payload, then fd choice."""
    assert len(payload) % 2 == 0
    return bytes([req, flags, len(payload) // 2]) + payload + extra


def vu_seeds():
    mem = struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 1 << 20, 0x7f0000000000, 0)
    ring = lambda q, base: (vu_msg(8, struct.pack("<II", q, 64)) +
                            vu_msg(10, struct.pack("<II", q, 0)) +
                            vu_msg(9, struct.pack("<IIQQQQ", q, 0, 0x7f0000000000 + base,
                                                  0x7f0000000000 + base + 0x2000,
                                                  0x7f0000000000 + base + 0x1000, 0)) +
                            vu_msg(12, struct.pack("<Q", q), extra=b"\x00") +
                            vu_msg(13, struct.pack("<Q", q), extra=b"\x00"))
    start = (vu_msg(1) + vu_msg(15) + vu_msg(16, struct.pack("<Q", (1 << 3) | (1 << 9))) +
             vu_msg(3) + vu_msg(24, struct.pack("<III", 0, 8, 0) + bytes(8)) +
             vu_msg(2, struct.pack("<Q", (1 << 32) | (1 << 30)), flags=9) +
             vu_msg(5, mem, flags=9, extra=b"\x01"))
    return {
        "start": start + ring(0, 0) + ring(1, 0x10000) +
        vu_msg(18, struct.pack("<II", 0, 1)) + vu_msg(11, struct.pack("<II", 0, 0)) +
        vu_msg(11, struct.pack("<II", 1, 0)),
        "reset": start + ring(1, 0x10000) + vu_msg(4),
    }


def config_seeds():
    """nkd.json files: every key of the top level, of an nsm and of a vm."""
    nsms = [
        {"name": "nsm1", "id": 0, "type": "kernel", "netns": "nsm-a", "dev": "up0",
         "relay": "splice", "busy_poll": 0, "bulk_poll": "auto",
         "kernel_relay_sndbuf": 16777216, "notsent_lowat": 131072},
        {"name": "nsm2", "type": "kernel", "netns": "nsm-b", "dev": "up1",
         "relay": "kernel", "busy_poll": 30, "bulk_poll": 50,
         "kernel_relay_sndbuf": 0, "notsent_lowat": 0},
        {"name": "nsm3", "type": "kernel"},
    ]
    vms = [
        {"name": "vm1", "id": 1, "nsm": "nsm1", "addrs": ["10.77.0.2/24", "fd77::2/64"],
         "uds": "/run/nk/vm1.vsock", "gw": ["10.77.0.1", "fd77::1"], "policy": {"drop_all": True}},
        {"name": "vm2", "nsm": "nsm2", "addrs": ["10.77.0.3/24"], "cid": 5, "gw": "10.77.0.1"},
        {"name": "vm3", "nsm": "nsm3", "addrs": ["10.74.0.2/24"], "uds": "/run/nk/vm3.vsock",
         "gw": None},
    ]
    full = {"version": 1, "uplink": "nku0", "miss": "drop", "pin_dir": "/sys/fs/bpf/netkernel",
            "nsms": nsms, "vms": vms, "draining": []}
    import json
    return {
        "full": json.dumps(full, indent=1).encode(),
        "no-uplink": json.dumps({"version": 1, "nsms": nsms[:2], "vms": vms[:2],
                                 "uplink": None, "miss": "pass"}).encode(),
        "empty": b'{"nsms": [], "vms": []}',
    }


def nkctl_seeds():
    """nkctl command lines (argv after argv[0], NUL-separated): every
    command and keyword, abbreviations, options, and a few refusals."""
    lines = {
        "nsm-add": ["nsm", "add", "nsm1", "type", "kernel", "netns", "nsm-a", "dev", "up0",
                    "relay", "splice", "busy-poll", "0", "bulk-poll", "auto",
                    "kernel-relay-sndbuf", "16777216", "lowat", "131072"],
        "nsm-add-short": ["-j", "n", "a", "nsm2", "t", "kernel", "rel", "kernel", "busy", "30"],
        "nsm-del": ["nsm", "del", "nsm1"],
        "nsm-show": ["-p", "nsm", "show", "nsm1"],
        "vm-add-uds": ["vm", "add", "vm1", "nsm", "nsm1", "addr", "10.77.0.2/24,fd77::2/64",
                       "uds", "/run/nk/vm1.vsock", "gw", "10.77.0.1", "gw", "fd77::1"],
        "vm-add-cid": ["-c", "/run/netkernel/nkd.sock", "vm", "add", "vm2", "cid", "5",
                       "addr", "10.77.0.3/24", "nsm", "nsm2"],
        "vm-set": ["vm", "set", "vm1", "nsm", "nsm2"],
        "policy-set": ["policy", "set", "vm1", "drop-all", "on"],
        "policy-show": ["-j", "po", "sh", "vm1"],
        "vm-list": ["--json", "vm"],
        "conn-list": ["conn", "list", "vm", "vm1"],
        "stats": ["stats", "show", "nsm", "nsm1"],
        "teardown": ["teardown"],
        "help": ["vm", "help"],
        "bad-twice": ["vm", "add", "vm3", "uds", "/a", "cid", "7", "nsm", "n", "addr", "1.2.3.4/8"],
        "bad-utf8": ["vm", "add", "vm4", "nsm", "n", "addr", "10.0.0.2/24,\udcff", "uds", "/x"],
    }
    return {name: b"\0".join(w.encode("utf-8", "surrogateescape") for w in words)
            for name, words in lines.items()}


def main(argv):
    if len(argv) != 2:
        sys.stderr.write("usage: fuzz_seeds.py HARNESS DIR\n")
        return 2
    seeds = {"fuzz_pkt": pkt_seeds, "fuzz_vu": vu_seeds,
             "fuzz_nkd_config": config_seeds, "fuzz_nkctl_args": nkctl_seeds}.get(argv[0], dict)()
    os.makedirs(argv[1], exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(argv[1], "seed-" + name), "wb") as f:
            f.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
