//! The text form of `crp inspect`: one section per kind of state, rendered
//! from the same [`ImageSummary`] `--json` prints.

use std::fmt::Write;

use super::{ImageSummary, LimitValue, NamedSet, describe_age};

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// "none" or the names of a set, with its hex value.
fn names(set: &NamedSet) -> String {
    if set.names.is_empty() { "none".to_owned() } else { format!("{} ({:#x})", set.names.join(" "), set.value) }
}

/// A capability set; one holding most known capabilities is shown as
/// "all but" the few it lacks.
fn capability_set(set: &NamedSet) -> String {
    let known = crp_compound::creds::known_capability_set();
    let held = set.value & known;
    if held.count_ones() * 2 <= known.count_ones() {
        return names(set);
    }
    let mut lacking = crp_compound::creds::capability_names(known & !set.value);
    let beyond = crp_compound::creds::capability_names(set.value & !known);
    let text = match lacking.is_empty() {
        true => "all".to_owned(),
        false => {
            lacking.insert(0, "all but".to_owned());
            lacking.join(" ")
        }
    };
    match beyond.is_empty() {
        true => format!("{text} ({:#x})", set.value),
        false => format!("{text}, and {} ({:#x})", beyond.join(" "), set.value),
    }
}

fn limit(value: LimitValue) -> String {
    match value.0 {
        u64::MAX => "unlimited".to_owned(),
        value => value.to_string(),
    }
}

/// ", echo, canonical, 24x80": a terminal's main modes and window size.
fn terminal(summary: &super::TerminalSummary) -> String {
    format!(
        ", {}, {}, {}x{}",
        if summary.echo { "echo" } else { "no echo" },
        if summary.canonical { "canonical" } else { "raw" },
        summary.rows,
        summary.columns
    )
}

fn seconds(microseconds: u64) -> String {
    format!("{:.3} s", microseconds as f64 / 1e6)
}

/// ", options SO_SNDTIMEO=1.500000 s, was named /run/x (name not kept)".
fn pair_extras(pair: &super::SocketPairSummary) -> String {
    let mut text = String::new();
    if !pair.options.is_empty() {
        let options: Vec<String> =
            pair.options.iter().map(|option| format!("{}={}", option.name, option.value)).collect();
        let _ = write!(text, ", options {}", options.join(" "));
    }
    if let Some(name) = &pair.lost_name {
        let _ = write!(text, ", was named {name} (name not kept)");
    }
    for flight in &pair.in_flight {
        let fds: Vec<String> = flight
            .fds
            .iter()
            .map(|fd| fd.map_or_else(|| "a file only in flight".to_owned(), |fd| format!("fd {fd}")))
            .collect();
        let _ = write!(text, ", message {} carries {} (SCM_RIGHTS)", flight.message, fds.join(" "));
    }
    text
}

/// "TCP socket 127.0.0.1:8000 listening (backlog 5), options SO_REUSEADDR=1".
fn socket_text(socket: &super::SocketSummary) -> String {
    let mut text = format!("{} socket {}", socket.kind, socket.local.as_deref().unwrap_or("(unbound)"));
    if socket.path_present == Some(false) {
        text.push_str(" (path removed)");
    }
    if let Some(backlog) = socket.listening_backlog {
        let _ = write!(text, " listening (backlog {backlog})");
    }
    if socket.lost_connections > 0 {
        let _ = write!(text, ", {} waiting connections lost", socket.lost_connections);
    }
    match (socket.peer_outside, &socket.peer) {
        (Some(inode), peer) => {
            let _ = write!(text, " connected to socket:[{inode}]");
            if let Some(peer) = peer {
                let _ = write!(text, " ({peer})");
            }
            text.push_str(" outside the process");
        }
        (None, Some(peer)) => {
            let _ = write!(text, " connected to {peer}");
        }
        (None, None) => {}
    }
    if let Some(connection) = &socket.connection {
        let _ = write!(
            text,
            " (TCP connection{}: {} bytes to send, {} of them never sent, {} to read, MSS {})",
            if connection.peer_outside { " to a peer outside the process" } else { "" },
            connection.send_queue_bytes,
            connection.unsent_bytes,
            connection.receive_queue_bytes,
            connection.mss
        );
    }
    if let Some(how) = socket.shut_down {
        let _ = write!(text, ", {how} shut down");
    }
    if socket.queued_datagrams > 0 {
        let _ = write!(text, ", {} datagrams ({} bytes) waiting", socket.queued_datagrams, socket.queued_bytes);
    }
    for membership in &socket.memberships {
        let _ = write!(text, ", member of {} on {}", membership.group, membership.interface);
        if !membership.sources.is_empty() || !matches!(membership.mode, "exclude") {
            let _ = write!(text, " ({} {})", membership.mode, membership.sources.join(" "));
        }
    }
    if !socket.options.is_empty() {
        let options: Vec<String> =
            socket.options.iter().map(|option| format!("{}={}", option.name, option.value)).collect();
        let _ = write!(text, ", options {}", options.join(" "));
    }
    text
}

