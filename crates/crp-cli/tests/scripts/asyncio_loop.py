# An asyncio event loop with a timer (call_later), a pipe it reads with
# add_reader, stdin read with add_reader, and its self-pipe socket pair
# (woken by call_soon_threadsafe), checked by itself after a restore.
# Protocol: prints "READY <pid>", waits for a line on stdin, then prints
# "OK pid=<pid> asyncio" and exits 0, or "FAIL <reason>" and exits 1.
import asyncio
import os
import sys
import threading


async def main():
    loop = asyncio.get_running_loop()
    reader, writer = os.pipe()
    received = asyncio.Queue()
    loop.add_reader(reader, lambda: received.put_nowait(os.read(reader, 100)))
    os.write(writer, b"before")
    if await received.get() != b"before":
        return "the pipe before the dump"
    timer = loop.create_future()
    # Due after the dump: it fires in the restored process.
    loop.call_later(0.3, lambda: timer.set_result("fired"))
    go = loop.create_future()
    loop.add_reader(0, lambda: go.done() or go.set_result(sys.stdin.readline()))
    print(f"READY {os.getpid()}", flush=True)
    await go
    os.write(writer, b"after")
    if await asyncio.wait_for(received.get(), 5) != b"after":
        return "the pipe after the restore"
    if await asyncio.wait_for(timer, 5) != "fired":
        return "the timer"
    woken = loop.create_future()
    # The wake-up goes through the loop's self-pipe socket pair.
    thread = threading.Thread(target=lambda: loop.call_soon_threadsafe(woken.set_result, "woken"))
    thread.start()
    if await asyncio.wait_for(woken, 5) != "woken":
        return "call_soon_threadsafe"
    thread.join()
    return None


failure = asyncio.run(main())
if failure:
    print(f"FAIL {failure}", flush=True)
    sys.exit(1)
print(f"OK pid={os.getpid()} asyncio", flush=True)
