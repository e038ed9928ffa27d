//! Differential testing with proptest: random well-formed scripts run on the interpreter
//! and on the JIT must give the same output, registers, globals, flags, test values and
//! errors (kind and span).
//!
//! A script is generated from a sequence of choices (a `Vec<u32>` proptest shrinks: fewer
//! and smaller choices give simpler scripts; an exhausted sequence always picks the
//! simplest option). Scripts cover arithmetic over every register name and width with
//! sub-register writes, shifts by large and negative counts, division and modulo by zero
//! and `MIN / -1`, nested loops with break/continue, globals, `event_sc`, memory built-ins
//! on local addresses (including stale slots of earlier frames), and recursive user
//! functions under small fuel, depth and stack limits. Each case runs twice with the same
//! globals and back-end state, so persistence and stack re-zeroing are compared too. The
//! cases are spread over the three optimisation levels.
//!
//! `HVSCRIPT_DIFF_CASES=N` sets the number of cases (default 2 000); the ignored test
//! `differential_100k` runs 100 000.

mod common;

use common::*;
use hvscript_abi::{PseudoReg, Register};
use hvscript_jit::{Jit, OptLevel};
use hvscript_lang::{compile_source, Globals, Limits, Stage};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

struct Gen<'a> {
    data: &'a [u32],
    pos: usize,
    out: String,
    /// Variables that may be read (all are assigned at the top of their scope).
    readable: Vec<String>,
    /// Variables that may be assigned.
    writable: Vec<String>,
    loop_depth: u32,
    /// Loop nesting limit and statements budget.
    budget: u32,
    funcs: usize,
    stage_post: bool,
    /// Typed `float`/`double` variables (v0.23); integer-typed ones are in `readable`.
    floats: Vec<String>,
    /// `ar0`, a local array of four elements, exists (v0.23).
    has_array: bool,
}

/// Integer types of the typed variables (each has its own width and signedness).
const INT_TYPES: &[&str] = &[
    "int",
    "unsigned int",
    "char",
    "unsigned char",
    "short",
    "unsigned short",
    "long",
    "unsigned long long",
    "bool",
];
const FLOAT_TYPES: &[&str] = &["float", "double"];
const FLOAT_LITERALS: &[&str] = &[
    "0.0",
    "1.5",
    ".5",
    "3.",
    "0.1",
    "1000000.25",
    "123456789.125",
    "0.000001",
    "65504.0",
    "16777217.0",
    "9007199254740993.0",
];

const INTERESTING: &[&str] = &[
    "0",
    "1",
    "2",
    "-1",
    "0x3f",
    "0x40",
    "0n64",
    "-0n64",
    "0x8000000000000000",
    "0x7fffffffffffffff",
    "0xffffffff",
    "0x100",
    "-0x80",
    "0n10",
    "0x10000",
    "0xdeadbeef",
];

const BINOPS: &[&str] = &["+", "-", "*", "/", "%", "<<", ">>", "&", "|", "^"];
const CMPS: &[&str] = &["==", "!=", "<", "<=", ">", ">="];