pub fn render_text(summary: &ImageSummary) -> String {
    let mut out = String::new();
    header(&mut out, summary);
    process(&mut out, summary);
    credentials(&mut out, summary);
    signals(&mut out, summary);
    super::queued::render_pending(&mut out, &summary.pending_signals);
    timers_and_limits(&mut out, summary);
    registers(&mut out, summary);
    memory(&mut out, summary);
    let _ = writeln!(out, "\nfiles ({})", summary.files.len());
    for file in &summary.files {
        match file.shares_description_with {
            Some(first) => writeln!(out, "  fd {:<3} the same open file as fd {first}", file.fd),
            None if file.socket_pair.is_some() => {
                let pair = file.socket_pair.as_ref().map_or_else(String::new, |pair| {
                    format!(
                        "{} pair with fd {}, {} messages ({} bytes) waiting{}",
                        pair.kind,
                        pair.peer_fd.map_or_else(|| "?".to_owned(), |fd| fd.to_string()),
                        pair.queued_messages,
                        pair.queued_bytes,
                        pair.shut_down.map_or_else(String::new, |how| format!(", {how} shut down"))
                    ) + &pair_extras(pair)
                });
                writeln!(out, "  fd {:<3} {} {pair} (flags {})", file.fd, file.target, file.flags_octal)
            }
            None if let Some(socket) = &file.socket => {
                writeln!(out, "  fd {:<3} {} (flags {})", file.fd, socket_text(socket), file.flags_octal)
            }
            None if let Some(pty) = &file.pty => writeln!(
                out,
                "  fd {:<3} pseudo-terminal {} of /dev/pts/{}{}{}{} (flags {})",
                file.fd,
                pty.end,
                pty.number,
                pty.terminal.as_ref().map(terminal).unwrap_or_default(),
                if pty.packet_mode { ", packet mode" } else { "" },
                if pty.locked { ", locked" } else { "" },
                file.flags_octal
            ),
            None if file.kind == "own terminal" => writeln!(
                out,
                "  fd {:<3} {}: its own terminal, reopened as /dev/tty (flags {})",
                file.fd, file.target, file.flags_octal
            ),
            None => match &file.pipe {
                None if let Some(event) = file.event.text() => {
                    writeln!(out, "  fd {:<3} {event} (flags {})", file.fd, file.flags_octal)
                }
                Some(pipe) => writeln!(
                    out,
                    "  fd {:<3} {} {} end (flags {}), {} bytes buffered of {}{}",
                    file.fd,
                    file.target,
                    pipe.end,
                    file.flags_octal,
                    pipe.buffered_bytes,
                    pipe.size,
                    if pipe.other_end_outside { ", other end outside the process" } else { "" }
                ),
                None => match (&file.fifo, &file.file_object) {
                    (Some(fifo), _) => writeln!(
                        out,
                        "  fd {:<3} FIFO {} (mode {}{}, flags {}), {} bytes buffered of {}",
                        file.fd,
                        fifo.path,
                        fifo.mode,
                        if fifo.deleted { ", deleted: made again" } else { "" },
                        file.flags_octal,
                        fifo.buffered_bytes,
                        fifo.size
                    ),
                    (None, Some(object)) if object.contents_stored => writeln!(
                        out,
                        "  fd {:<3} {} {} (inode {}, mode {}, size {}, {} bytes stored in {} extents{}; flags {}, \
                         offset {})",
                        file.fd,
                        object.kind,
                        object.name,
                        object.inode,
                        object.mode.as_deref().unwrap_or("?"),
                        object.size.unwrap_or(0),
                        object.stored_bytes,
                        object.extents,
                        object.seals.map(|seals| format!(", seals {seals:#x}")).unwrap_or_default(),
                        file.flags_octal,
                        file.offset
                    ),
                    (None, Some(object)) if object.kind == "deleted directory" => writeln!(
                        out,
                        "  fd {:<3} deleted directory {} (inode {}, mode {}: made again empty and removed; flags {})",
                        file.fd,
                        object.name,
                        object.inode,
                        object.mode.as_deref().unwrap_or("?"),
                        file.flags_octal
                    ),
                    (None, Some(object)) => writeln!(
                        out,
                        "  fd {:<3} {} {} (inode {}, reopened by file handle, contents not stored; flags {}, \
                         offset {})",
                        file.fd, object.kind, object.name, object.inode, file.flags_octal, file.offset
                    ),
                    (None, None) => writeln!(
                        out,
                        "  fd {:<3} {}{} (flags {}, offset {})",
                        file.fd,
                        if file.kind == "O_PATH" { "O_PATH " } else { "" },
                        file.target,
                        file.flags_octal,
                        file.offset
                    ),
                },
            },
        }
        .unwrap_or_default();
        if file.shares_description_with.is_none() {
            instances(&mut out, file);
            if let Some(owner) = &file.owner {
                let _ = writeln!(out, "         signals (F_SETOWN) go to {}", owner.description);
            }
        }
    }
    super::locks::render(&mut out, &summary.file_locks);
    if let Some(chain) = &summary.chain {
        super::chain::render(&mut out, &summary.path, chain);
    }
    out
}

