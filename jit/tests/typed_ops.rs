//! The typed operations of the IR (`Inst::Binary`, `Inst::Unary`, `Inst::Convert` in every
//! `NumTy` / `ScalarTy`): the JIT must compute exactly what the interpreter (the reference
//! semantics, `hvscript_lang::semantics`) computes — the same result word, or the same
//! error (kind and span).
//!
//! Programs are built directly as IR (the front end does not produce typed operations
//! yet). Every operation is run in two shapes:
//!
//! - *dynamic*: one program per operation and optimisation level, compiled once; the
//!   operands come from `rcx`/`rdx`, the result goes to `rax` and is branched on (so a
//!   comparison also takes the fused compare-and-branch path), and the program is run
//!   once per operand pair on both back ends;
//! - *constant*: the operands are `Inst::Const`s (the JIT then knows the divisor or shift
//!   count, and Cranelift may fold), many operations per program, each storing to its own
//!   global slot with its own span; an operation that fails gets a program of its own.
//!
//! Operands are the edge values of their type, normalised to it (a `float` in the low 32
//! bits); `random_words` adds a proptest over random operations and random valid words
//! (`HVSCRIPT_TYPED_CASES=N`, default 50 000).

use std::collections::{HashMap, HashSet};
use std::fmt;

use hvscript_abi::{GuestRegs, PseudoValues, Register};
use hvscript_grammar::ast::Span;
use hvscript_jit::{Jit, OptLevel};
use hvscript_lang::ir::{
    BinaryOp, Block, Function, Inst, NumTy, Program, ScalarTy, Terminator, UnaryOp,
};
use hvscript_lang::{
    semantics, Globals, HostEnv, Interpreter, Invocation, Limits, RunError, RunErrorKind, Stage,
};
use hvscript_runtime::LoadedCode;
use hvscript_runtime::{Runner, RunnerError};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

const OPT_LEVELS: [OptLevel; 3] = [OptLevel::Fast, OptLevel::None, OptLevel::Speed];

const BINARY_OPS: [BinaryOp; 16] = [
    BinaryOp::Add,
    BinaryOp::Sub,
    BinaryOp::Mul,
    BinaryOp::Div,
    BinaryOp::Rem,
    BinaryOp::Shl,
    BinaryOp::Shr,
    BinaryOp::And,
    BinaryOp::Or,
    BinaryOp::Xor,
    BinaryOp::Eq,
    BinaryOp::Ne,
    BinaryOp::Lt,
    BinaryOp::Le,
    BinaryOp::Gt,
    BinaryOp::Ge,
];

const UNARY_OPS: [UnaryOp; 3] = [UnaryOp::Neg, UnaryOp::Not, UnaryOp::LogNot];

const NUM_TYS: [NumTy; 6] = [
    NumTy::I32,
    NumTy::U32,
    NumTy::I64,
    NumTy::U64,
    NumTy::F32,
    NumTy::F64,
];

/// Written to outputs before a run, so a missing store shows.
const SENTINEL: u64 = 0xa5a5_5a5a_c3c3_3c3c;

/// Span of the operation in a dynamic program, and of the function.
const OP_SPAN: Span = Span {
    start: 100,
    end: 110,
};
const FN_SPAN: Span = Span { start: 0, end: 1 };

/// A typed operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    Bin(BinaryOp, NumTy),
    Un(UnaryOp, NumTy),
    Conv(ScalarTy, ScalarTy),
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Bin(op, ty) => write!(f, "Binary {op:?}.{ty}"),
            Op::Un(op, ty) => write!(f, "Unary {op:?}.{ty}"),
            Op::Conv(from, to) => write!(f, "Convert {from} -> {to}"),
        }
    }
}

