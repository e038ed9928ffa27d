//! `#include "file"` and `script { file:PATH }`: script text loaded from files, as HyperDbg
//! v0.18+ does, expanded by a front-end pass over the text before anything parses it
//! (`eval`, `check`, `run -e/-f`, `attach`).
//!
//! HyperDbg's rules, kept: `#include "path"` (a `;` after it is optional) is replaced by the
//! file's script, where a file written as HyperDbg's docs write them, `? { ... }`, gives the
//! inside of its braces; a file included a second time in one script is skipped (HyperDbg
//! includes each path once, so two helpers may both include a third). `script { file:PATH }`
//! in an event command takes the whole script from PATH. Ours, where HyperDbg's differ: a
//! relative path resolves against the directory of the file that names it (the current
//! directory for `-e` and command-line scripts; HyperDbg uses its own executable's
//! directory), and an include cycle or more than [`MAX_DEPTH`] nested includes is an error.
//!
//! The expanded text remembers where each of its pieces came from, so a diagnostic about it
//! is located in the right file, line and column ([`Expanded::locate`]); a missing file is
//! an error at the include that names it.

use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hvscript_grammar::ast::Span;
use hvscript_grammar::Diagnostic;

/// Nested includes allowed (the root file is depth 0).
pub const MAX_DEPTH: usize = 16;

/// A text that diagnostics point into: a file, or a command-line argument.
#[derive(Debug)]
pub struct SourceFile {
    /// What diagnostics call it (the path as given, `-e`, `<command line>`, ...).
    pub name: String,
    pub text: Arc<str>,
    /// Where relative includes resolve.
    dir: PathBuf,
    /// The canonical path, for cycles and include-once; `None` for command-line text.
    path: Option<PathBuf>,
}

impl SourceFile {
    /// A file read from `path`.
    pub fn file(path: &Path, text: impl Into<Arc<str>>) -> Arc<SourceFile> {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Arc::new(SourceFile {
            name: path.display().to_string(),
            text: text.into(),
            dir,
            path: path.canonicalize().ok(),
        })
    }

    /// Text given on the command line (or standard input): includes resolve against the
    /// current directory.
    pub fn command_line(name: &str, text: impl Into<Arc<str>>) -> Arc<SourceFile> {
        Arc::new(SourceFile {
            name: name.to_string(),
            text: text.into(),
            dir: PathBuf::from("."),
            path: None,
        })
    }
}

/// A diagnostic and the file it points into.
#[derive(Clone, Debug)]
pub struct Located {
    pub file: Arc<SourceFile>,
    pub diagnostic: Diagnostic,
}

impl Located {
    /// `file:line:col: error: ...` with the source line and a caret.
    pub fn render(&self) -> String {
        self.diagnostic.render(&self.file.name, &self.file.text)
    }
}

/// A piece of expanded text: `len` bytes copied from `file` at `at`, placed at `out`.
#[derive(Clone, Debug)]
struct Piece {
    out: usize,
    file: Arc<SourceFile>,
    at: usize,
    len: usize,
}

/// Text with its includes expanded, and where each piece came from.
#[derive(Clone, Debug)]
pub struct Expanded {
    pub text: String,
    pieces: Vec<Piece>,
    /// Where an empty expansion is (the start of the expanded range).
    origin: (Arc<SourceFile>, usize),
}

impl Expanded {
    /// `d` (about [`Expanded::text`]) moved into the file its span starts in.
    pub fn locate(&self, d: Diagnostic) -> Located {
        let (start, end) = (d.span.start as usize, d.span.end as usize);
        let piece = self
            .pieces
            .iter()
            .rev()
            .find(|p| p.out <= start && (start < p.out + p.len || p.len == 0))
            .or_else(|| self.pieces.iter().rev().find(|p| p.out <= start));
        let Some(p) = piece else {
            let (file, at) = self.origin.clone();
            return Located {
                diagnostic: Diagnostic {
                    span: Span::new(at, at),
                    ..d
                },
                file,
            };
        };
        // A span running past its piece (into text from another file) is cut at the end.
        let rel_start = (start - p.out).min(p.len);
        let from = p.at + rel_start;
        let to = p.at + end.saturating_sub(p.out).clamp(rel_start, p.len);
        Located {
            diagnostic: Diagnostic {
                span: Span::new(from, to.max(from)),
                ..d
            },
            file: p.file.clone(),
        }
    }
}

