"""
tcpext: raw TCP sockets under permissions, on Twisted.

The public names of the socket API, the permission system and the errors are
re-exported here; their implementations live in private modules.
"""
