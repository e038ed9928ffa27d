//! `hvscript check`: parse and compile scripts and HyperDbg command files without running
//! anything, print every diagnostic located in its file (line, column, caret), and exit 1
//! when any has errors. Portability warnings (what HyperDbg itself would reject) are
//! printed but do not fail.
//!
//! An input is a script, or a command file: event commands (`!ioin 510 script {...}`),
//! `? SCRIPT` and debugger commands (`events d 1`), cut by the command splitter. `-f FILE`
//! says it is a command file; a plain `FILE` is one when its first command starts with `!`
//! or `?`, or with a debugger word (`events`, `output`) followed by an argument or nothing
//! (so `events = 1;` stays a script). Each event command is parsed by hv-core, and its
//! script compiled as hv-kvm compiles it: in its event's context (`stage post` makes
//! `event_sc` an error) and against hv-kvm's run limits (stack, call depth); `?` scripts
//! against `eval`'s. A kind hv-kvm cannot raise gets a warning, not an error: the command
//! is right, this machine just cannot deliver it. All inputs share one table of global
//! variables, in order, as the commands of one session do.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use hv_core::{parse_command_with, Command, StageMode};
use hvscript_grammar::ast::Span;
use hvscript_grammar::{parse_checked, portability, print, Diagnostic};
use hvscript_lang::{compile, CompileOptions, Globals, Limits, StageUse};

use crate::commands;
use crate::include::{self, Expanded, SourceFile};
use crate::numbers::symbols;
use crate::out::{err, errln, out};

#[derive(clap::Args)]
pub struct Args {
    /// Scripts, or command files (recognised by their first command); `-` reads standard
    /// input.
    files: Vec<PathBuf>,
    /// Command files: event commands, `? SCRIPT` and `events ...`; `-` reads standard
    /// input (repeatable).
    #[arg(short = 'f', long = "commands", value_name = "FILE")]
    command_files: Vec<PathBuf>,
    /// Define a symbol for the scripts: MODULE!NAME=ADDR (repeatable).
    #[arg(long = "sym", value_name = "MODULE!NAME=ADDR")]
    symbols: Vec<String>,
    /// Print the syntax tree of each script that parses.
    #[arg(long)]
    ast: bool,
    /// Do not print warnings.
    #[arg(long)]
    no_warnings: bool,
    /// Check plain scripts as attached with `stage post` (event_sc is an error there).
    #[arg(long)]
    post: bool,
    /// Only parse (syntax and built-in call shapes), without name and semantic checks.
    #[arg(long)]
    syntax_only: bool,
}

/// hv-kvm's limits for one event execution.
const EVENT_LIMITS: Limits = hv_kvm::platform::EVENT_LIMITS;

/// Words that start a debugger command rather than a script.
const DEBUGGER_WORDS: [&str; 2] = ["events", "output"];

