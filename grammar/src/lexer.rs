//! The lexer: bytes of script text to [`Tok`]ens with byte spans.
//!
//! Two passes. `RawTok` is the logos automaton and knows only the shapes of tokens. The
//! refinement in [`Lexer`] then classifies words the way HyperDbg's scanner does, which
//! needs context logos cannot express:
//! - a word made only of hex digits (`a`, `dead`, `cafe`) is a **number**, unless it is a
//!   keyword, a built-in name or a register name;
//! - a register name is a register even without `@` (`rax`, `zf`, `id`);
//! - `.name` is a global variable, except right after a token that ends an expression,
//!   where the `.` is member access (`s.x`), as HyperDbg's scanner decides it;
//! - `module!name` is a symbol.

use std::fmt;

use hvscript_abi::{Builtin, PseudoReg, Register};
use logos::Logos;

use crate::ast::{Span, TypeWord};

/// How deep blocks (`{` here) and expressions (in the parser) may nest. Every pass over the
/// tree recurses on it, so deeper input would overflow the stack; real scripts stay far below.
pub const MAX_NESTING: usize = 256;

/// A refined token, as the parser consumes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Tok<'s> {
    Number(u64),
    Float(f64),
    Str(Vec<u8>),
    WStr(Vec<u16>),
    Register(Register),
    Pseudo(PseudoReg),
    Ident(&'s str),
    /// A name declared by `typedef` earlier in the script (see [`crate::typedef_names`]).
    TypedefName(&'s str),
    Global(&'s str),
    Symbol(&'s str),
    Builtin(Builtin),
    Type(TypeWord),
    If,
    Elsif,
    Else,
    While,
    Do,
    For,
    Break,
    Continue,
    Return,
    Struct,
    Typedef,
    Sizeof,
    Include,
    LParen,
    RParen,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Semi,
    Comma,
    Dot,
    Arrow,
    Colon,
    Question,
    Assign,
    AddAssign,
    SubAssign,
    MulAssign,
    DivAssign,
    ModAssign,
    ShlAssign,
    ShrAssign,
    AndAssign,
    XorAssign,
    OrAssign,
    Inc,
    Dec,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Shl,
    Shr,
    Amp,
    Pipe,
    Caret,
    Tilde,
    Bang,
    AndAnd,
    OrOr,
    EqEq,
    NotEq,
    Lt,
    Gt,
    Le,
    Ge,
}

impl Tok<'_> {
    /// Whether a `.` right after this token is member access rather than a global name.
    fn ends_expression(&self) -> bool {
        matches!(
            self,
            Tok::Ident(_)
                | Tok::TypedefName(_)
                | Tok::Global(_)
                | Tok::Register(_)
                | Tok::Pseudo(_)
                | Tok::Number(_)
                | Tok::Float(_)
                | Tok::RParen
                | Tok::RBracket
        )
    }
}

impl fmt::Display for Tok<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tok::Number(n) => write!(f, "number 0x{n:x}"),
            Tok::Float(x) => write!(f, "number {x}"),
            Tok::Str(_) => f.write_str("string"),
            Tok::WStr(_) => f.write_str("wide string"),
            Tok::Register(r) => write!(f, "register @{}", r.name()),
            Tok::Pseudo(p) => write!(f, "pseudo-register ${}", p.name()),
            Tok::Ident(s) => write!(f, "name `{s}`"),
            Tok::TypedefName(s) => write!(f, "type name `{s}`"),
            Tok::Global(s) => write!(f, "global `.{s}`"),
            Tok::Symbol(s) => write!(f, "symbol `{s}`"),
            Tok::Builtin(b) => write!(f, "built-in `{}`", b.name()),
            Tok::Type(t) => write!(f, "type `{}`", t.name()),
            other => write!(f, "`{}`", other.punct_text()),
        }
    }
}

