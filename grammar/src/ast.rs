//! The abstract syntax tree. Every node carries the byte span of its source text.
//!
//! Conditions (`if`, `while`, ...) and plain expressions share one [`Expr`] type; the
//! grammar decides which operators may appear where (comparisons and `&&`/`||` only in
//! conditions, as in HyperDbg). Assignment targets are kept as expressions and checked to
//! be places when the statement is built, so a bad target gets a precise message.

use std::fmt;

use hvscript_abi::{Builtin, PseudoReg, Register};

/// A byte range of the source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: start as u32,
            end: end as u32,
        }
    }
    pub fn range(self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// A whole script: what follows `script` in an event command, or a `?` command.
#[derive(Clone, Debug, PartialEq)]
pub struct Script {
    pub stmts: Vec<Stmt>,
    /// Written as `{ ... }` (the usual form in event commands).
    pub braced: bool,
    /// Written as a `?` command.
    pub eval_command: bool,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Block {
    pub stmts: Vec<Stmt>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    pub kind: StmtKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StmtKind {
    /// `a = b = e;`: every target receives the value of `value`.
    Assign {
        targets: Vec<Expr>,
        value: Expr,
    },
    /// `a op= e;`
    CompoundAssign {
        target: Expr,
        op: BinOp,
        value: Expr,
    },
    /// `a++;` / `a--;`
    IncDec {
        target: Expr,
        increment: bool,
    },
    /// A call standing as a statement.
    Call(Expr),
    /// `int x = e;`, `int t[2][3] = {...};`, `struct Point p = {1, 2};`
    Decl(VarDecl),
    /// `struct Tag { members };`, or `struct Tag;` (a forward declaration: `members` is
    /// `None`).
    StructDef(StructDef),
    /// `typedef unsigned short word;`, `typedef struct Tag *PTag;`
    Typedef {
        ty: TypeName,
        name: Name,
        dims: Vec<ArrayDim>,
    },
    If {
        arms: Vec<CondArm>,
        otherwise: Option<Block>,
    },
    While {
        cond: Expr,
        body: Block,
    },
    DoWhile {
        body: Block,
        cond: Expr,
    },
    For {
        init: Option<Box<Stmt>>,
        cond: Expr,
        step: Box<Stmt>,
        body: Block,
    },
    Break,
    Continue,
    Return(Option<Expr>),
    FuncDef(FuncDef),
    Include {
        path: Vec<u8>,
    },
}

/// One `if (cond) { ... }` or `elsif (cond) { ... }`.
#[derive(Clone, Debug, PartialEq)]
pub struct CondArm {
    pub cond: Expr,
    pub body: Block,
}

#[derive(Clone, Debug, PartialEq)]
pub struct VarDecl {
    pub ty: TypeName,
    pub name: Name,
    /// Array dimensions, outermost first (`t[3][4]`: 3 then 4).
    pub dims: Vec<ArrayDim>,
    /// `None` only where the grammar allows it (struct variables and struct pointers).
    pub init: Option<Init>,
}

/// One `[N]` of an array declarator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArrayDim {
    pub len: u64,
    pub span: Span,
}

/// An initializer: an expression, or a brace list (arrays and structs), whose items may
/// themselves be brace lists.
#[derive(Clone, Debug, PartialEq)]
pub enum Init {
    Expr(Expr),
    List { items: Vec<Init>, span: Span },
}

impl Init {
    pub fn span(&self) -> Span {
        match self {
            Init::Expr(e) => e.span,
            Init::List { span, .. } => *span,
        }
    }

    /// Every expression of the initializer, in source order.
    pub fn exprs(&self) -> Vec<&Expr> {
        let mut out = Vec::new();
        fn walk<'a>(i: &'a Init, out: &mut Vec<&'a Expr>) {
            match i {
                Init::Expr(e) => out.push(e),
                Init::List { items, .. } => items.iter().for_each(|i| walk(i, out)),
            }
        }
        walk(self, &mut out);
        out
    }
}

/// A struct definition or forward declaration.
#[derive(Clone, Debug, PartialEq)]
pub struct StructDef {
    pub tag: Name,
    pub members: Option<Vec<Member>>,
}

/// One member of a struct: `unsigned short right;`, `struct Node *next;`, `char name[16];`
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    pub ty: TypeName,
    pub name: Name,
    pub dims: Vec<ArrayDim>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FuncDef {
    pub ret: TypeName,
    pub name: Name,
    pub params: Vec<Param>,
    pub body: Block,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub ty: TypeName,
    pub name: Name,
}

/// A name and where it was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Name {
    pub text: String,
    pub span: Span,
}

/// A C type as written: type words and pointer stars (`unsigned long long *`), or a
/// struct tag or typedef name and stars (`struct Node *`, `PNODE`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TypeName {
    /// Empty when `named` is set.
    pub words: Vec<TypeWord>,
    pub named: Option<NamedType>,
    pub pointers: u8,
    pub span: Span,
}

