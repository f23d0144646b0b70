#!/usr/bin/python3
# SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
#
# vsock-peer: the host half of the virtio-vsock tests, speaking the
# hybrid-vsock convention on Unix sockets (what nk-vhost-vsock bridges the
# guest's vsock to).  Results are one line each on stdout:
#
#   echo-server PATH            serve PATH (a guest's <uds>_<port>): echo
#                               every connection, concurrently
#   sink PATH                   serve PATH: read each connection to EOF and
#                               print "SINK conn N bytes B crc C"; with
#                               --progress, "SINK progress B" every 4 MiB
#   connect UDS PORT echo BYTES host -> guest: "CONNECT PORT\n" on UDS, expect
#                               "OK <hostport>\n", send BYTES, half-close,
#                               check the echo: "PEER PASS|FAIL echo ..."
#   connect UDS PORT send BYTES host -> guest: send BYTES of random data,
#                               print "PEER PASS send ... crc C"
#   connect UDS PORT expect-fail
#                               the CONNECT must be refused (closed, no OK)
#
# CRCs are zlib's CRC-32, as guest-vsock-test prints them.

import os
import socket
import sys
import threading
import zlib

CHUNK = 1 << 16


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def listen(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(256)
    return s


def echo_conn(c):
    with c:
        while True:
            b = c.recv(CHUNK)
            if not b:
                break
            c.sendall(b)


def echo_server(path):
    s = listen(path)
    out("READY " + path)
    while True:
        c, _ = s.accept()
        threading.Thread(target=echo_conn, args=(c,), daemon=True).start()


def sink_conn(c, n, progress):
    crc = 0
    total = 0
    mark = 4 << 20
    with c:
        while True:
            try:
                b = c.recv(CHUNK)
            except OSError as e:
                out("SINK conn %d error %s after %d" % (n, e.strerror, total))
                return
            if not b:
                break
            crc = zlib.crc32(b, crc)
            total += len(b)
            if progress and total >= mark:
                out("SINK progress %d" % total)
                mark += 4 << 20
    out("SINK conn %d bytes %d crc %08x" % (n, total, crc))


def sink(path, progress):
    s = listen(path)
    out("READY " + path)
    n = 0
    while True:
        c, _ = s.accept()
        n += 1
        threading.Thread(target=sink_conn, args=(c, n, progress), daemon=True).start()


def host_connect(uds, port):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(uds)
    s.sendall(b"CONNECT %d\n" % port)
    line = b""
    while not line.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            s.close()
            return None, line
        line += b
    return s, line


def connect(uds, port, mode, nbytes):
    s, line = host_connect(uds, port)
    if mode == "expect-fail":
        ok = s is None
        out("PEER %s expect-fail port %d reply %r" % ("PASS" if ok else "FAIL", port, line))
        return 0 if ok else 1
    if s is None or not line.startswith(b"OK "):
        out("PEER FAIL %s port %d: reply %r" % (mode, port, line))
        return 1
    hport = int(line[3:])
    data_crc = 0
    sent = 0
    if mode == "send":
        while sent < nbytes:
            b = os.urandom(min(CHUNK, nbytes - sent))
            data_crc = zlib.crc32(b, data_crc)
            s.sendall(b)
            sent += len(b)
        s.close()
        out("PEER PASS send port %d hostport %d bytes %d crc %08x" % (port, hport, sent, data_crc))
        return 0
    # echo: writer thread, reader here
    payload = os.urandom(nbytes)

    def writer():
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    got = bytearray()
    while True:
        b = s.recv(CHUNK)
        if not b:
            break
        got += b
    t.join()
    s.close()
    ok = bytes(got) == payload
    out("PEER %s echo port %d hostport %d sent %d got %d" %
        ("PASS" if ok else "FAIL", port, hport, nbytes, len(got)))
    return 0 if ok else 1


def main(argv):
    if len(argv) >= 2 and argv[0] == "echo-server":
        echo_server(argv[1])
    elif len(argv) >= 2 and argv[0] == "sink":
        sink(argv[1], "--progress" in argv[2:])
    elif len(argv) >= 4 and argv[0] == "connect":
        nbytes = int(argv[4]) if len(argv) > 4 else 0
        return connect(argv[1], int(argv[2]), argv[3], nbytes)
    else:
        sys.stderr.write("usage: vsock-peer.py echo-server PATH | sink PATH [--progress] |"
                         " connect UDS PORT echo|send BYTES | connect UDS PORT expect-fail\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
