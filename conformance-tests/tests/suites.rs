//! Runs HyperDbg's public suites and hvscript's own cases on every back end, prints the
//! report (`cargo test -p hvscript-conformance --test suites -- --nocapture`) and asserts
//! that nothing failed.

use std::path::PathBuf;

use hvscript_conformance::{run_dir, Backend};

fn check(dir: PathBuf) {
    for &backend in Backend::ALL {
        let report = run_dir(&dir, backend);
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
