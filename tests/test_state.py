"""
Tests for L{tcpext._state}: the lifecycle table of a socket, checked as a
table (no socket, no reactor), and a socket following it.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tcpext._state import (
    CLOSE_CALLED,
    FLOW_CONTROLLED,
    NOT_YET_OPEN,
    OPENED,
    READY_STATES,
    TLS_TRANSITIONS,
    TRANSITIONS,
    Event,
    ReadyState,
    State,
    TLSEvent,
    TLSState,
    readyState,
    tlsTransition,
    transition,
)
from tests.test_socket import connected

S = State
E = Event


class TableTests(SynchronousTestCase):
    """
    The transition table itself.
    """

    def test_everyState(self) -> None:
        """
        Every state has a row and a C{readyState}.
        """
        self.assertEqual(set(TRANSITIONS), set(State))
        self.assertEqual(set(READY_STATES), set(State))
        for row in TRANSITIONS.values():
            for event, after in row.items():
                self.assertIsInstance(event, Event)
                self.assertIsInstance(after, State)

    def test_endFromEverywhere(self) -> None:
        """
        Every state but C{CLOSED} ends in C{CLOSED}; C{CLOSED} has no way
        out (callers ignore every later event).
        """
        for state in State:
            if state is S.CLOSED:
                self.assertEqual(TRANSITIONS[state], {})
            else:
                self.assertIs(transition(state, E.END), S.CLOSED)

    def test_paths(self) -> None:
        """
        The lifecycles a socket can have, event by event.
        """
        paths = [
            # plain TCP: connect, close, the transport closes
            (
                S.CONNECTING,
                [E.CONNECTED, E.CLOSE, E.DISCONNECT, E.END],
                [S.OPEN, S.CLOSING, S.DISCONNECTING, S.CLOSED],
            ),
            # TLS from the start
            (
                S.CONNECTING,
                [E.HANDSHAKE_STARTED, E.HANDSHAKE_DONE, E.CLOSE],
                [S.HANDSHAKING, S.OPEN, S.CLOSING],
            ),
            # close() before the connection: it opens, then closes
            (
                S.CONNECTING,
                [E.CLOSE, E.CONNECTED, E.DISCONNECT],
                [S.CLOSE_QUEUED, S.CLOSING, S.DISCONNECTING],
            ),
            # close() during the TLS handshake
            (
                S.CONNECTING,
                [E.HANDSHAKE_STARTED, E.CLOSE, E.HANDSHAKE_DONE],
                [S.HANDSHAKING, S.CLOSE_QUEUED, S.CLOSING],
            ),
            # close() before the connection, then TLS from the start
            (
                S.CONNECTING,
                [E.CLOSE, E.HANDSHAKE_STARTED, E.HANDSHAKE_DONE],
                [S.CLOSE_QUEUED, S.CLOSE_QUEUED, S.CLOSING],
            ),
            # close() twice changes nothing
            (
                S.OPEN,
                [E.CLOSE, E.CLOSE, E.DISCONNECT, E.CLOSE],
                [S.CLOSING, S.CLOSING, S.DISCONNECTING, S.DISCONNECTING],
            ),
            # the attempt fails
            (S.CONNECTING, [E.END], [S.CLOSED]),
        ]
        for start, events, expected in paths:
            state = start
            seen = []
            for event in events:
                state = transition(state, event)
                seen.append(state)
            self.assertEqual(seen, expected, (start, events))

    def test_illegal(self) -> None:
        """
        An event a state does not list is a bug: L{transition} raises,
        naming the state and the event.
        """
        for state, event in [
            (S.OPEN, E.CONNECTED),
            (S.CONNECTING, E.HANDSHAKE_DONE),
            (S.OPEN, E.DISCONNECT),
            (S.CLOSED, E.END),
            (S.DISCONNECTING, E.DISCONNECT),
        ]:
            e = self.assertRaises(RuntimeError, transition, state, event)
            self.assertIn(state.name, str(e))
            self.assertIn(event.name, str(e))

    def test_readyState(self) -> None:
        """
        C{readyState} is C{"connecting"} until the socket opens, C{"open"}
        while open, C{"closing"} once C{close()} was called, C{"closed"} at
        the end.
        """
        self.assertEqual(
            {s: readyState(s).value for s in State},
            {
                S.CONNECTING: "connecting",
                S.HANDSHAKING: "connecting",
                S.OPEN: "open",
                S.CLOSE_QUEUED: "closing",
                S.CLOSING: "closing",
                S.DISCONNECTING: "closing",
                S.CLOSED: "closed",
            },
        )
        self.assertIsInstance(readyState(S.OPEN), ReadyState)
        self.assertEqual(str(ReadyState.OPEN), "open")

    def test_sets(self) -> None:
        """
        The state sets the socket's parts ask: not yet open, opened and
        closed cover every state once; C{close()} was called in the
        C{"closing"} states; reading is flow-controlled only while open and
        before the transport is asked to close.
        """
        self.assertEqual(NOT_YET_OPEN | OPENED | {S.CLOSED}, set(State))
        self.assertFalse(NOT_YET_OPEN & OPENED)
        self.assertEqual(
            CLOSE_CALLED,
            {s for s in State if readyState(s) is ReadyState.CLOSING},
        )
        self.assertEqual(FLOW_CONTROLLED, {S.OPEN, S.CLOSING})

    def test_tls(self) -> None:
        """
        TLS is off, then being upgraded or on; once on it stays on.
        """
        self.assertEqual(set(TLS_TRANSITIONS), set(TLSState))
        up = tlsTransition(TLSState.NONE, TLSEvent.UPGRADE)
        self.assertIs(up, TLSState.UPGRADING)
        self.assertIs(tlsTransition(up, TLSEvent.HANDSHAKE_DONE), TLSState.ON)
        self.assertIs(
            tlsTransition(TLSState.NONE, TLSEvent.HANDSHAKE_DONE), TLSState.ON
        )
        for state, event in [
            (TLSState.ON, TLSEvent.UPGRADE),
            (TLSState.ON, TLSEvent.HANDSHAKE_DONE),
            (TLSState.UPGRADING, TLSEvent.UPGRADE),
        ]:
            e = self.assertRaises(RuntimeError, tlsTransition, state, event)
            self.assertIn(state.name, str(e))


class SocketFollowsTableTests(SynchronousTestCase):
    """
    A socket's state moves along the table.
    """

    def test_openCloseEnd(self) -> None:
        """
        Open, C{close()} (the transport is asked to close at once: nothing
        is queued), then the connection is lost.
        """
        sock, protocol, transport = connected()
        self.assertIs(sock._state, S.OPEN)
        sock.close()
        self.assertIs(sock._state, S.DISCONNECTING)
        self.assertEqual(sock.readyState, "closing")
        protocol.connectionLost()
        self.assertIs(sock._state, S.CLOSED)
        self.assertEqual(sock.readyState, "closed")

    def test_closeWhilePaused(self) -> None:
        """
        With writes held (the transport paused us), C{close()} waits in
        C{CLOSING} until they are handed over.
        """
        sock, protocol, transport = connected()
        protocol.pauseProducing()
        sock.write(b"held")
        sock.close()
        self.assertIs(sock._state, S.CLOSING)
        protocol.resumeProducing()
        self.assertIs(sock._state, S.DISCONNECTING)
        self.assertIn(b"held", transport.value())
