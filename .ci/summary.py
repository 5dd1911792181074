"""
Print trial's results as plain lines: one per log, C{python 3.X.Y: N passed,
N failed, N skipped} (named after the log file), then, last, the total
C{tests: N passed, N failed, N skipped}, which CI reads.

Trial ends its output with a line such as
C{FAILED (skips=2, failures=1, successes=40)}; a log without such a line
(trial did not finish) counts as one failure.

    python .ci/summary.py LOG [LOG ...]
"""

import os
import re
import sys


def counts(text: str) -> tuple[int, int, int]:
    """
    The passed, failed and skipped counts of one trial run.

    @param text: everything trial printed.
    @return: C{(passed, failed, skipped)}.
    """
    found = {}
    matches = re.findall(r"^(?:PASSED|FAILED) \(([^)]*)\)\s*$", text, re.M)
    if not matches:
        return 0, 1, 0
    for part in matches[-1].split(","):
        key, _, value = part.strip().partition("=")
        found[key] = int(value)
    passed = found.get("successes", 0)
    failed = sum(found.get(k, 0) for k in ("failures", "errors", "unexpectedSuccesses"))
    skipped = found.get("skips", 0) + found.get("expectedFailures", 0)
    return passed, failed, skipped


def line(label: str, passed: int, failed: int, skipped: int) -> str:
    """
    One summary line.
    """
    return f"{label}: {passed} passed, {failed} failed, {skipped} skipped"


def summarize(text: str) -> str:
    """
    The closing line for one trial run.

    @param text: everything trial printed.
    @return: C{"tests: N passed, N failed, N skipped"}.
    """
    return line("tests", *counts(text))


def main(paths: list[str]) -> None:
    """
    Print a line per log, then the total.
    """
    total = [0, 0, 0]
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            result = counts(f.read())
        label = os.path.splitext(os.path.basename(path))[0]
        if len(paths) > 1:
            print(line(f"python {label}", *result))
        total = [a + b for a, b in zip(total, result, strict=True)]
    print(line("tests", *total))


if __name__ == "__main__":
    main(sys.argv[1:])
