"""
The tls-client extension: connects with TLS to the server named in
C{config.json}, verifying it against a private CA (C{caFile}, relative to
this folder, or the system trust roots when that file does not exist),
sends one line and logs the line it gets back.

The manifest allows C{localhost:7443}; the operator can allow any
unprivileged port on localhost with
C{--grant tls-client=tcp-connect:localhost:1024-65535}.  A server that is
absent is retried a few times, then given up.
"""

import json
import os

from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.logger import Logger

HERE = os.path.dirname(os.path.abspath(__file__))


def loadConfig():
    """
    Read C{config.json} next to this script.
    """
    with open(os.path.join(HERE, "config.json"), encoding="utf-8") as f:
        return json.load(f)


def tlsOptions(host, caFile, log):
    """
    Client TLS options that trust C{caFile} (if it exists) for C{host}.
    """
    path = os.path.join(HERE, caFile)
    if not os.path.exists(path):
        log.info("no CA file {path}: using the system trust roots", path=path)
        return optionsForClientTLS(host)
    with open(path, "rb") as f:
        ca = Certificate.loadPEM(f.read())
    return optionsForClientTLS(host, trustRoot=ca)


async def exchange(browser, config, options, log):
    """
    Connect, send the message, log the reply.
    """
    sock = await browser.TCPSocket.connect(
        {
            "host": config["host"],
            "port": config["port"],
            "useSecureTransport": True,
            "tlsOptions": options,
            "timeout": float(config.get("timeout", 10.0)),
        }
    )
    await sock.opened
    try:
        await sock.write(config["message"].encode("utf-8") + b"\n")
        reply = await sock.readUntil(b"\n", limit=4096)
        log.info(
            "TLS reply from {host}:{port}: {reply!r}",
            host=config["host"],
            port=config["port"],
            reply=reply.rstrip(b"\n").decode("utf-8", "replace"),
        )
    finally:
        await sock.close()


async def main(browser):
    """
    Try the exchange a bounded number of times.
    """
    log = Logger(namespace=f"tcpext.extension.{browser.runtime.id}")
    config = loadConfig()
    options = tlsOptions(config["host"], config.get("caFile", "ca.pem"), log)
    attempts = int(config.get("attempts", 3))
    for attempt in range(1, attempts + 1):
        try:
            await exchange(browser, config, options, log)
            return
        except Exception as e:
            if "permission denied" in str(e):
                log.warn("giving up: {error}", error=e)
                return
            log.info(
                "TLS exchange failed (attempt {attempt} of {attempts}): {error}",
                attempt=attempt,
                attempts=attempts,
                error=e,
            )
        if attempt < attempts:
            await deferLater(
                browser.reactor, float(config.get("retryDelay", 2.0)), lambda: None
            )
    log.warn("giving up on {host}:{port}", host=config["host"], port=config["port"])
