# A computation long enough to be checkpointed in the middle; prints one
# RESULT line that any uninterrupted run reproduces.
import hashlib
import os

print("READY", os.getpid(), flush=True)
digest = b"crp"
table = {}
for i in range(1_200_000):
    digest = hashlib.sha256(digest + str(i).encode()).digest()
    table[i % 4096] = digest[:4]
print("RESULT", digest.hex(), len(table), flush=True)
