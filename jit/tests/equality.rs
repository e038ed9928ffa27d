//! Equality with the interpreter: every script of a broad set — the interpreter's own
//! end-to-end scripts, the examples, hand-written error cases and the conformance suite's
//! cases — gives identical output, registers, globals, short-circuit flag, test values and
//! errors (kind and span) on both back ends.

mod common;

use std::path::Path;

use common::*;
use hvscript_abi::{GuestRegs, PseudoReg, PseudoValues};
use hvscript_jit::{Jit, OptLevel};
use hvscript_lang::{Globals, HostEnv, Limits, Stage, StageUse};

const SCRIPTS: &[&str] = &[
    // From script-lang/tests/run.rs.
    "t1 = 1; t1 += 5; printf(\"t1 is: %x\\n\", t1); t1 <<= 5; printf(\"t1 is: %d\\n\", t1); t1 = t2 = 85; printf(\"t1 equals to: 0x%x\\n\", t1);",
    "for (i = 10; i != 0; i--) { printf(\"%d\\n\", i); }",
    "x = 55; n = 0; while (x) { x = x - 1; n++; } print(n);",
    "? { int my_func(int var1) { if (var1 == 0) { return 0; } if (var1 == 1) { return 1; } return my_func(var1 - 1) + my_func(var1 - 2); } var = my_func(9); printf(\"%d\", var); }",
    "@ebx = @rdx | 0xfffff550 + @edx;",
    "if (-1 > 0) { print(1); } else { print(0); } x = -7 / 2; print(x); y = -8 >> 1; print(y); z = 1 << 3f; print(z);",
    "x = 0; y = 5 / x;",
    "s = 0n64; x = 1 << s;",
    "x = poi(0x1000);",
    "while (1) { }",
    "int rec(int n) { return rec(n + 1); } x = rec(1);",
    "? { .g = 5; x = interlocked_increment(&.g); v1 = 0x1122; memcpy(&v2, &v1, 8); printf(\"%x %x %x %x\\n\", x, .g, v2, poi(&v1)); }",
    "if ($stage == 0) { event_sc(1); }",
    "i = 0; n = 0; while (i < 0n10) { i++; if (i & 1) { continue; } n++; } print(n); j = 0; do { j++; if (j < 5) { continue; } } while (j < 8); print(j);",
    "x = 0; if (x != 0 && 10 / x) { print(1); } if (x == 0 || 10 / x) { print(2); }",
    // Arithmetic corners and errors.
    "x = 0x8000000000000000; y = -1; z = x / y;",
    "x = 0x8000000000000000; y = -1; z = x % y;",
    "x = 7; y = 0; z = x % y;",
    "x = -1; y = 1 << x;",
    "x = 0n63; y = 1 << x; z = y >> x; printf(\"%llx %llx\\n\", y, z);",
    "x = 0n64; y = 5 >> x;",
    "x = -0n17; printf(\"%d %d %d %d\\n\", x / 5, x % 5, x / -5, x % -5);",
    "va = 0xffffffffffffffff; vb = va * va + va - ~va ^ 0x1234 | 0x10 & 0xff; print(vb);",
    "if (-1 < 1) { print(1); } if (1 <= 1) { print(2); } if (2 > -2) { print(3); } if (-3 >= -3 && 4 == 4 && !(5 != 5)) { print(4); } if (0x8000000000000000 < 0) { print(5); }",
    "if (!0 && !(1 - 1)) { print(1); } x = !5; print(x);",
    // Registers: every width, merges.
    "@rax = 0x1122334455667788; @eax = 0xaabbccdd; @ah = 0x1ff; @al = 0x2; @ax = @ax + 1; print(@rax);",
    "@r8 = -1; @r8d = 0; @r8w = 0x1234; @r8h = 0x56; @r8l = 0x78; printf(\"%llx\\n\", @r8);",
    "@rflags = 0; @zf = 1; @iopl = 3; @cf = 2; @if = 0xff; printf(\"%llx %x %x\\n\", @rflags, @iopl, @zf);",
    "@cs = 0xffffffff; @ds = @cs + 1; @rip = 0x401000; @eip = 0xdeadbeef; printf(\"%llx %llx %llx\\n\", @cs, @ds, @rip);",
    "@cr3 = 0x1000; @dr7 = @cr3 << 4; @gdtr = @dr7; @tr = @gdtr ^ @cr3; print(@tr);",
    "@spl = 0x80; @sil = @spl; @dil = @sil + 1; @bpl = @dil; printf(\"%llx %llx %llx\\n\", @rsp, @rsi, @rbp);",
    // Pseudo-registers.
    "printf(\"%x %x %x\\n\", $core, $context, $event_id);",
    // Loops, nesting, break/continue.
    "n = 0; for (i = 0; i < 5; i++) { for (j = 0; j < 5; j++) { if (j == 3) { break; } if (i == j) { continue; } n = n + i * j; } } print(n);",
    "x = 0; do { x++; } while (x < 0n100); print(x);",
    // User functions with locals and recursion.
    "int sq(int x) { y = x * x; return y; } int sum(int n) { s = 0; for (i = 1; i <= n; i++) { s = s + sq(i); } return s; } print(sum(0n10));",
    "void hello(int va, int vb) { printf(\"%d-%d\\n\", va, vb); } hello(1, 2); hello(3, 4);",
    "int tri(int va) { if (va > 0) { return va + tri(va - 1); } return 0; } print(tri(0n50));",
    // Local and global memory through built-ins.
    "va = 0x41424344; vb = 0; memcpy(&vb, &va, 4); eq(&va, 5); eb(&vb, 0x61); printf(\"%x %x %x\\n\", va, vb, db(&va));",
    ".c = 0; for (i = 0; i < 0n20; i++) { interlocked_increment(&.c); } x = interlocked_exchange_add(&.c, 5); y = interlocked_compare_exchange(&.c, 0, 0n25); printf(\"%d %d %d\\n\", .c, x, y);",
    "v = 0; x = interlocked_exchange(&v, 7); printf(\"%d %d\\n\", x, v);",
    // Strings.
    "printf(\"hi|%x\\n\", strlen(\"hello\"));",
    "x = wcslen(L\"wide\"); y = strcmp(\"a\", \"b\"); z = wcscmp(L\"x\", L\"x\"); printf(\"%d %d %d\\n\", x, y, z);",
    "x = strncmp(\"abcd\", \"abce\", 3); y = memcmp(\"ab\", \"ac\", 2); printf(\"%d %d\\n\", x, y);",
    // Events and output.
    "event_sc(1); event_sc(0); event_sc(1); test_statement(0x55); test_statement(@rax);",
    "event_enable(1); pause(); x = rdtsc(); if (x != 0) { print(1); }",
    "formats(0x41);",
    // Built-in errors.
    "eq(0x2000, 1); x = dq(0x2000);",
    "printf(\"%d\\n\", poi(0));",
    "x = db(0xdead);",
];

