#!/usr/bin/env python3
"""todo-api benchmark: `GET /todos/:id` on Verge beside its native twin.

In one session:
  - examples/todo-api served by `verge-bench todo-serve` (the Verge runtime,
    a fresh instance per request, `TODOS` on a SQLite KV store, no request
    log), seeded with 100 todos through `POST /todos`;
  - the same with instance reuse (`instance_reuse = 1000`), on the same
    store;
  - `verge-bench todo-twin`: the same endpoint in axum + rusqlite, the same
    JSON and ETag from a table of 100 rows, one read connection per thread:
    the ceiling.
Both get wrk with a script that asks for a random id among the 100,
interleaved over several rounds; medians of req/s, p50 and p99 are printed
with the ratio Verge / twin, and each server's CPU time per request (from
/proc/PID/task/*/schedstat around the run), which CPU steal on a shared
machine distorts less than throughput.

Usage: python3 bench/todo.py [--duration 10] [--rounds 3] [--connections 16]
Needs wrk (apt-get install wrk).
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import urllib.request

from run import ROOT, process_cpu_seconds, run, wait_ready, wrk

BENCH = os.path.join(ROOT, "target/release/verge-bench")
TODO_API = os.path.join(ROOT, "target/examples/wasm32-wasip2/release/todo_api.wasm")
VERGE = "http://127.0.0.1:18801"
REUSE = "http://127.0.0.1:18803"
TWIN = "http://127.0.0.1:18802"
TODOS = 100

SCRIPT = """
math.randomseed(7)
request = function()
  return wrk.format("GET", "/todos/" .. math.random(1, %d))
end
""" % TODOS


def seed(url):
    for n in range(TODOS):
        body = json.dumps({"title": f"todo {n + 1}"}).encode()
        req = urllib.request.Request(url + "/todos", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 201, r.status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=16)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    run(["cargo", "build", "--release", "-p", "verge-bench"])
    run(["cargo", "build", "--target", "wasm32-wasip2", "--release",
         "--manifest-path", "examples/Cargo.toml", "--target-dir", "target/examples"])

    results = {"verge": [], "reuse": [], "twin": []}
    with tempfile.TemporaryDirectory() as store, tempfile.TemporaryDirectory() as twin_dir, \
            tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(SCRIPT)
        script.flush()
        servers = {
            "verge": subprocess.Popen([BENCH, "todo-serve", TODO_API, VERGE[7:], store],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
            "twin": subprocess.Popen([BENCH, "todo-twin", TWIN[7:], twin_dir, str(TODOS)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL),
        }
        try:
            wait_ready(VERGE + "/todos", servers["verge"])
            seed(VERGE)
            # The reuse server opens the same store once it is seeded.
            servers["reuse"] = subprocess.Popen([BENCH, "todo-serve", TODO_API, REUSE[7:], store, "1000"],
                                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_ready(REUSE + "/todos/1", servers["reuse"])
            wait_ready(TWIN + "/todos/1", servers["twin"])
            urls = {"verge": VERGE, "reuse": REUSE, "twin": TWIN}
            for name, url in urls.items():
                wrk(url + "/todos/1", 2, args.connections, script.name)  # warm up
            for _ in range(args.rounds):
                for name, url in urls.items():
                    before = process_cpu_seconds(servers[name].pid)
                    rps, p50, p99, total = wrk(url + "/", args.duration, args.connections, script.name)
                    cpu_us = (process_cpu_seconds(servers[name].pid) - before) * 1e6 / total
                    results[name].append((rps, p50, p99, cpu_us))
        finally:
            for proc in servers.values():
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=10)

    med = {name: tuple(statistics.median(r[i] for r in runs) for i in range(4))
           for name, runs in results.items()}
    print(f"\nGET /todos/:id (random of {TODOS}), wrk -t1 -c{args.connections} -d{args.duration}s, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'server':<36} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'vs twin':>8} {'CPU us/req':>11} {'twin/this':>10}")
    labels = {"verge": "Verge, examples/todo-api", "reuse": "Verge, instance reuse",
              "twin": "native twin (axum + rusqlite)"}
    for name in ("twin", "verge", "reuse"):
        rps, p50, p99, cpu = med[name]
        print(f"{labels[name]:<36} {rps:>9.0f} {p50:>8.3f} {p99:>8.3f} {rps / med['twin'][0]:>7.2f}x"
              f" {cpu:>11.1f} {med['twin'][3] / cpu:>9.2f}x")


if __name__ == "__main__":
    main()
