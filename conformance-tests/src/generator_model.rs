//! Model of the C# generator that produced the expected values of HyperDbg's public
//! `script-test-cases/*.txt` (HyperDbg/script-engine-test, `EvalScripts/*.cs`).
//!
//! This module owns the computation of "what would the generator have written for this script":
//! the textual rewrite the generator applied (`0n` dropped, `0y`→`0b`, `/`→`//`, `elsif`→`else if`,
//! registers replaced by `0x<value>`), the wrapper it evaluated the result in (one per script
//! shape), and a small C#-subset compiler and interpreter: tokenizer, recursive-descent parser
//! with C# precedence, a binder with C#'s bool/int typing, constant folding with compile-time
//! overflow checks and statement rules, and an interpreter with 32-bit wrapping `int`
//! arithmetic. A [`ModelError`] says why C# would have refused the script (the record's
//! `$error$`). It does not model HyperDbg; hvscript's real engine does that.
//!
//! The three wrappers (`Eval.cs`):
//! * expression records `x = <E>; test_statement(x);`: `var num = <E>;`, result `(int)num`;
//! * if-chains: `int tmp = 0; void test_statement(int Token) { tmp = Token; } <script> int num = tmp;`
//!   (no `x`, no `tmp_counter`);
//! * loops: as if-chains plus `int val = 0; int tmp_counter = 0; int x = 0;` before the script
//!   and `test_statement(tmp_counter);` after it, so the result is the final `tmp_counter`.

use std::fmt;

/// Register and pseudo-register values the generator substituted, in its replacement order.
pub const GENERATOR_IDENTIFIERS: [(&str, i32); 18] = [
    ("@rax", 0x1),
    ("@rdx", 0x3),
    ("@rbx", 0x4),
    ("@rsp", 0x5),
    ("@rbp", 0x6),
    ("@rsi", 0x7),
    ("@rdi", 0x8),
    ("@r8", 0x9),
    ("@r9", 0xa),
    ("@r10", 0xb),
    ("@r11", 0xc),
    ("@r12", 0xd),
    ("@r13", 0xe),
    ("$proc", 0),
    ("$thread", 0),
    ("$teb", 0),
    ("$ip", 0),
    ("$buffer", 0),
];

/// Upper bound on executed statements and loop tests before the model gives up.
pub const STEP_LIMIT: u64 = 5_000_000;

/// Why the generator's C# evaluation would have failed (its `$error$`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorKind {
    /// The `/`→`//` rewrite turned the rest of the line into a comment and what was left does
    /// not compile.
    CommentedOut,
    /// A character C# cannot lex here (`@`, `$`, `#`, quotes …).
    UnknownToken,
    /// A token pair with no meaning in C#: `<>`, `><`, binary `!`.
    UnknownOperator,
    /// Any other syntax error: juxtaposed operands, unbalanced parentheses or braces, `;` inside
    /// a condition, missing operand …
    Syntax,
    /// A name that the wrapper does not declare (e.g. `x` in an if-chain).
    UndeclaredName,
    /// bool and int mixed where C# has no such operator (`int ^ bool`, `!int`, `bool < int` …).
    TypeMismatch,
    /// A condition of type int.
    NonBoolCondition,
    /// `=`, `++`, `--` applied to something that is not a variable.
    NotAssignable,
    /// An expression used as a statement that C# does not allow as one (CS0201).
    NotAStatement,
    /// A call of something other than `test_statement(int)`, or a wrong argument count.
    BadCall,
    /// `break` or `continue` outside a loop.
    JumpOutsideLoop,
    /// A constant expression overflows `int` at compile time (CS0220).
    ConstantOverflow,
    /// Division or remainder by a constant zero.
    DivisionByZero,
    /// A literal that is not an `int` in C#.
    LiteralTooLarge,
    /// An expression record whose value is a bool: `(int)` on the boxed result throws.
    ResultNotInt,
    /// The script does not have one of the generator's three shapes.
    UnknownShape,
    /// The model stopped after [`STEP_LIMIT`] steps.
    StepLimit,
    /// Only under [`Semantics::shift_count_error`]: a shift count outside 0..63 stops the run
    /// (hvscript and HyperDbg), where C# masks the count.
    ShiftCount,
}

impl ErrorKind {
    /// A short stable label, for histograms.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::CommentedOut => "commented-out by `/`→`//`",
            ErrorKind::UnknownToken => "unknown token",
            ErrorKind::UnknownOperator => "not a C# operator (`<>`, `><`, binary `!`)",
            ErrorKind::Syntax => "syntax error",
            ErrorKind::UndeclaredName => "undeclared name",
            ErrorKind::TypeMismatch => "bool/int type mismatch",
            ErrorKind::NonBoolCondition => "int condition",
            ErrorKind::NotAssignable => "assignment/++/-- to a non-variable",
            ErrorKind::NotAStatement => "expression is not a statement",
            ErrorKind::BadCall => "bad call",
            ErrorKind::JumpOutsideLoop => "break/continue outside a loop",
            ErrorKind::ConstantOverflow => "constant overflow",
            ErrorKind::DivisionByZero => "division by constant zero",
            ErrorKind::LiteralTooLarge => "literal too large for int",
            ErrorKind::ResultNotInt => "result is not an int",
            ErrorKind::UnknownShape => "unknown script shape",
            ErrorKind::StepLimit => "step limit",
            ErrorKind::ShiftCount => "shift count outside 0..63",
        }
    }
}

/// Why the model (standing in for the C# generator) rejects a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelError {
    /// The category.
    pub kind: ErrorKind,
    /// A human-readable reason, quoting the rewritten C# text near the problem.
    pub reason: String,
}

impl ModelError {
    fn new(kind: ErrorKind, reason: impl Into<String>) -> Self {
        ModelError {
            kind,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.label(), self.reason)
    }
}

impl std::error::Error for ModelError {}

/// The generator's three script shapes, each evaluated in its own C# wrapper.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ScriptKind {
    /// `x = <expression>; test_statement(x);` (01-expressions).
    Expression,
    /// An if/elsif/else chain (02, 03).
    Conditional,
    /// A `for`, `while` or `do` loop (04–09).
    Loop,
}

/// The shape of a record's script, from its first word, or `None`.
pub fn classify(script: &str) -> Option<ScriptKind> {
    let t = script.trim_start();
    if expression_sentence(script).is_some() {
        return Some(ScriptKind::Expression);
    }
    let word: String = t
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    match word.as_str() {
        "if" => Some(ScriptKind::Conditional),
        "for" | "while" | "do" => Some(ScriptKind::Loop),
        _ => None,
    }
}

fn expression_sentence(script: &str) -> Option<&str> {
    script
        .trim()
        .strip_prefix("x = ")?
        .strip_suffix("; test_statement(x);")
}

/// The generator's textual rewrite of HyperDbg script text into C# (`ScriptApplyCSharpChange`).
pub fn to_csharp(script: &str) -> String {
    let mut t = script
        .replace("0n", "")
        .replace("0y", "0b")
        .replace('/', "//")
        .replace("elsif", "else if");
    for (name, value) in GENERATOR_IDENTIFIERS {
        t = t.replace(name, &format!("0x{value:X}"));
    }
    t
}

/// The expected value the generator computed for one record's script (32-bit, as C# `int`).
pub fn evaluate(script: &str) -> Result<u32, ModelError> {
    match classify(script) {
        Some(kind) => evaluate_as(script, kind),
        None => Err(ModelError::new(
            ErrorKind::UnknownShape,
            "the script is neither `x = …; test_statement(x);` nor starts with if/for/while/do",
        )),
    }
}

