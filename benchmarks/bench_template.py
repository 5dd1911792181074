#!/usr/bin/env python
# -*- test-case-name: tests.test_zygote -*-
"""
N isolated extensions under C{twistd tcpext --isolation process}, their
processes forked from the preloaded template (the default) or started
afresh (C{--no-template}), side by side in the same run:

 - the time from starting twistd until every extension listens (each
   listens on one granted port; checked in C{/proc/net/tcp}, without
   connecting);
 - the mean proportional set size (PSS, from C{/proc/PID/smaps_rollup}) of
   the extension processes once all listen, and the PSS of the host and of
   the template.  PSS splits each shared page between the processes that
   share it, so the sum over all processes is the memory they really use.

    python benchmarks/bench_template.py                 # N = 20, 50, 100
    python benchmarks/bench_template.py --counts 5 --json r.json

The two modes alternate for each N, the order flipping from one N to the
next.  glibc's malloc thresholds are pinned (see CONVENTIONS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GLIBC_TUNABLES = (
    "glibc.malloc.mmap_threshold=1048576:glibc.malloc.trim_threshold=4194304"
)
MODES = {"template": [], "fresh": ["--no-template"]}

EXTENSION = """
async def main(browser):
    await browser.TCPSocket.listen(host="127.0.0.1", port=PORT)
"""


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = GLIBC_TUNABLES
    env["PYTHONPATH"] = ROOT + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    return env


def freePorts(count: int) -> list[int]:
    """
    C{count} distinct ports that were free on 127.0.0.1 a moment ago.
    """
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def listening() -> set[int]:
    """
    The ports something listens on at 127.0.0.1.
    """
    ports = set()
    with open("/proc/net/tcp") as f:
        for line in f.read().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A" and address == "0100007F":
                ports.add(int(port, 16))
    return ports


def pss(pid: int) -> int | None:
    """
    The PSS of process C{pid} in bytes (L{None} if it is gone).
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _pids(log: str, marker: str) -> list[int]:
    return [
        int(line.split(marker)[1].split()[0])
        for line in log.splitlines()
        if marker in line and (marker != "extension process " or " started (" in line)
    ]


def oneRun(mode: str, count: int, timeout: float) -> dict[str, Any]:
    """
    Start twistd with C{count} extensions in C{mode}; measure.
    """
    base = tempfile.mkdtemp(prefix="tcpext-bench-template-")
    try:
        extensions = os.path.join(base, "extensions")
        ports = freePorts(count)
        for n, port in enumerate(ports):
            folder = os.path.join(extensions, f"ext{n:03d}")
            os.makedirs(folder)
            with open(os.path.join(folder, "manifest.json"), "w") as f:
                json.dump(
                    {
                        "manifest_version": 2,
                        "name": f"ext{n:03d}",
                        "version": "1.0",
                        "permissions": [f"tcp-listen:127.0.0.1:{port}"],
                        "background": {"scripts": ["background.py"]},
                    },
                    f,
                )
            with open(os.path.join(folder, "background.py"), "w") as f:
                f.write(EXTENSION.replace("PORT", str(port)))
        logPath = os.path.join(base, "twistd.log")
        started = time.perf_counter()
        twistd = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "--logfile",
                logPath,
                "tcpext",
                "--state",
                os.path.join(base, "state"),
                "--admin",
                "none",
                "--extensions",
                extensions,
                "--isolation",
                "process",
                *MODES[mode],
            ],
            env=_environment(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wanted = set(ports)
            elapsed: float | None = None
            while True:
                up = len(wanted & listening())
                if up == count:
                    elapsed = time.perf_counter() - started
                    break
                if time.perf_counter() - started > timeout:
                    break
                if twistd.poll() is not None:
                    raise RuntimeError(f"{mode}: twistd exited ({twistd.returncode})")
                time.sleep(0.02)
            with open(logPath, encoding="utf-8", errors="replace") as f:
                log = f.read()
            if mode == "template" and "afresh" in log:
                raise RuntimeError("template: a process was started afresh")
            children = [p for p in map(pss, _pids(log, "extension process ")) if p]
            templates = [p for p in map(pss, _pids(log, "template process ")) if p]
            if not children:
                raise RuntimeError(f"{mode}: no extension process runs")
            return {
                "listen_s": elapsed,
                "listening": up,
                "restarts": log.count("restarting in"),
                "child_pss_mib": sum(children) / len(children) / (1 << 20),
                "total_pss_mib": (
                    sum(children) + sum(templates) + (pss(twistd.pid) or 0)
                )
                / (1 << 20),
                "host_pss_mib": (pss(twistd.pid) or 0) / (1 << 20),
                "template_pss_mib": sum(templates) / (1 << 20),
            }
        finally:
            twistd.send_signal(signal.SIGTERM)
            try:
                twistd.wait(120)
            except subprocess.TimeoutExpired:
                twistd.kill()
                twistd.wait()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str]) -> int:
    """
    Measure each N in both modes and print the table.
    """
    parser = argparse.ArgumentParser(prog="bench_template.py")
    parser.add_argument("--counts", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    results: list[dict[str, Any]] = []
    for index, count in enumerate(args.counts):
        order = args.modes if index % 2 == 0 else list(reversed(args.modes))
        for mode in order:
            result = oneRun(mode, count, args.timeout)
            result.update(mode=mode, count=count)
            results.append(result)
    print(
        f"{'N':>4}  {'mode':<9} {'all listen s':>12} {'child PSS MiB':>13} "
        f"{'template MiB':>12} {'host MiB':>9} {'total MiB':>10}"
    )
    for r in sorted(results, key=lambda r: (r["count"], r["mode"] != "template")):
        if r["listen_s"] is None:
            when = f">{args.timeout:.0f} ({r['listening']} up)"
        else:
            when = f"{r['listen_s']:.2f}"
        print(
            f"{r['count']:>4}  {r['mode']:<9} {when:>12} "
            f"{r['child_pss_mib']:>13.1f} {r['template_pss_mib']:>12.1f} "
            f"{r['host_pss_mib']:>9.1f} {r['total_pss_mib']:>10.1f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
