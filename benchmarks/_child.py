# -*- test-case-name: tests.test_benchmarks -*-
"""
One benchmark run in a fresh process: C{_child.py IMPL WORKLOAD PARAMS-JSON}.

It prints one JSON object on its last line of output: C{{"ok": true, "value":
..., "unit": ..., "extra": {...}}} or C{{"ok": false, "error": "..."}}.  With
the workload C{W8-server} it runs the echo server of W8 instead, prints
C{{"port": N}} once listening and serves until killed.

With C{TCPEXT_BENCH_PROFILE=PATH} in the environment the run is profiled
with cProfile and the statistics written to PATH (for C{pstats}).

With C{"clock": "cpu"} in the parameters, the timed parts are measured in
this process's CPU time (C{time.process_time}) instead of elapsed time:
every implementation times its work with C{time.perf_counter}, which is then
C{process_time}.  On a machine busy with other work, elapsed time measures
the machine as much as the code; CPU time counts only this process's own
work (client and server, which share the process in W1 to W6).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback

from _common import BenchmarkFailure, Params

IMPLS = {
    "twisted": ("impl_twisted", {}),
    "tcpext": ("impl_tcpext", {}),
    # W4, W5 and W8 in the idiom of docs/tutorial.md
    "tcpext-idiom": ("impl_tcpext", {"idiom": True}),
    # the floor of a Deferred-returning API (W4, W6, W8), and of the user idiom
    "floor": ("impl_floor", {}),
    "floor-idiom": ("impl_floor", {"idiom": True}),
    "asyncio": ("impl_asyncio", {"loop": "asyncio"}),
    "uvloop": ("impl_asyncio", {"loop": "uvloop"}),
}


def main(argv: list[str]) -> int:
    """
    Run one workload with one implementation and print its result.
    """
    implName, workload, paramsText = argv
    params = Params(**json.loads(paramsText))
    if params.clock == "cpu":
        time.perf_counter = time.process_time
    elif params.clock != "wall":
        print(json.dumps({"ok": False, "error": f"unknown clock {params.clock!r}"}))
        return 1
    moduleName, options = IMPLS[implName]
    profilePath = os.environ.get("TCPEXT_BENCH_PROFILE", "")
    profiler = None
    if profilePath:
        import cProfile

        profiler = cProfile.Profile()
    try:
        module = importlib.import_module(moduleName)
        if profiler is not None:
            result = profiler.runcall(module.run, workload, params, **options)
            profiler.dump_stats(profilePath)
        else:
            result = module.run(workload, params, **options)
    except BenchmarkFailure as e:
        print(json.dumps({"ok": False, "error": str(e)}), flush=True)
        return 1
    except BaseException as e:
        traceback.print_exc()
        error = f"{type(e).__name__}: {e}"
        print(json.dumps({"ok": False, "error": error}), flush=True)
        return 1
    result["ok"] = True
    print(json.dumps(result), flush=True)
    sys.stderr.flush()
    # Skip the teardown of thousands of connections: it is not measured, it
    # only adds time and noise (cancelled tasks, failed pending reads).
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
