//! The static types of HyperDbg v0.23 scripts: what a type name means, sizes, and C's
//! promotion and usual arithmetic conversions, which decide the [`NumTy`] each operation
//! computes in.
//!
//! HyperDbg's defaults (notes-language §3.1): integer literals, registers, pseudo-registers
//! and symbols are `long` (signed 64-bit); a variable created by plain assignment is
//! `unsigned long long`; built-ins return `unsigned long long`; comparisons and `! && ||`
//! give `int`; a float literal is `double`. `long` is 8 bytes (LP64), `char` is signed.
//!
//! Aggregates (v0.23): arrays and structs laid out as C does on x64 (each member at the
//! next multiple of its alignment, the struct's size a multiple of its largest member
//! alignment). A struct type is its [`StructId`] in the script's [`StructTable`], which
//! knows its members and layout, so types stay small and a forward-declared struct is
//! completed in one place.

use std::fmt;
use std::rc::Rc;

use hvscript_grammar::ast::{TypeName, TypeWord};

use crate::ir::{NumTy, ScalarTy};

/// A value's static type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    Void,
    Bool,
    /// `bits` is 8, 16, 32 or 64.
    Int {
        bits: u8,
        signed: bool,
    },
    Float,
    Double,
    Pointer(Box<Type>),
    /// `elem name[len]`; `int t[3][4]` is an array of 3 arrays of 4 `int`s.
    Array {
        elem: Box<Type>,
        len: u64,
    },
    /// `struct tag`: the layout is in the script's [`StructTable`].
    Struct {
        id: StructId,
        tag: Rc<str>,
    },
}

pub type StructId = u32;

/// One member of a struct, at its offset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub ty: Type,
    pub offset: u64,
}

/// A struct's members and layout; `members` is `None` while it is only declared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructLayout {
    pub tag: Rc<str>,
    pub members: Option<Vec<Field>>,
    pub size: u64,
    pub align: u64,
}

/// The structs a script defines, by id.
#[derive(Clone, Debug, Default)]
pub struct StructTable {
    pub structs: Vec<StructLayout>,
}

impl StructTable {
    /// Size in bytes (`sizeof`); `None` for `void` and incomplete structs.
    pub fn size(&self, ty: &Type) -> Option<u64> {
        match ty {
            Type::Array { elem, len } => self.size(elem)?.checked_mul(*len),
            Type::Struct { id, .. } => {
                let s = self.structs.get(*id as usize)?;
                s.members.as_ref().map(|_| s.size)
            }
            other => other.size(),
        }
    }

    /// Alignment in bytes (natural alignment, as C on x64).
    pub fn align(&self, ty: &Type) -> Option<u64> {
        match ty {
            Type::Array { elem, .. } => self.align(elem),
            Type::Struct { id, .. } => {
                let s = self.structs.get(*id as usize)?;
                s.members.as_ref().map(|_| s.align)
            }
            other => other.size(),
        }
    }

    /// Lays out `members` (name, type) as C does; `Err` names the member whose type has no
    /// size (an incomplete struct or `void`).
    pub fn layout(&self, members: &[(String, Type)]) -> Result<(Vec<Field>, u64, u64), usize> {
        let mut fields = Vec::with_capacity(members.len());
        let (mut offset, mut max_align) = (0u64, 1u64);
        for (i, (name, ty)) in members.iter().enumerate() {
            let (Some(size), Some(align)) = (self.size(ty), self.align(ty)) else {
                return Err(i);
            };
            let align = align.max(1);
            offset = offset.div_ceil(align) * align;
            fields.push(Field {
                name: name.clone(),
                ty: ty.clone(),
                offset,
            });
            offset += size;
            max_align = max_align.max(align);
        }
        Ok((fields, offset.div_ceil(max_align) * max_align, max_align))
    }

    pub fn field(&self, id: StructId, name: &str) -> Option<&Field> {
        self.structs
            .get(id as usize)?
            .members
            .as_ref()?
            .iter()
            .find(|f| f.name == name)
    }

    pub fn is_complete(&self, id: StructId) -> bool {
        self.structs
            .get(id as usize)
            .is_some_and(|s| s.members.is_some())
    }

    /// The scalar pieces of a value of type `ty` in memory order: (offset, type). An
    /// initializer list fills them in this order (HyperDbg flattens nested braces).
    pub fn leaves(&self, ty: &Type, base: u64, out: &mut Vec<(u64, Type)>) {
        match ty {
            Type::Array { elem, len } => {
                let size = self.size(elem).unwrap_or(0);
                for i in 0..*len {
                    self.leaves(elem, base + i * size, out);
                }
            }
            Type::Struct { id, .. } => {
                if let Some(members) = self
                    .structs
                    .get(*id as usize)
                    .and_then(|s| s.members.as_ref())
                {
                    for f in members {
                        self.leaves(&f.ty, base + f.offset, out);
                    }
                }
            }
            other => {
                if other.scalar().is_some() {
                    out.push((base, other.clone()));
                }
            }
        }
    }
}

