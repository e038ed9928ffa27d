//! HyperDbg's public script test cases, parsed: every `*-correct.txt` script parses, the
//! semantic `.ds` suites parse, and each `*-wrong.txt` record is either rejected with a
//! located diagnostic or counted as syntax HyperDbg itself accepts (the conformance crate
//! computes why the case generator called those wrong).

use std::path::{Path, PathBuf};

fn suite_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/hyperdbg-suite");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!("skipped: {} is absent", dir.display());
        None
    }
}

/// (case number, script) of each 4-line record.
fn records(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i + 3 < lines.len() + 1 && i < lines.len() {
        if lines[i].trim().is_empty() {
            i += 1;
            continue;
        }
        assert_eq!(
            lines.get(i + 3).map(|l| l.trim()),
            Some("$end$"),
            "{}:{}: malformed record",
            path.display(),
            i + 1
        );
        out.push((lines[i].to_string(), lines[i + 1].to_string()));
        i += 4;
    }
    out
}

fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    v.sort();
    v
}

#[test]
fn every_correct_script_parses() {
    let Some(dir) = suite_dir() else { return };
    let mut n = 0;
    for f in files(&dir.join("script-test-cases"), "-correct.txt") {
        for (num, script) in records(&f) {
            if let Err(errs) = hvscript_grammar::parse_checked(&script) {
                panic!(
                    "{} case {num} does not parse:\n{}",
                    f.display(),
                    errs[0].render("case", &script)
                );
            }
            n += 1;
        }
    }
    println!("correct scripts parsed: {n}");
    assert!(n >= 57, "expected HyperDbg's 57 correct cases, found {n}");
}

#[test]
fn wrong_scripts_are_rejected_with_a_location_or_counted() {
    let Some(dir) = suite_dir() else { return };
    let (mut rejected, mut accepted) = (0, 0);
    for f in files(&dir.join("script-test-cases"), "-wrong.txt") {
        let (mut r, mut a) = (0, 0);
        for (num, script) in records(&f) {
            match hvscript_grammar::parse_checked(&script) {
                Err(errs) => {
                    let rendered = errs[0].render("case", &script);
                    assert!(rendered.starts_with("case:1:"), "no location: {rendered}");
                    assert!(
                        rendered.contains('^') || rendered.contains('|'),
                        "no caret: {rendered}"
                    );
                    r += 1;
                }
                Ok(_) => {
                    if std::env::var("SHOW_ACCEPTED").is_ok() {
                        println!(
                            "accepted {} #{num}: {script}",
                            f.file_name().unwrap().to_string_lossy()
                        );
                    }
                    a += 1
                }
            }
        }
        println!(
            "{}: {r} rejected by the parser, {a} accepted by the parser",
            f.file_name().unwrap().to_string_lossy()
        );
        rejected += r;
        accepted += a;
    }
    println!("wrong scripts: {rejected} rejected by the parser, {accepted} accepted by the parser");
}

#[test]
fn semantic_suites_parse() {
    let Some(dir) = suite_dir() else { return };
    let mut n = 0;
    for f in files(&dir.join("semantic-test-cases"), ".ds") {
        let src = std::fs::read_to_string(&f).unwrap();
        if let Err(errs) = hvscript_grammar::parse_checked(&src) {
            panic!("{}", errs[0].render(&f.display().to_string(), &src));
        }
        n += 1;
    }
    println!("semantic suites parsed: {n}");
    assert_eq!(n, 7);
}
