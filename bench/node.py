#!/usr/bin/env python3
"""Verge node benchmark: many workers on one `verge serve`.

Starts two release `verge serve` nodes on loopback:
  - one:      a single worker deployed (the fixtures component, /plain);
  - hundred:  100 workers (w0 .. w99) deployed through the admin API, the
              same component under 100 names: each is its own deployment
              with its own routing entry and instance state, and the node
              shares their compiled code (as it does for any workers built
              from the same bytes);
  - distinct: 100 workers whose components all differ (the same one with a
              custom section naming the worker appended), so each has its
              own compiled code: the worst case for the CPU's caches and the
              instance pool;
then, interleaved over several rounds, runs wrk for hello (/plain) on
  - one/single:       the lone worker;
  - hundred/single:   w0 alone on the 100-worker node;
  - hundred/spread:   every request to the next of the 100 workers (a wrk
                      Lua script rotating the Host header);
  - distinct/spread:  the same over the 100 distinct components;
and prints median req/s, p50, p99 and the node's CPU per request, with
ratios against one/single (the routing and per-worker cost). It also reads
the nodes' resident memory once idle, before and after deploying, for the
idle RSS per deployed worker.

With --many N (1000, say) it measures instead one node holding N workers
of distinct code: the deploys, the idle RSS once they are in, requests that
each go to the least recently used worker (w0, w1 ... in turn, one at a
time on one keep-alive connection, three passes), and a restart: how long
until the node answers, whether any worker compiled again
(`verge_component_loads_total`), and the first request to each worker.

Usage: python3 bench/node.py [--rounds 3] [--duration 10] [--connections 16]
       python3 bench/node.py --many 1000
Needs wrk (apt-get install wrk) for the first form.
"""

import argparse
import hashlib
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import FIXTURES, ROOT, process_cpu_seconds, run, wrk  # noqa: E402

TOKEN = "bench-token-0123456789abcdef"
WORKERS = 100


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def admin(base, method, path, body=None, content_type="application/json"):
    data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("authorization", f"Bearer {TOKEN}")
    if data is not None:
        req.add_header("content-type", content_type)
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read() or b"null")


def start_node(binary, data_port, admin_port, data_dir, extra=()):
    env = dict(os.environ, VERGE_ADMIN_TOKEN=TOKEN, VERGE_LOG="warn")
    proc = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{data_port}",
         "--admin-listen", f"127.0.0.1:{admin_port}", "--data-dir", data_dir, *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    base = f"http://127.0.0.1:{admin_port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2):
                return proc, base
        except Exception:
            time.sleep(0.1)
    raise SystemExit("verge serve did not start")


def stop(*procs, timeout=15):
    """SIGINT to every node, as an operator stops one; SIGKILL to any that
    has not exited after `timeout` seconds."""
    procs = [p for p in procs if p]
    for p in procs:
        p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def deploy(base, names, component, distinct=False):
    for name in names:
        body = with_custom_section(component, name) if distinct else component
        digest = hashlib.sha256(body).hexdigest()
        admin(base, "PUT", f"/v1/components/{digest}", body, "application/wasm")
        admin(base, "POST", f"/v1/workers/{name}/versions",
              {"component": digest, "manifest": f'name = "{name}"\ncomponent = "fixtures.wasm"\n'})


