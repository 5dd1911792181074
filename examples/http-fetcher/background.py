"""
The http-fetcher extension: fetches each URL listed in C{config.json} with
treq, running on C{browser.reactor} so that every connection is checked
against the extension's grants.

Its manifest allows C{127.0.0.1:8080}; the operator can widen that to any
unprivileged port on 127.0.0.1 with
C{--grant http-fetcher=tcp-connect:127.0.0.1:1024-65535}.  Anything else
(another host, a name) is denied and the denial is logged.  A target that is
absent is retried a few times, then given up.
"""

import json
import os

import treq
from twisted.internet.task import deferLater
from twisted.logger import Logger

from tcpext import permissions

MAX_BODY = 1 << 20


def loadConfig():
    """
    Read C{config.json} next to this script.
    """
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "config.json")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


async def fetch(reactor, log, url, timeout):
    """
    GET C{url} and log the status and the size of the body.
    """
    response = await treq.get(url, reactor=reactor, persistent=False, timeout=timeout)
    body = await treq.content(response)
    log.info(
        "fetched {url}: {code}, {size} bytes: {start!r}",
        url=url,
        code=response.code,
        size=len(body),
        start=body[:60],
    )


async def fetchWithRetries(reactor, log, url, attempts, delay, timeout):
    """
    Fetch C{url}; retry a failed connection up to C{attempts} times in all.
    A denied one is not retried: asking again would be denied again.
    """
    for attempt in range(1, attempts + 1):
        try:
            await fetch(reactor, log, url, timeout)
            return
        except permissions.PermissionDenied as e:
            log.warn("not fetching {url}: {error}", url=url, error=e)
            return
        except Exception as e:
            log.info(
                "fetching {url} failed (attempt {attempt} of {attempts}): {error}",
                url=url,
                attempt=attempt,
                attempts=attempts,
                error=e,
            )
        if attempt < attempts:
            await deferLater(reactor, delay, lambda: None)
    log.warn("giving up on {url}", url=url)


async def main(browser):
    """
    Fetch every configured URL in turn.
    """
    log = Logger(namespace=f"tcpext.extension.{browser.runtime.id}")
    config = loadConfig()
    for url in config["urls"]:
        await fetchWithRetries(
            browser.reactor,
            log,
            url,
            int(config.get("attempts", 3)),
            float(config.get("retryDelay", 2.0)),
            float(config.get("timeout", 10.0)),
        )
    log.info("http-fetcher done")
