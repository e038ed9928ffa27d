//! What the `hvscript` command tests share: the binary, scratch files, running it with
//! bytes on its standard input, and static C programs to run as guests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// The `hvscript` binary this test run built.
pub fn hvscript() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hvscript"))
}

/// All of a piped child's standard error, to its end.
pub fn read_stderr(child: &mut Child) -> String {
    let mut err = String::new();
    child
        .stderr
        .take()
        .expect("standard error piped")
        .read_to_string(&mut err)
        .unwrap();
    err
}

/// Writes `text` to `name` in this test process's scratch directory (`tag` keeps test
/// binaries apart) and returns its path.
pub fn temp(tag: &str, name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("hvscript-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `hvscript ARGS` with `input` on its standard input; everything it prints is kept.
pub fn with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = hvscript()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Builds C `source` with `gcc -static` as `name` in this test run's scratch directory
/// (`tag` keeps test binaries apart); `None`, after saying why, where KVM cannot be opened
/// or no C compiler exists (the program could not run as a guest either way).
pub fn static_program(tag: &str, name: &str, source: &str) -> Option<PathBuf> {
    if let Err(why) = hv_kvm::kvm_available() {
        eprintln!("skipping: {why}");
        return None;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(tag);
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let exe = dir.join(name);
    match Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
    {
        Ok(s) => assert!(s.success(), "gcc failed on {name}.c"),
        Err(e) => {
            eprintln!("skipping: no C compiler (gcc: {e})");
            return None;
        }
    }
    Some(exe)
}
