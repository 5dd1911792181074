"""
The echo-server extension: listens on 127.0.0.1, on the port its
C{config.json} names (7001 as shipped), and sends every connection back what
it sends, until the client closes its side.

Its manifest allows port 7001; to serve on another unprivileged port, set
C{port} in C{config.json} and grant it, e.g.
C{--grant echo-server=tcp-listen:1024-65535}.
"""

import json
import os

from twisted.internet.defer import Deferred
from twisted.logger import Logger


def loadConfig():
    """
    Read C{config.json} next to this script.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


async def echo(sock, log):
    """
    Send back everything C{sock} sends, then close it.
    """
    peer = f"{sock.host}:{sock.port}"
    try:
        async for chunk in sock:
            await sock.write(chunk)
        await sock.close()
    except Exception as e:
        log.info("connection from {peer} ended: {error}", peer=peer, error=e)
        sock.closeImmediately()


async def main(browser):
    """
    Listen, and serve each connection as it comes.
    """
    log = Logger(namespace=f"tcpext.extension.{browser.runtime.id}")
    port = loadConfig()["port"]
    server = await browser.TCPSocket.listen({"port": port, "host": "127.0.0.1"})
    log.info("echo server listening on 127.0.0.1:{port}", port=server.localPort)
    clients = set()
    async for sock in server.connections:
        d = Deferred.fromCoroutine(echo(sock, log))
        clients.add(d)
        d.addBoth(lambda result, d=d: clients.discard(d))
