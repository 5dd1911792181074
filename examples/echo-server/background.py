"""
The echo-server extension: listens on 127.0.0.1:7001 and sends every
connection back what it sends, until the client closes its side.
"""

from twisted.internet.defer import Deferred
from twisted.logger import Logger

PORT = 7001


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
    server = await browser.TCPSocket.listen({"port": PORT, "host": "127.0.0.1"})
    log.info("echo server listening on 127.0.0.1:{port}", port=server.localPort)
    clients = set()
    async for sock in server.connections:
        d = Deferred.fromCoroutine(echo(sock, log))
        clients.add(d)
        d.addBoth(lambda result, d=d: clients.discard(d))
