# -*- test-case-name: tests.test_browser -*-
"""
Validation of the options given to C{browser.TCPSocket.connect} and
C{browser.TCPSocket.listen}.

Both accept a mapping (as in the WebExtension proposal) or the same keys as
keyword arguments.  Every problem raises L{TypeError} (wrong type, unknown
key) or L{ValueError} (a value out of range), with a message that names the
option; the browser namespace turns those into a failed
L{Deferred <twisted.internet.defer.Deferred>}.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from attrs import frozen

from tcpext._tls import alpnProtocolList

DEFAULT_BACKLOG = 128
"""
The accept queue length used when C{listen} gets no C{backLog} (or C{-1}).
"""

_CONNECT_KEYS = frozenset(
    {
        "host",
        "address",
        "port",
        "useSecureTransport",
        "tlsOptions",
        "alpnProtocols",
        "timeout",
    }
)
_LISTEN_KEYS = frozenset(
    {"port", "backLog", "host", "useSecureTransport", "tlsOptions", "alpnProtocols"}
)


@frozen
class ConnectOptions:
    """
    The validated options of one C{TCPSocket.connect} call.

    @ivar host: The host as the caller wrote it (not yet canonical).
    @ivar port: The port, 1..65535.
    @ivar useSecureTransport: Whether to speak TLS from the start.
    @ivar tlsOptions: A Twisted client TLS options object, or L{None} to
        verify the server against the host name with the system trust roots.
    @ivar timeout: Seconds for each connection attempt (and for the name
        lookup), or L{None} for Twisted's default.
    @ivar alpnProtocols: The protocols to offer with ALPN (C{bytes}),
        preferred first; empty: none.
    """

    host: str
    port: int
    useSecureTransport: bool
    tlsOptions: Any
    timeout: float | None
    alpnProtocols: tuple[bytes, ...] = ()


@frozen
class ListenOptions:
    """
    The validated options of one C{TCPSocket.listen} call.

    @ivar port: The port, 0 meaning "chosen automatically".
    @ivar backLog: The accept queue length.
    @ivar host: The interface to listen on (not yet canonical).
    @ivar useSecureTransport: Whether accepted connections speak TLS.
    @ivar tlsOptions: The server TLS options (required for TLS).
    @ivar alpnProtocols: The protocols to agree to with ALPN (C{bytes}),
        preferred first; empty: none (clients' offers are ignored).
    """

    port: int
    backLog: int
    host: str
    useSecureTransport: bool
    tlsOptions: Any
    alpnProtocols: tuple[bytes, ...] = ()


def _merge(
    what: str,
    options: Mapping[str, object] | None,
    keywords: Mapping[str, object],
    allowed: frozenset[str],
) -> dict[str, object]:
    """
    Combine the mapping and the keyword arguments of a call into one dict.

    @raise TypeError: If C{options} is not a mapping, a key is not a string,
        a key is unknown, or a key is given both ways.
    """
    merged: dict[str, object] = {}
    if options is not None:
        if not isinstance(options, Mapping):
            raise TypeError(
                f"{what} options must be a mapping (dict), not {type(options).__name__}"
            )
        for key, value in options.items():
            if not isinstance(key, str):
                raise TypeError(f"{what} option names must be strings, not {key!r}")
            merged[key] = value
    for key, value in keywords.items():
        if key in merged:
            raise TypeError(f"{what} option {key!r} given twice")
        merged[key] = value
    unknown = sorted(set(merged) - allowed)
    if unknown:
        raise TypeError(
            f"unknown {what} option{'s' if len(unknown) > 1 else ''}: "
            f"{', '.join(map(repr, unknown))} (known: {', '.join(sorted(allowed))})"
        )
    return merged


def _port(what: str, value: object, low: int) -> int:
    """
    Check a port number.

    @raise TypeError: If it is not an C{int} (a C{bool} is refused).
    @raise ValueError: If it is outside C{low}..65535.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{what} option 'port' must be an int, not {type(value).__name__}"
        )
    if not low <= value <= 65535:
        raise ValueError(f"{what} option 'port' must be in {low}..65535, not {value}")
    return value


def _flag(what: str, name: str, value: object) -> bool:
    """
    Check a boolean option.

    @raise TypeError: If C{value} is not a C{bool}.
    """
    if not isinstance(value, bool):
        raise TypeError(
            f"{what} option {name!r} must be a bool, not {type(value).__name__}"
        )
    return value


def _hostText(what: str, name: str, value: object) -> str:
    """
    Check a host option is a non-empty string.

    @raise TypeError: If it is not a string.
    @raise ValueError: If it is empty.
    """
    if not isinstance(value, str):
        raise TypeError(
            f"{what} option {name!r} must be a str, not {type(value).__name__}"
        )
    if not value:
        raise ValueError(f"{what} option {name!r} must not be empty")
    return value


