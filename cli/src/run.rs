//! `hvscript run`: boot a guest on KVM (hv-kvm) with event commands attached, print the
//! events' output as it comes, and at the end a summary of every event's counters and of
//! the guest's own counters.
//!
//! Events come from `-e 'COMMAND'` (in order) and then from `-f FILE`, cut into commands by
//! [`crate::commands`] (a command ends on the line where its braces balance; comments
//! anywhere), with `#include` and `script { file:PATH }` expanded ([`crate::include`]). A
//! bad command is reported with its location (`-e` or the file, line, column, and a caret;
//! inside an included file when the error is there) and the run does not start (exit
//! status 2). Events this machine's KVM cannot intercept are refused with the reason.
//! When standard output goes away (`| head`), the guest is asked to stop and the run exits
//! 141 without its summary ([`crate::out`]).
//!
//! `run [OPTIONS] -- PROGRAM ARGS` runs a static Linux executable as the guest instead of
//! the demo ([`run_program`]): its standard streams and exit status are the user's, event
//! output and the summary go to standard error.
//!
//! `--listen PATH` serves hv-kvm's control socket while the guest (the demo or a program)
//! runs; `hvscript attach
//! PATH` ([`crate::attach`]) sends commands to it (`-e`, `-f FILE`, or standard input, where a
//! command spanning lines is sent when its braces balance) and prints the replies and the
//! event output.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hv_core::{OutputSink, Stage};
use hv_kvm::control::{self, Fanout};
use hv_kvm::{KvmPlatform, StopReason, Vm, VmConfig};
use hvscript_front::Backend;

use crate::commands;
use crate::include::{Expanded, SourceFile};
use crate::out::{self, err, errln, out, outln};

#[derive(clap::Args)]
pub struct Args {
    /// The guest to boot (`demo`: a kernel part doing MSR accesses, then a user-mode loop
    /// doing port I/O).
    #[arg(long, default_value = "demo")]
    guest: String,
    /// An event command, e.g. `!ioin 510 stage post script { @eax = 7; }` (repeatable).
    #[arg(short = 'e', long = "event", value_name = "EVENT COMMAND")]
    events: Vec<String>,
    /// A file of event commands (repeatable).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Run for this many seconds, then ask the guest to finish its loop.
    // A negative value is ours to refuse with a clear message, not clap's "unexpected -1".
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    seconds: Option<f64>,
    /// User-loop iterations per vCPU (default 1000 without --seconds, unlimited with it).
    #[arg(long, value_name = "N")]
    iterations: Option<u64>,
    /// Number of vCPUs (one thread each; default 2; the demo guest only).
    #[arg(long, value_name = "N")]
    vcpus: Option<usize>,
    /// Do not print the events' output, only the summary.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Accept `hvscript attach` clients on this unix socket while the guest runs
    /// (without --seconds/--iterations the guest then runs for 60 s).
    #[arg(long, value_name = "PATH")]
    listen: Option<PathBuf>,
    /// SYSCALLs the demo's user loop makes (RAX = 0, 1, ...), for `!syscall`/`!sysret`.
    #[arg(long, default_value_t = 0, value_name = "N")]
    syscall_rounds: u64,
    /// Calls of the demo kernel's hookable function, for `!epthook`/`!epthook2`.
    #[arg(long, default_value_t = 0, value_name = "N")]
    hook_rounds: u64,
    /// Rounds of `ud2` and a division by zero in the user loop, for `!exception`.
    #[arg(long, default_value_t = 0, value_name = "N")]
    exception_rounds: u64,
    /// Run event scripts on the interpreter instead of compiling them with the JIT.
    #[arg(long)]
    interp: bool,
    /// Name an address for event arguments and scripts: NAME=ADDR or MODULE!NAME=ADDR
    /// (repeatable), e.g. `--sym counter=0x3000` then `!monitor w counter counter+7`.
    #[arg(long = "sym", value_name = "NAME=ADDR")]
    symbols: Vec<String>,
    /// Write event output and the summary as JSON lines (schema in the README): on standard
    /// output for the demo guest, on standard error for a program (its standard output is
    /// its own).
    #[arg(long)]
    json: bool,
    /// List the event kinds (matching GLOB, e.g. `'sys*'`): their arguments, stages, and
    /// whether the demo guest and a program guest raise them; then exit.
    #[arg(short = 'l', long = "list", value_name = "GLOB", num_args = 0..=1, default_missing_value = "*")]
    list: Option<String>,
    /// A file the program guest may open, read-only (repeatable).
    #[arg(long = "allow-read", value_name = "PATH")]
    allow_read: Vec<PathBuf>,
    /// Never rewrite the program's system-call instructions (each call then takes two
    /// trips through KVM instead of one; hooks still patch `int3`).
    #[arg(long)]
    no_syscall_patching: bool,
    /// A static x86-64 Linux executable to run as the guest instead of the demo, and its
    /// arguments: `hvscript run -- ./hello one two`.
    #[arg(last = true, value_name = "PROGRAM [ARGS]")]
    program: Vec<String>,
}

