# -*- test-case-name: tests.test_metrics -*-
"""
The console's metrics, in the Prometheus text format (C{GET /metrics}).

Decisions are counted as they are made (one counter increment per audit
event, labelled by extension, verb and outcome).  Everything else (open
sockets, their bytes, child restarts) is read from the service when the
metrics are scraped, so the data path pays nothing for it.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from attrs import frozen
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)

__all__ = ["ConsoleMetrics", "ExtensionSample", "kernelByteCounts"]

# struct tcp_info (linux/tcp.h): the 64-bit counters tcpi_bytes_received
# (since Linux 4.1), tcpi_bytes_sent and tcpi_bytes_retrans (since 4.19) at
# these offsets.
_TCP_INFO_BYTES_RECEIVED = 128
_TCP_INFO_BYTES_SENT = 200
_TCP_INFO_BYTES_RETRANS = 208
_TCP_INFO_SIZE = 216


def kernelByteCounts(sock: socket.socket) -> tuple[int, int] | None:
    """
    The data bytes a TCP socket has received and sent (retransmissions
    counted once), as the kernel counts them (C{TCP_INFO}).

    @return: C{(bytesIn, bytesOut)}, or L{None} if the kernel does not tell
        (not a TCP socket, closed, or not Linux).
    """
    option = getattr(socket, "TCP_INFO", None)
    if option is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, option, _TCP_INFO_SIZE)
    except (OSError, ValueError):
        return None
    if len(info) < _TCP_INFO_SIZE:
        return None
    (received,) = struct.unpack_from("=Q", info, _TCP_INFO_BYTES_RECEIVED)
    (sent,) = struct.unpack_from("=Q", info, _TCP_INFO_BYTES_SENT)
    (retransmitted,) = struct.unpack_from("=Q", info, _TCP_INFO_BYTES_RETRANS)
    return received, max(0, sent - retransmitted)


@frozen
class ExtensionSample:
    """
    What the metrics read from one extension at a scrape.

    @ivar extension: Its id.
    @ivar sockets: How many open sockets of each kind (C{client},
        C{server}, C{accepted}).
    @ivar bytesIn: Bytes received by its open sockets so far.
    @ivar bytesOut: Bytes sent by its open sockets so far.
    @ivar restarts: How many times its child process was restarted
        (L{None} for an extension running in-process).
    @ivar state: C{running}, C{failed}, C{restarting} or C{stopped}.
    """

    extension: str
    sockets: dict[str, int]
    bytesIn: int
    bytesOut: int
    restarts: int | None
    state: str


class _LiveCollector:
    """
    Reads the live figures from the service at each scrape.
    """

    def __init__(self, sample: Callable[[], Iterable[ExtensionSample]]) -> None:
        """
        @param sample: Returns one L{ExtensionSample} per extension.
        """
        self._sample = sample

    def collect(self) -> Iterator[Metric]:
        """
        The live metric families.
        """
        sockets = GaugeMetricFamily(
            "tcpext_open_sockets",
            "Sockets open now, by extension and kind.",
            labels=["extension", "kind"],
        )
        bytesIn = GaugeMetricFamily(
            "tcpext_open_socket_bytes_in",
            "Bytes received so far by the sockets open now.",
            labels=["extension"],
        )
        bytesOut = GaugeMetricFamily(
            "tcpext_open_socket_bytes_out",
            "Bytes sent so far by the sockets open now.",
            labels=["extension"],
        )
        restarts = CounterMetricFamily(
            "tcpext_child_restarts",
            "Restarts of an isolated extension's child process.",
            labels=["extension"],
        )
        states = GaugeMetricFamily(
            "tcpext_extension_state",
            "1 for the state each extension is in.",
            labels=["extension", "state"],
        )
        for sample in self._sample():
            for kind in ("client", "server", "accepted"):
                sockets.add_metric(
                    [sample.extension, kind], sample.sockets.get(kind, 0)
                )
            bytesIn.add_metric([sample.extension], sample.bytesIn)
            bytesOut.add_metric([sample.extension], sample.bytesOut)
            if sample.restarts is not None:
                restarts.add_metric([sample.extension], sample.restarts)
            states.add_metric([sample.extension, sample.state], 1)
        yield sockets
        yield bytesIn
        yield bytesOut
        yield restarts
        yield states


class ConsoleMetrics:
    """
    The metrics of one service, in a registry of their own.
    """

    def __init__(self, sample: Callable[[], Iterable[ExtensionSample]]) -> None:
        """
        @param sample: Returns one L{ExtensionSample} per extension, read at
            each scrape.
        """
        self.registry = CollectorRegistry(auto_describe=False)
        self._decisions = Counter(
            "tcpext_decisions",
            "Permission decisions, by extension, verb and outcome.",
            ["extension", "verb", "outcome"],
            registry=self.registry,
        )
        self.registry.register(_LiveCollector(sample))

    def decision(self, event: dict[str, Any]) -> None:
        """
        Count one decision (an audit event).
        """
        self._decisions.labels(
            event["extension"], event["verb"], event["decision"]
        ).inc()

    def render(self) -> tuple[bytes, str]:
        """
        The metrics in the text format, and its content type.
        """
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