impl Type {
    pub const LONG: Type = Type::Int {
        bits: 64,
        signed: true,
    };
    pub const ULONGLONG: Type = Type::Int {
        bits: 64,
        signed: false,
    };
    pub const INT: Type = Type::Int {
        bits: 32,
        signed: true,
    };

    /// The type built-in type words denote (struct tags and typedef names are resolved by
    /// the lowering, which knows the script's definitions), or why they denote none.
    pub fn from_name(name: &TypeName) -> Result<Type, String> {
        let base = from_words(&name.words)?;
        let mut ty = base;
        for _ in 0..name.pointers {
            ty = Type::Pointer(Box::new(ty));
        }
        Ok(ty)
    }

    /// Size in bytes of a scalar type; `void` and aggregates (see [`StructTable::size`])
    /// have none here.
    pub fn size(&self) -> Option<u64> {
        Some(match self {
            Type::Void | Type::Array { .. } | Type::Struct { .. } => return None,
            Type::Bool => 1,
            Type::Int { bits, .. } => *bits as u64 / 8,
            Type::Float => 4,
            Type::Double | Type::Pointer(_) => 8,
        })
    }

    pub fn is_float(&self) -> bool {
        matches!(self, Type::Float | Type::Double)
    }

    pub fn is_pointer(&self) -> bool {
        matches!(self, Type::Pointer(_))
    }

    pub fn is_integer(&self) -> bool {
        matches!(self, Type::Bool | Type::Int { .. })
    }

    pub fn is_aggregate(&self) -> bool {
        matches!(self, Type::Array { .. } | Type::Struct { .. })
    }

    /// The struct behind arrays and pointers, if any (`struct Node *[4]` -> `Node`).
    pub fn innermost_struct(&self) -> Option<StructId> {
        match self {
            Type::Struct { id, .. } => Some(*id),
            Type::Array { elem: t, .. } | Type::Pointer(t) => t.innermost_struct(),
            _ => None,
        }
    }

    /// How values of this type are stored (pointers as 64-bit unsigned addresses).
    pub fn scalar(&self) -> Option<ScalarTy> {
        Some(match self {
            Type::Void | Type::Array { .. } | Type::Struct { .. } => return None,
            Type::Bool => ScalarTy::Bool,
            Type::Int { bits, signed } => match (bits, signed) {
                (8, true) => ScalarTy::I8,
                (8, false) => ScalarTy::U8,
                (16, true) => ScalarTy::I16,
                (16, false) => ScalarTy::U16,
                (32, true) => ScalarTy::I32,
                (32, false) => ScalarTy::U32,
                (_, true) => ScalarTy::I64,
                (_, false) => ScalarTy::U64,
            },
            Type::Float => ScalarTy::F32,
            Type::Double => ScalarTy::F64,
            Type::Pointer(_) => ScalarTy::U64,
        })
    }

    /// The arithmetic type after C's integer promotions (`bool`, `char`, `short` -> `int`);
    /// pointers compute as unsigned 64-bit.
    pub fn promoted(&self) -> Option<NumTy> {
        Some(match self {
            Type::Void | Type::Array { .. } | Type::Struct { .. } => return None,
            Type::Bool => NumTy::I32,
            Type::Int { bits, signed } => match (bits, signed) {
                (8 | 16, _) | (32, true) => NumTy::I32,
                (32, false) => NumTy::U32,
                (_, true) => NumTy::I64,
                (_, false) => NumTy::U64,
            },
            Type::Float => NumTy::F32,
            Type::Double => NumTy::F64,
            Type::Pointer(_) => NumTy::U64,
        })
    }

    /// The type of values computed in `ty`.
    pub fn of_num(ty: NumTy) -> Type {
        match ty {
            NumTy::I32 => Type::INT,
            NumTy::U32 => Type::Int {
                bits: 32,
                signed: false,
            },
            NumTy::I64 => Type::LONG,
            NumTy::U64 => Type::ULONGLONG,
            NumTy::F32 => Type::Float,
            NumTy::F64 => Type::Double,
        }
    }
}