/// Every valid typed operation.
fn all_ops() -> Vec<Op> {
    let mut ops = Vec::new();
    for ty in NUM_TYS {
        for op in BINARY_OPS {
            if !ty.is_float() || op.works_on_floats() {
                ops.push(Op::Bin(op, ty));
            }
        }
        for op in UNARY_OPS {
            if !ty.is_float() || op != UnaryOp::Not {
                ops.push(Op::Un(op, ty));
            }
        }
    }
    for from in ScalarTy::ALL {
        for to in ScalarTy::ALL {
            ops.push(Op::Conv(from, to));
        }
    }
    ops
}

impl Op {
    fn binary(self) -> bool {
        matches!(self, Op::Bin(..))
    }

    /// The type of the operands.
    fn operand_ty(self) -> ScalarTy {
        match self {
            Op::Bin(_, ty) | Op::Un(_, ty) => ty.scalar(),
            Op::Conv(from, _) => from,
        }
    }

    /// The type of the result (a comparison gives a 0/1 word).
    fn result_ty(self) -> ScalarTy {
        match self {
            Op::Bin(op, _) if op.is_comparison() => ScalarTy::Bool,
            Op::Un(UnaryOp::LogNot, _) => ScalarTy::Bool,
            Op::Bin(_, ty) | Op::Un(_, ty) => ty.scalar(),
            Op::Conv(_, to) => to,
        }
    }

    /// A valid operand of this operation made from an arbitrary word.
    fn operand(self, v: u64) -> u64 {
        match self {
            Op::Bin(_, ty) | Op::Un(_, ty) => match ty {
                NumTy::F32 => v & 0xffff_ffff,
                _ => ty.normalize(v),
            },
            Op::Conv(ScalarTy::F32, _) => v & 0xffff_ffff,
            Op::Conv(from, _) => from.normalize(v),
        }
    }

    fn inst(self, dst: u32, lhs: u32, rhs: u32, span: Span) -> Inst {
        match self {
            Op::Bin(op, ty) => Inst::Binary {
                dst,
                op,
                ty,
                lhs,
                rhs,
                span,
            },
            Op::Un(op, ty) => Inst::Unary {
                dst,
                op,
                ty,
                src: lhs,
            },
            Op::Conv(from, to) => Inst::Convert {
                dst,
                src: lhs,
                from,
                to,
                span,
            },
        }
    }

    /// The reference result (only used to decide which operations may share a program).
    fn reference(self, a: u64, b: u64) -> Result<u64, RunErrorKind> {
        match self {
            Op::Bin(op, ty) => semantics::binary(op, ty, a, b),
            Op::Un(op, ty) => Ok(semantics::unary(op, ty, a)),
            Op::Conv(from, to) => semantics::convert(from, to, a),
        }
    }

    /// `a` and `b` for a message: hex, and the float value for float operands.
    fn describe(self, a: u64, b: u64) -> String {
        let one = |v: u64| describe_word(self.operand_ty(), v);
        if self.binary() {
            format!("lhs {}, rhs {}", one(a), one(b))
        } else {
            format!("operand {}", one(a))
        }
    }
}

fn describe_word(ty: ScalarTy, v: u64) -> String {
    match ty {
        ScalarTy::F32 => format!("{v:#x} ({:e})", f32::from_bits(v as u32)),
        ScalarTy::F64 => format!("{v:#x} ({:e})", f64::from_bits(v)),
        _ => format!("{v:#x}"),
    }
}

// ---------------------------------------------------------------------------------------
// Operands