def _alpn(what: str, value: object, secure: bool) -> tuple[bytes, ...]:
    """
    The C{alpnProtocols} option: protocol names for ALPN, which needs TLS.

    @raise TypeError: If it is no list of names.
    @raise ValueError: If a name is invalid, or the option is given without
        C{useSecureTransport=True}.
    """
    names = alpnProtocolList(value, f"{what} option 'alpnProtocols'")
    if names and not secure:
        raise ValueError(
            f"{what} option 'alpnProtocols' needs useSecureTransport=True "
            "(ALPN is part of the TLS handshake)"
        )
    return names


def parseConnectOptions(
    options: Mapping[str, object] | None, keywords: Mapping[str, object]
) -> ConnectOptions:
    """
    Validate the options of C{TCPSocket.connect}.

    @param options: The mapping given as the positional argument, or L{None}.
    @param keywords: The keyword arguments.

    @raise TypeError: For a wrong type, an unknown or duplicated key.
    @raise ValueError: For a value out of range or a missing host or port.
    """
    merged = _merge("connect", options, keywords, _CONNECT_KEYS)
    if "host" in merged and "address" in merged:
        raise TypeError("connect options 'host' and 'address' are aliases: give one")
    hostKey = "address" if "address" in merged else "host"
    if hostKey not in merged or merged[hostKey] is None:
        raise ValueError("connect needs a 'host' (or 'address') option")
    host = _hostText("connect", hostKey, merged[hostKey])
    if merged.get("port") is None:
        raise ValueError("connect needs a 'port' option")
    port = _port("connect", merged["port"], 1)
    secure = _flag(
        "connect", "useSecureTransport", merged.get("useSecureTransport", False)
    )
    tlsOptions = merged.get("tlsOptions")
    if tlsOptions is not None and not secure:
        raise ValueError(
            "connect option 'tlsOptions' needs useSecureTransport=True "
            "(use upgradeToSecure() to start TLS later)"
        )
    alpnProtocols = _alpn("connect", merged.get("alpnProtocols"), secure)
    timeout = merged.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(
                "connect option 'timeout' must be a number of seconds, not "
                f"{type(timeout).__name__}"
            )
        if not (math.isfinite(timeout) and timeout > 0):
            raise ValueError(
                f"connect option 'timeout' must be a positive number, not {timeout}"
            )
        timeout = float(timeout)
    return ConnectOptions(
        host=host,
        port=port,
        useSecureTransport=secure,
        tlsOptions=tlsOptions,
        timeout=timeout,
        alpnProtocols=alpnProtocols,
    )


def parseListenOptions(
    options: Mapping[str, object] | None, keywords: Mapping[str, object]
) -> ListenOptions:
    """
    Validate the options of C{TCPSocket.listen}.

    @param options: The mapping given as the positional argument, or L{None}.
    @param keywords: The keyword arguments.

    @raise TypeError: For a wrong type, an unknown or duplicated key.
    @raise ValueError: For a value out of range, or TLS without
        C{tlsOptions}.
    """
    merged = _merge("listen", options, keywords, _LISTEN_KEYS)
    port = merged.get("port")
    if port is None or (type(port) is int and port == -1):
        port = 0
    port = _port("listen", port, 0)
    backLog = merged.get("backLog")
    if backLog is None or (type(backLog) is int and backLog == -1):
        backLog = DEFAULT_BACKLOG
    if isinstance(backLog, bool) or not isinstance(backLog, int):
        raise TypeError(
            f"listen option 'backLog' must be an int, not {type(backLog).__name__}"
        )
    if backLog < 1:
        raise ValueError(
            f"listen option 'backLog' must be a positive int (or -1), not {backLog}"
        )
    host = merged.get("host")
    host = "0.0.0.0" if host is None else _hostText("listen", "host", host)
    secure = _flag(
        "listen", "useSecureTransport", merged.get("useSecureTransport", False)
    )
    tlsOptions = merged.get("tlsOptions")
    if secure and tlsOptions is None:
        raise ValueError(
            "listen option useSecureTransport=True needs 'tlsOptions' "
            "(the server's certificate and key)"
        )
    if tlsOptions is not None and not secure:
        raise ValueError("listen option 'tlsOptions' needs useSecureTransport=True")
    alpnProtocols = _alpn("listen", merged.get("alpnProtocols"), secure)
    return ListenOptions(
        port=port,
        backLog=backLog,
        host=host,
        useSecureTransport=secure,
        tlsOptions=tlsOptions,
        alpnProtocols=alpnProtocols,
    )
