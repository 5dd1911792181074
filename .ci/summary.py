"""
Print trial's result as one plain line: C{N passed, N failed, N skipped}.

Trial ends its output with a line such as
C{FAILED (skips=2, failures=1, successes=40)}; this turns it into the plain
summary line that CI reads.
"""

import re
import sys


def summarize(text: str) -> str:
    """
    Build the summary line from trial's output.

    @param text: everything trial printed.
    @return: C{"tests: N passed, N failed, N skipped"}.
    """
    counts = {}
    matches = re.findall(r"^(?:PASSED|FAILED) \(([^)]*)\)\s*$", text, re.M)
    if matches:
        for part in matches[-1].split(","):
            key, _, value = part.strip().partition("=")
            counts[key] = int(value)
    passed = counts.get("successes", 0)
    failed = sum(
        counts.get(k, 0) for k in ("failures", "errors", "unexpectedSuccesses")
    )
    skipped = counts.get("skips", 0) + counts.get("expectedFailures", 0)
    return f"tests: {passed} passed, {failed} failed, {skipped} skipped"


if __name__ == "__main__":
    with open(sys.argv[1], encoding="utf-8", errors="replace") as f:
        print(summarize(f.read()))
