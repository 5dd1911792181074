# -*- test-case-name: tests.test_socket -*-
"""
The write side of a L{tcpext.TCPClientSocket}.

While the socket may send (L{WriteSide._canSend}: open, nothing held
before, the transport has not paused us) a write goes straight to the
transport and its Deferred fires at once; on Twisted's own TCP transport,
when nothing is queued there, the data is even handed to the kernel during
the call.  Otherwise writes (and the actions that must come after them:
close, half-close, STARTTLS) wait in order in a queue, C{_held}; its size is
C{bufferedAmount}.

The socket's protocol is the push producer registered with the transport to
learn when the transport's buffer is full (C{pauseProducing}: writes wait)
and drained (C{resumeProducing}: they go on); on a plain TCP transport it
registers only once a write leaves data queued there.  A producer registered
with the socket through C{IConsumer} is paused and resumed along with it.

State: C{_writeEnd} (L{None} while writable; else the L{Failure} later
writes get, or the message of the L{SocketClosed} to make when one does),
C{_writePaused}, C{_writeShut} (our FIN was sent), C{_direct} (a plain
Twisted TCP transport), C{_watching} (our protocol is the transport's
producer), C{_held} and C{_heldSize}; the rarely used rest (drain waiters,
the registered producer) is in the socket's L{Extras}.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Union

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IProducer
from twisted.python.failure import Failure

from tcpext._errors import SocketClosed
from tcpext._extras import Extras
from tcpext._state import OPENED, State
from tcpext._twistedcompat import (
    markPaused,
    overBufferSize,
    sendAtOnce,
    sendsNothing,
)

__all__ = ["WriteSide", "toBytes"]

_CLOSED = State.CLOSED

#: A held write (its bytes and Deferred) or action (L{None} and a callable).
Held = tuple[Union[bytes, None], Union[Deferred[None], Callable[[], None], None]]


def toBytes(data: object, byteOffset: object, byteLength: object) -> bytes:
    """
    The bytes C{write()} should send: a slice of C{data}, copied when C{data}
    is mutable.

    @raise TypeError: If C{data} is not bytes-like or an offset is no int.
    @raise ValueError: If the offset or length lies outside the buffer.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(
            f"write() takes bytes, bytearray or memoryview, not {type(data).__name__}"
        )
    if type(byteOffset) is not int:
        raise TypeError(f"byteOffset must be an int, not {type(byteOffset).__name__}")
    if byteLength is not None and type(byteLength) is not int:
        raise TypeError(
            f"byteLength must be an int or None, not {type(byteLength).__name__}"
        )
    view = memoryview(data)
    if view.ndim != 1 or view.format not in ("B", "b", "c"):
        try:
            view = view.cast("B")
        except TypeError as e:
            raise TypeError(f"write() needs a contiguous buffer: {e}") from None
    size = view.nbytes
    if byteOffset < 0 or byteOffset > size:
        raise ValueError(
            f"byteOffset {byteOffset} is outside the buffer of {size} bytes"
        )
    if byteLength is None:
        end = size
    else:
        if byteLength < 0:
            raise ValueError(f"byteLength must not be negative, got {byteLength}")
        end = byteOffset + byteLength
        if end > size:
            raise ValueError(
                f"byteOffset {byteOffset} + byteLength {byteLength} is past the "
                f"end of the buffer of {size} bytes"
            )
    if type(data) is bytes and byteOffset == 0 and end == size:
        return data
    return view[byteOffset:end].tobytes()