/// A type named by the script itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamedType {
    /// `struct Tag`
    Struct(Name),
    /// A name declared by `typedef`.
    Typedef(Name),
}

impl fmt::Display for TypeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.named {
            Some(NamedType::Struct(tag)) => write!(f, "struct {}", tag.text)?,
            Some(NamedType::Typedef(name)) => f.write_str(&name.text)?,
            None => {}
        }
        for (i, w) in self.words.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            f.write_str(w.name())?;
        }
        for _ in 0..self.pointers {
            f.write_str("*")?;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TypeWord {
    Void,
    Bool,
    Char,
    Short,
    Int,
    Long,
    Unsigned,
    Signed,
    Float,
    Double,
}

impl TypeWord {
    pub fn from_name(s: &str) -> Option<TypeWord> {
        Some(match s {
            "void" => TypeWord::Void,
            "bool" => TypeWord::Bool,
            "char" => TypeWord::Char,
            "short" => TypeWord::Short,
            "int" => TypeWord::Int,
            "long" => TypeWord::Long,
            "unsigned" => TypeWord::Unsigned,
            "signed" => TypeWord::Signed,
            "float" => TypeWord::Float,
            "double" => TypeWord::Double,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            TypeWord::Void => "void",
            TypeWord::Bool => "bool",
            TypeWord::Char => "char",
            TypeWord::Short => "short",
            TypeWord::Int => "int",
            TypeWord::Long => "long",
            TypeWord::Unsigned => "unsigned",
            TypeWord::Signed => "signed",
            TypeWord::Float => "float",
            TypeWord::Double => "double",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Number(u64),
    Float(f64),
    /// A narrow string literal (only as an argument of the built-ins that take one).
    Str(Vec<u8>),
    /// A wide string literal `L"..."`.
    WStr(Vec<u16>),
    Register(Register),
    Pseudo(PseudoReg),
    /// A local variable or parameter.
    Local(String),
    /// A global variable `.name` (the name without the dot).
    Global(String),
    /// `module!name`, resolved through the debugger's symbols.
    Symbol(String),
    Unary {
        op: UnOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinOp,
        lhs: Box<Expr>,
        rhs: Box<Expr>,
    },
    Call {
        callee: Callee,
        callee_span: Span,
        args: Vec<Expr>,
    },
    Index {
        base: Box<Expr>,
        index: Box<Expr>,
    },
    Member {
        base: Box<Expr>,
        arrow: bool,
        field: Name,
    },
    /// `(type) operand`.
    Cast {
        ty: TypeName,
        operand: Box<Expr>,
    },
    /// `sizeof(type)`.
    SizeofType(TypeName),
    /// `sizeof expr` / `sizeof(expr)`: the operand is not evaluated.
    SizeofExpr(Box<Expr>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Callee {
    Builtin(Builtin),
    User(String),
}

impl Callee {
    pub fn name(&self) -> &str {
        match self {
            Callee::Builtin(b) => b.name(),
            Callee::User(n) => n,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    Plus,
    BitNot,
    LogNot,
    /// `*e`: read 8 bytes at e (HyperDbg's `poi`).
    Deref,
    /// `&place`
    AddrOf,
}

impl UnOp {
    pub fn symbol(self) -> &'static str {
        match self {
            UnOp::Neg => "-",
            UnOp::Plus => "+",
            UnOp::BitNot => "~",
            UnOp::LogNot => "!",
            UnOp::Deref => "*",
            UnOp::AddrOf => "&",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Mul,
    Div,
    Mod,
    Add,
    Sub,
    Shl,
    Shr,
    BitAnd,
    BitXor,
    BitOr,
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    LogAnd,
    LogOr,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Mod => "%",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Shl => "<<",
            BinOp::Shr => ">>",
            BinOp::BitAnd => "&",
            BinOp::BitXor => "^",
            BinOp::BitOr => "|",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Gt => ">",
            BinOp::Le => "<=",
            BinOp::Ge => ">=",
            BinOp::LogAnd => "&&",
            BinOp::LogOr => "||",
        }
    }

    /// Comparisons and logical operators yield 0 or 1.
    pub fn is_boolean(self) -> bool {
        matches!(
            self,
            BinOp::Eq
                | BinOp::Ne
                | BinOp::Lt
                | BinOp::Gt
                | BinOp::Le
                | BinOp::Ge
                | BinOp::LogAnd
                | BinOp::LogOr
        )
    }
}

impl Expr {
    pub fn new(kind: ExprKind, span: Span) -> Expr {
        Expr { kind, span }
    }

    /// Whether the expression names a place that can be assigned.
    pub fn is_place(&self) -> bool {
        match &self.kind {
            ExprKind::Register(_) | ExprKind::Local(_) | ExprKind::Global(_) => true,
            ExprKind::Index { base, .. } => base.is_place(),
            ExprKind::Member { base, arrow, .. } => *arrow || base.is_place(),
            ExprKind::Unary {
                op: UnOp::Deref, ..
            } => true,
            _ => false,
        }
    }
}
