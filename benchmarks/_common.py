# -*- test-case-name: tests.test_benchmarks -*-
"""
What every benchmark implementation shares: workload sizes, the data sent,
how results are reported and how memory is read.

Each implementation module (C{impl_twisted}, C{impl_asyncio}, C{impl_tcpext})
exposes C{run(workload, params) -> dict} and is only ever imported by
C{_child.py}, in a fresh process per run.
"""

from __future__ import annotations

import gc
import os
import resource
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

KiB = 1024
MiB = 1024 * KiB

#: The sizes of the full run; C{--quick} and the smoke test scale them down.
FULL = {
    "W1": {"total": 512 * MiB, "chunk": 64 * KiB},
    "W2": {"roundTrips": 20_000, "size": 64},
    "W3": {"connections": 100, "roundTrips": 2_000, "size": 64},
    "W4": {"cycles": 5_000},
    "W5": {"connections": 5_000},
    "W6": {"total": 128 * MiB, "chunk": 64 * KiB},
    "W8": {"connections": 10_000, "perConnection": 1 * MiB, "chunk": 64 * KiB},
}

#: The fewest idle connections W5 measures at any scale.
W5_MIN_CONNECTIONS = 256

#: Connection attempts in flight at once while a workload opens many
#: connections before its measured phase (W5, W8).
CONNECT_CONCURRENCY = 200

#: The listen backlog asked for where many connections arrive at once.
BACKLOG = 4096


