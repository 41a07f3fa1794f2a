#!/usr/bin/env python3
"""Instructions per request, counted by valgrind's callgrind.

Wall-clock figures on a shared machine move by a fifth from run to run;
the instructions a server executes for a request do not. Each server runs
under `valgrind --tool=callgrind`, gets --warmup requests, has its counters
zeroed (`callgrind_control --zero`), serves --requests more on one
keep-alive connection, one at a time, and is dumped
(`callgrind_control --dump`): the dump's total divided by the requests is
the figure, start-up and warm-up left out. What the node's background
threads (the epoch ticker, the memory trimmer) execute meanwhile is in it
too, as it is in a real node's CPU time.

Servers: native hyper (`bench/hyper-hello`), Verge fresh and with instance
reuse on the fixtures' `/plain` (as bench/run.py), and `GET /todos/:id` of
examples/todo-api on Verge fresh, with reuse, and its axum + rusqlite twin
(as bench/todo.py). For the Verge fresh servers it prints the functions
that execute the most instructions (self cost, callgrind_annotate).

Usage: python3 bench/callgrind.py [--requests 2000] [--warmup 200] [--top 25]
       [--only NAME,...] [--keep DIR]
Needs valgrind (apt-get install valgrind).
"""

import argparse
import glob
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import FIXTURES, ROOT, run  # noqa: E402

BENCH = os.path.join(ROOT, "target/release/verge-bench")
HYPER = os.path.join(ROOT, "target/release/hyper-hello")
TODO_API = os.path.join(ROOT, "target/examples/wasm32-wasip2/release/todo_api.wasm")
TODOS = 100
PORT = 18850


def wait_ready(port, path, proc, timeout=600):
    # Under valgrind a server compiles and starts some 50 times slower.
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server on port {port} exited with {proc.returncode}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                conn.close()
                return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"port {port} did not answer within {timeout}s")


def send(port, paths, method="GET", body=None):
    """Sends one request per path on one keep-alive connection; every answer must be 2xx."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    for path in paths:
        conn.request(method, path, body=body, headers={"content-type": "application/json"} if body else {})
        r = conn.getresponse()
        r.read()
        if not 200 <= r.status < 300:
            raise SystemExit(f"{method} {path} on port {port}: {r.status}")
    conn.close()


def todo_paths(n):
    # The same ids in every run: instructions, not luck, differ between runs.
    return [f"/todos/{(i * 37) % TODOS + 1}" for i in range(n)]


def total_instructions(dump):
    with open(dump) as f:
        for line in f:
            m = re.match(r"(summary|totals):\s+(\d+)", line)
            if m:
                return int(m.group(2))
    raise SystemExit(f"{dump}: no totals line")


def seed_natively(cmd, port, ready_path, seed):
    """Runs a server outside valgrind to fill its store (a write under
    valgrind can outrun the worker's 50 ms CPU limit), then stops it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(port, ready_path, proc, timeout=60)
        seed(port)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure(name, cmd, port, ready_path, paths, out_dir, seed=None, args=None):
    out = os.path.join(out_dir, f"{name}.out")
    proc = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(port, ready_path, proc)
        if seed:
            seed(port)
        send(port, paths[: args.warmup])
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True,
                       capture_output=True)
        start = time.time()
        send(port, paths[: args.requests])
        elapsed = time.time() - start
        subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True,
                       capture_output=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    dumps = sorted(glob.glob(out + ".*"), key=os.path.getmtime)
    if not dumps:
        raise SystemExit(f"{name}: callgrind wrote no dump\n{proc.stderr.read()[-2000:]}")
    per_request = total_instructions(dumps[0]) / args.requests
    print(f"{name:<12} {per_request:>12,.0f} instructions/request "
          f"({args.requests} requests in {elapsed:.1f} s under valgrind)", file=sys.stderr, flush=True)
    return per_request, dumps[0]


# Frames at the bottom of threads that were running when the counters were
# zeroed: callgrind charges them cost of their callees as their own (the
# sum of own costs then exceeds the total), so they are left out.
THREAD_ENTRY = re.compile(
    r"^(clone|start_thread|.*thread_start|.*__rust_begin_short_backtrace|.*call_once\{\{vtable\.shim\}\}"
    r"|.*blocking::pool::Inner::run|.*context::runtime::enter_runtime|.*multi_thread::worker::run"
    r"|.*task::core::Core<…>::poll|.*task::raw::poll|.*task::harness::Harness<…>::poll)( \(.*\))?$")


def top_functions(dump, top):
    """(instructions, share %, function) by own cost; a function inlined into
    several files (callgrind lists each file apart) counts once."""
    out = subprocess.run(["callgrind_annotate", "--inclusive=no", "--auto=no", "--threshold=100", dump],
                         check=True, capture_output=True, text=True).stdout
    total, by_function = 0, {}
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*([\d.]+)%\)\s+(\S.*)", line)
        if not m:
            continue
        ir = int(m.group(1).replace(",", ""))
        if "PROGRAM TOTALS" in line:
            total = ir
            continue
        name = short(m.group(3))
        if THREAD_ENTRY.search(name):
            continue
        by_function[name] = by_function.get(name, 0) + ir
    rows = sorted(by_function.items(), key=lambda kv: -kv[1])[:top]
    return [(ir, 100.0 * ir / total if total else 0.0, name) for name, ir in rows]