/// Integer edge values (normalised to each type by the caller).
fn int_edges() -> Vec<u64> {
    let mut v: Vec<u64> = vec![
        0,
        1,
        2,
        3,
        5,
        7,
        10,
        31,
        32,
        33,
        63,
        64,
        65,
        127,
        128,
        255,
        256,
        0x7fff,
        0x8000,
        0xffff,
        0x1_0000,
        0x7fff_ffff,
        0x8000_0000,
        0x8000_0001,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0001,
        0x1_0000_0002,
        0xdead_beef,
        0x0100_0001,           // 2^24 + 1: not a float
        0x0020_0000_0000_0001, // 2^53 + 1: not a double
        0x0020_0000_0000_0000,
        0x1234_5678_9abc_def0,
        0x7fff_ffff_ffff_fdff, // rounds down to a double below 2^63
        0x7fff_ffff_ffff_fe00, // rounds up to 2^63 (a tie to even)
        0xffff_ffff_ffff_fbff,
        0xffff_ffff_ffff_fc00,
        i64::MAX as u64,
        (i64::MAX - 1) as u64,
        i64::MIN as u64,
        (i64::MIN + 1) as u64,
        u64::MAX,
    ];
    for x in [
        -2i64, -3, -5, -7, -10, -31, -32, -63, -64, -127, -128, -129, -255,
    ] {
        v.push(x as u64);
    }
    for x in [
        i32::MIN as i64,
        i32::MIN as i64 + 1,
        i32::MAX as i64,
        -(i32::MAX as i64),
        i16::MIN as i64,
        i8::MIN as i64,
    ] {
        v.push(x as u64);
    }
    v
}

/// Double edge values, as bits; with `neighbours`, also the doubles next to the finite
/// non-zero ones.
fn f64_edges(neighbours: bool) -> Vec<u64> {
    let p = |e: i32| 2f64.powi(e);
    let mut base: Vec<f64> = vec![
        0.0,
        1.0,
        1.5,
        0.5,
        2.0,
        3.0,
        0.1,
        1e300,
        1e-300,
        f64::MAX,
        f64::MIN_POSITIVE,
        f64::EPSILON,
        127.5,
        128.0,
        255.9,
        256.0,
        32767.5,
        32768.0,
        65535.9,
        65536.0,
        p(31),
        p(32),
        p(53),
        p(63),
        p(64),
        p(24),
        f32::MAX as f64,
        p(128) - p(103), // rounds to infinity as a float (a tie)
        p(128),
        f32::MIN_POSITIVE as f64,
        p(-149), // the smallest float subnormal
        p(-150), // half of it: rounds to zero (a tie)
        p(-149) * 1.5,
        p(-1022) * 0.75,
    ];
    base.extend([129.0, 32769.0, p(31) + 1.0, p(32) - 1.0, 1e10]);
    let mut v = Vec::new();
    for x in base {
        let b = x.to_bits();
        v.push(b);
        v.push((-x).to_bits());
        // The neighbours of non-zero finite values.
        if neighbours && x != 0.0 && x.is_finite() {
            for n in [b - 1, b + 1] {
                if f64::from_bits(n).is_finite() {
                    v.push(n);
                    v.push(n ^ (1 << 63));
                }
            }
        }
    }
    v.extend([
        1,                     // the smallest subnormal
        0x000f_ffff_ffff_ffff, // the largest subnormal
        0x8000_0000_0000_0001,
        f64::INFINITY.to_bits(),
        f64::NEG_INFINITY.to_bits(),
        f64::NAN.to_bits(),
        0xfff8_0000_0000_0000, // negative quiet NaN
        0x7ff8_0000_dead_beef, // quiet NaN with payload
        0x7ff0_0000_0000_0001, // signalling NaN
        0xfff4_0000_0000_1234, // negative signalling NaN
    ]);
    v
}

/// Float edge values, as bits in the low half (`neighbours` as for [`f64_edges`]).
fn f32_edges(neighbours: bool) -> Vec<u64> {
    let p = |e: i32| 2f32.powi(e);
    let base: Vec<f32> = vec![
        0.0,
        1.0,
        1.5,
        0.5,
        2.0,
        3.0,
        0.1,
        1e30,
        1e-30,
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::EPSILON,
        127.5,
        128.0,
        129.0,
        255.9,
        256.0,
        32767.5,
        32768.0,
        32769.0,
        65535.9,
        65536.0,
        p(24),
        p(31),
        p(32),
        p(63),
        p(64),
        p(100),
        1e10,
    ];
    let mut v = Vec::new();
    for x in base {
        let b = x.to_bits() as u64;
        v.push(b);
        v.push((-x).to_bits() as u64);
        if neighbours && x != 0.0 && x.is_finite() {
            for n in [b - 1, b + 1] {
                if f32::from_bits(n as u32).is_finite() {
                    v.push(n);
                    v.push(n ^ (1 << 31));
                }
            }
        }
    }
    v.extend([
        1,           // the smallest subnormal
        0x007f_ffff, // the largest subnormal
        0x8000_0001,
        f32::INFINITY.to_bits() as u64,
        f32::NEG_INFINITY.to_bits() as u64,
        f32::NAN.to_bits() as u64,
        0xffc0_0000, // negative quiet NaN
        0x7fc0_beef, // quiet NaN with payload
        0x7f80_0001, // signalling NaN
        0xffa0_1234, // negative signalling NaN
    ]);
    v
}

