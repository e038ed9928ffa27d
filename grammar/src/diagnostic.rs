//! Located diagnostics: what went wrong, where (file:line:col), and a rendering of the
//! source line with a caret under the offending text (drawn by ariadne).

use std::fmt;

use ariadne::{CharSet, Config, IndexType, Label, Report, ReportKind, Source};
use lalrpop_util::ParseError;

use crate::ast::Span;
use crate::construct::SyntaxError;
use crate::lexer::{Lexer, Tok};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One message about a piece of source text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    pub span: Span,
    /// Shown under the caret.
    pub label: Option<String>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>, span: Span) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            span,
            label: None,
            notes: Vec::new(),
            help: None,
        }
    }

    pub fn warning(message: impl Into<String>, span: Span) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(message, span)
        }
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Self {
        self.notes.push(note.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Shifts the span, for a script embedded at `offset` in a larger text (an event
    /// command line).
    pub fn offset_by(mut self, offset: usize) -> Self {
        self.span = Span::new(
            self.span.start as usize + offset,
            self.span.end as usize + offset,
        );
        self
    }

    /// `file:line:col: error: message`, then the source line with a caret, the label,
    /// notes and help.
    pub fn render(&self, file: &str, src: &str) -> String {
        let (line, col) = line_col(src, self.span.start as usize);
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut out = format!("{file}:{line}:{col}: {kind}: {}\n", self.message);
        let range = clamp(self.span, src);
        let mut report = Report::build(
            match self.severity {
                Severity::Error => ReportKind::Error,
                Severity::Warning => ReportKind::Warning,
            },
            (file, range.clone()),
        )
        .with_config(
            Config::new()
                .with_color(false)
                .with_char_set(CharSet::Ascii)
                .with_index_type(IndexType::Byte),
        )
        .with_message(&self.message)
        .with_label(
            Label::new((file, range)).with_message(self.label.as_deref().unwrap_or("here")),
        );
        for note in &self.notes {
            report = report.with_note(note);
        }
        if let Some(help) = &self.help {
            report = report.with_help(help);
        }
        let mut buf = Vec::new();
        if report
            .finish()
            .write((file, Source::from(src)), &mut buf)
            .is_ok()
        {
            out.push_str(&String::from_utf8_lossy(&buf));
        }
        out
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The span inside `src` and on character boundaries (a span shifted or cut by a front end
/// may land inside a character; the renderer must not panic on it).
fn clamp(span: Span, src: &str) -> std::ops::Range<usize> {
    let mut start = (span.start as usize).min(src.len());
    while !src.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (span.end as usize).clamp(start, src.len());
    while !src.is_char_boundary(end) {
        end += 1;
    }
    start..end
}

/// 1-based line and column (in characters) of a byte offset.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(src.len());
    let before = &src.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let col = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (line, col)
}

/// Terminals that can start an operand; listed one by one they drown the message.
const OPERAND_STARTS: &[&str] = &[
    "number",
    "float",
    "register",
    "pseudo-register",
    "name",
    "global",
    "symbol",
    "built-in",
    "(",
    "-",
    "+",
    "~",
    "!",
    "*",
    "&",
];

fn summarize_expected(expected: &[String]) -> String {
    let names: Vec<String> = expected
        .iter()
        .map(|e| e.trim_matches('"').to_string())
        .collect();
    let operand = OPERAND_STARTS
        .iter()
        .filter(|t| names.iter().any(|n| n == *t))
        .count()
        >= 6;
    let mut parts: Vec<String> = Vec::new();
    if operand {
        parts.push("an expression".into());
    }
    for n in &names {
        if operand && OPERAND_STARTS.contains(&n.as_str()) {
            continue;
        }
        let shown = match n.as_str() {
            "number" | "float" | "register" | "pseudo-register" | "name" | "global" | "symbol"
            | "built-in" | "type" | "string" | "wide string" => n.clone(),
            other => format!("`{other}`"),
        };
        parts.push(shown);
    }
    match parts.len() {
        0 => "nothing more".into(),
        1 => parts.remove(0),
        _ if parts.len() <= 8 => {
            let last = parts.pop().unwrap_or_default();
            format!("{} or {last}", parts.join(", "))
        }
        _ => format!("{}, ...", parts[..8].join(", ")),
    }
}

fn is_comparison(t: &Tok<'_>) -> bool {
    matches!(
        t,
        Tok::EqEq | Tok::NotEq | Tok::Lt | Tok::Gt | Tok::Le | Tok::Ge | Tok::AndAnd | Tok::OrOr
    )
}

fn is_unary_op(t: &Tok<'_>) -> bool {
    matches!(
        t,
        Tok::Minus | Tok::Plus | Tok::Tilde | Tok::Bang | Tok::Star | Tok::Amp
    )
}

/// The source text of a bare hex word (`a`, `acc`, `dead`: a number in HyperDbg, since
/// numbers are hex by default) at `l..r`; `None` for a number written as one (`10`, `0x1`).
fn hex_word(src: &str, l: usize, r: usize) -> Option<&str> {
    let word = src.get(l..r)?;
    let starts_with_letter = word.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    (starts_with_letter && word.bytes().all(|b| b.is_ascii_hexdigit() || b == b'`')).then_some(word)
}

/// The token just before byte offset `at`, for hints that depend on what came before.
fn token_before(src: &str, at: usize) -> Option<Tok<'_>> {
    let mut prev = None;
    for t in Lexer::new(src) {
        match t {
            Ok((l, tok, _)) if l < at => prev = Some(tok),
            _ => break,
        }
    }
    prev
}

pub(crate) fn from_parse_error(
    e: ParseError<usize, Tok<'_>, SyntaxError>,
    src: &str,
) -> Diagnostic {
    match e {
        ParseError::User { error } => {
            let d = Diagnostic::error(error.message, error.span);
            match error.help {
                Some(h) => d.with_help(h),
                None => d,
            }
        }
        ParseError::InvalidToken { location } => {
            Diagnostic::error("invalid token", Span::new(location, location + 1))
        }
        ParseError::UnrecognizedEof { location, expected } => {
            Diagnostic::error("unexpected end of script", Span::new(location, location))
                .with_label(format!("expected {}", summarize_expected(&expected)))
        }
        ParseError::ExtraToken { token: (l, tok, r) } => Diagnostic::error(
            format!("unexpected {tok} after the end of the script"),
            Span::new(l, r),
        )
        .with_label("nothing may follow the script's closing `}`"),
        ParseError::UnrecognizedToken {
            token: (l, tok, r),
            expected,
        } if expected.is_empty() => Diagnostic::error(
            format!("unexpected {tok} after the end of the script"),
            Span::new(l, r),
        )
        .with_label("nothing may follow the script's closing `}`"),
        ParseError::UnrecognizedToken {
            token: (l, tok, r),
            expected,
        } => {
            let mut d = Diagnostic::error(format!("unexpected {tok}"), Span::new(l, r))
                .with_label(format!("expected {}", summarize_expected(&expected)));
            let expects = |s: &str| expected.iter().any(|e| e.trim_matches('"') == s);
            let prev = token_before(src, l);
            // In a condition's call argument `&` is not expected either (shift level);
            // in a plain expression's argument it is.
            let in_condition_call_arg = expects(",") && !expects("&");
            if is_comparison(&tok) && !expects(tok.punct_text()) {
                if in_condition_call_arg {
                    d = d.with_note(
                        "inside a condition, the arguments of a call are shift-level expressions \
                         (HyperDbg's condition grammar)",
                    )
                    .with_help("put the argument in parentheses, or compare outside the call");
                } else {
                    d = d.with_note(
                        "comparisons and `&&`/`||` exist only in the conditions of \
                         if/elsif/while/do-while/for: HyperDbg has no boolean values",
                    );
                }
            } else if matches!(tok, Tok::Amp | Tok::Pipe | Tok::Caret)
                && in_condition_call_arg
                && !expects(tok.punct_text())
            {
                d = d
                    .with_note(
                        "inside a condition, the arguments of a call are shift-level expressions \
                         (HyperDbg's condition grammar)",
                    )
                    .with_help("wrap the argument in parentheses: poi((@rax & 0xfff))");
            } else if matches!(tok, Tok::If) && matches!(prev, Some(Tok::Else)) {
                d = d.with_help("HyperDbg spells `else if` as `elsif`");
            } else if is_unary_op(&tok) && prev.as_ref().is_some_and(is_unary_op) {
                d = d.with_note(
                    "inside a condition, unary operators do not nest (HyperDbg's condition grammar)",
                )
                .with_help("add parentheses: -(~x)");
            } else if matches!(tok, Tok::Inc | Tok::Dec) {
                d = d.with_note("`++` and `--` are statements of their own (`x++;`), not operators inside expressions");
            } else if matches!(tok, Tok::Assign) {
                d = d.with_note(
                    "`=` assigns and is a statement; to compare use `==` inside a condition",
                );
            } else if matches!(tok, Tok::Number(_)) && expects("name") {
                if let Some(word) = hex_word(src, l, r) {
                    d = d
                        .with_note(format!(
                            "`{word}` is made only of hex digits, so HyperDbg reads it as the \
                             {tok}, not as a name"
                        ))
                        .with_help(format!("pick a name that is not a number, e.g. `{word}_`"));
                }
            } else if matches!(tok, Tok::Str(_) | Tok::WStr(_)) {
                d = d.with_note(
                    "strings are not values: they appear only as printf's format and as arguments \
                     of strlen/strcmp/strncmp/memcmp (\"...\") and wcslen/wcscmp/wcsncmp (L\"...\")",
                );
            }
            d
        }
    }
}
