//! `hvscript run`: boot a guest on KVM (hv-kvm) with event commands attached, print the
//! events' output as it comes, and at the end a summary of every event's counters and of
//! the guest's own counters.
//!
//! Events come from `-e 'COMMAND'` (in order) and then from `-f FILE` (one command per
//! line; a `script { ... }` may span lines; blank lines and lines starting with `#` or `//`
//! between commands are skipped). A bad command is reported with its location (`-e` or
//! the file, line, column, and a caret) and the run does not start (exit status 2). Events
//! this machine's KVM cannot intercept are refused with the reason.
//!
//! `--listen PATH` serves hv-kvm's control socket while the guest runs; `hvscript attach
//! PATH` ([`attach`]) sends command lines to it (`!ioin 510 script {...}`, `events`,
//! `events d 1`, ...) and prints the replies and the event output.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use std::io::BufRead;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

use hv_core::{OutputSink, Stage};
use hv_kvm::control::{self, Fanout};
use hv_kvm::{StopReason, Vm, VmConfig};

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
    #[arg(long, value_name = "N")]
    seconds: Option<f64>,
    /// User-loop iterations per vCPU (default 1000 without --seconds, unlimited with it).
    #[arg(long, value_name = "N")]
    iterations: Option<u64>,
    /// Number of vCPUs (one thread each).
    #[arg(long, default_value_t = 2, value_name = "N")]
    vcpus: usize,
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
}

#[derive(clap::Args)]
pub struct AttachArgs {
    /// The socket a `hvscript run --listen PATH` serves.
    path: PathBuf,
    /// A command to send (repeatable); without any, commands are read from standard input,
    /// one per line.
    #[arg(short = 'e', long = "command", value_name = "COMMAND")]
    commands: Vec<String>,
    /// After the commands, keep printing event output for this many seconds.
    #[arg(long, value_name = "N", default_value_t = 0.0)]
    follow: f64,
}

/// Prints each execution's output as one piece.
struct Console {
    quiet: bool,
}

impl OutputSink for Console {
    fn output(&self, _event_id: u64, _stage: Stage, _core: u32, text: &[u8]) {
        if !self.quiet {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(text);
        }
    }
}

/// One event command and where it came from.
struct Source {
    /// `-e` or the file name.
    name: String,
    /// The whole text the command is part of (the file, or the `-e` argument).
    text: Arc<str>,
    /// The command's byte range in `text`.
    start: usize,
    end: usize,
}

