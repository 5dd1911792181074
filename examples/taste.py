"""
An echo server and client on loopback with tcpext (the README's first example).
"""

from twisted.internet import defer, endpoints, task

from tcpext.endpoints import connectSocket, listenSocket


async def main(reactor):
    server = await listenSocket(
        endpoints.serverFromString(reactor, "tcp:0:interface=127.0.0.1")
    )

    async def echo():
        async for conn in server.connections:
            async for chunk in conn:
                await conn.write(chunk)
            await conn.close()

    defer.ensureDeferred(echo())
    client = await connectSocket(
        endpoints.clientFromString(reactor, f"tcp:127.0.0.1:{server.localPort}")
    )
    await client.write(b"hello, tcpext\n")
    print(await client.readUntil(b"\n"))
    await client.close()
    await server.close()


task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