fn jit() -> Jit {
    Jit::new().expect("host ISA")
}

#[test]
fn scripts_agree() {
    let mut jit = jit();
    for src in SCRIPTS {
        assert_same(&mut jit, src, &Setup::default());
    }
    // Again with registers and memory set, in the post stage too.
    let mut setup = Setup::default();
    let slots = setup.regs.slots_mut();
    for (i, s) in slots.iter_mut().enumerate() {
        *s = 0x0102_0304_0506_0708u64.wrapping_mul(i as u64 + 1);
    }
    setup.env.memory.load(0x2000, &[0x11; 64]);
    setup.pseudo.set(PseudoReg::Core, 3);
    setup.pseudo.set(PseudoReg::Context, 0xc000_0080);
    for src in SCRIPTS {
        assert_same(&mut jit, src, &setup);
    }
    let post = setup.clone().stage(Stage::Post);
    for src in SCRIPTS.iter().filter(|s| !s.contains("event_sc")) {
        assert_same(&mut jit, src, &post);
    }
}

#[test]
fn every_opt_level_agrees() {
    for opt in [OptLevel::Fast, OptLevel::None, OptLevel::Speed] {
        let mut jit = Jit::with_opt_level(opt).unwrap();
        for src in SCRIPTS {
            assert_same(&mut jit, src, &Setup::default());
        }
    }
}

#[test]
fn limits_agree() {
    let mut jit = jit();
    for (fuel, depth, slots) in [
        (0, 256, 16384),
        (5, 256, 16384),
        (100, 3, 16384),
        (1000, 256, 4),
        (1000, 0, 16),
        (1000, 256, 0),
    ] {
        let setup = Setup {
            limits: Limits {
                fuel,
                max_call_depth: depth,
                stack_slots: slots,
            },
            ..Setup::default()
        };
        for src in SCRIPTS {
            assert_same(&mut jit, src, &setup);
        }
    }
}

#[test]
fn globals_persist_across_runs() {
    let mut jit = jit();
    let setup = Setup {
        runs: 5,
        ..Setup::default()
    };
    let o = assert_same(
        &mut jit,
        "x = interlocked_increment(&.n); .m = x + 0x10; va = 3; vb = 0; memcpy(&vb, &va, 8); printf(\"%x %x\\n\", .m, vb);",
        &setup,
    );
    assert!(o.output.ends_with("15 3\n"), "{}", o.output);
}