impl Tok<'_> {
    /// The source text of a keyword or punctuation token.
    pub fn punct_text(&self) -> &'static str {
        match self {
            Tok::If => "if",
            Tok::Elsif => "elsif",
            Tok::Else => "else",
            Tok::While => "while",
            Tok::Do => "do",
            Tok::For => "for",
            Tok::Break => "break",
            Tok::Continue => "continue",
            Tok::Return => "return",
            Tok::Struct => "struct",
            Tok::Typedef => "typedef",
            Tok::Sizeof => "sizeof",
            Tok::Include => "#include",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Semi => ";",
            Tok::Comma => ",",
            Tok::Dot => ".",
            Tok::Arrow => "->",
            Tok::Colon => ":",
            Tok::Question => "?",
            Tok::Assign => "=",
            Tok::AddAssign => "+=",
            Tok::SubAssign => "-=",
            Tok::MulAssign => "*=",
            Tok::DivAssign => "/=",
            Tok::ModAssign => "%=",
            Tok::ShlAssign => "<<=",
            Tok::ShrAssign => ">>=",
            Tok::AndAssign => "&=",
            Tok::XorAssign => "^=",
            Tok::OrAssign => "|=",
            Tok::Inc => "++",
            Tok::Dec => "--",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            Tok::Shl => "<<",
            Tok::Shr => ">>",
            Tok::Amp => "&",
            Tok::Pipe => "|",
            Tok::Caret => "^",
            Tok::Tilde => "~",
            Tok::Bang => "!",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Lt => "<",
            Tok::Gt => ">",
            Tok::Le => "<=",
            Tok::Ge => ">=",
            _ => "",
        }
    }
}

/// Why a piece of text is not a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LexErrorKind {
    UnknownCharacter(char),
    UnterminatedString,
    UnterminatedComment,
    BadEscape(String),
    UnknownRegister(String),
    UnknownPseudoRegister(String),
    NumberTooLarge,
    BadFloat,
    /// `1..2`, `1.0f`, `1.5e3`, `0x1.2`: HyperDbg's floating-point literals are decimal
    /// digits, a point and digits, with no exponent or suffix.
    MalformedFloat(String),
    UnknownDirective(String),
    /// More than [`MAX_NESTING`] unclosed `{`.
    NestedTooDeep,
}

impl fmt::Display for LexErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LexErrorKind::UnknownCharacter(c) => write!(f, "unexpected character {c:?}"),
            LexErrorKind::UnterminatedString => f.write_str("unterminated string literal"),
            LexErrorKind::UnterminatedComment => f.write_str("unterminated /* comment"),
            LexErrorKind::BadEscape(e) => write!(f, "invalid escape `{e}` in string"),
            LexErrorKind::UnknownRegister(r) => write!(f, "unknown register `@{r}`"),
            LexErrorKind::UnknownPseudoRegister(r) => write!(f, "unknown pseudo-register `${r}`"),
            LexErrorKind::NumberTooLarge => f.write_str("number does not fit in 64 bits"),
            LexErrorKind::BadFloat => f.write_str("floating-point literal is out of range"),
            LexErrorKind::MalformedFloat(t) => write!(
                f,
                "`{t}` is not a floating-point literal (decimal digits, a point and digits; no exponent, suffix or hex)"
            ),
            LexErrorKind::UnknownDirective(d) => write!(f, "unknown directive `{d}`"),
            LexErrorKind::NestedTooDeep => {
                write!(f, "blocks nested more than {MAX_NESTING} deep")
            }
        }
    }
}

/// A lexical error and where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LexError {
    pub kind: LexErrorKind,
    pub span: Span,
}

