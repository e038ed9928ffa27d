//! Shared by the program-guest tests: C programs built here with the machine's `gcc
//! -static`, and a run of one with events compiled by the front end against the program
//! guest's rules, its ELF symbols naming addresses as `hvscript run` names them.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use hv_kvm::program::vm::{run_program, Ending, ProgramSpec};

/// The program's symbols as `NAME` and `PROGRAM!NAME`.
pub fn symbols_of(path: &Path) -> hv_core::SymbolMap {
    let mut symbols = hv_core::SymbolMap::default();
    let bytes = std::fs::read(path).unwrap();
    let exe = hv_kvm::program::elf::parse(&bytes).unwrap();
    let module = path.file_stem().unwrap().to_string_lossy().into_owned();
    for (name, addr) in exe.symbols {
        symbols.0.insert(format!("{module}!{name}"), addr);
    }
    symbols
}

#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);
impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Builds `source` with `gcc -static`; `None` (after saying why) without gcc or KVM.
pub fn build(name: &str, source: &str) -> Option<PathBuf> {
    if let Err(why) = hv_kvm::kvm_available() {
        eprintln!("skipping: {why}");
        return None;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("program_run");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(name);
    match Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
    {
        Ok(s) => assert!(s.success(), "gcc failed"),
        Err(e) => {
            eprintln!("skipping: no C compiler (gcc: {e})");
            return None;
        }
    }
    Some(out)
}

pub fn run(path: PathBuf, args: &[&str]) -> (Ending, String, String, Vec<String>) {
    let (ending, out, err, notes, _) = run_with(path, args, &[]);
    (ending, out, err, notes)
}

/// What a run gives back: how it ended, its stdout and stderr, notes, event counters.
pub type Outcome = (
    Ending,
    String,
    String,
    Vec<String>,
    Vec<hv_core::CounterValues>,
);

/// Compiles `events` with the front end against the program guest's rules, then runs.
pub fn run_with(path: PathBuf, args: &[&str], events: &[&str]) -> Outcome {
    run_patching(path, args, events, true)
}

/// [`run_with`], choosing whether system-call sites are rewritten.
pub fn run_patching(
    path: PathBuf,
    args: &[&str],
    events: &[&str],
    patch_syscalls: bool,
) -> (
    Ending,
    String,
    String,
    Vec<String>,
    Vec<hv_core::CounterValues>,
) {
    let globals: Arc<hvscript_runtime::GlobalSlots> = Default::default();
    let symbols = symbols_of(&path);
    let mut prepared = Vec::new();
    // Globals bound by one command are known to the next, as in `hvscript run`.
    let mut bindings: Vec<(String, u32)> = Vec::new();
    for e in events {
        let target = hvscript_front::Target {
            platform: &hv_kvm::program::events::ProgramPlatform,
            symbols: symbols.clone(),
            globals: bindings.clone(),
            values: Some(globals.clone()),
        };
        let p = hvscript_front::prepare(e, &target, hvscript_front::Backend::Jit)
            .unwrap_or_else(|err| panic!("{e}: {err}"));
        for b in &p.globals {
            if !bindings.contains(b) {
                bindings.push(b.clone());
            }
        }
        prepared.push((e.to_string(), p));
    }
    let (out, err) = (Captured::default(), Captured::default());
    let mut argv = vec![path.as_os_str().as_encoded_bytes().to_vec()];
    argv.extend(args.iter().map(|a| a.as_bytes().to_vec()));
    let spec = ProgramSpec {
        path,
        args: argv,
        env: vec![b"HOME=/root".to_vec(), b"LANG=C".to_vec()],
        allow_read: Vec::new(),
        pid: 4242,
        events: prepared,
        globals,
        symbols,
        patch_syscalls,
    };
    let run = run_program(
        &spec,
        Box::new(out.clone()),
        Box::new(err.clone()),
        Arc::new(hv_core::NullSink),
    )
    .expect("run");
    let counters = run.engine.list().into_iter().map(|l| l.counters).collect();
    let (ending, notes) = (run.ending, run.notes);
    let text = |c: &Captured| String::from_utf8_lossy(&c.0.lock().unwrap()).into_owned();
    (ending, text(&out), text(&err), notes, counters)
}

/// Compiles one command against a loaded program's session, as `hvscript attach` does.
pub fn prepare(
    session: &hv_kvm::program::session::ProgramSession,
    line: &str,
) -> hv_core::Prepared {
    let target = hvscript_front::Target {
        platform: &hv_kvm::program::events::ProgramPlatform,
        symbols: session.symbols(),
        globals: session.global_names(),
        values: Some(session.globals().clone()),
    };
    hvscript_front::prepare(line, &target, hvscript_front::Backend::Jit)
        .unwrap_or_else(|err| panic!("{line}: {err}"))
}

/// A spec for `path` with `args`, its ELF symbols, no events.
pub fn spec(path: PathBuf, args: &[&str]) -> ProgramSpec {
    let mut argv = vec![path.as_os_str().as_encoded_bytes().to_vec()];
    argv.extend(args.iter().map(|a| a.as_bytes().to_vec()));
    ProgramSpec {
        symbols: symbols_of(&path),
        path,
        args: argv,
        env: vec![b"LANG=C".to_vec()],
        allow_read: Vec::new(),
        pid: 4242,
        events: Vec::new(),
        globals: Default::default(),
        patch_syscalls: true,
    }
}
