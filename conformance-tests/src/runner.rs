//! The conformance runner: HyperDbg's two public suites and hvscript's own cases, run on a
//! chosen [`Backend`], with every outcome sorted into counted categories of a [`Report`].
//!
//! This module owns the pass rules:
//! * `semantic-test-cases/*.ds` (notes §5.5): a file passes when its output never contains
//!   `was failed` and the set of N in `test case N was successful` equals the activated set
//!   (`test_caseN = 1`). Cases the host cannot provide for ([`HOST_IMPOSSIBLE`]) are cut out of
//!   the script text (the increment of `current_test_case` stays) and listed with the reason.
//! * `script-test-cases/*.txt` (the suite's README): see [`run_script_suite`].
//! * our own `cases/NAME.ds` + `NAME.expected`: see [`crate::cases`].

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use hvscript_abi::PseudoValues;
use hvscript_lang::{CompileOptions, Globals, HostEnv, Limits, Stage};

use crate::exec::{execute, Backend, Execution, Setup};
use crate::generator_model::{self, ErrorKind, ScriptKind, Semantics};
use crate::harness;
use crate::report::{Report, Section, Verdict};
use crate::suite_file::{self, Expected, SuiteKind, SuiteRecord};

/// Semantic cases that need what a host cannot have, with the reason. They are not faked.
pub const HOST_IMPOSSIBLE: &[(u32, &str)] = &[(
    22,
    "needs the Windows kernel symbol nt!ExAllocatePoolWithTag and virtual_to_physical \
     (a kernel page-table walk); the host has neither (HyperDbg's file itself says the case \
     is expected to fail in user mode), and symbols and translations are not faked",
)];

/// Semantic cases written for HyperDbg's legacy untyped evaluator whose own check fails
/// under v0.23's typing rules, which hvscript implements: the case must print exactly
/// `was failed`, as HyperDbg v0.23 does, and is listed with the rule (not counted).
pub const V023_TYPING: &[(u32, &str)] = &[(
    56,
    "`ret = memcmp(...)` makes `ret` an implicit `unsigned long long` (v0.23, notes §3.1), so \
     `ret > 0` holds for memcmp's -1 and the case prints `was failed`, as HyperDbg v0.23 does; \
     `(long)ret < 0` is the v0.23 spelling of the test",
)];

/// Runs whatever `dir` holds: a HyperDbg suite directory (with `script-test-cases/` and/or
/// `semantic-test-cases/`), or a directory of our own cases (`*.ds` + `*.expected`).
pub fn run_dir(dir: &Path, backend: Backend) -> Report {
    let scripts = dir.join("script-test-cases");
    let semantic = dir.join("semantic-test-cases");
    let mut report = Report::default();
    if scripts.is_dir() || semantic.is_dir() {
        if semantic.is_dir() {
            report.merge(run_semantic_suite(&semantic, backend));
        }
        if scripts.is_dir() {
            report.merge(run_script_suite(&scripts, backend));
        }
    } else if dir.is_dir() {
        report.merge(crate::cases::run_cases(dir, backend));
    } else {
        let mut s = Section::new(format!("{}", dir.display()));
        s.add(
            "directory missing",
            Verdict::Fail,
            Some(format!("{} is not a directory", dir.display())),
        );
        report.sections.push(s);
    }
    report
}

// ---------------------------------------------------------------------------------------------
// semantic-test-cases
// ---------------------------------------------------------------------------------------------

