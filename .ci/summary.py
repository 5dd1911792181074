"""
Print trial's results as plain lines: one per log, C{python 3.X.Y: N passed,
N failed, N skipped} (named after the log file), then, last, the total
C{tests: N passed, N failed, N skipped}, which CI reads.

Trial ends its output with a line such as
C{FAILED (skips=2, failures=1, successes=40)}; a log without such a line
(trial did not finish) counts as one failure.

    python .ci/summary.py [--no-skips] LOG [LOG ...]

With C{--no-skips} (what CI passes), a skipped test fails the run: each
skipped test is named with its reason, and the exit status is 1.
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


def skips(text: str) -> list[tuple[str, str]]:
    """
    The skipped tests of one trial run and their reasons.

    Trial reports each skip as a block: a line of C{=}, C{[SKIPPED]}, the
    reason, a blank line, then the names of the tests it applies to.

    @param text: everything trial printed.
    @return: C{(test, reason)} pairs.
    """
    found = []
    for block in re.split(r"^=+\s*$", text, flags=re.M):
        lines = block.strip("\n").splitlines()
        if not lines or lines[0].strip() != "[SKIPPED]":
            continue
        body = "\n".join(lines[1:])
        reason, _, names = body.partition("\n\n")
        for name in names.splitlines():
            name = name.strip()
            if not name or name.startswith("-"):
                break
            found.append((name, reason.strip()))
    return found


def main(arguments: list[str]) -> int:
    """
    Print a line per log, then the total.

    @return: the exit status: 1 if C{--no-skips} was given and a test
        skipped, else 0.
    """
    noSkips = "--no-skips" in arguments
    paths = [a for a in arguments if a != "--no-skips"]
    total = [0, 0, 0]
    skipped = []
    for path in paths:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        result = counts(text)
        label = os.path.splitext(os.path.basename(path))[0]
        if len(paths) > 1:
            print(line(f"python {label}", *result))
        total = [a + b for a, b in zip(total, result, strict=True)]
        skipped += [(label, name, reason) for name, reason in skips(text)]
    print(line("tests", *total))
    if noSkips and total[2]:
        print(f"{total[2]} skipped: under CI every test must run:")
        for label, name, reason in skipped:
            print(f"  {label}: {name}: {reason}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