impl Gen<'_> {
    fn pick(&mut self, n: usize) -> usize {
        let v = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        v as usize % n.max(1)
    }

    fn raw(&mut self) -> u32 {
        let v = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        v
    }

    fn constant(&mut self) -> String {
        match self.pick(3) {
            0 | 1 => INTERESTING[self.pick(INTERESTING.len())].to_string(),
            _ => format!("0x{:x}", self.raw()),
        }
    }

    fn reg(&mut self) -> &'static str {
        Register::ALL[self.pick(Register::ALL.len())].name()
    }

    fn var(&mut self) -> String {
        if self.readable.is_empty() {
            return self.constant();
        }
        // An array element at a computed index (kept inside the array: the elements' own
        // loads and stores are what is compared, not faults).
        if self.has_array && self.pick(6) == 0 {
            let e = self.expr(0);
            return format!("ar0[({e}) & 3]");
        }
        let i = self.pick(self.readable.len());
        self.readable[i].clone()
    }

    fn expr(&mut self, depth: u32) -> String {
        let n = if depth == 0 { 5 } else { 12 };
        match self.pick(n) {
            0 => self.constant(),
            1 => self.var(),
            2 => format!("@{}", self.reg()),
            3 => format!(".g{}", self.pick(3)),
            4 => {
                let p = [
                    PseudoReg::Core,
                    PseudoReg::Context,
                    PseudoReg::EventId,
                    PseudoReg::EventStage,
                ];
                format!("${}", p[self.pick(p.len())].name())
            }
            5 => {
                let op = ["-", "~"][self.pick(2)];
                format!("{op}({})", self.expr(depth - 1))
            }
            6..=8 => {
                let op = BINOPS[self.pick(BINOPS.len())];
                let lhs = self.expr(depth - 1);
                // Shift counts and divisors: mostly in range, sometimes anything.
                let rhs = match (op, self.pick(4)) {
                    ("<<" | ">>", 1..=3) => format!("0x{:x}", self.pick(0x44)),
                    ("/" | "%", 1 | 2) => format!("(0x{:x} - {})", self.pick(6), self.pick(2)),
                    _ => self.expr(depth - 1),
                };
                format!("({lhs} {op} {rhs})")
            }
            9 => self.value_builtin(depth - 1),
            11 if !self.floats.is_empty() => {
                // A float converted to an integer type: truncation, or a range error.
                let t = INT_TYPES[self.pick(INT_TYPES.len())];
                format!("({t})({})", self.fexpr(depth - 1))
            }
            10 if self.funcs > 0 => {
                let f = self.pick(self.funcs);
                format!("fun{f}({}, {})", self.expr(depth - 1), self.expr(depth - 1))
            }
            _ => self.var(),
        }
    }

    /// A floating-point expression over the float variables (IEEE in both back ends; an
    /// infinite or NaN result, or a division by zero, stops the script).
    fn fexpr(&mut self, depth: u32) -> String {
        let n = if depth == 0 { 3 } else { 7 };
        match self.pick(n) {
            0 if !self.floats.is_empty() => {
                let i = self.pick(self.floats.len());
                self.floats[i].clone()
            }
            0 | 1 => {
                let lit = FLOAT_LITERALS[self.pick(FLOAT_LITERALS.len())];
                if self.pick(3) == 0 {
                    format!("-{lit}")
                } else {
                    lit.to_string()
                }
            }
            2 => {
                let t = FLOAT_TYPES[self.pick(2)];
                format!("({t})({})", self.expr(depth.min(1)))
            }
            3 => format!("-({})", self.fexpr(depth - 1)),
            _ => {
                let op = ["+", "-", "*", "/"][self.pick(4)];
                format!("({} {op} {})", self.fexpr(depth - 1), self.fexpr(depth - 1))
            }
        }
    }

    fn local_addr(&mut self) -> String {
        if self.readable.is_empty() {
            return "0x2000".to_string();
        }
        let v = self.var();
        match self.pick(4) {
            // Pointer arithmetic counts elements (v0.23): up to 24 slots past the variable.
            0 => format!("&{v} + 0x{:x}", self.pick(24)),
            _ => format!("&{v}"),
        }
    }

    fn value_builtin(&mut self, depth: u32) -> String {
        match self.pick(9) {
            0 => format!("poi({})", self.local_addr()),
            1 => format!("db({})", self.local_addr()),
            2 => format!("dq(0x2000 + {})", 8 * self.pick(40)),
            3 => format!("neg({})", self.expr(depth)),
            4 => format!("not({})", self.expr(depth)),
            5 => format!("interlocked_increment(&.g{})", self.pick(3)),
            6 => format!(
                "interlocked_exchange_add({}, {})",
                self.local_addr(),
                self.expr(depth)
            ),
            7 => "strlen(\"hello\")".to_string(),
            _ => format!("dd({})", self.expr(depth)),
        }
    }

    fn cond(&mut self, depth: u32) -> String {
        match self.pick(if depth == 0 { 2 } else { 5 }) {
            0 => self.expr(2),
            1 => {
                let op = CMPS[self.pick(CMPS.len())];
                format!("{} {op} {}", self.expr(2), self.expr(2))
            }
            2 => format!("{} && {}", self.cond(depth - 1), self.cond(depth - 1)),
            3 => format!("{} || {}", self.cond(depth - 1), self.cond(depth - 1)),
            _ => format!("!({})", self.cond(depth - 1)),
        }
    }

    fn line(&mut self, indent: usize, s: &str) {
        for _ in 0..indent {
            self.out.push_str("  ");
        }
        self.out.push_str(s);
        self.out.push('\n');
    }

    fn block(&mut self, indent: usize, max: usize) {
        let n = self.pick(max + 1);
        for _ in 0..n {
            if self.budget == 0 {
                break;
            }
            self.budget -= 1;
            self.stmt(indent);
        }
    }

    fn stmt(&mut self, indent: usize) {
        let choice = self.pick(16);
        match choice {
            0..=2 => {
                let i = self.pick(self.writable.len());
                let v = self.writable[i].clone();
                let op = ["=", "+=", "-=", "<<=", "^="][self.pick(5)];
                let e = if op == "<<=" {
                    format!("0x{:x}", self.pick(0x42))
                } else {
                    self.expr(3)
                };
                self.line(indent, &format!("{v} {op} {e};"));
            }
            3 | 4 => {
                let (r, e) = (self.reg(), self.expr(3));
                self.line(indent, &format!("@{r} = {e};"));
            }
            5 => {
                let (g, e) = (self.pick(3), self.expr(3));
                self.line(indent, &format!(".g{g} = {e};"));
            }
            6 | 7 => {
                let c = self.cond(2);
                self.line(indent, &format!("if ({c}) {{"));
                self.block(indent + 1, 3);
                match self.pick(3) {
                    0 => self.line(indent, "}"),
                    1 => {
                        self.line(indent, "} else {");
                        self.block(indent + 1, 3);
                        self.line(indent, "}");
                    }
                    _ => {
                        let c = self.cond(1);
                        self.line(indent, &format!("}} elsif ({c}) {{"));
                        self.block(indent + 1, 3);
                        self.line(indent, "} else {");
                        self.block(indent + 1, 2);
                        self.line(indent, "}");
                    }
                }
            }
            8 if self.loop_depth < 3 => {
                let lv = format!("i{}", self.loop_depth);
                let n = self.pick(12);
                self.line(indent, &format!("for ({lv} = 0; {lv} < 0n{n}; {lv}++) {{"));
                self.readable.push(lv);
                self.loop_depth += 1;
                self.block(indent + 1, 4);
                self.loop_depth -= 1;
                self.readable.pop();
                self.line(indent, "}");
            }
            9 if self.loop_depth < 3 => {
                let c = self.cond(1);
                let do_while = self.pick(2) == 0;
                self.line(indent, if do_while { "do {" } else { "" });
                if !do_while {
                    self.line(indent, &format!("while ({c}) {{"));
                }
                self.loop_depth += 1;
                self.block(indent + 1, 4);
                self.loop_depth -= 1;
                if do_while {
                    self.line(indent, &format!("}} while ({c});"));
                } else {
                    self.line(indent, "}");
                }
            }
            10 if self.loop_depth > 0 => {
                let kw = ["break;", "continue;"][self.pick(2)];
                let c = self.cond(1);
                self.line(indent, &format!("if ({c}) {{ {kw} }}"));
            }
            11 => {
                let (a, b) = (self.expr(2), self.expr(2));
                self.line(indent, &format!("printf(\"%llx %d\\n\", {a}, {b});"));
            }
            12 if !self.stage_post => {
                let e = self.expr(1);
                self.line(indent, &format!("event_sc({e});"));
            }
            13 => {
                let (a, e) = (self.local_addr(), self.expr(2));
                let f = ["eq", "eb", "ed"][self.pick(3)];
                self.line(indent, &format!("{f}({a}, {e});"));
            }
            14 => {
                let e = self.expr(3);
                self.line(indent, &format!("test_statement({e});"));
            }
            15 if !self.floats.is_empty() => match self.pick(3) {
                0 => {
                    let e = self.fexpr(2);
                    self.line(
                        indent,
                        &format!("printf(\"%f %.3e %g\\n\", {e}, {e}, {e});"),
                    );
                }
                1 => {
                    let (a, b) = (self.fexpr(2), self.fexpr(2));
                    let op = CMPS[self.pick(CMPS.len())];
                    self.line(
                        indent,
                        &format!("if ({a} {op} {b}) {{ print(1); }} else {{ print(2); }}"),
                    );
                }
                _ => {
                    let i = self.pick(self.floats.len());
                    let v = self.floats[i].clone();
                    let e = self.fexpr(3);
                    self.line(indent, &format!("{v} = {e};"));
                }
            },
            _ => {
                let e = self.expr(2);
                self.line(indent, &format!("print({e});"));
            }
        }
    }
}