/// `test_caseN = 1` activations (HyperDbg's harness regex `test_case([0-9]+)\s*=\s*1`).
pub fn activated_cases(src: &str) -> BTreeSet<u32> {
    let mut set = BTreeSet::new();
    let mut rest = src;
    while let Some(at) = rest.find("test_case") {
        rest = &rest[at + "test_case".len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if digits.is_empty() {
            continue;
        }
        let after = rest[digits.len()..].trim_start();
        if let Some(v) = after.strip_prefix('=') {
            let v = v.trim_start();
            if v.starts_with('1') && !v[1..].starts_with(|c: char| c.is_ascii_alphanumeric()) {
                if let Ok(n) = digits.parse() {
                    set.insert(n);
                }
            }
        }
    }
    set
}

/// The N of every `test case N was successful` / `... was failed` line of an output.
pub fn reported_cases(output: &str, word: &str) -> BTreeSet<u32> {
    output
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("test case ")?;
            let (n, tail) = rest.split_once(' ')?;
            (tail == format!("was {word}")).then(|| n.parse().ok())?
        })
        .collect()
}

/// Blanks out the `do { if (test_caseN != 1) { break; } ... } while (0);` block of case N,
/// keeping line breaks (so locations stay right). `None` if the block is not found.
pub fn cut_case(src: &str, n: u32) -> Option<String> {
    let needle = format!("test_case{n} != 1");
    let at = src.find(&needle)?;
    let do_at = src[..at].rfind("do")?;
    if !src[do_at + 2..at].trim_start().starts_with('{') {
        return None;
    }
    let open = do_at + 2 + src[do_at + 2..].find('{')?;
    let b = src.as_bytes();
    let (mut depth, mut i, mut in_str) = (0usize, open, false);
    let close = loop {
        let c = *b.get(i)?;
        if in_str {
            if c == b'\\' {
                i += 1;
            } else if c == b'"' {
                in_str = false;
            }
        } else if c == b'"' {
            in_str = true;
        } else if c == b'{' {
            depth += 1;
        } else if c == b'}' {
            depth -= 1;
            if depth == 0 {
                break i;
            }
        }
        i += 1;
    };
    let tail = &src[close + 1..];
    let w = tail.trim_start().strip_prefix("while")?.trim_start();
    let w = w
        .strip_prefix('(')?
        .trim_start()
        .strip_prefix('0')?
        .trim_start();
    let w = w.strip_prefix(')')?.trim_start().strip_prefix(';')?;
    let end = src.len() - w.len();
    let blank: String = src[do_at..end]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    Some(format!("{}{}{}", &src[..do_at], blank, &src[end..]))
}

/// The fuel of a semantic-suite run. Case 33 alone runs 2 358 300 iterations of its innermost
/// loop (and case 32 about 70 000), beyond hvscript's default budget of 1 000 000 loop
/// iterations and calls (and beyond HyperDbg v0.23's 1 000 000 executed opcodes; the suite
/// predates that limit), so the suite runs with a larger budget, as `--fuel` allows.
pub const SEMANTIC_FUEL: u64 = 20_000_000;

fn harness_setup() -> Setup {
    let (regs, pseudo, env) = harness::hyperdbg_harness();
    Setup {
        regs,
        pseudo,
        env,
        options: CompileOptions::default(),
        limits: Limits {
            fuel: SEMANTIC_FUEL,
            ..Limits::default()
        },
    }
}

