# The end-to-end benchmark's python3 subject: a dict of distinct random
# strings (keys and values) until about N MiB of heap are in use, then it
# waits. Like hog.c it detaches from the caller's session and descriptors.
# Usage: python3 heap.py MIB READY_FILE
import os
import random
import signal
import sys

target = int(sys.argv[1]) << 20
os.setsid()
os.closerange(3, 1 << 16)
random.seed(14)
table = {}
used = 0
while used < target:
    value = random.randbytes(384).hex()  # 768 characters
    table["key-%d-%s" % (len(table), value[:16])] = value
    used += 1024  # the value, the key and the dict's share, roughly
null = os.open("/dev/null", os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
if null > 2:
    os.close(null)
with open(sys.argv[2] + ".tmp", "w") as ready:
    ready.write("%d\n" % os.getpid())
os.rename(sys.argv[2] + ".tmp", sys.argv[2])
while True:
    signal.pause()