// Two skip patterns share the `allow_greedy` argument, which clippy reads as a duplicate.
#[allow(clippy::duplicated_attributes)]
#[derive(Logos, Clone, Copy, Debug, PartialEq, Eq)]
#[logos(skip r"[ \t\r\n\f]+")]
// A line comment ends at the newline, so the greedy class is bounded by it.
#[logos(skip(r"//[^\n]*", allow_greedy = true))]
#[logos(skip(r"/\*([^*]|\*+[^*/])*\*+/", allow_greedy = true))]
enum RawTok {
    #[regex(r"/\*([^*]|\*+[^*/])*\**", allow_greedy = true)]
    UnterminatedComment,
    #[regex(r#""([^"\\\n]|\\[^\n])*""#)]
    Str,
    #[regex(r#"L"([^"\\\n]|\\[^\n])*""#)]
    WStr,
    #[regex(r#"L?"([^"\\\n]|\\[^\n])*"#)]
    UnterminatedStr,
    #[regex(r"@[A-Za-z][A-Za-z0-9_]*")]
    Register,
    #[regex(r"\$[A-Za-z][A-Za-z0-9_]*")]
    Pseudo,
    #[regex(r"\.[A-Za-z_][A-Za-z0-9_!]*")]
    DotWord,
    #[regex(r"[A-Za-z_][A-Za-z0-9_!`]*")]
    Word,
    #[regex(r"0x[0-9a-fA-F`]*")]
    HexPrefixed,
    #[regex(r"0n[0-9`]*")]
    Decimal,
    #[regex(r"0y[01`]*")]
    Binary,
    #[regex(r"0[ot][0-7`]*")]
    Octal,
    #[regex(r"[0-9][0-9a-fA-F`]*")]
    BareHex,
    #[regex(r"[0-9]+\.[0-9]*")]
    #[regex(r"\.[0-9]+")]
    Float,
    // Longer than a float or a number, so logos prefers it: a literal that goes on after its
    // digits (a second point, a suffix, an exponent) or a hex number with a point.
    #[regex(r"[0-9]+\.[0-9]*[.A-Za-z_][A-Za-z0-9_.]*")]
    #[regex(r"\.[0-9]+[.A-Za-z_][A-Za-z0-9_.]*")]
    #[regex(r"0x[0-9a-fA-F`]*\.[A-Za-z0-9_.]*")]
    MalformedFloat,
    #[regex(r"#[A-Za-z]*")]
    Directive,
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token("[")]
    LBracket,
    #[token("]")]
    RBracket,
    #[token(";")]
    Semi,
    #[token(",")]
    Comma,
    #[token(".")]
    Dot,
    #[token("->")]
    Arrow,
    #[token(":")]
    Colon,
    #[token("?")]
    Question,
    #[token("=")]
    Assign,
    #[token("+=")]
    AddAssign,
    #[token("-=")]
    SubAssign,
    #[token("*=")]
    MulAssign,
    #[token("/=")]
    DivAssign,
    #[token("%=")]
    ModAssign,
    #[token("<<=")]
    ShlAssign,
    #[token(">>=")]
    ShrAssign,
    #[token("&=")]
    AndAssign,
    #[token("^=")]
    XorAssign,
    #[token("|=")]
    OrAssign,
    #[token("++")]
    Inc,
    #[token("--")]
    Dec,
    #[token("+")]
    Plus,
    #[token("-")]
    Minus,
    #[token("*")]
    Star,
    #[token("/")]
    Slash,
    #[token("%")]
    Percent,
    #[token("<<")]
    Shl,
    #[token(">>")]
    Shr,
    #[token("&")]
    Amp,
    #[token("|")]
    Pipe,
    #[token("^")]
    Caret,
    #[token("~")]
    Tilde,
    #[token("!")]
    Bang,
    #[token("&&")]
    AndAnd,
    #[token("||")]
    OrOr,
    #[token("==")]
    EqEq,
    #[token("!=")]
    NotEq,
    #[token("<")]
    Lt,
    #[token(">")]
    Gt,
    #[token("<=")]
    Le,
    #[token(">=")]
    Ge,
}