/// Runs every `*.ds` file of HyperDbg's semantic suite in the harness context of §5.3.
pub fn run_semantic_suite(dir: &Path, backend: Backend) -> Report {
    let mut cases = Section::new(format!("semantic-test-cases (per case, {backend})"));
    let mut files = Section::new(format!(
        "semantic-test-cases (per file, HyperDbg's rule, {backend})"
    ));
    cases.note(
        "context: HyperDbg's harness (§5.3): rcx -> STUPID_STRUCT2, r14 -> testw, r15 -> \
         \"Hello world !\", rsp -> 0x100-byte buffer + 0x50 (starts with testw), other GPRs \
         1,3,4,6,7,8,9..0xe, $pname -> \"hyperdbg-cli.exe\" (user mode), $pid/$tid fixed",
    );
    cases.note(format!(
        "fuel {SEMANTIC_FUEL} loop iterations and calls per file (the default is 1000000): case 33 \
         iterates 2358300 times (HyperDbg v0.23's own limit of 1000000 opcodes would stop it)"
    ));
    cases.note(
        "typing is v0.23's: implicit variables and built-in results are unsigned long long, \
         literals and registers long (notes §3.1)",
    );
    for label in [
        "successful",
        "not runnable on the host (reason given)",
        "prints `was failed` as HyperDbg v0.23 does (v0.23 typing; rule given)",
    ] {
        let v = if label == "successful" {
            Verdict::Pass
        } else {
            Verdict::Neutral
        };
        cases.declare(label, v);
    }
    cases.declare("failed, missing or unexpected", Verdict::Fail);
    files.declare(
        "file passes (no `was failed`, successful set == activated set)",
        Verdict::Pass,
    );
    files.declare(
        "fails HyperDbg's rule only through the v0.23 typing cases (listed above)",
        Verdict::Neutral,
    );
    files.declare("file fails", Verdict::Fail);

    let mut paths: Vec<_> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "ds"))
            .collect(),
        Err(e) => {
            files.add(
                "file fails",
                Verdict::Fail,
                Some(format!("{}: {e}", dir.display())),
            );
            return Report {
                sections: vec![cases, files],
            };
        }
    };
    paths.sort();
    for path in paths {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let mut src = match fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) => {
                files.add("file fails", Verdict::Fail, Some(format!("{name}: {e}")));
                continue;
            }
        };
        let mut expected = activated_cases(&src);
        for &(n, why) in HOST_IMPOSSIBLE {
            if expected.contains(&n) {
                match cut_case(&src, n) {
                    Some(s) => {
                        src = s;
                        expected.remove(&n);
                        cases.add(
                            "not runnable on the host (reason given)",
                            Verdict::Neutral,
                            Some(format!("{name}: case {n}: {why}")),
                        );
                    }
                    None => cases.add(
                        "failed, missing or unexpected",
                        Verdict::Fail,
                        Some(format!("{name}: case {n}: its block could not be cut out")),
                    ),
                }
            }
        }
        let globals = Globals::default();
        let ex = execute(backend, &src, harness_setup(), &globals);
        let ok = reported_cases(&ex.output, "successful");
        let bad = reported_cases(&ex.output, "failed");
        let err = ex.first_error().map(|e| format!("{name}:{e}"));
        for &n in &expected {
            if let Some(&(_, why)) = V023_TYPING.iter().find(|(c, _)| *c == n) {
                if bad.contains(&n) && !ok.contains(&n) {
                    cases.add(
                        "prints `was failed` as HyperDbg v0.23 does (v0.23 typing; rule given)",
                        Verdict::Neutral,
                        Some(format!("{name}: case {n}: {why}")),
                    );
                } else {
                    cases.add(
                        "failed, missing or unexpected",
                        Verdict::Fail,
                        Some(format!(
                            "{name}: case {n}: expected v0.23's `was failed` ({why})"
                        )),
                    );
                }
            } else if ok.contains(&n) && !bad.contains(&n) {
                cases.add("successful", Verdict::Pass, None);
            } else {
                let why = if bad.contains(&n) {
                    "printed `was failed`".to_string()
                } else {
                    match &err {
                        Some(e) => format!("no result line; the script stopped: {e}"),
                        None => "printed no result line".to_string(),
                    }
                };
                cases.add(
                    "failed, missing or unexpected",
                    Verdict::Fail,
                    Some(format!("{name}: case {n}: {why}")),
                );
            }
        }
        for n in ok.union(&bad).filter(|n| !expected.contains(n)) {
            cases.add(
                "failed, missing or unexpected",
                Verdict::Fail,
                Some(format!("{name}: case {n} reported but not activated")),
            );
        }
        let typed: BTreeSet<u32> = expected
            .iter()
            .copied()
            .filter(|n| V023_TYPING.iter().any(|(c, _)| c == n))
            .collect();
        let file_ok = !ex.output.contains("was failed") && ok == expected && err.is_none();
        let only_typing = !typed.is_empty()
            && err.is_none()
            && ok == expected.difference(&typed).copied().collect()
            && typed.iter().all(|n| bad.contains(n))
            && bad.is_subset(&typed);
        if only_typing {
            files.add(
                "fails HyperDbg's rule only through the v0.23 typing cases (listed above)",
                Verdict::Neutral,
                Some(format!(
                    "{name}: successful {{{}}}, v0.23 typing {{{}}}",
                    set_text(&ok),
                    set_text(&typed)
                )),
            );
        } else if file_ok {
            files.add(
                "file passes (no `was failed`, successful set == activated set)",
                Verdict::Pass,
                Some(format!("{name}: cases {}", set_text(&expected))),
            );
        } else {
            let mut why = format!("{name}: successful {{{}}}", set_text(&ok));
            if let Some(e) = err {
                why.push_str(&format!("; error {e}"));
            }
            files.add("file fails", Verdict::Fail, Some(why));
        }
    }
    Report {
        sections: vec![cases, files],
    }
}