/// Evaluates `script` in the wrapper of the given shape. For [`ScriptKind::Expression`] the
/// script must be `x = <E>; test_statement(x);` (only `<E>` is given to C#); otherwise the whole
/// script is taken as it is.
pub fn evaluate_as(script: &str, kind: ScriptKind) -> Result<u32, ModelError> {
    match kind {
        ScriptKind::Expression => {
            let sentence = expression_sentence(script).ok_or_else(|| {
                ModelError::new(
                    ErrorKind::UnknownShape,
                    "an expression record must read `x = <E>; test_statement(x);`",
                )
            })?;
            eval_expression_wrapper(sentence)
        }
        ScriptKind::Conditional => eval_statement_wrapper(script, false),
        ScriptKind::Loop => eval_statement_wrapper(script, true),
    }
}

/// Which evaluation rules the model applies. [`Semantics::GENERATOR`] is the C# generator
/// (what [`evaluate`] uses); switching single rules to HyperDbg's lets a runner compute *why*
/// hvscript's value differs from a record's expected value instead of listing case numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Semantics {
    /// Bare digit strings (`17`) are hex, as HyperDbg reads them (the generator read decimal).
    pub hex_bare_digits: bool,
    /// 64-bit wrapping arithmetic (HyperDbg, hvscript) instead of C#'s 32-bit `int`.
    pub wide: bool,
    /// A shift count outside 0..63 is a run-time error (hvscript, HyperDbg) instead of being
    /// masked to 5 bits (C#, or 6 bits when `wide`).
    pub shift_count_error: bool,
}

impl Semantics {
    /// The C# generator's rules.
    pub const GENERATOR: Semantics = Semantics {
        hex_bare_digits: false,
        wide: false,
        shift_count_error: false,
    };
    /// HyperDbg's (and hvscript's) rules for the same scripts.
    pub const HYPERDBG: Semantics = Semantics {
        hex_bare_digits: true,
        wide: true,
        shift_count_error: true,
    };

    /// The names of the rules that differ from the generator's.
    pub fn describe(self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.hex_bare_digits {
            v.push("bare digits read as hex");
        }
        if self.wide {
            v.push("64-bit arithmetic");
        }
        if self.shift_count_error {
            v.push("shift count outside 0..63 is an error (C# masks it)");
        }
        v
    }

    /// Every combination of the rules, fewest differences from the generator first.
    pub fn all() -> Vec<Semantics> {
        let mut v: Vec<Semantics> = (0u8..8)
            .map(|b| Semantics {
                hex_bare_digits: b & 1 != 0,
                wide: b & 2 != 0,
                shift_count_error: b & 4 != 0,
            })
            .collect();
        v.sort_by_key(|s| s.describe().len());
        v
    }
}

/// Evaluates `script` in the wrapper of its shape under the given rules. The value is 64-bit:
/// under 32-bit rules it is the `int` result sign-extended (the value a 64-bit engine shows
/// for the same bits). Under non-generator rules the C# compile-time checks that depend on
/// 32-bit `int` (literal range, constant overflow) are not applied; the typing rules are.
pub fn evaluate_with(script: &str, sem: Semantics) -> Result<u64, ModelError> {
    if sem == Semantics::GENERATOR {
        return evaluate(script).map(|v| v as i32 as i64 as u64);
    }
    let kind = classify(script).ok_or_else(|| {
        ModelError::new(
            ErrorKind::UnknownShape,
            "the script is neither `x = …; test_statement(x);` nor starts with if/for/while/do",
        )
    })?;
    let text = if sem.hex_bare_digits {
        bare_digits_as_hex(script)
    } else {
        script.to_string()
    };
    match kind {
        ScriptKind::Expression => {
            let sentence = expression_sentence(&text).ok_or_else(|| {
                ModelError::new(
                    ErrorKind::UnknownShape,
                    "an expression record must read `x = <E>; test_statement(x);`",
                )
            })?;
            eval_expression(sentence, sem)
        }
        ScriptKind::Conditional => eval_statements(&text, false, sem),
        ScriptKind::Loop => eval_statements(&text, true, sem),
    }
}

