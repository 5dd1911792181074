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
   share it, so the sum over all processes is the memory they really use;
 - the CPU time the start cost (host, template and extension processes,
   from C{/proc/PID/schedstat}) and the time they spent runnable but
   waiting for a CPU: on a machine shared with other work, that is where
   the elapsed time goes;
 - how busy the machine was just before each run: the load average, and
   the mean number of runnable tasks over one second (read from
   C{/proc/loadavg}; the load average is a one-minute average, so it still
   counts the processes of the previous run for a while: C{--pause} waits
   between runs).

    python benchmarks/bench_template.py                 # N = 20, 50, 100
    python benchmarks/bench_template.py --counts 5 --json r.json
    python benchmarks/bench_template.py --counts 100 --modes template --phases
    python benchmarks/bench_template.py --floor         # the kernel's part

The modes alternate for each N, the order flipping from one N to the next.
glibc's malloc thresholds are pinned (see CONVENTIONS.md).  tcpext's modules
are byte-compiled first, as an installed package's are.

C{--phases} has every extension process log when it reached each step of
its start (C{TCPEXT_START_PHASES}, see L{tcpext.sandbox.PHASES_VARIABLE})
and prints, per step, the median time and CPU time it took.

C{--floor} measures what the kernel alone costs for N processes: N processes
forked at once from a small Python process, each creating its user and
network namespaces as an extension process does (C{unshare}, the id maps,
loopback up), and nothing else.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import socket
import statistics
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
PHASES_VARIABLE = "TCPEXT_START_PHASES"

EXTENSION = """
async def main(browser):
    await browser.TCPSocket.listen(host="127.0.0.1", port=PORT)
"""


def _environment(phases: bool = False) -> dict[str, str]:
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = GLIBC_TUNABLES
    env["PYTHONPATH"] = ROOT + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    if phases:
        env[PHASES_VARIABLE] = "1"
    else:
        env.pop(PHASES_VARIABLE, None)
    return env


def compileModules() -> None:
    """
    Byte-compile tcpext (an installed package is; a source checkout run
    with C{PYTHONDONTWRITEBYTECODE} would compile every module in every
    process instead).
    """
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "tcpext")],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )


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


def schedule(pid: int) -> tuple[float, float]:
    """
    The CPU time process C{pid} (all its threads) has used, and the time it
    spent runnable waiting for a CPU, in seconds ((0, 0) if it is gone).
    """
    ran = waited = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0, 0.0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                fields = f.read().split()
        except OSError:
            continue
        ran += int(fields[0])
        waited += int(fields[1])
    return ran / 1e9, waited / 1e9


def runnable(seconds: float = 1.0) -> float:
    """
    The mean number of runnable tasks on the machine over C{seconds}, not
    counting this one.
    """
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with open("/proc/loadavg") as f:
            samples.append(int(f.read().split()[3].split("/")[0]) - 1)
        time.sleep(0.05)
    return statistics.mean(samples)


def _pids(log: str, marker: str) -> list[int]:
    return [
        int(line.split(marker)[1].split()[0])
        for line in log.splitlines()
        if marker in line and (marker != "extension process " or " started (" in line)
    ]


def _phases(log: str) -> list[dict[str, tuple[float, float]]]:
    """
    The start phases the extension processes logged.
    """
    rows = []
    for line in log.splitlines():
        if "start phases:" not in line:
            continue
        marks = {}
        for item in line.split("start phases:", 1)[1].split():
            name, value = item.split("=")
            when, cpu = value.split("/")
            marks[name] = (float(when), float(cpu))
        rows.append(marks)
    return rows


def summarisePhases(rows: list[dict[str, tuple[float, float]]]) -> list[dict[str, Any]]:
    """
    Per step of the start, the median elapsed time and CPU time it took.
    """
    if not rows:
        return []
    names = list(rows[0])
    steps = []
    for before, after in zip(names, names[1:], strict=False):
        spans = [r[after][0] - r[before][0] for r in rows if before in r and after in r]
        cpus = [r[after][1] - r[before][1] for r in rows if before in r and after in r]
        steps.append(
            {
                "step": f"{before} -> {after}",
                "median_ms": statistics.median(spans) * 1000,
                "median_cpu_ms": statistics.median(cpus) * 1000,
            }
        )
    return steps