/// Builds a script from `choices`.
fn script(choices: &[u32], stage_post: bool) -> String {
    let mut g = Gen {
        data: choices,
        pos: 0,
        out: String::new(),
        readable: Vec::new(),
        writable: Vec::new(),
        loop_depth: 0,
        budget: 40,
        funcs: 0,
        stage_post,
        floats: Vec::new(),
        has_array: false,
    };
    // Globals first (a global must be assigned before it is read).
    for i in 0..3 {
        let c = g.constant();
        g.line(0, &format!(".g{i} = {c};"));
    }
    // User functions; each may call itself and the earlier ones.
    let nfuncs = g.pick(3);
    for f in 0..nfuncs {
        g.funcs = f + 1;
        g.readable = vec!["p0".into(), "p1".into()];
        g.writable = vec!["y0".into()];
        g.line(0, &format!("int fun{f}(int p0, int p1) {{"));
        let e = g.expr(2);
        g.line(1, &format!("y0 = {e};"));
        g.readable.push("y0".into());
        g.writable.extend(["p0".into(), "p1".into()]);
        g.budget = 8;
        g.block(1, 4);
        let e = g.expr(2);
        g.line(1, &format!("return {e};"));
        g.line(0, "}");
    }
    g.funcs = nfuncs;
    g.readable.clear();
    g.writable.clear();
    for v in 0..4 {
        let e = g.expr(2);
        g.line(0, &format!("x{v} = {e};"));
        g.readable.push(format!("x{v}"));
        g.writable.push(format!("x{v}"));
    }
    // Typed variables (v0.23): integers of every width join the integer expressions (their
    // stores truncate); floats and doubles get their own expressions and statements.
    for v in 0..g.pick(4) {
        let t = INT_TYPES[g.pick(INT_TYPES.len())];
        let e = g.expr(2);
        g.line(0, &format!("{t} t{v} = {e};"));
        g.readable.push(format!("t{v}"));
        g.writable.push(format!("t{v}"));
    }
    for v in 0..g.pick(3) {
        let t = FLOAT_TYPES[g.pick(2)];
        let e = g.fexpr(2);
        g.line(0, &format!("{t} fv{v} = {e};"));
        g.floats.push(format!("fv{v}"));
    }
    // Aggregates (v0.23): an array of one integer type and a struct with members of
    // several widths (packed with padding), read and written through indexes, `.`, `->`
    // and pointers to elements; their elements join the integer places.
    if g.pick(2) == 0 {
        let t = INT_TYPES[g.pick(INT_TYPES.len())];
        let n = g.pick(5);
        let vals: Vec<String> = (0..n).map(|_| g.expr(1)).collect();
        g.line(0, &format!("{t} ar0[4] = {{{}}};", vals.join(", ")));
        g.has_array = true;
        for place in ["ar0[0]", "ar0[3]", "*(ar0 + 2)"] {
            g.readable.push(place.into());
            g.writable.push(place.into());
        }
    }
    if g.pick(2) == 0 {
        g.line(
            0,
            "struct Rec { char m0; int m1; short m2[3]; unsigned long long m3; bool m4; };",
        );
        let n = g.pick(8);
        let vals: Vec<String> = (0..n).map(|_| g.expr(1)).collect();
        g.line(0, &format!("struct Rec rec = {{{}}};", vals.join(", ")));
        // `->` through `(&rec)`, not a pointer variable: `eb(&x + k, ..)` may overwrite any
        // stack slot, and a corrupted pointer would fault or not depending on where each
        // back end's stack happens to sit in host memory.
        for place in [
            "rec.m0",
            "(&rec)->m1",
            "rec.m2[1]",
            "(&rec)->m2[2]",
            "rec.m3",
            "(&rec)->m4",
        ] {
            g.readable.push(place.into());
            g.writable.push(place.into());
        }
    }
    g.budget = 40;
    g.block(0, 14);
    g.out
}

