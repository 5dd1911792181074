"""
The twistd plugin for tcpext: C{twistd tcpext} runs L{tcpext.service}.
"""

from twisted.application.service import ServiceMaker

tcpext = ServiceMaker(
    "tcpext",
    "tcpext.service",
    "Host tcpext extensions: raw TCP sockets under permissions.",
    "tcpext",
)
