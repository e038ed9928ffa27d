//! End-to-end runs on the interpreter: source text in, output, registers and errors out.

use hvscript_abi::{GuestRegs, PseudoReg, PseudoValues};
use hvscript_lang::*;

struct Outcome {
    output: String,
    regs: GuestRegs,
    result: Result<RunStats, RunError>,
    env: HostEnv,
}

fn run_with(src: &str, regs: GuestRegs, globals: &Globals, stage: Stage) -> Outcome {
    let program = compile_source(src, globals, &CompileOptions::default()).unwrap_or_else(|errs| {
        panic!(
            "{}",
            errs.iter().map(|d| d.render("t", src)).collect::<String>()
        )
    });
    let mut env = HostEnv::new(stage);
    let mut regs = regs;
    let mut pseudo = PseudoValues::default();
    pseudo.set(PseudoReg::EventStage, (stage == Stage::Post) as u64);
    let result = Interpreter::new().run(
        &program,
        &mut Invocation {
            regs: &mut regs,
            pseudo: &pseudo,
            globals,
            host: &mut env,
            limits: Limits::default(),
        },
    );
    Outcome {
        output: env.output_text(),
        regs,
        result,
        env,
    }
}

fn run(src: &str) -> Outcome {
    run_with(src, GuestRegs::default(), &Globals::default(), Stage::Pre)
}

fn compile_err(src: &str) -> String {
    match compile_source(src, &Globals::default(), &CompileOptions::default()) {
        Ok(_) => panic!("expected a compile error for {src:?}"),
        Err(errs) => errs[0].message.clone(),
    }
}

#[test]
fn docs_variables_and_assignments() {
    let o = run("t1 = 1; t1 += 5; printf(\"t1 is: %x\\n\", t1); t1 <<= 5; printf(\"t1 is: %d\\n\", t1); t1 = t2 = 85; printf(\"t1 equals to: 0x%x\\n\", t1);");
    o.result.unwrap();
    assert_eq!(o.output, "t1 is: 6\nt1 is: 192\nt1 equals to: 0x85\n");
}

#[test]
fn docs_loops() {
    let o = run("for (i = 10; i != 0; i--) { printf(\"%d\\n\", i); }");
    o.result.unwrap();
    let expected: String = (1..=16).rev().map(|i| format!("{i}\n")).collect();
    assert_eq!(o.output, expected);
    let o = run("x = 55; n = 0; while (x) { x = x - 1; n++; } print(n);");
    assert_eq!(o.output, "55\n");
}

#[test]
fn docs_recursive_function() {
    let o = run("? { int my_func(int var1) { if (var1 == 0) { return 0; } if (var1 == 1) { return 1; } return my_func(var1 - 1) + my_func(var1 - 2); } var = my_func(9); printf(\"%d\", var); }");
    o.result.unwrap();
    assert_eq!(o.output, "34");
}

#[test]
fn sub_registers_and_precedence() {
    let regs = GuestRegs {
        rbx: 0xffff_ffff_0000_0000,
        rdx: 0x10,
        ..Default::default()
    };
    let o = run_with(
        "@ebx = @rdx | 0xfffff550 + @edx;",
        regs,
        &Globals::default(),
        Stage::Pre,
    );
    o.result.unwrap();
    assert_eq!(
        o.regs.rbx,
        0xffff_ffff_0000_0000 | (0x10 | (0xfffff550 + 0x10))
    );
}

#[test]
fn signed_comparisons_division_and_shifts() {
    let o = run("if (-1 > 0) { print(1); } else { print(0); } x = -7 / 2; print(x); y = -8 >> 1; print(y); z = 1 << 3f; print(z);");
    o.result.unwrap();
    assert_eq!(
        o.output,
        "0\nfffffffffffffffd\nfffffffffffffffc\n8000000000000000\n"
    );
}

#[test]
fn runtime_errors_are_located() {
    let src = "x = 0; y = 5 / x;";
    let e = run(src).result.unwrap_err();
    assert_eq!(e.kind, RunErrorKind::DivisionByZero);
    assert_eq!(&src[e.span.range()], "5 / x");
    let e = run("s = 0n64; x = 1 << s;").result.unwrap_err();
    assert_eq!(
        e.kind,
        RunErrorKind::ShiftCount {
            count: 64,
            bits: 64
        }
    );
    let e = run("x = poi(0x1000);").result.unwrap_err();
    assert!(e.message().contains("0x1000"), "{}", e.message());
    let e = run("while (1) { }").result.unwrap_err();
    assert!(matches!(e.kind, RunErrorKind::FuelExhausted(_)));
    let e = run("int rec(int n) { return rec(n + 1); } x = rec(1);")
        .result
        .unwrap_err();
    assert!(matches!(e.kind, RunErrorKind::CallDepth(_)));
}

#[test]
fn compile_errors() {
    assert_eq!(
        compile_err("x = y + 1;"),
        "`y` is read before it is assigned"
    );
    assert_eq!(
        compile_err("tmp = tmp + 1;"),
        "`tmp` is read before it is assigned"
    );
    assert_eq!(compile_err("break;"), "`break` outside a loop");
    assert_eq!(compile_err("x = nope(1);"), "unknown function `nope`");
    assert!(compile_err("printf(\"%d %d\", 1);").contains("2 specifiers but 1 argument"));
    assert!(compile_err("if (1) { int g() { return 1; } }").contains("top level"));
    assert!(compile_err("void v() { } x = v();").contains("void"));
    let e = compile_source(
        "event_sc(1);",
        &Globals::default(),
        &CompileOptions {
            stage: StageUse::PostOnly,
            ..Default::default()
        },
    );
    assert!(e.unwrap_err()[0].message.contains("post stage"));
}

#[test]
fn locals_and_globals_have_addresses() {
    let globals = Globals::default();
    let o = run_with(
        "? { .g = 5; x = interlocked_increment(&.g); v1 = 0x1122; memcpy(&v2, &v1, 8); printf(\"%x %x %x %x\\n\", x, .g, v2, poi(&v1)); }",
        GuestRegs::default(),
        &globals,
        Stage::Pre,
    );
    o.result.unwrap();
    assert_eq!(o.output, "6 6 1122 1122\n");
    // globals persist across runs
    let o = run_with("print(.g);", GuestRegs::default(), &globals, Stage::Pre);
    assert_eq!(o.output, "6\n");
}

#[test]
fn short_circuit_and_stage() {
    let o = run("if ($stage == 0) { event_sc(1); }");
    o.result.unwrap();
    assert!(o.env.short_circuit);
    let o = run_with(
        "if ($event_stage == 1) { event_sc(1); }",
        GuestRegs::default(),
        &Globals::default(),
        Stage::Post,
    );
    o.result.unwrap();
    assert!(!o.env.short_circuit);
    assert_eq!(o.env.refused_short_circuits, 1);
}

#[test]
fn continue_works_in_every_loop() {
    let o = run("i = 0; n = 0; while (i < 0n10) { i++; if (i & 1) { continue; } n++; } print(n); j = 0; do { j++; if (j < 5) { continue; } } while (j < 8); print(j);");
    o.result.unwrap();
    assert_eq!(o.output, "5\n8\n");
}

#[test]
fn logical_operators_short_circuit() {
    let o = run("x = 0; if (x != 0 && 10 / x) { print(1); } if (x == 0 || 10 / x) { print(2); }");
    o.result.unwrap();
    assert_eq!(o.output, "2\n");
}