def leb128(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def with_custom_section(component, text):
    """The component with a custom section appended: other bytes, same code."""
    name = b"verge-bench"
    content = leb128(len(name)) + name + text.encode()
    return component + b"\x00" + leb128(len(content)) + content


def settle():
    time.sleep(2)


def loads(base):
    """verge_component_loads_total by result, from the node's /metrics."""
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        text = r.read().decode()
    counts = {}
    for line in text.splitlines():
        if line.startswith("verge_component_loads_total{"):
            result = line.split('result="')[1].split('"')[0]
            counts[result] = int(float(line.split()[-1]))
    return counts


def requests_in_turn(port, names, passes):
    """ms of each request, every one to the next worker in `names` (so to
    the least recently used), one at a time on one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    times = []
    for _ in range(passes):
        for name in names:
            start = time.perf_counter()
            conn.request("GET", "/plain", headers={"Host": f"{name}.localhost"})
            r = conn.getresponse()
            r.read()
            times.append((time.perf_counter() - start) * 1000)
            if r.status != 200:
                raise SystemExit(f"{name}: {r.status}")
    conn.close()
    return times


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]


def many(binary, component, n):
    tmp = tempfile.mkdtemp(prefix="verge-node-many-")
    data = os.path.join(tmp, "node")
    names = [f"w{i}" for i in range(n)]
    proc = None
    try:
        proc, base = start_node(binary, 18805, 18815, data)
        settle()
        rss_empty = rss_kib(proc.pid)
        t0 = time.time()
        deploy(base, names, component, distinct=True)
        deploy_s = time.time() - t0
        settle()
        rss_idle = rss_kib(proc.pid)
        lru = requests_in_turn(18805, names, 3)
        rss_after = rss_kib(proc.pid)
        stop(proc, timeout=30)

        t0 = time.time()
        proc, base = start_node(binary, 18805, 18815, data)
        start_s = time.time() - t0
        first = requests_in_turn(18805, names, 1)
        after_restart = loads(base)
    finally:
        stop(proc, timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"{n} workers of distinct code on one node")
    print(f"  deploying them: {deploy_s:.1f} s ({deploy_s * 1000 / n:.0f} ms each, compiling each)")
    print(f"  idle RSS: {rss_idle / 1024:.0f} MiB ({rss_empty / 1024:.0f} MiB empty; "
          f"{(rss_idle - rss_empty) / n:.0f} KiB per worker); after the requests {rss_after / 1024:.0f} MiB")
    print(f"  a request to the least recently used worker ({len(lru)} requests, in turn): "
          f"p50 {pct(lru, 0.5):.2f} ms, p99 {pct(lru, 0.99):.2f} ms, max {max(lru):.2f} ms")
    print(f"  restart: answering after {start_s:.1f} s; loads since {after_restart} "
          f"(miss = compiled); first request to each worker p50 {pct(first, 0.5):.2f} ms, "
          f"p99 {pct(first, 0.99):.2f} ms, max {max(first):.2f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--many", type=int, help="measure one node with this many workers of distinct code")
    args = ap.parse_args()
    if args.many:
        run(["cargo", "build", "--release", "-p", "verge", "-p", "verge-test-programs"])
        with open(FIXTURES, "rb") as f:
            many(os.path.join(ROOT, "target/release/verge"), f.read(), args.many)
        return
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    run(["cargo", "build", "--release", "-p", "verge", "-p", "verge-test-programs"])
    binary = os.path.join(ROOT, "target/release/verge")
    with open(FIXTURES, "rb") as f:
        component = f.read()

    tmp = tempfile.mkdtemp(prefix="verge-node-bench-")
    script = os.path.join(tmp, "spread.lua")
    with open(script, "w") as f:
        f.write(f"""
local n = 0
request = function()
  n = (n + 1) % {WORKERS}
  return wrk.format("GET", "/plain", {{["Host"] = "w" .. n .. ".localhost"}})
end
""")
    single = os.path.join(tmp, "single.lua")
    with open(single, "w") as f:
        f.write('request = function() return wrk.format("GET", "/plain", {["Host"] = "w0.localhost"}) end\n')

    procs = {}
    try:
        procs["one"], one = start_node(binary, 18801, 18811, os.path.join(tmp, "one"))
        procs["hundred"], hundred = start_node(binary, 18802, 18812, os.path.join(tmp, "hundred"))
        procs["distinct"], distinct = start_node(binary, 18803, 18813, os.path.join(tmp, "distinct"))
        settle()
        rss_empty = rss_kib(procs["hundred"].pid)
        deploy(one, ["w0"], component)
        t0 = time.time()
        deploy(hundred, [f"w{i}" for i in range(WORKERS)], component)
        deploy_s = time.time() - t0
        rss_distinct_empty = rss_kib(procs["distinct"].pid)
        t0 = time.time()
        deploy(distinct, [f"w{i}" for i in range(WORKERS)], component, distinct=True)
        distinct_s = time.time() - t0
        settle()
        rss_full = rss_kib(procs["hundred"].pid)
        rss_distinct = rss_kib(procs["distinct"].pid)
        rss_one = rss_kib(procs["one"].pid)
        print(f"idle RSS: empty node {rss_empty} KiB, one worker {rss_one} KiB, "
              f"{WORKERS} workers {rss_full} KiB, {WORKERS} distinct {rss_distinct} KiB; "
              f"{WORKERS} deploys took {deploy_s:.1f} s, {distinct_s:.1f} s distinct (compiling each)",
              file=sys.stderr)

        cases = {
            "one/single": ("one", "http://127.0.0.1:18801/plain", single),
            "hundred/single": ("hundred", "http://127.0.0.1:18802/plain", single),
            "hundred/spread": ("hundred", "http://127.0.0.1:18802/plain", script),
            "distinct/spread": ("distinct", "http://127.0.0.1:18803/plain", script),
        }
        results = {name: [] for name in cases}
        for r in range(args.rounds):
            for name, (node, url, lua) in cases.items():
                wrk(url, 2, args.connections, lua)
                before = process_cpu_seconds(procs[node].pid)
                rps, p50, p99, total = wrk(url, args.duration, args.connections, lua)
                cpu_us = (process_cpu_seconds(procs[node].pid) - before) * 1e6 / total
                results[name].append((rps, p50, p99, cpu_us))
                print(f"round {r + 1} {name:15} {rps:9.0f} req/s  p50 {p50:7.3f} ms  "
                      f"p99 {p99:7.3f} ms  CPU {cpu_us:6.1f} us/req", file=sys.stderr)
        rss_after = rss_kib(procs["hundred"].pid)
        rss_distinct_after = rss_kib(procs["distinct"].pid)
    finally:
        stop(*procs.values())
        shutil.rmtree(tmp, ignore_errors=True)

    med = {n: [statistics.median(x[i] for x in rs) for i in range(4)] for n, rs in results.items()}
    base_rps, base_cpu = med["one/single"][0], med["one/single"][3]
    print(f"\nhello (/plain), wrk -t1 -c{args.connections} -d{args.duration}s, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'case':16}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU us/req':>12}{'req/s ratio':>13}{'CPU ratio':>11}")
    for name, (rps, p50, p99, cpu) in med.items():
        print(f"{name:16}{rps:10.0f}{p50:9.3f}{p99:9.3f}{cpu:12.1f}{rps / base_rps:13.2f}{cpu / base_cpu:11.2f}")
    per_worker = (rss_full - rss_empty) / WORKERS
    per_distinct = (rss_distinct - rss_distinct_empty) / WORKERS
    print(f"\nidle RSS per deployed worker: {per_worker:.0f} KiB shared code "
          f"(({rss_full} - {rss_empty}) KiB / {WORKERS}), {per_distinct:.0f} KiB distinct code "
          f"(({rss_distinct} - {rss_distinct_empty}) KiB / {WORKERS}); "
          f"after the load: {rss_after} KiB shared, {rss_distinct_after} KiB distinct")


if __name__ == "__main__":
    main()
