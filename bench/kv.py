#!/usr/bin/env python3
"""Verge KV benchmark.

In one run:
  - from inside a worker (the kv fixture served by `verge-bench kv-serve` on
    a SQLite store): get and put latency, p50 and p99 as the guest measures
    them around each call, for 100 B and 1 MiB values;
  - write throughput: wrk with 64 connections against a route doing one
    100 B put under a fresh key per request (a fresh instance each);
  - the same gets and puts straight through rusqlite in the same session
    (`verge-bench kv-native`), the ceiling.

Usage: python3 bench/kv.py [--duration 10]      Needs wrk.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KV_FIXTURE = os.path.join(ROOT, "target/wasm-guests/wasm32-wasip2/release/kv_fixture.wasm")
BENCH = os.path.join(ROOT, "target/release/verge-bench")
URL = "http://127.0.0.1:18797"


def fetch(path):
    with urllib.request.urlopen(URL + path, timeout=600) as r:
        return r.read().decode()


def parse(text):
    return {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", text)}


def us(ns):
    return f"{ns / 1000:.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    args = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-p", "verge-bench", "-p", "verge-test-programs"],
                   check=True, cwd=ROOT)
    rows = []
    with tempfile.TemporaryDirectory() as store_dir, tempfile.TemporaryDirectory() as native_dir:
        server = subprocess.Popen([BENCH, "kv-serve", KV_FIXTURE, "127.0.0.1:18797", store_dir],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                try:
                    fetch("/open")
                    break
                except Exception:
                    time.sleep(0.2)
            fetch("/bench?op=get&n=2000")  # warm up
            guest = {
                ("get", "small"): parse(fetch("/bench?op=get&size=100&n=20000")),
                ("put", "small"): parse(fetch("/bench?op=put&size=100&n=2000")),
                ("get", "large"): parse(fetch("/bench?op=get&n=200&keys=10&b=LARGE")),
                ("put", "large"): parse(fetch("/bench?op=put&size=1048576&n=50&keys=10&b=LARGE")),
            }
            out = subprocess.run(["wrk", "-t1", "-c64", f"-d{args.duration}s", URL + "/put1?size=100"],
                                 check=True, capture_output=True, text=True).stdout
            if "Non-2xx" in out:
                raise SystemExit(out)
            put_throughput = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=10)
        native_out = subprocess.run([BENCH, "kv-native", native_dir], check=True, capture_output=True, text=True).stdout
    with tempfile.TemporaryDirectory() as store_only_dir:
        store_out = subprocess.run([BENCH, "kv-store", store_only_dir], check=True, capture_output=True, text=True).stdout
    store_throughput = parse(store_out)["puts_per_s"]
    native = {}
    for line in native_out.splitlines():
        _, op, size, rest = line.split(" ", 3)
        native[(op, size)] = parse(rest)

    print(f"\nVerge KV on SQLite, {os.cpu_count()} cores; latency in µs\n")
    print("| operation | inside a worker p50 | p99 | native rusqlite p50 | p99 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for key in [("get", "small"), ("put", "small"), ("get", "large"), ("put", "large")]:
        g, n = guest[key], native[key]
        label = f"{key[0]} {'100 B' if key[1] == 'small' else '1 MiB'}"
        print(f"| {label} | {us(g['p50'])} | {us(g['p99'])} | {us(n['p50'])} | {us(n['p99'])} |")
    print(f"\nput throughput, 64 concurrent requests (100 B, a fresh instance each): {put_throughput:.0f}/s")
    print(f"the store alone, 64 concurrent writers (no HTTP, no guest): {store_throughput}/s")
    print(f"native sequential puts: {native[('put', 'small')]['ops_per_s']}/s")
    print("for scale: a Workers KV call over the REST API took ~250,000 µs")


if __name__ == "__main__":
    sys.exit(main())