/// The edge values of `ty`, valid words, without duplicates.
fn edges(ty: ScalarTy) -> Vec<u64> {
    let raw = match ty {
        ScalarTy::F32 => f32_edges(true),
        ScalarTy::F64 => f64_edges(true),
        _ => int_edges(),
    };
    dedup(ty, raw)
}

/// Fewer edge values, for operands whose exact value matters less: the float edges without
/// their neighbours, and a few integers (for left operands of integer operations).
fn core_edges(ty: ScalarTy) -> Vec<u64> {
    let raw = match ty {
        ScalarTy::F32 => f32_edges(false),
        ScalarTy::F64 => f64_edges(false),
        _ => vec![
            0,
            1,
            2,
            7,
            u64::MAX,
            -7i64 as u64,
            i64::MIN as u64,
            i64::MAX as u64,
            (i64::MIN + 1) as u64,
            i32::MIN as i64 as u64,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            1 << 32,
            0xdead_beef,
            0x1234_5678_9abc_def0,
        ],
    };
    dedup(ty, raw)
}

/// Valid words of `ty` made from `raw`, each once.
fn dedup(ty: ScalarTy, raw: Vec<u64>) -> Vec<u64> {
    let mut seen = HashSet::new();
    raw.into_iter()
        .map(|v| match ty {
            ScalarTy::F32 => v & 0xffff_ffff,
            _ => ty.normalize(v),
        })
        .filter(|v| seen.insert(*v))
        .collect()
}

/// The operand pairs of `op` built from edge values.
fn edge_cases(op: Op) -> Vec<(u64, u64)> {
    let values = edges(op.operand_ty());
    if op.binary() {
        values
            .iter()
            .flat_map(|&a| values.iter().map(move |&b| (a, b)))
            .collect()
    } else {
        values.into_iter().map(|a| (a, 0)).collect()
    }
}

/// The operand pairs of `op` for constant programs (compiling is what costs): integer
/// operations get every right operand (the divisor or shift count the JIT may specialise
/// on) with fewer left ones, float operations the edges without their neighbours, unary
/// operations and conversions every edge value.
fn constant_cases(op: Op) -> Vec<(u64, u64)> {
    let ty = op.operand_ty();
    match op {
        Op::Bin(..) => {
            let rhs = if ty.is_float() {
                core_edges(ty)
            } else {
                edges(ty)
            };
            let lhs = core_edges(ty);
            lhs.iter()
                .flat_map(|&a| rhs.iter().map(move |&b| (a, b)))
                .collect()
        }
        _ => edge_cases(op),
    }
}

// ---------------------------------------------------------------------------------------
// Programs

fn program(blocks: Vec<Block>, temps: u32) -> Program {
    Program {
        functions: vec![Function {
            name: "main".into(),
            params: 0,
            locals: 0,
            temps,
            returns_value: false,
            blocks,
            span: FN_SPAN,
        }],
        strings: Vec::new(),
        globals: Vec::new(),
    }
}

