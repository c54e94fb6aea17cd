# An asyncio TCP echo server (epoll, its self-pipe socket pair and a
# listening socket) on 127.0.0.1 at the port given: dumped and restored,
# it still answers.
import asyncio
import os
import sys


async def handle(reader, writer):
    line = await reader.readline()
    writer.write(b"echo " + line)
    await writer.drain()
    writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    print("READY", os.getpid(), flush=True)
    async with server:
        await server.serve_forever()


asyncio.run(main())
