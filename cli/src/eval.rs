//! `hvscript eval`: run a script once on the host against a simulated guest, as
//! HyperDbg's `?` command does, and print its output exactly as HyperDbg would.
//!
//! The guest is what the options make it: registers (`--reg rax=0x10`), memory
//! (`--mem 0x1000=41424300`), pseudo-registers (`--pseudo context=0xc0000080`) and the
//! calling stage (`--stage post`). `--json` prints a machine-readable result instead.
//!
//! `--jit` runs the script as native code compiled by `hvscript-jit` (same output, same
//! JSON); `--dump-clif` and `--dump-asm` (which imply `--jit`) print the Cranelift IR and
//! the disassembly of the code object first (in JSON: the `clif` and `asm` fields).
//!
//! The script is the argument, `-f FILE`, or standard input (`-` or `-f -`); `#include`
//! is expanded first (see `include`), and a script that cannot fit the run's stack or call
//! depth is refused before it runs, as `check` refuses it.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use hvscript_abi::{GuestRegs, PseudoReg, PseudoValues, Register, GUEST_REG_SLOTS};
use hvscript_grammar::Diagnostic;
use hvscript_jit::{Jit, OptLevel};
use hvscript_lang::{
    compile_source, CompileOptions, Globals, HostEnv, Interpreter, Invocation, Limits, RunError,
    RunStats, Stage, StageUse,
};
use hvscript_runtime::{LoadedCode, Runner, RunnerError};
use serde_json::json;

use crate::include::{self, Expanded, Located, SourceFile};
use crate::numbers::{number, split, symbols};
use crate::out::{err, errln, out, outln};

#[derive(clap::Args)]
pub struct Args {
    /// The script text (or use -f); `-` reads it from standard input.
    #[arg(conflicts_with = "file")]
    script: Option<String>,
    /// Read the script from a file.
    #[arg(short, long)]
    file: Option<PathBuf>,
    /// Set a register: NAME=VALUE (HyperDbg numbers: hex by default, 0n for decimal).
    #[arg(long = "reg", value_name = "NAME=VALUE")]
    regs: Vec<String>,
    /// Map guest memory: ADDR=HEXBYTES (e.g. 0x1000=48656c6c6f00).
    #[arg(long = "mem", value_name = "ADDR=HEXBYTES")]
    mem: Vec<String>,
    /// Set a pseudo-register: NAME=VALUE (context, event_id, core, pid, ...).
    #[arg(long = "pseudo", value_name = "NAME=VALUE")]
    pseudo: Vec<String>,
    /// Define a symbol: MODULE!NAME=ADDR.
    #[arg(long = "sym", value_name = "MODULE!NAME=ADDR")]
    symbols: Vec<String>,
    /// The calling stage to simulate ($stage is 0 in pre, 1 in post).
    #[arg(long, value_enum, default_value = "pre")]
    stage: StageArg,
    /// Loop iterations and calls allowed before the run is stopped.
    #[arg(long, default_value_t = Limits::default().fuel)]
    fuel: u64,
    /// Print a JSON object: output, registers, short-circuit flag, errors.
    #[arg(long)]
    json: bool,
    /// Run the script as native code compiled with the Cranelift JIT.
    #[arg(long)]
    jit: bool,
    /// Print the Cranelift IR of the compiled script (implies --jit).
    #[arg(long)]
    dump_clif: bool,
    /// Print the disassembly of the compiled script (implies --jit).
    #[arg(long)]
    dump_asm: bool,
}

