//! Differential testing with proptest: random well-formed scripts run on the interpreter
//! and on the JIT must give the same output, registers, globals, flags, test values and
//! errors (kind and span).
//!
//! A script is generated from a sequence of choices (a `Vec<u32>` proptest shrinks: fewer
//! and smaller choices give simpler scripts; an exhausted sequence always picks the
//! simplest option). Scripts cover arithmetic over every register name and width with
//! sub-register writes, shifts, division and modulo, nested loops with break/continue,
//! globals, `event_sc`, memory built-ins on local addresses (including stale slots of
//! earlier frames), user functions, typed variables, floats, arrays and structs; guest
//! memory read and written by `dq dd dw db poi eq ed eb` and typed pointers, on pages of
//! the simulated guest that are mapped (so accesses hit and miss the JIT's translation
//! cache, pages evict each other from it, and accesses straddle pages); and `printf` with
//! every conversion (`%s`/`%ws` of guest strings and literals included).
//!
//! Most scripts run to their end: faults are generated on purpose but rarely (a shift
//! count out of range, a zero divisor, an unmapped address, unbounded recursion or loops,
//! small fuel, depth and stack limits), so the paths a normal run takes are what is
//! compared. Each case runs twice with the same globals, memory and back-end state, so
//! persistence, stack re-zeroing and the cache's reuse across runs are compared too. The
//! cases are spread over the three optimisation levels. The test prints the outcome counts
//! and how many scripts use each feature.
//!
//! `HVSCRIPT_DIFF_CASES=N` sets the number of cases (default 2 000); the ignored test
//! `differential_long` runs `HVSCRIPT_DIFF_CASES` or 1 000 000
//! (`cargo test --release -p hvscript-jit --test differential -- --ignored --nocapture`).

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
    /// The typed pointers into guest memory `gp0..gp3` exist.
    guest_ptrs: bool,
    /// `struct Rec` is declared (so guest memory can be read as one).
    has_struct: bool,
    /// Features the script has, for the test's summary.
    features: Features,
}