def oneRun(mode: str, count: int, timeout: float, phases: bool) -> dict[str, Any]:
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
        busy = runnable()
        load = os.getloadavg()[0]
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
            env=_environment(phases),
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
            if phases:
                # The lines come after the listening: give them a moment.
                time.sleep(1.0)
            with open(logPath, encoding="utf-8", errors="replace") as f:
                log = f.read()
            if mode == "template" and "afresh" in log:
                raise RuntimeError("template: a process was started afresh")
            childPids = _pids(log, "extension process ")
            templatePids = _pids(log, "template process ")
            children = [p for p in map(pss, childPids) if p]
            templates = [p for p in map(pss, templatePids) if p]
            if not children:
                raise RuntimeError(f"{mode}: no extension process runs")
            host = schedule(twistd.pid)
            template = [schedule(p) for p in templatePids]
            child = [schedule(p) for p in childPids]
            result = {
                "listen_s": elapsed,
                "listening": up,
                "load": load,
                "runnable": busy,
                "restarts": log.count("restarting in"),
                "child_pss_mib": sum(children) / len(children) / (1 << 20),
                "total_pss_mib": (
                    sum(children) + sum(templates) + (pss(twistd.pid) or 0)
                )
                / (1 << 20),
                "host_pss_mib": (pss(twistd.pid) or 0) / (1 << 20),
                "template_pss_mib": sum(templates) / (1 << 20),
                "host_cpu_s": host[0],
                "template_cpu_s": sum(t[0] for t in template),
                "children_cpu_s": sum(c[0] for c in child),
                "waited_s": host[1] + sum(t[1] for t in template + child),
            }
            result["cpu_s"] = (
                result["host_cpu_s"]
                + result["template_cpu_s"]
                + result["children_cpu_s"]
            )
            if phases:
                result["phases"] = summarisePhases(_phases(log))
            return result
        finally:
            twistd.send_signal(signal.SIGTERM)
            try:
                twistd.wait(120)
            except subprocess.TimeoutExpired:
                twistd.kill()
                twistd.wait()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def floor(count: int) -> dict[str, Any]:
    """
    The kernel's part: C{count} processes forked at once, each creating its
    user and network namespaces (with the id maps and loopback up) as an
    extension process does; the time until all have, and the CPU time they
    used.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    uid, gid = os.geteuid(), os.getegid()
    doneR, doneW = os.pipe()
    load = os.getloadavg()[0]
    started = time.perf_counter()
    pids = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - a forked process
            code = 1
            try:
                before = time.process_time()
                if libc.unshare(0x10000000 | 0x40000000) != 0:
                    raise OSError(ctypes.get_errno(), "unshare")
                for path, text in (
                    ("/proc/self/setgroups", "deny"),
                    ("/proc/self/uid_map", f"{uid} {uid} 1\n"),
                    ("/proc/self/gid_map", f"{gid} {gid} 1\n"),
                ):
                    with open(path, "w") as f:
                        f.write(text)
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                import fcntl
                import struct

                flags = struct.unpack(
                    "16sh",
                    fcntl.ioctl(s.fileno(), 0x8913, struct.pack("16sh", b"lo", 0))[:18],
                )[1]
                fcntl.ioctl(s.fileno(), 0x8914, struct.pack("16sh", b"lo", flags | 1))
                s.close()
                os.write(doneW, b"%.9f\n" % (time.process_time() - before))
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    os.close(doneW)
    data = b""
    while data.count(b"\n") < count:
        chunk = os.read(doneR, 65536)
        if not chunk:
            break
        data += chunk
    elapsed = time.perf_counter() - started
    os.close(doneR)
    failed = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        failed += status != 0
    cpus = [float(x) for x in data.split()]
    return {
        "count": count,
        "done": len(cpus),
        "failed": failed,
        "load": load,
        "all_done_s": elapsed,
        "namespace_cpu_ms_median": statistics.median(cpus) * 1000 if cpus else None,
        "namespace_cpu_s_sum": sum(cpus),
    }


def main(argv: list[str]) -> int:
    """
    Measure each N in both modes and print the table.
    """
    parser = argparse.ArgumentParser(prog="bench_template.py")
    parser.add_argument("--counts", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument(
        "--phases", action="store_true", help="time each step of a child's start"
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="measure only the kernel's namespace creation for each N",
    )
    parser.add_argument(
        "--pause",
        type=float,
        default=0.0,
        help="seconds to wait before each run (the machine settles)",
    )
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    if args.floor:
        floors = [floor(count) for count in args.counts]
        print(
            f"{'N':>4} {'load':>5} {'all done s':>10} {'CPU ms each':>11} {'CPU s':>6}"
        )
        for r in floors:
            print(
                f"{r['count']:>4} {r['load']:>5.1f} {r['all_done_s']:>10.3f} "
                f"{r['namespace_cpu_ms_median']:>11.2f} "
                f"{r['namespace_cpu_s_sum']:>6.2f}"
                + (f"  ({r['failed']} failed)" if r["failed"] else "")
            )
        if args.json:
            with open(args.json, "w") as f:
                json.dump(floors, f, indent=2)
        return 0
    compileModules()
    results: list[dict[str, Any]] = []
    for index, count in enumerate(args.counts):
        order = args.modes if index % 2 == 0 else list(reversed(args.modes))
        for mode in order:
            time.sleep(args.pause)
            result = oneRun(mode, count, args.timeout, args.phases)
            result.update(mode=mode, count=count)
            results.append(result)
    print(
        f"{'N':>4}  {'mode':<9} {'load':>5} {'run.':>5} {'all listen s':>12} "
        f"{'child PSS MiB':>13} {'template MiB':>12} {'host MiB':>9} "
        f"{'total MiB':>10} {'CPU s':>6} {'waited s':>9}"
    )
    for r in sorted(results, key=lambda r: (r["count"], r["mode"] != "template")):
        if r["listen_s"] is None:
            when = f">{args.timeout:.0f} ({r['listening']} up)"
        else:
            when = f"{r['listen_s']:.2f}"
        print(
            f"{r['count']:>4}  {r['mode']:<9} {r['load']:>5.1f} "
            f"{r['runnable']:>5.1f} {when:>12} "
            f"{r['child_pss_mib']:>13.1f} {r['template_pss_mib']:>12.1f} "
            f"{r['host_pss_mib']:>9.1f} {r['total_pss_mib']:>10.1f} "
            f"{r['cpu_s']:>6.2f} {r['waited_s']:>9.1f}"
        )
    for r in results:
        if r.get("phases"):
            print(
                f"\nN = {r['count']}, {r['mode']}: median per step of a child's start"
            )
            for step in r["phases"]:
                print(
                    f"  {step['step']:<24} {step['median_ms']:>8.1f} ms "
                    f"(CPU {step['median_cpu_ms']:.2f} ms)"
                )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
