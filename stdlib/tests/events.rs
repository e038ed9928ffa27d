//! Tests of event control, debugger actions, timing, LBR and `test_statement`: what reaches
//! the environment, argument checks, and warnings (not errors, not silent zeros) where a
//! context lacks the capability.

mod common;

use common::{callv, BareEnv, TestEnv, MEM};
use hvscript_abi::Builtin;
use hvscript_stdlib::{EventOp, LbrOp, ScriptError, TraceKind};

#[test]
fn test_statement_reaches_the_env() {
    let mut env = BareEnv::new();
    assert_eq!(callv(&mut env, Builtin::TestStatement, &[0x55]), Ok(0));
    assert_eq!(callv(&mut env, Builtin::TestStatement, &[u64::MAX]), Ok(0));
    assert_eq!(env.tests, [0x55, u64::MAX]);
}

#[test]
fn event_control_by_id() {
    let mut env = TestEnv::new(MEM);
    callv(&mut env, Builtin::EventEnable, &[1]).unwrap();
    callv(&mut env, Builtin::EventDisable, &[2]).unwrap();
    callv(&mut env, Builtin::EventClear, &[1]).unwrap();
    assert_eq!(
        env.events,
        [
            (EventOp::Enable, 1),
            (EventOp::Disable, 2),
            (EventOp::Clear, 1)
        ]
    );
    assert!(env.warnings.is_empty());
    // An unknown id is reported and the script goes on.
    assert_eq!(callv(&mut env, Builtin::EventDisable, &[0x99]), Ok(0));
    assert_eq!(
        env.warnings,
        ["event_disable: there is no event with id 0x99"]
    );
}

#[test]
fn event_sc_sets_and_refusals_warn() {
    let mut env = TestEnv::new(MEM);
    callv(&mut env, Builtin::EventSc, &[1]).unwrap();
    callv(&mut env, Builtin::EventSc, &[0]).unwrap();
    callv(&mut env, Builtin::EventSc, &[0x100]).unwrap();
    assert_eq!(env.sc, [true, false, true]);
    env.sc_refusal = Some("short-circuiting is refused in the post stage");
    assert_eq!(callv(&mut env, Builtin::EventSc, &[1]), Ok(0));
    assert_eq!(
        env.warnings,
        ["event_sc: unavailable: short-circuiting is refused in the post stage"]
    );
}

#[test]
fn event_inject_checks_its_operands() {
    let mut env = TestEnv::new(MEM);
    callv(&mut env, Builtin::EventInject, &[3, 14]).unwrap();
    callv(
        &mut env,
        Builtin::EventInjectErrorCode,
        &[3, 14, 0xffff_ffff],
    )
    .unwrap();
    callv(&mut env, Builtin::EventInject, &[7, 255]).unwrap();
    assert_eq!(
        env.injected,
        [(3, 14, None), (3, 14, Some(0xffff_ffff)), (7, 255, None)]
    );

    let bad: [(Builtin, &[u64], u64); 4] = [
        (Builtin::EventInject, &[8, 14], 8),
        (Builtin::EventInject, &[3, 256], 256),
        (Builtin::EventInjectErrorCode, &[u64::MAX, 14, 0], u64::MAX),
        (
            Builtin::EventInjectErrorCode,
            &[3, 14, 0x1_0000_0000],
            0x1_0000_0000,
        ),
    ];
    for (b, args, value) in bad {
        match callv(&mut env, b, args) {
            Err(ScriptError::InvalidArgument {
                builtin, value: v, ..
            }) => {
                assert_eq!((builtin, v), (b, value));
            }
            other => panic!("{args:?}: {other:?}"),
        }
    }
    assert_eq!(env.injected.len(), 3);
    let e = callv(&mut env, Builtin::EventInject, &[9, 1]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "event_inject: invalid argument 0x9: the interruption type must be below 8"
    );
}

#[test]
fn debugger_actions_reach_the_env() {
    let mut env = TestEnv::new(MEM);
    for b in [
        Builtin::Pause,
        Builtin::Flush,
        Builtin::EventTraceStep,
        Builtin::EventTraceStepIn,
        Builtin::EventTraceStepOut,
        Builtin::EventTraceInstrumentationStep,
        Builtin::EventTraceInstrumentationStepIn,
    ] {
        assert_eq!(callv(&mut env, b, &[]), Ok(0), "{}", b.name());
    }
    assert_eq!((env.pauses, env.flushes), (1, 1));
    use TraceKind::*;
    assert_eq!(
        env.traces,
        [
            StepIn,
            StepIn,
            StepOut,
            InstrumentationStepIn,
            InstrumentationStepIn
        ]
    );
    assert!(env.warnings.is_empty());
}

