//! Multi-threaded processes: every thread frozen, captured and restored
//! at its own thread id with its own registers, name, blocked mask,
//! affinity, alternate stack, robust list, clear_child_tid and pending
//! signals, each resuming the system call it was waiting in
//! (tests/programs/threads.c checks all of it from inside).

mod common;

use std::process::Command;

use common::*;

fn threads_subject() -> Subject {
    Subject::spawn(Command::new(c_program("threads")))
}

/// The ids of the threads of `pid`, the leader first.
fn thread_ids(pid: i32) -> Vec<i32> {
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_str().unwrap().parse().unwrap())
        .collect();
    tids.sort_unstable_by_key(|tid| (*tid != pid, *tid));
    tids
}

#[test]
fn every_thread_comes_back_at_its_id_with_its_own_state() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = threads_subject();
    let tids = thread_ids(subject.pid);
    assert_eq!(tids.len(), 7, "{tids:?}");
    let image = directory.path().join("threads.crp");
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());

    let json = stdout_of(&crp().arg("inspect").arg("--json").arg(&image).output().unwrap());
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let threads = json["threads"].as_array().unwrap();
    let listed: Vec<i64> = threads.iter().map(|thread| thread["tid"].as_i64().unwrap()).collect();
    assert_eq!(listed, tids.iter().map(|tid| i64::from(*tid)).collect::<Vec<_>>());
    let inspected = stdout_of(&crp().arg("inspect").arg(&image).output().unwrap());
    for name in ["worker-0", "worker-4"] {
        assert!(inspected.contains(name), "{name} not in\n{inspected}");
    }

    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} threads restored\n", subject.pid));
}

/// `--leave-running`: every thread carries on untouched after the dump,
/// and the image restores all the same.
#[test]
fn a_multi_threaded_process_left_running_carries_on() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = threads_subject();
    let image = directory.path().join("threads.crp");
    dump_ok(subject.pid, &image, &["--leave-running"]);
    assert_eq!(thread_ids(subject.pid).len(), 7);
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} threads restored\n", subject.pid));
    assert!(subject.wait().success());

    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} threads restored\n", subject.pid));
}

/// The kmod back end records one task: it refuses a multi-threaded
/// process before touching it, and an image of one before the child
/// exists.
#[test]
fn the_kmod_back_end_refuses_threads_up_front() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = threads_subject();
    let image = directory.path().join("threads.crp");
    dump_ok(subject.pid, &image, &["--leave-running"]);
    subject.send("go\n");
    assert!(subject.wait().success());
    let restored = crp().args(["restore", "--backend", "kmod"]).arg(&image).output().unwrap();
    assert!(!restored.status.success());
    let said = stderr_of(&restored);
    // Without the module the device is said missing first; with it, the
    // threads are refused.
    assert!(said.contains("/dev/crp") || said.contains("more than one thread"), "{said}");
}

/// Every thread of the process is untraced and not stopped.
fn assert_every_thread_released(pid: i32, after: &str) {
    for tid in thread_ids(pid) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap();
        let field = |key: &str| {
            status.lines().find_map(|line| line.strip_prefix(key)).map(|value| value.trim().to_owned()).unwrap()
        };
        assert_eq!(field("TracerPid:"), "0", "thread {tid} still traced after {after}");
        let state = field("State:");
        assert!(!state.starts_with('T') && !state.starts_with('t'), "thread {tid} left {state} after {after}");
    }
}

/// crp killed while the leader and one of the other threads are parked
/// (each in turn): every thread carries on where it was, and the program
/// finds all its state as it was.
#[test]
fn a_dump_killed_while_a_thread_is_parked_harms_no_thread() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = threads_subject();
    let image = directory.path().join("threads.crp");
    for number in 1..=6 {
        let fault = format!("thread-parked@{number}:KILL");
        let output = crp()
            .env("CRP_TEST_FAULT", &fault)
            .args(["dump", &subject.pid.to_string(), "-o"])
            .arg(&image)
            .output()
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(output.status.signal(), Some(libc::SIGKILL), "{fault}: {}", stderr_of(&output));
        assert_every_thread_released(subject.pid, &fault);
        assert_eq!(thread_ids(subject.pid).len(), 7, "a thread ended after {fault}");
    }
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} threads restored\n", subject.pid));
    assert!(subject.wait().success());
}

