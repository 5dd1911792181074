#!/usr/bin/env python
# -*- test-case-name: tests.test_libraries -*-
"""
A twisted.web C{Site} under load (apache2-utils' C{ab}), served side by
side in the same run by:

 - C{twistd web --path} (the static file only);
 - plain C{twistd -y} running the same C{Site} code on the global reactor;
 - that code as an extension of C{twistd tcpext --isolation none};
 - the same extension under C{--isolation process};

each with the access log on and (C{--no-log} variants) off.  The site
serves a 1.4 kB static file (C{static.File}) and a small C{Resource}.  The
servers alternate, the order flipping every round; the report gives the
median requests per second of each, the failed requests, and the
access-log lines kept and reported dropped (an isolated extension's output
is rate-limited by the host).

    python benchmarks/bench_site.py                     # 3 rounds, -n 3000 -c 10
    python benchmarks/bench_site.py --rounds 5 --requests 5000 --concurrency 100
    python benchmarks/bench_site.py --servers none,process

glibc's malloc thresholds are pinned (see CONVENTIONS.md).  Needs C{ab}
(Debian: apache2-utils).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
GLIBC_TUNABLES = (
    "glibc.malloc.mmap_threshold=1048576:glibc.malloc.trim_threshold=4194304"
)
SERVERS = [
    "twistd-web",
    "twistd",
    "none",
    "process",
    "twistd-nolog",
    "none-nolog",
    "process-nolog",
]
PATHS = ["/page.txt", "/hello"]
PAGE = (b"0123456789abcdef" * 4 + b"\n") * 21

BACKGROUND = """
import json
import os

from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import File

HERE = os.path.dirname(os.path.abspath(__file__))


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"hello from a resource"


class QuietSite(Site):
    def log(self, request):
        pass


def main(browser):
    with open(os.path.join(HERE, "config.json")) as f:
        config = json.load(f)
    root = File(os.path.join(HERE, "static"))
    root.putChild(b"hello", Hello())
    site = (Site if config["accessLog"] else QuietSite)(root)
    browser.reactor.listenTCP(config["port"], site, interface="127.0.0.1")
"""

TAC = """
import importlib.util
import types

from twisted.application import service
from twisted.internet import reactor

