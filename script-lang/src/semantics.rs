//! What every typed operation of the IR computes: the reference definition the
//! interpreter runs, the lowering folds constants with, and the JIT is tested against.
//! The rules are in [`crate::ir`]'s documentation.

use crate::ir::{BinaryOp, NumTy, ScalarTy, UnaryOp};
use crate::run_error::RunErrorKind;

/// Applies a binary operation in type `ty` to two normalised words.
pub fn binary(op: BinaryOp, ty: NumTy, a: u64, b: u64) -> Result<u64, RunErrorKind> {
    match ty {
        NumTy::F64 => float_binary(op, f64::from_bits(a), f64::from_bits(b)).map(|r| match r {
            FloatResult::Value(v) => v.to_bits(),
            FloatResult::Flag(f) => f as u64,
        }),
        NumTy::F32 => float_binary(
            op,
            f32::from_bits(a as u32) as f64,
            f32::from_bits(b as u32) as f64,
        )
        .and_then(|r| match r {
            // f32 arithmetic done in f64 and rounded once is exact for + - * / (the f64
            // result of two f32 operands is the exact result rounded to 53 bits, and
            // rounding that to 24 bits gives the correctly rounded f32: 53 >= 2*24+2).
            FloatResult::Value(v) => {
                let r = v as f32;
                if r.is_finite() {
                    Ok(r.to_bits() as u64)
                } else {
                    Err(RunErrorKind::FloatRange)
                }
            }
            FloatResult::Flag(f) => Ok(f as u64),
        }),
        _ => int_binary(op, ty, a, b),
    }
}

enum FloatResult {
    Value(f64),
    Flag(bool),
}

fn float_binary(op: BinaryOp, a: f64, b: f64) -> Result<FloatResult, RunErrorKind> {
    let v = match op {
        BinaryOp::Add => a + b,
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => {
            if b == 0.0 {
                return Err(RunErrorKind::DivisionByZero);
            }
            a / b
        }
        BinaryOp::Eq => return Ok(FloatResult::Flag(a == b)),
        BinaryOp::Ne => return Ok(FloatResult::Flag(a != b)),
        BinaryOp::Lt => return Ok(FloatResult::Flag(a < b)),
        BinaryOp::Le => return Ok(FloatResult::Flag(a <= b)),
        BinaryOp::Gt => return Ok(FloatResult::Flag(a > b)),
        BinaryOp::Ge => return Ok(FloatResult::Flag(a >= b)),
        BinaryOp::Rem
        | BinaryOp::Shl
        | BinaryOp::Shr
        | BinaryOp::And
        | BinaryOp::Or
        | BinaryOp::Xor => return Err(RunErrorKind::InvalidFloatOperation),
    };
    if v.is_finite() {
        Ok(FloatResult::Value(v))
    } else {
        Err(RunErrorKind::FloatRange)
    }
}

fn int_binary(op: BinaryOp, ty: NumTy, a: u64, b: u64) -> Result<u64, RunErrorKind> {
    let bits = ty.bits();
    let signed = ty.is_signed();
    let v = match op {
        BinaryOp::Add => a.wrapping_add(b),
        BinaryOp::Sub => a.wrapping_sub(b),
        BinaryOp::Mul => a.wrapping_mul(b),
        BinaryOp::Div | BinaryOp::Rem => {
            if b == 0 {
                return Err(RunErrorKind::DivisionByZero);
            }
            if signed {
                let (sa, sb) = (a as i64, b as i64);
                let min = if bits == 32 {
                    i32::MIN as i64
                } else {
                    i64::MIN
                };
                if sa == min && sb == -1 {
                    return Err(RunErrorKind::DivisionOverflow(ty));
                }
                if op == BinaryOp::Div {
                    sa.wrapping_div(sb) as u64
                } else {
                    sa.wrapping_rem(sb) as u64
                }
            } else if op == BinaryOp::Div {
                a / b
            } else {
                a % b
            }
        }
        BinaryOp::Shl | BinaryOp::Shr => {
            if b >= bits as u64 {
                return Err(RunErrorKind::ShiftCount { count: b, bits });
            }
            if op == BinaryOp::Shl {
                a << b
            } else if signed {
                // Normalised signed values are sign-extended: a 64-bit arithmetic shift is
                // the narrower type's arithmetic shift.
                ((a as i64) >> b) as u64
            } else {
                a >> b
            }
        }
        BinaryOp::And => a & b,
        BinaryOp::Or => a | b,
        BinaryOp::Xor => a ^ b,
        BinaryOp::Eq => return Ok((a == b) as u64),
        BinaryOp::Ne => return Ok((a != b) as u64),
        BinaryOp::Lt | BinaryOp::Le | BinaryOp::Gt | BinaryOp::Ge => {
            let ord = if signed {
                (a as i64).cmp(&(b as i64))
            } else {
                a.cmp(&b)
            };
            let r = match op {
                BinaryOp::Lt => ord.is_lt(),
                BinaryOp::Le => ord.is_le(),
                BinaryOp::Gt => ord.is_gt(),
                _ => ord.is_ge(),
            };
            return Ok(r as u64);
        }
    };
    Ok(ty.normalize(v))
}