/// Rewrites every bare digit string of HyperDbg script text (`17`, not `0x17`, `0n17`,
/// `0y101` or the digits of `@r8`) to `0x<digits>`, which is how HyperDbg reads it.
pub fn bare_digits_as_hex(script: &str) -> String {
    let b = script.as_bytes();
    let mut out = String::with_capacity(script.len() + 16);
    let mut i = 0;
    while i < b.len() {
        let word_start = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if b[i].is_ascii_alphanumeric() || b[i] == b'_' {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            let word = &script[i..j];
            if word_start && word.bytes().all(|c| c.is_ascii_digit()) {
                out.push_str("0x");
            }
            out.push_str(word);
            i = j;
        } else {
            let ch = script[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// `int.ToString("X")` of a result: upper-case hex, no prefix, negative values as 8 digits.
pub fn format_expected(v: u32) -> String {
    format!("{v:X}")
}

// ---------------------------------------------------------------------------------------------
// Tokenizer
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Num(u64),
    Ident(String),
    Punct(&'static str),
    Unknown(String),
    Eof,
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    pos: usize,
}

/// Tokens of rewritten C# text, and the offset of a `//` comment if one cut the line short.
struct Lexed {
    tokens: Vec<Token>,
    comment_at: Option<usize>,
}

const PUNCTS: [&str; 43] = [
    "<<=", ">>=", "<>", "><", "&&", "||", "==", "!=", "<=", ">=", "<<", ">>", "++", "--", "+=",
    "-=", "*=", "/=", "%=", "&=", "|=", "^=", "=>", "+", "-", "*", "/", "%", "&", "|", "^", "!",
    "~", "=", "<", ">", "(", ")", "{", "}", ";", ",", "?",
];

fn lex(src: &str) -> Lexed {
    let b = src.as_bytes();
    let mut tokens = Vec::new();
    let mut comment_at = None;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'\n' || c == b'\r' || c == b' ' || c == b'\t' {
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            // A line comment: the whole script is one line, so it runs to the end.
            comment_at = Some(i);
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            // Cannot arise after the `/`→`//` rewrite, but lex it as C# would.
            match src[i + 2..].find("*/") {
                Some(end) => {
                    i += end + 4;
                    continue;
                }
                None => {
                    tokens.push(Token {
                        tok: Tok::Unknown("/* (unterminated comment)".into()),
                        pos: i,
                    });
                    break;
                }
            }
        }
        let start = i;
        if c.is_ascii_digit() {
            let (radix, digits_from) = match (c, b.get(i + 1)) {
                (b'0', Some(b'x' | b'X')) => (16, i + 2),
                (b'0', Some(b'b' | b'B')) => (2, i + 2),
                _ => (10, i),
            };
            let mut j = digits_from;
            while j < b.len() && (b[j].is_ascii_hexdigit() || b[j] == b'_') {
                if radix == 10 && !b[j].is_ascii_digit() && b[j] != b'_' {
                    break;
                }
                if radix == 2 && !matches!(b[j], b'0' | b'1' | b'_') {
                    break;
                }
                j += 1;
            }
            let digits: String = src[digits_from..j].chars().filter(|&c| c != '_').collect();
            let tok = if digits.is_empty() {
                Tok::Unknown(src[start..j].to_string())
            } else {
                match u64::from_str_radix(&digits, radix) {
                    Ok(v) => Tok::Num(v),
                    Err(_) => Tok::Num(u64::MAX),
                }
            };
            tokens.push(Token { tok, pos: start });
            i = j;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let mut j = i;
            while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                j += 1;
            }
            tokens.push(Token {
                tok: Tok::Ident(src[i..j].to_string()),
                pos: start,
            });
            i = j;
            continue;
        }
        if let Some(p) = PUNCTS.iter().find(|p| src[i..].starts_with(**p)) {
            tokens.push(Token {
                tok: Tok::Punct(p),
                pos: start,
            });
            i += p.len();
            continue;
        }
        // Anything else: `@reg`, `$name`, quotes, non-ASCII … one token up to the next space.
        let mut j = i + src[i..].chars().next().map_or(1, char::len_utf8);
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
            j += 1;
        }
        tokens.push(Token {
            tok: Tok::Unknown(src[i..j].to_string()),
            pos: start,
        });
        i = j;
    }
    tokens.push(Token {
        tok: Tok::Eof,
        pos: src.len(),
    });
    Lexed { tokens, comment_at }
}

// ---------------------------------------------------------------------------------------------
// Syntax tree and parser
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BinOp {
    Mul,
    Div,
    Rem,
    Add,
    Sub,
    Shl,
    Shr,
    Lt,
    Gt,
    Le,
    Ge,
    Eq,
    Ne,
    BitAnd,
    BitXor,
    BitOr,
    AndAlso,
    OrElse,
}

impl BinOp {
    fn symbol(self) -> &'static str {
        match self {
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Shl => "<<",
            BinOp::Shr => ">>",
            BinOp::Lt => "<",
            BinOp::Gt => ">",
            BinOp::Le => "<=",
            BinOp::Ge => ">=",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::BitAnd => "&",
            BinOp::BitXor => "^",
            BinOp::BitOr => "|",
            BinOp::AndAlso => "&&",
            BinOp::OrElse => "||",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum UnOp {
    Plus,
    Neg,
    Not,
    Compl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    PreInc,
    PreDec,
    PostInc,
    PostDec,
}

#[derive(Clone, Debug)]
enum ExprKind {
    Num(u64),
    Bool(bool),
    Var(String),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Assign(Option<BinOp>, Box<Expr>, Box<Expr>),
    Step(Step, Box<Expr>),
    Call(Box<Expr>, Vec<Expr>),
}

#[derive(Clone, Debug)]
struct Expr {
    kind: ExprKind,
    pos: usize,
    height: usize,
}

/// Bound on the height of an expression tree, so that binding and evaluation (which recurse)
/// cannot exhaust the stack; the suite's expressions are far smaller.
const MAX_HEIGHT: usize = 1000;

impl ExprKind {
    fn height(&self) -> usize {
        match self {
            ExprKind::Num(_) | ExprKind::Bool(_) | ExprKind::Var(_) => 1,
            ExprKind::Unary(_, e) | ExprKind::Step(_, e) => e.height + 1,
            ExprKind::Binary(_, a, b) | ExprKind::Assign(_, a, b) => a.height.max(b.height) + 1,
            ExprKind::Call(f, args) => args.iter().map(|a| a.height).fold(f.height, usize::max) + 1,
        }
    }
}

/// A new expression node, refused when the tree grows taller than [`MAX_HEIGHT`].
fn node(kind: ExprKind, pos: usize) -> Result<Expr, ModelError> {
    let height = kind.height();
    if height > MAX_HEIGHT {
        return Err(ModelError::new(
            ErrorKind::Syntax,
            format!("expression nested deeper than the model's limit of {MAX_HEIGHT}"),
        ));
    }
    Ok(Expr { kind, pos, height })
}

#[derive(Clone, Debug)]
enum Stmt {
    Block(Vec<Stmt>),
    Empty,
    Expr(Expr),
    If(Expr, Box<Stmt>, Option<Box<Stmt>>),
    While(Expr, Box<Stmt>),
    DoWhile(Box<Stmt>, Expr),
    For(Vec<Expr>, Option<Expr>, Vec<Expr>, Box<Stmt>),
    Break(usize),
    Continue(usize),
}

/// Nesting bound for the recursive-descent parser (the suite nests far less).
const MAX_DEPTH: usize = 100;

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    i: usize,
    depth: usize,
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Num(v) => format!("number {v:#x}"),
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Punct(p) => format!("`{p}`"),
        Tok::Unknown(s) => format!("`{s}`"),
        Tok::Eof => "the end of the script".into(),
    }
}

impl<'a> Parser<'a> {
    fn new(src: &'a str, toks: Vec<Token>) -> Self {
        Parser {
            src,
            toks,
            i: 0,
            depth: 0,
        }
    }

    fn peek(&self) -> &Tok {
        self.toks.get(self.i).map_or(&Tok::Eof, |t| &t.tok)
    }

    fn pos(&self) -> usize {
        self.toks.get(self.i).map_or(self.src.len(), |t| t.pos)
    }

    fn bump(&mut self) {
        if self.i < self.toks.len() {
            self.i += 1;
        }
    }

    fn is(&self, p: &str) -> bool {
        matches!(self.peek(), Tok::Punct(q) if *q == p)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == w)
    }

    fn near(&self, pos: usize) -> String {
        near(self.src, pos)
    }

    /// The error for an unexpected current token, with the most specific reason available.
    fn unexpected(&self, wanted: &str) -> ModelError {
        let tok = self.peek().clone();
        let pos = self.pos();
        match &tok {
            Tok::Unknown(s) => ModelError::new(
                ErrorKind::UnknownToken,
                format!("C# cannot lex `{s}` {}", self.near(pos)),
            ),
            Tok::Punct(p @ ("<>" | "><")) => ModelError::new(
                ErrorKind::UnknownOperator,
                format!("`{p}` is not a C# operator {}", self.near(pos)),
            ),
            Tok::Punct("!") if wanted != "an operand" => ModelError::new(
                ErrorKind::UnknownOperator,
                format!("C# has no binary `!` {}", self.near(pos)),
            ),
            Tok::Ident(w) if self.i > 0 && matches!(&self.toks[self.i - 1].tok, Tok::Ident(_)) => {
                let prev = match &self.toks[self.i - 1].tok {
                    Tok::Ident(p) => p.as_str(),
                    _ => "",
                };
                ModelError::new(
                    ErrorKind::Syntax,
                    format!(
                        "stray words `{prev} {w}` (C# reads them as juxtaposed names) {}",
                        self.near(pos)
                    ),
                )
            }
            Tok::Num(_) | Tok::Ident(_) | Tok::Punct("(") if wanted != "an operand" => {
                ModelError::new(
                    ErrorKind::Syntax,
                    format!(
                        "juxtaposed operands: expected {wanted}, found {} {}",
                        describe(&tok),
                        self.near(pos)
                    ),
                )
            }
            _ => ModelError::new(
                ErrorKind::Syntax,
                format!(
                    "expected {wanted}, found {} {}",
                    describe(&tok),
                    self.near(pos)
                ),
            ),
        }
    }

    fn expect(&mut self, p: &str) -> Result<(), ModelError> {
        if self.is(p) {
            self.bump();
            Ok(())
        } else {
            Err(self.unexpected(&format!("`{p}`")))
        }
    }

    fn enter(&mut self) -> Result<(), ModelError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            Err(ModelError::new(
                ErrorKind::Syntax,
                "nesting too deep for the model",
            ))
        } else {
            Ok(())
        }
    }

    // ----- statements -----

    fn statements_to_eof(&mut self) -> Result<Vec<Stmt>, ModelError> {
        let mut out = Vec::new();
        while *self.peek() != Tok::Eof {
            if self.is("}") {
                return Err(ModelError::new(
                    ErrorKind::Syntax,
                    format!("unbalanced `}}` {}", self.near(self.pos())),
                ));
            }
            out.push(self.statement()?);
        }
        Ok(out)
    }

    fn statement(&mut self) -> Result<Stmt, ModelError> {
        self.enter()?;
        let r = self.statement_inner();
        self.depth -= 1;
        r
    }

    fn statement_inner(&mut self) -> Result<Stmt, ModelError> {
        let pos = self.pos();
        if self.is("{") {
            self.bump();
            let mut body = Vec::new();
            while !self.is("}") {
                if *self.peek() == Tok::Eof {
                    return Err(self.unexpected("`}`"));
                }
                body.push(self.statement()?);
            }
            self.bump();
            return Ok(Stmt::Block(body));
        }
        if self.is(";") {
            self.bump();
            return Ok(Stmt::Empty);
        }
        if self.is_word("if") {
            self.bump();
            let cond = self.paren_condition()?;
            let then = self.statement()?;
            let els = if self.is_word("else") {
                self.bump();
                Some(Box::new(self.statement()?))
            } else {
                None
            };
            return Ok(Stmt::If(cond, Box::new(then), els));
        }
        if self.is_word("while") {
            self.bump();
            let cond = self.paren_condition()?;
            let body = self.statement()?;
            return Ok(Stmt::While(cond, Box::new(body)));
        }
        if self.is_word("do") {
            self.bump();
            let body = self.statement()?;
            if !self.is_word("while") {
                return Err(self.unexpected("`while` after the `do` body"));
            }
            self.bump();
            let cond = self.paren_condition()?;
            self.expect(";")?;
            return Ok(Stmt::DoWhile(Box::new(body), cond));
        }
        if self.is_word("for") {
            self.bump();
            self.expect("(")?;
            let init = self.expr_list(";")?;
            self.expect(";")?;
            let cond = if self.is(";") {
                None
            } else {
                Some(self.expression()?)
            };
            self.expect(";")?;
            let step = self.expr_list(")")?;
            self.expect(")")?;
            let body = self.statement()?;
            return Ok(Stmt::For(init, cond, step, Box::new(body)));
        }
        if self.is_word("break") || self.is_word("continue") {
            let is_break = self.is_word("break");
            self.bump();
            self.expect(";")?;
            return Ok(if is_break {
                Stmt::Break(pos)
            } else {
                Stmt::Continue(pos)
            });
        }
        if self.is_word("else") {
            return Err(ModelError::new(
                ErrorKind::Syntax,
                format!("`else` without `if` {}", self.near(pos)),
            ));
        }
        let e = self.expression()?;
        if !self.is(";") {
            return Err(self.unexpected("`;` after the statement"));
        }
        self.bump();
        Ok(Stmt::Expr(e))
    }

    fn paren_condition(&mut self) -> Result<Expr, ModelError> {
        self.expect("(")?;
        let e = self.expression()?;
        if !self.is(")") {
            return Err(self.unexpected("`)` closing the condition"));
        }
        self.bump();
        Ok(e)
    }

    fn expr_list(&mut self, end: &str) -> Result<Vec<Expr>, ModelError> {
        let mut out = Vec::new();
        if self.is(end) {
            return Ok(out);
        }
        loop {
            out.push(self.expression()?);
            if self.is(",") {
                self.bump();
            } else {
                return Ok(out);
            }
        }
    }

    // ----- expressions (C# precedence) -----

    fn expression(&mut self) -> Result<Expr, ModelError> {
        self.enter()?;
        let r = self.assignment();
        self.depth -= 1;
        r
    }

    fn assignment(&mut self) -> Result<Expr, ModelError> {
        let lhs = self.binary(0)?;
        let op = match self.peek() {
            Tok::Punct("=") => None,
            Tok::Punct("+=") => Some(BinOp::Add),
            Tok::Punct("-=") => Some(BinOp::Sub),
            Tok::Punct("*=") => Some(BinOp::Mul),
            Tok::Punct("/=") => Some(BinOp::Div),
            Tok::Punct("%=") => Some(BinOp::Rem),
            Tok::Punct("&=") => Some(BinOp::BitAnd),
            Tok::Punct("|=") => Some(BinOp::BitOr),
            Tok::Punct("^=") => Some(BinOp::BitXor),
            Tok::Punct("<<=") => Some(BinOp::Shl),
            Tok::Punct(">>=") => Some(BinOp::Shr),
            _ => return Ok(lhs),
        };
        let pos = self.pos();
        self.bump();
        let rhs = self.expression()?;
        node(ExprKind::Assign(op, Box::new(lhs), Box::new(rhs)), pos)
    }

    /// Precedence climbing over C#'s binary levels, loosest first.
    fn binary(&mut self, level: usize) -> Result<Expr, ModelError> {
        const LEVELS: [&[(&str, BinOp)]; 10] = [
            &[("||", BinOp::OrElse)],
            &[("&&", BinOp::AndAlso)],
            &[("|", BinOp::BitOr)],
            &[("^", BinOp::BitXor)],
            &[("&", BinOp::BitAnd)],
            &[("==", BinOp::Eq), ("!=", BinOp::Ne)],
            &[
                ("<", BinOp::Lt),
                (">", BinOp::Gt),
                ("<=", BinOp::Le),
                (">=", BinOp::Ge),
            ],
            &[("<<", BinOp::Shl), (">>", BinOp::Shr)],
            &[("+", BinOp::Add), ("-", BinOp::Sub)],
            &[("*", BinOp::Mul), ("/", BinOp::Div), ("%", BinOp::Rem)],
        ];
        let Some(ops) = LEVELS.get(level) else {
            return self.unary();
        };
        let mut lhs = self.binary(level + 1)?;
        loop {
            let Tok::Punct(p) = self.peek() else {
                return Ok(lhs);
            };
            let Some(&(_, op)) = ops.iter().find(|(s, _)| s == p) else {
                return Ok(lhs);
            };
            let pos = self.pos();
            self.bump();
            let rhs = self.binary(level + 1)?;
            lhs = node(ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), pos)?;
        }
    }

    fn unary(&mut self) -> Result<Expr, ModelError> {
        self.enter()?;
        let r = self.unary_inner();
        self.depth -= 1;
        r
    }

    fn unary_inner(&mut self) -> Result<Expr, ModelError> {
        let pos = self.pos();
        let op = match self.peek() {
            Tok::Punct("+") => Some(UnOp::Plus),
            Tok::Punct("-") => Some(UnOp::Neg),
            Tok::Punct("!") => Some(UnOp::Not),
            Tok::Punct("~") => Some(UnOp::Compl),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            let e = self.unary()?;
            return node(ExprKind::Unary(op, Box::new(e)), pos);
        }
        let step = match self.peek() {
            Tok::Punct("++") => Some(Step::PreInc),
            Tok::Punct("--") => Some(Step::PreDec),
            _ => None,
        };
        if let Some(step) = step {
            self.bump();
            let e = self.unary()?;
            return node(ExprKind::Step(step, Box::new(e)), pos);
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, ModelError> {
        let mut e = self.primary()?;
        loop {
            let pos = self.pos();
            if self.is("(") {
                self.bump();
                let args = self.expr_list(")")?;
                self.expect(")")?;
                e = node(ExprKind::Call(Box::new(e), args), pos)?;
            } else if self.is("++") || self.is("--") {
                let step = if self.is("++") {
                    Step::PostInc
                } else {
                    Step::PostDec
                };
                self.bump();
                e = node(ExprKind::Step(step, Box::new(e)), pos)?;
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, ModelError> {
        let pos = self.pos();
        match self.peek().clone() {
            Tok::Num(v) => {
                self.bump();
                node(ExprKind::Num(v), pos)
            }
            Tok::Ident(s) if s == "true" || s == "false" => {
                self.bump();
                node(ExprKind::Bool(s == "true"), pos)
            }
            Tok::Ident(s) if is_keyword(&s) => Err(ModelError::new(
                ErrorKind::Syntax,
                format!(
                    "keyword `{s}` where an operand is expected {}",
                    self.near(pos)
                ),
            )),
            Tok::Ident(s) => {
                self.bump();
                node(ExprKind::Var(s), pos)
            }
            Tok::Punct("(") => {
                self.bump();
                let e = self.expression()?;
                if !self.is(")") {
                    return Err(self.unexpected("`)`"));
                }
                self.bump();
                Ok(e)
            }
            _ => Err(self.unexpected("an operand")),
        }
    }
}

fn is_keyword(s: &str) -> bool {
    matches!(
        s,
        "if" | "else" | "while" | "do" | "for" | "break" | "continue" | "int" | "var" | "return"
    )
}

/// ``near `…` `` quoting the rewritten text around `pos`.
fn near(src: &str, pos: usize) -> String {
    let mut start = pos.saturating_sub(12);
    while start > 0 && !src.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (pos + 16).min(src.len());
    while end < src.len() && !src.is_char_boundary(end) {
        end += 1;
    }
    let start = start.min(end);
    if start == end {
        return "at the end of the script".into();
    }
    format!("near `{}`", src[start..end].trim())
}

// ---------------------------------------------------------------------------------------------
// Binder: names, C# typing, constant folding (CS0220), statement rules
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ty {
    Int,
    Bool,
    Void,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Int => "int",
            Ty::Bool => "bool",
            Ty::Void => "void",
        }
    }
}

/// A bound expression's type and, for a constant expression, its folded value (bool as 0/1).
#[derive(Clone, Copy)]
struct Bound {
    ty: Ty,
    konst: Option<i32>,
}

struct Binder<'a> {
    src: &'a str,
    vars: &'a [&'a str],
    wrapper: &'a str,
    /// Skip the checks that depend on 32-bit `int` (literal range, constant overflow).
    lenient: bool,
}