pub fn run(args: Args) -> ExitCode {
    if args.guest != "demo" {
        eprintln!("error: unknown guest `{}` (available: demo)", args.guest);
        return ExitCode::from(2);
    }
    let mut sources = Vec::new();
    for e in &args.events {
        let text: Arc<str> = Arc::from(e.as_str());
        sources.push(Source {
            name: "-e".into(),
            end: text.len(),
            text,
            start: 0,
        });
    }
    for path in &args.files {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: error: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let text: Arc<str> = Arc::from(text);
        for (start, end) in split_commands(&text) {
            sources.push(Source {
                name: path.display().to_string(),
                text: text.clone(),
                start,
                end,
            });
        }
    }

    let (iterations, duration) = match args.seconds {
        Some(s) if !(s > 0.0 && s.is_finite()) => {
            eprintln!("error: --seconds must be a positive number");
            return ExitCode::from(2);
        }
        Some(s) => (
            args.iterations.unwrap_or(0),
            Some(Duration::from_secs_f64(s)),
        ),
        None => (args.iterations.unwrap_or(1000), None),
    };
    let config = VmConfig {
        vcpus: args.vcpus,
        iterations,
        msr_rounds: 3,
        duration,
        timeout: duration.unwrap_or(Duration::from_secs(50)) + Duration::from_secs(10),
    };
    let fanout = Arc::new(Fanout::new(Arc::new(Console { quiet: args.quiet })));
    let vm = match Vm::new(config, fanout.clone()) {
        Ok(vm) => vm,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    vm.set_syscall_rounds(args.syscall_rounds);
    vm.set_hook_rounds(args.hook_rounds);
    vm.set_exception_rounds(args.exception_rounds);
    vm.set_interpreted(args.interp);
    if args.hook_rounds > 0 {
        println!(
            "demo guest: hookable kernel function at {:#x} (!epthook {:x})",
            vm.image().hook_target,
            vm.image().hook_target
        );
    }

    let mut failed = false;
    for s in &sources {
        let line = &s.text[s.start..s.end];
        if let Err(err) = vm.add_event(line) {
            failed = true;
            for d in &err.diagnostics {
                eprint!("{}", d.clone().offset_by(s.start).render(&s.name, &s.text));
            }
        }
    }
    if failed {
        return ExitCode::from(2);
    }

    let listener = match &args.listen {
        None => None,
        Some(path) => match control::bind(path) {
            Ok(l) => Some(l),
            Err(e) => {
                eprintln!("{}: error: {e}", path.display());
                return ExitCode::FAILURE;
            }
        },
    };
    let stop = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        let server = listener.map(|l| {
            let (vm, fanout, stop) = (&vm, &fanout, &stop);
            s.spawn(move || control::serve(vm, fanout, l, stop))
        });
        let result = vm.run();
        stop.store(true, Ordering::SeqCst);
        if let Some(Ok(Err(e))) = server.map(|h| h.join()) {
            eprintln!("control socket: {e}");
        }
        result
    });
    if let Some(path) = &args.listen {
        let _ = std::fs::remove_file(path);
    }
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _ = std::io::stdout().flush();

    println!();
    println!("events:");
    println!(
        "  {:>4}  {:<50} {:>9} {:>9} {:>9} {:>7}",
        "id", "command", "pre", "post", "sc", "errors"
    );
    for l in vm.engine().list() {
        let c = l.counters;
        println!(
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
    println!("guest:");
    println!(
        "  {:>4}  {:<14} {:>10} {:>9} {:>9} {:>6} {:>6} {:>18} {:>14}",
        "vcpu", "stop", "iterations", "in", "out", "rdmsr", "wrmsr", "msr 0x40001000", "in sum"
    );
    let mut ok = true;
    for v in &report.vcpus {
        let g = v.guest;
        let stop = match &v.stop {
            StopReason::GuestExit(0) => "exit(0)".to_string(),
            other => {
                ok = false;
                format!("{other:?}")
            }
        };
        println!(
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
    let total = report.total_exits();
    let secs = report.elapsed.as_secs_f64();
    println!(
        "exits: {total} in {secs:.3} s ({:.0} exits/s over {} vCPUs)",
        total as f64 / secs.max(1e-9),
        report.vcpus.len()
    );
    if args.listen.is_some() {
        println!(
            "clients: {} output messages dropped for clients that did not keep up",
            fanout.dropped()
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `hvscript attach PATH`: sends command lines to a running `hvscript run --listen PATH`
/// and prints the replies and the event output. Exit status 1 if a command was refused.
pub fn attach(args: AttachArgs) -> ExitCode {
    let mut stream = match UnixStream::connect(&args.path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{}: error: {e}", args.path.display());
            return ExitCode::FAILURE;
        }
    };
    let commands: Vec<String> = if args.commands.is_empty() {
        std::io::stdin()
            .lock()
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.trim().is_empty())
            .collect()
    } else {
        args.commands.clone()
    };
    let mut failed = false;
    for c in &commands {
        if control::write_frame(&mut stream, c.as_bytes()).is_err() {
            eprintln!("error: the VM closed the connection");
            return ExitCode::FAILURE;
        }
        loop {
            match control::read_frame(&mut stream) {
                Ok(f) if f.first() == Some(&control::TAG_OUTPUT) => {
                    print!("{}", String::from_utf8_lossy(&f[1..]));
                }
                Ok(f) => {
                    let text = String::from_utf8_lossy(f.get(1..).unwrap_or_default());
                    if f.first() == Some(&control::TAG_ERROR) {
                        failed = true;
                        eprintln!("{}", text.trim_end());
                    } else {
                        println!("{}", text.trim_end());
                    }
                    break;
                }
                Err(_) => {
                    eprintln!("error: the VM closed the connection");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    if args.follow > 0.0 && args.follow.is_finite() {
        let end = std::time::Instant::now() + Duration::from_secs_f64(args.follow);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
        while std::time::Instant::now() < end {
            match control::read_frame(&mut stream) {
                Ok(f) if f.first() == Some(&control::TAG_OUTPUT) => {
                    print!("{}", String::from_utf8_lossy(&f[1..]));
                }
                Ok(_) => {}
                Err(control::FrameError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => break,
            }
        }
    }
    let _ = std::io::stdout().flush();
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
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

/// Splits a file into commands: a command starts on a non-blank, non-comment line and
/// runs until its braces balance at the end of a line. Returns byte ranges.
fn split_commands(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut current: Option<usize> = None;
    let mut depth: i64 = 0;
    let mut in_string = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let line_start = offset;
        offset += line.len();
        let trimmed = line.trim();
        if current.is_none() {
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with("//") {
                continue;
            }
            current = Some(line_start + (line.len() - line.trim_start().len()));
        }
        let bytes = line.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' if in_string => i += 1,
                b'"' => in_string = !in_string,
                b'/' if !in_string && bytes.get(i + 1) == Some(&b'/') => break,
                b'{' if !in_string => depth += 1,
                b'}' if !in_string => depth -= 1,
                _ => {}
            }
            i += 1;
        }
        if depth <= 0 && !in_string {
            if let Some(start) = current.take() {
                let end = line_start + line.trim_end().len();
                out.push((start, end.max(start)));
            }
            depth = 0;
        }
    }
    if let Some(start) = current {
        out.push((start, text.trim_end().len().max(start)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::split_commands;

    #[test]
    fn commands_span_lines_until_braces_balance() {
        let text =
            "# comment\n!ioin 510\n\n!ioout 511 script {\n  printf(\"}\\n\");\n}\n// x\n!msrread\n";
        let cmds: Vec<&str> = split_commands(text)
            .into_iter()
            .map(|(s, e)| &text[s..e])
            .collect();
        assert_eq!(
            cmds,
            [
                "!ioin 510",
                "!ioout 511 script {\n  printf(\"}\\n\");\n}",
                "!msrread"
            ]
        );
    }
}
