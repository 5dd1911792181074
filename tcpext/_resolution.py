# -*- test-case-name: tests.test_testing -*-
"""
Small pieces that tcpext's name resolvers share: the address object for an
IP literal, and a resolution answered at once from a list of addresses.
"""

from __future__ import annotations

from collections.abc import Iterable

from attrs import define
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IHostResolution, IResolutionReceiver
from zope.interface import implementer

__all__ = ["ImmediateResolution", "resolveAtOnce", "tcpAddress"]


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