impl Binder<'_> {
    fn err(&self, kind: ErrorKind, pos: usize, what: String) -> ModelError {
        ModelError::new(kind, format!("{what} {}", near(self.src, pos)))
    }

    fn stmts(&self, stmts: &[Stmt], loops: usize) -> Result<(), ModelError> {
        stmts.iter().try_for_each(|s| self.stmt(s, loops))
    }

    fn stmt(&self, s: &Stmt, loops: usize) -> Result<(), ModelError> {
        match s {
            Stmt::Block(b) => self.stmts(b, loops),
            Stmt::Empty => Ok(()),
            Stmt::Expr(e) => self.expr_stmt(e),
            Stmt::If(c, t, e) => {
                self.cond(c, "if")?;
                self.stmt(t, loops)?;
                match e {
                    Some(e) => self.stmt(e, loops),
                    None => Ok(()),
                }
            }
            Stmt::While(c, b) => {
                self.cond(c, "while")?;
                self.stmt(b, loops + 1)
            }
            Stmt::DoWhile(b, c) => {
                self.stmt(b, loops + 1)?;
                self.cond(c, "do … while")
            }
            Stmt::For(init, c, step, b) => {
                init.iter().try_for_each(|e| self.expr_stmt(e))?;
                if let Some(c) = c {
                    self.cond(c, "for")?;
                }
                step.iter().try_for_each(|e| self.expr_stmt(e))?;
                self.stmt(b, loops + 1)
            }
            Stmt::Break(pos) | Stmt::Continue(pos) if loops == 0 => {
                let word = if matches!(s, Stmt::Break(_)) {
                    "break"
                } else {
                    "continue"
                };
                Err(self.err(
                    ErrorKind::JumpOutsideLoop,
                    *pos,
                    format!("`{word}` outside a loop (CS0139)"),
                ))
            }
            Stmt::Break(_) | Stmt::Continue(_) => Ok(()),
        }
    }

    fn cond(&self, c: &Expr, what: &str) -> Result<(), ModelError> {
        let b = self.expr(c)?;
        if b.ty == Ty::Bool {
            Ok(())
        } else {
            Err(self.err(
                ErrorKind::NonBoolCondition,
                c.pos,
                format!(
                    "the `{what}` condition is {}; C# cannot convert it to bool",
                    b.ty.name()
                ),
            ))
        }
    }

    fn expr_stmt(&self, e: &Expr) -> Result<(), ModelError> {
        match &e.kind {
            ExprKind::Assign(..) | ExprKind::Step(..) | ExprKind::Call(..) => {
                self.expr(e).map(|_| ())
            }
            _ => {
                // C# binds the expression first; report its own errors before CS0201.
                self.expr(e)?;
                Err(self.err(
                    ErrorKind::NotAStatement,
                    e.pos,
                    "only assignment, call, increment and decrement can be statements (CS0201)"
                        .into(),
                ))
            }
        }
    }

    fn int_operand(&self, b: Bound, op: &str, pos: usize) -> Result<(), ModelError> {
        match b.ty {
            Ty::Int => Ok(()),
            other => Err(self.err(
                ErrorKind::TypeMismatch,
                pos,
                format!("C# has no `{op}` on a {} operand", other.name()),
            )),
        }
    }

    fn variable(&self, e: &Expr, what: &str) -> Result<(), ModelError> {
        match &e.kind {
            ExprKind::Var(name) if self.vars.contains(&name.as_str()) => Ok(()),
            ExprKind::Var(_) => self.expr(e).map(|_| ()),
            _ => Err(self.err(
                ErrorKind::NotAssignable,
                e.pos,
                format!("{what} applied to a non-variable (a value, not a variable)"),
            )),
        }
    }

    fn expr(&self, e: &Expr) -> Result<Bound, ModelError> {
        let int = |v: Option<i32>| Bound {
            ty: Ty::Int,
            konst: v,
        };
        match &e.kind {
            ExprKind::Num(v) => match i32::try_from(*v) {
                Ok(v) => Ok(int(Some(v))),
                Err(_) if self.lenient => Ok(int(None)),
                Err(_) => Err(self.err(
                    ErrorKind::LiteralTooLarge,
                    e.pos,
                    format!("the literal {v:#x} is not an `int` in C#"),
                )),
            },
            ExprKind::Bool(b) => Ok(Bound {
                ty: Ty::Bool,
                konst: Some(i32::from(*b)),
            }),
            ExprKind::Var(name) => {
                if self.vars.contains(&name.as_str()) {
                    Ok(int(None))
                } else if name == "test_statement" {
                    Err(self.err(
                        ErrorKind::BadCall,
                        e.pos,
                        "`test_statement` used as a value".into(),
                    ))
                } else {
                    Err(self.err(
                        ErrorKind::UndeclaredName,
                        e.pos,
                        format!(
                            "the name `{name}` does not exist in the generator's {} wrapper",
                            self.wrapper
                        ),
                    ))
                }
            }
            ExprKind::Unary(op, inner) => {
                let b = self.expr(inner)?;
                match op {
                    UnOp::Not => {
                        if b.ty != Ty::Bool {
                            return Err(self.err(
                                ErrorKind::TypeMismatch,
                                e.pos,
                                format!("C# rejects `!` on an {} operand", b.ty.name()),
                            ));
                        }
                        Ok(Bound {
                            ty: Ty::Bool,
                            konst: b.konst.map(|v| i32::from(v == 0)),
                        })
                    }
                    UnOp::Plus => {
                        self.int_operand(b, "unary +", e.pos)?;
                        Ok(b)
                    }
                    UnOp::Compl => {
                        self.int_operand(b, "~", e.pos)?;
                        Ok(int(b.konst.map(|v| !v)))
                    }
                    UnOp::Neg => {
                        self.int_operand(b, "unary -", e.pos)?;
                        match b.konst {
                            Some(v) => match v.checked_neg() {
                                Some(n) => Ok(int(Some(n))),
                                None if self.lenient => Ok(int(None)),
                                None => Err(self.overflow(e.pos, "-")),
                            },
                            None => Ok(int(None)),
                        }
                    }
                }
            }
            ExprKind::Step(step, inner) => {
                let what = match step {
                    Step::PreInc | Step::PostInc => "`++`",
                    Step::PreDec | Step::PostDec => "`--`",
                };
                self.variable(inner, what)?;
                Ok(int(None))
            }
            ExprKind::Assign(op, lhs, rhs) => {
                let what = match op {
                    None => "`=`".to_string(),
                    Some(op) => format!("`{}=`", op.symbol()),
                };
                self.variable(lhs, &what)?;
                let r = self.expr(rhs)?;
                if r.ty != Ty::Int {
                    return Err(self.err(
                        ErrorKind::TypeMismatch,
                        rhs.pos,
                        format!("cannot assign a {} to an int variable", r.ty.name()),
                    ));
                }
                Ok(int(None))
            }
            ExprKind::Call(callee, args) => {
                match &callee.kind {
                    ExprKind::Var(name) if name == "test_statement" => {}
                    ExprKind::Var(name) if !self.vars.contains(&name.as_str()) => {
                        self.expr(callee)?;
                    }
                    _ => {
                        return Err(self.err(
                            ErrorKind::BadCall,
                            e.pos,
                            "`(` after a value: C# would call something that is not a method \
                             (juxtaposed operands)"
                                .into(),
                        ))
                    }
                }
                if args.len() != 1 {
                    return Err(self.err(
                        ErrorKind::BadCall,
                        e.pos,
                        format!("`test_statement` takes 1 argument, given {}", args.len()),
                    ));
                }
                let a = self.expr(&args[0])?;
                if a.ty != Ty::Int {
                    return Err(self.err(
                        ErrorKind::TypeMismatch,
                        args[0].pos,
                        format!("`test_statement` takes an int, given a {}", a.ty.name()),
                    ));
                }
                Ok(Bound {
                    ty: Ty::Void,
                    konst: None,
                })
            }
            ExprKind::Binary(op, l, r) => {
                let a = self.expr(l)?;
                let b = self.expr(r)?;
                self.binary(*op, a, b, e.pos)
            }
        }
    }

    fn overflow(&self, pos: usize, op: &str) -> ModelError {
        self.err(
            ErrorKind::ConstantOverflow,
            pos,
            format!("the constant `{op}` overflows int at compile time (CS0220)"),
        )
    }

    fn binary(&self, op: BinOp, a: Bound, b: Bound, pos: usize) -> Result<Bound, ModelError> {
        let sym = op.symbol();
        if a.ty == Ty::Void || b.ty == Ty::Void {
            return Err(self.err(
                ErrorKind::TypeMismatch,
                pos,
                format!("`{sym}` applied to a void call"),
            ));
        }
        let pair = a.konst.zip(b.konst);
        let mixed = |what: &str| {
            Err(self.err(
                ErrorKind::TypeMismatch,
                pos,
                format!(
                    "C# rejects `{sym}` between {} and {}{what}",
                    a.ty.name(),
                    b.ty.name()
                ),
            ))
        };
        let int = |v: Option<i32>| {
            Ok(Bound {
                ty: Ty::Int,
                konst: v,
            })
        };
        let boolean = |v: Option<bool>| {
            Ok(Bound {
                ty: Ty::Bool,
                konst: v.map(i32::from),
            })
        };
        match op {
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                if a.ty != Ty::Int || b.ty != Ty::Int {
                    return mixed("");
                }
                let Some((x, y)) = pair else {
                    if matches!(op, BinOp::Div | BinOp::Rem) && b.konst == Some(0) {
                        return Err(self.err(
                            ErrorKind::DivisionByZero,
                            pos,
                            "division by constant zero (CS0020)".into(),
                        ));
                    }
                    return int(None);
                };
                if matches!(op, BinOp::Div | BinOp::Rem) && y == 0 {
                    return Err(self.err(
                        ErrorKind::DivisionByZero,
                        pos,
                        "division by constant zero (CS0020)".into(),
                    ));
                }
                let v = match op {
                    BinOp::Add => x.checked_add(y),
                    BinOp::Sub => x.checked_sub(y),
                    BinOp::Mul => x.checked_mul(y),
                    BinOp::Div => x.checked_div(y),
                    _ => x.checked_rem(y),
                };
                match v {
                    Some(v) => int(Some(v)),
                    None if self.lenient => int(None),
                    None => Err(self.overflow(pos, sym)),
                }
            }
            BinOp::Shl | BinOp::Shr => {
                if a.ty != Ty::Int || b.ty != Ty::Int {
                    return mixed("");
                }
                int(pair.map(|(x, y)| shift(op, x, y)))
            }
            BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
                if a.ty != Ty::Int || b.ty != Ty::Int {
                    return mixed(" (comparisons need two ints)");
                }
                boolean(pair.map(|(x, y)| compare(op, x, y)))
            }
            BinOp::Eq | BinOp::Ne => {
                if a.ty != b.ty {
                    return mixed("");
                }
                boolean(pair.map(|(x, y)| (x == y) == (op == BinOp::Eq)))
            }
            BinOp::BitAnd | BinOp::BitXor | BinOp::BitOr => {
                if a.ty != b.ty {
                    return mixed("");
                }
                let v = pair.map(|(x, y)| bitwise(op, x, y));
                if a.ty == Ty::Bool {
                    boolean(v.map(|v| v != 0))
                } else {
                    int(v)
                }
            }
            BinOp::AndAlso | BinOp::OrElse => {
                if a.ty != Ty::Bool || b.ty != Ty::Bool {
                    return mixed(" (`&&`/`||` need two bools)");
                }
                boolean(pair.map(|(x, y)| {
                    if op == BinOp::AndAlso {
                        x != 0 && y != 0
                    } else {
                        x != 0 || y != 0
                    }
                }))
            }
        }
    }
}

