//! The events on a real program's code and data (issue 16), each on a C program built
//! here with `gcc -static`: `!epthook` by `int3` (trampolined instructions and emulated
//! calls, ten hooks at once, the argument in `@rdi`), `!monitor` on a global with both
//! stages and a short-circuit that drops a write, and `!exception` before the signal,
//! whose short-circuit skips the faulting instruction.

mod programs;

use hv_kvm::program::vm::Ending;
use programs::{build, run_with};

const WORK: &str = r#"#include <stdio.h>
#include <stdlib.h>
volatile long counter;
__attribute__((noinline)) long work(long x) { counter += x; return counter; }
long (*volatile indirect)(long) = work;
/* A function whose first instruction is a direct call, and one whose first is an
   indirect call through memory: a hook on them is an emulated call. */
__attribute__((naked, noinline)) long direct_call(long x) { asm("call work\n ret"); }
__attribute__((naked, noinline)) long memory_call(long x) { asm("call *indirect(%rip)\n ret"); }
#define F(n) __attribute__((noinline)) long f##n(long x) { return x + n; }
F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9)
int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 10, sum = 0;
    for (long i = 0; i < n; i++) work(i);
    for (long i = 0; i < n; i++)
        sum += f0(i) + f1(i) + f2(i) + f3(i) + f4(i) + f5(i) + f6(i) + f7(i) + f8(i) + f9(i);
    direct_call(1000);
    memory_call(2000);
    printf("counter=%ld sum=%ld\n", counter, sum);
    return 0;
}
"#;

/// Declares the tests' globals: HyperDbg creates a variable at its first assignment, and
/// this event's script is never run (the programs make no system call 1000).
const DECLARE: &str = "!syscall 0n1000 script { .sum = 0; .calls = 0; .n = 0; .bad = 0; .last = 0; .next = 0; .posts = 0; }";

fn expected(n: i64) -> String {
    let counter = n * (n - 1) / 2 + 3000;
    let sum = 10 * n * (n - 1) / 2 + 45 * n;
    format!("counter={counter} sum={sum}\n")
}

/// `!epthook work` counts exactly N for a loop of N calls, with the argument in `@rdi`;
/// ten hooks at once all fire; hooks on a direct and an indirect call resume the program
/// correctly (the call is emulated); the program's output is unchanged by the hooks.
#[test]
fn hooks_count_every_call_and_see_the_argument() {
    let Some(exe) = build("hooks", WORK) else {
        return;
    };
    let mut events = vec![
        // Declares the globals (HyperDbg creates a variable at its first assignment);
        // the program never makes system call 1000.
        DECLARE.to_string(),
        // @rdi is the loop index: the script sums it, and the total must be 0+1+..+36
        // plus the 1000 and 2000 of the two call sites.
        "!epthook work script { .sum = .sum + @rdi; }".to_string(),
        "!epthook2 work script { .calls = .calls + 1; }".to_string(),
        "!epthook direct_call".to_string(),
        "!epthook memory_call".to_string(),
        "!syscall 0n231 script { if (.sum != 0n3666 || .calls != 0n39) { @rdi = 9; } }".to_string(),
    ];
    for i in 0..10 {
        events.push(format!("!epthook hooks!f{i}"));
    }
    let refs: Vec<&str> = events.iter().map(|s| s.as_str()).collect();
    let (ending, out, err, notes, counters) = run_with(exe, &["37"], &refs);
    assert_eq!(out, expected(37), "{err} {notes:?}");
    // 37 calls in the loop, one from direct_call and one from memory_call.
    assert_eq!(counters[1].pre_runs, 39);
    assert_eq!(counters[2].pre_runs, 39);
    assert_eq!((counters[3].pre_runs, counters[4].pre_runs), (1, 1));
    for (i, c) in counters[6..].iter().enumerate() {
        assert_eq!(c.pre_runs, 37, "hook on f{i}");
    }
    assert_eq!(ending, Ending::Exited(0), "the scripts saw every @rdi");
}

/// `!monitor w counter counter+7 stage all` sees the old value in pre and the new one in
/// post, the value being written in `@dr0`; a short-circuit drops that write.
#[test]
fn monitor_sees_old_and_new_values_and_drops_a_skipped_write() {
    let Some(exe) = build("watch", WORK) else {
        return;
    };
    // Writes to counter: 0, 1, 3, 6, 10 for work(0..5), then 1010 and 3010. Every pre must
    // see memory = the previous value, every post memory = @dr0.
    let check = "!monitor w counter counter+7 stage all script { \
        if ($stage == 0) { if (dq($context) != .last) { .bad = .bad + 1; } .next = @dr0; } \
        else { if (dq($context) != .next) { .bad = .bad + 1; } .last = .next; .posts = .posts + 1; } }";
    let (ending, out, _, _, counters) = run_with(
        exe.clone(),
        &["5"],
        &[
            DECLARE,
            check,
            "!syscall 0n231 script { if (.bad != 0 || .posts != 7) { @rdi = 9; } }",
        ],
    );
    assert_eq!(out, expected(5));
    assert_eq!((counters[1].pre_runs, counters[1].post_runs), (7, 7));
    assert_eq!(
        ending,
        Ending::Exited(0),
        "pre saw old values, post new ones"
    );

    // Drop the write of 3 (work(2)): counter stays 1, so it ends 4 lower.
    let (ending, out, _, _, counters) = run_with(
        exe,
        &["5"],
        &["!monitor w watch!counter watch!counter+7 script { if (@dr0 == 3) { event_sc(1); } }"],
    );
    assert_eq!(ending, Ending::Exited(0));
    assert_eq!(out, "counter=3008 sum=325\n");
    assert_eq!(counters[0].short_circuits, 1);
}