/// What a generated script exercises (counted over all cases by the test).
#[derive(Clone, Copy, Debug, Default)]
struct Features {
    guest_read: bool,
    guest_write: bool,
    straddle: bool,
    evicting_page: bool,
    printf: bool,
    printf_string: bool,
    printf_float: bool,
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

/// Guest memory the setup maps: `GUEST_PAGES` pages of data at `GUEST`, one page at
/// `EVICT` (in the same translation-cache entry as `GUEST`'s first page, so the two evict
/// each other), narrow strings at `STRINGS` and UTF-16 strings at `WSTRINGS` (in the same
/// entry again). Nothing else is mapped but the old 0x2000 block.
const GUEST: u64 = 0x10000;
const GUEST_PAGES: u64 = 4;
const EVICT: u64 = 0x20000;
const STRINGS: u64 = 0x30000;
const WSTRINGS: u64 = 0x31000;
/// The narrow strings: every offset below 0x40 starts a string that ends inside the page.
const STRING_TEXT: &[u8] = b"hello\0world\0%d not a format\0\0tab\there\0longer string here\0";

/// printf conversions: (spec, kind of argument).
#[derive(Clone, Copy, PartialEq)]
enum ArgKind {
    Int,
    Char,
    Str,
    WStr,
    Float,
    None,
}
const SPECS: &[(&str, ArgKind)] = &[
    ("%d", ArgKind::Int),
    ("%i", ArgKind::Int),
    ("%u", ArgKind::Int),
    ("%o", ArgKind::Int),
    ("%x", ArgKind::Int),
    ("%X", ArgKind::Int),
    ("%hd", ArgKind::Int),
    ("%hu", ArgKind::Int),
    ("%hx", ArgKind::Int),
    ("%ld", ArgKind::Int),
    ("%lu", ArgKind::Int),
    ("%lx", ArgKind::Int),
    ("%lld", ArgKind::Int),
    ("%llu", ArgKind::Int),
    ("%llx", ArgKind::Int),
    ("%llX", ArgKind::Int),
    ("%llo", ArgKind::Int),
    ("%p", ArgKind::Int),
    ("%c", ArgKind::Char),
    ("%s", ArgKind::Str),
    ("%ls", ArgKind::WStr),
    ("%ws", ArgKind::WStr),
    ("%f", ArgKind::Float),
    ("%F", ArgKind::Float),
    ("%e", ArgKind::Float),
    ("%E", ArgKind::Float),
    ("%g", ArgKind::Float),
    ("%G", ArgKind::Float),
    ("%lf", ArgKind::Float),
    ("%.2f", ArgKind::Float),
    ("%.0e", ArgKind::Float),
    ("%.10g", ArgKind::Float),
    ("%%", ArgKind::None),
];

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
        if self.guest_ptrs && self.pick(10) == 0 {
            self.features.guest_read = true;
            return self.guest_place();
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
                // Shift counts and divisors: in range (32-bit types take counts below 32),
                // and now and then anything, for the errors.
                // (Choice 0, what an exhausted sequence picks, is a safe one.)
                let rhs = match (op, self.pick(48)) {
                    ("<<" | ">>", 0..=20) => format!("0x{:x}", self.pick(0x20)),
                    ("<<" | ">>", 21..=45) => format!("({} & 0x1f)", self.expr(depth - 1)),
                    ("<<" | ">>", 46) => format!("0x{:x}", self.pick(0x44)),
                    ("/" | "%", 0..=20) => format!("0x{:x}", 1 + self.pick(0x20)),
                    ("/" | "%", 21..=46) => format!("({} | 1)", self.expr(depth - 1)),
                    _ => self.expr(depth - 1),
                };
                format!("({lhs} {op} {rhs})")
            }
            9 => self.value_builtin(depth - 1),
            11 if !self.floats.is_empty() && self.pick(4) == 3 => {
                // A float converted to an integer type: truncation, or (mostly for the
                // narrow types) a range error.
                let t = if self.pick(6) == 0 {
                    INT_TYPES[self.pick(INT_TYPES.len())]
                } else {
                    "long"
                };
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
                // Mostly a small integer, so float results stay convertible back.
                let t = FLOAT_TYPES[self.pick(2)];
                let e = self.expr(depth.min(1));
                if self.pick(6) == 5 {
                    format!("({t})({e})")
                } else {
                    format!("({t})(({e}) & 0xfffff)")
                }
            }
            3 => format!("-({})", self.fexpr(depth - 1)),
            _ => {
                let op = ["+", "-", "*", "/"][self.pick(4)];
                let (a, b) = (self.fexpr(depth - 1), self.fexpr(depth - 1));
                if op == "/" && self.pick(8) != 0 {
                    // Mostly a divisor away from zero.
                    format!("({a} / (({b}) * ({b}) + 0.5))")
                } else {
                    format!("({a} {op} {b})")
                }
            }
        }
    }

    /// A guest address for a `width`-byte access: mostly inside the mapped pages (aligned,
    /// unaligned, across a page boundary, on the page that evicts the first one), rarely
    /// anywhere.
    fn guest_addr(&mut self, width: u64) -> String {
        let span = GUEST_PAGES * 0x1000;
        match self.pick(20) {
            0..=9 => {
                let e = self.expr(1);
                format!("(0x{GUEST:x} + (({e}) & 0x{:x}))", (span - 1) & !7)
            }
            10..=12 => {
                // Unaligned, anywhere in the pages that have a mapped page after them.
                let e = self.expr(1);
                format!("(0x{GUEST:x} + (({e}) & 0x{:x}))", span / 2 - 1)
            }
            13..=15 => {
                // Across the end of a page into the next mapped one.
                self.features.straddle |= width > 1;
                let page = GUEST + 0x1000 * self.pick(GUEST_PAGES as usize - 1) as u64;
                let back = 1 + self.pick(width.max(2) as usize - 1) as u64;
                format!("0x{:x}", page + 0x1000 - back)
            }
            16..=18 => {
                self.features.evicting_page = true;
                let e = self.expr(1);
                format!("(0x{EVICT:x} + (({e}) & 0xff8))")
            }
            _ => self.expr(1),
        }
    }

    /// A guest read: a built-in or a typed pointer.
    fn guest_read(&mut self) -> String {
        self.features.guest_read = true;
        let (f, w) = [("dq", 8), ("poi", 8), ("dd", 4), ("dw", 2), ("db", 1)][self.pick(5)];
        if self.guest_ptrs && self.pick(3) == 0 {
            return self.guest_place();
        }
        if self.has_struct && self.pick(8) == 0 {
            let a = self.guest_addr(8);
            let m = ["m0", "m1", "m2[1]", "m3", "m4"][self.pick(5)];
            return format!("((struct Rec *) ({a}))->{m}");
        }
        let a = self.guest_addr(w);
        format!("{f}({a})")
    }

    /// A typed place in guest memory through one of `gp0..gp3`.
    fn guest_place(&mut self) -> String {
        // (pointer, element bytes)
        let (p, w) = [("gp0", 1u64), ("gp1", 2), ("gp2", 4), ("gp3", 8)][self.pick(4)];
        let count = GUEST_PAGES * 0x1000 / w;
        match self.pick(8) {
            0 => {
                self.features.straddle |= w > 1;
                // An element straddling a page: one byte before the page end.
                let page = 1 + self.pick(GUEST_PAGES as usize - 1) as u64;
                format!(
                    "*(({}) (0x{:x}))",
                    ["unsigned char *", "short *", "unsigned int *", "long *"]
                        [w.trailing_zeros() as usize],
                    GUEST + page * 0x1000 - 1
                )
            }
            _ => {
                let e = self.expr(1);
                format!("{p}[({e}) & 0x{:x}]", count - 1)
            }
        }
    }

    /// A printf argument of `kind`.
    fn printf_arg(&mut self, kind: ArgKind) -> Option<String> {
        Some(match kind {
            ArgKind::Int => self.expr(2),
            ArgKind::Char => format!("(({}) & 0x3f) + 0x30", self.expr(1)),
            // printf takes strings by address only.
            ArgKind::Str => {
                self.features.printf_string = true;
                format!("0x{STRINGS:x} + (({}) & 0x3f)", self.expr(1))
            }
            ArgKind::WStr => {
                self.features.printf_string = true;
                format!("0x{WSTRINGS:x} + (({}) & 0x3e)", self.expr(1))
            }
            ArgKind::Float => {
                self.features.printf_float = true;
                if !self.floats.is_empty() && self.pick(2) == 0 {
                    format!("(double)({})", self.fexpr(2))
                } else {
                    format!("(double)({})", self.expr(2))
                }
            }
            ArgKind::None => return None,
        })
    }

    /// A printf of the given conversions, with text between them.
    fn printf(&mut self, specs: &[(&str, ArgKind)]) -> String {
        self.features.printf = true;
        let mut fmt = String::new();
        let mut args = Vec::new();
        for (i, (spec, kind)) in specs.iter().enumerate() {
            if i > 0 {
                fmt.push_str([" ", ",", " [", "] "][i % 4]);
            }
            fmt.push_str(spec);
            args.extend(self.printf_arg(*kind));
        }
        fmt.push_str("\\n");
        if args.is_empty() {
            format!("printf(\"{fmt}\");")
        } else {
            format!("printf(\"{fmt}\", {});", args.join(", "))
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
        match self.pick(12) {
            9..=11 => self.guest_read(),
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
            _ => format!("strlen(0x{STRINGS:x} + (({}) & 0x3f))", self.expr(depth)),
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
        let choice = self.pick(18);
        match choice {
            0..=2 => {
                let i = self.pick(self.writable.len());
                let v = self.writable[i].clone();
                let op = ["=", "+=", "-=", "<<=", "^="][self.pick(5)];
                let e = if op == "<<=" {
                    // Below 32 (typed 32-bit variables), now and then up to 0x41.
                    let n = if self.pick(16) == 15 { 0x42 } else { 0x20 };
                    format!("0x{:x}", self.pick(n))
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
                // Mostly bounded by a counter (the random condition then exits early);
                // now and then only by the condition, which may never turn false.
                let bounded = self.pick(12) != 0;
                let w = format!("w{}", self.loop_depth);
                let n = 1 + self.pick(8);
                if bounded {
                    self.line(indent, &format!("{w} = 0;"));
                }
                let test = if bounded {
                    format!("{w} < 0n{n}")
                } else {
                    c.clone()
                };
                if do_while {
                    self.line(indent, "do {");
                } else {
                    self.line(indent, &format!("while ({test}) {{"));
                }
                self.loop_depth += 1;
                if bounded {
                    self.line(indent + 1, &format!("{w}++;"));
                    if self.pick(2) == 0 {
                        self.line(indent + 1, &format!("if ({c}) {{ break; }}"));
                    }
                    self.readable.push(w);
                }
                self.block(indent + 1, 4);
                if bounded {
                    self.readable.pop();
                }
                self.loop_depth -= 1;
                if do_while {
                    self.line(indent, &format!("}} while ({test});"));
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
                let n = 1 + self.pick(4);
                let specs: Vec<_> = (0..n).map(|_| SPECS[self.pick(SPECS.len())]).collect();
                let p = self.printf(&specs);
                self.line(indent, &p);
            }
            12 if !self.stage_post => {
                let e = self.expr(1);
                self.line(indent, &format!("event_sc({e});"));
            }
            13 if self.pick(3) == 2 => {
                let (a, e) = (self.local_addr(), self.expr(2));
                let f = ["eq", "eb", "ed"][self.pick(3)];
                self.line(indent, &format!("{f}({a}, {e});"));
            }
            13 | 16 | 17 => {
                // A guest write: a built-in (its result kept: 0 where nothing is mapped) or
                // a typed store.
                self.features.guest_write = true;
                if self.guest_ptrs && self.pick(3) == 0 {
                    let (place, e) = (self.guest_place(), self.expr(2));
                    self.line(indent, &format!("{place} = {e};"));
                } else {
                    let (f, w) = [("eq", 8), ("ed", 4), ("eb", 1)][self.pick(3)];
                    let (a, e) = (self.guest_addr(w), self.expr(2));
                    let i = self.pick(self.writable.len());
                    let v = self.writable[i].clone();
                    self.line(indent, &format!("{v} = {f}({a}, {e});"));
                }
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

/// Builds a script from `choices`, with what it exercises.
fn script(choices: &[u32], stage_post: bool) -> (String, Features) {
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
        guest_ptrs: false,
        has_struct: false,
        features: Features::default(),
    };
    // Globals first (a global must be assigned before it is read).
    for i in 0..3 {
        let c = g.constant();
        g.line(0, &format!(".g{i} = {c};"));
    }
    // User functions; each may call the earlier ones, and a few themselves (which may
    // recurse until a limit stops them).
    let nfuncs = g.pick(3);
    for f in 0..nfuncs {
        g.funcs = if g.pick(8) == 0 { f + 1 } else { f };
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
    // Typed pointers into guest memory, one per width (never set to a stack address, so a
    // stray `eb(&x + k, ..)` over one points it at the same guest address on both back
    // ends).
    if g.pick(4) != 3 {
        for (i, t) in ["unsigned char", "short", "unsigned int", "long"]
            .iter()
            .enumerate()
        {
            g.line(0, &format!("{t} *gp{i} = ({t} *) 0x{GUEST:x};"));
        }
        g.guest_ptrs = true;
    }
    if g.pick(2) == 0 {
        g.line(
            0,
            "struct Rec { char m0; int m1; short m2[3]; unsigned long long m3; bool m4; };",
        );
        g.has_struct = true;
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
    // Guest memory in most scripts: reads and a write on the data pages (the first access
    // to a page misses the JIT's cache, the next ones hit), a read across a page end, and
    // a read of the page that evicts the first data page from the cache.
    if g.pick(8) != 7 {
        let e: Vec<String> = (0..5).map(|_| g.expr(1)).collect();
        let page = g.pick(GUEST_PAGES as usize - 1) as u64;
        g.line(
            0,
            &format!(
                "x0 = x0 + dq(0x{GUEST:x} + (({}) & 0x3ff8)) + dd(0x{GUEST:x} + (({}) & 0x3ffc));",
                e[0], e[1]
            ),
        );
        g.line(0, &format!("eq(0x{GUEST:x} + (({}) & 0x3ff8), x1);", e[2]));
        g.line(
            0,
            &format!(
                "x3 = x3 ^ dw(0x{:x}) ^ dq(0x{EVICT:x} + (({}) & 0xff8)) ^ dq(0x{GUEST:x} + (({}) & 0xff8));",
                GUEST + page * 0x1000 + 0xfff,
                e[3],
                e[4]
            ),
        );
        let f = &mut g.features;
        f.guest_read = true;
        f.guest_write = true;
        f.straddle = true;
        f.evicting_page = true;
    }
    g.budget = 40;
    g.block(0, 14);
    // Every conversion, for most scripts (an exhausted choice sequence picks 0: print).
    if g.pick(8) != 7 {
        for chunk in SPECS.chunks(11) {
            let p = g.printf(chunk);
            g.line(0, &p);
        }
    }
    (g.out, g.features)
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
    let data = |len: u64, seed: u64| -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(0x9e37_79b9) >> 7 ^ seed) as u8)
            .collect()
    };
    s.env
        .memory
        .load(GUEST, &data(GUEST_PAGES * 0x1000, h & 0xff));
    s.env.memory.load(EVICT, &data(0x1000, h >> 8 & 0xff));
    s.env.memory.map(STRINGS, 0x1000);
    s.env.memory.load(STRINGS, STRING_TEXT);
    s.env.memory.map(WSTRINGS, 0x1000);
    let wide: Vec<u8> = "wide\0\u{e9}t\u{e9}\0UTF-16 text\0\0"
        .encode_utf16()
        .cycle()
        .take(0x40)
        .flat_map(|u| u.to_le_bytes())
        .collect();
    s.env.memory.load(WSTRINGS, &wide);
    s.pseudo.set(PseudoReg::Core, h & 7);
    s.pseudo.set(PseudoReg::Context, h >> 3);
    s.pseudo.set(PseudoReg::EventId, 1);
    // Mostly roomy limits; the small ones now and then, for their errors.
    let pick = |shift: u32, roomy: [u64; 2], small: u64| {
        let r = (h >> shift) % 16;
        if r == 0 {
            small
        } else {
            roomy[(r % 2) as usize]
        }
    };
    s.limits = Limits {
        fuel: pick(0, [3000, 20000], 200),
        max_call_depth: pick(8, [64, 256], 4) as u32,
        stack_slots: pick(16, [256, 4096], 24) as usize,
    };
    s.runs = 2;
    if (h >> 24) % 4 == 0 {
        s = s.stage(Stage::Post);
    }
    s
}

/// What a run of the differential test saw.
#[derive(Debug, Default)]
struct Summary {
    cases: u64,
    /// Rejected by the front end (rare, legitimate: e.g. a constant shift it folds).
    rejected: u64,
    /// How the interpreter's run ended, per compiled case: `ok` or the error kind.
    outcomes: std::collections::BTreeMap<String, u64>,
    /// Compiled cases whose script has each feature.
    guest_read: u64,
    guest_write: u64,
    straddle: u64,
    evicting_page: u64,
    printf: u64,
    printf_string: u64,
    printf_float: u64,
}

impl Summary {
    fn compiled(&self) -> u64 {
        self.cases - self.rejected
    }

    fn completed(&self) -> u64 {
        self.outcomes.get("ok").copied().unwrap_or(0)
    }

    fn report(&self, elapsed: std::time::Duration) {
        let pct = |n: u64| 100.0 * n as f64 / self.compiled().max(1) as f64;
        println!(
            "differential: {} cases ({} compiled, {} rejected by the front end) in {elapsed:.1?}",
            self.cases,
            self.compiled(),
            self.rejected
        );
        println!(
            "  completed normally: {} ({:.1}%)",
            self.completed(),
            pct(self.completed())
        );
        for (kind, n) in &self.outcomes {
            if kind != "ok" {
                println!("  stopped by {kind}: {n} ({:.2}%)", pct(*n));
            }
        }
        for (name, n) in [
            ("guest reads", self.guest_read),
            ("guest writes", self.guest_write),
            ("page-straddling accesses", self.straddle),
            ("a page evicting another from the cache", self.evicting_page),
            ("printf", self.printf),
            ("printf %s/%ws", self.printf_string),
            ("printf of floats", self.printf_float),
        ] {
            println!("  scripts with {name}: {n} ({:.1}%)", pct(n));
        }
    }
}

/// Runs `cases` random scripts.
fn differential(cases: u32) -> Summary {
    // Every optimisation level takes its share of the cases.
    let jits = [OptLevel::Fast, OptLevel::None, OptLevel::Speed]
        .map(|o| std::cell::RefCell::new(Jit::with_opt_level(o).unwrap()));
    let summary = std::cell::RefCell::new(Summary {
        cases: cases as u64,
        ..Summary::default()
    });
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = proptest::collection::vec(any::<u32>(), 0..600);
    let result = runner.run(&strategy, |choices| {
        let setup = setup(&choices);
        let post = setup.env.stage == Stage::Post;
        let (src, features) = script(&choices, post);
        let jit = &jits[choices.len() % jits.len()];
        match run_both(&mut jit.borrow_mut(), &src, &setup) {
            None => {
                summary.borrow_mut().rejected += 1;
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
                let key = match &a.result {
                    Ok(_) => "ok".to_string(),
                    Err(e) => format!("{:?}", e.kind)
                        .split(['(', ' ', '{'])
                        .next()
                        .unwrap_or("")
                        .to_string(),
                };
                let mut guard = summary.borrow_mut();
                let sum = &mut *guard;
                *sum.outcomes.entry(key).or_default() += 1;
                let f = features;
                for (has, count) in [
                    (f.guest_read, &mut sum.guest_read),
                    (f.guest_write, &mut sum.guest_write),
                    (f.straddle, &mut sum.straddle),
                    (f.evicting_page, &mut sum.evicting_page),
                    (f.printf, &mut sum.printf),
                    (f.printf_string, &mut sum.printf_string),
                    (f.printf_float, &mut sum.printf_float),
                ] {
                    *count += has as u64;
                }
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
    summary.into_inner()
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
    let s = differential(n);
    s.report(t.elapsed());
    assert!(
        s.compiled() * 10 >= n as u64 * 9,
        "too many rejected scripts: {}",
        s.rejected
    );
    // The generator must exercise what normal runs do, not mostly stop early.
    let pct = |k: u64| k * 100 / s.compiled().max(1);
    assert!(pct(s.completed()) >= 70, "too few complete: {s:?}");
    assert!(pct(s.guest_read) >= 70 && pct(s.guest_write) >= 50, "{s:?}");
    assert!(pct(s.printf) >= 80 && pct(s.straddle) >= 30, "{s:?}");
}

#[test]
#[ignore = "long: 1 000 000 cases (cargo test --release -p hvscript-jit --test differential -- --ignored --nocapture)"]
fn differential_long() {
    let t = std::time::Instant::now();
    differential(case_count(1_000_000)).report(t.elapsed());
}

#[test]
fn generator_examples_compile() {
    // A few fixed choice sequences, printed for inspection with --nocapture.
    for seed in 0..5u32 {
        let choices: Vec<u32> = (0..300)
            .map(|i: u32| i.wrapping_mul(2_654_435_761).wrapping_add(seed * 97) >> 7)
            .collect();
        let (src, _) = script(&choices, false);
        println!("--- seed {seed}\n{src}");
        if let Err(e) = compile_source(&src, &Globals::default(), &Default::default()) {
            panic!("{src}\n{:?}", e[0]);
        }
    }
}
