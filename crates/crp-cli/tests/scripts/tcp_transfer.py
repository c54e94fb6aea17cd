# A client and a server over loopback TCP in one process (IPv4, or IPv6
# with the argument "6"), the client sending 4 MiB the server hashes, a
# piece at a time: dumped mid-transfer and restored, the transfer
# completes and the hash is that of the bytes.
import hashlib
import os
import selectors
import socket
import sys
import time

TOTAL = 4 << 20
PIECE = 8192

pattern = bytes(range(251)) * (PIECE // 251 + 2)
if sys.argv[1:] == ["6"]:
    server = socket.create_server(("::1", 0), family=socket.AF_INET6)
else:
    server = socket.create_server(("127.0.0.1", 0))
client = socket.create_connection(server.getsockname()[:2])
accepted, _ = server.accept()
client.setblocking(False)
accepted.setblocking(False)
selector = selectors.DefaultSelector()
selector.register(accepted, selectors.EVENT_READ)
print("READY", os.getpid(), flush=True)
sent = received = 0
digest = hashlib.sha256()
while received < TOTAL:
    if sent < TOTAL:
        offset = sent % 251
        piece = pattern[offset : offset + min(PIECE, TOTAL - sent)]
        try:
            sent += client.send(piece)
        except BlockingIOError:
            pass
    for _ in selector.select(timeout=0.01):
        data = accepted.recv(65536)
        digest.update(data)
        received += len(data)
    time.sleep(0.0005)
print("OK", received, digest.hexdigest(), flush=True)
