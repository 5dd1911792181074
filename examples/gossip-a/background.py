"""
A gossip node (gossip-a and gossip-b run the same script with their own
C{config.json}): it listens for its peer, and every C{interval} seconds
(C{rounds} times) it starts a rumour of its own and dials the peer to swap
every rumour it knows.  Rumours learned are logged.

One exchange: the dialer sends the rumours it knows, one per line, then
C{END}; the listener merges them, answers with the rumours it knows, then
C{END}; the dialer merges those.  Lines are limited to 1 KiB, rumours to
1000, and an exchange to 10 seconds, so a bad peer cannot stall a node.
A peer that is absent is skipped until the next round.
"""

import json
import os

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import Logger

HERE = os.path.dirname(os.path.abspath(__file__))
MAX_LINE = 1024
MAX_RUMOURS = 1000
EXCHANGE_TIMEOUT = 10.0


def loadConfig():
    """
    Read C{config.json} next to this script.
    """
    with open(os.path.join(HERE, "config.json"), encoding="utf-8") as f:
        return json.load(f)


class Node:
    """
    What one gossip node knows.
    """

    def __init__(self, name, reactor, log):
        self.name = name
        self.reactor = reactor
        self.log = log
        self.rumours = []
        self.known = set()

    def learn(self, rumour, source):
        """
        Keep C{rumour} if it is new.
        """
        if rumour in self.known or len(self.known) >= MAX_RUMOURS:
            return
        self.known.add(rumour)
        self.rumours.append(rumour)
        if source != self.name:
            self.log.info(
                "{name} learned {rumour!r} from {source}",
                name=self.name,
                rumour=rumour,
                source=source,
            )

    async def send(self, sock):
        """
        Send every rumour known, then C{END}.
        """
        data = b"".join(r.encode("utf-8") + b"\n" for r in self.rumours)
        await sock.write(data + b"END\n")

    async def receive(self, sock, source):
        """
        Merge the rumours the peer sends, up to its C{END}.
        """
        for _ in range(MAX_RUMOURS + 1):
            line = (await sock.readUntil(b"\n", limit=MAX_LINE)).rstrip(b"\r\n")
            if line == b"END":
                return
            self.learn(line.decode("utf-8", "replace"), source)
        raise ValueError("the peer sent too many rumours")

    async def answer(self, sock):
        """
        The listener's side of one exchange.
        """
        await self.receive(sock, f"{sock.host}:{sock.port}")
        await self.send(sock)
        await sock.close()

    async def dial(self, host, port, timeout):
        """
        The dialer's side of one exchange.
        """
        sock = await self.connect({"host": host, "port": port, "timeout": timeout})
        await sock.opened
        try:
            await self.send(sock)
            await self.receive(sock, f"{host}:{port}")
        finally:
            await sock.close()


def withTimeout(reactor, d, sock=None):
    """
    Cancel C{d} after L{EXCHANGE_TIMEOUT} seconds.
    """
    timer = reactor.callLater(EXCHANGE_TIMEOUT, d.cancel)

    def done(result):
        if timer.active():
            timer.cancel()
        return result

    return d.addBoth(done)


async def serve(server, node):
    """
    Answer every peer that dials in.
    """
    async for sock in server.connections:
        d = withTimeout(node.reactor, Deferred.fromCoroutine(node.answer(sock)))

        def failed(failure, sock=sock):
            node.log.info("exchange with a peer failed: {error}", error=failure.value)
            sock.closeImmediately()

        d.addErrback(failed)


async def main(browser):
    """
    Listen, then gossip with the peer for a bounded number of rounds.
    """
    name = browser.runtime.id
    log = Logger(namespace=f"tcpext.extension.{name}")
    config = loadConfig()
    node = Node(name, browser.reactor, log)
    node.connect = browser.TCPSocket.connect
    server = await browser.TCPSocket.listen(
        {"port": config["listenPort"], "host": "127.0.0.1"}
    )
    log.info("{name} listening on 127.0.0.1:{port}", name=name, port=server.localPort)
    listening = Deferred.fromCoroutine(serve(server, node))
    interval = float(config.get("interval", 1.0))
    for n in range(1, int(config.get("rounds", 10)) + 1):
        node.learn(f"{name}#{n}: {config.get('message', 'hello')}", name)
        try:
            await withTimeout(
                browser.reactor,
                Deferred.fromCoroutine(
                    node.dial(config["peerHost"], config["peerPort"], EXCHANGE_TIMEOUT)
                ),
            )
        except Exception as e:
            log.info(
                "round {n}: peer {host}:{port} unavailable: {error}",
                n=n,
                host=config["peerHost"],
                port=config["peerPort"],
                error=e or type(e).__name__,
            )
        await deferLater(browser.reactor, interval, lambda: None)
    log.info("{name} finished its rounds; still answering its peer", name=name)
    await listening
