"""
Tests for the C{alpnProtocols} option of C{browser.TCPSocket.connect} and
C{listen} (L{tcpext._options}), and for it end to end through a browser
namespace over loopback TLS.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as globalReactor
from twisted.internet.defer import ensureDeferred
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpext._options import parseConnectOptions, parseListenOptions
from tcpext.browser import makeBrowser
from tests._certs import testPKI


class ParseTests(SynchronousTestCase):
    """
    The option is a list of protocol names and needs TLS.
    """

    def test_connect(self) -> None:
        """
        C{connect} takes the names in order (as bytes); none by default.
        """
        base = {"host": "example.com", "port": 443, "useSecureTransport": True}
        parsed = parseConnectOptions({**base, "alpnProtocols": ["h2", "http/1.1"]}, {})
        self.assertEqual(parsed.alpnProtocols, (b"h2", b"http/1.1"))
        self.assertEqual(parseConnectOptions(base, {}).alpnProtocols, ())
        self.assertEqual(
            parseConnectOptions(base, {"alpnProtocols": ("imap",)}).alpnProtocols,
            (b"imap",),
        )

    def test_listen(self) -> None:
        """
        C{listen} too.
        """
        parsed = parseListenOptions(
            {
                "useSecureTransport": True,
                "tlsOptions": object(),
                "alpnProtocols": ["http/1.1"],
            },
            {},
        )
        self.assertEqual(parsed.alpnProtocols, (b"http/1.1",))

    def test_errors(self) -> None:
        """
        Without TLS, or with something that is no list of valid names, the
        option is refused with a message that names it.
        """
        secure = {"host": "example.com", "port": 443, "useSecureTransport": True}
        for options, error, text in [
            (
                {"host": "example.com", "port": 80, "alpnProtocols": ["h2"]},
                ValueError,
                "needs useSecureTransport=True",
            ),
            ({**secure, "alpnProtocols": "h2"}, TypeError, "list of protocol names"),
            ({**secure, "alpnProtocols": [""]}, ValueError, "1 to 255 bytes"),
            ({**secure, "alpnProtocols": [3]}, TypeError, "str or bytes"),
        ]:
            e = self.assertRaises(error, parseConnectOptions, options, {})
            self.assertIn("connect option 'alpnProtocols'", str(e))
            self.assertIn(text, str(e))
        e = self.assertRaises(
            ValueError, parseListenOptions, {"alpnProtocols": ["h2"]}, {}
        )
        self.assertIn("listen option 'alpnProtocols' needs", str(e))


class BrowserTests(TestCase):
    """
    C{alpnProtocols} through C{browser.TCPSocket} over loopback TLS.
    """

    timeout = 120

    async def test_agreed(self) -> None:
        """
        A listener and a client made through the browser namespace agree on
        a protocol; both sockets show it.
        """
        pki = testPKI()
        browser = makeBrowser(
            extensionId="alpn-test",
            manifest={"permissions": ["tcp-listen:*", "tcp-connect:127.0.0.1:*"]},
            reactor=globalReactor,
        )
        self.addCleanup(browser.close)
        listener = await browser.TCPSocket.listen(
            host="127.0.0.1",
            useSecureTransport=True,
            tlsOptions=pki.serverOptions(),
            alpnProtocols=["http/1.1"],
        )
        accepting = ensureDeferred(_first(listener))
        client = await browser.TCPSocket.connect(
            host="127.0.0.1",
            port=listener.localPort,
            useSecureTransport=True,
            tlsOptions=pki.clientOptions("127.0.0.1"),
            alpnProtocols=["h2", "http/1.1"],
        )
        await client.opened
        accepted = await accepting
        self.assertEqual(client.alpnProtocol, "http/1.1")
        self.assertEqual(accepted.alpnProtocol, "http/1.1")
        await client.close()

    async def test_refusedWithoutTLS(self) -> None:
        """
        The option without TLS fails the call with L{ValueError}.
        """
        browser = makeBrowser(
            extensionId="alpn-test",
            manifest={"permissions": ["tcp-connect:127.0.0.1:*"]},
            reactor=globalReactor,
        )
        self.addCleanup(browser.close)
        with self.assertRaises(ValueError):
            await browser.TCPSocket.connect(
                host="127.0.0.1", port=9, alpnProtocols=["h2"]
            )


async def _first(listener: Any) -> Any:
    """
    The first connection C{listener} accepts.
    """
    async for sock in listener.connections:
        return sock
    raise AssertionError("the listener closed")
