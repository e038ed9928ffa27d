//! Splitting a command line into words: white space separates them, and a `{ ... }` group
//! (strings and comments inside respected) is one word, braces included. Each word keeps
//! its byte offset so errors can point at it.

use alloc::vec::Vec;

use super::CommandError;

#[derive(Clone, Copy, Debug)]
pub(crate) struct Word<'a> {
    pub text: &'a str,
    pub start: usize,
}

impl Word<'_> {
    pub fn end(&self) -> usize {
        self.start + self.text.len()
    }
}

/// Splits on white space; a `{ ... }` group (strings and comments inside respected) is one
/// word, braces included.
pub(crate) fn words(line: &str) -> Result<Vec<Word<'_>>, CommandError> {
    let bytes = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if bytes[i] == b'{' {
            i = brace_group_end(line, i)?;
        } else {
            while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'{' {
                i += 1;
            }
        }
        out.push(Word {
            text: &line[start..i],
            start,
        });
    }
    Ok(out)
}

/// The index just past the `}` matching the `{` at `open`.
pub(crate) fn brace_group_end(line: &str, open: usize) -> Result<usize, CommandError> {
    let b = line.as_bytes();
    let mut depth = 0usize;
    let mut i = open;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    Err(CommandError {
        message: "unbalanced `{`: the block is never closed".into(),
        start: open,
        end: open + 1,
        help: None,
    })
}
