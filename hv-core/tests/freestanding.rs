//! Issue 15's must-show: hv-core + the runtime run a compiled script in a program with no
//! std and no libc. This test compiles a script with the JIT (the front end's job), builds
//! `freestanding/` (its own workspace: `#![no_std]`, `#![no_main]`, linked with no start
//! files, no libc, static), feeds it the code object on stdin, and checks its exit status:
//! 0 means the program loaded the object into memory it mapped by raw system calls, and
//! one CPUID exit dispatched through `Engine::handle_exit` ran the script in the pre stage
//! (`$stage` 0) and, after the emulation, in the post stage (`$stage` 1), with the register
//! and guest-memory changes the script makes (see `freestanding/src/main.rs`).

#![cfg(all(target_arch = "x86_64", target_os = "linux"))]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hvscript_lang::{compile_source, CompileOptions, Globals};

/// `$stage` and rax are printed in each stage, rbx records the stages in order, and the
/// post stage stores the emulated rax into guest memory at 0x1000.
const SCRIPT: &str = "printf(\"stage %d rax=%x\\n\", $stage, @rax); \
                      @rbx = (@rbx << 8) | ($stage + 1); \
                      if ($stage == 1) { eq(0x1000, @rax); }";

fn build_program() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("freestanding");
    let triple = "x86_64-unknown-linux-gnu";
    // The link flags go to the program only: with an explicit --target, build scripts
    // (host artifacts) are linked normally. Non-PIE: nothing would apply relocations.
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", triple, "--manifest-path"])
        .arg(root.join("freestanding/Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env(
            "RUSTFLAGS",
            "-C relocation-model=static -C link-arg=-nostartfiles -C link-arg=-nostdlib \
             -C link-arg=-static",
        )
        .status()
        .expect("run cargo");
    assert!(status.success(), "building freestanding/ failed");
    target_dir
        .join(triple)
        .join("release/hvscript-freestanding")
}

#[test]
fn a_no_std_no_libc_program_runs_a_code_object_through_both_stages() {
    let globals = Globals::default();
    let program = compile_source(SCRIPT, &globals, &CompileOptions::default()).unwrap();
    let object = hvscript_jit::Jit::new().unwrap().compile(&program).unwrap();
    let object_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("freestanding-script.hvo");
    std::fs::write(&object_path, object.to_bytes()).unwrap();

    let binary = build_program();
    // Linked without libc and statically: no interpreter, no libc.so in the image.
    let image = std::fs::read(&binary).unwrap();
    let contains = |s: &[u8]| image.windows(s.len()).any(|w| w == s);
    assert!(!contains(b"ld-linux") && !contains(b"libc.so"));

    let output = Command::new(&binary)
        .stdin(Stdio::from(std::fs::File::open(&object_path).unwrap()))
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "the freestanding program failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A malformed object is refused by the runtime's validation inside the program, not a crash.
    let mut bad = object.to_bytes();
    bad[20] ^= 1;
    let bad_path = object_path.with_extension("bad");
    std::fs::write(&bad_path, bad).unwrap();
    let output = Command::new(&binary)
        .stdin(Stdio::from(std::fs::File::open(&bad_path).unwrap()))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(10));
    assert!(String::from_utf8_lossy(&output.stderr).contains("malformed code object"));
}