/// Prints each execution's output as one piece, on the VM's output thread (never a
/// vCPU's: a standard output that blocks holds up only that thread, and the vCPUs drop
/// what does not fit their rings, counted in the summary).
struct Console {
    quiet: bool,
}

impl OutputSink for Console {
    fn output(&self, _event_id: u64, _stage: Stage, _core: u32, text: &[u8]) {
        if !self.quiet {
            out::stdout(text);
        }
    }
}

pub fn run(args: Args) -> ExitCode {
    if let Some(glob) = &args.list {
        if crate::list::list(glob) {
            return ExitCode::SUCCESS;
        }
        errln!("error: no event kind matches `{glob}` (`hvscript run -l` lists them all)");
        return ExitCode::from(2);
    }
    if !args.program.is_empty() {
        return run_program(&args);
    }
    if args.guest != "demo" {
        errln!("error: unknown guest `{}` (available: demo)", args.guest);
        return ExitCode::from(2);
    }
    if !args.allow_read.is_empty() {
        errln!("error: --allow-read is for a program guest (`run --allow-read PATH -- PROGRAM`)");
        return ExitCode::from(2);
    }
    if args.no_syscall_patching {
        errln!("error: --no-syscall-patching is for a program guest (`run -- PROGRAM`)");
        return ExitCode::from(2);
    }
    let Some(commands) = load_commands(&args) else {
        return ExitCode::from(2);
    };

    let (iterations, duration) = match args.seconds {
        Some(s) if !(s > 0.0 && s.is_finite() && s < 1e9) => {
            errln!("error: --seconds {s}: the run time must be a positive number of seconds");
            return ExitCode::from(2);
        }
        Some(s) => (
            args.iterations.unwrap_or(0),
            Some(Duration::from_secs_f64(s)),
        ),
        None => (args.iterations.unwrap_or(1000), None),
    };
    let config = VmConfig {
        vcpus: args.vcpus.unwrap_or(2),
        iterations,
        msr_rounds: 3,
        duration,
        timeout: duration.unwrap_or(Duration::from_secs(50)) + Duration::from_secs(10),
    };
    // A closed standard output must stop the guest, not the process (see `out`).
    out::record_when_gone();
    let local: Arc<dyn OutputSink> = if args.json {
        crate::json::sink(crate::json::Stream::Stdout, args.quiet)
    } else {
        Arc::new(Console { quiet: args.quiet })
    };
    let fanout = Arc::new(Fanout::new(local));
    let vm = match Vm::new(config, fanout.clone()) {
        Ok(vm) => vm,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    vm.set_syscall_rounds(args.syscall_rounds);
    vm.set_hook_rounds(args.hook_rounds);
    vm.set_exception_rounds(args.exception_rounds);
    if args.hook_rounds > 0 {
        outln!(
            "demo guest: hookable kernel function at {:#x} (!epthook {:x})",
            vm.image().hook_target,
            vm.image().hook_target
        );
    }

    match crate::numbers::symbols(&args.symbols) {
        Ok(symbols) => vm.add_symbols(symbols),
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    // Commands run in order before the guest starts: event commands, `? SCRIPT` (whose
    // globals every later event shares), `output ...`, `events ...`.
    // The front end compiles each command against the VM's rules, symbols and globals
    // (this process holds both, so `--interp` can hand the VM an interpreter script); the
    // VM loads what it is given.
    let backend = if args.interp {
        Backend::Interp
    } else {
        Backend::Jit
    };
    let stream = crate::json::Stream::Stdout;
    if !run_commands(
        &commands,
        &vm,
        &KvmPlatform,
        vm.globals(),
        backend,
        args.json,
        stream,
    ) {
        return ExitCode::from(2);
    }

    let result = serving(args.listen.as_deref(), &vm, &fanout, || {
        let ran = AtomicBool::new(false);
        std::thread::scope(|s| {
            // Standard output gone (`| head`): stop the guest rather than run on unseen.
            s.spawn(|| {
                while !ran.load(Ordering::SeqCst) {
                    if out::gone() {
                        vm.request_stop();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
            let result = vm.run();
            ran.store(true, Ordering::SeqCst);
            result
        })
    });
    let report = match result {
        Err(code) => return code,
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            errln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if out::gone() {
        // Nothing more can be shown; 141 as for a tool killed by SIGPIPE (see `out`).
        return ExitCode::from(out::EXIT_PIPE);
    }

    if args.json {
        return json_report(&vm, &report);
    }
    outln!();
    outln!("events:");
    outln!(
        "  {:>4}  {:<50} {:>9} {:>9} {:>9} {:>7}",
        "id",
        "command",
        "pre",
        "post",
        "sc",
        "errors"
    );
    for l in vm.engine().list() {
        let c = l.counters;
        outln!(
            "  {:>4}  {:<50} {:>9} {:>9} {:>9} {:>7}{}",
            l.id,
            shorten(&l.text, 50),
            c.pre_runs,
            c.post_runs,
            c.short_circuits,
            c.script_errors,
            if l.enabled { "" } else { "  (disabled)" }
        );
    }
    outln!("guest:");
    outln!(
        "  {:>4}  {:<14} {:>10} {:>9} {:>9} {:>6} {:>6} {:>18} {:>14}",
        "vcpu",
        "stop",
        "iterations",
        "in",
        "out",
        "rdmsr",
        "wrmsr",
        "msr 0x40001000",
        "in sum"
    );
    let mut ok = true;
    let mut deaths = Vec::new();
    for v in &report.vcpus {
        let g = v.guest;
        let stop = match &v.stop {
            StopReason::GuestExit(0) => "exit(0)".to_string(),
            other => {
                ok = false;
                deaths.push(format!("vCPU {} stopped: {other}", v.cpu));
                match other {
                    StopReason::Exception { vector, .. } => {
                        hv_kvm::vmm::vector_name(*vector).into()
                    }
                    StopReason::Error(_) => "VMM error".into(),
                    o => o.to_string(),
                }
            }
        };
        outln!(
            "  {:>4}  {:<14} {:>10} {:>9} {:>9} {:>6} {:>6} {:>#18x} {:>#14x}",
            v.cpu,
            stop,
            g.iterations,
            g.in_count,
            g.out_count,
            g.rdmsr_count,
            g.wrmsr_count,
            v.demo_msr,
            g.in_sum
        );
    }
    for d in &deaths {
        outln!("{d}");
    }
    let total = report.total_exits();
    let secs = report.elapsed.as_secs_f64();
    outln!(
        "exits: {total} in {secs:.3} s ({:.0} exits/s over {} vCPUs)",
        total as f64 / secs.max(1e-9),
        report.vcpus.len()
    );
    let dropped = vm.engine().output_dropped();
    if dropped > 0 {
        outln!(
            "output: {dropped} messages dropped (a vCPU's output ring was full: the output \
             did not keep up)"
        );
    }
    if args.listen.is_some() {
        outln!(
            "clients: {} output messages dropped for clients that did not keep up",
            fanout.dropped()
        );
    }
    for s in vm.output().list() {
        outln!(
            "output {}: {} messages sent to {} {}, {} dropped (not open or not keeping up), {} failed",
            s.name,
            s.sent,
            s.kind,
            s.address,
            s.dropped,
            s.failed
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The commands of `-e` (in order) and then of `-f` files, or `None` after reporting why
/// one cannot be read.
fn load_commands(args: &Args) -> Option<Vec<Expanded>> {
    let mut roots = Vec::new();
    for e in &args.events {
        roots.push(SourceFile::command_line("-e", e.as_str()));
    }
    for path in &args.files {
        match std::fs::read_to_string(path) {
            Ok(t) => roots.push(SourceFile::file(path, t)),
            Err(e) => {
                errln!("{}: error: {e}", path.display());
                return None;
            }
        }
    }
    let mut commands = Vec::new();
    let mut failed = false;
    for root in &roots {
        for c in commands::load(root) {
            match c {
                Ok(c) => commands.push(c),
                Err(e) => {
                    failed = true;
                    err!("{}", e.render());
                }
            }
        }
    }
    (!failed).then_some(commands)
}

/// `hvscript run -- PROGRAM ARGS`: the program runs natively at CPL3 under hv-kvm's
/// system-call layer, with the user's standard streams; its exit status is `run`'s (128 +
/// the signal after a fault, with a line saying which).
fn run_program(args: &Args) -> ExitCode {
    // What only the demo guest has is refused, not ignored.
    let demo_only = [
        (args.guest != "demo", "--guest"),
        (args.vcpus.is_some(), "--vcpus (a program runs on one vCPU)"),
        (args.iterations.is_some(), "--iterations"),
        (args.seconds.is_some(), "--seconds"),
        (args.syscall_rounds > 0, "--syscall-rounds"),
        (args.hook_rounds > 0, "--hook-rounds"),
        (args.exception_rounds > 0, "--exception-rounds"),
        (args.interp, "--interp (a program's events run compiled)"),
    ];
    if let Some((_, option)) = demo_only.iter().find(|(given, _)| *given) {
        errln!("error: {option} works with the demo guest only, not with a program");
        return ExitCode::from(2);
    }
    let path = PathBuf::from(&args.program[0]);
    // The program's symbols name addresses in event arguments: `NAME` and `PROGRAM!NAME`.
    let mut symbols = hv_core::SymbolMap::default();
    if let Ok(bytes) = std::fs::read(&path) {
        if let Ok(exe) = hv_kvm::program::elf::parse(&bytes) {
            let module = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            for (name, addr) in exe.symbols {
                symbols.0.insert(format!("{module}!{name}"), addr);
            }
        }
    }
    match crate::numbers::symbols(&args.symbols) {
        Ok(extra) => symbols.0.extend(extra),
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(2);
        }
    }
    let Some(commands) = load_commands(args) else {
        return ExitCode::from(2);
    };
    let spec = hv_kvm::program::vm::ProgramSpec {
        args: args.program.iter().map(|a| a.as_bytes().to_vec()).collect(),
        env: std::env::vars_os()
            .map(|(k, v)| {
                let mut e = k.as_encoded_bytes().to_vec();
                e.push(b'=');
                e.extend_from_slice(v.as_encoded_bytes());
                e
            })
            .collect(),
        allow_read: args.allow_read.clone(),
        pid: std::process::id(),
        path,
        events: Vec::new(),
        globals: Arc::new(hvscript_runtime::GlobalSlots::default()),
        symbols,
        patch_syscalls: !args.no_syscall_patching,
    };
    // Event output goes to standard error, so the program's own output stays its own; with
    // --listen, to attached clients as well.
    let local: Arc<dyn OutputSink> = if args.json {
        crate::json::sink(crate::json::Stream::Stderr, args.quiet)
    } else {
        Arc::new(EventsToStderr { quiet: args.quiet })
    };
    let fanout = Arc::new(Fanout::new(local));
    let program = match hv_kvm::program::vm::Program::load(
        &spec,
        Box::new(std::io::stdout()),
        Box::new(std::io::stderr()),
        fanout.clone(),
    ) {
        Ok(p) => p,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Commands run in order before the program starts, compiled here against the program
    // guest's rules and the session's globals, run by its session: event commands, `?`
    // (sharing globals with events), `events ...`.
    let session = program.session().clone();
    let platform = hv_kvm::program::events::ProgramPlatform;
    let stream = crate::json::Stream::Stderr;
    if !run_commands(
        &commands,
        &*session,
        &platform,
        session.globals(),
        Backend::Jit,
        args.json,
        stream,
    ) {
        return ExitCode::from(2);
    }
    let result = serving(args.listen.as_deref(), &*session, &fanout, || program.run());
    let run = match result {
        Err(code) => return code,
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            errln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.json {
        let stream = crate::json::Stream::Stderr;
        for n in &run.notes {
            crate::json::line(stream, &serde_json::json!({"type": "note", "text": n}));
        }
        crate::json::summary(stream, &run.engine.list());
        let ending = match &run.ending {
            hv_kvm::program::vm::Ending::Exited(s) => format!("exit({s})"),
            hv_kvm::program::vm::Ending::Signal { what, .. } => what.clone(),
        };
        crate::json::line(
            stream,
            &serde_json::json!({"type": "program", "status": run.ending.status(), "ending": ending}),
        );
        return ExitCode::from(run.ending.status() as u8);
    }
    for n in &run.notes {
        errln!("hvscript: {n}");
    }
    let listing = run.engine.list();
    if !listing.is_empty() {
        errln!("events:");
        for l in listing {
            let c = l.counters;
            errln!(
                "  {:>4}  {:<50} pre {} post {} sc {} errors {}",
                l.id,
                shorten(&l.text, 50),
                c.pre_runs,
                c.post_runs,
                c.short_circuits,
                c.script_errors
            );
        }
    }
    let dropped = run.engine.output_dropped();
    if dropped > 0 {
        errln!(
            "output: {dropped} messages dropped (the program's output ring was full: the \
             output did not keep up)"
        );
    }
    let dropped = fanout.dropped();
    if dropped > 0 {
        errln!("clients: {dropped} output messages dropped");
    }
    if let hv_kvm::program::vm::Ending::Signal { what, .. } = &run.ending {
        errln!("hvscript: {} ended: {what}", args.program[0]);
    }
    ExitCode::from(run.ending.status() as u8)
}

/// Runs `commands` in order through `session` before the guest starts, each compiled here
/// against `platform` and the session's globals and symbols; a command's output goes to
/// `stream` (as text, or a JSON line with `json`), errors are located on standard error.
/// `false` if one failed.
fn run_commands(
    commands: &[Expanded],
    session: &dyn control::ControlSession,
    platform: &dyn hv_core::Platform,
    globals: &Arc<hvscript_runtime::GlobalSlots>,
    backend: Backend,
    json: bool,
    stream: crate::json::Stream,
) -> bool {
    let mut ok = true;
    for c in commands {
        let target = hvscript_front::Target {
            platform,
            symbols: session.symbols(),
            globals: session.global_names(),
            values: Some(globals.clone()),
        };
        let result = hvscript_front::prepare(&c.text, &target, backend).and_then(|prepared| {
            session
                .command(&c.text, &prepared)
                .map_err(hvscript_front::FrontError::from)
        });
        match result {
            Ok(_) if c.text.trim_start().starts_with('!') => {}
            Ok(text) if json => crate::json::result(stream, &c.text, &text),
            Ok(text) => match stream {
                crate::json::Stream::Stdout => out!("{}", with_newline(&text)),
                crate::json::Stream::Stderr => err!("{}", with_newline(&text)),
            },
            Err(e) => {
                ok = false;
                for d in &e.diagnostics {
                    err!("{}", c.locate(d.clone()).render());
                }
            }
        }
    }
    ok
}

/// Runs `guest` (a guest's whole run) while the control socket `--listen PATH` asks for,
/// if any, serves `session`; the socket's file is removed afterwards. `Err` is the exit
/// status after saying why the socket cannot be bound (then nothing runs).
fn serving<S: control::ControlSession + Sync + ?Sized, R>(
    listen: Option<&std::path::Path>,
    session: &S,
    fanout: &Fanout,
    guest: impl FnOnce() -> R,
) -> Result<R, ExitCode> {
    let listener = match listen.map(control::bind).transpose() {
        Ok(l) => l,
        Err(e) => {
            let path = listen.map_or_else(String::new, |p| p.display().to_string());
            errln!("{path}: error: {e}");
            return Err(ExitCode::FAILURE);
        }
    };
    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let server = listener.map(|l| {
            let stop = &stop;
            s.spawn(move || control::serve(session, fanout, l, stop))
        });
        let result = guest();
        stop.store(true, Ordering::SeqCst);
        if let Some(Ok(Err(e))) = server.map(|h| h.join()) {
            errln!("control socket: {e}");
        }
        result
    });
    if let Some(path) = listen {
        let _ = std::fs::remove_file(path);
    }
    Ok(result)
}

/// The demo run's summary as JSON lines: events, vCPUs, exits.
fn json_report(vm: &Vm, report: &hv_kvm::vmm::RunReport) -> ExitCode {
    use serde_json::json;
    let stream = crate::json::Stream::Stdout;
    crate::json::summary(stream, &vm.engine().list());
    let mut ok = true;
    for v in &report.vcpus {
        let g = v.guest;
        let stop = match &v.stop {
            StopReason::GuestExit(0) => "exit(0)".to_string(),
            other => {
                ok = false;
                other.to_string()
            }
        };
        crate::json::line(
            stream,
            &json!({
                "type": "vcpu",
                "vcpu": v.cpu,
                "stop": stop,
                "iterations": g.iterations,
                "in": g.in_count,
                "out": g.out_count,
                "rdmsr": g.rdmsr_count,
                "wrmsr": g.wrmsr_count,
            }),
        );
    }
    crate::json::line(
        stream,
        &json!({
            "type": "exits",
            "exits": report.total_exits(),
            "seconds": report.elapsed.as_secs_f64(),
        }),
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Event output of a program guest, on standard error.
struct EventsToStderr {
    quiet: bool,
}

impl OutputSink for EventsToStderr {
    fn output(&self, _event_id: u64, _stage: Stage, _core: u32, text: &[u8]) {
        if !self.quiet {
            err!("{}", String::from_utf8_lossy(text));
        }
    }
}

fn with_newline(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') {
        text.to_string()
    } else {
        format!("{text}\n")
    }
}

fn shorten(text: &str, width: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= width {
        flat
    } else {
        let mut s: String = flat.chars().take(width - 3).collect();
        s.push_str("...");
        s
    }
}