/// `rax = op(rcx, rdx); rbx = rax != 0 ? 1 : 2`.
fn dynamic_program(op: Op) -> Program {
    let arm = |v| Block {
        insts: vec![
            Inst::Const { dst: 3, value: v },
            Inst::WriteReg {
                reg: Register::Rbx,
                src: 3,
            },
        ],
        term: Terminator::Return(None),
    };
    let entry = Block {
        insts: vec![
            Inst::ReadReg {
                dst: 0,
                reg: Register::Rcx,
            },
            Inst::ReadReg {
                dst: 1,
                reg: Register::Rdx,
            },
            op.inst(2, 0, 1, OP_SPAN),
            Inst::WriteReg {
                reg: Register::Rax,
                src: 2,
            },
        ],
        term: Terminator::Branch {
            cond: 2,
            then: 1,
            otherwise: 2,
        },
    };
    program(vec![entry, arm(1), arm(2)], 4)
}

/// The span of item `i` of a constant program.
fn item_span(i: usize) -> Span {
    Span::new(1000 + 10 * i, 1005 + 10 * i)
}

/// Global slot `i` = `op(a, b)` with constant operands, for each item `i`.
fn const_program(op: Op, items: &[(u64, u64)]) -> Program {
    let mut insts = Vec::new();
    for (i, &(a, b)) in items.iter().enumerate() {
        let t = 3 * i as u32;
        insts.push(Inst::Const { dst: t, value: a });
        insts.push(Inst::Const {
            dst: t + 1,
            value: b,
        });
        insts.push(op.inst(t + 2, t, t + 1, item_span(i)));
        insts.push(Inst::StoreGlobal {
            slot: i as u32,
            src: t + 2,
        });
    }
    let block = Block {
        insts,
        term: Terminator::Return(None),
    };
    program(vec![block], 3 * items.len() as u32)
}

// ---------------------------------------------------------------------------------------
// Running

const LIMITS: Limits = Limits {
    fuel: 16,
    max_call_depth: 4,
    stack_slots: 16,
};

/// Everything a run of these programs can change.
#[derive(Clone, Debug, PartialEq)]
struct Outcome {
    result: Result<(), RunError>,
    regs: GuestRegs,
    globals: Vec<u64>,
}

struct Harness {
    interp: Interpreter,
    native: Runner,
    env: HostEnv,
    pseudo: PseudoValues,
    globals: Globals,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            interp: Interpreter::new(),
            native: Runner::new(),
            env: HostEnv::new(Stage::Pre),
            pseudo: PseudoValues::default(),
            globals: Globals::default(),
        }
    }

    /// Runs `program` on the interpreter, or `code` (its compiled form) natively, with
    /// `regs` and `outputs` global slots preset to the sentinel.
    fn run(
        &mut self,
        program: &Program,
        code: Option<&LoadedCode>,
        mut regs: GuestRegs,
        outputs: usize,
    ) -> Outcome {
        for s in 0..outputs {
            self.globals.set(s as u32, SENTINEL);
        }
        let mut inv = Invocation {
            regs: &mut regs,
            pseudo: &self.pseudo,
            globals: &self.globals,
            host: &mut self.env,
            limits: LIMITS,
        };
        let result = match code {
            None => self.interp.run(program, &mut inv).map(|_| ()),
            Some(code) => match self.native.run(&code.image(), &mut inv) {
                Ok(_) => Ok(()),
                Err(RunnerError::Run(e)) => Err(e.into()),
                Err(RunnerError::Incompatible(m)) => panic!("incompatible code object: {m}"),
            },
        };
        Outcome {
            result,
            regs,
            globals: (0..outputs).map(|s| self.globals.get(s as u32)).collect(),
        }
    }
}

fn compile(jit: &mut Jit, program: &Program) -> LoadedCode {
    let object = jit
        .compile(program)
        .unwrap_or_else(|e| panic!("JIT compile failed: {e}\n{program}"));
    LoadedCode::load(object).expect("load")
}

fn dynamic_regs(a: u64, b: u64) -> GuestRegs {
    GuestRegs {
        rcx: a,
        rdx: b,
        rax: SENTINEL,
        rbx: SENTINEL,
        ..GuestRegs::default()
    }
}

