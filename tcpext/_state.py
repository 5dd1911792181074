# -*- test-case-name: tests.test_state,tests.test_socket -*-
"""
The lifecycle of a L{tcpext.TCPClientSocket}: every state, every event and
every legal transition.  Everything that affects the state machine lives
here; the socket's parts (C{_reading}, C{_writing}, C{_tls}, C{_socket})
move a socket from state to state only through L{transition} and ask the
sets below what a state allows::

    state          readyState    what it means
    CONNECTING     connecting    no transport yet
    HANDSHAKING    connecting    connected; the TLS handshake of a TLS-from-
                                 the-start connection is in progress
    OPEN           open          open (a half-close in either direction
                                 leaves it open)
    CLOSE_QUEUED   closing       close() came before the socket opened: it
                                 opens when it can, sends what was queued,
                                 then closes
    CLOSING        closing       close() came: the writes queued before it
                                 are being handed to the transport
    DISCONNECTING  closing       the transport was asked to close; the
                                 socket reads on until it is gone (a TLS
                                 close waits for the peer's close-notify)
    CLOSED         closed        the connection is gone (or never came);
                                 every later event is ignored

The events::

    event              comes from
    CONNECTED          the transport connected (no TLS handshake pending)
    HANDSHAKE_STARTED  the transport connected over TLS; handshake pending
    HANDSHAKE_DONE     that handshake completed
    CLOSE              close()
    DISCONNECT         everything queued before close() was handed over
    END                connection lost, attempt failed, or a local abort
                       (closeImmediately(), a timeout, a revoked grant)

TLS started on an open connection (C{upgradeToSecure()}) has its own small
table (L{TLS_TRANSITIONS}); it never changes the lifecycle state.
"""

from __future__ import annotations

import enum

__all__ = [
    "CLOSE_CALLED",
    "FLOW_CONTROLLED",
    "NOT_YET_OPEN",
    "OPENED",
    "READY_STATES",
    "TLS_TRANSITIONS",
    "TRANSITIONS",
    "Event",
    "ReadyState",
    "State",
    "TLSEvent",
    "TLSState",
    "readyState",
    "tlsTransition",
    "transition",
]


class ReadyState(str, enum.Enum):
    """
    The state of a L{tcpext.TCPClientSocket} as the socket API shows it: a
    C{str}, so C{sock.readyState == "open"} works.
    """

    CONNECTING = "connecting"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"

    def __str__(self) -> str:
        """
        The plain state name.
        """
        return self.value


class State(enum.Enum):
    """
    The lifecycle states of a socket (see the module's table).
    """

    # identity hashing (Enum's own __hash__ is Python code, and the
    # transition tables and state sets are looked up on every event)
    __hash__ = object.__hash__

    CONNECTING = "CONNECTING"
    HANDSHAKING = "HANDSHAKING"
    OPEN = "OPEN"
    CLOSE_QUEUED = "CLOSE_QUEUED"
    CLOSING = "CLOSING"
    DISCONNECTING = "DISCONNECTING"
    CLOSED = "CLOSED"


class Event(enum.Enum):
    """
    What moves a socket from one lifecycle state to another.
    """

    # identity hashing (Enum's own __hash__ is Python code, and the
    # transition tables and state sets are looked up on every event)
    __hash__ = object.__hash__

    CONNECTED = "CONNECTED"
    HANDSHAKE_STARTED = "HANDSHAKE_STARTED"
    HANDSHAKE_DONE = "HANDSHAKE_DONE"
    CLOSE = "CLOSE"
    DISCONNECT = "DISCONNECT"
    END = "END"


_S = State
_E = Event

#: The legal transitions: C{TRANSITIONS[state][event]} is the next state.
#: An event a state does not list is a bug in tcpext (L{transition} raises);
#: C{CLOSED} lists none because callers ignore every event once closed.
TRANSITIONS: dict[State, dict[Event, State]] = {
    _S.CONNECTING: {
        _E.CONNECTED: _S.OPEN,
        _E.HANDSHAKE_STARTED: _S.HANDSHAKING,
        _E.CLOSE: _S.CLOSE_QUEUED,
        _E.END: _S.CLOSED,
    },
    _S.HANDSHAKING: {
        _E.HANDSHAKE_DONE: _S.OPEN,
        _E.CLOSE: _S.CLOSE_QUEUED,
        _E.END: _S.CLOSED,
    },
    _S.OPEN: {
        _E.CLOSE: _S.CLOSING,
        _E.END: _S.CLOSED,
    },
    _S.CLOSE_QUEUED: {
        _E.CONNECTED: _S.CLOSING,
        _E.HANDSHAKE_STARTED: _S.CLOSE_QUEUED,
        _E.HANDSHAKE_DONE: _S.CLOSING,
        _E.CLOSE: _S.CLOSE_QUEUED,
        _E.END: _S.CLOSED,
    },
    _S.CLOSING: {
        _E.CLOSE: _S.CLOSING,
        _E.DISCONNECT: _S.DISCONNECTING,
        _E.END: _S.CLOSED,
    },
    _S.DISCONNECTING: {
        _E.CLOSE: _S.DISCONNECTING,
        _E.END: _S.CLOSED,
    },
    _S.CLOSED: {},
}