/// An epoll's registrations or an inotify's watches, under its descriptor.
fn instances(out: &mut String, file: &super::FdSummary) {
    for registration in file.epoll.iter().flatten() {
        let now_at = match registration.target_now_at {
            Some(fd) => format!(" (its file is now fd {fd})"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "         registers fd {}{now_at}: events {} data {}",
            registration.target_fd,
            registration.events_names,
            format_args!("{:#x}", registration.data.value)
        );
    }
    if let Some(watches) = &file.inotify {
        for watch in watches {
            let _ = writeln!(out, "         watch {}: {} ({})", watch.wd, watch.path, watch.mask_names);
        }
        let _ = writeln!(out, "         events queued at the dump are not kept");
    }
}

fn header(out: &mut String, summary: &ImageSummary) {
    let _ = writeln!(
        out,
        "image      {} (format v{}, rkyv layout {:#x})",
        summary.path, summary.format_version, summary.rkyv_layout.value
    );
    for section in &summary.sections {
        let _ = writeln!(
            out,
            "section    {:<15} at {:#10x}, {:>12} bytes, xxh3 {}",
            section.kind, section.offset, section.length, section.checksum
        );
    }
    let _ = writeln!(
        out,
        "size       {:.1} MiB total, {:.1} MiB of pages in {} runs, {} bytes of metadata",
        mib(summary.file_bytes),
        mib(summary.page_bytes),
        summary.page_runs,
        summary.metadata_bytes
    );
    let _ = writeln!(
        out,
        "dumped     {} ({}) on kernel {}",
        summary.dumped_at.utc,
        describe_age(summary.dumped_at.age_seconds),
        summary.kernel_release
    );
}

fn process(out: &mut String, summary: &ImageSummary) {
    let process = &summary.process;
    let _ = writeln!(
        out,
        "process    pid {} comm {:?}{}",
        process.pid,
        process.comm,
        match process.stopped {
            true => ", stopped (it comes back stopped)",
            false => "",
        }
    );
    let _ = writeln!(out, "exe        {}", process.exe);
    let _ = writeln!(out, "cwd        {}", process.cwd);
    let _ = writeln!(
        out,
        "task       umask {:04o}, personality {:#x}, CPUs {:?}",
        process.umask, process.personality, process.cpu_affinity
    );
    let session = &summary.session;
    let _ = writeln!(
        out,
        "session    sid {}{}, pgid {}{}, {}{}",
        session.session,
        if session.led_session { " (its own)" } else { "" },
        session.process_group,
        if session.led_group { " (its own)" } else { "" },
        match &session.controlling_terminal {
            Some(name) if session.in_foreground => format!("controlling terminal {name}, in the foreground"),
            Some(name) =>
                format!("controlling terminal {name}, in the background (foreground pgid {})", session.foreground_group),
            None => "no controlling terminal".to_owned(),
        },
        session.terminal.as_ref().map(terminal).unwrap_or_default()
    );
    let _ = writeln!(out, "xsave      features {:#x} ({} bytes)", summary.xsave.features.value, summary.xsave.bytes);
    let attributes = &summary.process_attributes;
    let membarrier = if attributes.membarrier_registrations.names.is_empty() {
        "none".to_owned()
    } else {
        attributes.membarrier_registrations.names.join(" ")
    };
    let _ = writeln!(
        out,
        "attributes oom_score_adj {}, THP disable {}, child subreaper {}, MDWE {:#x}, membarrier {membarrier}",
        attributes.oom_score_adj,
        attributes.thp_disable,
        attributes.child_subreaper,
        attributes.memory_deny_write_execute
    );
    let _ = writeln!(
        out,
        "           coredump_filter {:#x}, login uid {}, AMX tile data {}, futex hash {}",
        attributes.coredump_filter,
        match attributes.login_uid {
            None => "(no audit)".to_owned(),
            Some(crp_compound::process_attrs::LOGIN_UID_UNSET) => "none".to_owned(),
            Some(uid) => uid.to_string(),
        },
        if attributes.amx_permitted { "permitted" } else { "not asked for" },
        match attributes.futex_hash_slots {
            0 => "the kernel's".to_owned(),
            slots => format!("{slots} slots"),
        }
    );
    for thread in &summary.threads {
        let scheduling = &thread.scheduling;
        let priority = match scheduling.priority {
            0 => format!("nice {}", scheduling.nice),
            priority => format!("priority {priority}"),
        };
        let _ = writeln!(
            out,
            "thread     {} comm {:?}, {} {priority}{}, timer slack {} ns, I/O {} {}{}",
            thread.tid,
            thread.comm,
            scheduling.policy,
            if scheduling.reset_on_fork { " (reset on fork)" } else { "" },
            thread.timer_slack_ns,
            thread.io_priority.class,
            thread.io_priority.level,
            if thread.io_priority.follows_scheduling { " (from the scheduling)" } else { "" },
        );
        let _ = match &thread.in_syscall {
            Some(call) => writeln!(
                out,
                "           frozen at {:#x} in {} ({} on restore)",
                thread.frozen_at, call.name, call.on_restore
            ),
            None => writeln!(out, "           frozen at {:#x}, running", thread.frozen_at),
        };
        let speculation: Vec<String> =
            thread.speculation.iter().map(|control| format!("{} {:#x}", control.control, control.value)).collect();
        let _ = writeln!(
            out,
            "           parent-death signal {}, machine-check kill {}, TSC {}{}, speculation: {}",
            match thread.parent_death_signal {
                0 => "none".to_owned(),
                signal => crp_compound::signals::signal_name(signal.cast_signed()),
            },
            thread.machine_check_kill,
            thread.tsc,
            if thread.cpuid_faulting { ", cpuid faults" } else { "" },
            if speculation.is_empty() { "none".to_owned() } else { speculation.join(", ") }
        );
    }
}

fn credentials(out: &mut String, summary: &ImageSummary) {
    let credentials = &summary.credentials;
    let ids = |ids: &super::Ids| format!("{}/{}/{}/{}", ids.real, ids.effective, ids.saved, ids.fs);
    let _ = writeln!(out, "\ncredentials (real/effective/saved/fs)");
    let _ = writeln!(out, "  uids        {}", ids(&credentials.uids));
    let _ = writeln!(out, "  gids        {}", ids(&credentials.gids));
    let groups: Vec<String> = credentials.groups.iter().map(u32::to_string).collect();
    let _ = writeln!(out, "  groups      {}", if groups.is_empty() { "none".to_owned() } else { groups.join(" ") });
    let capabilities = &credentials.capabilities;
    for (name, set) in [
        ("effective", &capabilities.effective),
        ("permitted", &capabilities.permitted),
        ("inheritable", &capabilities.inheritable),
        ("bounding", &capabilities.bounding),
        ("ambient", &capabilities.ambient),
    ] {
        let _ = writeln!(out, "  {name:<11} {}", capability_set(set));
    }
    let _ = writeln!(
        out,
        "  keep-caps {}, no_new_privs {}, dumpable {}",
        credentials.keep_caps, credentials.no_new_privs, credentials.dumpable
    );
}

fn signals(out: &mut String, summary: &ImageSummary) {
    let signals = &summary.signals;
    let _ = writeln!(out, "\nsignals");
    let _ = writeln!(out, "  blocked     {}", names(&signals.blocked));
    if signals.altstack.size != 0 {
        let _ = writeln!(
            out,
            "  altstack    {:#x}, {} bytes, flags {:#x}",
            signals.altstack.sp.value, signals.altstack.size, signals.altstack.flags
        );
    }
    if signals.handlers.is_empty() {
        let _ = writeln!(out, "  every signal has its default action");
    }
    for handler in &signals.handlers {
        let what = match handler.disposition {
            "ignore" => "ignored".to_owned(),
            _ => format!("handler {:#x}", handler.handler.value),
        };
        let flags = if handler.flags.names.is_empty() { "no flags".to_owned() } else { handler.flags.names.join("|") };
        let mask = if handler.mask.names.is_empty() {
            String::new()
        } else {
            format!(", blocks {}", handler.mask.names.join(" "))
        };
        let _ = writeln!(out, "  {:<11} {what} ({flags}{mask})", handler.name);
    }
}

fn timers_and_limits(out: &mut String, summary: &ImageSummary) {
    let _ = writeln!(out, "\ntimers");
    let armed: Vec<_> = summary.timers.iter().filter(|timer| timer.armed).collect();
    super::queued::render_posix_timers(out, &summary.posix_timers);
    if armed.is_empty() && summary.posix_timers.is_empty() {
        let _ = writeln!(out, "  none armed");
    }
    for timer in armed {
        let _ = writeln!(
            out,
            "  {:<15} {} left, interval {}",
            timer.name,
            seconds(timer.left_microseconds),
            seconds(timer.interval_microseconds)
        );
    }
    let _ = writeln!(out, "\nresource limits (soft / hard)");
    for limit_summary in &summary.rlimits {
        let _ =
            writeln!(out, "  {:<18} {} / {}", limit_summary.name, limit(limit_summary.soft), limit(limit_summary.hard));
    }
}

fn registers(out: &mut String, summary: &ImageSummary) {
    let _ = writeln!(out, "\nregisters");
    for chunk in summary.registers.0.chunks(3) {
        let line: Vec<String> =
            chunk.iter().map(|(name, value)| format!("{name:>8} {:<18}", format!("{value:#x}"))).collect();
        let _ = writeln!(out, "  {}", line.join(" "));
    }
}

fn memory(out: &mut String, summary: &ImageSummary) {
    let _ = writeln!(out, "\nVMAs ({})", summary.vmas.len());
    let _ = writeln!(out, "  {:<33} {:<5} {:>8}  backing", "range", "perm", "pages");
    for vma in &summary.vmas {
        let _ = writeln!(
            out,
            "  {:<33} {:<5} {:>8}  {}{}",
            format!("{:#x}-{:#x}", vma.start.value, vma.end.value),
            vma.permissions,
            vma.pages_stored,
            vma.backing,
            match vma.locked {
                "no" => String::new(),
                locked => format!(" (mlocked{})", if locked == "on fault" { ", on fault" } else { "" }),
            }
        );
    }
    for mapping in &summary.vdso {
        let range = format!("{:#x}-{:#x}", mapping.start.value, mapping.end.value);
        let _ = writeln!(out, "  {range:<33} kernel special mapping {}", mapping.name);
    }
    for guard in &summary.guard_regions {
        let range = format!("{:#x}-{:#x}", guard.start.value, guard.end.value);
        let _ = writeln!(out, "  {range:<33} guard region (MADV_GUARD_INSTALL), installed again");
    }
    if summary.future_locking != "none" {
        let _ = writeln!(out, "  new mappings locked: {} (set again at restore)", summary.future_locking);
    }
    if summary.shared_memory.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nshared memory objects ({})", summary.shared_memory.len());
    for object in &summary.shared_memory {
        let _ = writeln!(
            out,
            "  #{} {} inode {}, {} bytes, {} mapping(s), {} page(s) stored once{}; {}",
            object.object,
            object.kind,
            object.inode,
            object.size,
            object.mappings,
            object.pages_stored,
            if object.contents_bytes > 0 {
                format!(", {} bytes of contents", object.contents_bytes)
            } else {
                String::new()
            },
            object.restored_as
        );
        for pid in &object.shared_outside_with {
            let _ = writeln!(
                out,
                "    shared with pid {pid} outside the dump: restored with its contents, but no longer shared"
            );
        }
    }
}