fn set_text(s: &BTreeSet<u32>) -> String {
    let v: Vec<String> = s.iter().map(u32::to_string).collect();
    v.join(",")
}

// ---------------------------------------------------------------------------------------------
// script-test-cases
// ---------------------------------------------------------------------------------------------

/// The declarations the generator's loop wrapper put before a loop script.
pub const LOOP_PREFIX: &str = "tmp_counter = 0; val = 0; x = 0; ";
/// The statement the generator's loop wrapper put after a loop script.
pub const LOOP_SUFFIX: &str = " test_statement(tmp_counter);";

/// The text hvscript runs for a record: loop scripts get the generator's wrapper.
pub fn record_script(r: &SuiteRecord) -> String {
    match generator_model::classify(&r.script) {
        Some(ScriptKind::Loop) => format!("{LOOP_PREFIX}{}{LOOP_SUFFIX}", r.script),
        _ => r.script.clone(),
    }
}

fn record_setup() -> Setup {
    Setup {
        regs: harness::generator_regs(),
        pseudo: PseudoValues::default(),
        env: HostEnv::new(Stage::Pre),
        options: CompileOptions::default(),
        limits: Limits::default(),
    }
}

/// The smallest set of rule changes (from the generator's) under which the model computes
/// `value` for `script`, or under which it stops with a shift-count error when `value` is
/// `None` (hvscript's run-time error).
pub fn explain(script: &str, value: Option<u64>) -> Option<Semantics> {
    Semantics::all().into_iter().find(|&sem| {
        match (generator_model::evaluate_with(script, sem), value) {
            (Ok(v), Some(w)) => v == w,
            (Err(e), None) => e.kind == ErrorKind::ShiftCount,
            _ => false,
        }
    })
}

fn describe(sem: Semantics) -> String {
    let d = sem.describe();
    if d.is_empty() {
        "the same computation; the generator printed the 32-bit `int` (hvscript's value is \
         its 64-bit sign extension)"
            .into()
    } else {
        d.join(" + ")
    }
}

/// Model error kinds that are C#'s own rules, not syntax HyperDbg's grammar rejects: a
/// script refused only for these is valid HyperDbg.
pub fn csharp_only(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::TypeMismatch
            | ErrorKind::NonBoolCondition
            | ErrorKind::ResultNotInt
            | ErrorKind::ConstantOverflow
            | ErrorKind::LiteralTooLarge
            | ErrorKind::NotAStatement
            | ErrorKind::CommentedOut
            | ErrorKind::StepLimit
            | ErrorKind::DivisionByZero
    )
}

