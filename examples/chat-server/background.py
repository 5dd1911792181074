"""
The chat-server extension: a chat room on 127.0.0.1, on the port its
C{config.json} names (7002 as shipped; another unprivileged port needs a
grant, e.g. C{--grant chat-server=tcp-listen:1024-65535}).

Every complete line a client sends is broadcast to every other client as
C{<host:port> line}.  A client that leaves in the middle of a line loses
that partial line and nothing else changes for the others.  Lines longer
than 4 KiB and clients that stop reading (more than 1 MiB waiting for them)
are disconnected, so one bad client cannot stall or exhaust the room.
"""

import json
import os

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from tcpext import IncompleteReadError, LimitOverrunError

MAX_LINE = 4096
MAX_PENDING = 1 << 20


def loadConfig():
    """
    Read C{config.json} next to this script.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Room:
    """
    The clients currently connected.
    """

    def __init__(self, log):
        self.log = log
        self.clients = {}

    def broadcast(self, sender, line):
        """
        Send C{line} (without its newline) from C{sender} to every other
        client.
        """
        message = b"<" + self.clients[sender].encode("ascii") + b"> " + line + b"\n"
        for sock in list(self.clients):
            if sock is sender:
                continue
            if sock.bufferedAmount > MAX_PENDING:
                self.log.info(
                    "dropping {peer}: it is not reading", peer=self.clients[sock]
                )
                self.clients.pop(sock, None)
                sock.closeImmediately()
                continue
            # Do not wait for a slow client; a write to a client that has
            # just gone away fails, and that is fine.
            sock.write(message).addErrback(lambda failure: None)

    async def serve(self, sock):
        """
        Read lines from one client until it leaves.
        """
        peer = f"{sock.host}:{sock.port}"
        self.clients[sock] = peer
        self.log.info(
            "{peer} joined ({count} online)", peer=peer, count=len(self.clients)
        )
        how = ""
        try:
            while True:
                line = await sock.readUntil(b"\n", limit=MAX_LINE)
                self.broadcast(sock, line.rstrip(b"\r\n"))
        except IncompleteReadError as e:
            # The end of the stream: the client left (a partial line is
            # dropped).
            if e.partial:
                how = " (in the middle of a line)"
        except LimitOverrunError:
            how = " (line too long)"
        except Exception as e:
            # The error that ended the connection.
            how = f" ({type(e).__name__})"
        finally:
            self.clients.pop(sock, None)
        self.log.info("{peer} left{how}", peer=peer, how=how)
        sock.closeImmediately()


async def main(browser):
    """
    Open the room.
    """
    log = Logger(namespace=f"tcpext.extension.{browser.runtime.id}")
    port = loadConfig()["port"]
    server = await browser.TCPSocket.listen({"port": port, "host": "127.0.0.1"})
    log.info("chat server listening on 127.0.0.1:{port}", port=server.localPort)
    room = Room(log)
    sessions = set()
    async for sock in server.connections:
        d = Deferred.fromCoroutine(room.serve(sock))
        sessions.add(d)
        d.addBoth(lambda result, d=d: sessions.discard(d))
