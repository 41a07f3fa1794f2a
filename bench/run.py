#!/usr/bin/env python3
"""Verge hello-world benchmark.

Starts, side by side on loopback:
  - native:   bench/hyper-hello, a native hyper server (the ceiling);
  - verge:    the Verge runtime, a fresh instance per request;
  - reuse:    the Verge runtime with instance reuse (up to 1000 requests each);
  - workerd:  Cloudflare's workerd with a JS hello world (the peer), if
              `npm install` in bench/workerd works;
then runs wrk against each in turn, interleaved over several rounds, and
prints the median req/s, p50 and p99 latency, the server's CPU time per
request, and ratios against native. Also measures the instantiate-only cost of
a fresh instance.

Usage: python3 bench/run.py [--rounds 3] [--duration 10] [--connections 16]
Needs wrk (apt-get install wrk).
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "target/wasm-guests/wasm32-wasip2/release/fixtures.wasm")
WORKERD = os.path.join(ROOT, "bench/workerd/node_modules/@cloudflare/workerd-linux-64/bin/workerd")


def run(cmd, **kw):
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, cwd=ROOT, **kw)


def wait_ready(url, proc, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout}s")


def process_cpu_seconds(pid):
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def to_ms(value, unit):
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url, duration, connections, script=None):
    extra = ["-s", script] if script else []
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", *extra, url],
        check=True, capture_output=True, text=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    lat = {p: to_ms(v, u) for p, v, u in re.findall(r"\s(50|99)%\s+([\d.]+)(us|ms|s)", out)}
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} error responses\n{out}")
    return rps, lat["50"], lat["99"], total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")

    run(["cargo", "build", "--release", "-p", "verge-bench", "-p", "hyper-hello", "-p", "verge-test-programs"])
    bench_bin = os.path.join(ROOT, "target/release/verge-bench")
    servers = {
        "native": ([os.path.join(ROOT, "target/release/hyper-hello"), "127.0.0.1:18791"], "http://127.0.0.1:18791/"),
        "verge": ([bench_bin, "serve", FIXTURES, "127.0.0.1:18792"], "http://127.0.0.1:18792/plain"),
        "reuse": ([bench_bin, "serve", FIXTURES, "127.0.0.1:18793", "1000"], "http://127.0.0.1:18793/plain"),
    }
    if not os.path.exists(WORKERD):
        try:
            run(["npm", "install", "--no-audit", "--no-fund"], cwd=os.path.join(ROOT, "bench/workerd"))
        except Exception as e:
            print(f"workerd unavailable: {e}", file=sys.stderr)
    if os.path.exists(WORKERD):
        servers["workerd"] = (
            [WORKERD, "serve", os.path.join(ROOT, "bench/workerd/config.capnp")],
            "http://127.0.0.1:18790/",
        )

    procs = {}
    try:
        for name, (cmd, url) in servers.items():
            procs[name] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_ready(url, procs[name])
        results = {name: [] for name in servers}
        for r in range(args.rounds):
            for name, (_, url) in servers.items():
                wrk(url, 2, args.connections)  # warm up
                before = process_cpu_seconds(procs[name].pid)
                rps, p50, p99, total = wrk(url, args.duration, args.connections)
                cpu_us = (process_cpu_seconds(procs[name].pid) - before) * 1e6 / total
                results[name].append((rps, p50, p99, cpu_us))
                print(f"round {r + 1} {name:8} {rps:10.0f} req/s  p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  "
                      f"server CPU {cpu_us:6.1f} us/req", file=sys.stderr)
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGINT)
        for p in procs.values():
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()

    inst = subprocess.run([bench_bin, "instantiate", FIXTURES, "20000"], check=True,
                          capture_output=True, text=True).stdout.strip()

    med = {n: [statistics.median(x[i] for x in rs) for i in range(4)] for n, rs in results.items()}
    native = med["native"][0]
    print(f"\nhello world, wrk -t1 -c{args.connections} -d{args.duration}s, median of {args.rounds} "
          f"interleaved rounds, {os.cpu_count()} cores\n")
    print("| server | req/s | vs native | p50 ms | p99 ms | server CPU µs/req |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for n, (rps, p50, p99, cpu) in med.items():
        print(f"| {n} | {rps:.0f} | {rps / native:.2f}x | {p50:.3f} | {p99:.3f} | {cpu:.1f} |")
    if "workerd" in med:
        print(f"\nverge / workerd: {med['verge'][0] / med['workerd'][0]:.2f}x req/s; "
              f"reuse / workerd: {med['reuse'][0] / med['workerd'][0]:.2f}x")
    print(f"instantiate only (fresh store + instance, one thread): {inst} µs")


if __name__ == "__main__":
    main()