#: What C{readyState} shows for each state.
READY_STATES: dict[State, ReadyState] = {
    _S.CONNECTING: ReadyState.CONNECTING,
    _S.HANDSHAKING: ReadyState.CONNECTING,
    _S.OPEN: ReadyState.OPEN,
    _S.CLOSE_QUEUED: ReadyState.CLOSING,
    _S.CLOSING: ReadyState.CLOSING,
    _S.DISCONNECTING: ReadyState.CLOSING,
    _S.CLOSED: ReadyState.CLOSED,
}

#: The states of a socket that opened and is not closed: its transport is
#: connected and its handshake (if any) done.
OPENED = frozenset({_S.OPEN, _S.CLOSING, _S.DISCONNECTING})

#: The states in which the socket has not opened yet (and may still).
NOT_YET_OPEN = frozenset({_S.CONNECTING, _S.HANDSHAKING, _S.CLOSE_QUEUED})

#: The states in which C{close()} was called.
CLOSE_CALLED = frozenset({_S.CLOSE_QUEUED, _S.CLOSING, _S.DISCONNECTING})

#: The states in which C{suspend()} and a full read buffer pause the
#: transport's reading: before the socket opens they wait for it, and once
#: the transport is closing it must read on (a TLS close completes only
#: when the peer's close-notify was read).
FLOW_CONTROLLED = frozenset({_S.OPEN, _S.CLOSING})


def transition(state: State, event: Event) -> State:
    """
    The state after C{event} in C{state}.

    @raise RuntimeError: If C{state} has no transition for C{event} (a bug:
        callers handle C{CLOSED} themselves).
    """
    try:
        return TRANSITIONS[state][event]
    except KeyError:
        raise RuntimeError(
            f"tcpext socket: no transition from {state.name} on {event.name}"
        ) from None


def readyState(state: State) -> ReadyState:
    """
    What C{readyState} shows in C{state}.
    """
    return READY_STATES[state]


class TLSState(enum.Enum):
    """
    Whether TLS is in use on a socket.
    """

    # identity hashing (Enum's own __hash__ is Python code, and the
    # transition tables and state sets are looked up on every event)
    __hash__ = object.__hash__

    NONE = "NONE"  # plain, or a TLS-from-the-start handshake in progress
    UPGRADING = "UPGRADING"  # upgradeToSecure(): STARTTLS under way
    ON = "ON"  # a handshake completed: ssl is True


class TLSEvent(enum.Enum):
    """
    What changes a socket's L{TLSState}.
    """

    # identity hashing (Enum's own __hash__ is Python code, and the
    # transition tables and state sets are looked up on every event)
    __hash__ = object.__hash__

    UPGRADE = "UPGRADE"  # upgradeToSecure() was accepted
    HANDSHAKE_DONE = "HANDSHAKE_DONE"  # a TLS handshake completed


#: The legal TLS transitions, as L{TRANSITIONS}.
TLS_TRANSITIONS: dict[TLSState, dict[TLSEvent, TLSState]] = {
    TLSState.NONE: {
        TLSEvent.UPGRADE: TLSState.UPGRADING,
        TLSEvent.HANDSHAKE_DONE: TLSState.ON,
    },
    TLSState.UPGRADING: {TLSEvent.HANDSHAKE_DONE: TLSState.ON},
    TLSState.ON: {},
}


def tlsTransition(state: TLSState, event: TLSEvent) -> TLSState:
    """
    The TLS state after C{event} in C{state}.

    @raise RuntimeError: If C{state} has no transition for C{event}.
    """
    try:
        return TLS_TRANSITIONS[state][event]
    except KeyError:
        raise RuntimeError(
            f"tcpext socket: no TLS transition from {state.name} on {event.name}"
        ) from None
