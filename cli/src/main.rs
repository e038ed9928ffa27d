//! The `hvscript` command line: one subcommand per module.

// Output goes through `out` so a closed pipe ends a command quietly, never a panic.
#![warn(clippy::print_stdout, clippy::print_stderr)]

mod attach;
mod check;
mod commands;
mod conformance;
mod console;
mod eval;
mod include;
mod json;
mod list;
mod numbers;
mod out;
mod run;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "hvscript",
    version,
    about = "HyperDbg-style event scripts: check, evaluate, run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check scripts and HyperDbg command files without running them; every error located;
    /// exit 1 if any has errors.
    Check(check::Args),
    /// Run a script once on the host against a simulated guest (HyperDbg's `?`).
    Eval(eval::Args),
    /// Run a conformance suite (HyperDbg's, or a directory of cases) and report.
    Conformance(conformance::Args),
    /// Boot a guest on KVM with event scripts attached; print their output and a summary.
    Run(run::Args),
    /// Send event commands to a running `hvscript run --listen PATH`.
    Attach(attach::AttachArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => check::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Conformance(args) => conformance::run(args),
        Command::Run(args) => run::run(args),
        Command::Attach(args) => attach::attach(args),
    }
}