/// crp restore killed once some threads exist: the whole group dies, no
/// thread is left behind; the image then restores in full.
#[test]
fn a_restore_killed_after_some_threads_exist_leaves_no_thread() {
    become_subreaper();
    let directory = tempfile::tempdir().unwrap();
    let mut subject = threads_subject();
    let image = directory.path().join("threads.crp");
    let pid = subject.pid;
    dump_ok(pid, &image, &[]);
    assert_killed(subject.wait());
    for number in [1, 3] {
        let fault = format!("thread-created@{number}:KILL");
        let output = crp().env("CRP_TEST_FAULT", &fault).arg("restore").arg(&image).output().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(output.status.signal(), Some(libc::SIGKILL), "{fault}: {}", stderr_of(&output));
        // The child, orphaned to this subreaper, dies with its tracer.
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(nix::sys::wait::WaitStatus::Signaled(_, nix::sys::signal::Signal::SIGKILL, _)) => {}
            other => panic!("the restore child after {fault} ended with {other:?}"),
        }
        assert!(!process_exists(pid), "pid {pid} survives {fault}");
    }
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={pid} threads restored\n"));
}

/// Dumps the runtime `subject` once it is READY, restores it and returns
/// what it printed after "go".
fn dump_and_restore_runtime(subject: &mut Subject, name: &str) -> String {
    let directory = tempfile::tempdir().unwrap();
    assert!(thread_ids(subject.pid).len() > 1, "{name} runs more than one thread");
    let image = directory.path().join(format!("{name}.crp"));
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{name}: {}{}", stdout_of(&output), stderr_of(&output));
    stdout_of(&output)
}

/// python3 with a queue consumer blocked in queue.get(), a sleeper and a
/// thread that computes: each goes on, the queue delivers what is put
/// after the restore.
#[test]
fn python_threads_go_on() {
    let script = r#"
import os, sys, threading, queue, time
os.closerange(3, 1024)
jobs, results = queue.Queue(), []
state = {'stop': False, 'ticks': 0, 'total': 0}
def consumer():
    while (item := jobs.get()) is not None:
        results.append(item * 2)
def sleeper():
    while not state['stop']:
        time.sleep(0.02)
        state['ticks'] += 1
def adder():
    while not state['stop']:
        state['total'] += 1
threads = [threading.Thread(target=target) for target in (consumer, sleeper, adder)]
for thread in threads:
    thread.start()
jobs.put(1)
while not results or state['ticks'] == 0 or state['total'] == 0:
    time.sleep(0.01)
print('READY', os.getpid(), flush=True)
sys.stdin.readline()
ticks, total = state['ticks'], state['total']
for n in range(2, 6):
    jobs.put(n)
jobs.put(None)
while state['ticks'] < ticks + 3 or state['total'] <= total:
    time.sleep(0.01)
state['stop'] = True
for thread in threads:
    thread.join()
print('OK' if results == [2, 4, 6, 8, 10] else f'FAIL {results}', os.getpid(), flush=True)
"#;
    let mut command = Command::new("python3");
    command.args(["-c", script]);
    let mut subject = Subject::spawn(command);
    let pid = subject.pid;
    assert_eq!(dump_and_restore_runtime(&mut subject, "python"), format!("OK {pid}\n"));
}

/// node (libuv's thread pool and V8's platform threads beside the event
/// loop): its timers tick again and its heap is intact.
#[test]
fn node_goes_on() {
    let script = r#"
let ticks = 0;
const timer = setInterval(() => { ticks++; }, 10);
const data = new Map();
for (let i = 0; i < 10000; i++) data.set('k' + i, i * 3);
require('fs').readFile('/proc/self/status', () => {
  console.log('READY ' + process.pid);
  process.stdin.once('data', () => {
    const start = ticks;
    const check = setInterval(() => {
      if (ticks < start + 5) return;
      clearInterval(check);
      clearInterval(timer);
      let sum = 0;
      for (const value of data.values()) sum += value;
      console.log((sum === 3 * 9999 * 10000 / 2 ? 'OK ' : 'FAIL ') + process.pid);
      process.exit(0);
    }, 5);
  });
});
"#;
    let mut command = Command::new("node");
    command.args(["-e", script]);
    let mut subject = Subject::spawn(command);
    let pid = subject.pid;
    assert_eq!(dump_and_restore_runtime(&mut subject, "node"), format!("OK {pid}\n"));
}

