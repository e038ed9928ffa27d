//! hvscript's own conformance cases: `cases/NAME.ds` with `cases/NAME.expected`.
//!
//! This module owns the case format. A case's leading comment lines may set up the run:
//! ```text
//! // regs: rax=0x10 rbx=5          registers (HyperDbg numbers: hex by default, 0n decimal)
//! // mem: 0x1000=41424300          guest memory (address = hex bytes); repeatable
//! // pseudo: context=0x55          pseudo-registers
//! // sym: nt!Foo=0xfffff80000001000  symbols the debugger knows
//! // stage: pre | post | all       post = an event with `stage post` (compiled as post-only);
//! //                               all = `stage all`: runs pre then post, outputs joined
//! // harness: hyperdbg             HyperDbg's test-harness context (rcx struct, r14, r15, rsp...)
//! // runs: 2                       run N times with the same globals (they persist)
//! ```
//! The expected file holds the exact output; a run that stops with an error (or a script
//! that does not compile) adds one line `LINE:COL: error: MESSAGE` (the first diagnostic).
//! A single trailing newline is not significant on either side.

use std::fs;
use std::path::Path;

use hvscript_abi::{PseudoReg, PseudoValues, Register};
use hvscript_lang::{CompileOptions, Globals, HostEnv, Limits, Stage, StageUse};

use crate::exec::{execute, Backend, Setup};
use crate::harness;
use crate::report::{Report, Section, Verdict};

/// The set-up a case's header asks for.
#[derive(Clone, Debug, Default)]
pub struct CaseHeader {
    pub regs: Vec<(Register, u64)>,
    pub mem: Vec<(u64, Vec<u8>)>,
    pub pseudo: Vec<(PseudoReg, u64)>,
    pub symbols: Vec<(String, u64)>,
    pub stage: Option<String>,
    pub hyperdbg_harness: bool,
    pub runs: u32,
}

/// A HyperDbg number: hex by default, with 0x/0n/0y/0o prefixes, an optional leading `-`.
pub fn number(text: &str) -> Result<u64, String> {
    hvscript_abi::number::parse_signed_number(text.trim())
        .ok_or_else(|| format!("`{text}` is not a number"))
}

fn hex_bytes(text: &str) -> Result<Vec<u8>, String> {
    let d: Vec<char> = text.chars().filter(|c| !c.is_whitespace()).collect();
    if d.len() & 1 == 1 {
        return Err(format!("`{text}`: an odd number of hex digits"));
    }
    d.chunks(2)
        .map(|p| {
            let s: String = p.iter().collect();
            u8::from_str_radix(&s, 16).map_err(|_| format!("`{s}` is not a hex byte"))
        })
        .collect()
}

/// Reads the header comment lines at the top of a case.
pub fn parse_header(src: &str) -> Result<CaseHeader, String> {
    let mut h = CaseHeader {
        runs: 1,
        ..CaseHeader::default()
    };
    for line in src.lines() {
        let Some(c) = line.trim().strip_prefix("//") else {
            if line.trim().is_empty() {
                continue;
            }
            break;
        };
        let Some((key, value)) = c.split_once(':') else {
            continue;
        };
        let items = value.split_whitespace();
        match key.trim() {
            "regs" => {
                for it in items {
                    let (n, v) = it.split_once('=').ok_or(format!("regs: `{it}`"))?;
                    let r = Register::from_name(n.trim_start_matches('@'))
                        .ok_or(format!("regs: unknown register `{n}`"))?;
                    h.regs.push((r, number(v)?));
                }
            }
            "mem" => {
                for it in items {
                    let (a, b) = it.split_once('=').ok_or(format!("mem: `{it}`"))?;
                    h.mem.push((number(a)?, hex_bytes(b)?));
                }
            }
            "pseudo" => {
                for it in items {
                    let (n, v) = it.split_once('=').ok_or(format!("pseudo: `{it}`"))?;
                    let r = PseudoReg::from_name(n.trim_start_matches('$'))
                        .ok_or(format!("pseudo: unknown `{n}`"))?;
                    h.pseudo.push((r, number(v)?));
                }
            }
            "sym" => {
                for it in items {
                    let (n, v) = it.split_once('=').ok_or(format!("sym: `{it}`"))?;
                    h.symbols.push((n.to_string(), number(v)?));
                }
            }
            "stage" => h.stage = Some(value.trim().to_string()),
            "harness" => h.hyperdbg_harness = value.trim() == "hyperdbg",
            "runs" => {
                h.runs = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("runs: `{}`", value.trim()))?
            }
            _ => {}
        }
    }
    Ok(h)
}