/// An outcome of one operation, for a message.
fn describe_outcome(op: Op, result: &Result<(), RunError>, value: u64) -> String {
    match result {
        Ok(()) => format!("ok {}", describe_word(op.result_ty(), value)),
        Err(e) => format!(
            "error {:?} at {}..{} ({})",
            e.kind,
            e.span.start,
            e.span.end,
            e.message()
        ),
    }
}

fn mismatch(op: Op, a: u64, b: u64, how: &str, interp: String, jit: String) -> String {
    format!(
        "{op} with {} [{how}]:\n    interp: {interp}\n    jit:    {jit}",
        op.describe(a, b)
    )
}

/// The dynamic program of every operation, compiled at every optimisation level.
struct DynamicCode {
    jits: Vec<Jit>,
    programs: HashMap<Op, (Program, Vec<LoadedCode>)>,
}

impl DynamicCode {
    fn new() -> DynamicCode {
        DynamicCode {
            jits: OPT_LEVELS
                .iter()
                .map(|&o| Jit::with_opt_level(o).unwrap())
                .collect(),
            programs: HashMap::new(),
        }
    }

    fn get(&mut self, op: Op) -> &(Program, Vec<LoadedCode>) {
        let jits = &mut self.jits;
        self.programs.entry(op).or_insert_with(|| {
            let p = dynamic_program(op);
            let codes = jits.iter_mut().map(|j| compile(j, &p)).collect();
            (p, codes)
        })
    }

    /// Runs `op(a, b)` on the interpreter and at every level; `Err` describes a mismatch.
    fn check(&mut self, h: &mut Harness, op: Op, a: u64, b: u64) -> Result<(), String> {
        let regs = dynamic_regs(a, b);
        let (program, codes) = self.get(op);
        let want = h.run(program, None, regs, 0);
        for (code, level) in codes.iter().zip(OPT_LEVELS) {
            let got = h.run(program, Some(code), regs, 0);
            if got != want {
                return Err(mismatch(
                    op,
                    a,
                    b,
                    &format!("dynamic, {level:?}"),
                    describe_dynamic(op, &want),
                    describe_dynamic(op, &got),
                ));
            }
        }
        Ok(())
    }
}

fn describe_dynamic(op: Op, o: &Outcome) -> String {
    let branch = match o.regs.rbx {
        1 => "taken".to_string(),
        2 => "not taken".to_string(),
        v => format!("rbx {v:#x}"),
    };
    format!(
        "{} (branch {branch})",
        describe_outcome(op, &o.result, o.regs.rax)
    )
}

/// Mismatches found so far.
#[derive(Default)]
struct Report {
    cases: u64,
    mismatches: Vec<String>,
}

