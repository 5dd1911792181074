#!/usr/bin/env python
# -*- test-case-name: tests.test_isolation -*-
"""
W1 (bulk: 512 MiB in 64 KiB writes) sent by an extension through
C{browser.TCPSocket}, in-process (C{--isolation none}) and isolated
(C{--isolation process}: its own process and network namespace, the socket
brokered by the host), its process started afresh (C{isolated}) or forked
from the preloaded template (C{forked}, what C{twistd tcpext} does by
default), reported side by side.

    python benchmarks/bench_isolation.py                  # 5 rounds, full size
    python benchmarks/bench_isolation.py --total 64 --rounds 3 --json r.json

Every round starts a fresh sink process (a plain blocking socket that counts
bytes and times first byte to EOF) and a fresh host process; the modes
alternate, and the order rotates every round. glibc's malloc thresholds are
pinned in every process (see CONVENTIONS.md). The figure is the sink's
throughput; the host and extension start-up time is reported separately.

On a machine busy with other work the elapsed-time figure swings from run
to run, so the CPU time the sending side used during the transfer (the host
and every process under it: the extension's process, isolated) is measured
too, from first byte to end of stream, and reported as MiB per CPU second:
what the sender would reach with a CPU to itself.
"""

from __future__ import annotations

import argparse
import json
import os
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
MODES = ["in-process", "isolated", "forked"]

EXTENSION = """
import time

async def main(browser):
    sock = await browser.TCPSocket.connect(host="127.0.0.1", port=PORT)
    await sock.opened
    block = b"x" * CHUNK
    for _ in range(COUNT):
        await sock.write(block)
    await sock.close()
"""


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["GLIBC_TUNABLES"] = GLIBC_TUNABLES
    env["PYTHONPATH"] = ROOT + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    return env


def sink() -> int:
    """
    Accept one connection, count bytes until EOF, print a JSON result.
    """
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    print(server.getsockname()[1], flush=True)
    conn, _ = server.accept()
    buffer = bytearray(1 << 20)
    view = memoryview(buffer)
    received = 0
    first = None
    while True:
        n = conn.recv_into(view)
        if first is None:
            first = time.perf_counter()
            print("first", flush=True)
        if not n:
            break
        received += n
    elapsed = time.perf_counter() - (first or time.perf_counter())
    print(json.dumps({"bytes": received, "seconds": elapsed}), flush=True)
    return 0


def host(mode: str, folder: str) -> int:
    """
    Run the extension in C{folder} in-process or isolated until SIGTERM.
    """
    from twisted.internet import reactor
    from twisted.logger import Logger

    with open(os.path.join(folder, "manifest.json")) as f:
        manifest = json.load(f)
    log = Logger(namespace="bench", observer=lambda event: None)
    if mode in ("isolated", "forked"):
        from tcpext._isolation import checkNetworkNamespace
        from tcpext._supervisor import IsolatedExtension
        from tcpext._zygote import Zygote

        checkNetworkNamespace()
        spawnProcess = None
        if mode == "forked":
            zygote = Zygote(reactor, log=log)
            if not zygote.start():
                raise RuntimeError("the template did not start")
            spawnProcess = zygote.spawnProcess
        service = IsolatedExtension(
            path=folder,
            extensionId="bulk",
            manifest=manifest,
            reactor=reactor,
            log=log,
            spawnProcess=spawnProcess,
        )
        reactor.callWhenRunning(service.startService)  # type: ignore[attr-defined]
        reactor.addSystemEventTrigger(  # type: ignore[attr-defined]
            "before", "shutdown", service.stopService
        )
    else:
        from tcpext.browser import makeBrowser
        from tcpext.extension import loadMain, loadManifest

        browser = makeBrowser(
            extensionId="bulk", manifest=manifest, reactor=reactor, log=log
        )
        mainFunction = loadMain(loadManifest(folder))

        def start() -> None:
            from twisted.internet.defer import ensureDeferred

            result = mainFunction(browser)
            if hasattr(result, "__await__"):
                ensureDeferred(result)

        reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    # The reactor's own handlers: SIGTERM stops it, SIGCHLD reaps children.
    reactor.run()  # type: ignore[attr-defined]
    return 0


def treeCPU(pid: int) -> float:
    """
    The CPU time (seconds) used so far by process C{pid} and every process
    under it, all threads.
    """
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
                with open(f"/proc/{current}/task/{task}/children") as f:
                    pending.extend(int(child) for child in f.read().split())
            except OSError:
                continue
    return total / 1e9


