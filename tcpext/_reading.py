# -*- test-case-name: tests.test_socket -*-
"""
The read side of a L{tcpext.TCPClientSocket}.

Bytes that arrive while no C{read()} is pending are kept in a list and
joined once when read.  Past a high-water mark the transport is paused until
the buffer is drained.  Pending reads are served first come, first served,
straight from the network (no buffering when someone waits): one pending
read is held as it is, several in a list.

State: C{_buf} (the chunks, or L{None}), C{_bufOffset} (bytes of the first
chunk already consumed by C{readExactly}/C{readUntil}), C{_bufSize},
C{_reader} (L{None}, the pending read, or a list of them, oldest first),
C{_readEnd} (L{None} while reading; L{True} at the end of the stream; the
L{Failure} that ended the socket), and the flow control flags C{_full} (the
buffer passed C{_highWater}), C{_suspended} (C{suspend()}) and
C{_readPaused} (the transport's reading is paused by us).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

from tcpext._errors import IncompleteReadError, LimitOverrunError
from tcpext._state import FLOW_CONTROLLED, State

__all__ = ["DEFAULT_LINE_LIMIT", "ReadSide"]

#: The default C{limit} of C{readUntil}.
DEFAULT_LINE_LIMIT = 64 * 1024

_CLOSED = State.CLOSED
_DISCONNECTING = State.DISCONNECTING


class _IterationRead(Deferred[bytes]):
    """
    A read made by C{async for}: it fails with L{StopAsyncIteration} at the
    end of the stream instead of firing with C{b""}.
    """


def _endOfStream(d: Deferred[bytes]) -> None:
    """
    Settle a pending read at the end of the stream.
    """
    if d.called:
        return
    if type(d) is _IterationRead:
        d.errback(StopAsyncIteration())
    else:
        d.callback(b"")


def _overrun(separator: bytes, limit: int, consumed: int) -> LimitOverrunError:
    """
    The error of a C{readUntil} that found no separator within its limit.
    """
    return LimitOverrunError(
        f"no separator {separator!r} within the limit of {limit} bytes", consumed
    )


class ReadSide:
    """
    The read side of L{tcpext.TCPClientSocket} (a part of it: the socket
    class holds the state in its slots).
    """

    if not TYPE_CHECKING:
        # (no slots of its own: TCPClientSocket declares them all)
        __slots__ = ()

    if TYPE_CHECKING:
        _state: State
        _transport: Any
        _buf: list[bytes] | None
        _bufOffset: int
        _bufSize: int
        _reader: Deferred[bytes] | list[Deferred[bytes]] | None
        _readEnd: bool | Failure | None
        _highWater: int
        _full: bool
        _suspended: bool
        _readPaused: bool
        _bytesIn: int

        def closeImmediately(self) -> None: ...

    # -- what the network brings

    def _received(self, data: bytes) -> None:
        """
        Hand C{data} to the oldest pending read, or buffer it.
        """
        self._bytesIn += len(data)
        reader = self._reader
        if reader is not None:
            if isinstance(reader, list):
                if self._giveToReader(data):
                    return
            else:
                self._reader = None
                if not reader.called:  # else cancelled by its user
                    reader.callback(data)
                    return
        state = self._state
        if state is _CLOSED:
            return
        if state is _DISCONNECTING and self._bufSize >= self._highWater:
            # Closing, and the buffer is full: the transport reads on only so
            # that the close completes, so what comes past the mark is dropped
            # (as the kernel drops unread bytes when a TCP socket closes).
            return
        buf = self._buf
        if buf is None:
            self._buf = [data]
        else:
            buf.append(data)
        size = self._bufSize + len(data)
        self._bufSize = size
        if size >= self._highWater and not self._full:
            self._full = True
            self._updateReading()

    def _readEnded(self) -> bool:
        """
        The peer sent a FIN: reads give C{b""} once the buffer is read.

        @return: Whether reading ended now (not before).
        """
        if self._readEnd is not None:
            return False
        self._readEnd = True
        readers = self._takeReaders()
        if readers:
            if self._buf:
                # (never both pending reads and buffered bytes, but be sure)
                self._deliver(readers)
            for d in readers:
                _endOfStream(d)
        return True

    def _endReading(self, failure: Failure | None) -> list[Deferred[bytes]]:
        """
        The socket is closing for good: reading ends with C{failure} (or at
        the end of the stream), unless it ended already.

        @return: The pending reads, taken (to settle with L{_settleReads}
            once every state change is made).
        """
        if self._readEnd is None:
            self._readEnd = True if failure is None else failure
        return self._takeReaders()

    def _settleReads(
        self, readers: list[Deferred[bytes]], failure: Failure | None
    ) -> None:
        """
        Settle the pending reads taken by L{_endReading}: the buffered bytes
        first, then the end of the stream or C{failure}.
        """
        if self._buf:
            # (never both pending reads and buffered bytes, but be sure)
            self._deliver(readers)
        for d in readers:
            if failure is None:
                _endOfStream(d)
            elif not d.called:
                d.errback(failure)

    # -- pending reads

    def _waitFor(self, d: Deferred[bytes]) -> Deferred[bytes]:
        """
        Queue C{d} as a pending read, fired by the next bytes to arrive.
        """
        reader = self._reader
        if reader is None:
            self._reader = d
        elif isinstance(reader, list):
            reader.append(d)
        else:
            self._reader = [reader, d]
        return d

    def _takeReaders(self) -> list[Deferred[bytes]]:
        """
        Take every pending read, oldest first.
        """
        reader = self._reader
        if reader is None:
            return []
        self._reader = None
        if isinstance(reader, list):
            return reader
        return [reader]

    def _giveToReader(self, data: bytes) -> bool:
        """
        Hand C{data} to the oldest pending read that was not cancelled.

        @return: Whether one took it.
        """
        readers = self._takeReaders()
        taken = False
        while readers:
            d = readers.pop(0)
            if not d.called:
                d.callback(data)
                taken = True
                break
        if readers:
            self._putBackReaders(readers)
        return taken

    def _putBackReaders(self, readers: list[Deferred[bytes]]) -> None:
        """
        Put C{readers} back in front of any read queued meanwhile.
        """
        later = self._takeReaders()
        for d in readers + later:
            self._waitFor(d)

    def _deliver(self, readers: list[Deferred[bytes]]) -> None:
        """
        Give what is buffered to the oldest of C{readers}: no read waits
        while bytes are buffered.  Those left stay in C{readers}.
        """
        while readers and self._buf:
            d = readers.pop(0)
            if not d.called:  # else cancelled by its user
                d.callback(self._takeAll())

    # -- reading

    def read(self) -> Deferred[bytes]:
        """
        Read the next chunk: everything buffered, else the next bytes to
        arrive.

        @return: A Deferred that fires with non-empty bytes; with C{b""} at
            the end of the stream (and for every read after); or fails with
            the error that ended the socket once the buffer is empty.
        """
        if self._buf:
            return succeed(self._takeAll())
        end = self._readEnd
        if end is None:
            return self._waitFor(Deferred())
        if end is True:
            return succeed(b"")
        assert isinstance(end, Failure)
        return fail(end)

    def _takeAll(self) -> bytes:
        """
        Take everything buffered (the buffer is not empty).
        """
        buf = self._buf
        assert buf
        if self._bufOffset:
            data = b"".join([memoryview(buf[0])[self._bufOffset :], *buf[1:]])
            self._bufOffset = 0
        else:
            data = buf[0] if len(buf) == 1 else b"".join(buf)
        self._buf = None
        self._bufSize = 0
        if self._full:
            self._full = False
            self._updateReading()
        return data

    # readExactly / readUntil: when the buffer holds what they need they take
    # it in place (an offset into the first chunk), so many small records in
    # one network read cost one copy each; otherwise they take the buffer and
    # read() on until they have it, and put back what they did not use.

    def _checkFull(self) -> None:
        """
        Pause or resume reading after the buffer's size changed.
        """
        full = self._bufSize >= self._highWater
        if full is not self._full:
            self._full = full
            self._updateReading()

    def _consolidate(self) -> bytes:
        """
        Join the buffer into one chunk (dropping the consumed prefix) and
        return it.
        """
        buf = self._buf
        assert buf
        if len(buf) > 1 or self._bufOffset:
            joined = b"".join([memoryview(buf[0])[self._bufOffset :], *buf[1:]])
            buf[:] = [joined]
            self._bufOffset = 0
        return buf[0]

    def _consume(self, first: bytes, end: int) -> bytes:
        """
        Take C{first[offset:end]}, where C{first} is the buffer's first chunk.
        """
        offset = self._bufOffset
        data = first if offset == 0 and end == len(first) else first[offset:end]
        if end >= len(first):
            buf = self._buf
            assert buf
            del buf[0]
            if not buf:
                self._buf = None
            self._bufOffset = 0
        else:
            self._bufOffset = end
        self._bufSize -= end - offset
        self._checkFull()
        return data

    def _takeRest(self) -> bytes:
        """
        Take everything buffered.
        """
        if not self._buf:
            return b""
        return self._consume(self._consolidate(), self._bufSize)

    def _prepend(self, data: bytes) -> None:
        """
        Put C{data} back in front of the buffer (or give it to a pending
        read).
        """
        if not data:
            return
        if self._reader is not None and self._giveToReader(data):
            return
        buf = self._buf
        if buf is None:
            self._buf = [data]
        else:
            if self._bufOffset:
                buf[0] = buf[0][self._bufOffset :]
                self._bufOffset = 0
            buf.insert(0, data)
        self._bufSize += len(data)
        self._checkFull()

    def readExactly(self, n: int) -> Deferred[bytes]:
        """
        Read exactly C{n} bytes.

        @return: A Deferred that fires with C{n} bytes, or fails with
            L{IncompleteReadError} (its C{partial} holds what came) if the
            stream ends first, or with the error that ended the socket (the
            bytes read so far stay buffered).
        """
        if type(n) is not int:
            return fail(
                TypeError(f"readExactly() needs an int, not {type(n).__name__}")
            )
        if n < 0:
            return fail(ValueError(f"readExactly() needs n >= 0, got {n}"))
        if self._bufSize >= n:
            if n == 0:
                return succeed(b"")
            buf = self._buf
            assert buf
            first = buf[0]
            if len(first) - self._bufOffset < n:
                first = self._consolidate()
            return succeed(self._consume(first, self._bufOffset + n))
        return Deferred.fromCoroutine(self._readExactly(n))

    async def _readExactly(self, n: int) -> bytes:
        """
        Gather C{n} bytes with C{read()}.
        """
        first = self._takeRest()
        chunks = [first] if first else []
        got = len(first)
        while got < n:
            try:
                chunk = await self.read()
            except BaseException:
                self._prepend(b"".join(chunks))
                raise
            if not chunk:
                raise IncompleteReadError(b"".join(chunks), n)
            chunks.append(chunk)
            got += len(chunk)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if got > n:
            self._prepend(data[n:])
            data = data[:n]
        return data

    def readUntil(
        self, separator: bytes = b"\n", limit: int = DEFAULT_LINE_LIMIT
    ) -> Deferred[bytes]:
        """
        Read up to and including C{separator}.

        @param separator: The non-empty bytes to look for.
        @param limit: The longest result allowed, separator included.

        @return: A Deferred that fires with the bytes up to and including the
            separator; or fails with L{LimitOverrunError} if C{limit} bytes
            come without it (they stay buffered), with L{IncompleteReadError}
            if the stream ends first (its C{partial} holds the bytes), or
            with the error that ended the socket (the bytes stay buffered).
        """
        if not isinstance(separator, bytes):
            return fail(
                TypeError(
                    f"readUntil() separator must be bytes, not {type(separator).__name__}"
                )
            )
        if not separator:
            return fail(ValueError("readUntil() separator must not be empty"))
        if type(limit) is not int:
            return fail(TypeError(f"limit must be an int, not {type(limit).__name__}"))
        if limit < len(separator):
            return fail(
                ValueError(f"limit {limit} is shorter than the separator {separator!r}")
            )
        if self._buf:
            first = self._buf[0]
            if len(self._buf) > 1 and first.find(separator, self._bufOffset) < 0:
                first = self._consolidate()
            offset = self._bufOffset
            index = first.find(separator, offset, offset + limit)
            if index >= 0:
                return succeed(self._consume(first, index + len(separator)))
            if self._bufSize >= limit:
                return fail(_overrun(separator, limit, self._bufSize))
        return Deferred.fromCoroutine(self._readUntil(separator, limit))

    async def _readUntil(self, separator: bytes, limit: int) -> bytes:
        """
        Gather bytes with C{read()} until the separator.
        """
        acc = bytearray(self._takeRest())
        scanned = 0
        while True:
            start = max(0, scanned - len(separator) + 1)
            index = acc.find(separator, start, limit)
            if index >= 0:
                end = index + len(separator)
                self._prepend(bytes(acc[end:]))
                return bytes(acc[:end])
            if len(acc) >= limit:
                self._prepend(bytes(acc))
                raise _overrun(separator, limit, len(acc))
            scanned = len(acc)
            try:
                chunk = await self.read()
            except BaseException:
                self._prepend(bytes(acc))
                raise
            if not chunk:
                raise IncompleteReadError(bytes(acc), None)
            acc += chunk

    def __aiter__(self) -> ReadSide:
        """
        The socket iterates over its chunks until the end of the stream.
        """
        return self

    def __anext__(self) -> Deferred[bytes]:
        """
        The next chunk, or L{StopAsyncIteration} at the end of the stream.

        (A L{Deferred} rather than a coroutine: no coroutine per chunk.)
        """
        if self._buf:
            return self.read()
        end = self._readEnd
        if end is None:
            return self._waitFor(_IterationRead())
        if end is True:
            return fail(StopAsyncIteration())
        assert isinstance(end, Failure)
        return fail(end)

    # -- flow control

    def suspend(self) -> None:
        """
        Stop reading from the network (idempotent); bytes stay with the peer
        and the kernel.
        """
        if not self._suspended:
            self._suspended = True
            self._updateReading()

    def resume(self) -> None:
        """
        Read from the network again after L{suspend} (idempotent).
        """
        if self._suspended:
            self._suspended = False
            self._updateReading()

    def _updateReading(self) -> None:
        """
        Pause or resume the transport's reading to match C{suspend()} and the
        buffer's fill.
        """
        want = self._suspended or self._full
        if (
            want is not self._readPaused
            and self._state in FLOW_CONTROLLED
            and self._readEnd is None
            and not getattr(self._transport, "disconnecting", False)
        ):
            self._readPaused = want
            if want:
                self._transport.pauseProducing()
            else:
                self._transport.resumeProducing()

    def _readOnForClose(self) -> None:
        """
        The transport is asked to close: make sure it reads (a TLS close
        completes only once the peer's close-notify was read, so a suspended
        or full socket must read again, or its close would never finish).
        """
        if self._readPaused:
            self._readPaused = False
            self._transport.resumeProducing()

    # IPushProducer: the read side

    def pauseProducing(self) -> None:
        """
        L{IPushProducer <twisted.internet.interfaces.IPushProducer>}: same as L{suspend}.
        """
        self.suspend()

    def resumeProducing(self) -> None:
        """
        L{IPushProducer <twisted.internet.interfaces.IPushProducer>}: same as L{resume}.
        """
        self.resume()

    def stopProducing(self) -> None:
        """
        L{IPushProducer <twisted.internet.interfaces.IPushProducer>}: same as C{closeImmediately()}.
        """
        self.closeImmediately()
