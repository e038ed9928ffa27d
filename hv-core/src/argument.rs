//! Event-command arguments as expressions, as HyperDbg evaluates them:
//! `!monitor w 2000 2000+8`, `!epthook nt!ExAllocatePoolWithTag+5`,
//! `!monitor rw counter counter+(8*4)`.
//!
//! An argument is one word of the command line (HyperDbg splits on white space too), made
//! of HyperDbg numbers ([`crate::number`]: hex by default), symbol names (`module!name` or
//! a bare `name`, looked up in the embedder's [`Symbols`]), the binary operators
//! `* / % + - << >> & ^ |` with C's precedence, unary `-` and `~`, and parentheses.
//! Arithmetic wraps at 64 bits, as addresses do. A word made only of hex digits is a number
//! (`dead`, `a`), never a symbol: the same rule as in scripts. Registers (`@rcx`) have no
//! value when an event is defined and are refused with that reason.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::number::parse_number;

/// The names an embedder can resolve in event arguments (a guest's symbol table,
/// `--sym NAME=ADDR`).
pub trait Symbols {
    /// The address of `name` (`module!name` or a bare `name`), if known.
    fn lookup(&self, name: &str) -> Option<u64>;
    /// Every known name, for "did you mean" help. May be empty.
    fn names(&self) -> Vec<String> {
        Vec::new()
    }
}

/// No symbols at all.
pub struct NoSymbols;

impl Symbols for NoSymbols {
    fn lookup(&self, _name: &str) -> Option<u64> {
        None
    }
}

/// Symbols from a map of full names (`module!name`, or a bare `name`) to addresses. A bare
/// name also finds `module!name` when exactly one module has it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SymbolMap(pub BTreeMap<String, u64>);

impl Symbols for SymbolMap {
    fn lookup(&self, name: &str) -> Option<u64> {
        if let Some(v) = self.0.get(name) {
            return Some(*v);
        }
        if name.contains('!') {
            return None;
        }
        let mut found = self
            .0
            .iter()
            .filter(|(k, _)| k.rsplit_once('!').is_some_and(|(_, bare)| bare == name));
        match (found.next(), found.next()) {
            (Some((_, v)), None) => Some(*v),
            _ => None,
        }
    }

    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

/// An argument that is not a valid expression: what, and the byte range inside the word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArgumentError {
    pub message: String,
    pub start: usize,
    pub end: usize,
    pub help: Option<String>,
}

impl ArgumentError {
    fn new(message: impl Into<String>, start: usize, end: usize) -> Self {
        ArgumentError {
            message: message.into(),
            start,
            end,
            help: None,
        }
    }
}

/// Evaluates one argument word.
pub fn evaluate(word: &str, symbols: &dyn Symbols) -> Result<u64, ArgumentError> {
    let tokens = tokenize(word)?;
    if tokens.is_empty() {
        return Err(ArgumentError::new("empty argument", 0, word.len()));
    }
    let mut parser = Parser {
        word,
        tokens,
        pos: 0,
        symbols,
    };
    let value = parser.binary(0)?;
    if let Some(t) = parser.tokens.get(parser.pos) {
        return Err(ArgumentError::new(
            format!("unexpected `{}`", &word[t.start..t.end]),
            t.start,
            t.end,
        ));
    }
    Ok(value)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tok {
    Term,
    Op(&'static str),
    Open,
    Close,
}

#[derive(Clone, Copy, Debug)]
struct Token {
    tok: Tok,
    start: usize,
    end: usize,
}

/// Binary operators from loosest to tightest, as in C.
const LEVELS: &[&[&str]] = &[
    &["|"],
    &["^"],
    &["&"],
    &["<<", ">>"],
    &["+", "-"],
    &["*", "/", "%"],
];

fn is_term_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'!' | b'`' | b'.' | b'@' | b'$')
}

fn tokenize(word: &str) -> Result<Vec<Token>, ArgumentError> {
    let b = word.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        let tok = match b[i] {
            b'(' => Tok::Open,
            b')' => Tok::Close,
            b'<' | b'>' if b.get(i + 1) == Some(&b[i]) => {
                i += 1;
                Tok::Op(if b[i] == b'<' { "<<" } else { ">>" })
            }
            b'+' => Tok::Op("+"),
            b'-' => Tok::Op("-"),
            b'*' => Tok::Op("*"),
            b'/' => Tok::Op("/"),
            b'%' => Tok::Op("%"),
            b'&' => Tok::Op("&"),
            b'|' => Tok::Op("|"),
            b'^' => Tok::Op("^"),
            b'~' => Tok::Op("~"),
            c if is_term_byte(c) => {
                while i < b.len() && is_term_byte(b[i]) {
                    i += 1;
                }
                out.push(Token {
                    tok: Tok::Term,
                    start,
                    end: i,
                });
                continue;
            }
            _ => {
                let len = word[i..].chars().next().map_or(1, char::len_utf8);
                return Err(ArgumentError::new(
                    format!("`{}` has no meaning in an argument", &word[i..i + len]),
                    i,
                    i + len,
                ));
            }
        };
        i += 1;
        out.push(Token { tok, start, end: i });
    }
    Ok(out)
}

