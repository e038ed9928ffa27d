//! The IR: what the interpreter executes and the JIT compiles.
//!
//! A [`Program`] is a set of [`Function`]s (the script's body is function 0, `main`),
//! each a control-flow graph of [`Block`]s. Instructions compute into **temps**
//! (function-local virtual registers; a temp may be assigned more than once, so `&&`,
//! `||` and loops need no phi nodes). Script variables live in **slots**: a function's
//! locals (zeroed at every call) and the program's globals (shared by every script and
//! core, persistent). Everything is a 64-bit value.
//!
//! Integer semantics (hvscript's untyped core; the v0.23 type system refines it later):
//! values are signed 64-bit integers, HyperDbg's `long`, the type of its literals and
//! registers. `+ - * << & | ^ ~` wrap; `< > <= >=`, `/`, `%` and `>>` are signed (`>>` is
//! arithmetic); comparisons yield 0 or 1. These stop the script with an error, located by
//! the instruction's span: division or modulo by zero, `i64::MIN / -1`, and a shift count
//! outside 0..=63.
//!
//! Instructions that can fail or that touch the outside world carry the [`Span`] of the
//! source text they came from, so a run-time error says where it happened.
//!
//! Loops burn fuel: every back edge is preceded by [`Inst::Fuel`], and every user-function
//! call burns one unit too, so `while (1) {}` and runaway recursion end with an error.

use std::fmt;

use hvscript_abi::{Builtin, PseudoReg, Register};
use hvscript_grammar::ast::Span;

pub type Temp = u32;
pub type BlockId = u32;
pub type FuncId = u32;
pub type StrId = u32;