def short(symbol):
    # "file:function [object]" -> "function (object)", generics shortened,
    # the object named only when it is not the server itself.
    # The file is "???" or a path; a function's own "::" is not a file.
    m = re.match(r"^(\?\?\?|[^\s:]*[/.][^\s:]*):(?!:)(.*)$", symbol)
    fn = m.group(2) if m else symbol
    obj = re.search(r"\[([^\[\]]*)\]\s*$", fn)
    fn = re.sub(r"\s*\[[^\[\]]*\]\s*$", "", fn)
    fn = re.sub(r"<[^<>]*(<[^<>]*>[^<>]*)*>", "<…>", fn)
    lib = os.path.basename(obj.group(1)) if obj else ""
    if fn.startswith("0x") and lib == "???":
        return f"guest code, compiled (at {fn})"
    where = f" ({lib})" if lib and not lib.startswith(("verge-bench", "hyper-hello")) else ""
    return (fn[:110] + where).replace("|", "\\|")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--only", help="comma-separated servers to measure")
    ap.add_argument("--keep", help="directory to keep the callgrind dumps in")
    args = ap.parse_args()
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install valgrind")
    run(["cargo", "build", "--release", "-p", "verge-bench", "-p", "hyper-hello", "-p", "verge-test-programs"])
    run(["cargo", "build", "--target", "wasm32-wasip2", "--release",
         "--manifest-path", "examples/Cargo.toml", "--target-dir", "target/examples"])

    def seed_todos(port):
        for n in range(TODOS):
            send(port, ["/todos"], "POST", json.dumps({"title": f"todo {n + 1}"}).encode())

    n = max(args.requests, args.warmup)
    hello = ["/plain"] * n
    with tempfile.TemporaryDirectory() as tmp:
        out_dir = args.keep or tmp
        os.makedirs(out_dir, exist_ok=True)
        store, twin = os.path.join(tmp, "store"), os.path.join(tmp, "twin")
        os.makedirs(store)
        os.makedirs(twin)
        a = lambda p: f"127.0.0.1:{p}"  # noqa: E731
        servers = [
            ("native", [HYPER, a(PORT)], PORT, "/", ["/"] * n, None),
            ("verge", [BENCH, "serve", FIXTURES, a(PORT + 1)], PORT + 1, "/plain", hello, None),
            ("reuse", [BENCH, "serve", FIXTURES, a(PORT + 2), "1000"], PORT + 2, "/plain", hello, None),
            ("todo-twin", [BENCH, "todo-twin", a(PORT + 3), twin, str(TODOS)], PORT + 3, "/todos/1",
             todo_paths(n), None),
            ("todo-verge", [BENCH, "todo-serve", TODO_API, a(PORT + 4), store], PORT + 4, "/todos/1",
             todo_paths(n), None),
            ("todo-reuse", [BENCH, "todo-serve", TODO_API, a(PORT + 5), store, "1000"], PORT + 5,
             "/todos/1", todo_paths(n), None),
        ]
        only = set(args.only.split(",")) if args.only else None
        if not only or only & {"todo-verge", "todo-reuse"}:
            seed_natively([BENCH, "todo-serve", TODO_API, a(PORT + 4), store], PORT + 4, "/todos",
                          seed_todos)
        results, dumps = {}, {}
        for name, cmd, port, ready, paths, seed in servers:
            if only and name not in only:
                continue
            results[name], dumps[name] = measure(name, cmd, port, ready, paths, out_dir, seed, args)
        tops = {name: top_functions(dumps[name], args.top)
                for name in ("verge", "todo-verge") if name in dumps}

    print(f"\ninstructions per request (callgrind, {args.requests} requests on one connection "
          f"after {args.warmup} of warm-up)\n")
    print("| server | instructions/request | × its native baseline |")
    print("| --- | ---: | ---: |")
    pairs = {"native": "native", "verge": "native", "reuse": "native",
             "todo-twin": "todo-twin", "todo-verge": "todo-twin", "todo-reuse": "todo-twin"}
    for name, per in results.items():
        base = results.get(pairs[name])
        ratio = f"{per / base:.1f}x" if base else "-"
        print(f"| {name} | {per:,.0f} | {ratio} |")
    for name, rows in tops.items():
        print(f"\ntop functions by own instructions, {name}, per request\n")
        print("| instructions/request | share | function |")
        print("| ---: | ---: | --- |")
        for ir, share, symbol in rows:
            print(f"| {ir / args.requests:,.0f} | {share:.1f}% | `{short(symbol)}` |")


if __name__ == "__main__":
    main()
