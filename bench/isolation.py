#!/usr/bin/env python3
"""Tenant isolation on one node: worker B's hello while worker A, or A's
clients, misbehave.

Starts one release `verge serve` with two workers built from the fixtures
component, A and B, then measures B's hello (/plain) with wrk:
  - alone;
  - while A loops on 2 and on 8 connections (each request spins until the
    50 ms CPU limit ends it with a 503, then the next one starts);
  - while N clients announce a 100,000-byte body to A and send a byte a
    second (slow bodies);
  - while N clients ask A for a 60 MiB response and never read it
    (A's wall limit is 5 s here, so the scenario ends within the run);
and prints each one's req/s, p99, 503s seen by B, and the ratio to B alone.
Then worker C's long requests (/burn, a few ms of CPU each) on one
connection, alone and while A loops on 8: long-running guests share the
background threads by worker, so C should keep its pace.
First, a memory burst: 60 requests to A at once, each holding 30 MiB of
linear memory, and 30 keeping 10 MiB of header maps in the host, for a
second; it reads the node's RSS before, at the burst's peak and 6 s after
it, and again 6 s after the other scenarios.

Usage: python3 bench/isolation.py [--duration 10] [--connections 16] [--clients 1000]
                                 [--binary PATH]
--binary runs another build of `verge` (say, a release build of an earlier
commit) instead of building this tree's, for a before/after comparison.
Needs wrk (apt-get install wrk).
"""

import argparse
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from node import admin, deploy, rss_kib, start_node, stop  # noqa: E402
from run import FIXTURES, ROOT, run  # noqa: E402

DATA, ADMIN = 18901, 18911


def wrk_b(duration, connections, host="b.localhost", path="/plain"):
    """B's hello (or `path` of `host`): req/s, p99 ms and non-2xx answers."""
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency",
         "-H", f"Host: {host}", f"http://127.0.0.1:{DATA}{path}"],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out).groups()
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return rps, p99, int(errors.group(1)) if errors else 0