/// What the JIT adds to a report: the dumps asked for.
#[derive(Default)]
struct JitDumps {
    clif: Option<String>,
    asm: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum StageArg {
    Pre,
    Post,
}

/// Where the host puts the strings `$pname`, `$date` and `$time` point to.
const HOST_INFO_PAGE: u64 = 0x7ffe_0000;

pub fn run(args: Args) -> ExitCode {
    let root = match (args.script.as_deref(), &args.file) {
        (Some("-"), _) => match read_stdin() {
            Ok(s) => SourceFile::command_line("<stdin>", s),
            Err(e) => return fail(&args, &format!("<stdin>: error: {e}")),
        },
        (Some(s), _) => SourceFile::command_line("<command line>", s),
        (None, Some(f)) if f.as_os_str() == "-" => match read_stdin() {
            Ok(s) => SourceFile::command_line("<stdin>", s),
            Err(e) => return fail(&args, &format!("<stdin>: error: {e}")),
        },
        (None, Some(f)) => match std::fs::read_to_string(f) {
            Ok(s) => SourceFile::file(f, s),
            Err(e) => return fail(&args, &format!("{}: error: {e}", f.display())),
        },
        (None, None) => {
            return fail(
                &args,
                "error: give a script, -f FILE, or - for standard input",
            )
        }
    };
    let src = match include::expand_script(&root) {
        Ok(x) => x,
        Err(e) => return fail_located(&args, &e),
    };
    let stage = match args.stage {
        StageArg::Pre => Stage::Pre,
        StageArg::Post => Stage::Post,
    };
    let mut env = HostEnv::new(stage);
    let mut regs = GuestRegs::default();
    let mut pseudo = host_pseudo_values(&mut env);
    pseudo.set(PseudoReg::EventStage, (stage == Stage::Post) as u64);
    let mut options = CompileOptions {
        stage: if stage == Stage::Post {
            StageUse::PostOnly
        } else {
            StageUse::Any
        },
        ..Default::default()
    };
    if let Err(e) = apply_options(&args, &mut regs, &mut pseudo, &mut env, &mut options) {
        return fail(&args, &format!("error: {e}"));
    }

    let globals = Globals::default();
    let limits = Limits {
        fuel: args.fuel,
        ..Limits::default()
    };
    // The same refusal `check` makes: a script that cannot fit this run's stack.
    let compiled = compile_source(&src.text, &globals, &options).and_then(|p| {
        hvscript_lang::stack::check(&p, &limits)
            .map(|()| p)
            .map_err(|d| vec![d])
    });
    let program = match compiled {
        Ok(p) => p,
        Err(errors) => {
            let dumps = JitDumps::default();
            return report(&args, &src, &env, &regs, &globals, &errors, None, &dumps);
        }
    };
    let mut inv = Invocation {
        regs: &mut regs,
        pseudo: &pseudo,
        globals: &globals,
        host: &mut env,
        limits,
    };
    let mut dumps = JitDumps::default();
    let result = if args.jit || args.dump_clif || args.dump_asm {
        match run_jit(&args, &program, &mut inv, &mut dumps) {
            Ok(r) => r,
            Err(msg) => return fail(&args, &format!("error: {msg}")),
        }
    } else {
        Interpreter::new().run(&program, &mut inv)
    };
    let (errors, fuel) = match result {
        Ok(stats) => (Vec::new(), Some(stats.fuel_used)),
        Err(e) => (vec![e.to_diagnostic()], None),
    };
    report(&args, &src, &env, &regs, &globals, &errors, fuel, &dumps)
}

/// Compiles `program` with the JIT, loads it and runs it once. `Err` for a failure of the
/// JIT itself (not of the script).
fn run_jit(
    args: &Args,
    program: &hvscript_lang::Program,
    inv: &mut Invocation<'_>,
    dumps: &mut JitDumps,
) -> Result<Result<RunStats, RunError>, String> {
    // Run once: the fastest compile wins (see hvscript_jit::OptLevel).
    let mut jit = Jit::with_opt_level(OptLevel::Fast).map_err(|e| e.to_string())?;
    let compiled = jit.compile_with_clif(program).map_err(|e| e.to_string())?;
    if args.dump_clif {
        dumps.clif = compiled.clif;
    }
    if args.dump_asm {
        dumps.asm = Some(hvscript_jit::disassemble(&compiled.object));
    }
    if !args.json {
        for text in [&dumps.clif, &dumps.asm].into_iter().flatten() {
            outln!("{text}");
        }
    }
    let code: LoadedCode = LoadedCode::load(compiled.object).map_err(|e| e.to_string())?;
    match Runner::new().run(&code.image(), inv) {
        Ok(stats) => Ok(Ok(stats)),
        Err(RunnerError::Run(e)) => Ok(Err(e.into())),
        Err(e @ RunnerError::Incompatible(_)) => Err(e.to_string()),
    }
}

fn read_stdin() -> std::io::Result<String> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s)?;
    Ok(s)
}

/// A failure located in a source (an include that cannot be read).
fn fail_located(args: &Args, e: &Located) -> ExitCode {
    if args.json {
        let (line, col) =
            hvscript_grammar::diagnostic::line_col(&e.file.text, e.diagnostic.span.start as usize);
        outln!(
            "{}",
            json!({ "ok": false, "errors": [{ "message": e.diagnostic.message, "file": e.file.name, "line": line, "column": col, "rendered": e.render() }] })
        );
    } else {
        err!("{}", e.render());
    }
    ExitCode::FAILURE
}