const C_EXACT: &str = "exact value";
const C_LOW32: &str = "low 32 bits equal, difference computed as 32- vs 64-bit only";
/// Not a pass by the suite README's definition (exact, or 32- vs 64-bit only), and not a
/// failure: the difference comes from a HyperDbg rule the C# generator did not follow
/// (e.g. a negative shift count stops the script), and the cause is computed.
const C_CAUSE: &str = "differs from the C# value by a HyperDbg rule, cause computed (not counted)";
const C_UNEXPLAINED: &str = "differs, no rule change explains it";
const C_CORRECT_REJECTED: &str = "compile error on a valid record";
const W_COMPILE: &str = "rejected at compile time (located diagnostic)";
const W_RUNTIME: &str = "stopped with a run-time error";
const W_PORTABLE: &str =
    "accepted by a deliberate hvscript extension that HyperDbg rejects (portability warning)";
/// The suite README: not a failure if hvscript behaves as HyperDbg, but its own category,
/// so not a pass either.
const W_CSHARP: &str = "valid HyperDbg, refused only by C# (model's reason; not counted)";
const W_SYNTAX: &str = "accepted, but the model says C# syntax error (HyperDbg rejects it too)";
const W_UNLOCATED: &str = "rejected without a location";
const W_MODEL_OK: &str = "ran, and the model accepts it too (inconsistent record)";

/// Runs every record of HyperDbg's `script-test-cases`. Pass rules (the suite's README):
/// * `-correct`: pass when the value of the last `test_statement` equals the expected value
///   ("exact"), or its low 32 bits do and the model computes the difference as 32- vs 64-bit
///   arithmetic alone. Other differences pass only when the model, re-run with a computed
///   set of HyperDbg's rules (bare digits hex, 64-bit, shift-count errors), gives exactly
///   hvscript's result (or its shift-count error): the aim is HyperDbg's behaviour. A value
///   nothing explains, or a compile error, fails.
/// * `-wrong`: a located compile-time rejection or a run-time error passes. A script that
///   runs passes when the model's only objection is a C# rule (typing, constant overflow,
///   statement forms): that is valid HyperDbg. It fails when the model's objection is C#
///   *syntax* (`<>`, juxtaposed operands, ...) that HyperDbg's grammar rejects too.
pub fn run_script_suite(dir: &Path, backend: Backend) -> Report {
    let mut correct = Section::new(format!("script-test-cases *-correct ({backend})"));
    let mut wrong = Section::new(format!("script-test-cases *-wrong ({backend})"));
    for s in [&mut correct, &mut wrong] {
        s.note(
            "registers as the generator: rax=1 rdx=3 rbx=4 rsp=5 rbp=6 rsi=7 rdi=8 r8..r13=9..0xe, \
             $proc $thread $teb $ip $buffer = 0",
        );
        s.note(format!(
            "loop scripts read tmp_counter before assigning it (a compile error in HyperDbg too); \
             they run as the generator's harness ran them: prefixed `{}` and suffixed `{}`",
            LOOP_PREFIX.trim(),
            LOOP_SUFFIX.trim()
        ));
    }
    for (l, v) in [
        (C_EXACT, Verdict::Pass),
        (C_LOW32, Verdict::Pass),
        (C_CAUSE, Verdict::Neutral),
        (C_UNEXPLAINED, Verdict::Fail),
        (C_CORRECT_REJECTED, Verdict::Fail),
    ] {
        correct.declare(l, v);
    }
    for (l, v) in [
        (W_COMPILE, Verdict::Pass),
        (W_RUNTIME, Verdict::Pass),
        (W_CSHARP, Verdict::Neutral),
        (W_PORTABLE, Verdict::Neutral),
        (W_SYNTAX, Verdict::Fail),
        (W_UNLOCATED, Verdict::Fail),
        (W_MODEL_OK, Verdict::Fail),
    ] {
        wrong.declare(l, v);
    }
    let files = match suite_file::list_suite_files(dir) {
        Ok(f) => f,
        Err(e) => {
            correct.add(
                C_UNEXPLAINED,
                Verdict::Fail,
                Some(format!("{}: {e}", dir.display())),
            );
            return Report {
                sections: vec![correct, wrong],
            };
        }
    };
    let mut csharp_reasons: std::collections::BTreeMap<&'static str, (usize, usize)> =
        Default::default();
    let mut compile_msgs: std::collections::BTreeMap<String, usize> = Default::default();
    let mut runtime_msgs: std::collections::BTreeMap<String, usize> = Default::default();
    for path in files {
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let records = match suite_file::read_suite_file(&path) {
            Ok(r) => r,
            Err(e) => {
                correct.add(C_UNEXPLAINED, Verdict::Fail, Some(e.to_string()));
                continue;
            }
        };
        let kind = suite_file::suite_kind(&path);
        for r in &records {
            let src = record_script(r);
            let ex = execute(backend, &src, record_setup(), &Globals::default());
            let id = format!("{name}#{}", r.number);
            match (kind, r.expected) {
                (Some(SuiteKind::Correct), Expected::Value(want)) => {
                    check_correct(&mut correct, &id, r, &ex, want)
                }
                _ => check_wrong(
                    &mut wrong,
                    &id,
                    r,
                    &ex,
                    &mut csharp_reasons,
                    &mut compile_msgs,
                    &mut runtime_msgs,
                ),
            }
        }
    }
    if !compile_msgs.is_empty() {
        wrong.note("compile-time diagnostics (first of each script), by message:");
        for (m, n) in top(&compile_msgs, 12) {
            wrong.note(format!("  {n:>5}  {m}"));
        }
    }
    if !runtime_msgs.is_empty() {
        wrong.note("run-time errors, by message:");
        for (m, n) in top(&runtime_msgs, 12) {
            wrong.note(format!("  {n:>5}  {m}"));
        }
    }
    if !csharp_reasons.is_empty() {
        wrong.note(
            "valid HyperDbg refused only by C#, by the model's reason (zero / non-zero last \
             test_statement value; HyperDbg's own harness would also count the zero ones as \
             passed, and fail the non-zero ones):",
        );
        for (label, (z, nz)) in &csharp_reasons {
            wrong.note(format!(
                "  {:>5}  {label} ({z} zero, {nz} non-zero)",
                z + nz
            ));
        }
    }
    Report {
        sections: vec![correct, wrong],
    }
}

