//! The scalar types of typed operations: [`NumTy`], what an arithmetic operation computes
//! in, and [`ScalarTy`], what a value is stored as. They are the IR's (`hvscript_lang::ir`
//! re-exports them) but live here because run-time errors name them and compiled code
//! reports a conversion's target by [`ScalarTy::code`].

use core::fmt;

/// The type an arithmetic operation computes in (after C's integer promotions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NumTy {
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl NumTy {
    pub fn is_float(self) -> bool {
        self.scalar().is_float()
    }

    pub fn is_signed(self) -> bool {
        self.scalar().is_signed()
    }

    /// Width in bits.
    pub fn bits(self) -> u32 {
        self.scalar().bits()
    }

    /// The storage type of the same values.
    pub fn scalar(self) -> ScalarTy {
        match self {
            NumTy::I32 => ScalarTy::I32,
            NumTy::U32 => ScalarTy::U32,
            NumTy::I64 => ScalarTy::I64,
            NumTy::U64 => ScalarTy::U64,
            NumTy::F32 => ScalarTy::F32,
            NumTy::F64 => ScalarTy::F64,
        }
    }

    /// Normalises a 64-bit word to this type (integers only; floats are returned as is).
    pub fn normalize(self, v: u64) -> u64 {
        self.scalar().normalize(v)
    }
}

impl fmt::Display for NumTy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NumTy::I32 => "i32",
            NumTy::U32 => "u32",
            NumTy::I64 => "i64",
            NumTy::U64 => "u64",
            NumTy::F32 => "f32",
            NumTy::F64 => "f64",
        })
    }
}

/// A type a value is stored as: the source and destination of the IR's
/// `Inst::Convert`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScalarTy {
    /// 0 or 1.
    Bool,
    I8,
    U8,
    I16,
    U16,
    I32,
    U32,
    I64,
    U64,
    F32,
    F64,
}

impl ScalarTy {
    pub const ALL: [ScalarTy; 11] = [
        ScalarTy::Bool,
        ScalarTy::I8,
        ScalarTy::U8,
        ScalarTy::I16,
        ScalarTy::U16,
        ScalarTy::I32,
        ScalarTy::U32,
        ScalarTy::I64,
        ScalarTy::U64,
        ScalarTy::F32,
        ScalarTy::F64,
    ];

    /// A stable number for the type (its index in [`ScalarTy::ALL`]), as compiled code
    /// reports it in errors.
    pub fn code(self) -> u64 {
        ScalarTy::ALL.iter().position(|t| *t == self).unwrap_or(0) as u64
    }

    pub fn from_code(code: u64) -> Option<ScalarTy> {
        ScalarTy::ALL.get(usize::try_from(code).ok()?).copied()
    }

    pub fn is_float(self) -> bool {
        matches!(self, ScalarTy::F32 | ScalarTy::F64)
    }

    pub fn is_signed(self) -> bool {
        matches!(
            self,
            ScalarTy::I8 | ScalarTy::I16 | ScalarTy::I32 | ScalarTy::I64
        )
    }

    /// Width in bytes in memory (a `bool` is one byte).
    pub fn bytes(self) -> usize {
        self.bits() as usize / 8
    }

    /// Width in bits (a `bool` is one byte).
    pub fn bits(self) -> u32 {
        match self {
            ScalarTy::Bool | ScalarTy::I8 | ScalarTy::U8 => 8,
            ScalarTy::I16 | ScalarTy::U16 => 16,
            ScalarTy::I32 | ScalarTy::U32 | ScalarTy::F32 => 32,
            ScalarTy::I64 | ScalarTy::U64 | ScalarTy::F64 => 64,
        }
    }

    /// Normalises an integer word to this type (truncate, then sign- or zero-extend;
    /// `Bool` is `v != 0`). Floats are returned as is.
    pub fn normalize(self, v: u64) -> u64 {
        match self {
            ScalarTy::Bool => (v != 0) as u64,
            ScalarTy::I8 => v as u8 as i8 as i64 as u64,
            ScalarTy::U8 => v as u8 as u64,
            ScalarTy::I16 => v as u16 as i16 as i64 as u64,
            ScalarTy::U16 => v as u16 as u64,
            ScalarTy::I32 => v as u32 as i32 as i64 as u64,
            ScalarTy::U32 => v as u32 as u64,
            ScalarTy::I64 | ScalarTy::U64 | ScalarTy::F32 | ScalarTy::F64 => v,
        }
    }
}

impl fmt::Display for ScalarTy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ScalarTy::Bool => "bool",
            ScalarTy::I8 => "i8",
            ScalarTy::U8 => "u8",
            ScalarTy::I16 => "i16",
            ScalarTy::U16 => "u16",
            ScalarTy::I32 => "i32",
            ScalarTy::U32 => "u32",
            ScalarTy::I64 => "i64",
            ScalarTy::U64 => "u64",
            ScalarTy::F32 => "f32",
            ScalarTy::F64 => "f64",
        })
    }
}
