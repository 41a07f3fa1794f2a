#!/usr/bin/env python3
"""Hello with two (or more) builds of `verge` side by side: one release
node per build, each serving the fixtures' `/plain`, measured in turn over
interleaved rounds of wrk so that the machine's drift hits every build
alike. Prints, per build, the node's CPU time per request (user + system,
from /proc, which moves less with noise than req/s) and req/s, each round
and their median.

Usage: python3 bench/hello_ab.py [--rounds 12] [--duration 4] BINARY [BINARY ...]
Needs wrk (apt-get install wrk) and the release fixtures
(cargo build --release -p verge-test-programs).
"""

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from node import deploy, start_node  # noqa: E402
from run import FIXTURES  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--duration", type=int, default=4)
    ap.add_argument("binaries", nargs="+")
    args = ap.parse_args()
    with open(FIXTURES, "rb") as f:
        component = f.read()
    nodes = []
    try:
        for i, binary in enumerate(args.binaries):
            data, admin = 19001 + i, 19101 + i
            proc, base = start_node(binary, data, admin, tempfile.mkdtemp(prefix="verge-ab-"), [])
            nodes.append((binary, proc, data))
            deploy(base, ["b"], component)
        cpu = {b: [] for b in args.binaries}
        rps = {b: [] for b in args.binaries}
        for _ in range(args.rounds):
            for binary, proc, data in nodes:
                before = cpu_seconds(proc.pid)
                out = subprocess.run(
                    ["wrk", "-t1", "-c16", f"-d{args.duration}s", "-H", "Host: b.localhost",
                     f"http://127.0.0.1:{data}/plain"],
                    check=True, capture_output=True, text=True).stdout
                spent = cpu_seconds(proc.pid) - before
                requests = int(re.search(r"(\d+) requests in", out).group(1))
                cpu[binary].append(spent / requests * 1e6)
                rps[binary].append(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)))
    finally:
        for _, proc, _ in nodes:
            proc.send_signal(signal.SIGINT)
            proc.wait()
    for binary in args.binaries:
        print(f"{binary}\n  CPU µs/request {[round(x, 1) for x in cpu[binary]]}, "
              f"median {statistics.median(cpu[binary]):.1f}\n"
              f"  req/s median {statistics.median(rps[binary]):.0f}")


if __name__ == "__main__":
    main()