pub fn run(args: Args) -> ExitCode {
    if args.files.is_empty() && args.command_files.is_empty() {
        errln!("error: give a script or command file to check (or - for standard input)");
        return ExitCode::from(2);
    }
    let symbols = match symbols(&args.symbols) {
        Ok(s) => s,
        Err(e) => {
            errln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut checker = Checker {
        args: &args,
        symbols,
        globals: Globals::default(),
        failed: false,
    };
    let inputs = args
        .files
        .iter()
        .map(|p| (p, false))
        .chain(args.command_files.iter().map(|p| (p, true)));
    for (path, forced) in inputs {
        let file = match read(path) {
            Ok(f) => f,
            Err(e) => {
                errln!("{}: error: {e}", path.display());
                checker.failed = true;
                continue;
            }
        };
        if forced || is_command_file(&file.text) {
            checker.commands(&file);
        } else {
            match include::expand_script(&file) {
                Ok(x) => {
                    let stage = if args.post {
                        StageUse::PostOnly
                    } else {
                        StageUse::Any
                    };
                    checker.script(&x, 0, &x.text, stage, &Limits::default());
                }
                Err(e) => checker.error(e.render()),
            }
        }
    }
    if checker.failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Whether a text is a command file (see the module doc).
pub fn is_command_file(text: &str) -> bool {
    let split = commands::split(text);
    let Some(first) = split.commands.first() else {
        return false;
    };
    let t = first.text.trim_start();
    if t.starts_with('!') || t.starts_with('?') {
        return true;
    }
    let word = t
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .next()
        .unwrap_or("");
    let rest = t[word.len()..].trim_start();
    DEBUGGER_WORDS.contains(&word)
        && (rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_alphanumeric()))
}

struct Checker<'a> {
    args: &'a Args,
    symbols: BTreeMap<String, u64>,
    globals: Globals,
    failed: bool,
}

impl Checker<'_> {
    fn error(&mut self, rendered: String) {
        self.failed = true;
        err!("{rendered}");
    }

    fn warning(&self, rendered: String) {
        if !self.args.no_warnings {
            err!("{rendered}");
        }
    }

    /// Checks every command of a command file.
    fn commands(&mut self, file: &Arc<SourceFile>) {
        for command in commands::load(file) {
            match command {
                Ok(x) => self.command(&x),
                Err(e) => self.error(e.render()),
            }
        }
    }

    fn command(&mut self, x: &Expanded) {
        let symbols = hv_core::SymbolMap(self.symbols.clone());
        let command = match parse_command_with(&x.text, &symbols) {
            Ok(c) => c,
            Err(e) => {
                // An error at the very end still needs one character to point at.
                let span = Span::new(e.start, e.end.max(e.start + 1));
                let mut d = Diagnostic::error(e.message, span);
                if let Some(h) = e.help {
                    d = d.with_help(h);
                }
                return self.error(x.locate(d).render());
            }
        };
        match command {
            Command::Event(spec) => {
                if let Some(why) = hv_kvm::refusal(spec.kind) {
                    let start = x.text.len() - x.text.trim_start().len();
                    let name = spec.kind.command().len() + 1;
                    let d = Diagnostic::warning(
                        format!("hv-kvm cannot raise !{}: {why}", spec.kind.command()),
                        Span::new(start, start + name),
                    );
                    self.warning(x.locate(d).render());
                }
                if let Some((script, offset)) = &spec.script {
                    let stage = if spec.options.stage == StageMode::Post {
                        StageUse::PostOnly
                    } else {
                        StageUse::Any
                    };
                    self.script(x, *offset, script, stage, &EVENT_LIMITS);
                }
            }
            Command::Eval(script, offset) => {
                self.script(x, offset, &script, StageUse::Any, &Limits::default());
            }
            // `events ...` and the rest: parsing them was the check.
            _ => {}
        }
    }

    /// Checks the script `script`, which sits at `offset` in `x.text`.
    fn script(
        &mut self,
        x: &Expanded,
        offset: usize,
        script: &str,
        stage: StageUse,
        limits: &Limits,
    ) {
        let ast = match parse_checked(script) {
            Ok(ast) => ast,
            Err(errors) => {
                for d in errors {
                    self.error(x.locate(d.offset_by(offset)).render());
                }
                return;
            }
        };
        for w in portability::check(&ast, script) {
            self.warning(x.locate(w.offset_by(offset)).render());
        }
        if self.args.ast {
            out!("{}", print::script(&ast));
        }
        if self.args.syntax_only {
            return;
        }
        let options = CompileOptions {
            stage,
            symbols: self.symbols.clone(),
        };
        let result = compile(&ast, &self.globals, &options)
            .and_then(|p| hvscript_lang::stack::check(&p, limits).map_err(|d| vec![d]));
        if let Err(errors) = result {
            for d in errors {
                self.error(x.locate(d.offset_by(offset)).render());
            }
        }
    }
}

fn read(path: &Path) -> std::io::Result<Arc<SourceFile>> {
    if path.as_os_str() == "-" {
        let mut src = String::new();
        std::io::stdin().read_to_string(&mut src)?;
        return Ok(SourceFile::command_line("<stdin>", src));
    }
    let bytes = std::fs::read(path)?;
    let src = String::from_utf8(bytes).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to()),
        )
    })?;
    Ok(SourceFile::file(path, src))
}
