#!/usr/bin/env python3
"""Verge cluster benchmark: nodes sharing one PostgreSQL.

  - propagation: two release `verge serve` nodes on one PostgreSQL schema;
    100 deploys through node A (the fixtures component, a var changed each
    time), each timed from A's answer until node B serves the new version
    (polled every 2 ms); then 200 KV writes through A's admin API, each timed
    until B's admin API reads the value back. p50 and p99 of each.
  - new code everywhere: three nodes on a fresh schema, --deploys deploys
    through A of a component never seen before (the fixtures with a custom
    section naming the deploy, so each compiles to code of its own), each
    timed from A's answer until B and C both serve it; once with a cluster
    secret (B and C load the code A compiled) and once without (each node
    compiles), interleaved deploy by deploy.
  - KV get latency: `verge-bench kv-latency`, small gets one at a time
    through the guests' Namespace API on SQLite, on PostgreSQL, and on
    PostgreSQL behind the nodes' read cache (warmed).
  - hello throughput through nginx: wrk against nginx proxying to node A
    alone, then to A and B (keep-alive upstreams, the same proxy either
    way), interleaved over rounds. Needs nginx and wrk; skipped without.

Usage: python3 bench/cluster.py [--postgres postgres://root@127.0.0.1:5432/test]
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
from run import FIXTURES, ROOT, run, wrk  # noqa: E402
from node import TOKEN, admin, start_node, stop, with_custom_section  # noqa: E402


def get(url, host):
    req = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.read().decode()
    except Exception:
        return None


def percentiles(values):
    values = sorted(values)
    return values[len(values) // 2], values[max(0, int(len(values) * 0.99) - 1)]


NGINX_CONF = """
worker_processes 1;
error_log stderr error;
pid nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    upstream verge {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://verge;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host app.localhost;
        }}
    }}
}}
"""


def start_nginx(tmp, name, port, upstreams):
    prefix = os.path.join(tmp, name)
    os.makedirs(prefix, exist_ok=True)
    servers = "\n".join(f"        server {u};" for u in upstreams)
    with open(os.path.join(prefix, "nginx.conf"), "w") as f:
        f.write(NGINX_CONF.format(servers=servers, port=port))
    proc = subprocess.Popen(["nginx", "-p", prefix, "-c", "nginx.conf", "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while get(f"http://127.0.0.1:{port}/plain", "app.localhost") is None:
        if time.time() > deadline:
            raise SystemExit("nginx did not start")
        time.sleep(0.05)
    return proc


def throughput(tmp, rounds, duration, connections):
    """req/s of /plain through nginx to node A alone and to A and B."""
    if not (shutil.which("nginx") and shutil.which("wrk")):
        return "hello through nginx: skipped (needs nginx and wrk)"
    proxies = {"one": (18841, ["127.0.0.1:18821"]),
               "two": (18842, ["127.0.0.1:18821", "127.0.0.1:18822"])}
    procs = [start_nginx(tmp, name, port, ups) for name, (port, ups) in proxies.items()]
    results = {"one": [], "two": []}
    try:
        for _ in range(rounds):
            for name, (port, _) in proxies.items():
                rps, _, p99, _ = wrk(f"http://127.0.0.1:{port}/plain", duration, connections)
                results[name].append((rps, p99))
    finally:
        for p in procs:
            p.send_signal(signal.SIGQUIT)
            p.wait(timeout=10)
    one = statistics.median(r for r, _ in results["one"])
    two = statistics.median(r for r, _ in results["two"])
    p99_one = statistics.median(p for _, p in results["one"])
    p99_two = statistics.median(p for _, p in results["two"])
    return (f"hello through nginx (wrk -t1 -c{connections} -d{duration}s, median of {rounds}): "
            f"one node {one:.0f} req/s (p99 {p99_one:.2f} ms), two nodes {two:.0f} req/s "
            f"(p99 {p99_two:.2f} ms), {two / one:.2f}x")


def drop_schema(postgres, schema):
    subprocess.run(["psql", postgres, "-qc", f"DROP SCHEMA IF EXISTS {schema} CASCADE"],
                   stderr=subprocess.DEVNULL)


def new_code_everywhere(binary, tmp, postgres, deploys):
    """ms from deploy answer until two other nodes serve a never-seen component, per trio."""
    with open(FIXTURES, "rb") as f:
        fixtures = f.read()
    secret = os.path.join(tmp, "cluster-secret")
    with open(secret, "w") as f:
        f.write("bench-cluster-secret-0123456789")
    trios, procs, schemas = {}, [], []
    try:
        for t, (name, extra) in enumerate([("shared", ["--cluster-secret-file", secret]), ("compiled", [])]):
            schema = f"verge_bench_cluster_{name}_{os.getpid()}"
            schemas.append(schema)
            store = ["--store", postgres, "--store-schema", schema, *extra]
            nodes = []
            for n in range(3):
                port = 18823 + 3 * t + n
                proc, base = start_node(binary, port, port + 10, os.path.join(tmp, f"{name}{n}"), store)
                procs.append(proc)
                nodes.append((port, base))
            trios[name] = nodes
        times = {name: [] for name in trios}
        for i in range(deploys):
            for name, nodes in trios.items():
                body = with_custom_section(fixtures, f"{name} deploy {i}")
                digest = hashlib.sha256(body).hexdigest()
                a_admin = nodes[0][1]
                admin(a_admin, "PUT", f"/v1/components/{digest}", body, "application/wasm")
                manifest = f'name = "app"\ncomponent = "fixtures.wasm"\n[vars]\nVERSION = "v{i}"\n'
                admin(a_admin, "POST", "/v1/workers/app/versions", {"component": digest, "manifest": manifest})
                start = time.perf_counter()
                waiting = [port for port, _ in nodes[1:]]
                while waiting:
                    waiting = [p for p in waiting
                               if get(f"http://127.0.0.1:{p}/env?name=VERSION", "app.localhost") != f"v{i}"]
                    if time.perf_counter() - start > 30:
                        raise SystemExit(f"{name} deploy {i} did not reach every node in 30 s")
                    if waiting:
                        time.sleep(0.002)
                times[name].append((time.perf_counter() - start) * 1000)
        return times
    finally:
        stop(*procs)
        for schema in schemas:
            drop_schema(postgres, schema)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--postgres", default="postgres://root@127.0.0.1:5432/test")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--deploys", type=int, default=50, help="new-code deploys per trio")
    args = ap.parse_args()
    run(["cargo", "build", "--release", "-p", "verge", "-p", "verge-bench", "-p", "verge-test-programs"])
    binary = os.path.join(ROOT, "target/release/verge")
    tmp = tempfile.mkdtemp(prefix="verge-cluster-bench-")
    schema = f"verge_bench_cluster_{os.getpid()}"
    store = ["--store", args.postgres, "--store-schema", schema]
    procs = []
    try:
        a, a_admin = start_node(binary, 18821, 18831, os.path.join(tmp, "a"), store)
        b, b_admin = start_node(binary, 18822, 18832, os.path.join(tmp, "b"), store)
        procs = [a, b]
        with open(FIXTURES, "rb") as f:
            component = f.read()
        digest = hashlib.sha256(component).hexdigest()
        admin(a_admin, "PUT", f"/v1/components/{digest}", component, "application/wasm")

        deploys = []
        for i in range(100):
            manifest = f'name = "app"\ncomponent = "fixtures.wasm"\n[vars]\nVERSION = "v{i}"\n'
            admin(a_admin, "POST", "/v1/workers/app/versions", {"component": digest, "manifest": manifest})
            start = time.perf_counter()
            while get("http://127.0.0.1:18822/env?name=VERSION", "app.localhost") != f"v{i}":
                if time.perf_counter() - start > 10:
                    raise SystemExit(f"deploy {i} did not reach node B in 10 s")
                time.sleep(0.002)
            deploys.append((time.perf_counter() - start) * 1000)

        admin(a_admin, "POST", "/v1/kv/namespaces", {"name": "bench"})
        writes = []
        for i in range(200):
            admin(a_admin, "PUT", f"/v1/kv/namespaces/bench/values/k{i}", f"value {i}".encode(),
                  "application/octet-stream")
            start = time.perf_counter()
            while True:
                req = urllib.request.Request(f"{b_admin}/v1/kv/namespaces/bench/values/k{i}")
                req.add_header("authorization", f"Bearer {TOKEN}")
                try:
                    with urllib.request.urlopen(req, timeout=5) as r:
                        if r.read() == f"value {i}".encode():
                            break
                except Exception:
                    pass
                if time.perf_counter() - start > 10:
                    raise SystemExit(f"write {i} not visible on B in 10 s")
            writes.append((time.perf_counter() - start) * 1000)
        hello = throughput(tmp, args.rounds, args.duration, args.connections)
        stop(*procs)
        procs = []
        new_code = new_code_everywhere(binary, tmp, args.postgres, args.deploys)
    finally:
        stop(*procs)
        drop_schema(args.postgres, schema)

    latency = subprocess.run(
        [os.path.join(ROOT, "target/release/verge-bench"), "kv-latency", tmp, args.postgres],
        check=True, capture_output=True, text=True).stdout.strip()
    shutil.rmtree(tmp, ignore_errors=True)

    d50, d99 = percentiles(deploys)
    w50, w99 = percentiles(writes)
    print(f"deploy through A until B serves it: p50 {d50:.1f} ms, p99 {d99:.1f} ms ({len(deploys)} deploys)")
    print(f"KV write through A until B reads it: p50 {w50:.2f} ms, p99 {w99:.2f} ms ({len(writes)} writes; "
          f"includes one admin API round trip on B)")
    print(latency)
    print(hello)
    for name, times in new_code.items():
        p50, p99 = percentiles(times)
        how = "B and C load the code A compiled" if name == "shared" else "each node compiles"
        print(f"new code, deploy through A until B and C both serve it ({how}): "
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(times):.1f} ms ({len(times)} deploys)")


if __name__ == "__main__":
    main()
