//! Scripts on a program guest's memory (issue 17), each on a C program built here with
//! `gcc -static`: scripts read the original code where the VMM patched it (a rewritten
//! system-call site).

mod programs;

use hv_kvm::program::vm::Ending;
use programs::{build, run_with};

/// A script at a system call reads the `SYSCALL` instruction (0f 05) at its site, both at
/// the first call (the VMM rewrites the site to `out 0xf1, al` on the way in) and at the
/// second (through the rewritten site).
#[test]
fn a_rewritten_system_call_site_reads_as_syscall() {
    let Some(exe) = build(
        "site_bytes",
        r#"#include <stdio.h>
#include <unistd.h>
volatile long seen, first;
int main(void) {
    getpid();
    first = seen;
    getpid();
    printf("%lx %lx\n", first, seen);
    return 0;
}
"#,
    ) else {
        return;
    };
    let script = "!syscall 0n39 script { eq(site_bytes!seen, dw(@rcx - 2)); }";
    let (ending, out, err, notes, _) = run_with(exe, &[], &[script]);
    assert_eq!(ending, Ending::Exited(0), "{err} {notes:?}");
    assert_eq!(out, "50f 50f\n");
}