fn fail(args: &Args, msg: &str) -> ExitCode {
    if args.json {
        outln!("{}", json!({ "ok": false, "errors": [{ "message": msg }] }));
    } else {
        errln!("{msg}");
    }
    ExitCode::FAILURE
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    src: &Expanded,
    env: &HostEnv,
    regs: &GuestRegs,
    globals: &Globals,
    errors: &[Diagnostic],
    fuel_used: Option<u64>,
    dumps: &JitDumps,
) -> ExitCode {
    let ok = errors.is_empty();
    if args.json {
        let output = env.output_text();
        let registers: serde_json::Map<String, serde_json::Value> = SLOT_NAMES
            .iter()
            .zip(regs.slots())
            .map(|(n, v)| (n.to_string(), json!(format!("{v:#x}"))))
            .collect();
        let errors: Vec<_> = errors
            .iter()
            .map(|d| {
                let at = src.locate(d.clone());
                let (line, col) = hvscript_grammar::diagnostic::line_col(&at.file.text, at.diagnostic.span.start as usize);
                json!({ "message": d.message, "file": at.file.name, "line": line, "column": col, "rendered": at.render() })
            })
            .collect();
        let globals: serde_json::Map<String, serde_json::Value> = globals
            .snapshot()
            .into_iter()
            .map(|(n, v)| (format!(".{n}"), json!(format!("{v:#x}"))))
            .collect();
        let mut value = json!({
            "ok": ok,
            "output": output,
            "output_lines": output.lines().collect::<Vec<_>>(),
            "registers": registers,
            "globals": globals,
            "stage": match env.stage { Stage::Pre => "pre", Stage::Post => "post" },
            "short_circuit": env.short_circuit,
            "refused_short_circuits": env.refused_short_circuits,
            "test_values": env.test_values.iter().map(|v| format!("{v:#x}")).collect::<Vec<_>>(),
            "warnings": env.warnings,
            "fuel_used": fuel_used,
            "errors": errors,
        });
        for (key, text) in [("clif", &dumps.clif), ("asm", &dumps.asm)] {
            if let (Some(t), Some(obj)) = (text, value.as_object_mut()) {
                obj.insert(key.to_string(), json!(t));
            }
        }
        outln!(
            "{}",
            serde_json::to_string_pretty(&value).unwrap_or_default()
        );
    } else {
        out!("{}", env.output_text());
        for d in errors {
            err!("{}", src.locate(d.clone()).render());
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Slot names of [`GuestRegs`], in field order.
const SLOT_NAMES: [&str; GUEST_REG_SLOTS] = [
    "rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi", "r8", "r9", "r10", "r11", "r12", "r13",
    "r14", "r15", "rip", "rflags", "cs", "ds", "es", "fs", "gs", "ss", "cr0", "cr2", "cr3", "cr4",
    "cr8", "dr0", "dr1", "dr2", "dr3", "dr6", "dr7", "gdtr", "idtr", "ldtr", "tr",
];

/// The host's own pseudo-register values: this process's id and name, today's date.
fn host_pseudo_values(env: &mut HostEnv) -> PseudoValues {
    use hvscript_stdlib::Env;
    let mut p = PseudoValues::default();
    p.set(PseudoReg::Pid, std::process::id() as u64);
    p.set(PseudoReg::Tid, std::process::id() as u64);
    let name = b"hvscript\0";
    env.memory.load(HOST_INFO_PAGE, name);
    p.set(PseudoReg::Pname, HOST_INFO_PAGE);
    if let Some(t) = env.local_time() {
        env.memory.load(HOST_INFO_PAGE + 0x100, &t.date_string());
        env.memory.load(HOST_INFO_PAGE + 0x200, &t.time_string());
        p.set(PseudoReg::Date, HOST_INFO_PAGE + 0x100);
        p.set(PseudoReg::Time, HOST_INFO_PAGE + 0x200);
    }
    p
}

fn apply_options(
    args: &Args,
    regs: &mut GuestRegs,
    pseudo: &mut PseudoValues,
    env: &mut HostEnv,
    options: &mut CompileOptions,
) -> Result<(), String> {
    for r in &args.regs {
        let (name, value) = split(r, "--reg")?;
        let reg = Register::from_name(name.trim_start_matches('@'))
            .ok_or_else(|| format!("--reg {r}: unknown register `{name}`"))?;
        regs.write(reg, number(value).map_err(|e| format!("--reg {r}: {e}"))?);
    }
    for p in &args.pseudo {
        let (name, value) = split(p, "--pseudo")?;
        let reg = PseudoReg::from_name(name.trim_start_matches('$'))
            .ok_or_else(|| format!("--pseudo {p}: unknown pseudo-register `{name}`"))?;
        if reg == PseudoReg::EventStage {
            return Err("--pseudo: set the stage with --stage pre|post".into());
        }
        pseudo.set(
            reg,
            number(value).map_err(|e| format!("--pseudo {p}: {e}"))?,
        );
    }
    for m in &args.mem {
        let (addr, hex) = split(m, "--mem")?;
        let addr = number(addr).map_err(|e| format!("--mem {m}: {e}"))?;
        let bytes = hex_bytes(hex).map_err(|e| format!("--mem {m}: {e}"))?;
        env.memory.load(addr, &bytes);
    }
    options.symbols = symbols(&args.symbols)?;
    Ok(())
}

fn hex_bytes(text: &str) -> Result<Vec<u8>, String> {
    let digits: String = text
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '`')
        .collect();
    if !digits.len().is_multiple_of(2) {
        return Err("an odd number of hex digits".into());
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&digits[i..i + 2], 16)
                .map_err(|_| format!("`{}` is not a hex byte", &digits[i..i + 2]))
        })
        .collect()
}