/// The refining lexer; an iterator in the shape LALRPOP wants.
pub struct Lexer<'s> {
    src: &'s str,
    raw: logos::Lexer<'s, RawTok>,
    prev_ends_expression: bool,
    /// The member name of a `s.x` split in two, handed out on the next call.
    pending: Option<(usize, Tok<'s>, usize)>,
    /// `{` not yet closed, limited to [`MAX_NESTING`].
    open_braces: usize,
}

impl<'s> Lexer<'s> {
    pub fn new(src: &'s str) -> Self {
        Lexer {
            src,
            raw: RawTok::lexer(src),
            prev_ends_expression: false,
            pending: None,
            open_braces: 0,
        }
    }
}

pub type Spanned<'s> = Result<(usize, Tok<'s>, usize), LexError>;

impl<'s> Iterator for Lexer<'s> {
    type Item = Spanned<'s>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(tok) = self.pending.take() {
            self.prev_ends_expression = true;
            return Some(Ok(tok));
        }
        let raw = self.raw.next()?;
        let range = self.raw.span();
        let span = Span::new(range.start, range.end);
        let text = &self.src[range.clone()];
        let err = |kind| Err(LexError { kind, span });
        let tok = match raw {
            Err(()) => {
                let c = text.chars().next().unwrap_or('\0');
                return Some(err(LexErrorKind::UnknownCharacter(c)));
            }
            Ok(raw) => match classify(raw, text, self.prev_ends_expression) {
                Ok(Classified::One(tok)) => tok,
                Ok(Classified::MemberAccess(name)) => {
                    self.pending = Some((range.start + 1, Tok::Ident(name), range.end));
                    self.prev_ends_expression = false;
                    return Some(Ok((range.start, Tok::Dot, range.start + 1)));
                }
                Err(kind) => return Some(err(kind)),
            },
        };
        match tok {
            Tok::LBrace if self.open_braces == MAX_NESTING => {
                return Some(err(LexErrorKind::NestedTooDeep))
            }
            Tok::LBrace => self.open_braces += 1,
            Tok::RBrace => self.open_braces = self.open_braces.saturating_sub(1),
            _ => {}
        }
        self.prev_ends_expression = tok.ends_expression();
        Some(Ok((range.start, tok, range.end)))
    }
}