class WriteSide:
    """
    The write side of L{tcpext.TCPClientSocket} (a part of it: the socket
    class holds the state in its slots).
    """

    if not TYPE_CHECKING:
        # (no slots of its own: TCPClientSocket declares them all)
        __slots__ = ()

    if TYPE_CHECKING:
        _state: State
        _transport: Any
        _protocol: Any
        _writeEnd: Failure | str | None
        _writePaused: bool
        _writeShut: bool
        _direct: bool
        _watching: bool
        _held: deque[Held] | None
        _heldSize: int
        _bytesOut: int
        _more: Extras | None

        def _extras(self) -> Extras: ...

    @property
    def bufferedAmount(self) -> int:
        """
        Bytes accepted by C{write()} that were not yet handed to the transport.
        """
        return self._heldSize

    def _canSend(self) -> bool:
        """
        The writable condition: whether data may go to the transport now
        (the socket opened and is not closed, nothing is held before it, and
        the transport has not paused us).
        """
        return self._held is None and not self._writePaused and self._state in OPENED

    def write(
        self,
        data: bytes | bytearray | memoryview,
        byteOffset: int = 0,
        byteLength: int | None = None,
    ) -> Deferred[None]:
        """
        Send C{data[byteOffset:byteOffset + byteLength]}.

        @param data: C{bytes}, C{bytearray} or C{memoryview}; mutable buffers
            are copied now, so they may be reused at once.
        @param byteOffset: Where the bytes to send start.
        @param byteLength: How many bytes to send (L{None}: to the end).

        @return: A Deferred that fires with L{None} once the data was handed
            to the transport and the transport is below its high-water mark;
            it fails with L{TypeError} or L{ValueError} for bad arguments,
            with L{SocketClosed} after C{close()}, or with the error that
            ended the connection if the data could not be sent.
        """
        if type(data) is bytes and byteOffset == 0 and byteLength is None:
            chunk = data
        else:
            try:
                chunk = toBytes(data, byteOffset, byteLength)
            except (TypeError, ValueError):
                return fail()
        if self._writeEnd is not None:
            return fail(self._writeFailure())
        if not self._canSend():
            d: Deferred[None] = Deferred()
            self._hold(chunk, d)
            return d
        if chunk:
            self._bytesOut += len(chunk)
            transport = self._transport
            if self._direct and sendsNothing(transport):
                # Nothing is queued in the transport: send now, as asyncio
                # does, instead of waiting for the reactor to poll for
                # writability (saves a reactor round and its syscalls).
                chunk = sendAtOnce(transport, chunk)
                if chunk:
                    self._queue(transport, chunk)
            else:
                self._queue(transport, chunk)
        if self._writePaused:
            return self._waitForDrain()
        more = self._more
        if more is not None and more.producer is not None and not more.streaming:
            self._pull()
        return succeed(None)

    def _waitForDrain(self) -> Deferred[None]:
        """
        A Deferred fired once the transport has drained its buffer.
        """
        d: Deferred[None] = Deferred()
        more = self._extras()
        if more.drainWaiters is None:
            more.drainWaiters = [d]
        else:
            more.drainWaiters.append(d)
        return d

    def _hold(self, chunk: bytes | None, what: Any) -> None:
        """
        Queue a chunk (with its Deferred) or an action after the held writes.
        """
        if self._held is None:
            self._held = deque()
        self._held.append((chunk, what))
        if chunk:
            self._heldSize += len(chunk)

    def _queue(self, transport: Any, chunk: bytes) -> None:
        """
        Hand C{chunk} to the transport to send when it can, and from then on
        learn when its buffer fills and drains.
        """
        transport.write(chunk)
        if not self._watching:
            self._watch(transport)

    def _watch(self, transport: Any) -> None:
        """
        Register our protocol as the transport's push producer, to be paused
        while the transport's write buffer is full: done once data waits in
        the transport.  If the buffer is full already, the producer starts
        paused (as if the transport had paused it on that write).
        """
        self._watching = True
        protocol = self._protocol
        transport.registerProducer(protocol, True)
        if (
            self._direct
            and transport.producer is protocol
            and overBufferSize(transport)
        ):
            markPaused(transport)
            protocol.pauseProducing()

    def _unwatch(self, transport: Any) -> None:
        """
        Unregister our protocol from the transport (if it is registered).
        """
        if self._watching:
            self._watching = False
            transport.unregisterProducer()

    def _whenWritable(self, action: Callable[[], None]) -> None:
        """
        Run C{action} after every write made so far was handed to the
        transport and the transport is not paused.
        """
        if self._canSend():
            action()
        else:
            self._hold(None, action)

    def _flush(self) -> None:
        """
        Hand held writes to the transport (and run held actions) until the
        transport pauses us or the queue is empty; then fire the Deferreds
        of the writes handed over.
        """
        held = self._held
        fire: list[Deferred[None]] = []
        transport = self._transport
        while held and not self._writePaused and self._state is not _CLOSED:
            chunk, what = held.popleft()
            if chunk is None:
                if what is not None:
                    what()  # type: ignore[operator]
                continue
            self._heldSize -= len(chunk)
            if chunk:
                self._bytesOut += len(chunk)
                self._queue(transport, chunk)
            if self._writePaused:
                more = self._extras()
                if more.drainWaiters is None:
                    more.drainWaiters = [what]
                else:
                    more.drainWaiters.append(what)
            else:
                fire.append(what)  # type: ignore[arg-type]
        if not held:
            self._held = None
        for d in fire:
            if not d.called:
                d.callback(None)

    def _pauseWriting(self) -> None:
        """
        The transport's write buffer is full: hold writes (and pause a
        streaming producer).
        """
        self._writePaused = True
        more = self._more
        if more is not None and more.producer is not None and more.streaming:
            more.producer.pauseProducing()

    def _writeResumed(self) -> None:
        """
        The transport drained its buffer: fire the writes that waited for it,
        send held ones, and let a registered producer go on.
        """
        self._writePaused = False
        more = self._more
        if more is not None and more.drainWaiters is not None:
            waiters = more.drainWaiters
            more.drainWaiters = None
            for d in waiters:
                if not d.called:
                    d.callback(None)
        if self._held is not None:
            self._flush()
        self._resumeProducer()

    def _writeFailure(self) -> Failure:
        """
        The failure of a write refused because writing has ended.
        """
        end = self._writeEnd
        if isinstance(end, str):
            end = self._writeEnd = Failure(SocketClosed(end))
        assert end is not None
        return end

    # IConsumer

    def _resumeProducer(self) -> None:
        """
        Let a registered producer write again if we can take its data.
        """
        more = self._more
        if (
            more is None
            or more.producer is None
            or self._writeEnd is not None
            or not self._canSend()
        ):
            return
        if more.streaming:
            more.producer.resumeProducing()
        else:
            self._pull()

    def _pull(self) -> None:
        """
        Ask a non-streaming producer for data while we can take it, without
        recursion (a write from inside C{resumeProducing} asks again).
        """
        more = self._extras()
        if more.pulling:
            more.pullAgain = True
            return
        more.pulling = True
        try:
            for _ in range(1000000):
                producer = more.producer
                if producer is None or more.streaming:
                    break
                more.pullAgain = False
                producer.resumeProducing()
                if (
                    not more.pullAgain
                    or self._writeEnd is not None
                    or not self._canSend()
                ):
                    break
        finally:
            more.pulling = False
            more.pullAgain = False

    def registerProducer(self, producer: IProducer, streaming: bool) -> None:
        """
        L{IConsumer <twisted.internet.interfaces.IConsumer>}: let C{producer} write into this socket, paused and
        resumed with the socket's write backpressure.

        @raise RuntimeError: If a producer is already registered.
        """
        more = self._more
        if more is not None and more.producer is not None:
            raise RuntimeError(
                f"a producer ({more.producer!r}) is already registered with {self!r}"
            )
        if self._writeEnd is not None:
            producer.stopProducing()
            return
        more = self._extras()
        more.producer = producer
        more.streaming = bool(streaming)
        if more.streaming:
            if not self._canSend():
                producer.pauseProducing()  # type: ignore[attr-defined]
        else:
            self._resumeProducer()

    def unregisterProducer(self) -> None:
        """
        L{IConsumer <twisted.internet.interfaces.IConsumer>}: forget the registered producer.
        """
        more = self._more
        if more is not None:
            more.producer = None
            more.streaming = False

    def _takeProducer(self) -> Any:
        """
        Forget the registered producer and return it (L{None}: none).
        """
        more = self._more
        if more is None or more.producer is None:
            return None
        producer = more.producer
        more.producer = None
        return producer

    def _stopProducer(self) -> None:
        """
        Stop and forget the registered producer: the socket can take no more.
        """
        producer = self._takeProducer()
        if producer is not None:
            producer.stopProducing()