/// The JVM (its GC, JIT compiler and a thread pool): the pool computes
/// over a map built before the dump, and a GC runs after the restore.
#[test]
fn the_jvm_goes_on() {
    let directory = tempfile::tempdir().unwrap();
    let source = directory.path().join("Subject.java");
    std::fs::write(
        &source,
        r#"
import java.io.*;
import java.util.*;
import java.util.concurrent.*;
public class Subject {
    public static void main(String[] args) throws Exception {
        Map<String, Integer> map = new HashMap<>();
        for (int i = 0; i < 100000; i++) map.put("k" + i, i);
        ExecutorService pool = Executors.newFixedThreadPool(3);
        pool.submit(() -> 0).get();
        long pid = ProcessHandle.current().pid();
        System.out.println("READY " + pid);
        System.out.flush();
        new BufferedReader(new InputStreamReader(System.in)).readLine();
        List<Future<Long>> parts = new ArrayList<>();
        for (int p = 0; p < 3; p++) {
            final int part = p;
            parts.add(pool.submit(() -> {
                long sum = 0;
                for (int i = part; i < 100000; i += 3) sum += map.get("k" + i);
                return sum;
            }));
        }
        long total = 0;
        for (Future<Long> part : parts) total += part.get();
        System.gc();
        pool.shutdown();
        System.out.println((total == 99999L * 100000 / 2 ? "OK " : "FAIL ") + pid);
    }
}
"#,
    )
    .unwrap();
    let compiled = Command::new("javac").arg("-d").arg(directory.path()).arg(&source).status().unwrap();
    assert!(compiled.success(), "javac");
    let mut command = Command::new("java");
    command.args(["-Xmx256m", "-cp"]).arg(directory.path()).arg("Subject");
    let mut subject = Subject::spawn(command);
    let pid = subject.pid;
    assert_eq!(dump_and_restore_runtime(&mut subject, "java"), format!("OK {pid}\n"));
}

/// A Go program (the runtime's threads, its signal-based preemption with
/// SIGURG, futexes, its timer and netpoller): goroutines spin through the
/// dump, a ticker ticks again after it, and a map built before the dump
/// sums to what it held.
#[test]
fn a_go_program_goes_on() {
    let directory = tempfile::tempdir().unwrap();
    let source = directory.path().join("main.go");
    std::fs::write(&source, GO_SUBJECT).unwrap();
    let binary = directory.path().join("subject");
    let built = Command::new("go")
        .arg("build")
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .env("GOFLAGS", "-buildvcs=false")
        .env("GOCACHE", directory.path().join("cache"))
        .status()
        .unwrap();
    assert!(built.success(), "go build");
    let mut subject = Subject::spawn(Command::new(&binary));
    let pid = subject.pid;
    assert_eq!(dump_and_restore_runtime(&mut subject, "go"), format!("OK {pid}\n"));
}

const GO_SUBJECT: &str = r#"
package main