spec = importlib.util.spec_from_file_location("site_background", SCRIPT)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
application = service.Application("site")
reactor.callWhenRunning(module.main, types.SimpleNamespace(reactor=reactor))
"""


def freePort() -> int:
    """
    A port that was free on 127.0.0.1 a moment ago.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def makeSite(folder: str, port: int, accessLog: bool) -> str:
    """
    Write the site's extension folder (manifest, script, config, static
    file) and return its path.
    """
    os.makedirs(os.path.join(folder, "static"))
    with open(os.path.join(folder, "static", "page.txt"), "wb") as f:
        f.write(PAGE)
    with open(os.path.join(folder, "background.py"), "w") as f:
        f.write(BACKGROUND)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"port": port, "accessLog": accessLog}, f)
    manifest = {
        "manifest_version": 2,
        "name": "site",
        "version": "1.0",
        "permissions": [f"tcp-listen:127.0.0.1:{port}"],
        "background": {"scripts": ["background.py"]},
    }
    with open(os.path.join(folder, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return folder


def start(server: str, port: int, base: str) -> tuple[subprocess.Popen[bytes], str]:
    """
    Start C{server} listening on C{port}; return the process and its log
    path once the port answers (bounded).
    """
    quiet = server.endswith("-nolog")
    kind = server.removesuffix("-nolog")
    log = os.path.join(base, "twistd.log")
    folder = makeSite(os.path.join(base, "site"), port, not quiet)
    if kind == "twistd-web":
        args = ["web", "--listen", f"tcp:{port}:interface=127.0.0.1"]
        args += ["--path", os.path.join(folder, "static")]
    elif kind == "twistd":
        tac = os.path.join(base, "site.tac")
        with open(tac, "w") as f:
            script = os.path.join(folder, "background.py")
            f.write(TAC.replace("SCRIPT", repr(script)))
        args = ["-y", tac]
    else:
        args = ["tcpext", "--state", os.path.join(base, "state"), "--admin", "none"]
        args += ["--isolation", kind, "--extension", folder]
    env = dict(os.environ, GLIBC_TUNABLES=GLIBC_TUNABLES)
    env["PYTHONPATH"] = ROOT + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    command = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
    command += ["-n", "--pidfile=", "--logfile", log, *args]
    with open(os.path.join(base, "output"), "wb") as output:
        process = subprocess.Popen(
            command, cwd=base, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server} exited; see {base}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, log
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{server} did not listen within 60 s; see {base}")


def ab(port: int, path: str, requests: int, concurrency: int) -> tuple[float, int]:
    """
    Run C{ab}; return requests per second and failed (or non-2xx)
    requests.
    """
    url = f"http://127.0.0.1:{port}{path}"
    command = ["ab", "-q", "-n", str(requests), "-c", str(concurrency), url]
    out = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=True
    ).stdout
    rate = re.search(r"Requests per second:\s+([\d.]+)", out)
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    non2xx = re.search(r"Non-2xx responses:\s+(\d+)", out)
    if rate is None or failed is None:
        raise RuntimeError(f"unexpected output of ab:\n{out}")
    return float(rate.group(1)), int(failed.group(1)) + (
        int(non2xx.group(1)) if non2xx else 0
    )


def logCounts(log: str) -> tuple[int, int]:
    """
    Access-log lines kept in the log (rotated parts included) and the
    lines reported dropped.
    """
    text = ""
    for path in glob.glob(log + "*"):
        with open(path, encoding="utf-8", errors="replace") as f:
            text += f.read()
    dropped = re.findall(r"(\d+) lines of output from \S+ dropped", text)
    return text.count('"GET '), sum(int(n) for n in dropped)


def main(argv: list[str] | None = None) -> int:
    """
    Run the rounds and print the report (and, with C{--json}, write it).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--json", help="also write the results to this file")
    options = parser.parse_args(argv)
    servers = options.servers.split(",")
    unknown = sorted(set(servers) - set(SERVERS))
    if unknown:
        parser.error(f"unknown servers {unknown}; known: {', '.join(SERVERS)}")
    if shutil.which("ab") is None:
        print("bench_site: needs ab (Debian: apache2-utils)", file=sys.stderr)
        return 1
    rates: dict[str, dict[str, list[float]]] = {s: {} for s in servers}
    failures = {s: 0 for s in servers}
    logs: dict[str, list[tuple[int, int]]] = {s: [] for s in servers}
    scratch = tempfile.mkdtemp(prefix="bench_site-")
    try:
        for round in range(options.rounds):
            order = servers if round % 2 == 0 else servers[::-1]
            for server in order:
                base = os.path.join(scratch, f"{server}-{round}")
                os.makedirs(base)
                port = freePort()
                process, log = start(server, port, base)
                try:
                    ab(port, PATHS[0], 200, options.concurrency)
                    for path in PATHS:
                        if server.startswith("twistd-web") and path != "/page.txt":
                            continue
                        rate, failed = ab(
                            port, path, options.requests, options.concurrency
                        )
                        rates[server].setdefault(path, []).append(rate)
                        failures[server] += failed
                        print(
                            f"round {round} {server:14} {path:10} {rate:8.0f} req/s"
                            f" failed {failed} load {os.getloadavg()[0]:.1f}",
                            flush=True,
                        )
                finally:
                    process.send_signal(signal.SIGTERM)
                    process.wait(60)
                logs[server].append(logCounts(log))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = {
        server: {
            "medians": {p: statistics.median(r) for p, r in rates[server].items()},
            "rates": rates[server],
            "failed": failures[server],
            "logLinesKeptDropped": logs[server],
        }
        for server in servers
    }
    print(
        f"\n{'server':14} {'static file':>12} {'resource':>10} failed  log kept/dropped"
    )
    for server, row in report.items():
        medians = row["medians"]
        static = medians.get("/page.txt")
        resource = medians.get("/hello")
        kept, dropped = logs[server][-1] if logs[server] else (0, 0)
        print(
            f"{server:14} {static or 0:12.0f} {resource or 0:10.0f} "
            f"{row['failed']:6}  {kept}/{dropped} (last round)"
        )
    if options.json:
        with open(options.json, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