/// `!monitor r` and `rw`: a read's pre stage sees (and may change, in `@dr0`) the value
/// the program will load; the program's mapping of fresh memory after the watch exists
/// (a large `malloc`, an `mmap`) leaves the watch in place.
#[test]
fn monitor_reads_supply_the_value_the_program_loads() {
    let Some(exe) = build(
        "reads",
        r#"#include <stdio.h>
#include <stdlib.h>
long *volatile cell;
volatile long value = 5;
int main(void) {
    cell = malloc(256 * 1024);   /* a new mapping: the watched frames are recomputed */
    cell[100] = value;
    printf("seen=%ld\n", cell[100]);
    return 0;
}
"#,
    ) else {
        return;
    };
    let (ending, out, _, _, counters) =
        run_with(exe.clone(), &[], &["!monitor rw cell cell+7 stage all"]);
    assert_eq!((ending, out.as_str()), (Ending::Exited(0), "seen=5\n"));
    // One write of the pointer, two loads of it.
    assert_eq!((counters[0].pre_runs, counters[0].post_runs), (3, 3));
    let (ending, out, _, _, counters) = run_with(
        exe,
        &[],
        &["!monitor r value value+7 script { if (@dr0 == 5) { @dr0 = 0n42; } }"],
    );
    assert_eq!((ending, out.as_str()), (Ending::Exited(0), "seen=42\n"));
    assert_eq!(counters[0].pre_runs, 1);
}

/// `!exception` runs before the signal: without a short-circuit the program ends with
/// it; `event_sc(1)` skips the faulting instruction (`ud2`) and the program goes on; the
/// program's own `int3` is a trap (already past) and is suppressed the same way.
#[test]
fn exceptions_run_before_the_signal_and_a_short_circuit_skips_the_fault() {
    let Some(exe) = build(
        "faults",
        r#"#include <stdio.h>
int main(void) {
    asm volatile("ud2");
    puts("after ud2");
    asm volatile("int3");
    puts("after int3");
    return 0;
}
"#,
    ) else {
        return;
    };
    let (ending, out, _, _, counters) = run_with(exe.clone(), &[], &["!exception 6 stage all"]);
    assert_eq!(
        (
            ending.status(),
            out.as_str(),
            counters[0].pre_runs,
            counters[0].post_runs
        ),
        (128 + 4, "", 1, 1),
        "{ending:?}"
    );
    let (ending, out, _, _, counters) = run_with(
        exe,
        &[],
        &["!exception script { if ($context == 6 || $context == 3) { event_sc(1); } }"],
    );
    assert_eq!(ending, Ending::Exited(0));
    assert_eq!(out, "after ud2\nafter int3\n");
    assert_eq!(counters[0].short_circuits, 2);
}

/// An event added while a CPU-bound program runs (no system call, so no exit of its own)
/// takes effect at once: the session kicks the vCPU out of KVM_RUN and returns only once
/// the hook is in place; the hook's script then stops the program's loop.
#[test]
fn an_event_added_while_a_program_computes_takes_effect_at_once() {
    let Some(exe) = build(
        "spin",
        r#"#include <stdio.h>
volatile long stop, sum;
__attribute__((noinline)) void work(long x) { sum += x; }
int main(void) {
    long i = 0;
    while (!stop && i < 3000000000L) work(i++);
    printf("stopped=%ld\n", stop);
    return 0;
}
"#,
    ) else {
        return;
    };
    let out = programs::Captured::default();
    let program = hv_kvm::program::vm::Program::load(
        &programs::spec(exe, &[]),
        Box::new(out.clone()),
        Box::new(std::io::sink()),
        std::sync::Arc::new(hv_core::NullSink),
    )
    .unwrap();
    let session = program.session().clone();
    let (run, added) = std::thread::scope(|s| {
        let adder = s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(300));
            let line = "!epthook work script { eq(spin!stop, 1); }";
            let started = std::time::Instant::now();
            let r = session.command(line, &programs::prepare(&session, line));
            (r, started.elapsed())
        });
        let run = program.run().unwrap();
        (run, adder.join().unwrap())
    });
    let (result, took) = added;
    assert_eq!(result.unwrap(), "event 0x1 added");
    assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    assert_eq!(run.ending, Ending::Exited(0));
    assert_eq!(
        String::from_utf8_lossy(&out.0.lock().unwrap()),
        "stopped=1\n"
    );
    assert!(run.engine.list()[0].counters.pre_runs >= 1);
}

/// One event's short-circuit suppresses every post stage of that system call: a
/// post-stage `!syscall` on `getpid` runs three times alone, never beside a `sc on` event
/// for the same call (whose `@rax` the program gets).
#[test]
fn one_short_circuit_suppresses_every_post_of_the_call() {
    let Some(exe) = build(
        "pids3",
        r#"#include <stdio.h>
#include <unistd.h>
int main(void) {
    long s = 0;
    for (int i = 0; i < 3; i++) s += getpid();
    printf("%ld\n", s);
    return 0;
}
"#,
    ) else {
        return;
    };
    let (ending, out, _, _, counters) = run_with(exe.clone(), &[], &["!syscall 0n39 stage all"]);
    assert_eq!((ending, out.as_str()), (Ending::Exited(0), "12726\n"));
    assert_eq!((counters[0].pre_runs, counters[0].post_runs), (3, 3));
    let (ending, out, _, _, counters) = run_with(
        exe,
        &[],
        &[
            "!syscall 0n39 stage all",
            "!syscall 0n39 sc on script { @rax = 5; }",
        ],
    );
    assert_eq!((ending, out.as_str()), (Ending::Exited(0), "15\n"));
    assert_eq!((counters[0].pre_runs, counters[0].post_runs), (3, 0));
    assert_eq!(counters[1].short_circuits, 3);
}
