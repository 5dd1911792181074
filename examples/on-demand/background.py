"""
The on-demand extension: it holds no permission at start.  When it needs
one it asks with C{browser.permissions.request}, and the operator answers
(C{--prompt admin}: in the console, C{tcpext approve ID}; C{--prompt tty}: on
the terminal).  Once granted it connects to the echo server named in
C{config.json} and sends it a line every few seconds.

A refusal is remembered by the service, so asking again is denied at once
until the operator grants the permission (C{tcpext grant on-demand
PERMISSION}); the extension asks again every C{retry} seconds.  If the grant
is revoked, its connection is closed and it goes back to asking.
"""

import json
import os

from twisted.internet.task import deferLater
from twisted.logger import Logger


def loadConfig():
    """
    Read C{config.json} next to this script.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


async def askUntilGranted(browser, log, permission, retry):
    """
    Ask for C{permission} until it is granted.
    """
    while True:
        if await browser.permissions.request({"permissions": [permission]}):
            log.info("granted {permission}", permission=permission)
            return
        log.info(
            "not granted {permission}; asking again in {retry}s",
            permission=permission,
            retry=retry,
        )
        await deferLater(browser.reactor, retry, lambda: None)


async def talk(browser, log, host, port, interval):
    """
    Connect to the echo server and send it a line every C{interval}
    seconds, until the connection ends.
    """
    sock = await browser.TCPSocket.connect(host=host, port=port)
    await sock.opened
    log.info("connected to {host}:{port}", host=host, port=port)
    count = 0
    try:
        while True:
            count += 1
            await sock.write(f"ping {count}\n".encode())
            reply = await sock.readUntil(b"\n", limit=4096)
            log.info("echo: {reply}", reply=reply.decode("utf-8", "replace").strip())
            await deferLater(browser.reactor, interval, lambda: None)
    finally:
        sock.closeImmediately()


async def main(browser):
    """
    Ask, connect, talk; ask again when the connection ends.
    """
    log = Logger(namespace=f"tcpext.extension.{browser.runtime.id}")
    config = loadConfig()
    while True:
        await askUntilGranted(browser, log, config["permission"], config["retry"])
        try:
            await talk(browser, log, config["host"], config["port"], config["interval"])
        except Exception as e:
            log.info("connection ended: {reason}", reason=f"{type(e).__name__}: {e}")
        await deferLater(browser.reactor, 1, lambda: None)