fn shift(op: BinOp, x: i32, y: i32) -> i32 {
    // C#: the count of an int shift is masked to its low 5 bits; `>>` on int is arithmetic.
    let n = (y & 31) as u32;
    if op == BinOp::Shl {
        x.wrapping_shl(n)
    } else {
        x.wrapping_shr(n)
    }
}

fn compare(op: BinOp, x: i32, y: i32) -> bool {
    match op {
        BinOp::Lt => x < y,
        BinOp::Gt => x > y,
        BinOp::Le => x <= y,
        _ => x >= y,
    }
}

fn bitwise(op: BinOp, x: i32, y: i32) -> i32 {
    match op {
        BinOp::BitAnd => x & y,
        BinOp::BitXor => x ^ y,
        _ => x | y,
    }
}

// ---------------------------------------------------------------------------------------------
// Interpreter (runs only scripts the binder accepted)
// ---------------------------------------------------------------------------------------------

enum Flow {
    Normal,
    Break,
    Continue,
}

struct Machine<'a> {
    names: &'a [&'a str],
    /// Values as `i64`; under 32-bit rules every stored value is a sign-extended `i32`.
    values: Vec<i64>,
    tmp: i64,
    steps: u64,
    sem: Semantics,
}

impl Machine<'_> {
    fn tick(&mut self) -> Result<(), ModelError> {
        self.steps += 1;
        if self.steps > STEP_LIMIT {
            Err(ModelError::new(
                ErrorKind::StepLimit,
                format!("stopped after {STEP_LIMIT} steps"),
            ))
        } else {
            Ok(())
        }
    }

    fn slot(&self, name: &str) -> Result<usize, ModelError> {
        self.names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| ModelError::new(ErrorKind::UndeclaredName, format!("`{name}`")))
    }

    fn stmts(&mut self, stmts: &[Stmt]) -> Result<Flow, ModelError> {
        for s in stmts {
            match self.stmt(s)? {
                Flow::Normal => {}
                other => return Ok(other),
            }
        }
        Ok(Flow::Normal)
    }

    fn stmt(&mut self, s: &Stmt) -> Result<Flow, ModelError> {
        self.tick()?;
        match s {
            Stmt::Block(b) => self.stmts(b),
            Stmt::Empty => Ok(Flow::Normal),
            Stmt::Expr(e) => self.expr(e).map(|_| Flow::Normal),
            Stmt::If(c, t, e) => {
                if self.expr(c)? != 0 {
                    self.stmt(t)
                } else if let Some(e) = e {
                    self.stmt(e)
                } else {
                    Ok(Flow::Normal)
                }
            }
            Stmt::While(c, b) => {
                while self.expr(c)? != 0 {
                    self.tick()?;
                    if let Flow::Break = self.stmt(b)? {
                        break;
                    }
                }
                Ok(Flow::Normal)
            }
            Stmt::DoWhile(b, c) => {
                loop {
                    self.tick()?;
                    if let Flow::Break = self.stmt(b)? {
                        break;
                    }
                    if self.expr(c)? == 0 {
                        break;
                    }
                }
                Ok(Flow::Normal)
            }
            Stmt::For(init, c, step, b) => {
                for e in init {
                    self.expr(e)?;
                }
                loop {
                    self.tick()?;
                    if let Some(c) = c {
                        if self.expr(c)? == 0 {
                            break;
                        }
                    }
                    if let Flow::Break = self.stmt(b)? {
                        break;
                    }
                    for e in step {
                        self.expr(e)?;
                    }
                }
                Ok(Flow::Normal)
            }
            Stmt::Break(_) => Ok(Flow::Break),
            Stmt::Continue(_) => Ok(Flow::Continue),
        }
    }

    /// Wraps a result to the width of the rules.
    fn fit(&self, v: i64) -> i64 {
        if self.sem.wide {
            v
        } else {
            i64::from(v as i32)
        }
    }

    fn expr(&mut self, e: &Expr) -> Result<i64, ModelError> {
        let v = self.expr_inner(e)?;
        Ok(self.fit(v))
    }

    fn expr_inner(&mut self, e: &Expr) -> Result<i64, ModelError> {
        Ok(match &e.kind {
            // The binder has checked that every literal fits (under 32-bit rules).
            ExprKind::Num(v) if self.sem.wide => *v as i64,
            ExprKind::Num(v) => i64::from(i32::try_from(*v).unwrap_or(0)),
            ExprKind::Bool(b) => i64::from(*b),
            ExprKind::Var(name) => self.values[self.slot(name)?],
            ExprKind::Unary(op, inner) => {
                let v = self.expr(inner)?;
                match op {
                    UnOp::Plus => v,
                    UnOp::Neg => v.wrapping_neg(),
                    UnOp::Compl => !v,
                    UnOp::Not => i64::from(v == 0),
                }
            }
            ExprKind::Step(step, inner) => {
                let ExprKind::Var(name) = &inner.kind else {
                    return Err(ModelError::new(ErrorKind::NotAssignable, "unbound step"));
                };
                let k = self.slot(name)?;
                let old = self.values[k];
                let new = self.fit(match step {
                    Step::PreInc | Step::PostInc => old.wrapping_add(1),
                    Step::PreDec | Step::PostDec => old.wrapping_sub(1),
                });
                self.values[k] = new;
                match step {
                    Step::PreInc | Step::PreDec => new,
                    Step::PostInc | Step::PostDec => old,
                }
            }
            ExprKind::Assign(op, lhs, rhs) => {
                let ExprKind::Var(name) = &lhs.kind else {
                    return Err(ModelError::new(ErrorKind::NotAssignable, "unbound `=`"));
                };
                let k = self.slot(name)?;
                let r = self.expr(rhs)?;
                let v = match op {
                    None => r,
                    Some(op) => self.fit(arith(*op, self.values[k], r, self.sem)?),
                };
                self.values[k] = v;
                v
            }
            ExprKind::Call(_, args) => {
                let v = match args.first() {
                    Some(a) => self.expr(a)?,
                    None => 0,
                };
                self.tmp = v;
                0
            }
            ExprKind::Binary(op, l, r) => {
                let x = self.expr(l)?;
                match op {
                    BinOp::AndAlso if x == 0 => 0,
                    BinOp::OrElse if x != 0 => 1,
                    BinOp::AndAlso | BinOp::OrElse => i64::from(self.expr(r)? != 0),
                    _ => {
                        let y = self.expr(r)?;
                        arith(*op, x, y, self.sem)?
                    }
                }
            }
        })
    }
}