@dataclass(frozen=True)
class Params:
    """
    The parameters of one run, as passed from the runner to a child.

    @ivar scale: factor applied to the sizes of L{FULL} (1.0 is the full run).
    @ivar corrupt: damage the data on purpose, to prove the checks catch it.
    @ivar certDir: where the runner wrote C{cert.pem} and C{key.pem} (W6).
    @ivar port: the port of the separate server process (W8 client).
    @ivar clock: C{"wall"} (elapsed time) or C{"cpu"} (the process's CPU
        time, less sensitive to other work on the machine; see C{_child.py}).
    """

    scale: float = 1.0
    corrupt: bool = False
    certDir: str = ""
    port: int = 0
    clock: str = "wall"

    def sizes(self, workload: str) -> dict[str, int]:
        """
        The sizes of C{workload} after scaling, never below a useful minimum.
        """
        full = FULL[workload]
        out = {}
        for key, value in full.items():
            if key in ("chunk", "size"):
                out[key] = value
            else:
                out[key] = max(2, int(value * self.scale))
        if "total" in out:
            chunk = out["chunk"]
            out["total"] = max(chunk, out["total"] // chunk * chunk)
        if workload == "W5":
            # A handful of idle connections fits in the allocator's slack and
            # may not move the resident size at all: measure at least a few
            # hundred, even in a smoke run.
            out["connections"] = max(W5_MIN_CONNECTIONS, out["connections"])
        if workload == "W8":
            out["perConnection"] = max(4 * KiB, out["perConnection"])
            out["chunk"] = min(out["chunk"], out["perConnection"])
        return out


class BenchmarkFailure(Exception):
    """
    A run finished but its data was wrong (lost, reordered or corrupted) or
    it did not complete.
    """


def message(i: int, size: int) -> bytes:
    """
    The C{i}th echo message: distinct for every round trip, so a lost,
    repeated or reordered echo is seen.
    """
    stamp = i.to_bytes(8, "big")
    return (stamp * (size // 8 + 1))[:size]


def corruptOnce(data: bytes) -> bytes:
    """
    Flip the first byte of C{data}: what a broken echo server would do.
    """
    return bytes([data[0] ^ 0xFF]) + data[1:]


def bulkBlock(chunk: int) -> bytes:
    """
    The block a bulk sender writes over and over.
    """
    return bytes(range(256)) * (chunk // 256) + bytes(chunk % 256)


class ScaleData:
    """
    The data of W8: a 1 MiB pseudo-random pattern, rotated by an offset that
    depends on the connection, so connections whose streams were swapped or
    mixed are caught by their checksums.
    """

    def __init__(self, perConnection: int, chunk: int) -> None:
        """
        @param perConnection: bytes each connection sends and gets back.
        @param chunk: the size of each write.
        """
        self.perConnection = perConnection
        self.chunk = chunk
        seed = bytearray()
        counter = 0
        while len(seed) < perConnection:
            seed += zlib.crc32(counter.to_bytes(8, "big")).to_bytes(4, "big") * 16
            counter += 1
        base = bytes(seed[:perConnection])
        self._doubled = base + base
        self._expected: dict[int, int] = {}

    def offset(self, index: int) -> int:
        """
        Where connection C{index} starts in the pattern.
        """
        return (index % 251) * 4177 % self.perConnection

    def chunks(self, index: int) -> Iterator[bytes]:
        """
        The writes connection C{index} makes, in order, made one at a time
        (10,000 connections holding all their data at once would be 10 GiB).
        """
        start = self.offset(index)
        doubled = self._doubled
        for at in range(0, self.perConnection, self.chunk):
            yield doubled[start + at : start + min(at + self.chunk, self.perConnection)]

    def expectedChecksum(self, index: int) -> int:
        """
        The CRC-32 of everything connection C{index} sends.
        """
        start = self.offset(index)
        crc = self._expected.get(start)
        if crc is None:
            crc = zlib.crc32(self._doubled[start : start + self.perConnection])
            self._expected[start] = crc
        return crc


class ScaleTally:
    """
    Checks the echoes of W8 and counts what came back whole.
    """

    def __init__(self, data: ScaleData, connections: int) -> None:
        """
        @param data: what was sent.
        @param connections: how many connections take part.
        """
        self.data = data
        self.connections = connections
        self.verified = 0
        self.errors: list[str] = []

    def check(self, index: int, received: int, crc: int) -> None:
        """
        Record the outcome of connection C{index}.
        """
        if received != self.data.perConnection:
            self.errors.append(
                f"connection {index}: got {received} bytes back, "
                f"expected {self.data.perConnection}"
            )
        elif crc != self.data.expectedChecksum(index):
            self.errors.append(f"connection {index}: checksum mismatch (corrupted)")
        else:
            self.verified += 1

    def result(self, elapsed: float, connectTime: float) -> dict[str, Any]:
        """
        The result of the run, or L{BenchmarkFailure} if anything was lost.
        """
        if self.errors or self.verified != self.connections:
            shown = "; ".join(self.errors[:3])
            raise BenchmarkFailure(
                f"{self.connections - self.verified} of {self.connections} "
                f"connections failed: {shown}"
            )
        total = self.connections * self.data.perConnection
        return {
            "value": total / MiB / elapsed,
            "unit": "MiB/s",
            "extra": {
                "seconds": elapsed,
                "connectSeconds": connectTime,
                "connections": self.connections,
                "verified": self.verified,
                "clientPeakRssKiB": peakRssKiB(),
            },
        }


def checkEcho(got: bytes, expected: bytes, i: int) -> None:
    """
    Raise L{BenchmarkFailure} if an echo is not what was sent.
    """
    if got != expected:
        raise BenchmarkFailure(f"round trip {i}: echo corrupted or out of order")


def checkBulk(received: int, total: int) -> None:
    """
    Raise L{BenchmarkFailure} if a bulk receiver did not get every byte.
    """
    if received != total:
        raise BenchmarkFailure(f"received {received} bytes, expected {total}")


def rssBytes() -> int:
    """
    The resident set size of this process now, after a garbage collection.
    """
    gc.collect()
    with open("/proc/self/statm") as f:
        resident = int(f.read().split()[1])
    return resident * os.sysconf("SC_PAGE_SIZE")


def peakRssKiB() -> int:
    """
    The peak resident set size of this process, in KiB.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def raiseFileLimit() -> int:
    """
    Raise the soft limit on open files to the hard limit, for the workloads
    that hold thousands of connections; return the new limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def memoryResult(before: int, after: int, connections: int) -> dict[str, Any]:
    """
    The W5 result: resident memory per open connection, both ends, in KiB.
    """
    return {
        "value": (after - before) / connections / KiB,
        "unit": "KiB/conn",
        "extra": {"connections": connections, "rssBefore": before, "rssAfter": after},
    }


def rate(count: int, elapsed: float, unit: str) -> dict[str, Any]:
    """
    A result counting C{count} things in C{elapsed} seconds.
    """
    return {"value": count / elapsed, "unit": unit, "extra": {"seconds": elapsed}}


def throughput(total: int, elapsed: float) -> dict[str, Any]:
    """
    A bulk result in MiB/s.
    """
    return {
        "value": total / MiB / elapsed,
        "unit": "MiB/s",
        "extra": {"seconds": elapsed},
    }