/// Applies a unary operation in type `ty`. (`Not` on a float, which the compiler never
/// emits, inverts the stored bits.)
pub fn unary(op: UnaryOp, ty: NumTy, a: u64) -> u64 {
    match (op, ty) {
        (UnaryOp::Neg, NumTy::F64) => (-f64::from_bits(a)).to_bits(),
        (UnaryOp::Neg, NumTy::F32) => (-f32::from_bits(a as u32)).to_bits() as u64,
        (UnaryOp::LogNot, NumTy::F64) => (f64::from_bits(a) == 0.0) as u64,
        (UnaryOp::LogNot, NumTy::F32) => (f32::from_bits(a as u32) == 0.0) as u64,
        (UnaryOp::Not, NumTy::F32) => !a & 0xffff_ffff,
        (UnaryOp::Neg, _) => ty.normalize(a.wrapping_neg()),
        (UnaryOp::Not, _) => ty.normalize(!a),
        (UnaryOp::LogNot, _) => (a == 0) as u64,
    }
}

/// Converts a word of type `from` to type `to`.
pub fn convert(from: ScalarTy, to: ScalarTy, v: u64) -> Result<u64, RunErrorKind> {
    if from == to {
        // The identity keeps every bit (a signalling NaN stays signalling).
        return Ok(v);
    }
    let as_f64 = |v: u64| match from {
        ScalarTy::F32 => f32::from_bits(v as u32) as f64,
        _ => f64::from_bits(v),
    };
    match (from.is_float(), to.is_float()) {
        (false, false) => Ok(to.normalize(v)),
        (false, true) => {
            let signed = from.is_signed();
            Ok(match (to, signed) {
                (ScalarTy::F64, true) => (v as i64 as f64).to_bits(),
                (ScalarTy::F64, false) => (v as f64).to_bits(),
                (_, true) => (v as i64 as f32).to_bits() as u64,
                (_, false) => (v as f32).to_bits() as u64,
            })
        }
        (true, true) => {
            let x = as_f64(v);
            Ok(match to {
                ScalarTy::F64 => x.to_bits(),
                _ => {
                    let r = x as f32;
                    if r.is_infinite() && x.is_finite() {
                        return Err(RunErrorKind::FloatRange);
                    }
                    r.to_bits() as u64
                }
            })
        }
        (true, false) => {
            let x = as_f64(v);
            if to == ScalarTy::Bool {
                return Ok((x != 0.0) as u64);
            }
            float_to_int(x, to).ok_or(RunErrorKind::FloatConversion { to })
        }
    }
}

/// Truncates toward zero; `None` when the result does not fit `to` (or `x` is NaN).
fn float_to_int(x: f64, to: ScalarTy) -> Option<u64> {
    let t = x.trunc();
    if t.is_nan() {
        return None;
    }
    let bits = to.bits();
    if to.is_signed() {
        // [-2^(bits-1), 2^(bits-1)): both bounds are exact powers of two.
        let lo = -(2f64.powi(bits as i32 - 1));
        let hi = 2f64.powi(bits as i32 - 1);
        (t >= lo && t < hi).then_some(t as i64 as u64)
    } else {
        let hi = 2f64.powi(bits as i32);
        (t >= 0.0 && t < hi).then_some(t as u64)
    }
}
