//! `hvscript run -l [GLOB]`: the event kinds, as bpftrace's `-l` lists probes: each kind's
//! arguments, whether it has calling stages, and whether hv-kvm raises it from real exits
//! on the demo guest and on a program guest (with the reason when it does not). The rules
//! are the platforms' own (`KvmPlatform`, `ProgramPlatform`), so the list cannot disagree
//! with what `run` accepts.

use hv_core::{EventKind, Platform};

use crate::out::outln;

/// The options every event command takes.
const OPTIONS: &str =
    "pid N, core N, stage pre|post|all, sc on|off, imm yes|no, buffer SIZE, output {NAME}, script { ... }";

/// Whether `name` matches `glob` (`*` any run of characters, `?` one; case-insensitive).
fn matches(glob: &str, name: &str) -> bool {
    fn go(g: &[u8], n: &[u8]) -> bool {
        match (g.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&g[1..], n) || (!n.is_empty() && go(g, &n[1..])),
            (Some(b'?'), Some(_)) => go(&g[1..], &n[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&g[1..], &n[1..]),
            _ => false,
        }
    }
    let glob = glob.trim_start_matches('!');
    go(glob.as_bytes(), name.as_bytes())
}

/// Prints the kinds `glob` matches; `false` when it matches none.
pub fn list(glob: &str) -> bool {
    let demo = hv_kvm::KvmPlatform;
    let program = hv_kvm::program::events::ProgramPlatform;
    let mut any = false;
    for &kind in EventKind::ALL {
        if !matches(glob, kind.command()) {
            continue;
        }
        any = true;
        let usage = format!("!{} {}", kind.command(), kind.syntax());
        outln!("{}", usage.trim_end());
        let stages = if kind.has_stages() {
            "pre, post, all (default pre); sc skips the emulation"
        } else {
            "none (no emulation to stage; stage and sc are refused)"
        };
        outln!("    stages:  {stages}");
        for (guest, platform) in [("demo", &demo as &dyn Platform), ("program", &program)] {
            match platform.refusal(kind) {
                None => outln!("    {guest:<8} raised from real exits"),
                Some(why) => outln!("    {guest:<8} refused: {why}"),
            }
        }
    }
    if any {
        outln!();
        outln!("options of every event command: {OPTIONS}");
    }
    any
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn globs_match_kind_names() {
        assert!(matches("*", "monitor"));
        assert!(matches("!mon*", "monitor"));
        assert!(matches("sys*", "sysret"));
        assert!(matches("ept?ook", "epthook"));
        assert!(!matches("ept?ook", "epthook2"));
        assert!(matches("MSR*", "msrread"));
        assert!(!matches("io", "ioin"));
    }
}
