//! Command files and command streams: the one splitter that `run -f`, `attach` (`-f` and
//! standard input) and `check` use to cut a text into HyperDbg commands.
//!
//! A command starts at the first character that is neither white space nor a comment, and
//! runs to the end of the line on which its braces balance, so `script { ... }` may span
//! lines. Strings (with escaped quotes) and comments (`//`, `/* ... */`) are skipped when
//! counting braces, so a `}` or `"` inside a comment in a script does not end anything.
//! Between commands, a line whose first character is `#` is a comment too (as in `run -f`
//! files before this splitter); `#include` inside a script block is untouched.
//!
//! Each command comes back as a byte range of the text, so errors are located in the file,
//! and as its text with the comments outside `{ }` blanked out with spaces: the command
//! parser does not know comments, and blanking keeps every offset valid.

use std::sync::Arc;

use crate::include::{self, Expanded, Located, Mode, SourceFile};

/// One command of a text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The command's byte range in the text.
    pub start: usize,
    pub end: usize,
    /// `text[start..end]`, with comments outside `{ }` replaced by spaces (same length).
    pub text: String,
}

/// A text cut into commands.
#[derive(Debug, PartialEq, Eq)]
pub struct Split {
    pub commands: Vec<Command>,
    /// False when the text ends inside a block or a comment: a reader of a stream waits
    /// for more lines before sending the last command.
    pub complete: bool,
}

/// Cuts `text` into commands (see the module doc).
pub fn split(text: &str) -> Split {
    let b = text.as_bytes();
    let mut commands = Vec::new();
    let mut complete = true;
    let mut current: Option<Open> = None;
    let mut depth = 0usize;
    let mut line_start = true;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        let Some(Open {
            start,
            code_end,
            blanks,
        }) = current.as_mut()
        else {
            match (c, next) {
                (b'\n', _) => {
                    line_start = true;
                    i += 1;
                }
                (c, _) if c.is_ascii_whitespace() => i += 1,
                (b'/', Some(b'/')) => i = line_end(b, i),
                (b'/', Some(b'*')) => match block_comment_end(b, i) {
                    Some(end) => i = end,
                    None => {
                        complete = false;
                        i = b.len();
                    }
                },
                (b'#', _) if line_start => i = line_end(b, i),
                _ => {
                    current = Some(Open {
                        start: i,
                        code_end: i,
                        blanks: Vec::new(),
                    });
                    line_start = false;
                }
            }
            continue;
        };
        match (c, next) {
            (b'"', _) => {
                i = string_end(b, i);
                *code_end = i;
            }
            (b'/', Some(b'/')) => {
                let end = line_end(b, i);
                if depth == 0 {
                    blanks.push((i, end));
                }
                i = end;
            }
            (b'/', Some(b'*')) => {
                let end = block_comment_end(b, i).unwrap_or_else(|| {
                    complete = false;
                    b.len()
                });
                if depth == 0 {
                    blanks.push((i, end));
                }
                i = end;
            }
            (b'{', _) => {
                depth += 1;
                i += 1;
                *code_end = i;
            }
            (b'}', _) => {
                // A stray `}` is left for the command parser to report.
                depth = depth.saturating_sub(1);
                i += 1;
                *code_end = i;
            }
            (b'\n', _) if depth == 0 => {
                let (start, end, blanks) = (*start, *code_end, std::mem::take(blanks));
                commands.push(command(text, start, end, &blanks));
                current = None;
                line_start = true;
                i += 1;
            }
            (c, _) if c.is_ascii_whitespace() => i += 1,
            _ => {
                i += 1;
                while !text.is_char_boundary(i) {
                    i += 1;
                }
                *code_end = i;
            }
        }
    }
    if let Some(open) = current {
        commands.push(command(text, open.start, open.code_end, &open.blanks));
    }
    if depth > 0 {
        complete = false;
    }
    Split { commands, complete }
}

/// The command being read.
struct Open {
    start: usize,
    /// Just past its last byte of code (not white space or a comment).
    code_end: usize,
    /// Comments outside blocks, to blank.
    blanks: Vec<(usize, usize)>,
}

fn command(text: &str, start: usize, end: usize, blanks: &[(usize, usize)]) -> Command {
    let mut bytes = text.as_bytes()[start..end].to_vec();
    for &(s, e) in blanks {
        for byte in &mut bytes[s.min(end) - start..e.min(end) - start] {
            if *byte != b'\n' {
                *byte = b' ';
            }
        }
    }
    Command {
        start,
        end,
        // Comments start and end on ASCII bytes and become all spaces: still UTF-8.
        text: String::from_utf8(bytes).unwrap_or_default(),
    }
}

/// The index of the `\n` ending the line that `i` is on (or the end of the text).
fn line_end(b: &[u8], i: usize) -> usize {
    b[i..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |p| i + p)
}

/// The index just past the `*/` closing the comment opened at `i`.
fn block_comment_end(b: &[u8], i: usize) -> Option<usize> {
    b.get(i + 2..)?
        .windows(2)
        .position(|w| w == b"*/")
        .map(|p| i + 2 + p + 2)
}

/// The index just past the string opened at `i`. A string does not span lines: an
/// unterminated one ends at the line's end (the script's lexer reports it).
fn string_end(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while j < b.len() && b[j] != b'"' && b[j] != b'\n' {
        j += if b[j] == b'\\' && b.get(j + 1) != Some(&b'\n') {
            2
        } else {
            1
        };
    }
    if b.get(j) == Some(&b'"') {
        j += 1;
    }
    j.min(b.len())
}