/// What the text is: a script, or event and debugger commands (where `script { file:PATH }`
/// is recognised too).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Mode {
    Script,
    Commands,
}

/// Expands the includes of `file.text[range]`. `text` is that range's text as the caller
/// wants it read (the command splitter blanks comments; same length, same offsets).
pub fn expand(
    file: &Arc<SourceFile>,
    range: Range<usize>,
    text: &str,
    mode: Mode,
) -> Result<Expanded, Located> {
    debug_assert_eq!(range.len(), text.len());
    let mut x = Expander {
        text: String::new(),
        pieces: Vec::new(),
        stack: file.path.iter().cloned().collect(),
        names: vec![file.name.clone()],
        included: HashSet::new(),
    };
    x.expand(file, range.start, text, mode)?;
    Ok(Expanded {
        text: x.text,
        pieces: x.pieces,
        origin: (file.clone(), range.start),
    })
}

/// Expands a whole file or command-line text as a script.
pub fn expand_script(file: &Arc<SourceFile>) -> Result<Expanded, Located> {
    let text = file.text.clone();
    expand(file, 0..text.len(), &text, Mode::Script)
}

struct Expander {
    text: String,
    pieces: Vec<Piece>,
    /// Canonical paths of the files being expanded, outermost first.
    stack: Vec<PathBuf>,
    /// Their names, for the message of a cycle.
    names: Vec<String>,
    /// Every file included so far (HyperDbg includes each once).
    included: HashSet<PathBuf>,
}

/// A directive found in the text: what to replace (`range`) and with which file.
struct Directive {
    /// The bytes the file's script replaces.
    range: Range<usize>,
    /// The path as written, and where it is written (for errors).
    path: String,
    path_span: Range<usize>,
}

impl Expander {
    /// Appends `text` (which sits at `base` in `file`) with its directives expanded.
    fn expand(
        &mut self,
        file: &Arc<SourceFile>,
        base: usize,
        text: &str,
        mode: Mode,
    ) -> Result<(), Located> {
        let mut copied = 0;
        for d in directives(text, mode) {
            let d = d.map_err(|(message, span)| Located {
                file: file.clone(),
                diagnostic: Diagnostic::error(
                    message,
                    Span::new(base + span.start, base + span.end),
                ),
            })?;
            self.copy(file, base + copied, &text[copied..d.range.start]);
            self.include(file, base, &d)?;
            copied = d.range.end;
        }
        self.copy(file, base + copied, &text[copied..]);
        Ok(())
    }

    fn copy(&mut self, file: &Arc<SourceFile>, at: usize, text: &str) {
        if text.is_empty() {
            return;
        }
        self.pieces.push(Piece {
            out: self.text.len(),
            file: file.clone(),
            at,
            len: text.len(),
        });
        self.text.push_str(text);
    }