/// Run-time (unchecked) arithmetic on values of the rules' width (the caller wraps the
/// result with [`Machine::fit`]); comparisons yield 0/1.
fn arith(op: BinOp, x: i64, y: i64, sem: Semantics) -> Result<i64, ModelError> {
    if !sem.wide && !sem.shift_count_error {
        // C# `int`, exactly.
        let (x, y) = (x as i32, y as i32);
        return Ok(i64::from(match op {
            BinOp::Add => x.wrapping_add(y),
            BinOp::Sub => x.wrapping_sub(y),
            BinOp::Mul => x.wrapping_mul(y),
            // The binder rejects constant zero divisors; a variable one would throw in C#.
            BinOp::Div => x.checked_div(y).unwrap_or(0),
            BinOp::Rem => x.checked_rem(y).unwrap_or(0),
            BinOp::Shl | BinOp::Shr => shift(op, x, y),
            BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => i32::from(compare(op, x, y)),
            BinOp::Eq => i32::from(x == y),
            BinOp::Ne => i32::from(x != y),
            BinOp::BitAnd | BinOp::BitXor | BinOp::BitOr => bitwise(op, x, y),
            BinOp::AndAlso => i32::from(x != 0 && y != 0),
            BinOp::OrElse => i32::from(x != 0 || y != 0),
        }));
    }
    let bits: u32 = if sem.wide { 64 } else { 32 };
    Ok(match op {
        BinOp::Add => x.wrapping_add(y),
        BinOp::Sub => x.wrapping_sub(y),
        BinOp::Mul => x.wrapping_mul(y),
        BinOp::Div => x.checked_div(y).unwrap_or(0),
        BinOp::Rem => x.checked_rem(y).unwrap_or(0),
        BinOp::Shl | BinOp::Shr => {
            let n = if sem.shift_count_error {
                if !(0..=63).contains(&y) {
                    return Err(ModelError::new(
                        ErrorKind::ShiftCount,
                        format!("`{}` by {y}", op.symbol()),
                    ));
                }
                // A 32-bit engine with 64-bit counts: bits shifted past 31 are gone.
                y as u32
            } else {
                (y as u32) & (bits - 1)
            };
            let x = if sem.wide { x } else { i64::from(x as i32) };
            if op == BinOp::Shl {
                if n >= 64 {
                    0
                } else {
                    x.wrapping_shl(n)
                }
            } else {
                x.wrapping_shr(n.min(63))
            }
        }
        BinOp::Lt => i64::from(x < y),
        BinOp::Gt => i64::from(x > y),
        BinOp::Le => i64::from(x <= y),
        BinOp::Ge => i64::from(x >= y),
        BinOp::Eq => i64::from(x == y),
        BinOp::Ne => i64::from(x != y),
        BinOp::BitAnd => x & y,
        BinOp::BitXor => x ^ y,
        BinOp::BitOr => x | y,
        BinOp::AndAlso => i64::from(x != 0 && y != 0),
        BinOp::OrElse => i64::from(x != 0 || y != 0),
    })
}

