//! Reader for HyperDbg's public `script-test-cases/*.txt` files.
//!
//! This module owns the on-disk record format (four lines per record: case number, one line of
//! script, expected value in hex without `0x` or `$error$`, and `$end$`) and the listing of the
//! `*-correct.txt` / `*-wrong.txt` files of a suite directory. Parsing is strict: any malformed
//! record is reported as a [`SuiteFileError`] naming the 1-based file line; nothing here panics.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// What a record expects: the value passed to the last executed `test_statement`, or an error.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expected {
    /// The third line was a hex number (read with radix 16, as HyperDbg's harness does).
    Value(u64),
    /// The third line was `$error$`.
    Error,
}

/// One four-line record of a suite file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteRecord {
    /// The case number as written (decimal; unique only within one generator run).
    pub number: String,
    /// The script line, verbatim (leading spaces included).
    pub script: String,
    /// The expected outcome.
    pub expected: Expected,
    /// 1-based line of the script in the file.
    pub line: usize,
}

/// Which half of the suite a file belongs to, from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SuiteKind {
    /// `*-correct.txt`: the C# generator evaluated the script successfully.
    Correct,
    /// `*-wrong.txt`: the C# generator failed on the script; every record expects `$error$`.
    Wrong,
}

/// A malformed suite file (or one that could not be read).
#[derive(Debug)]
pub struct SuiteFileError {
    /// The file, when known.
    pub path: Option<PathBuf>,
    /// 1-based line the problem was found on (0 when the file could not be read at all).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for SuiteFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{}:{}: {}", p.display(), self.line, self.message),
            None => write!(f, "line {}: {}", self.line, self.message),
        }
    }
}

impl std::error::Error for SuiteFileError {}

/// The file's kind from its name (`*-correct.txt` or `*-wrong.txt`), or `None`.
pub fn suite_kind(path: &Path) -> Option<SuiteKind> {
    let name = path.file_name()?.to_str()?;
    if name.ends_with("-correct.txt") {
        Some(SuiteKind::Correct)
    } else if name.ends_with("-wrong.txt") {
        Some(SuiteKind::Wrong)
    } else {
        None
    }
}

/// The `*-correct.txt` and `*-wrong.txt` files directly inside `dir`, sorted by file name.
pub fn list_suite_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() && suite_kind(&path).is_some() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Reads and parses one suite file; errors carry the path.
pub fn read_suite_file(path: &Path) -> Result<Vec<SuiteRecord>, SuiteFileError> {
    let text = fs::read_to_string(path).map_err(|e| SuiteFileError {
        path: Some(path.to_path_buf()),
        line: 0,
        message: format!("cannot read the file: {e}"),
    })?;
    parse_suite(&text).map_err(|mut e| {
        e.path = Some(path.to_path_buf());
        e
    })
}

/// Parses the text of a suite file. An empty text has no records. Lines may end in LF or CRLF;
/// the last line may lack its line end. Blank lines between records are errors.
pub fn parse_suite(text: &str) -> Result<Vec<SuiteRecord>, SuiteFileError> {
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    // `split` yields one empty piece after a final line end; it is not a line of the file.
    let count = if text.is_empty() || text.ends_with('\n') {
        lines.len().saturating_sub(1)
    } else {
        lines.len()
    };
    let err = |line: usize, message: String| SuiteFileError {
        path: None,
        line,
        message,
    };
    let mut records = Vec::new();
    let mut i = 0;
    while i < count {
        let number_line = i + 1;
        let number = lines[i];
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err(
                number_line,
                format!("expected a decimal case number, found `{number}`"),
            ));
        }
        if i + 1 >= count {
            return Err(err(
                number_line,
                format!("record {number} ends after its case number (no script line)"),
            ));
        }
        let script = lines[i + 1];
        if script.trim().is_empty() {
            return Err(err(
                number_line + 1,
                format!("record {number} has an empty script line"),
            ));
        }
        if i + 2 >= count {
            return Err(err(
                number_line + 1,
                format!("record {number} ends after its script (no expected value)"),
            ));
        }
        let expected = parse_expected(lines[i + 2]).map_err(|m| err(number_line + 2, m))?;
        if i + 3 >= count {
            return Err(err(
                number_line + 2,
                format!("record {number} is missing its `$end$` line"),
            ));
        }
        if lines[i + 3] != "$end$" {
            return Err(err(
                number_line + 3,
                format!(
                    "record {number}: expected `$end$`, found `{}`",
                    lines[i + 3]
                ),
            ));
        }
        records.push(SuiteRecord {
            number: number.to_string(),
            script: script.to_string(),
            expected,
            line: number_line + 1,
        });
        i += 4;
    }
    Ok(records)
}

fn parse_expected(s: &str) -> Result<Expected, String> {
    if s == "$error$" {
        return Ok(Expected::Error);
    }
    if s.is_empty() || s.len() > 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "expected a hex value (at most 16 digits, no `0x`) or `$error$`, found `{s}`"
        ));
    }
    u64::from_str_radix(s, 16)
        .map(Expected::Value)
        .map_err(|e| format!("bad hex value `{s}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records_and_lines() {
        let text =
            "3\nx = 1; test_statement(x);\nFFFFFFEF\n$end$\n7\n if (1) { }\n$error$\n$end$\n";
        let r = parse_suite(text).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].number, "3");
        assert_eq!(r[0].expected, Expected::Value(0xFFFF_FFEF));
        assert_eq!(r[0].line, 2);
        assert_eq!(r[1].script, " if (1) { }");
        assert_eq!(r[1].expected, Expected::Error);
        assert_eq!(r[1].line, 6);
    }

    #[test]
    fn empty_file_has_no_records() {
        assert!(parse_suite("").unwrap().is_empty());
    }

    #[test]
    fn missing_end_is_an_error_naming_the_line() {
        let e = parse_suite("1\ns\n0\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("$end$"));
        let e = parse_suite("1\ns\n0\n$end\n").unwrap_err();
        assert_eq!(e.line, 4);
    }

    #[test]
    fn bad_hex_and_bad_number_are_errors() {
        let e = parse_suite("1\ns\n0x12\n$end$\n").unwrap_err();
        assert_eq!(e.line, 3);
        let e = parse_suite("1\ns\n12345678901234567\n$end$\n").unwrap_err();
        assert_eq!(e.line, 3);
        let e = parse_suite("a\ns\n0\n$end$\n").unwrap_err();
        assert_eq!(e.line, 1);
        let e = parse_suite("1\ns\n0\n$end$\n\n").unwrap_err();
        assert_eq!(e.line, 5);
    }

    #[test]
    fn crlf_and_missing_final_newline() {
        let r = parse_suite("1\r\ns\r\nA\r\n$end$").unwrap();
        assert_eq!(r[0].expected, Expected::Value(10));
        assert_eq!(r[0].script, "s");
    }

    #[test]
    fn kinds_from_names() {
        assert_eq!(
            suite_kind(Path::new("a/01-x-correct.txt")),
            Some(SuiteKind::Correct)
        );
        assert_eq!(
            suite_kind(Path::new("01-x-wrong.txt")),
            Some(SuiteKind::Wrong)
        );
        assert_eq!(suite_kind(Path::new("README.md")), None);
    }
}