struct Parser<'a> {
    word: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    symbols: &'a dyn Symbols,
}

impl Parser<'_> {
    fn peek_op(&self) -> Option<&'static str> {
        match self.tokens.get(self.pos)?.tok {
            Tok::Op(op) => Some(op),
            _ => None,
        }
    }

    fn binary(&mut self, level: usize) -> Result<u64, ArgumentError> {
        if level == LEVELS.len() {
            return self.unary();
        }
        let mut left = self.binary(level + 1)?;
        while let Some(op) = self.peek_op().filter(|op| LEVELS[level].contains(op)) {
            let at = self.tokens[self.pos];
            self.pos += 1;
            let right = self.binary(level + 1)?;
            left = match op {
                "|" => left | right,
                "^" => left ^ right,
                "&" => left & right,
                "<<" => left
                    .checked_shl(right as u32)
                    .filter(|_| right < 64)
                    .unwrap_or(0),
                ">>" => left
                    .checked_shr(right as u32)
                    .filter(|_| right < 64)
                    .unwrap_or(0),
                "+" => left.wrapping_add(right),
                "-" => left.wrapping_sub(right),
                "*" => left.wrapping_mul(right),
                "/" | "%" if right == 0 => {
                    return Err(ArgumentError::new("division by zero", at.start, at.end))
                }
                "/" => left / right,
                _ => left % right,
            };
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<u64, ArgumentError> {
        let Some(t) = self.tokens.get(self.pos).copied() else {
            let end = self.word.len();
            return Err(ArgumentError::new(
                "the expression ends where a value is expected",
                end.saturating_sub(1),
                end,
            ));
        };
        self.pos += 1;
        match t.tok {
            Tok::Op("-") => Ok(self.unary()?.wrapping_neg()),
            Tok::Op("~") => Ok(!self.unary()?),
            Tok::Op("+") => self.unary(),
            Tok::Open => {
                let v = self.binary(0)?;
                match self.tokens.get(self.pos) {
                    Some(c) if c.tok == Tok::Close => {
                        self.pos += 1;
                        Ok(v)
                    }
                    _ => Err(ArgumentError::new("`(` is never closed", t.start, t.end)),
                }
            }
            Tok::Term => self.term(&self.word[t.start..t.end], t.start),
            Tok::Op(_) | Tok::Close => Err(ArgumentError::new(
                format!("expected a value, found `{}`", &self.word[t.start..t.end]),
                t.start,
                t.end,
            )),
        }
    }

    fn term(&self, text: &str, start: usize) -> Result<u64, ArgumentError> {
        let end = start + text.len();
        if let Some(v) = parse_number(text) {
            return Ok(v);
        }
        let first = text.as_bytes()[0];
        if first.is_ascii_digit() {
            let mut e = ArgumentError::new(format!("`{text}` is not a number"), start, end);
            e.help =
                Some("numbers are hex by default; 0n for decimal, 0y binary, 0o octal".to_string());
            return Err(e);
        }
        if first == b'@' || first == b'$' {
            // A debugger evaluating against a paused core's registers resolves them.
            if let Some(v) = self.symbols.lookup(text) {
                return Ok(v);
            }
            return Err(ArgumentError::new(
                format!(
                    "`{text}` has no value when an event is defined: registers and \
                     pseudo-registers belong in the script"
                ),
                start,
                end,
            ));
        }
        if let Some(v) = self.symbols.lookup(text) {
            return Ok(v);
        }
        let mut e = ArgumentError::new(format!("unknown symbol `{text}`"), start, end);
        let close = close_matches(text, &self.symbols.names());
        e.help = Some(if close.is_empty() {
            "symbols come from the guest program's symbol table or `--sym NAME=ADDR`".to_string()
        } else {
            format!("did you mean {}?", close.join(", "))
        });
        Err(e)
    }
}

/// Up to three known names within a small edit distance of `name` (or containing it).
pub fn close_matches(name: &str, names: &[String]) -> Vec<String> {
    let bare = |s: &str| s.rsplit('!').next().unwrap_or(s).to_ascii_lowercase();
    let wanted = bare(name);
    let limit = (wanted.len() / 3).max(1);
    let mut scored: Vec<(usize, &String)> = names
        .iter()
        .filter_map(|n| {
            let b = bare(n);
            let d = edit_distance(&wanted, &b);
            (d <= limit || (wanted.len() >= 3 && b.contains(&wanted))).then_some((d, n))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(3)
        .map(|(_, n)| format!("`{n}`"))
        .collect()
}

/// Edits (insert, delete, replace, swap two neighbours) from `a` to `b`: the optimal
/// string alignment distance, so `prot` is one edit from `port`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d: Vec<usize> = (0..(a.len() + 1) * w)
        .map(|k| if k < w { k } else { 0 })
        .collect();
    for i in 1..=a.len() {
        d[i * w] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = best;
        }
    }
    d[a.len() * w + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    struct Two;
    impl Symbols for Two {
        fn lookup(&self, name: &str) -> Option<u64> {
            match name {
                "nt!Kd_DEFAULT_Mask" | "Kd_DEFAULT_Mask" => Some(0xfffff800_00001000),
                "counter" | "hello!counter" => Some(0x4c6010),
                _ => None,
            }
        }
        fn names(&self) -> Vec<String> {
            vec!["nt!Kd_DEFAULT_Mask".into(), "hello!counter".into()]
        }
    }

    #[test]
    fn a_bare_name_finds_the_one_module_that_has_it() {
        let mut m = SymbolMap::default();
        m.0.insert("hello!work".into(), 0x401000);
        m.0.insert("hello!main".into(), 0x401100);
        m.0.insert("libc!main".into(), 0x402000);
        assert_eq!(evaluate("work+4", &m), Ok(0x401004));
        assert_eq!(evaluate("hello!main", &m), Ok(0x401100));
        assert!(evaluate("main", &m).is_err());
    }

    #[test]
    fn close_matches_count_a_swap_as_one_edit() {
        assert_eq!(edit_distance("prot", "port"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            close_matches("prot", &["port".into(), "other".into()]),
            ["`port`"]
        );
    }

    fn eval(w: &str) -> Result<u64, ArgumentError> {
        evaluate(w, &Two)
    }

    #[test]
    fn numbers_symbols_and_operators() {
        assert_eq!(eval("2000+8"), Ok(0x2008));
        assert_eq!(eval("7ff71f118210+4"), Ok(0x7ff71f118214));
        assert_eq!(eval("nt!Kd_DEFAULT_Mask+4"), Ok(0xfffff800_00001004));
        assert_eq!(eval("counter+3"), Ok(0x4c6013));
        assert_eq!(eval("1+2*3"), Ok(7));
        assert_eq!(eval("(1+2)*3"), Ok(9));
        assert_eq!(eval("0n10*0n10"), Ok(100));
        assert_eq!(eval("1<<0n12|1"), Ok(0x1001));
        assert_eq!(eval("-1"), Ok(u64::MAX));
        assert_eq!(eval("~0&ff"), Ok(0xff));
        assert_eq!(eval("fffff800`00000000+10"), Ok(0xfffff800_00000010));
        assert_eq!(eval("dead"), Ok(0xdead));
    }

    #[test]
    fn errors_point_inside_the_word() {
        let e = eval("2000+couter").unwrap_err();
        assert_eq!((e.start, e.end), (5, 11));
        assert!(e.help.unwrap().contains("`hello!counter`"));
        let e = eval("nt!ExAllocatePoolWithTag+@rcx+5").unwrap_err();
        assert_eq!(
            &"nt!ExAllocatePoolWithTag+@rcx+5"[e.start..e.end],
            "nt!ExAllocatePoolWithTag"
        );
        let e = eval("1+@rcx").unwrap_err();
        assert!(e.message.contains("no value when an event is defined"));
        assert_eq!(
            eval("1+").unwrap_err().message,
            "the expression ends where a value is expected"
        );
        assert_eq!(eval("(1+2").unwrap_err().message, "`(` is never closed");
        assert_eq!(eval("1/0").unwrap_err().message, "division by zero");
        assert_eq!(
            eval("1 2").unwrap_err().message,
            "` ` has no meaning in an argument"
        );
        assert_eq!(eval("9g").unwrap_err().message, "`9g` is not a number");
        assert_eq!(eval("1)").unwrap_err().message, "unexpected `)`");
    }
}