fn setup(h: &CaseHeader, stage: Stage, stage_use: StageUse) -> Setup {
    let (mut regs, mut pseudo, mut env) = if h.hyperdbg_harness {
        harness::hyperdbg_harness()
    } else {
        (
            Default::default(),
            PseudoValues::default(),
            HostEnv::new(stage),
        )
    };
    env.stage = stage;
    for &(r, v) in &h.regs {
        regs.write(r, v);
    }
    for (a, b) in &h.mem {
        env.memory.load(*a, b);
    }
    for &(p, v) in &h.pseudo {
        pseudo.set(p, v);
    }
    pseudo.set(PseudoReg::EventStage, u64::from(stage == Stage::Post));
    let mut options = CompileOptions {
        stage: stage_use,
        ..CompileOptions::default()
    };
    for (n, v) in &h.symbols {
        options.symbols.insert(n.clone(), *v);
    }
    Setup {
        regs,
        pseudo,
        env,
        options,
        limits: Limits::default(),
    }
}

/// Runs one case's script as its header says and renders what it produced: the output, then
/// `LINE:COL: error: MESSAGE` if it stopped with an error.
pub fn run_case(src: &str, backend: Backend) -> Result<String, String> {
    let h = parse_header(src)?;
    let plan: Vec<(Stage, StageUse)> = match h.stage.as_deref() {
        None | Some("pre") => vec![(Stage::Pre, StageUse::Any)],
        Some("post") => vec![(Stage::Post, StageUse::PostOnly)],
        Some("all") => vec![(Stage::Pre, StageUse::Any), (Stage::Post, StageUse::Any)],
        Some(other) => return Err(format!("stage: `{other}` (pre, post or all)")),
    };
    let globals = Globals::default();
    let mut out = String::new();
    for _ in 0..h.runs.max(1) {
        for &(stage, stage_use) in &plan {
            let ex = execute(backend, src, setup(&h, stage, stage_use), &globals);
            out.push_str(&ex.output);
            if let Some(e) = ex.first_error() {
                if !out.is_empty() && !out.ends_with('\n') {
                    out.push('\n');
                }
                out.push_str(&format!("{e}\n"));
                return Ok(out);
            }
        }
    }
    Ok(out)
}

fn normalize(s: &str) -> &str {
    s.strip_suffix('\n').unwrap_or(s)
}

/// Runs every `NAME.ds` of `dir` against its `NAME.expected`.
pub fn run_cases(dir: &Path, backend: Backend) -> Report {
    let mut s = Section::new(format!("hvscript cases {} ({backend})", dir.display()));
    s.declare("output as expected", Verdict::Pass);
    s.declare("output differs", Verdict::Fail);
    s.declare("case unreadable or without .expected", Verdict::Fail);
    let mut paths: Vec<_> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "ds"))
            .collect(),
        Err(e) => {
            s.add(
                "case unreadable or without .expected",
                Verdict::Fail,
                Some(format!("{}: {e}", dir.display())),
            );
            return Report { sections: vec![s] };
        }
    };
    paths.sort();
    for path in paths {
        let name = path
            .file_stem()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let (src, expected) = match (
            fs::read_to_string(&path),
            fs::read_to_string(path.with_extension("expected")),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                s.add(
                    "case unreadable or without .expected",
                    Verdict::Fail,
                    Some(format!("{name}: {e}")),
                );
                continue;
            }
        };
        match run_case(&src, backend) {
            Ok(got) if normalize(&got) == normalize(&expected) => {
                s.add("output as expected", Verdict::Pass, None)
            }
            Ok(got) => s.add(
                "output differs",
                Verdict::Fail,
                Some(format!(
                    "{name}:\n             expected: {:?}\n             got:      {:?}",
                    normalize(&expected),
                    normalize(&got)
                )),
            ),
            Err(e) => s.add(
                "case unreadable or without .expected",
                Verdict::Fail,
                Some(format!("{name}: header: {e}")),
            ),
        }
    }
    Report { sections: vec![s] }
}