enum Classified<'s> {
    One(Tok<'s>),
    MemberAccess(&'s str),
}

fn classify(
    raw: RawTok,
    text: &str,
    prev_ends_expression: bool,
) -> Result<Classified<'_>, LexErrorKind> {
    use Classified::One;
    Ok(One(match raw {
        RawTok::UnterminatedComment => return Err(LexErrorKind::UnterminatedComment),
        RawTok::UnterminatedStr => return Err(LexErrorKind::UnterminatedString),
        RawTok::Str => Tok::Str(unescape_narrow(&text[1..text.len() - 1])?),
        RawTok::WStr => Tok::WStr(unescape_wide(&text[2..text.len() - 1])?),
        RawTok::Register => {
            let name = &text[1..];
            Tok::Register(
                Register::from_name(name)
                    .ok_or_else(|| LexErrorKind::UnknownRegister(name.into()))?,
            )
        }
        RawTok::Pseudo => {
            let name = &text[1..];
            Tok::Pseudo(
                PseudoReg::from_name(name)
                    .ok_or_else(|| LexErrorKind::UnknownPseudoRegister(name.into()))?,
            )
        }
        RawTok::DotWord if prev_ends_expression => return Ok(Classified::MemberAccess(&text[1..])),
        RawTok::DotWord => Tok::Global(&text[1..]),
        RawTok::Word => classify_word(text)?,
        RawTok::HexPrefixed => Tok::Number(parse_radix(&text[2..], 16)?),
        RawTok::Decimal => Tok::Number(parse_radix(&text[2..], 10)?),
        RawTok::Binary => Tok::Number(parse_radix(&text[2..], 2)?),
        RawTok::Octal => Tok::Number(parse_radix(&text[2..], 8)?),
        RawTok::BareHex => Tok::Number(parse_radix(text, 16)?),
        RawTok::Float => {
            let x: f64 = text.parse().map_err(|_| LexErrorKind::BadFloat)?;
            if !x.is_finite() {
                return Err(LexErrorKind::BadFloat);
            }
            Tok::Float(x)
        }
        RawTok::MalformedFloat => return Err(LexErrorKind::MalformedFloat(text.into())),
        RawTok::Directive if text == "#include" => Tok::Include,
        RawTok::Directive => return Err(LexErrorKind::UnknownDirective(text.into())),
        RawTok::LParen => Tok::LParen,
        RawTok::RParen => Tok::RParen,
        RawTok::LBrace => Tok::LBrace,
        RawTok::RBrace => Tok::RBrace,
        RawTok::LBracket => Tok::LBracket,
        RawTok::RBracket => Tok::RBracket,
        RawTok::Semi => Tok::Semi,
        RawTok::Comma => Tok::Comma,
        RawTok::Dot => Tok::Dot,
        RawTok::Arrow => Tok::Arrow,
        RawTok::Colon => Tok::Colon,
        RawTok::Question => Tok::Question,
        RawTok::Assign => Tok::Assign,
        RawTok::AddAssign => Tok::AddAssign,
        RawTok::SubAssign => Tok::SubAssign,
        RawTok::MulAssign => Tok::MulAssign,
        RawTok::DivAssign => Tok::DivAssign,
        RawTok::ModAssign => Tok::ModAssign,
        RawTok::ShlAssign => Tok::ShlAssign,
        RawTok::ShrAssign => Tok::ShrAssign,
        RawTok::AndAssign => Tok::AndAssign,
        RawTok::XorAssign => Tok::XorAssign,
        RawTok::OrAssign => Tok::OrAssign,
        RawTok::Inc => Tok::Inc,
        RawTok::Dec => Tok::Dec,
        RawTok::Plus => Tok::Plus,
        RawTok::Minus => Tok::Minus,
        RawTok::Star => Tok::Star,
        RawTok::Slash => Tok::Slash,
        RawTok::Percent => Tok::Percent,
        RawTok::Shl => Tok::Shl,
        RawTok::Shr => Tok::Shr,
        RawTok::Amp => Tok::Amp,
        RawTok::Pipe => Tok::Pipe,
        RawTok::Caret => Tok::Caret,
        RawTok::Tilde => Tok::Tilde,
        RawTok::Bang => Tok::Bang,
        RawTok::AndAnd => Tok::AndAnd,
        RawTok::OrOr => Tok::OrOr,
        RawTok::EqEq => Tok::EqEq,
        RawTok::NotEq => Tok::NotEq,
        RawTok::Lt => Tok::Lt,
        RawTok::Gt => Tok::Gt,
        RawTok::Le => Tok::Le,
        RawTok::Ge => Tok::Ge,
    }))
}

/// HyperDbg's order: keyword, built-in, register, type word, symbol, hex number, name.
fn classify_word(text: &str) -> Result<Tok<'_>, LexErrorKind> {
    let keyword = match text {
        "if" => Some(Tok::If),
        "elsif" => Some(Tok::Elsif),
        "else" => Some(Tok::Else),
        "while" => Some(Tok::While),
        "do" => Some(Tok::Do),
        "for" => Some(Tok::For),
        "break" => Some(Tok::Break),
        "continue" => Some(Tok::Continue),
        "return" => Some(Tok::Return),
        "struct" => Some(Tok::Struct),
        "typedef" => Some(Tok::Typedef),
        "sizeof" => Some(Tok::Sizeof),
        _ => None,
    };
    if let Some(k) = keyword {
        return Ok(k);
    }
    if let Some(b) = Builtin::from_name(text) {
        return Ok(Tok::Builtin(b));
    }
    if let Some(r) = Register::from_name(text) {
        return Ok(Tok::Register(r));
    }
    if let Some(t) = TypeWord::from_name(text) {
        return Ok(Tok::Type(t));
    }
    if text.contains('!') {
        return Ok(Tok::Symbol(text));
    }
    if text.bytes().all(|b| b.is_ascii_hexdigit() || b == b'`') {
        return Ok(Tok::Number(parse_radix(text, 16)?));
    }
    if text.contains('`') {
        // A backtick only separates digits; in a name it is a typo HyperDbg would drop.
        return Err(LexErrorKind::UnknownCharacter('`'));
    }
    Ok(Tok::Ident(text))
}