    fn include(
        &mut self,
        from: &Arc<SourceFile>,
        base: usize,
        d: &Directive,
    ) -> Result<(), Located> {
        let error = |message: String| Located {
            file: from.clone(),
            diagnostic: Diagnostic::error(
                message,
                Span::new(base + d.path_span.start, base + d.path_span.end),
            ),
        };
        let path = from.dir.join(&d.path);
        let shown = if Path::new(&d.path).is_absolute() || from.dir == Path::new(".") {
            d.path.clone()
        } else {
            path.display().to_string()
        };
        let bytes =
            std::fs::read(&path).map_err(|e| error(format!("cannot read `{shown}`: {e}")))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            error(format!(
                "`{shown}` is not UTF-8 text (byte {})",
                e.utf8_error().valid_up_to()
            ))
        })?;
        let canonical = path.canonicalize().unwrap_or_else(|_| path.clone());
        if let Some(i) = self.stack.iter().position(|p| *p == canonical) {
            let mut chain: Vec<&str> = self.names[i..].iter().map(String::as_str).collect();
            chain.push(&shown);
            return Err(error(format!("include cycle: {}", chain.join(" -> "))));
        }
        if self.stack.len() > MAX_DEPTH {
            return Err(error(format!("includes nested more than {MAX_DEPTH} deep")));
        }
        if !self.included.insert(canonical.clone()) {
            return Ok(());
        }
        let file = Arc::new(SourceFile {
            name: shown.clone(),
            text: text.into(),
            dir: match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            },
            path: Some(canonical.clone()),
        });
        let body = script_body(&file.text);
        self.stack.push(canonical);
        self.names.push(shown);
        let text = file.text.clone();
        let result = self.expand(&file, body.start, &text[body.clone()], Mode::Script);
        self.stack.pop();
        self.names.pop();
        result?;
        // The included script ends its own line: a `//` comment on its last line must not
        // swallow what follows the directive.
        self.text.push('\n');
        Ok(())
    }
}

/// The part of an included file that is its script: inside `? { ... }` when the file is
/// written as HyperDbg's docs write scripts, else all of it.
fn script_body(text: &str) -> Range<usize> {
    let b = text.as_bytes();
    let first = skip_space_and_comments(b, 0);
    if b.get(first) == Some(&b'?') {
        let open = skip_space_and_comments(b, first + 1);
        let last = text.trim_end().len();
        if b.get(open) == Some(&b'{') && last > open + 1 && b[last - 1] == b'}' {
            return open + 1..last - 1;
        }
        // `? script` without braces: the script after the `?`.
        return first + 1..text.len();
    }
    0..text.len()
}

fn skip_space_and_comments(b: &[u8], mut i: usize) -> usize {
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        match (b.get(i), b.get(i + 1)) {
            (Some(b'/'), Some(b'/')) => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            (Some(b'/'), Some(b'*')) => {
                i = b[i + 2..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(b.len(), |p| i + 2 + p + 2);
            }
            _ => return i,
        }
    }
}

type DirectiveResult = Result<Directive, (String, Range<usize>)>;

