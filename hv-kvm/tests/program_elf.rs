//! Real static executables, built here with the machine's `gcc -static` and
//! `-static-pie` (glibc's real start-up), read as Linux's execve reads them: segments and
//! permissions, entry point, AT_PHDR, symbols at their loaded addresses; and refused with
//! the reason when they are dynamically linked.

use std::path::PathBuf;
use std::process::Command;

use hv_kvm::program::elf::{parse, PIE_LOAD_BIAS};

const SOURCE: &str = r#"
#include <stdio.h>
long counter;
__attribute__((noinline)) long work(long x) { counter += x; return counter; }
int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) work(i);
    printf("%ld\n", counter);
    return 0;
}
"#;

/// Builds SOURCE with `flags` into the test's target directory; `None` (after saying why)
/// when no C compiler is installed.
fn build(name: &str, flags: &[&str]) -> Option<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("program_elf");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("hello.c");
    std::fs::write(&src, SOURCE).unwrap();
    let out = dir.join(name);
    let status = match Command::new("gcc")
        .args(flags)
        .arg("-O1")
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping: no C compiler (gcc: {e})");
            return None;
        }
    };
    assert!(status.success(), "gcc {flags:?} failed");
    Some(std::fs::read(out).unwrap())
}

#[test]
fn a_static_executable_is_read_as_execve_reads_it() {
    let Some(bytes) = build("hello-static", &["-static"]) else {
        return;
    };
    let exe = parse(&bytes).unwrap();
    assert!(!exe.position_independent);
    assert_eq!(exe.load_bias, 0);
    let text = exe.segments.iter().find(|s| s.execute).unwrap();
    assert!(text.read && !text.write);
    assert!(
        exe.segments
            .iter()
            .any(|s| s.write && !s.execute && s.mem_size > s.file_size),
        "a .bss"
    );
    assert!(text.vaddr <= exe.entry && exe.entry < text.vaddr + text.mem_size);
    assert_eq!(exe.phent, 56);
    // The program headers are in the first loaded page (e_phoff 64 of the file at 0x400000).
    assert_eq!(exe.phdr, exe.segments[0].vaddr + 64);
    let work = exe.symbols["work"];
    assert!(text.vaddr <= work && work < text.vaddr + text.mem_size);
    let counter = exe.symbols["counter"];
    assert!(exe
        .segments
        .iter()
        .any(|s| s.write && s.vaddr <= counter && counter < s.vaddr + s.mem_size));
    assert!(exe.symbols.contains_key("main") && exe.symbols.contains_key("printf"));
    assert!(exe.end_of_image() > counter);
}

#[test]
fn a_static_pie_is_moved_by_linuxs_load_bias() {
    let Some(bytes) = build("hello-static-pie", &["-static-pie"]) else {
        return;
    };
    let exe = parse(&bytes).unwrap();
    assert!(exe.position_independent);
    assert_eq!(exe.load_bias, PIE_LOAD_BIAS);
    assert!(exe.segments.iter().all(|s| s.vaddr >= PIE_LOAD_BIAS));
    assert!(exe.entry > PIE_LOAD_BIAS && exe.symbols["work"] > PIE_LOAD_BIAS);
    assert!(exe.phdr >= PIE_LOAD_BIAS);
}

#[test]
fn a_dynamically_linked_program_is_refused_with_the_reason() {
    let Some(bytes) = build("hello-dynamic", &[]) else {
        return;
    };
    let e = parse(&bytes).unwrap_err();
    assert!(
        e.0.contains("dynamically linked") && e.0.contains("-static"),
        "{e}"
    );
}
