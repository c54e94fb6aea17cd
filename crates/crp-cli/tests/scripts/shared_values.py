# python3 with its shared memory: an mmap.mmap(-1, n) (MAP_SHARED|MAP_ANONYMOUS),
# a multiprocessing.Value with its lock (a deleted /dev/shm file and a POSIX
# semaphore mapped from another) and a RawValue. Prints "READY <pid>", waits
# for a line, then checks everything and prints "OK pid=<pid> python".
import mmap
import multiprocessing
import os
import sys

anonymous = mmap.mmap(-1, 3 * 4096)
anonymous[4096:4101] = b"hello"
counter = multiprocessing.Value("i", 41)
with counter.get_lock():
    counter.value += 1
ratio = multiprocessing.RawValue("d", 2.5)

print("READY", os.getpid(), flush=True)
sys.stdin.readline()
problems = []
if anonymous[4096:4101] != b"hello" or anonymous[0:5] != bytes(5):
    problems.append("the mmap lost its contents")
if counter.value != 42 or ratio.value != 2.5:
    problems.append(f"values are {counter.value} and {ratio.value}")
if not counter.get_lock().acquire(timeout=5):
    problems.append("the Value's lock cannot be taken")
else:
    counter.value += 1
    counter.get_lock().release()
if counter.value != 43:
    problems.append("the Value did not take a write")
print("FAIL " + "; ".join(problems) if problems else f"OK pid={os.getpid()} python", flush=True)