impl Report {
    fn finish(self, name: &str, started: std::time::Instant) {
        println!(
            "{name}: {} cases in {:.1?}, {} mismatches",
            self.cases,
            started.elapsed(),
            self.mismatches.len()
        );
        if !self.mismatches.is_empty() {
            let shown: Vec<&str> = self
                .mismatches
                .iter()
                .take(40)
                .map(|s| s.as_str())
                .collect();
            panic!(
                "{name}: interpreter and JIT differ in {} of {} cases (first {}):\n{}",
                self.mismatches.len(),
                self.cases,
                shown.len(),
                shown.join("\n")
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// Tests

/// Every operation on every pair of edge values, operands from registers.
#[test]
fn edge_values_dynamic() {
    let started = std::time::Instant::now();
    let mut h = Harness::new();
    let mut code = DynamicCode::new();
    let mut report = Report::default();
    for op in all_ops() {
        for (a, b) in edge_cases(op) {
            report.cases += 1;
            if let Err(m) = code.check(&mut h, op, a, b) {
                report.mismatches.push(m);
            }
        }
    }
    report.finish("edge values (dynamic operands)", started);
}

/// Items of one constant program at most (the global table has 512 slots).
const BATCH: usize = 400;

/// At most this many failing operand pairs per operation get a constant program each
/// (one compile per case is what makes the constant shape slow).
const FAILING_PER_OP: usize = 64;

/// A coarse class of an operand, for picking representative failing cases: the sign and
/// exponent of a float (NaNs also by quietness), the value of an integer right operand
/// (divisor, shift count), the sign of an integer left operand and whether it is MIN.
fn operand_class(op: Op, v: u64, lhs: bool) -> u64 {
    match (op.operand_ty(), op) {
        (ScalarTy::F64, _) => (v >> 52) << 1 | (v >> 51) & 1,
        (ScalarTy::F32, _) => (v >> 23) << 1 | (v >> 22) & 1,
        (_, Op::Bin(_, ty)) if !lhs => ty.normalize(v),
        (_, Op::Bin(_, ty)) => {
            let min = if ty.bits() == 32 {
                ty.normalize(1 << 31)
            } else {
                1 << 63
            };
            match v {
                0 => 0,
                _ if v == min => 1,
                _ if (v as i64) < 0 => 2,
                _ => 3,
            }
        }
        _ => v,
    }
}

/// Representative failing cases of `op`: the first of each error kind, then the first of
/// each class of operands, evenly thinned to [`FAILING_PER_OP`].
fn sample_failing(op: Op, failing: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    let kind = |&(a, b): &(u64, u64)| format!("{:?}", op.reference(a, b).err());
    let mut kinds = HashSet::new();
    let mut classes = HashSet::new();
    let mut first = Vec::new();
    let mut rest = Vec::new();
    for case in failing {
        let k = kind(&case);
        let class = (
            k.clone(),
            operand_class(op, case.0, true),
            operand_class(op, case.1, false),
        );
        if kinds.insert(k) {
            first.push(case);
        } else if classes.insert(class) {
            rest.push(case);
        }
    }
    let room = FAILING_PER_OP.saturating_sub(first.len());
    if rest.len() > room {
        let n = rest.len();
        rest = (0..room).map(|i| rest[i * n / room]).collect();
    }
    first.extend(rest);
    first
}

/// Every operation on every pair of edge values, operands constant (the failing ones
/// sampled).
#[test]
fn edge_values_constant() {
    let started = std::time::Instant::now();
    let mut h = Harness::new();
    let mut jits: Vec<Jit> = OPT_LEVELS
        .iter()
        .map(|&o| Jit::with_opt_level(o).unwrap())
        .collect();
    let mut report = Report::default();
    let mut compiles = 0usize;
    let mut rotate = 0usize;
    for op in all_ops() {
        let (ok, failing): (Vec<_>, Vec<_>) = constant_cases(op)
            .into_iter()
            .partition(|&(a, b)| op.reference(a, b).is_ok());
        // Operations that succeed share programs; each takes one optimisation level.
        let mut single = sample_failing(op, failing);
        for chunk in ok.chunks(BATCH) {
            report.cases += chunk.len() as u64;
            rotate += 1;
            let level = rotate % OPT_LEVELS.len();
            let p = const_program(op, chunk);
            let code = compile(&mut jits[level], &p);
            compiles += 1;
            let regs = GuestRegs::default();
            let want = h.run(&p, None, regs, chunk.len());
            let got = h.run(&p, Some(&code), regs, chunk.len());
            if want == got {
                continue;
            }
            // Find the culprits one by one.
            report.cases -= chunk.len() as u64;
            single.extend_from_slice(chunk);
        }
        for (a, b) in single {
            report.cases += 1;
            rotate += 1;
            let level = rotate % OPT_LEVELS.len();
            let p = const_program(op, &[(a, b)]);
            let code = compile(&mut jits[level], &p);
            compiles += 1;
            let regs = GuestRegs::default();
            let want = h.run(&p, None, regs, 1);
            let got = h.run(&p, Some(&code), regs, 1);
            if want != got {
                report.mismatches.push(mismatch(
                    op,
                    a,
                    b,
                    &format!("constant operands, {:?}", OPT_LEVELS[level]),
                    describe_outcome(op, &want.result, want.globals[0]),
                    describe_outcome(op, &got.result, got.globals[0]),
                ));
            }
        }
    }
    println!("{compiles} programs compiled");
    report.finish("edge values (constant operands)", started);
}

/// Turns random material into a valid operand of `op`: raw, a small integer, an edge
/// value, a random float of moderate magnitude, or a neighbour of an edge value.
fn random_operand(op: Op, raw: u64, sel: u8, edges: &[u64]) -> u64 {
    let ty = op.operand_ty();
    let small = (raw % 141) as i64 - 70;
    let v = match sel % 6 {
        0 => raw,
        1 => match ty {
            ScalarTy::F32 => (small as f32 / 4.0).to_bits() as u64,
            ScalarTy::F64 => (small as f64 / 4.0).to_bits(),
            _ => small as u64,
        },
        2 => edges[(raw % edges.len() as u64) as usize],
        3 => {
            let e = ((raw >> 40) % 150) as i64 - 75;
            let sign = raw >> 63;
            match ty {
                ScalarTy::F32 => (sign << 31) | (((127 + e) as u64) << 23) | (raw & 0x7f_ffff),
                ScalarTy::F64 => {
                    (sign << 63) | (((1023 + e) as u64) << 52) | (raw & 0xf_ffff_ffff_ffff)
                }
                _ => raw >> (raw % 64),
            }
        }
        4 => {
            let e = edges[(raw % edges.len() as u64) as usize];
            e.wrapping_add(((raw >> 32) % 9).wrapping_sub(4))
        }
        _ => raw >> ((raw >> 58) % 64),
    };
    op.operand(v)
}

fn case_count() -> u32 {
    std::env::var("HVSCRIPT_TYPED_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

/// Random operations on random valid words (dynamic operands, every level); one case in
/// eight also runs with constant operands.
#[test]
fn random_words() {
    let started = std::time::Instant::now();
    let ops = all_ops();
    let edge_lists: HashMap<ScalarTy, Vec<u64>> =
        ScalarTy::ALL.iter().map(|&t| (t, edges(t))).collect();
    let h = std::cell::RefCell::new(Harness::new());
    let code = std::cell::RefCell::new(DynamicCode::new());
    let const_jit = std::cell::RefCell::new(Jit::with_opt_level(OptLevel::Speed).unwrap());
    let constant_runs = std::cell::Cell::new(0u64);
    let cases = case_count();
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (0..ops.len(), any::<[u64; 2]>(), any::<[u8; 2]>(), 0u8..8);
    let result = runner.run(&strategy, |(i, raw, sel, constant)| {
        let op = ops[i];
        let edges = &edge_lists[&op.operand_ty()];
        let a = random_operand(op, raw[0], sel[0], edges);
        let b = if op.binary() {
            random_operand(op, raw[1], sel[1], edges)
        } else {
            0
        };
        let h = &mut *h.borrow_mut();
        code.borrow_mut()
            .check(h, op, a, b)
            .map_err(TestCaseError::fail)?;
        if constant == 0 {
            constant_runs.set(constant_runs.get() + 1);
            let p = const_program(op, &[(a, b)]);
            let code = compile(&mut const_jit.borrow_mut(), &p);
            let want = h.run(&p, None, GuestRegs::default(), 1);
            let got = h.run(&p, Some(&code), GuestRegs::default(), 1);
            if want != got {
                return Err(TestCaseError::fail(mismatch(
                    op,
                    a,
                    b,
                    "constant operands, Speed",
                    describe_outcome(op, &want.result, want.globals[0]),
                    describe_outcome(op, &got.result, got.globals[0]),
                )));
            }
        }
        Ok(())
    });
    println!(
        "random words: {cases} cases ({} also with constant operands) in {:.1?}",
        constant_runs.get(),
        started.elapsed()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
}
