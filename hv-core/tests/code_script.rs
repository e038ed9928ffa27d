//! [`CodeScript`]: a JIT code object, shipped as bytes and loaded by the runtime, runs as an
//! event's script through the engine without the compiler on the hypervisor side (the
//! compiler here only makes the bytes), and the object's usage sets answer the engine's
//! questions about it.

mod common;

use std::sync::Arc;

use common::*;
use hv_core::*;
use hvscript_abi::{GuestRegs, PseudoReg};
use hvscript_lang::{compile_source, CompileOptions, Globals};
use hvscript_runtime::{Limits, LoadedCode};

/// What the front end would send: the script compiled to code-object bytes.
fn object_bytes(src: &str, globals: &Globals) -> Vec<u8> {
    let program = compile_source(src, globals, &CompileOptions::default()).unwrap();
    let mut jit = hvscript_jit::Jit::new().unwrap();
    jit.compile(&program).unwrap().to_bytes()
}

/// The hypervisor side: bytes in, a `Script` out.
fn code_script(bytes: &[u8], globals: &Globals) -> Arc<CodeScript<hvscript_runtime::ArenaMemory>> {
    let code = LoadedCode::from_bytes(bytes).unwrap();
    Arc::new(CodeScript::new(
        code,
        globals.values().clone(),
        Limits::default(),
    ))
}

#[test]
fn a_loaded_code_object_runs_in_both_stages() {
    let rig = Rig::new();
    let bytes = object_bytes(
        "printf(\"stage %d rax=%x\\n\", $stage, @rax); if ($stage == 0) { .n = 0x10; } else { .n = .n + 1; } @rbx = @rbx + 1;",
        &rig.globals,
    );
    let script = code_script(&bytes, &rig.globals);
    assert!(!script.uses_short_circuit());
    assert!(script.reads_pseudo(PseudoReg::EventStage));
    assert!(!script.reads_pseudo(PseudoReg::Date));
    rig.engine
        .add(
            parse_event_command("!cpuid stage all").unwrap(),
            Some(script),
        )
        .unwrap();
    let mut regs = GuestRegs {
        rax: 1,
        ..Default::default()
    };
    let o = rig.engine.handle_exit(
        &Exit::new(EventKind::Cpuid, 0, 1),
        &mut regs,
        &mut NoGuestMemory,
        |r, _| r.rax = 0x1234,
    );
    assert_eq!((o.pre_executions, o.post_executions), (1, 1));
    assert_eq!(rig.sink.text(), "stage 0 rax=1\nstage 1 rax=1234\n");
    assert_eq!(regs.rbx, 2);
    assert_eq!(rig.globals.get(rig.globals.lookup("n").unwrap()), 0x11);
}

#[test]
fn event_sc_short_circuits_and_is_refused_in_post() {
    let rig = Rig::new();
    let bytes = object_bytes("event_sc(1);", &rig.globals);
    let script = code_script(&bytes, &rig.globals);
    assert!(script.uses_short_circuit());
    let post = rig.engine.add(
        parse_event_command("!cpuid stage post").unwrap(),
        Some(script.clone()),
    );
    assert_eq!(post, Err(EngineError::ShortCircuitInPost));
    rig.engine
        .add(parse_event_command("!cpuid").unwrap(), Some(script))
        .unwrap();
    let mut emulated = false;
    let o = rig.engine.handle_exit(
        &Exit::new(EventKind::Cpuid, 0, 1),
        &mut GuestRegs::default(),
        &mut NoGuestMemory,
        |_, _| emulated = true,
    );
    assert!(o.short_circuited && !emulated);
}

#[test]
fn run_time_errors_name_the_failing_bytes() {
    let globals = Globals::default();
    let src = "x = 0; y = 5 / x;";
    let script = code_script(&object_bytes(src, &globals), &globals);
    let mut env = hvscript_lang::HostEnv::default();
    let failure = script
        .execute(&mut GuestRegs::default(), &Default::default(), &mut env)
        .unwrap_err();
    let at = src.find("5 / x").unwrap();
    assert_eq!(
        failure,
        ScriptFailure::Error(format!(
            "division by zero (script bytes {}..{})",
            at,
            at + 5
        ))
    );
}