import (
	"bufio"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	var ticks, spins atomic.Int64
	go func() {
		for range time.Tick(5 * time.Millisecond) {
			ticks.Add(1)
		}
	}()
	data := make(map[int]int)
	for i := 0; i < 100000; i++ {
		data[i] = i * 3
	}
	stop := make(chan struct{})
	for w := 0; w < 4; w++ {
		go func() {
			for {
				select {
				case <-stop:
					return
				default:
					spins.Add(1)
				}
			}
		}()
	}
	for ticks.Load() < 2 || spins.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	fmt.Printf("READY %d\n", os.Getpid())
	bufio.NewReader(os.Stdin).ReadString('\n')
	start := ticks.Load()
	for ticks.Load() < start+5 {
		time.Sleep(time.Millisecond)
	}
	close(stop)
	var wg sync.WaitGroup
	sums := make([]int, 4)
	for part := 0; part < 4; part++ {
		wg.Add(1)
		go func(part int) {
			defer wg.Done()
			for i := part; i < 100000; i += 4 {
				sums[part] += data[i]
			}
		}(part)
	}
	wg.Wait()
	if total := sums[0] + sums[1] + sums[2] + sums[3]; total == 3*99999*100000/2 {
		fmt.Printf("OK %d\n", os.Getpid())
	} else {
		fmt.Printf("FAIL %d\n", total)
	}
}
"#;

/// Threads created and exiting all the time (tests/programs/thread_churn.c):
/// the freeze catches the new ones and leaves out the ones that end, five
/// dumps of the running process harm nothing, and a restored one goes on
/// creating and joining threads.
#[test]
fn threads_that_come_and_go_during_the_freeze_are_handled() {
    let directory = tempfile::tempdir().unwrap();
    let mut subject = Subject::spawn(Command::new(c_program("thread_churn")));
    let image = directory.path().join("churn.crp");
    for _ in 0..5 {
        dump_ok(subject.pid, &image, &["--leave-running"]);
    }
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} churn restored\n", subject.pid));
    assert!(subject.wait().success());

    let mut subject = Subject::spawn(Command::new(c_program("thread_churn")));
    dump_ok(subject.pid, &image, &[]);
    assert_killed(subject.wait());
    let output = restore(&image, &[], "go\n");
    assert!(output.status.success(), "{}{}", stdout_of(&output), stderr_of(&output));
    assert_eq!(stdout_of(&output), format!("OK pid={} churn restored\n", subject.pid));
}

/// A dump of a multi-threaded process that fails (its image does not fit
/// the file system) leaves every thread running untraced, and the program
/// finds all its state as it was.
#[test]
fn a_failed_dump_of_a_multi_threaded_process_harms_no_thread() {
    let parent = tempfile::tempdir().unwrap();
    let full = parent.path().join("full");
    std::fs::create_dir(&full).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"]).arg(&full).status().unwrap();
    assert!(mounted.success(), "mount a small tmpfs");
    let mut subject = threads_subject();
    let output = dump(subject.pid, &full.join("threads.crp"), &[]);
    let _ = Command::new("umount").arg(&full).status();
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert!(stderr_of(&output).contains("No space left on device"), "{}", stderr_of(&output));
    assert_every_thread_released(subject.pid, "ENOSPC");
    subject.send("go\n");
    assert_eq!(subject.read_line(), format!("OK pid={} threads restored\n", subject.pid));
    assert!(subject.wait().success());
}

/// The process killed while crp has one of its threads parked: the dump
/// fails cleanly, leaving no image.
#[test]
fn a_multi_threaded_process_killed_during_its_dump_fails_the_dump_cleanly() {
    use nix::sys::signal::{Signal, kill};
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    use nix::unistd::Pid;
    let directory = tempfile::tempdir().unwrap();
    let mut subject = threads_subject();
    let image = directory.path().join("threads.crp");
    let crp = crp()
        .env("CRP_TEST_FAULT", "thread-parked@2:STOP")
        .args(["dump", &subject.pid.to_string(), "-o"])
        .arg(&image)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let crp_pid = Pid::from_raw(crp.id().cast_signed());
    match waitpid(crp_pid, Some(WaitPidFlag::WUNTRACED)).unwrap() {
        WaitStatus::Stopped(_, Signal::SIGSTOP) => {}
        other => panic!("crp did not stop at its fault: {other:?}"),
    }
    kill(Pid::from_raw(subject.pid), Signal::SIGKILL).unwrap();
    kill(crp_pid, Signal::SIGCONT).unwrap();
    let output = crp.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(1), "{}", stderr_of(&output));
    assert_killed(subject.wait());
    assert_eq!(std::fs::read_dir(directory.path()).unwrap().count(), 0, "nothing left behind");
}
