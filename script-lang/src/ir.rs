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
//! Typed operations (HyperDbg v0.23): [`Inst::Binary`] and [`Inst::Unary`] compute in a
//! [`NumTy`], the type C's usual arithmetic conversions give the operands. Every value is
//! still one 64-bit word: an integer of a narrower type is kept *normalised* (sign- or
//! zero-extended from its width), a `double` as its binary64 bits and a `float` as its
//! binary32 bits in the low half (upper half zero). Integer operations in `I32`/`U32`
//! compute on the low 32 bits and normalise the result; `/ %` are signed or unsigned by
//! type, `>>` arithmetic for signed types and logical for unsigned ones, and comparisons
//! signed or unsigned. Errors: a zero divisor, `MIN / -1` and `MIN % -1` of a signed
//! type, a shift count (the right operand as an unsigned 64-bit number) not below the
//! width. Float operations are IEEE-754 (round to nearest even) on `f32`/`f64`; as in
//! HyperDbg a result that is not finite stops the script (division by zero as a division
//! error, any other infinity or NaN as a float-range error); comparisons are IEEE's
//! (ordered; NaN is unequal to everything). [`Inst::Convert`] converts between
//! [`ScalarTy`]s with C's rules; a float converted to an integer type truncates toward
//! zero and must fit, else the script stops.
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

pub use hvscript_runtime::scalar::{NumTy, ScalarTy};

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
    /// Signed or unsigned by type; zero divisor and signed `MIN / -1` are errors.
    Div,
    /// Signed or unsigned by type; zero divisor and signed `MIN % -1` are errors.
    Rem,
    /// A count not below the width is an error.
    Shl,
    /// Arithmetic for signed types, logical for unsigned; a count not below the width is
    /// an error.
    Shr,
    And,
    Or,
    Xor,
    Eq,
    Ne,
    /// Signed or unsigned by type (IEEE for floats).
    Lt,
    Le,
    Gt,
    Ge,
}

impl BinaryOp {
    /// Whether the operation can stop the script (and so needs a span).
    pub fn can_fail(self, ty: NumTy) -> bool {
        match self {
            BinaryOp::Div | BinaryOp::Rem | BinaryOp::Shl | BinaryOp::Shr => true,
            BinaryOp::Add | BinaryOp::Sub | BinaryOp::Mul => ty.is_float(),
            _ => false,
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinaryOp::Eq | BinaryOp::Ne | BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge
        )
    }

    /// Whether the operation exists for floats (`% << >> & | ^` do not).
    pub fn works_on_floats(self) -> bool {
        !matches!(
            self,
            BinaryOp::Rem
                | BinaryOp::Shl
                | BinaryOp::Shr
                | BinaryOp::And
                | BinaryOp::Or
                | BinaryOp::Xor
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
    /// `Not` exists for integer types only.
    Unary {
        dst: Temp,
        op: UnaryOp,
        ty: NumTy,
        src: Temp,
    },
    /// `% << >> & | ^` exist for integer types only.
    Binary {
        dst: Temp,
        op: BinaryOp,
        ty: NumTy,
        lhs: Temp,
        rhs: Temp,
        span: Span,
    },
    /// A C conversion from `from` to `to` (see the module documentation).
    Convert {
        dst: Temp,
        src: Temp,
        from: ScalarTy,
        to: ScalarTy,
        span: Span,
    },
    /// Reads `ty`'s width (one byte for `bool`) at `addr` and normalises it to `ty` (a
    /// `float` arrives as its binary32 bits, upper half zero). `addr` may point into the
    /// script's own local stack or global slots, or anywhere in guest memory through the
    /// host; an address that cannot be read stops the script. This is how typed places
    /// are read: array elements, struct members, anything behind a typed pointer.
    Load {
        dst: Temp,
        addr: Temp,
        ty: ScalarTy,
        span: Span,
    },
    /// Writes the low `ty`-width bytes of `src` at `addr` (same memory as [`Inst::Load`]);
    /// an address that cannot be written stops the script.
    Store {
        addr: Temp,
        src: Temp,
        ty: ScalarTy,
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
            Inst::Unary { dst, op, ty, src } => write!(f, "t{dst} = {op:?}.{ty} t{src}"),
            Inst::Binary {
                dst,
                op,
                ty,
                lhs,
                rhs,
                ..
            } => write!(f, "t{dst} = {op:?}.{ty} t{lhs}, t{rhs}"),
            Inst::Convert {
                dst, src, from, to, ..
            } => write!(f, "t{dst} = convert.{from}.{to} t{src}"),
            Inst::Load { dst, addr, ty, .. } => write!(f, "t{dst} = load.{ty} [t{addr}]"),
            Inst::Store { addr, src, ty, .. } => write!(f, "store.{ty} [t{addr}], t{src}"),
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
