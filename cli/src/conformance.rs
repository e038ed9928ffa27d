//! `hvscript conformance DIR`: run a conformance directory on a back end and print the
//! report, ending with `N passed, M failed`; exit 1 if anything failed.
//!
//! DIR is either a HyperDbg suite directory (holding `script-test-cases/` and/or
//! `semantic-test-cases/`) or a directory of hvscript's own cases (`NAME.ds` +
//! `NAME.expected`). The runner itself lives in `hvscript-conformance`.

use std::path::PathBuf;
use std::process::ExitCode;

use hvscript_conformance::{run_dir, Backend};

use crate::out::out;

#[derive(clap::Args)]
pub struct Args {
    /// A suite directory (with script-test-cases/ or semantic-test-cases/) or a cases directory.
    pub dir: PathBuf,
    /// The engine to run the scripts on.
    #[arg(long, default_value = "interp")]
    pub backend: Backend,
}

pub fn run(args: Args) -> ExitCode {
    let report = run_dir(&args.dir, args.backend);
    out!("{report}");
    if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
