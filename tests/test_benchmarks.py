# -*- test-case-name: tests.test_benchmarks -*-
"""
Smoke tests of the benchmark runner (C{benchmarks/run.py}): on tiny sizes it
runs every workload with every implementation, produces well-formed results,
and catches damaged data.  No timing is asserted.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from types import ModuleType
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNNER = os.path.join(ROOT, "benchmarks", "run.py")

#: Small enough for the whole matrix to take seconds.
TINY = "0.002"


def loadRunner() -> ModuleType:
    """
    Import C{benchmarks/run.py} (not a package) as a module.
    """
    spec = importlib.util.spec_from_file_location("tcpext_bench_run", RUNNER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def runRunner(*arguments: str) -> tuple[int, dict[str, Any], str]:
    """
    Run the runner in a subprocess; return its exit status, JSON report and
    Markdown report.
    """
    with tempfile.TemporaryDirectory() as directory:
        jsonPath = os.path.join(directory, "r.json")
        markdownPath = os.path.join(directory, "r.md")
        done = subprocess.run(
            [
                sys.executable,
                RUNNER,
                "--scale",
                TINY,
                "--rounds",
                "1",
                "--w8-rounds",
                "1",
                "--timeout",
                "60",
                "--json",
                jsonPath,
                "--markdown",
                markdownPath,
                *arguments,
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        with open(jsonPath, encoding="utf-8") as f:
            report = json.load(f)
        with open(markdownPath, encoding="utf-8") as f:
            text = f.read()
    return done.returncode, report, text


class RunnerTests(SynchronousTestCase):
    """
    The runner, end to end, on tiny sizes.
    """

    def test_everyImplementation(self) -> None:
        """
        Every workload runs with every available implementation; each run
        reports a positive figure, the summary has a median for each and a
        ratio to bare Twisted, and the Markdown shows the table and targets.
        """
        runner = loadRunner()
        status, report, text = runRunner("--workloads", "W1,W2,W3,W4,W5,W6,W7,W8")
        self.assertEqual(
            [r for r in report["runs"] if not r.get("ok")], [], "failed runs"
        )
        self.assertEqual(status, 0)
        impls = [i for i in runner.IMPLS + ["iperf3"] if runner.available(i) is None]
        self.assertIn("twisted", impls)
        for workload in ["W1", "W2", "W3", "W4", "W5", "W6", "W8"]:
            expected = [i for i in impls if runner.runs(i, workload)]
            byImpl = report["summary"][workload]
            self.assertEqual(sorted(byImpl), sorted(expected), workload)
            for impl, entry in byImpl.items():
                self.assertEqual(len(entry["values"]), 1, (workload, impl))
                self.assertGreater(entry["median"], 0, (workload, impl))
                self.assertIsNotNone(entry["ratio"], (workload, impl))
        for workload in ["W4", "W5", "W8"]:
            self.assertIn("tcpext-idiom", report["summary"][workload])
        self.assertNotIn("tcpext-idiom", report["summary"]["W1"])
        self.assertEqual(sorted(report["summary"]["W4"]).count("floor"), 1)
        self.assertIn("floor", report["summary"]["W8"])
        self.assertIn("| tcpext-idiom | /twisted |", text)
        self.assertEqual(report["summary"]["W1"]["twisted"]["ratio"], 1.0)
        for entry in report["summary"]["W8"].values():
            self.assertGreater(entry["peakRssKiB"], 0)
        self.assertIn("GLIBC_TUNABLES=glibc.malloc.mmap_threshold", text)
        self.assertIn("| W1 bulk", text)
        self.assertIn("## Targets", text)
        self.assertEqual(report["machine"]["cores"], os.cpu_count())
        self.assertGreater(report["w7"]["allowsConnect_us.10000"], 0)
        self.assertIn("| `allowsConnect_us` |", text)

    def test_cpuClock(self) -> None:
        """
        With C{--clock cpu} the runs are timed in CPU time, and the report
        says so.
        """
        status, report, text = runRunner(
            "--clock", "cpu", "--workloads", "W4", "--impls", "twisted,tcpext-idiom"
        )
        self.assertEqual(status, 0)
        self.assertEqual(report["clock"], "cpu")
        self.assertIn("**CPU time**", text)
        self.assertEqual(sorted(report["summary"]["W4"]), ["tcpext-idiom", "twisted"])
        for entry in report["summary"]["W4"].values():
            self.assertGreater(entry["median"], 0)

    def test_detectsCorruption(self) -> None:
        """
        With C{--corrupt} (an echo server flips a byte, a bulk sender drops
        one), every run of the checked workloads fails with a message saying
        what was wrong, and the runner exits with status 1.
        """
        status, report, text = runRunner(
            "--corrupt",
            "--workloads",
            "W1,W2,W3,W8",
            "--impls",
            "twisted,asyncio,tcpext,tcpext-idiom,floor",
        )
        self.assertEqual(status, 1)
        runs = report["runs"]
        self.assertTrue(runs)
        for run in runs:
            self.assertFalse(run.get("ok"), run)
            self.assertRegex(
                run["error"],
                "corrupted|expected|checksum",
                (run["workload"], run["impl"]),
            )
        self.assertIn("## Failed runs", text)


class HelperTests(SynchronousTestCase):
    """
    The runner's pure helpers.
    """

    def setUp(self) -> None:
        self.runner = loadRunner()

    def test_rotate(self) -> None:
        """
        Each round starts with a different implementation.
        """
        items = ["a", "b", "c"]
        self.assertEqual(
            [self.runner.rotate(items, r) for r in range(4)],
            [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]],
        )

    def test_badArguments(self) -> None:
        """
        An unknown workload or implementation, or no rounds, is refused.
        """
        for argv in (
            ["--workloads", "W9"],
            ["--clock", "sundial"],
            ["--impls", "nodejs"],
            ["--rounds", "0"],
            ["--w8-rounds", "0"],
        ):
            self.assertRaises(SystemExit, self.runner.parseArguments, argv)

    def test_quickScales(self) -> None:
        """
        C{--quick} divides the sizes by 16; the default is the full size.
        """
        self.assertEqual(self.runner.parseArguments([]).scale, 1.0)
        self.assertEqual(self.runner.parseArguments(["--quick"]).scale, 1 / 16)

    def test_lastJsonLine(self) -> None:
        """
        The child's result is the last JSON line; no JSON is an error.
        """
        self.assertEqual(
            self.runner.lastJsonLine('noise\n{"ok": true}\n\n'), {"ok": True}
        )
        self.assertRaises(ValueError, self.runner.lastJsonLine, "Traceback\n")

    def test_permissionAt(self) -> None:
        """
        The W7 figure for 10,000 grants is found in a flattened report.
        """
        figures = self.runner.permissionFigures(
            {"allowsConnect": {"10": {"us": 0.5}, "10000": {"us": 1.5}}}
        )
        self.assertEqual(self.runner.permissionAt(figures, 10000), 1.5)
        self.assertEqual(self.runner.permissionAt(figures, 10), 0.5)

    def test_targets(self) -> None:
        """
        Ratios are judged against the issue's targets, in the right direction.
        """
        report = {
            "summary": {
                "W1": {
                    "twisted": {"median": 100.0, "ratio": 1.0},
                    "tcpext": {"median": 95.0, "ratio": 0.95},
                    "asyncio": {"median": 96.0, "ratio": 0.96},
                },
                "W5": {
                    "twisted": {"median": 2.0, "ratio": 1.0},
                    "tcpext": {"median": 4.0, "ratio": 2.0},
                    "tcpext-idiom": {"median": 3.5, "ratio": 1.75},
                    "asyncio": {"median": 8.0, "ratio": 4.0},
                },
                "W8": {
                    "twisted": {"median": 100.0, "ratio": 1.0},
                    "tcpext": {
                        "median": 70.0,
                        "ratio": 0.7,
                        "values": [70.0],
                        "failures": [],
                    },
                    "tcpext-idiom": {
                        "median": 85.0,
                        "ratio": 0.85,
                        "values": [85.0],
                        "failures": ["timed out"],
                    },
                },
            }
        }
        met = {t["target"]: t["met"] for t in self.runner.targets(report)}
        self.assertEqual(
            met,
            {
                "W1 tcpext/bare Twisted >= 0.90": True,
                "W5 tcpext/bare Twisted <= 1.50": False,
                "W5 tcpext-idiom/bare Twisted <= 1.80": True,
                "W8 best of tcpext and tcpext-idiom/bare Twisted >= 0.80": True,
                "W1 tcpext ahead of asyncio streams (tcpext/asyncio)": False,
                "W5 tcpext ahead of asyncio streams (tcpext/asyncio)": True,
                "W8 completes, nothing lost (tcpext rounds passed)": True,
                "W8 completes, nothing lost (tcpext-idiom rounds passed)": False,
            },
        )
        figures = {t["target"]: t["figure"] for t in self.runner.targets(report)}
        self.assertEqual(
            figures["W8 best of tcpext and tcpext-idiom/bare Twisted >= 0.80"], 0.85
        )

    def test_w7Table(self) -> None:
        """
        W7's flattened figures become one row per measure and one column per
        number of grants; other figures are listed below.
        """
        lines = self.runner.w7Table(
            {"a_us.10": 1.0, "a_us.10000": 2.0, "repetitions": 7.0}
        )
        self.assertEqual(
            lines,
            [
                "| measure | 10 grants | 10,000 grants |",
                "|---|---:|---:|",
                "| `a_us` | 1.00 | 2.00 |",
                "",
                "- `repetitions`: 7.00",
            ],
        )


def runChild(
    impl: str, workload: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """
    Run C{_child.py IMPL WORKLOAD} on tiny sizes; its JSON result.
    """
    done = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "_child.py"),
            impl,
            workload,
            json.dumps({"scale": float(TINY), **(params or {})}),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=os.path.join(ROOT, "benchmarks"),
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


class CountTests(SynchronousTestCase):
    """
    The per-connection counts of the user idiom
    (C{benchmarks/count_idiom.py}).
    """

    def test_counts(self) -> None:
        """
        It reports, for each phase of a connection and in total, the
        Deferreds, coroutine steps and calls per connection pair, and the
        loopback cycles' counts; every connection takes some of each.
        """
        done = subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "benchmarks", "count_idiom.py"),
                "--pairs",
                "5",
                "--cycles",
                "5",
                "--json",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
        self.assertEqual(done.returncode, 0, done.stderr)
        report = json.loads(done.stdout)
        phases = report["phases"]
        self.assertEqual(
            list(phases), ["connect", "accept", "open", "first read", "close", "total"]
        )
        total = phases["total"]
        self.assertGreater(total["deferreds"], 0)
        self.assertGreater(total["coroutineSteps"], total["coroutinesStarted"])
        self.assertEqual(total["coroutinesStarted"], 2)
        self.assertGreater(total["tcpextCalls"], 0)
        self.assertGreater(report["loopback"]["deferreds"], 0)


class IdiomTests(SynchronousTestCase):
    """
    The user-idiom variant (C{tcpext-idiom}) has W4, W5 and W8 only.
    """

    def test_otherWorkloads(self) -> None:
        """
        A workload it has no version of is refused with a message that says
        so (the runner never asks for one).
        """
        result = runChild("tcpext-idiom", "W2")
        self.assertFalse(result["ok"])
        self.assertIn("no W2", result["error"])


class FloorTests(SynchronousTestCase):
    """
    The floor implementation (C{benchmarks/impl_floor.py}): the least a
    Deferred-returning API costs, compared in the runner's W4, W6 and W8
    (W8, which needs its server process, runs in the runner tests).
    """

    def child(self, workload: str) -> dict[str, Any]:
        """
        Run C{_child.py floor WORKLOAD} on tiny sizes; its JSON result.
        """
        return runChild("floor", workload)

    def test_connectionRate(self) -> None:
        """
        The floor runs W4's cycles and reports a positive rate.
        """
        result = self.child("W4")
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["unit"], "conn/s")
        self.assertGreater(result["value"], 0)

    def test_tlsBulk(self) -> None:
        """
        The floor runs W6 (TLS bulk) and reports a throughput.
        """
        runner = loadRunner()
        with tempfile.TemporaryDirectory() as certDir:
            runner.makeCertificate(certDir)
            result = runChild("floor", "W6", {"certDir": certDir})
        self.assertTrue(result["ok"], result)
        self.assertEqual(result["unit"], "MiB/s")
        self.assertGreater(result["value"], 0)

    def test_otherWorkloads(self) -> None:
        """
        Any other workload is refused with a message that says so.
        """
        result = self.child("W1")
        self.assertFalse(result["ok"])
        self.assertIn("no W1", result["error"])