def loopers(connections, duration):
    """A's CPU-bound route on `connections` connections, for `duration` s."""
    return subprocess.Popen(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s",
         "-H", "Host: a.localhost", f"http://127.0.0.1:{DATA}/loop"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def slow_bodies(count, stop):
    """`count` clients trickling a body to A, a byte a second until `stop`."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", DATA))
        s.sendall(b"POST /consume HTTP/1.1\r\nhost: a.localhost\r\n"
                  b"content-length: 100000\r\n\r\nx")
        socks.append(s)
    while not stop.wait(1.0):
        for s in socks:
            try:
                s.send(b"x")
            except OSError:
                pass
    for s in socks:
        s.close()


def silent_readers(count, stop):
    """`count` clients asking A for 60 MiB and never reading, until `stop`."""
    socks = []
    for _ in range(count):
        s = socket.create_connection(("127.0.0.1", DATA))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(b"GET /big?mib=60 HTTP/1.1\r\nhost: a.localhost\r\n\r\n")
        socks.append(s)
    stop.wait()
    for s in socks:
        s.close()


def request(path):
    """One request to A on a connection of its own; the status."""
    with socket.create_connection(("127.0.0.1", DATA)) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nhost: a.localhost\r\nconnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := s.recv(65536):
            reply += chunk
    return int(reply.split(b" ", 2)[1])


def memory_burst(pid):
    """60 requests holding 30 MiB of guest memory and 30 holding 10 MiB of
    host objects, at once; the statuses and the node's RSS at the peak."""
    paths = ["/alloc?mib=30&hold_ms=1000"] * 60 + ["/hoard?mib=10&hold_ms=1000"] * 30
    statuses = []
    threads = [threading.Thread(target=lambda p=p: statuses.append(request(p))) for p in paths]
    for t in threads:
        t.start()
    time.sleep(0.8)
    peak = rss_kib(pid)
    for t in threads:
        t.join()
    return statuses, peak


def with_background(target, count, duration, connections):
    stop = threading.Event()
    thread = threading.Thread(target=target, args=(count, stop))
    thread.start()
    time.sleep(2)
    try:
        return wrk_b(duration, connections)
    finally:
        stop.set()
        thread.join()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--binary")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    run(["cargo", "build", "--release", "-p", "verge-test-programs"])
    binary = args.binary
    if binary is None:
        run(["cargo", "build", "--release", "-p", "verge"])
        binary = os.path.join(ROOT, "target/release/verge")
    with open(FIXTURES, "rb") as f:
        component = f.read()

    tmp = tempfile.mkdtemp(prefix="verge-isolation-")
    proc = None
    try:
        proc, base = start_node(binary, DATA, ADMIN, os.path.join(tmp, "node"),
                                ["--max-cpu-ms", "50"])
        deploy(base, ["b"], component)
        deploy(base, ["c"], component)
        # A: the same code, with a wall limit that ends the silent readers'
        # responses within the run.
        deploy(base, ["a"], component)
        digest = admin(base, "GET", "/v1/workers/a/versions")["versions"][0]["component"]
        admin(base, "POST", "/v1/workers/a/versions",
              {"component": digest,
               "manifest": 'name = "a"\ncomponent = "fixtures.wasm"\n[limits]\nwall_ms = 5000\n'})
        wrk_b(2, args.connections)
        time.sleep(1)
        rss_before = rss_kib(proc.pid)
        statuses, rss_peak = memory_burst(proc.pid)
        time.sleep(6)
        rss_after = rss_kib(proc.pid)

        results = []
        results.append(("B alone", *wrk_b(args.duration, args.connections)))
        for n in (2, 8):
            a = loopers(n, args.duration + 3)
            time.sleep(1)
            results.append((f"A loops on {n}", *wrk_b(args.duration, args.connections)))
            a.wait()
        # Long-running guests share the background threads by worker: C's
        # one connection keeps its pace while A loops on eight.
        burn = "/burn?iterations=4000000"
        c_alone = wrk_b(args.duration, 1, "c.localhost", burn)
        a = loopers(8, args.duration + 3)
        time.sleep(1)
        c_shared = wrk_b(args.duration, 1, "c.localhost", burn)
        a.wait()
        results.append((f"{args.clients} slow bodies to A",
                        *with_background(slow_bodies, args.clients, args.duration, args.connections)))
        results.append((f"{args.clients} silent readers of A",
                        *with_background(silent_readers, args.clients, args.duration, args.connections)))
        time.sleep(6)
        rss_scenarios = rss_kib(proc.pid)
    finally:
        stop(proc)
        shutil.rmtree(tmp, ignore_errors=True)

    alone = results[0][1]
    print(f"\nB's hello (/plain), wrk -t1 -c{args.connections} -d{args.duration}s, one run each")
    print(f"{'while':32}{'req/s':>10}{'vs alone':>10}{'p99 ms':>9}{'B non-2xx':>11}")
    for name, rps, p99, errors in results:
        print(f"{name:32}{rps:10.0f}{rps / alone:10.2f}{p99:9.2f}{errors:11d}")
    print(f"\nC's long requests ({burn}) on 1 connection: {c_alone[0]:.1f} req/s alone, "
          f"{c_shared[0]:.1f} while A loops on 8 ({c_shared[0] / c_alone[0]:.2f}x); "
          f"p99 {c_alone[1]:.1f} and {c_shared[1]:.1f} ms")
    ok = statuses.count(200)
    print(f"\nmemory burst: {ok} of {len(statuses)} answered 200 "
          f"(others: {sorted(set(statuses) - {200})}); node RSS {rss_before} KiB before, "
          f"{rss_peak} KiB at its peak, {rss_after} KiB 6 s after ({rss_after / rss_before:.2f}x)")
    print(f"node RSS 6 s after the other scenarios: {rss_scenarios} KiB "
          f"({rss_scenarios / rss_before:.2f}x the start)")


if __name__ == "__main__":
    main()
