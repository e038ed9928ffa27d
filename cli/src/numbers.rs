//! HyperDbg numbers and `NAME=VALUE` pairs on the command line (`--reg`, `--mem`,
//! `--sym`), shared by the commands that take them.

use std::collections::BTreeMap;

pub fn split<'a>(arg: &'a str, flag: &str) -> Result<(&'a str, &'a str), String> {
    arg.split_once('=')
        .ok_or_else(|| format!("{flag} {arg}: expected NAME=VALUE"))
}

/// A HyperDbg number: hex by default, with 0x/0n/0y/0o prefixes, backticks allowed.
pub fn number(text: &str) -> Result<u64, String> {
    hvscript_abi::number::parse_signed_number(text.trim())
        .ok_or_else(|| format!("`{text}` is not a number"))
}

/// `--sym [MODULE!]NAME=ADDR` arguments as a symbol table. Scripts name symbols
/// `module!name` (a bare word there is a variable, as in HyperDbg); event arguments take
/// both forms (`!epthook work+4`).
pub fn symbols(args: &[String]) -> Result<BTreeMap<String, u64>, String> {
    let mut table = BTreeMap::new();
    for s in args {
        let (name, value) = split(s, "--sym")?;
        let ok = !name.is_empty()
            && name.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'_' | b'!' | b'.' | b'$' | b'@')
            })
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !ok {
            return Err(format!("--sym {s}: `{name}` is not a symbol name"));
        }
        table.insert(
            name.to_string(),
            number(value).map_err(|e| format!("--sym {s}: {e}"))?,
        );
    }
    Ok(table)
}