#[test]
fn errors_carry_the_same_span() {
    let mut jit = jit();
    for src in [
        "x = 0; y = 5 / x;",
        "x = 0n64; y = 1 >> x;",
        "x = poi(0x1000);",
        "while (1) { }",
    ] {
        let o = assert_same(&mut jit, src, &Setup::default());
        assert!(o.result.is_err(), "{src}");
    }
}

#[test]
fn examples_agree() {
    let mut jit = jit();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ds") {
            let src = std::fs::read_to_string(&path).unwrap();
            let mut setup = Setup::default();
            setup.regs.rax = 0xd01;
            setup.regs.rip = 0x401000;
            setup.runs = 3;
            assert_same(&mut jit, &src, &setup);
            assert_same(&mut jit, &src, &setup.clone().stage(Stage::Post));
            n += 1;
        }
    }
    assert!(n >= 3, "found {n} examples");
}

/// What one back end produced on one conformance case.
#[derive(Debug, PartialEq)]
struct CaseRun {
    /// Per execution: observation, or the compile errors' messages.
    steps: Vec<Result<Observed, Vec<String>>>,
}

fn run_case(jit: &mut Jit, backend: Backend, src: &str) -> Result<CaseRun, String> {
    let h = hvscript_conformance::cases::parse_header(src)?;
    let plan: Vec<(Stage, StageUse)> = match h.stage.as_deref() {
        None | Some("pre") => vec![(Stage::Pre, StageUse::Any)],
        Some("post") => vec![(Stage::Post, StageUse::PostOnly)],
        Some("all") => vec![(Stage::Pre, StageUse::Any), (Stage::Post, StageUse::Any)],
        Some(other) => return Err(format!("stage `{other}`")),
    };
    let globals = Globals::default();
    let mut steps = Vec::new();
    'outer: for _ in 0..h.runs.max(1) {
        for &(stage, stage_use) in &plan {
            let (mut regs, mut pseudo, mut env): (GuestRegs, PseudoValues, HostEnv) =
                if h.hyperdbg_harness {
                    hvscript_conformance::harness::hyperdbg_harness()
                } else {
                    (
                        GuestRegs::default(),
                        PseudoValues::default(),
                        HostEnv::new(stage),
                    )
                };
            env.stage = stage;
            for &(r, v) in &h.regs {
                regs.write(r, v);
            }
            for (a, b) in &h.mem {
                env.memory.load(*a, b);
            }
            for &(p, v) in &h.pseudo {
                pseudo.set(p, v);
            }
            pseudo.set(PseudoReg::EventStage, u64::from(stage == Stage::Post));
            let mut options = hvscript_lang::CompileOptions {
                stage: stage_use,
                ..Default::default()
            };
            for (n, v) in &h.symbols {
                options.symbols.insert(n.clone(), *v);
            }
            let program = match hvscript_lang::compile_source(src, &globals, &options) {
                Ok(p) => p,
                Err(e) => {
                    steps.push(Err(e.iter().map(|d| d.message.clone()).collect()));
                    break 'outer;
                }
            };
            let setup = Setup {
                regs,
                pseudo,
                env,
                limits: Limits::default(),
                options,
                runs: 1,
            };
            let o = run_program(backend, jit, &program, &globals, &setup);
            let stop = o.result.is_err();
            steps.push(Ok(o));
            if stop {
                break 'outer;
            }
        }
    }
    Ok(CaseRun { steps })
}

#[test]
fn conformance_cases_agree() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conformance-tests/cases");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        println!("skipped: {} is absent", dir.display());
        return;
    };
    let mut paths: Vec<_> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "ds"))
        .collect();
    paths.sort();
    let mut jit = jit();
    let (mut same, mut bad_header) = (0, 0);
    let mut differ = Vec::new();
    for path in &paths {
        let src = std::fs::read_to_string(path).unwrap();
        match (
            run_case(&mut jit, Backend::Interp, &src),
            run_case(&mut jit, Backend::Jit, &src),
        ) {
            (Ok(a), Ok(b)) if a == b => same += 1,
            (Ok(a), Ok(b)) => {
                differ.push(format!("{}:\n interp {a:?}\n jit    {b:?}", path.display()))
            }
            _ => bad_header += 1,
        }
    }
    println!(
        "conformance cases: {} total, {same} identical on both back ends, {} differ, {bad_header} with unreadable headers",
        paths.len(),
        differ.len()
    );
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
