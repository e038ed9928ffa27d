//! Scripts on a program guest's memory and output (issue 17), each on a C program built here
//! with `gcc -static`: compiled code's translation cache holds the program's data pages but
//! never a page the VMM patched, so scripts read the original code under a hook and at a
//! rewritten system-call site, and their writes reach the program; the events' output,
//! formatted off the vCPU by the output thread, is all there when the program ends (by its
//! exit or a signal), in order with the program's own output to the same place.

mod programs;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

use hv_kvm::program::vm::{Ending, Program};
use programs::{build, run_with, Captured};

/// The byte the executable's file holds at virtual address `symbol`.
fn file_byte(exe: &Path, symbol: &str) -> u8 {
    let bytes = std::fs::read(exe).unwrap();
    let elf = hv_kvm::program::elf::parse(&bytes).unwrap();
    let addr = elf.symbols[symbol];
    let s = elf
        .segments
        .iter()
        .find(|s| (s.vaddr..s.vaddr + s.file_size).contains(&addr))
        .unwrap();
    bytes[(s.file_offset + addr - s.vaddr) as usize]
}

/// A hook's script reads and writes a global of the program (its page goes into the
/// script's translation cache, writable), then reads the hooked function's first byte
/// with `db`: the original byte, not the hook's `int3`. The program sees the writes.
#[test]
fn a_hooked_functions_bytes_read_as_the_original_after_data_pages_are_cached() {
    let Some(exe) = build(
        "hooked_bytes",
        r#"#include <stdio.h>
volatile long counter, calls, seen, twice;
__attribute__((noinline)) long work(long x) { counter += x; return counter; }
int main(void) {
    for (long i = 0; i < 3; i++) work(i);
    printf("seen=%lx calls=%ld twice=%ld counter=%ld\n", seen, calls, twice, counter);
    return 0;
}
"#,
    ) else {
        return;
    };
    let original = file_byte(&exe, "work");
    assert_ne!(original, 0xcc);
    let hook = "!epthook hooked_bytes!work script { \
        now = dq(hooked_bytes!calls); \
        eq(hooked_bytes!calls, now + 1); \
        eq(hooked_bytes!twice, dq(hooked_bytes!twice) + 2); \
        x = db(hooked_bytes!main); \
        eq(hooked_bytes!seen, db(hooked_bytes!work)); }";
    let (ending, out, err, notes, counters) = run_with(exe, &[], &[hook]);
    assert_eq!(ending, Ending::Exited(0), "{err} {notes:?}");
    assert_eq!(counters[0].script_errors, 0);
    assert_eq!(
        out,
        format!("seen={original:x} calls=3 twice=6 counter=3\n"),
        "{err}"
    );
}

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

/// One buffer for the events' output and the program's standard output, as a terminal
/// shows both.
#[derive(Clone, Default)]
struct Terminal(Arc<Mutex<Vec<u8>>>);

impl hv_core::OutputSink for Terminal {
    fn output(&self, _event_id: u64, _stage: hv_core::Stage, _core: u32, text: &[u8]) {
        self.0.lock().unwrap().extend_from_slice(text);
    }
}

impl Write for Terminal {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A hook that prints at every call of a function called 3003 times: every line is there
/// when the run returns, whether the program exits or dies of a signal, and the lines of
/// the calls before each of the program's writes come before what it writes.
#[test]
fn event_output_is_complete_and_in_order_with_the_programs_own() {
    let Some(exe) = build(
        "printing",
        r#"#include <unistd.h>
volatile long counter;
__attribute__((noinline)) long work(long x) { counter += x; return counter; }
int main(int argc, char **argv) {
    for (long i = 0; i < 3; i++) { work(i); write(1, "w\n", 2); }
    for (long i = 0; i < 3000; i++) work(i);
    if (argc > 1) { volatile int *p = 0; return *p; }
    return 0;
}
"#,
    ) else {
        return;
    };
    let mut expected = String::new();
    for i in 0..3 {
        expected += &format!("work({i})\nw\n");
    }
    for i in 0..3000 {
        expected += &format!("work({i})\n");
    }
    for (args, ending) in [
        (&[][..], Ending::Exited(0)),
        (
            &["crash"][..],
            Ending::Signal {
                signal: 11,
                what: String::new(),
            },
        ),
    ] {
        let terminal = Terminal::default();
        let program = Program::load(
            &programs::spec(exe.clone(), args),
            Box::new(terminal.clone()),
            Box::new(Captured::default()),
            Arc::new(terminal.clone()),
        )
        .unwrap();
        let session = program.session().clone();
        let line = "!epthook printing!work script { printf(\"work(%d)\\n\", @rdi); }";
        session
            .command(line, &programs::prepare(&session, line))
            .unwrap();
        let run = program.run().unwrap();
        match (&run.ending, &ending) {
            (Ending::Signal { signal, .. }, Ending::Signal { signal: s, .. }) => {
                assert_eq!(signal, s)
            }
            (got, want) => assert_eq!(got, want),
        }
        assert_eq!(run.engine.output_dropped(), 0);
        let text = String::from_utf8(terminal.0.lock().unwrap().clone()).unwrap();
        assert!(
            text == expected,
            "{args:?}: {} bytes, {:?}...",
            text.len(),
            &text[..200.min(text.len())]
        );
    }
}

/// A `write` system call's own events: what its pre stage prints comes before the bytes
/// the program writes, what its post stage prints after them, on one terminal.
#[test]
fn a_writes_pre_stage_output_comes_before_its_bytes() {
    let Some(exe) = build(
        "writing",
        r#"#include <unistd.h>
int main(void) {
    for (int i = 0; i < 3; i++) write(1, "w\n", 2);
    return 0;
}
"#,
    ) else {
        return;
    };
    let terminal = Terminal::default();
    let program = Program::load(
        &programs::spec(exe, &[]),
        Box::new(terminal.clone()),
        Box::new(Captured::default()),
        Arc::new(terminal.clone()),
    )
    .unwrap();
    let session = program.session().clone();
    let line = "!syscall 1 stage all script { if ($stage == 0) { printf(\"pre %d\\n\", @rdx); } else { printf(\"post %d\\n\", @rax); } }";
    session
        .command(line, &programs::prepare(&session, line))
        .unwrap();
    let run = program.run().unwrap();
    assert_eq!(run.ending, Ending::Exited(0));
    let text = String::from_utf8(terminal.0.lock().unwrap().clone()).unwrap();
    assert_eq!(text, "pre 2\nw\npost 2\n".repeat(3));
}
