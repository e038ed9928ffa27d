//! Real static programs, built here with gcc (glibc's real start-up, stdio, malloc), run as
//! guests natively at CPL3 with the system-call layer: their output, exit status, argv and
//! faults.

mod programs;

use std::path::PathBuf;
use std::process::Command;

use hv_kvm::program::vm::Ending;
use programs::{build, run, run_with};

#[test]
fn hello_world_prints_and_exits_with_its_status() {
    let Some(exe) = build(
        "hello",
        r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    char *buf = malloc(100);
    strcpy(buf, "heap");
    printf("hello from a guest: argc=%d argv[1]=%s %s pid=%d\n", argc, argv[1], buf, (int)getpid());
    fprintf(stderr, "to stderr\n");
    return 3;
}
"#,
    ) else {
        return;
    };
    let (ending, out, err, notes) = run(exe, &["one"]);
    assert_eq!(ending, Ending::Exited(3), "{out}{err}{notes:?}");
    assert_eq!(
        out,
        "hello from a guest: argc=2 argv[1]=one heap pid=4242\n"
    );
    assert_eq!(err, "to stderr\n");
    println!("notes: {notes:?}");
}

#[test]
fn a_fault_ends_the_program_with_linuxs_signal() {
    let Some(exe) = build(
        "segv",
        "int main(void) { volatile int *p = (int *)0x10; return *p; }\n",
    ) else {
        return;
    };
    let (ending, _, _, _) = run(exe, &[]);
    match ending {
        Ending::Signal { signal, what } => {
            assert_eq!(signal, 11, "{what}");
            assert!(what.contains("#PF") && what.contains("0x10"), "{what}");
        }
        other => panic!("{other:?}"),
    }
}

/// A Rust program linked statically (`-C target-feature=+crt-static`): Rust's start-up
/// polls the standard streams and reads its arguments; `process::exit` sets the status,
/// and `abort` (a signal to itself) ends it with SIGABRT's status.
#[test]
fn a_static_rust_program_runs_and_aborts_as_on_linux() {
    if let Err(why) = hv_kvm::kvm_available() {
        eprintln!("skipping: {why}");
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("program_run");
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("rusty.rs");
    std::fs::write(
        &src,
        r#"fn main() {
    let args: Vec<String> = std::env::args().collect();
    let v: Vec<u64> = (0..1000).collect();
    println!("rust {} {}", args.len(), v.iter().sum::<u64>());
    if args.len() > 2 { std::process::abort(); }
    std::process::exit(5);
}
"#,
    )
    .unwrap();
    let exe = dir.join("rusty");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let status = Command::new(rustc)
        .args(["-O", "-C", "target-feature=+crt-static", "-o"])
        .arg(&exe)
        .arg(&src)
        .status()
        .expect("rustc runs (cargo is running this test)");
    assert!(status.success());
    let (ending, out, _, _) = run(exe.clone(), &["x"]);
    assert_eq!(
        (ending, out.as_str()),
        (Ending::Exited(5), "rust 2 499500\n")
    );
    let (ending, _, _, _) = run(exe, &["x", "abort"]);
    assert!(
        matches!(ending, Ending::Signal { signal: 6, .. }),
        "{ending:?}"
    );
}

/// OS awareness on a program: `pid N` filters by the program's pid (what `getpid`
/// returns), `$pid`/`$pname`/`$proc`/`$thread` are real (the records are documented in
/// `hv-kvm/src/program/events.rs`).
#[test]
fn the_pid_filter_and_pseudo_registers_are_the_programs() {
    let Some(exe) = build(
        "pids",
        "#include <unistd.h>\nint main(void) { return getpid() == 4242 ? 0 : 1; }\n",
    ) else {
        return;
    };
    let (ending, _, _, _, counters) = run_with(
        exe,
        &[],
        &[
            "!syscall 0n39 pid 0n4242 stage post script { if ($pid != 0n4242 || dq($proc) != 0n4242 || dq($thread + 8) != $proc || dq($proc + 8) != $pname || db($pname) != 0x70) { @rax = 7; } }",
            "!syscall 0n39 pid 1",
        ],
    );
    assert_eq!(
        ending,
        Ending::Exited(0),
        "the post script left getpid's result alone"
    );
    assert_eq!(counters[0].post_runs, 1);
    assert_eq!(counters[1].pre_runs, 0, "another pid never matches");
}

/// A system-call site is rewritten to exit directly after its first call (the program
/// sees `out 0xf1, al` there if it reads its own code), never with patching off, and a
/// hook on a rewritten site relocates the original `syscall`.
#[test]
fn system_call_sites_are_rewritten_after_their_first_call() {
    let Some(exe) = build(
        "sites",
        r#"#include <stdio.h>
extern unsigned char site[];
__attribute__((noinline)) long call(long nr) {
    long r;
    asm volatile("mov %1, %%rax\n .globl site\n site: syscall" : "=a"(r) : "r"(nr) : "rcx", "r11", "memory");
    return r;
}
int main(void) {
    long pid = 0;
    for (int i = 0; i < 5; i++) pid += call(39);
    printf("%ld %02x %02x\n", pid / 5, site[0], site[1]);
    return 0;
}
"#,
    ) else {
        return;
    };
    let (ending, out, ..) = run_with(exe.clone(), &[], &[]);
    assert_eq!((ending, out.as_str()), (Ending::Exited(0), "4242 e6 f1\n"));
    let (ending, out, ..) = programs::run_patching(exe.clone(), &[], &[], false);
    assert_eq!((ending, out.as_str()), (Ending::Exited(0), "4242 0f 05\n"));
    let (ending, out, _, _, counters) =
        run_with(exe, &[], &["!epthook site", "!syscall 0n39 stage post"]);
    assert_eq!((ending, out.as_str()), (Ending::Exited(0), "4242 cc 05\n"));
    assert_eq!((counters[0].pre_runs, counters[1].post_runs), (5, 5));
}

/// What the program may not do fails inside it with Linux's errno, and nothing happens on
/// the host: no file is created, no socket or process exists.
#[test]
fn forbidden_operations_fail_inside_the_program() {
    let Some(exe) = build(
        "forbidden",
        r#"#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int fd = open(argv[1], O_WRONLY | O_CREAT, 0644);
    printf("open: %d %s\n", fd, fd < 0 ? strerror(errno) : "");
    int s = socket(AF_INET, SOCK_STREAM, 0);
    printf("socket: %d %s\n", s, s < 0 ? strerror(errno) : "");
    pid_t p = fork();
    printf("fork: %d %s\n", (int)p, p < 0 ? strerror(errno) : "");
    fd = open("/etc/passwd", O_RDONLY);
    printf("passwd: %d %s\n", fd, fd < 0 ? strerror(errno) : "");
    return 0;
}
"#,
    ) else {
        return;
    };
    let target = exe.with_file_name("must-not-exist");
    let _ = std::fs::remove_file(&target);
    let (ending, out, _, notes) = run(exe, &[target.to_str().unwrap()]);
    assert_eq!(ending, Ending::Exited(0));
    assert_eq!(
        out,
        "open: -1 Permission denied\nsocket: -1 Permission denied\nfork: -1 Function not implemented\npasswd: -1 Permission denied\n"
    );
    assert!(!target.exists(), "the program created a host file");
    assert!(
        notes.iter().any(|n| n.contains("sockets are refused"))
            && notes
                .iter()
                .any(|n| n.contains("process and thread creation")),
        "{notes:?}"
    );
}
