//! `hvscript run` as a stand-alone example, built from the CLI's own module
//! (`cli/src/run.rs`), so it can be tried before the subcommand is wired in:
//! `cargo run -p hv-kvm --example run -- -e '!ioin 510'`.

#[path = "../../cli/src/run.rs"]
#[allow(dead_code)]
mod run;

use clap::Parser;

#[derive(Parser)]
#[command(name = "hvscript-run")]
struct Cli {
    #[command(flatten)]
    args: run::Args,
}

fn main() -> std::process::ExitCode {
    run::run(Cli::parse().args)
}