fn setup(choices: &[u32]) -> Setup {
    let mut s = Setup::default();
    let h = choices.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, &c| {
        (h ^ c as u64).wrapping_mul(0x0000_0100_0000_01b3)
    });
    for (i, slot) in s.regs.slots_mut().iter_mut().enumerate() {
        *slot = h.rotate_left(i as u32 * 7) ^ (i as u64) << 56;
    }
    s.env.memory.load(
        0x2000,
        &(0..0x200u32).map(|i| (i * 37) as u8).collect::<Vec<_>>(),
    );
    s.pseudo.set(PseudoReg::Core, h & 7);
    s.pseudo.set(PseudoReg::Context, h >> 3);
    s.pseudo.set(PseudoReg::EventId, 1);
    s.limits = Limits {
        fuel: [3000, 200, 20000][(h % 3) as usize],
        max_call_depth: [64, 4, 256][((h >> 8) % 3) as usize],
        stack_slots: [256, 24, 4096][((h >> 16) % 3) as usize],
    };
    s.runs = 2;
    if (h >> 24) % 4 == 0 {
        s = s.stage(Stage::Post);
    }
    s
}

/// Runs `cases` random scripts; returns (compiled, rejected by the front end).
fn differential(cases: u32) -> (u64, u64) {
    // Every optimisation level takes its share of the cases.
    let jits = [OptLevel::Fast, OptLevel::None, OptLevel::Speed]
        .map(|o| std::cell::RefCell::new(Jit::with_opt_level(o).unwrap()));
    let compiled = std::cell::Cell::new(0u64);
    let rejected = std::cell::Cell::new(0u64);
    let outcomes = std::cell::RefCell::new(std::collections::BTreeMap::<String, u64>::new());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(any::<u32>(), 0..600);
    let result = runner.run(&strategy, |choices| {
        let setup = setup(&choices);
        let post = setup.env.stage == Stage::Post;
        let src = script(&choices, post);
        let jit = &jits[choices.len() % jits.len()];
        match run_both(&mut jit.borrow_mut(), &src, &setup) {
            None => {
                rejected.set(rejected.get() + 1);
                let errs = compile_source(&src, &Globals::default(), &setup.options).err();
                // Rare, legitimate rejections only (e.g. a constant shift the checker folds).
                let msg = errs.map(|e| e[0].message.clone()).unwrap_or_default();
                prop_assert!(
                    !msg.contains("unexpected") && !msg.contains("before it is assigned"),
                    "generator produced invalid syntax: {msg}\n{src}"
                );
                Ok(())
            }
            Some((a, b)) => {
                compiled.set(compiled.get() + 1);
                let key = match &a.result {
                    Ok(_) => "ok".to_string(),
                    Err(e) => format!("{:?}", e.kind)
                        .split(['(', ' ', '{'])
                        .next()
                        .unwrap_or("")
                        .to_string(),
                };
                *outcomes.borrow_mut().entry(key).or_default() += 1;
                if a != b {
                    return Err(TestCaseError::fail(format!(
                        "interpreter vs JIT differ on:\n{src}\ninterp: {a:?}\njit:    {b:?}"
                    )));
                }
                Ok(())
            }
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    println!("outcomes: {:?}", outcomes.borrow());
    (compiled.get(), rejected.get())
}

fn case_count(default: u32) -> u32 {
    std::env::var("HVSCRIPT_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn differential_default() {
    let n = case_count(2000);
    let t = std::time::Instant::now();
    let (compiled, rejected) = differential(n);
    println!(
        "differential: {n} cases ({compiled} compiled, {rejected} rejected by the front end) in {:.1?}",
        t.elapsed()
    );
    assert!(
        compiled * 10 >= n as u64 * 9,
        "too many rejected scripts: {rejected}"
    );
}

#[test]
#[ignore = "long: 100 000 cases (cargo test --release -p hvscript-jit --test differential -- --ignored)"]
fn differential_100k() {
    let t = std::time::Instant::now();
    let (compiled, rejected) = differential(100_000);
    println!(
        "differential: 100000 cases ({compiled} compiled, {rejected} rejected by the front end) in {:.1?}",
        t.elapsed()
    );
}

#[test]
fn generator_examples_compile() {
    // A few fixed choice sequences, printed for inspection with --nocapture.
    for seed in 0..5u32 {
        let choices: Vec<u32> = (0..300)
            .map(|i: u32| i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97) >> 7)
            .collect();
        let src = script(&choices, false);
        println!("--- seed {seed}\n{src}");
        assert!(
            compile_source(&src, &Globals::default(), &Default::default()).is_ok(),
            "{src}"
        );
    }
}