/// The commands of a file (or `-e` text), each with its includes expanded; an include that
/// cannot be read is that command's error.
pub fn load(file: &Arc<SourceFile>) -> Vec<Result<Expanded, Located>> {
    split(&file.text)
        .commands
        .into_iter()
        .map(|c| include::expand(file, c.start..c.end, &c.text, Mode::Commands))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::split;

    fn texts(text: &str) -> Vec<String> {
        split(text).commands.into_iter().map(|c| c.text).collect()
    }

    fn ranges(text: &str) -> Vec<&str> {
        split(text)
            .commands
            .into_iter()
            .map(|c| &text[c.start..c.end])
            .collect()
    }

    #[test]
    fn commands_span_lines_until_braces_balance() {
        let text =
            "# comment\n!ioin 510\n\n!ioout 511 script {\n  printf(\"}\\n\");\n}\n// x\n!msrread\n";
        assert_eq!(
            ranges(text),
            [
                "!ioin 510",
                "!ioout 511 script {\n  printf(\"}\\n\");\n}",
                "!msrread"
            ]
        );
    }

    #[test]
    fn braces_and_quotes_in_comments_inside_scripts_do_not_count() {
        let text =
            "!ioin 510 script {\n  // a } here\n  /* and { there \" */\n  x = 1;\n}\n!cpuid\n";
        assert_eq!(
            ranges(text),
            [
                "!ioin 510 script {\n  // a } here\n  /* and { there \" */\n  x = 1;\n}",
                "!cpuid"
            ]
        );
        // Comments inside the script are the script's: kept.
        assert!(texts(text)[0].contains("// a } here"));
    }

    #[test]
    fn strings_with_escaped_quotes_hold_braces() {
        let text = "!ioin 510 script { printf(\"\\\"}{\\\"\\n\"); }\n!cpuid";
        assert_eq!(
            ranges(text),
            ["!ioin 510 script { printf(\"\\\"}{\\\"\\n\"); }", "!cpuid"]
        );
    }

    #[test]
    fn comments_outside_blocks_are_blanked_and_offsets_kept() {
        let text = "/* header\n spanning lines } */\n!ioin 510 /* port */ stage post // why\n  \n? .x = 0; // init\n";
        let s = split(text);
        assert!(s.complete);
        assert_eq!(s.commands.len(), 2);
        let c = &s.commands[0];
        assert_eq!(&text[c.start..c.end], "!ioin 510 /* port */ stage post");
        assert_eq!(c.text, "!ioin 510            stage post");
        assert_eq!(c.text.len(), c.end - c.start);
        assert_eq!(s.commands[1].text, "? .x = 0;");
    }

    #[test]
    fn a_comment_spanning_lines_inside_a_command_keeps_it_going() {
        let text = "!ioin 510 /* a\n b */ stage post\n!cpuid";
        assert_eq!(ranges(text), ["!ioin 510 /* a\n b */ stage post", "!cpuid"]);
    }

    #[test]
    fn an_open_block_or_comment_is_incomplete() {
        assert!(!split("!ioin 510 script {\n x = 1;\n").complete);
        assert!(!split("!ioin 510 /* still").complete);
        assert!(split("!ioin 510 script {\n x = 1;\n}\n").complete);
        assert!(split("").complete);
        assert!(split("").commands.is_empty());
        // The open command is still returned, so a file's last command gets an error.
        assert_eq!(
            ranges("!ioin 510 script {\n x = 1;\n"),
            ["!ioin 510 script {\n x = 1;"]
        );
    }

    #[test]
    fn non_ascii_text_stays_on_char_boundaries() {
        let text = "!ioin 510 script { printf(\"é\"); } // née\n? x = 1; /* ü */";
        let s = split(text);
        assert_eq!(s.commands.len(), 2);
        assert_eq!(
            s.commands[0].text.len(),
            s.commands[0].end - s.commands[0].start
        );
        assert_eq!(s.commands[1].text.trim_end(), "? x = 1;");
    }

    /// Never a panic, and every range stays on the text's char boundaries, whatever the
    /// text: random mixes of the characters the splitter and the include pass react to.
    #[test]
    fn arbitrary_text_never_panics() {
        use crate::include::{expand, Mode, SourceFile};
        use hvscript_grammar::ast::Span;
        use hvscript_grammar::Diagnostic;
        const PIECES: &[&str] = &[
            "{",
            "}",
            "\"",
            "\\",
            "/",
            "*",
            "//",
            "/*",
            "*/",
            "\n",
            " ",
            "#",
            "#include",
            "#include \"",
            "script",
            "script {",
            "file:",
            "é",
            "!ioin 510",
            "?",
            ";",
            "x",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let text: String = (0..len)
                .map(|_| PIECES[(next() % PIECES.len() as u64) as usize])
                .collect();
            let s = split(&text);
            for c in &s.commands {
                assert!(c.start <= c.end && c.end <= text.len(), "{text:?}");
                assert_eq!(c.text.len(), c.end - c.start, "{text:?}");
                let file = SourceFile::command_line("-e", text.as_str());
                if let Ok(x) = expand(&file, c.start..c.end, &c.text, Mode::Commands) {
                    let a = (next() % (x.text.len() as u64 + 2)) as usize;
                    let b = a + (next() % 4) as usize;
                    let at = x.locate(Diagnostic::error("e", Span::new(a, b)));
                    let span = at.diagnostic.span;
                    assert!(span.start <= span.end, "{text:?}");
                    let _ = at.render();
                }
            }
        }
    }
}
