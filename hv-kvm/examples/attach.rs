//! `hvscript attach` as a stand-alone example, built from the CLI's own module
//! (`cli/src/run.rs`): `cargo run -p hv-kvm --example attach -- PATH -e 'events'`.

#[path = "../../cli/src/run.rs"]
#[allow(dead_code)]
mod run;

use clap::Parser;

#[derive(Parser)]
#[command(name = "hvscript-attach")]
struct Cli {
    #[command(flatten)]
    args: run::AttachArgs,
}

fn main() -> std::process::ExitCode {
    run::attach(Cli::parse().args)
}