def oneRun(mode: str, total: int, chunk: int) -> dict[str, Any]:
    """
    One measurement: a fresh sink, a fresh host, one extension.
    """
    env = _environment()
    sinkProcess = subprocess.Popen(
        [sys.executable, __file__, "--sink"], stdout=subprocess.PIPE, text=True, env=env
    )
    assert sinkProcess.stdout is not None
    port = int(sinkProcess.stdout.readline())
    with tempfile.TemporaryDirectory() as folder:
        manifest = {
            "manifest_version": 2,
            "name": "bulk",
            "version": "1.0",
            "permissions": [f"tcp-connect:127.0.0.1:{port}"],
            "background": {"scripts": ["background.py"]},
        }
        with open(os.path.join(folder, "manifest.json"), "w") as f:
            json.dump(manifest, f)
        with open(os.path.join(folder, "background.py"), "w") as f:
            f.write(
                EXTENSION.replace("PORT", str(port))
                .replace("CHUNK", str(chunk))
                .replace("COUNT", str(total // chunk))
            )
        started = time.perf_counter()
        hostProcess = subprocess.Popen(
            [sys.executable, __file__, "--host", mode, folder], env=env
        )
        try:
            if sinkProcess.stdout.readline().strip() != "first":
                raise RuntimeError(f"{mode}: the sink did not start receiving")
            cpuBefore = treeCPU(hostProcess.pid)
            line = sinkProcess.stdout.readline()
            cpuUsed = treeCPU(hostProcess.pid) - cpuBefore
            wall = time.perf_counter() - started
        finally:
            hostProcess.send_signal(signal.SIGTERM)
            try:
                hostProcess.wait(30)
            except subprocess.TimeoutExpired:
                hostProcess.kill()
                hostProcess.wait()
            sinkProcess.kill()
            sinkProcess.wait()
    result = json.loads(line)
    if result["bytes"] != total:
        raise RuntimeError(f"{mode}: received {result['bytes']} of {total} bytes")
    mib = result["bytes"] / (1 << 20)
    return {
        "MiB/s": mib / result["seconds"],
        "MiB/cpu_s": mib / cpuUsed if cpuUsed > 0 else None,
        "startup_s": wall - result["seconds"],
    }


def main(argv: list[str]) -> int:
    """
    Run the rounds and print the side-by-side table.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--total", type=int, default=512, help="MiB (default 512)")
    parser.add_argument("--chunk", type=int, default=64, help="KiB (default 64)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--host", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sink:
        return sink()
    if args.host:
        return host(*args.host)
    total, chunk = args.total << 20, args.chunk << 10
    results: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for i in range(args.rounds):
        order = MODES[i % len(MODES) :] + MODES[: i % len(MODES)]
        for mode in order:
            results[mode].append(oneRun(mode, total, chunk))
    print(
        f"W1 bulk {args.total} MiB in {args.chunk} KiB writes through "
        f"browser.TCPSocket, median of {args.rounds} rounds"
    )
    print(
        f"{'mode':<12} {'MiB/s':>10} {'MiB/CPU s':>10} {'start-up s':>11}   "
        "runs (MiB/s)"
    )
    summary = {}
    for mode in MODES:
        rates = [r["MiB/s"] for r in results[mode]]
        startup = [r["startup_s"] for r in results[mode]]
        perCPU = [r["MiB/cpu_s"] for r in results[mode] if r["MiB/cpu_s"]]
        summary[mode] = {
            "MiB/s": statistics.median(rates),
            "MiB/cpu_s": statistics.median(perCPU) if perCPU else None,
            "startup_s": statistics.median(startup),
            "runs": rates,
            "runs_cpu": perCPU,
        }
        print(
            f"{mode:<12} {summary[mode]['MiB/s']:>10.0f} "
            f"{summary[mode]['MiB/cpu_s'] or 0:>10.0f} "
            f"{summary[mode]['startup_s']:>11.2f}   "
            + ", ".join(f"{r:.0f}" for r in rates)
        )
    ratios = {
        mode: summary[mode]["MiB/s"] / summary["in-process"]["MiB/s"]
        for mode in ("isolated", "forked")
    }
    cpuRatios = {
        mode: (summary[mode]["MiB/cpu_s"] or 0)
        / (summary["in-process"]["MiB/cpu_s"] or 1)
        for mode in ("isolated", "forked")
    }
    for mode, ratio in ratios.items():
        print(
            f"{mode} / in-process: {ratio:.2f} (per CPU second: {cpuRatios[mode]:.2f})"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "summary": summary,
                    "ratio": ratios["isolated"],
                    "ratios": ratios,
                    "cpu_ratios": cpuRatios,
                },
                f,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
