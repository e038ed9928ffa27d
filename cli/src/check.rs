//! `hvscript check FILE...`: parse and compile each script (a file, or `-` for standard
//! input) and print its diagnostics; exit 0 when every script is free of errors, 1
//! otherwise. Files share one table of global names, in order, as commands of one
//! session do. Portability warnings (what HyperDbg itself would reject) are printed but
//! do not fail.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use hvscript_grammar::{parse_checked, portability, print};
use hvscript_lang::{compile, CompileOptions, Globals, StageUse};

#[derive(clap::Args)]
pub struct Args {
    /// Script files; `-` reads standard input.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print the syntax tree of each script that parses.
    #[arg(long)]
    ast: bool,
    /// Do not print portability warnings.
    #[arg(long)]
    no_warnings: bool,
    /// Check the scripts as attached with `stage post` (event_sc is an error there).
    #[arg(long)]
    post: bool,
    /// Only parse (syntax and built-in call shapes), without name and semantic checks.
    #[arg(long)]
    syntax_only: bool,
}

pub fn run(args: Args) -> ExitCode {
    let mut failed = false;
    let globals = Globals::default();
    let options = CompileOptions {
        stage: if args.post {
            StageUse::PostOnly
        } else {
            StageUse::Any
        },
        ..Default::default()
    };
    for path in &args.files {
        let (name, src) = match read(path) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("{}: error: {e}", path.display());
                failed = true;
                continue;
            }
        };
        match parse_checked(&src) {
            Ok(script) => {
                if !args.no_warnings {
                    for w in portability::check(&script, &src) {
                        eprint!("{}", w.render(&name, &src));
                    }
                }
                if args.ast {
                    print!("{}", print::script(&script));
                }
                if !args.syntax_only {
                    if let Err(errors) = compile(&script, &globals, &options) {
                        failed = true;
                        for d in errors {
                            eprint!("{}", d.render(&name, &src));
                        }
                    }
                }
            }
            Err(errors) => {
                failed = true;
                for d in errors {
                    eprint!("{}", d.render(&name, &src));
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn read(path: &PathBuf) -> std::io::Result<(String, String)> {
    if path.as_os_str() == "-" {
        let mut src = String::new();
        std::io::stdin().read_to_string(&mut src)?;
        return Ok(("<stdin>".into(), src));
    }
    let bytes = std::fs::read(path)?;
    let src = String::from_utf8(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })?;
    Ok((path.display().to_string(), src))
}