/// C's usual arithmetic conversions of two promoted operand types.
pub fn common(a: NumTy, b: NumTy) -> NumTy {
    use NumTy::*;
    match (a, b) {
        (F64, _) | (_, F64) => F64,
        (F32, _) | (_, F32) => F32,
        _ if a == b => a,
        // Mixed: the 64-bit type wins; at equal width the unsigned one; `long` holds
        // every `unsigned int`.
        (U64, _) | (_, U64) => U64,
        (I64, _) | (_, I64) => I64,
        _ => U32,
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Type::Void => f.write_str("void"),
            Type::Bool => f.write_str("bool"),
            Type::Int { bits, signed } => {
                let name = match bits {
                    8 => "char",
                    16 => "short",
                    32 => "int",
                    _ => "long",
                };
                match (signed, bits) {
                    (true, _) => f.write_str(name),
                    (false, 64) => f.write_str("unsigned long long"),
                    (false, _) => write!(f, "unsigned {name}"),
                }
            }
            Type::Float => f.write_str("float"),
            Type::Double => f.write_str("double"),
            Type::Pointer(t) => match &**t {
                Type::Pointer(_) => write!(f, "{t}*"),
                _ => write!(f, "{t} *"),
            },
            Type::Array { .. } => {
                let mut dims = String::new();
                let mut t = self;
                while let Type::Array { elem, len } = t {
                    dims.push_str(&format!("[{len}]"));
                    t = elem;
                }
                write!(f, "{t}{dims}")
            }
            Type::Struct { tag, .. } => write!(f, "struct {tag}"),
        }
    }
}

fn from_words(words: &[TypeWord]) -> Result<Type, String> {
    let count = |w: TypeWord| words.iter().filter(|x| **x == w).count();
    let (void, bool_, char_, short, int, long) = (
        count(TypeWord::Void),
        count(TypeWord::Bool),
        count(TypeWord::Char),
        count(TypeWord::Short),
        count(TypeWord::Int),
        count(TypeWord::Long),
    );
    let (unsigned, signed, float, double) = (
        count(TypeWord::Unsigned),
        count(TypeWord::Signed),
        count(TypeWord::Float),
        count(TypeWord::Double),
    );
    let written = words.iter().map(|w| w.name()).collect::<Vec<_>>().join(" ");
    let bad = || Err(format!("`{written}` is not a type"));
    if unsigned + signed > 1 || int > 1 || short > 1 || char_ > 1 || long > 2 {
        return bad();
    }
    let sign_words = unsigned + signed;
    let others = void + bool_ + float + double;
    if others > 0 {
        // void, bool, float and double stand alone.
        return if words.len() == 1 {
            Ok(match words[0] {
                TypeWord::Void => Type::Void,
                TypeWord::Bool => Type::Bool,
                TypeWord::Float => Type::Float,
                _ => Type::Double,
            })
        } else {
            bad()
        };
    }
    let bits = match (char_, short, long) {
        (1, 0, 0) if int == 0 => 8,
        (0, 1, 0) => 16,
        (0, 0, 0) => 32,
        (0, 0, 1 | 2) => 64,
        _ => return bad(),
    };
    if bits == 32 && int == 0 && sign_words == 0 {
        return bad();
    }
    Ok(Type::Int {
        bits,
        signed: unsigned == 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hvscript_grammar::ast::Span;

    fn ty(words: &str) -> Result<Type, String> {
        let words = words
            .split_whitespace()
            .map(|w| TypeWord::from_name(w).unwrap())
            .collect();
        Type::from_name(&TypeName {
            words,
            named: None,
            pointers: 0,
            span: Span::new(0, 0),
        })
    }

    #[test]
    fn c_type_names() {
        let int = |bits, signed| Ok(Type::Int { bits, signed });
        assert_eq!(ty("char"), int(8, true));
        assert_eq!(ty("unsigned char"), int(8, false));
        assert_eq!(ty("short int"), int(16, true));
        assert_eq!(ty("unsigned short"), int(16, false));
        assert_eq!(ty("int"), int(32, true));
        assert_eq!(ty("signed"), int(32, true));
        assert_eq!(ty("unsigned"), int(32, false));
        assert_eq!(ty("long"), int(64, true));
        assert_eq!(ty("long long int"), int(64, true));
        assert_eq!(ty("unsigned long long"), int(64, false));
        assert_eq!(ty("long unsigned"), int(64, false));
        assert_eq!(ty("bool"), Ok(Type::Bool));
        assert_eq!(ty("double"), Ok(Type::Double));
        for bad in [
            "long double",
            "unsigned float",
            "long long long",
            "short long",
            "signed unsigned",
            "char int",
            "void int",
            "int int",
        ] {
            assert!(ty(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn usual_arithmetic_conversions() {
        use NumTy::*;
        assert_eq!(common(I32, U32), U32);
        assert_eq!(common(I64, U32), I64);
        assert_eq!(common(I64, U64), U64);
        assert_eq!(common(I32, I64), I64);
        assert_eq!(common(U64, F32), F32);
        assert_eq!(common(F32, F64), F64);
    }
}