#[test]
fn timing() {
    let mut env = TestEnv::new(MEM);
    assert_eq!(callv(&mut env, Builtin::Rdtsc, &[]), Ok(1010));
    assert_eq!(callv(&mut env, Builtin::Rdtscp, &[]), Ok(1030));
    assert_eq!(callv(&mut env, Builtin::Microsleep, &[250]), Ok(0));
    assert_eq!(env.sleeps, [250]);
}

#[test]
fn lbr_operations() {
    let mut env = TestEnv::new(MEM);
    assert_eq!(callv(&mut env, Builtin::LbrSave, &[]), Ok(1));
    assert_eq!(callv(&mut env, Builtin::LbrPrint, &[]), Ok(1));
    assert_eq!(callv(&mut env, Builtin::LbrDump, &[]), Ok(1));
    assert_eq!(callv(&mut env, Builtin::LbrRestore, &[]), Ok(1));
    assert_eq!(callv(&mut env, Builtin::LbrCheck, &[]), Ok(1));
    assert_eq!(callv(&mut env, Builtin::LbrRestoreByFilter, &[0x3]), Ok(1));
    assert_eq!(callv(&mut env, Builtin::LbrRestoreByFilter, &[0]), Ok(0));
    use LbrOp::*;
    assert_eq!(
        env.lbr_ops,
        [
            Save,
            Print,
            Print,
            Restore,
            Check,
            RestoreByFilter(3),
            RestoreByFilter(0)
        ]
    );
}

#[test]
fn a_bare_context_warns_for_every_statement_and_continues() {
    let mut env = BareEnv::new();
    let statements: [(Builtin, &[u64]); 14] = [
        (Builtin::EventEnable, &[1]),
        (Builtin::EventDisable, &[1]),
        (Builtin::EventClear, &[1]),
        (Builtin::EventSc, &[1]),
        (Builtin::EventInject, &[3, 3]),
        (Builtin::EventInjectErrorCode, &[3, 3, 0]),
        (Builtin::Pause, &[]),
        (Builtin::Flush, &[]),
        (Builtin::EventTraceStep, &[]),
        (Builtin::EventTraceStepIn, &[]),
        (Builtin::EventTraceStepOut, &[]),
        (Builtin::EventTraceInstrumentationStep, &[]),
        (Builtin::EventTraceInstrumentationStepIn, &[]),
        (Builtin::Microsleep, &[10]),
    ];
    for (b, args) in statements {
        env.out.clear();
        assert_eq!(callv(&mut env, b, args), Ok(0), "{}", b.name());
        let out = env.out_str();
        assert!(
            out.starts_with(&format!("warning: {}: unavailable: ", b.name())),
            "{out}"
        );
        assert!(out.ends_with('\n'), "{out}");
    }
}

#[test]
fn a_bare_context_never_makes_up_values() {
    let mut env = BareEnv::new();
    for b in [Builtin::Rdtsc, Builtin::Rdtscp] {
        assert!(matches!(
            callv(&mut env, b, &[]),
            Err(ScriptError::Unavailable { builtin, .. }) if builtin == b
        ));
    }
    // LBR calls report failure (0) and say why, except lbr_check, whose 0 is the answer.
    env.out.clear();
    assert_eq!(callv(&mut env, Builtin::LbrCheck, &[]), Ok(0));
    assert!(env.out.is_empty());
    for (b, args) in [
        (Builtin::LbrSave, vec![]),
        (Builtin::LbrPrint, vec![]),
        (Builtin::LbrDump, vec![]),
        (Builtin::LbrRestore, vec![]),
        (Builtin::LbrRestoreByFilter, vec![1]),
    ] {
        env.out.clear();
        assert_eq!(callv(&mut env, b, &args), Ok(0));
        assert!(
            env.out_str()
                .contains(&format!("{}: unavailable", b.name())),
            "{}",
            env.out_str()
        );
    }
}
