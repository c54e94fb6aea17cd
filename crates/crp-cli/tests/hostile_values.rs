//! Images with valid checksums and a valid archive but hostile decoded
//! values: unsorted or overlapping mappings, addresses near `u64::MAX`,
//! signal numbers like `i32::MIN`, out-of-range resources, odd auxv
//! lengths, registers and XSAVE areas of the wrong size, NUL bytes in
//! paths... Each is refused by `load_image` with an error naming the field,
//! or accepted and then restorable without any step failing after the
//! child exists; none panics, overflows or allocates by an unchecked length.

mod fuzz_support;

use fuzz_support::images::{self, valid_image};
use fuzz_support::mutate::{MUTATIONS, mutate_value};
use fuzz_support::rng::Rng;
use fuzz_support::{Outcome, pipeline_without_panic};

/// Writes `image` to a fresh file and runs the pipeline on it.
fn outcome_of(image: &crp_cli::model::ProcessImage, runs: &images::Runs) -> Result<Outcome, String> {
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("hostile.crp");
    images::write_image(&path, image, runs).unwrap();
    pipeline_without_panic(&path)
}

fn refusal_of(image: &crp_cli::model::ProcessImage) -> String {
    match outcome_of(image, &Vec::new()) {
        Ok(Outcome::Refused(message)) => message,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn the_valid_base_images_are_accepted() {
    for with_pages in [false, true] {
        let (image, runs) = valid_image(with_pages);
        assert_eq!(outcome_of(&image, &runs), Ok(Outcome::Accepted), "with pages: {with_pages}");
    }
}

#[test]
fn every_kind_of_hostile_value_is_refused_or_restorable_without_panic() {
    let mut failures = Vec::new();
    let mut refused = 0;
    for which in 0..MUTATIONS {
        for seed in 0..12u64 {
            let mut rng = Rng::new(which * 1000 + seed);
            let (mut image, mut runs) = valid_image(seed % 2 == 0);
            mutate_value(&mut image, &mut runs, &mut rng, which);
            // Every third case stacks two more random mutations on top.
            if seed % 3 == 2 {
                for _ in 0..2 {
                    let other = rng.below(MUTATIONS);
                    mutate_value(&mut image, &mut runs, &mut rng, other);
                }
            }
            match outcome_of(&image, &runs) {
                Ok(Outcome::Refused(_)) => refused += 1,
                Ok(Outcome::Accepted) => {}
                Err(failure) => failures.push(format!("mutation {which}, seed {seed}: {failure}")),
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(refused > 0, "no hostile value was refused: the mutations do nothing");
}

/// One hostile value in an otherwise valid image, and the words its
/// refusal must contain.
fn assert_refused(change: impl FnOnce(&mut crp_cli::model::ProcessImage), expected: &[&str]) {
    let (mut image, _) = valid_image(false);
    change(&mut image);
    let message = refusal_of(&image);
    assert!(message.starts_with("the image is invalid"), "{message}");
    for word in expected {
        assert!(message.contains(word), "{message:?} does not say {word:?}");
    }
}

#[test]
fn an_unsorted_vdso_list_is_refused_naming_the_mapping() {
    assert_refused(|image| image.vdso.mappings.reverse(), &["vDSO mapping 1", "starts before the block"]);
}

#[test]
fn a_vdso_mapping_that_ends_before_it_starts_is_refused() {
    assert_refused(
        |image| {
            let mapping = &mut image.vdso.mappings[0];
            std::mem::swap(&mut mapping.start, &mut mapping.end);
        },
        &["vDSO mapping 0", "reversed"],
    );
}

#[test]
fn vmas_out_of_address_order_are_refused() {
    assert_refused(|image| image.vmas.swap(0, 1), &["VMA 1", "out of address order"]);
}

#[test]
fn a_vma_near_the_top_of_the_address_space_is_refused() {
    assert_refused(
        |image| {
            image.vmas[2].start = u64::MAX - 0x1fff;
            image.vmas[2].end = u64::MAX - 0xfff;
        },
        &["VMA 2", "outside user space"],
    );
}

#[test]
fn signal_numbers_outside_one_to_64_are_refused_naming_the_action() {
    for signal in [i32::MIN, 0, 65, libc::SIGKILL] {
        assert_refused(|image| image.signals.actions[3].signal = signal, &["signal action 3", &signal.to_string()]);
    }
}

#[test]
fn an_out_of_range_resource_limit_is_refused() {
    assert_refused(
        |image| image.rlimits.push(crp_compound::rlimits::Limit { resource: u32::MAX, soft: 0, hard: 0 }),
        &["resource limit 2", "4294967295"],
    );
}

#[test]
fn descriptors_that_cannot_exist_are_refused() {
    assert_refused(|image| image.files.descriptors[4].fd = i32::MAX, &["descriptor 4", "not a descriptor number"]);
    assert_refused(
        |image| image.files.files[0].target = crp_compound::files::FdTarget::Inherited { stream: 3 },
        &["open file 0", "stream 3"],
    );
}

#[test]
fn paths_with_nul_bytes_or_empty_are_refused() {
    assert_refused(|image| image.mm.exe_path = "/usr/bin/\0true".into(), &["executable path", "NUL"]);
    assert_refused(|image| image.task.cwd = String::new(), &["cwd", "absolute"]);
}

#[test]
fn an_auxv_of_odd_length_is_refused() {
    assert_refused(|image| image.mm.auxv.push(7), &["auxv", "7 words"]);
}

#[test]
fn a_register_file_of_the_wrong_size_is_refused_as_an_invalid_image() {
    assert_refused(
        |image| {
            image.threads[0].cpu.registers.values.pop();
        },
        &["registers", "26 entries"],
    );
}

#[test]
fn a_syscall_rewind_at_address_zero_is_refused() {
    assert_refused(
        |image| {
            let values = &mut image.threads[0].cpu.registers.values;
            values[images::reg::RIP] = 0;
            values[images::reg::ORIG_RAX] = 0;
            values[images::reg::RAX] = (-512i64).cast_unsigned();
        },
        &["register rip"],
    );
}

#[test]
fn xsave_areas_of_the_wrong_size_are_refused() {
    assert_refused(|image| image.threads[0].cpu.xsave.bytes.truncate(100), &["XSAVE", "100 bytes"]);
    assert_refused(|image| image.threads[0].cpu.xsave.bytes.resize(1 << 20, 0), &["XSAVE", "1048576 bytes"]);
}

#[test]
fn timers_that_are_not_timevals_are_refused() {
    assert_refused(|image| image.timers.timers[1][15] = 0x80, &["ITIMER_VIRTUAL"]);
}

#[test]
fn an_image_without_its_leader_first_or_with_forged_threads_is_refused() {
    assert_refused(|image| image.threads.clear(), &["not the leader"]);
    assert_refused(|image| image.threads[0].tid += 1, &["not the leader"]);
    assert_refused(
        |image| {
            let copy = image.threads[0].clone();
            image.threads.push(copy);
        },
        &["thread id", "twice"],
    );
    assert_refused(
        |image| {
            let mut copy = image.threads[0].clone();
            copy.tid = 0;
            image.threads.push(copy);
        },
        &["a thread with id 0"],
    );
    assert_refused(
        |image| {
            let mut copy = image.threads[0].clone();
            copy.tid = image.pid + 1;
            copy.cpu.registers.values.pop();
            image.threads.push(copy);
        },
        &["thread ", "registers"],
    );
}

#[test]
fn terminal_settings_and_pseudo_terminals_that_cannot_be_set_are_refused() {
    let settings = crp_compound::files::TerminalSettings { control_characters: vec![3; 5], ..Default::default() };
    let short = settings.clone();
    assert_refused(|image| image.session.terminal = Some(short), &["terminal settings", "5 control characters"]);
    let master = crp_compound::files::PtyMaster { number: 3, settings, packet: false, locked: false };
    assert_refused(
        |image| {
            let fd = image.files.descriptors.iter().map(|descriptor| descriptor.fd).max().unwrap_or(2) + 1;
            let target = crp_compound::files::FdTarget::PtyMaster(master);
            image.files.push_record(crp_compound::files::FdRecord { fd, flags: libc::O_RDWR, offset: 0, target });
        },
        &["5 control characters"],
    );
    assert_refused(
        |image| {
            let fd = image.files.descriptors.iter().map(|descriptor| descriptor.fd).max().unwrap_or(2) + 1;
            let target = crp_compound::files::FdTarget::PtySlave { number: 9 };
            image.files.push_record(crp_compound::files::FdRecord { fd, flags: libc::O_RDWR, offset: 0, target });
        },
        &["slave of pseudo-terminal 9", "master the table lacks"],
    );
}

/// A socket the restore could not make as recorded is refused naming it.
#[test]
fn sockets_that_cannot_be_made_are_refused() {
    use crp_compound::files::socket::{Address, Datagram, Peer, SocketOption, TcpConnection};
    use crp_compound::files::{FdTarget, SocketFile};
    let udp = || SocketFile {
        inode: 1,
        family: libc::AF_INET,
        kind: libc::SOCK_DGRAM,
        protocol: libc::IPPROTO_UDP,
        local: Some(Address::V4 { ip: [127, 0, 0, 1], port: 9 }),
        bound_file: None,
        peer: Peer::None,
        backlog: None,
        lost_connections: 0,
        shutdown: 0,
        options: vec![],
        queued: vec![],
        connection: None,
        memberships: vec![],
    };
    let with = |socket: SocketFile| {
        move |image: &mut crp_cli::model::ProcessImage| {
            image.files.files[0].target = FdTarget::Socket(Box::new(socket));
        }
    };
    assert_refused(with(SocketFile { family: libc::AF_NETLINK, ..udp() }), &["open file 0", "AF_NETLINK"]);
    assert_refused(
        with(SocketFile {
            family: libc::AF_UNIX,
            protocol: 0,
            local: Some(Address::Unix(b"/run/a\0b".to_vec())),
            ..udp()
        }),
        &["open file 0", "NUL"],
    );
    assert_refused(
        with(SocketFile { local: Some(Address::Unix(b"relative".to_vec())), ..udp() }),
        &["open file 0", "another family"],
    );
    assert_refused(
        with(SocketFile { queued: vec![Datagram { source: None, data: vec![0; 70_000] }], ..udp() }),
        &["open file 0", "datagram"],
    );
    assert_refused(
        with(SocketFile { options: vec![SocketOption { level: 1, name: 9999, value: vec![] }], ..udp() }),
        &["open file 0", "unknown option"],
    );
    let connection = TcpConnection {
        send_seq: 0,
        receive_seq: 0,
        send_queue: vec![1],
        unsent: 5,
        receive_queue: vec![],
        mss_clamp: 1400,
        options: 0,
        send_wscale: 0,
        receive_wscale: 0,
        timestamp: 0,
        window: None,
        peer_outside: false,
    };
    let peer = Peer::Address(Address::V4 { ip: [127, 0, 0, 1], port: 10 });
    let tcp = SocketFile { kind: libc::SOCK_STREAM, protocol: libc::IPPROTO_TCP, peer, ..udp() };
    assert_refused(with(SocketFile { connection: Some(connection), ..tcp.clone() }), &["open file 0", "unsent"]);
    assert_refused(with(tcp), &["open file 0", "without its connection"]);
}

#[test]
fn pending_signals_timers_and_locks_that_cannot_exist_are_refused() {
    use crp_compound::pending_signals::QueuedSignal;
    use crp_compound::posix_timers::PosixTimer;
    use crp_locks::{FileLock, LockKind};
    let signal = |number: i32| {
        let mut siginfo = [0u8; 128];
        siginfo[..4].copy_from_slice(&number.to_le_bytes());
        QueuedSignal { siginfo }
    };
    assert_refused(
        |image| image.pending_signals.queue.push(signal(0)),
        &["pending signals entry 0", "signal number 0"],
    );
    assert_refused(|image| image.threads[0].pending_signals.queue.push(signal(9)), &["thread pending signals", "9"]);
    assert_refused(|image| image.pending_signals.queue.extend([signal(10), signal(10)]), &["a second time"]);
    let timer = PosixTimer {
        id: 3,
        clock: 1,
        notify: 0,
        signal: 14,
        value: 0,
        thread: 0,
        left_ns: 1,
        interval_ns: 0,
        overrun: 0,
    };
    assert_refused(|image| image.posix_timers.timers.extend([timer, timer]), &["POSIX timer 3", "repeated"]);
    assert_refused(|image| image.posix_timers.timers.push(PosixTimer { clock: 5, ..timer }), &["clock 5"]);
    assert_refused(
        |image| image.posix_timers.timers.push(PosixTimer { notify: 4, thread: 99, ..timer }),
        &["signals thread 99"],
    );
    let lock = FileLock { kind: LockKind::Posix, write: true, start: 0, end: None, fd: 77, path: "/srv/x".into() };
    assert_refused(|image| image.file_locks.locks.push(lock.clone()), &["fd 77", "no descriptor"]);
    assert_refused(
        |image| image.file_locks.locks.push(FileLock { start: 9, end: Some(3), ..lock.clone() }),
        &["bytes 9-3"],
    );
}
