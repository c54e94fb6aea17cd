# The demo's process: counts, printing its PID and the count, with some
# state in memory (a running checksum) that must survive the checkpoint.
import hashlib
import os
import sys
import time

os.closerange(3, 65536)  # descriptors the demo's caller leaked; crp would refuse unknown ones
checksum = hashlib.sha256()
for count in range(1, 21):
    checksum.update(str(count).encode())
    print(f"pid {os.getpid()}  count {count:2}  checksum {checksum.hexdigest()[:16]}", flush=True)
    time.sleep(0.25)
sys.exit(7)
