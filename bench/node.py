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

Usage: python3 bench/node.py [--rounds 3] [--duration 10] [--connections 16]
Needs wrk (apt-get install wrk).
"""

import argparse
import hashlib
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
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=2):
                return proc, base
        except Exception:
            time.sleep(0.1)
    raise SystemExit("verge serve did not start")


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
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
        for p in procs.values():
            p.send_signal(signal.SIGINT)
        for p in procs.values():
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
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