/// The directives of `text`, in order; strings and comments are skipped.
fn directives(text: &str, mode: Mode) -> Vec<DirectiveResult> {
    let b = text.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match (b[i], b.get(i + 1)) {
            (b'"', _) => {
                i += 1;
                while i < b.len() && b[i] != b'"' && b[i] != b'\n' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            (b'/', Some(b'/')) => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            (b'/', Some(b'*')) => {
                i = b[i + 2..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(b.len(), |p| i + 2 + p + 2);
            }
            (b'#', _)
                if b[i..].starts_with(b"#include") && !b.get(i + 8).is_some_and(|&c| ident(c)) =>
            {
                let d = include_directive(text, i);
                i = match &d {
                    Ok(d) => d.range.end,
                    Err(_) => b.len(),
                };
                out.push(d);
            }
            (b's', _)
                if mode == Mode::Commands
                    && b[i..].starts_with(b"script")
                    && (i == 0 || !ident(b[i - 1]))
                    && !b.get(i + 6).is_some_and(|&c| ident(c)) =>
            {
                match script_file(text, i + 6) {
                    Some(d) => {
                        i = d.as_ref().map_or(b.len(), |d| d.range.end);
                        out.push(d);
                    }
                    None => i += 6,
                }
            }
            _ => i += 1,
        }
        i = i.min(b.len());
        while !text.is_char_boundary(i) {
            i += 1;
        }
    }
    out
}

/// `#include "path"` (and an optional `;`) at `at`.
fn include_directive(text: &str, at: usize) -> DirectiveResult {
    let b = text.as_bytes();
    let mut i = at + "#include".len();
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    if b.get(i) != Some(&b'"') {
        return Err((
            "`#include` needs a file name in quotes: #include \"helpers.ds\"".into(),
            at..at + "#include".len(),
        ));
    }
    let open = i;
    let mut path = String::new();
    i += 1;
    loop {
        match b.get(i) {
            None | Some(b'\n') => {
                return Err(("the file name is never closed by `\"`".into(), open..i));
            }
            Some(b'"') => break,
            // Only `\"` and `\\` are escapes: a Windows path keeps its backslashes.
            Some(b'\\') if matches!(b.get(i + 1), Some(b'"' | b'\\')) => {
                path.push(b[i + 1] as char);
                i += 2;
            }
            Some(_) => {
                let c = text[i..].chars().next().unwrap_or('\u{fffd}');
                path.push(c);
                i += c.len_utf8();
            }
        }
    }
    let path_span = open..i + 1;
    let mut end = i + 1;
    let mut j = end;
    while j < b.len() && (b[j] == b' ' || b[j] == b'\t') {
        j += 1;
    }
    if b.get(j) == Some(&b';') {
        end = j + 1;
    }
    if path.is_empty() {
        return Err(("`#include` of an empty file name".into(), path_span));
    }
    Ok(Directive {
        range: at..end,
        path,
        path_span,
    })
}

/// `{ file:PATH }` after the word `script` (whose end is `after`): the block's inside is
/// replaced by PATH's script. `None` when the block is an ordinary script.
fn script_file(text: &str, after: usize) -> Option<DirectiveResult> {
    let b = text.as_bytes();
    let mut i = after;
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    if b.get(i) != Some(&b'{') {
        return None;
    }
    let open = i;
    i += 1;
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    if !b[i..].starts_with(b"file:") {
        return None;
    }
    let path_start = i + "file:".len();
    let Some(close) = b[path_start..].iter().position(|&c| c == b'}') else {
        return Some(Err((
            "the `script { file:PATH }` block is never closed".into(),
            open..open + 1,
        )));
    };
    let close = path_start + close;
    let raw = &text[path_start..close];
    let path = raw.trim();
    let lead = raw.len() - raw.trim_start().len();
    let path_span = if path.is_empty() {
        i..path_start
    } else {
        path_start + lead..path_start + lead + path.len()
    };
    if path.is_empty() {
        return Some(Err((
            "`file:` needs a path: script { file:probe.ds }".into(),
            path_span,
        )));
    }
    Some(Ok(Directive {
        range: open + 1..close,
        path: path.to_string(),
        path_span,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("hvscript-include-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn an_include_is_replaced_by_the_files_script_and_errors_point_into_it() {
        let d = dir("basic");
        std::fs::write(
            d.join("lib.ds"),
            "? {\n    void f() {\n        x = y;\n    }\n}\n",
        )
        .unwrap();
        let main = d.join("main.ds");
        let text = "#include \"lib.ds\";\nf();\n";
        std::fs::write(&main, text).unwrap();
        let root = SourceFile::file(&main, text);
        let x = expand_script(&root).unwrap();
        assert!(x.text.contains("void f()"), "{}", x.text);
        assert!(!x.text.contains('?'), "{}", x.text);
        assert!(x.text.ends_with("f();\n"), "{}", x.text);
        // `y` in the expanded text is located in lib.ds, line 3.
        let y = x.text.find("= y").unwrap() + 2;
        let loc = x.locate(Diagnostic::error("y unknown", Span::new(y, y + 1)));
        assert_eq!(loc.file.name, d.join("lib.ds").display().to_string());
        assert!(
            loc.render().contains("lib.ds:3:13: error: y unknown"),
            "{}",
            loc.render()
        );
        // `f();` is located in main.ds, line 2.
        let f = x.text.rfind("f();").unwrap();
        let loc = x.locate(Diagnostic::error("here", Span::new(f, f + 3)));
        assert!(
            loc.render().contains("main.ds:2:1: error: here"),
            "{}",
            loc.render()
        );
    }

    #[test]
    fn a_missing_file_is_an_error_at_the_include() {
        let root = SourceFile::command_line("-e", "x = 1;\n  #include \"/nonexistent/h.ds\"\n");
        let e = expand_script(&root).unwrap_err();
        let r = e.render();
        assert!(
            r.starts_with("-e:2:12: error: cannot read `/nonexistent/h.ds`"),
            "{r}"
        );
        assert!(r.contains("^"), "{r}");
    }

    #[test]
    fn cycles_are_errors_and_a_second_include_is_skipped() {
        let d = dir("cycle");
        std::fs::write(d.join("a.ds"), "#include \"b.ds\"\n").unwrap();
        std::fs::write(d.join("b.ds"), "#include \"a.ds\"\n").unwrap();
        let a = d.join("a.ds");
        let root = SourceFile::file(&a, std::fs::read_to_string(&a).unwrap());
        let e = expand_script(&root).unwrap_err();
        assert!(e.diagnostic.message.starts_with("include cycle: "), "{e:?}");
        assert!(e.diagnostic.message.ends_with("a.ds"), "{e:?}");

        std::fs::write(d.join("h.ds"), "x = 1;").unwrap();
        let root = SourceFile::file(&d.join("m.ds"), "#include \"h.ds\"\n#include \"h.ds\"\n");
        let x = expand_script(&root).unwrap();
        assert_eq!(x.text.matches("x = 1;").count(), 1, "{}", x.text);
    }

    #[test]
    fn depth_is_limited() {
        let d = dir("depth");
        for i in 0..=MAX_DEPTH + 1 {
            std::fs::write(
                d.join(format!("{i}.ds")),
                format!("#include \"{}.ds\"\n", i + 1),
            )
            .unwrap();
        }
        let root = SourceFile::file(&d.join("0.ds"), "#include \"1.ds\"\n");
        let e = expand_script(&root).unwrap_err();
        assert!(e.diagnostic.message.contains("nested more than"), "{e:?}");
    }

    #[test]
    fn includes_in_strings_and_comments_are_text() {
        let src = "printf(\"#include \\\"x\\\"\"); // #include \"y\"\n/* #include \"z\" */";
        let root = SourceFile::command_line("-e", src);
        assert_eq!(expand_script(&root).unwrap().text, src);
    }

    #[test]
    fn script_file_in_a_command() {
        let d = dir("file");
        std::fs::write(d.join("probe.ds"), "printf(\"%x\\n\", @rax);\n").unwrap();
        let cmd = format!(
            "!ioin 510 script {{ file:{} }}",
            d.join("probe.ds").display()
        );
        let root = SourceFile::command_line("-e", cmd.as_str());
        let x = expand(&root, 0..cmd.len(), &cmd, Mode::Commands).unwrap();
        assert!(
            x.text.starts_with("!ioin 510 script {printf("),
            "{}",
            x.text
        );
        assert!(x.text.ends_with("}"), "{}", x.text);
        // Without `file:` the block is an ordinary script.
        let plain = "!ioin 510 script { x = 1; }";
        let root = SourceFile::command_line("-e", plain);
        assert_eq!(
            expand(&root, 0..plain.len(), plain, Mode::Commands)
                .unwrap()
                .text,
            plain
        );
        // A missing file is located at its path.
        let bad = "!ioin 510 script { file:/nonexistent/p.ds }";
        let root = SourceFile::command_line("-e", bad);
        let e = expand(&root, 0..bad.len(), bad, Mode::Commands).unwrap_err();
        assert_eq!(e.diagnostic.span, Span::new(24, 41));
    }
}