// ---------------------------------------------------------------------------------------------
// Wrappers
// ---------------------------------------------------------------------------------------------

/// Blames the `/`→`//` rewrite for a syntax error found where the line was cut short
/// (`failed_at`, the offset of the token the parser stopped on, is at or after the comment).
fn blame_comment(err: ModelError, lexed: &Lexed, src: &str, failed_at: usize) -> ModelError {
    match lexed.comment_at {
        Some(at) if failed_at >= at && err.kind == ErrorKind::Syntax => {
            let cut: String = src[at..].chars().take(24).collect();
            let after = src.get(at + 2..).unwrap_or("").trim_start();
            let what = if after.starts_with('*') || after.starts_with('/') {
                "the script's `/* … */` or `//` comment"
            } else {
                "a division `/`"
            };
            ModelError::new(
                ErrorKind::CommentedOut,
                format!(
                    "the generator's `/`→`//` rewrite turned {what} into a line comment that \
                     swallows the rest of the script (from `{}`), leaving: {}",
                    cut.trim_end(),
                    err.reason
                ),
            )
        }
        _ => err,
    }
}

/// `<E>;` of `var num = <E>;`.
fn parse_var_initializer(p: &mut Parser<'_>) -> Result<Expr, ModelError> {
    let e = p.expression()?;
    if !p.is(";") {
        return Err(p.unexpected("`;` ending `var num = …`"));
    }
    p.bump();
    if *p.peek() != Tok::Eof {
        return Err(p.unexpected("the end of the statement"));
    }
    Ok(e)
}

