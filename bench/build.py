#!/usr/bin/env python3
"""Build times a newcomer sees, from a clean clone of HEAD with empty target
directories: README's first command (the `verge` binary, then the example
worker) and what README's test command adds on top.

    python3 bench/build.py [--rev REV] [--keep]

Downloads are taken out of the figures (`cargo fetch` runs first, timed on
its own); the machine should be otherwise idle. The clone goes to a temporary
directory, removed afterwards unless --keep is given; --rev times another
commit (to compare a build change with the commit before it).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(what, command, cwd):
    print(f"$ {' '.join(command)}", flush=True)
    started = time.monotonic()
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    elapsed = time.monotonic() - started
    print(f"  {what}: {elapsed:.0f} s", flush=True)
    return elapsed


def size(path):
    out = subprocess.run(["du", "-sh", path], capture_output=True, text=True)
    return out.stdout.split()[0] if out.returncode == 0 else "-"


def main():
    keep = "--keep" in sys.argv
    rev = sys.argv[sys.argv.index("--rev") + 1] if "--rev" in sys.argv else "HEAD"
    work = tempfile.mkdtemp(prefix="verge-build-")
    clone = os.path.join(work, "verge")
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", ROOT, clone], check=True)
    subprocess.run(["git", "checkout", "--quiet", rev], cwd=clone, check=True)
    print(f"timing {rev} in {clone}", flush=True)
    try:
        fetch = timed("cargo fetch", ["cargo", "fetch", "--locked"], clone)
        host = timed("verge binary (debug)", ["cargo", "build", "--locked", "-p", "verge"], clone)
        guest = timed(
            "todo-api worker (wasm32-wasip2, release)",
            [os.path.join(clone, "target/debug/verge"), "build", "examples/todo-api"],
            clone,
        )
        tests = timed(
            "the test suite on top",
            ["cargo", "test", "--locked", "--workspace", "--no-run"],
            clone,
        )
        print()
        print("| step | seconds |")
        print("| --- | ---: |")
        print(f"| downloads (`cargo fetch`) | {fetch:.0f} |")
        print(f"| `verge` binary, debug | {host:.0f} |")
        print(f"| todo-api worker, release wasm | {guest:.0f} |")
        print(f"| README's first command, in all | {host + guest:.0f} |")
        print(f"| the tests' build on top | {tests:.0f} |")
        print()
        print(f"target/: {size(os.path.join(clone, 'target'))}, "
              f"examples/target/: {size(os.path.join(clone, 'examples/target'))}, "
              f"crates/test-programs guests: included in target/")
    finally:
        if keep:
            print(f"kept {clone}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