fn top(m: &std::collections::BTreeMap<String, usize>, n: usize) -> Vec<(String, usize)> {
    let mut v: Vec<(String, usize)> = m.iter().map(|(k, v)| (k.clone(), *v)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let rest: usize = v.iter().skip(n).map(|x| x.1).sum();
    v.truncate(n);
    if rest > 0 {
        v.push(("(other messages)".into(), rest));
    }
    v
}

fn check_correct(s: &mut Section, id: &str, r: &SuiteRecord, ex: &Execution, want: u64) {
    if let Some(e) = ex.compile_errors.first() {
        s.add(
            C_CORRECT_REJECTED,
            Verdict::Fail,
            Some(format!("{id}: {e}")),
        );
        return;
    }
    let got = if ex.run_error.is_some() {
        None
    } else {
        Some(ex.test_values.last().copied().unwrap_or(0))
    };
    if got == Some(want) {
        s.add(C_EXACT, Verdict::Pass, None);
        return;
    }
    let shown = match got {
        Some(v) => format!("{v:#x}"),
        None => format!(
            "error `{}`",
            ex.run_error
                .as_ref()
                .map_or(String::new(), |e| e.message.clone())
        ),
    };
    match explain(&r.script, got) {
        Some(sem) => {
            let low32 = got.is_some_and(|g| g & 0xffff_ffff == want);
            let detail = format!(
                "{id}: expected {want:X}, hvscript {shown}: {}",
                describe(sem)
            );
            if low32 && !sem.hex_bare_digits && !sem.shift_count_error {
                s.add(C_LOW32, Verdict::Pass, Some(detail));
            } else {
                s.add(C_CAUSE, Verdict::Neutral, Some(detail));
            }
        }
        None => s.add(
            C_UNEXPLAINED,
            Verdict::Fail,
            Some(format!("{id}: expected {want:X}, hvscript {shown}")),
        ),
    }
}

fn check_wrong(
    s: &mut Section,
    id: &str,
    r: &SuiteRecord,
    ex: &Execution,
    reasons: &mut std::collections::BTreeMap<&'static str, (usize, usize)>,
    compile_msgs: &mut std::collections::BTreeMap<String, usize>,
    runtime_msgs: &mut std::collections::BTreeMap<String, usize>,
) {
    if let Some(e) = ex.compile_errors.first() {
        if e.is_located() {
            *compile_msgs.entry(generalize(&e.message)).or_default() += 1;
            s.add(W_COMPILE, Verdict::Pass, None);
        } else {
            s.add(
                W_UNLOCATED,
                Verdict::Fail,
                Some(format!("{id}: {}", e.message)),
            );
        }
        return;
    }
    if let Some(e) = &ex.run_error {
        *runtime_msgs.entry(generalize(&e.message)).or_default() += 1;
        s.add(W_RUNTIME, Verdict::Pass, None);
        return;
    }
    let last = ex.test_values.last().copied().unwrap_or(0);
    if let Some(w) = portability_warning(&record_script(r)) {
        s.add(W_PORTABLE, Verdict::Neutral, Some(format!("{id}: {w}")));
        return;
    }
    match generator_model::evaluate(&r.script) {
        Err(e) if csharp_only(e.kind) || assigns_register(&r.script, e.kind) => {
            let entry = reasons.entry(e.kind.label()).or_default();
            if last == 0 {
                entry.0 += 1;
            } else {
                entry.1 += 1;
            }
            s.add(
                W_CSHARP,
                Verdict::Neutral,
                Some(format!("{id}: last test_statement {last:#x}; C#: {e}")),
            );
        }
        Err(e) => s.add(
            W_SYNTAX,
            Verdict::Fail,
            Some(format!("{id}: C#: {e}; script: {}", r.script.trim())),
        ),
        Ok(v) => s.add(
            W_MODEL_OK,
            Verdict::Fail,
            Some(format!("{id}: model value {v:X}, hvscript {last:#x}")),
        ),
    }
}

/// The first portability warning of a script hvscript accepted (a form HyperDbg rejects).
pub fn portability_warning(src: &str) -> Option<String> {
    let script = hvscript_grammar::parse(src).ok()?;
    let w = hvscript_grammar::portability::check(&script, src);
    w.first().map(|d| {
        let (line, col) = hvscript_grammar::diagnostic::line_col(src, d.span.start as usize);
        format!("{line}:{col}: {}", d.message)
    })
}

/// Whether a C# `NotAssignable` refusal comes from the generator's substitution of a value for
/// a register or pseudo-register (`@rax--`, `@rax = …`): registers are assignable in HyperDbg.
pub fn assigns_register(script: &str, kind: ErrorKind) -> bool {
    if kind != ErrorKind::NotAssignable {
        return false;
    }
    let b = script.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'@' {
            let mut j = i + 1;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            let rest = script[j..].trim_start();
            let assign = rest.starts_with("++")
                || rest.starts_with("--")
                || (rest.starts_with('=') && !rest.starts_with("=="))
                || ["+=", "-=", "*=", "<<=", ">>=", "&=", "|=", "^="]
                    .iter()
                    .any(|op| rest.starts_with(op));
            if assign {
                return true;
            }
            i = j;
        } else {
            i += 1;
        }
    }
    false
}

/// A diagnostic message with quoted tokens and numbers folded, for histograms.
fn generalize(msg: &str) -> String {
    let mut out = String::new();
    let mut in_quote = false;
    for c in msg.chars() {
        if c == '`' {
            if !in_quote {
                out.push_str("`…`");
            }
            in_quote = !in_quote;
        } else if !in_quote {
            out.push(c);
        }
    }
    out
}
