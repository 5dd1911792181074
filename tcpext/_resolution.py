# -*- test-case-name: tests.test_testing -*-
"""
Small pieces that tcpext's name resolvers share: the address object for an
IP literal, a resolution answered at once from a list of addresses, and the
placeholder address that carries a refusal (L{IResolutionReceiver} has no
error channel).
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import define
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHostResolution, IResolutionReceiver
from zope.interface import implementer

__all__ = [
    "DENIED_HOST_TEXT",
    "DeniedHost",
    "ImmediateResolution",
    "resolveAtOnce",
    "tcpAddress",
]

DENIED_HOST_TEXT = "permission-denied.invalid"
"""
The text of a L{DeniedHost}: a name that never resolves, should it ever
reach a reactor that does not know it.
"""


class DeniedHost(str):
    """
    The host of the placeholder address a checked resolver reports for a
    refused resolution: the text L{DENIED_HOST_TEXT}, carrying the refusal.
    Whoever reads the resolution (the checked reactor's C{connectTCP}, the
    C{browser}'s own lookups) turns it into a L{PermissionDenied} with
    C{message}.

    @ivar message: The refusal's message.
    """

    message: str

    def __new__(cls, message: str) -> DeniedHost:
        """
        @param message: The refusal's message.
        """
        self = super().__new__(cls, DENIED_HOST_TEXT)
        self.message = message
        return self


def tcpAddress(host: str, port: int) -> IPv4Address | IPv6Address:
    """
    The Twisted TCP address of an IP literal (IPv6 if it has a colon).
    """
    if ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


@implementer(IHostResolution)
@define
class ImmediateResolution:
    """
    The resolution of a name whose answer is given during the call (or that
    cannot be stopped once asked).

    @ivar name: The name being resolved.
    """

    name: str

    def cancel(self) -> None:
        """
        Nothing to cancel.
        """


def resolveAtOnce(
    receiver: IResolutionReceiver, name: str, addresses: Iterable[str], port: int
) -> IHostResolution:
    """
    Tell C{receiver} that C{name} resolved to C{addresses} on C{port}, and
    that the resolution is complete.

    @return: The resolution, already complete.
    """
    resolution = ImmediateResolution(name)
    receiver.resolutionBegan(resolution)
    for address in addresses:
        receiver.addressResolved(tcpAddress(address, port))
    receiver.resolutionComplete()
    return resolution