/// Digits in `radix`, with backticks as separators (the ABI's one number parser); the
/// token's pattern already admitted only digits of the radix, so `None` is an overflow.
fn parse_radix(digits: &str, radix: u32) -> Result<u64, LexErrorKind> {
    hvscript_abi::number::parse_digits(digits, radix).ok_or(LexErrorKind::NumberTooLarge)
}

/// HyperDbg's escapes: `\n \t \\ \"` and `\x` with 1-2 hex digits.
fn unescape_narrow(body: &str) -> Result<Vec<u8>, LexErrorKind> {
    let mut out = Vec::with_capacity(body.len());
    let mut bytes = body.bytes().peekable();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'"') => out.push(b'"'),
            Some(b'x') => {
                let v = hex_escape(&mut bytes, 2)
                    .ok_or_else(|| LexErrorKind::BadEscape("\\x".into()))?;
                out.push(v as u8);
            }
            Some(other) => return Err(LexErrorKind::BadEscape(format!("\\{}", other as char))),
            None => return Err(LexErrorKind::BadEscape("\\".into())),
        }
    }
    Ok(out)
}

/// Wide strings: the same escapes, `\x` with 1-4 hex digits, text as UTF-16.
fn unescape_wide(body: &str) -> Result<Vec<u16>, LexErrorKind> {
    let mut out = Vec::with_capacity(body.len());
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0u16; 2];
            out.extend_from_slice(c.encode_utf16(&mut buf));
            continue;
        }
        match chars.next() {
            Some('n') => out.push(b'\n' as u16),
            Some('t') => out.push(b'\t' as u16),
            Some('\\') => out.push(b'\\' as u16),
            Some('"') => out.push(b'"' as u16),
            Some('x') => {
                let mut v: u32 = 0;
                let mut n = 0;
                while n < 4 {
                    match chars.peek().and_then(|c| c.to_digit(16)) {
                        Some(d) => {
                            v = v * 16 + d;
                            chars.next();
                            n += 1;
                        }
                        None => break,
                    }
                }
                if n == 0 || chars.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
                    return Err(LexErrorKind::BadEscape("\\x".into()));
                }
                out.push(v as u16);
            }
            Some(other) => return Err(LexErrorKind::BadEscape(format!("\\{other}"))),
            None => return Err(LexErrorKind::BadEscape("\\".into())),
        }
    }
    Ok(out)
}

/// 1..=max hex digits; a further hex digit is an error, as in HyperDbg.
fn hex_escape(bytes: &mut std::iter::Peekable<std::str::Bytes<'_>>, max: usize) -> Option<u32> {
    let mut v: u32 = 0;
    let mut n = 0;
    while n < max {
        match bytes.peek().and_then(|&b| (b as char).to_digit(16)) {
            Some(d) => {
                v = v * 16 + d;
                bytes.next();
                n += 1;
            }
            None => break,
        }
    }
    if n == 0 || bytes.peek().is_some_and(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(v)
}

/// Every token of `src`, or the first lexical error.
pub fn tokenize(src: &str) -> Result<Vec<(usize, Tok<'_>, usize)>, LexError> {
    Lexer::new(src).collect()
}
