#!/usr/bin/env python3
"""Soak: one release node under mixed traffic for a long while.

Starts `verge serve` (SQLite store) with three workers and measures what
the node can serve of the well-behaved mix (hello, KV reads and writes) in
10 s, then runs that mix at about half of it for --duration seconds, while
  - worker `bad` is asked, on 2 connections all along, for a route that
    spins until the 50 ms CPU limit ends it with a 503;
  - a new version of `hello` is deployed every 30 s.
Every 10 s it reads the node's resident memory and open file descriptors.
It prints the well-behaved requests served and failed (any answer that is
not 2xx, any socket error), RSS and fds at the start (the first minute's
mean), at the end (the last minute's), and their largest value; and exits 1
if a well-behaved request failed or RSS or fds grew by more than a quarter.

Usage: python3 bench/soak.py [--duration 600] [--binary PATH]
Needs wrk (apt-get install wrk).
"""

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from node import admin, rss_kib, start_node  # noqa: E402
from run import FIXTURES, ROOT, run  # noqa: E402

KV_FIXTURE = os.path.join(ROOT, "target/wasm-guests/wasm32-wasip2/release/kv_fixture.wasm")
DATA, ADMIN = 18921, 18931
CONNECTIONS = 8
KEYS = 100

# The well-behaved mix: a third each of hello, KV reads of keys that exist,
# and KV writes of new keys; each connection waits `delay` ms between its
# requests, which sets the rate. wrk takes whole milliseconds from delay()
# (it truncates), so a fractional mean is drawn as floor or floor + 1.
MIX = """
local n = 0
local delay_ms = %(delay)f
function request()
  n = n + 1
  local kind = n %% 3
  if kind == 0 then
    return wrk.format("GET", "/plain", {["Host"] = "hello.localhost"})
  elseif kind == 1 then
    return wrk.format("GET", "/get?key=k" .. (n %% %(keys)d), {["Host"] = "store.localhost"})
  else
    return wrk.format("GET", "/put?bytes=100&key=p" .. wrk.thread_id .. "-" .. n,
                      {["Host"] = "store.localhost"})
  end
end
function delay()
  local whole = math.floor(delay_ms)
  if math.random() < delay_ms - whole then
    return whole + 1
  end
  return whole
end
"""

SETUP = """
function setup(thread)
  thread:set("thread_id", tostring(math.random(1, 1000000000)))
end
function init(args)
  wrk.thread_id = thread_id
end
"""


def deploy(base, name, component, manifest):
    digest = hashlib.sha256(component).hexdigest()
    admin(base, "PUT", f"/v1/components/{digest}", component, "application/wasm")
    admin(base, "POST", f"/v1/workers/{name}/versions",
          {"component": digest, "manifest": f'name = "{name}"\ncomponent = "w.wasm"\n{manifest}'})


def wrk_mix(duration, delay, script_dir):
    path = os.path.join(script_dir, f"mix-{delay}.lua")
    with open(path, "w") as f:
        f.write(SETUP + MIX % {"delay": delay, "keys": KEYS})
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{duration}s", "--timeout", "10s",
         "-s", path, f"http://127.0.0.1:{DATA}/"],
        check=True, capture_output=True, text=True).stdout
    served = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failed = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    return served, rps, failed


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=600)
    ap.add_argument("--binary")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    run(["cargo", "build", "--release", "-p", "verge-test-programs"])
    binary = args.binary
    if binary is None:
        run(["cargo", "build", "--release", "-p", "verge"])
        binary = os.path.join(ROOT, "target/release/verge")
    fixtures = open(FIXTURES, "rb").read()
    kv_fixture = open(KV_FIXTURE, "rb").read()

    with tempfile.TemporaryDirectory() as tmp:
        proc, base = start_node(binary, DATA, ADMIN, os.path.join(tmp, "node"))
        try:
            admin(base, "POST", "/v1/kv/namespaces", {"name": "soak"})
            deploy(base, "hello", fixtures, '[vars]\nVERSION = "0"\n')
            deploy(base, "store", kv_fixture,
                   '[[kv_namespaces]]\nbinding = "KV"\nnamespace = "soak"\n')
            deploy(base, "bad", fixtures, "")
            for k in range(KEYS):
                req = urllib.request.Request(f"http://127.0.0.1:{DATA}/put?key=k{k}&bytes=100",
                                             headers={"Host": "store.localhost"})
                urllib.request.urlopen(req, timeout=10).read()

            _, capacity, _ = wrk_mix(10, 0, tmp)
            target = capacity / 2
            # Each connection's pace: CONNECTIONS requests per (delay + service) ms.
            # At capacity a connection's request takes CONNECTIONS / capacity s.
            delay = CONNECTIONS * 1000.0 / target - CONNECTIONS * 1000.0 / capacity
            print(f"capacity of the mix: {capacity:.0f} req/s; soaking at ~{target:.0f} req/s "
                  f"({CONNECTIONS} connections, {delay:.2f} ms between requests) "
                  f"for {args.duration} s", flush=True)

            stop = threading.Event()
            samples = []

            def sample():
                start = time.time()
                while not stop.wait(10):
                    samples.append((time.time() - start, rss_kib(proc.pid), open_fds(proc.pid)))

            def redeploy():
                version = 0
                while not stop.wait(30):
                    version += 1
                    deploy(base, "hello", fixtures, f'[vars]\nVERSION = "{version}"\n')

            bad = subprocess.Popen(
                ["wrk", "-t1", "-c2", f"-d{args.duration}s", "-H", "Host: bad.localhost",
                 f"http://127.0.0.1:{DATA}/loop"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            threads = [threading.Thread(target=sample), threading.Thread(target=redeploy)]
            for t in threads:
                t.start()
            served, rps, failed = wrk_mix(args.duration, delay, tmp)
            stop.set()
            for t in threads:
                t.join()
            bad.wait()
            deploys = int(args.duration // 30)
        finally:
            proc.terminate()
            proc.wait()

    def window(rows, first):
        span = [r for r in rows if (r[0] <= 60 if first else r[0] >= rows[-1][0] - 60)]
        return (sum(r[1] for r in span) / len(span), sum(r[2] for r in span) / len(span))

    rss0, fd0 = window(samples, True)
    rss1, fd1 = window(samples, False)
    print(f"\nwell-behaved: {served} requests, {rps:.0f} req/s ({rps / capacity:.2f} of capacity), "
          f"{failed} failed")
    print(f"deploys of hello during the soak: {deploys}; `bad` spun to its CPU limit all along")
    print(f"RSS: first minute {rss0 / 1024:.1f} MiB, last minute {rss1 / 1024:.1f} MiB, "
          f"peak {max(r[1] for r in samples) / 1024:.1f} MiB")
    print(f"open fds: first minute {fd0:.0f}, last minute {fd1:.0f}, "
          f"peak {max(r[2] for r in samples)}")
    grew = rss1 > rss0 * 1.25 or fd1 > fd0 * 1.25
    if failed or grew:
        print("FAILED: " + ("well-behaved requests failed" if failed else "RSS or fds grew"))
        sys.exit(1)


if __name__ == "__main__":
    main()
