//! Runs HyperDbg's public suites and hvscript's own cases on every back end — the
//! interpreter, the JIT, and the JIT's code objects loaded and run by hv-kvm on real exits
//! (`--backend vm`, where `/dev/kvm` opens) — prints the report (`cargo test -p
//! hvscript-conformance --test suites -- --nocapture`) and asserts that nothing failed and
//! that every back end passes exactly as many as the interpreter.

use std::path::PathBuf;

use hvscript_conformance::{run_dir, vm_backend, Backend};

fn check(dir: PathBuf) {
    let mut backends = Backend::ALL.to_vec();
    match vm_backend::available() {
        Ok(()) => backends.push(Backend::Vm),
        Err(why) => println!("skipping --backend vm: {why}"),
    }
    let mut passed = Vec::new();
    for backend in backends {
        let report = run_dir(&dir, backend);
        passed.push((backend, report.passed()));
        println!("{report}");
        assert_eq!(
            report.failed(),
            0,
            "{} failures in {}",
            report.failed(),
            dir.display()
        );
        assert!(report.passed() > 0, "nothing ran in {}", dir.display());
    }
    let reference = passed[0].1;
    for (backend, n) in &passed {
        assert_eq!(
            *n, reference,
            "{backend} passed {n}, the interpreter {reference}"
        );
    }
}

#[test]
fn hyperdbg_suites() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/hyperdbg-suite");
    if !dir.is_dir() {
        println!("skipped: HyperDbg's suite is not at {}", dir.display());
        return;
    }
    check(dir);
}

#[test]
fn own_cases() {
    check(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cases"));
}