fn eval_expression_wrapper(sentence: &str) -> Result<u32, ModelError> {
    eval_expression(sentence, Semantics::GENERATOR).map(|v| v as u32)
}

fn eval_expression(sentence: &str, sem: Semantics) -> Result<u64, ModelError> {
    let lenient = sem != Semantics::GENERATOR;
    // `var num = <E>;` with the rewrite applied to `<E>` only.
    let src = format!("{};", to_csharp(sentence));
    let lexed = lex(&src);
    let mut p = Parser::new(&src, lexed.tokens.clone());
    let parsed = parse_var_initializer(&mut p);
    let e = parsed.map_err(|err| blame_comment(err, &lexed, &src, p.pos()))?;
    let names: [&str; 0] = [];
    let binder = Binder {
        src: &src,
        vars: &names,
        wrapper: "expression (`var num = …`)",
        lenient,
    };
    let b = binder.expr(&e)?;
    match (b.ty, b.konst) {
        (Ty::Int, Some(v)) if !lenient => Ok(i64::from(v) as u64),
        (Ty::Int, _) => {
            let mut m = Machine {
                names: &names,
                values: Vec::new(),
                tmp: 0,
                steps: 0,
                sem,
            };
            m.expr(&e).map(|v| v as u64)
        }
        (ty, _) => Err(ModelError::new(
            ErrorKind::ResultNotInt,
            format!(
                "the expression is a {}; the generator's `(int)` on the result throws",
                ty.name()
            ),
        )),
    }
}

fn eval_statement_wrapper(script: &str, loop_wrapper: bool) -> Result<u32, ModelError> {
    eval_statements(script, loop_wrapper, Semantics::GENERATOR).map(|v| v as u32)
}

fn eval_statements(script: &str, loop_wrapper: bool, sem: Semantics) -> Result<u64, ModelError> {
    let src = to_csharp(script);
    let lexed = lex(&src);
    let mut p = Parser::new(&src, lexed.tokens.clone());
    let parsed = p.statements_to_eof();
    let stmts = parsed.map_err(|err| blame_comment(err, &lexed, &src, p.pos()))?;
    let names: &[&str] = if loop_wrapper {
        &["tmp", "val", "tmp_counter", "x"]
    } else {
        &["tmp"]
    };
    let binder = Binder {
        src: &src,
        vars: names,
        wrapper: if loop_wrapper { "loop" } else { "if-chain" },
        lenient: sem != Semantics::GENERATOR,
    };
    binder.stmts(&stmts, 0)?;
    let mut m = Machine {
        names,
        values: vec![0; names.len()],
        tmp: 0,
        steps: 0,
        sem,
    };
    m.stmts(&stmts)?;
    if loop_wrapper {
        // The wrapper ends with `test_statement(tmp_counter);`.
        m.tmp = m.values[m.slot("tmp_counter")?];
    }
    Ok(m.tmp as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_matches_the_generator() {
        assert_eq!(
            to_csharp("0n17 + 0y101 - @r10 elsif $ip"),
            "17 + 0b101 - 0xB else if 0x0"
        );
    }

    #[test]
    fn format_is_upper_hex() {
        assert_eq!(format_expected(0xFFFF_FFEF), "FFFFFFEF");
        assert_eq!(format_expected(0x2a00), "2A00");
    }

    #[test]
    fn shape_classification() {
        assert_eq!(
            classify("x = 1; test_statement(x);"),
            Some(ScriptKind::Expression)
        );
        assert_eq!(classify(" if (1 < 2) { }"), Some(ScriptKind::Conditional));
        assert_eq!(classify(" do { } while (1 < 2);"), Some(ScriptKind::Loop));
        assert_eq!(classify("printf(1);"), None);
    }

    #[test]
    fn lexer_keeps_unknowns_and_pairs() {
        let l = lex("a <> b >< c @rcx 0x1F 0b101 17");
        let toks: Vec<Tok> = l.tokens.into_iter().map(|t| t.tok).collect();
        assert!(toks.contains(&Tok::Punct("<>")));
        assert!(toks.contains(&Tok::Punct("><")));
        assert!(toks.contains(&Tok::Unknown("@rcx".into())));
        assert!(toks.contains(&Tok::Num(0x1f)));
        assert!(toks.contains(&Tok::Num(5)));
        assert!(toks.contains(&Tok::Num(17)));
    }

    #[test]
    fn ident_lexing_cut_by_comment() {
        let l = lex("a // b c");
        assert_eq!(l.tokens.len(), 2);
        assert_eq!(l.comment_at, Some(2));
    }
}
