"""Signal handlers, pending signals, a POSIX timer (through ctypes) and an
flock in python3. Prints READY <pid>, waits for a line on stdin, then
checks its own state and prints OK (or FAIL <reason> and exits 1)."""
import ctypes
import fcntl
import os
import signal
import sys
import tempfile

libc = ctypes.CDLL(None, use_errno=True)
CLOCK_MONOTONIC, SIGEV_SIGNAL, SIGEV_NONE, SI_QUEUE, SI_TIMER = 1, 0, 1, -1, -2


class SigEvent(ctypes.Structure):
    _fields_ = [("value", ctypes.c_void_p), ("signo", ctypes.c_int), ("notify", ctypes.c_int),
                ("pad", ctypes.c_int * 12)]


class Timespec(ctypes.Structure):
    _fields_ = [("sec", ctypes.c_long), ("nsec", ctypes.c_long)]


class ItimerSpec(ctypes.Structure):
    _fields_ = [("interval", Timespec), ("value", Timespec)]


def fail(reason):
    print(f"FAIL {reason}", flush=True)
    sys.exit(1)


def timer(notify, signo, value, left, interval_ns):
    event = SigEvent(value, signo, notify)
    timer_id = ctypes.c_void_p()
    if libc.timer_create(CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(timer_id)):
        fail(f"timer_create errno {ctypes.get_errno()}")
    setting = ItimerSpec(Timespec(0, interval_ns), Timespec(left, 0 if left else interval_ns))
    if libc.timer_settime(timer_id, 0, ctypes.byref(setting), None):
        fail("timer_settime")
    return timer_id


def left_of(timer_id):
    setting = ItimerSpec()
    if libc.timer_gettime(timer_id, ctypes.byref(setting)):
        fail("timer_gettime: the timer is gone")
    return setting.value.sec + setting.value.nsec / 1e9, setting.interval.nsec


handled = []
signal.signal(signal.SIGUSR1, lambda number, frame: handled.append(number))
tick = signal.SIGRTMIN + 3
queued = signal.SIGRTMIN + 2
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1, queued, tick})
os.kill(os.getpid(), signal.SIGUSR1)
if libc.sigqueue(os.getpid(), int(queued), ctypes.c_void_p(0x51)):
    fail("sigqueue")
slow = timer(SIGEV_NONE, 0, 0x11, 100, 0)
fast = timer(SIGEV_SIGNAL, int(tick), 0x22, 0, 50_000_000)
lock_file = open(os.path.join(tempfile.gettempdir(), f"crp-python-lock-{os.getpid()}"), "w")
fcntl.flock(lock_file, fcntl.LOCK_EX)
print(f"READY {os.getpid()}", flush=True)
sys.stdin.readline()

if handled:
    fail("a blocked signal was handled before it was unblocked")
if not {signal.SIGUSR1, queued} <= signal.sigpending():
    fail(f"pending signals lost: {signal.sigpending()}")
info = signal.sigtimedwait({queued}, 0)
if info is None or info.si_code != SI_QUEUE:
    fail(f"the queued signal came back as {info}")
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
if handled != [signal.SIGUSR1]:
    fail(f"the SIGUSR1 handler ran {handled}")
left, _ = left_of(slow)
if not 0 < left <= 100:
    fail(f"the slow timer has {left} s left")
_, interval = left_of(fast)
if interval != 50_000_000:
    fail(f"the fast timer's interval is {interval}")
for _ in range(3):
    info = signal.sigtimedwait({tick}, 10)
    if info is None or info.si_code != SI_TIMER:
        fail(f"the fast timer does not tick: {info}")
try:
    fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
except OSError:
    fail("the flock is gone")
os.unlink(lock_file.name)
print(f"OK pid={os.getpid()} python signals, timers and locks", flush=True)