/// A compiled script.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    /// Function 0 is the script's body.
    pub functions: Vec<Function>,
    /// String literals (printf formats, string arguments), narrow or wide.
    pub strings: Vec<StrLit>,
    /// The global slots this program uses, by name; the slot number is an index into
    /// the shared [`crate::Globals`] table.
    pub globals: Vec<(String, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StrLit {
    Narrow(Vec<u8>),
    Wide(Vec<u16>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Function {
    pub name: String,
    /// Parameters occupy local slots `0..params`.
    pub params: u32,
    /// Number of local slots, parameters included.
    pub locals: u32,
    /// Number of temps.
    pub temps: u32,
    pub returns_value: bool,
    /// Block 0 is the entry.
    pub blocks: Vec<Block>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub insts: Vec<Inst>,
    pub term: Terminator,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    Neg,
    Not,
    /// 1 if zero, else 0.
    LogNot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// Signed; zero divisor and `MIN / -1` are errors.
    Div,
    /// Signed; zero divisor and `MIN % -1` are errors.
    Rem,
    /// Count outside 0..=63 is an error.
    Shl,
    /// Arithmetic; count outside 0..=63 is an error.
    Shr,
    And,
    Or,
    Xor,
    Eq,
    Ne,
    /// Signed comparisons.
    Lt,
    Le,
    Gt,
    Ge,
}

impl BinaryOp {
    /// Whether the operation can stop the script (and so needs a span).
    pub fn can_fail(self) -> bool {
        matches!(
            self,
            BinaryOp::Div | BinaryOp::Rem | BinaryOp::Shl | BinaryOp::Shr
        )
    }
}

/// An argument of a built-in call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    Temp(Temp),
    Str(StrId),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Inst {
    Const {
        dst: Temp,
        value: u64,
    },
    Copy {
        dst: Temp,
        src: Temp,
    },
    ReadReg {
        dst: Temp,
        reg: Register,
    },
    WriteReg {
        reg: Register,
        src: Temp,
    },
    ReadPseudo {
        dst: Temp,
        reg: PseudoReg,
    },
    LoadLocal {
        dst: Temp,
        slot: u32,
    },
    StoreLocal {
        slot: u32,
        src: Temp,
    },
    LoadGlobal {
        dst: Temp,
        slot: u32,
    },
    StoreGlobal {
        slot: u32,
        src: Temp,
    },
    /// The address of a local slot of the current call, usable with poi/eq/interlocked.
    AddrLocal {
        dst: Temp,
        slot: u32,
    },
    /// The address of a global slot.
    AddrGlobal {
        dst: Temp,
        slot: u32,
    },
    Unary {
        dst: Temp,
        op: UnaryOp,
        src: Temp,
    },
    Binary {
        dst: Temp,
        op: BinaryOp,
        lhs: Temp,
        rhs: Temp,
        span: Span,
    },
    /// A built-in; `dst` is `None` when the value is discarded.
    CallBuiltin {
        dst: Option<Temp>,
        builtin: Builtin,
        args: Vec<Operand>,
        span: Span,
    },
    /// A user function; burns one unit of fuel.
    CallUser {
        dst: Option<Temp>,
        func: FuncId,
        args: Vec<Temp>,
        span: Span,
    },
    /// One unit of fuel, before a loop's back edge.
    Fuel {
        span: Span,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Terminator {
    Jump(BlockId),
    /// To `then` if `cond` is non-zero.
    Branch {
        cond: Temp,
        then: BlockId,
        otherwise: BlockId,
    },
    Return(Option<Temp>),
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, s) in self.strings.iter().enumerate() {
            match s {
                StrLit::Narrow(b) => writeln!(f, "str{i} = {:?}", String::from_utf8_lossy(b))?,
                StrLit::Wide(w) => writeln!(f, "str{i} = L{:?}", String::from_utf16_lossy(w))?,
            }
        }
        for (name, slot) in &self.globals {
            writeln!(f, "global .{name} = g{slot}")?;
        }
        for (i, func) in self.functions.iter().enumerate() {
            writeln!(
                f,
                "fn{i} {}(params {}, locals {}, temps {}){}:",
                func.name,
                func.params,
                func.locals,
                func.temps,
                if func.returns_value { " -> value" } else { "" }
            )?;
            for (b, block) in func.blocks.iter().enumerate() {
                writeln!(f, "  b{b}:")?;
                for inst in &block.insts {
                    writeln!(f, "    {}", DisplayInst(inst))?;
                }
                match &block.term {
                    Terminator::Jump(t) => writeln!(f, "    jump b{t}")?,
                    Terminator::Branch {
                        cond,
                        then,
                        otherwise,
                    } => writeln!(f, "    branch t{cond} ? b{then} : b{otherwise}")?,
                    Terminator::Return(Some(t)) => writeln!(f, "    return t{t}")?,
                    Terminator::Return(None) => writeln!(f, "    return")?,
                }
            }
        }
        Ok(())
    }
}

struct DisplayInst<'a>(&'a Inst);

impl fmt::Display for DisplayInst<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let operands = |args: &[Operand]| {
            args.iter()
                .map(|a| match a {
                    Operand::Temp(t) => format!("t{t}"),
                    Operand::Str(s) => format!("str{s}"),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self.0 {
            Inst::Const { dst, value } => write!(f, "t{dst} = 0x{value:x}"),
            Inst::Copy { dst, src } => write!(f, "t{dst} = t{src}"),
            Inst::ReadReg { dst, reg } => write!(f, "t{dst} = @{}", reg.name()),
            Inst::WriteReg { reg, src } => write!(f, "@{} = t{src}", reg.name()),
            Inst::ReadPseudo { dst, reg } => write!(f, "t{dst} = ${}", reg.name()),
            Inst::LoadLocal { dst, slot } => write!(f, "t{dst} = l{slot}"),
            Inst::StoreLocal { slot, src } => write!(f, "l{slot} = t{src}"),
            Inst::LoadGlobal { dst, slot } => write!(f, "t{dst} = g{slot}"),
            Inst::StoreGlobal { slot, src } => write!(f, "g{slot} = t{src}"),
            Inst::AddrLocal { dst, slot } => write!(f, "t{dst} = &l{slot}"),
            Inst::AddrGlobal { dst, slot } => write!(f, "t{dst} = &g{slot}"),
            Inst::Unary { dst, op, src } => write!(f, "t{dst} = {op:?} t{src}"),
            Inst::Binary {
                dst, op, lhs, rhs, ..
            } => write!(f, "t{dst} = {op:?} t{lhs}, t{rhs}"),
            Inst::CallBuiltin {
                dst: Some(d),
                builtin,
                args,
                ..
            } => {
                write!(f, "t{d} = {}({})", builtin.name(), operands(args))
            }
            Inst::CallBuiltin {
                dst: None,
                builtin,
                args,
                ..
            } => {
                write!(f, "{}({})", builtin.name(), operands(args))
            }
            Inst::CallUser {
                dst, func, args, ..
            } => {
                let args: Vec<String> = args.iter().map(|t| format!("t{t}")).collect();
                match dst {
                    Some(d) => write!(f, "t{d} = call fn{func}({})", args.join(", ")),
                    None => write!(f, "call fn{func}({})", args.join(", ")),
                }
            }
            Inst::Fuel { .. } => write!(f, "fuel"),
        }
    }
}
