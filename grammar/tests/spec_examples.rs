//! The script examples of `../shared/spec/` (HyperDbg's documentation examples, collected
//! in notes-language.md §6) parse. Each command of the example block is cut out: an event
//! command contributes the text inside `script { ... }`, a `?` command its script, other
//! lines are scripts as they stand. Examples of the v0.23 type system (structs, arrays)
//! are reported as skipped until that issue lands.

use std::path::Path;

fn example_block() -> Option<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/spec/notes-language.md");
    let Ok(text) = std::fs::read_to_string(&path) else {
        println!("skipped: {} is absent", path.display());
        return None;
    };
    let section = text.split("## 6. Documentation examples").nth(1)?;
    let block = section.split("```c").nth(1)?.split("```").next()?;
    Some(block.to_string())
}

fn brace_balance(s: &str) -> i32 {
    s.chars()
        .map(|c| match c {
            '{' => 1,
            '}' => -1,
            _ => 0,
        })
        .sum()
}

/// Splits the example block into (line number, command text) units.
fn units(block: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut depth = 0;
    for (i, line) in block.lines().enumerate() {
        let trimmed = line.trim();
        if depth == 0 && (trimmed.is_empty() || trimmed.starts_with("//")) {
            continue;
        }
        if depth == 0 {
            start = i + 1;
        }
        current.push_str(line);
        current.push('\n');
        depth += brace_balance(line);
        if depth <= 0 {
            out.push((start, std::mem::take(&mut current)));
            depth = 0;
        }
    }
    out
}

/// The script part of a command: the braces after `script` for an event command.
fn script_of(unit: &str) -> String {
    let t = unit.trim_start();
    if t.starts_with('!') {
        let at = t.find("script").expect("event example with a script");
        return t[at + "script".len()..].to_string();
    }
    t.to_string()
}

#[test]
fn spec_examples_parse() {
    let Some(block) = example_block() else { return };
    let (mut parsed, mut skipped) = (0, 0);
    for (line, unit) in units(&block) {
        let script = script_of(&unit);
        if script.contains("struct ") || script.contains("][") {
            println!(
                "skipped (v0.23 types, a later issue): line {line}: {}",
                unit.lines().next().unwrap_or("")
            );
            skipped += 1;
            continue;
        }
        if let Err(errs) = hvscript_grammar::parse_checked(&script) {
            panic!(
                "example at block line {line} does not parse:\n{}",
                errs[0].render("example", &script)
            );
        }
        parsed += 1;
    }
    println!("spec examples: {parsed} parsed, {skipped} skipped");
    assert!(parsed >= 20, "only {parsed} examples found");
}
