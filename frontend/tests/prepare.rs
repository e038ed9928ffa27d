//! The front end on its own, against a small platform: what it hands a hypervisor for each
//! kind of command, where its errors point, and how it binds globals to a hypervisor's
//! table.

use hv_core::{EventKind, Platform};
use hvscript_abi::{PseudoReg, Register};
use hvscript_front::{prepare, Backend, Target};
use hvscript_runtime::{CodeObject, Limits};

/// Raises everything but `!vmcall`; refuses writes to `@cs` and reads of `$pid`.
struct Test;

impl Platform for Test {
    fn name(&self) -> &str {
        "test-hv"
    }
    fn refusal(&self, kind: EventKind) -> Option<&str> {
        (kind == EventKind::Vmcall).then_some("no VMCALL exits here")
    }
    fn register_refusal(&self, _: EventKind, reg: Register, write: bool) -> Option<String> {
        (write && reg.name() == "cs").then(|| "no @cs writes here".to_string())
    }
    fn pseudo_refusal(&self, reg: PseudoReg) -> Option<String> {
        (reg == PseudoReg::Pid).then(|| "no $pid here".to_string())
    }
    fn event_limits(&self) -> Limits {
        Limits {
            fuel: 1000,
            max_call_depth: 8,
            stack_slots: 64,
        }
    }
}

fn target(globals: Vec<(String, u32)>) -> Target<'static> {
    Target {
        platform: &Test,
        symbols: Default::default(),
        globals,
        values: None,
    }
}

/// The source text an error points at.
fn pointed<'a>(line: &'a str, e: &hvscript_front::FrontError) -> &'a str {
    let s = e.diagnostics[0].span;
    &line[s.start as usize..s.end as usize]
}

#[test]
fn commands_without_a_script_need_nothing_compiled() {
    for line in ["events", "events d 1", "!ioin 510", "output"] {
        let p = prepare(line, &target(vec![]), Backend::Jit).unwrap();
        assert!(!p.has_script() && p.globals.is_empty(), "{line}: {p:?}");
    }
}

#[test]
fn a_script_becomes_a_valid_code_object_with_its_usage() {
    let line = "!ioout 511 script { @rax = @rbx; event_sc(1); }";
    let p = prepare(line, &target(vec![]), Backend::Jit).unwrap();
    let object = CodeObject::from_bytes(p.code.as_deref().unwrap()).unwrap();
    assert!(object.usage().writes(Register::Rax) && object.usage().reads(Register::Rbx));
    assert!(object.calls_event_sc());
    assert!(p.script.is_none());
}

#[test]
fn errors_point_into_the_line() {
    let t = target(vec![]);
    let cases = [
        ("!vmcall", "!vmcall", "cannot be raised by test-hv"),
        ("!ioin 510 script { x = ; }", ";", ""),
        ("!ioin 510 script { @cs = 8; }", "@cs", "no @cs writes"),
        ("!ioin 510 script { x = $pid; }", "$pid", "no $pid"),
        ("!ioin 510 stage pst", "pst", "unknown stage"),
    ];
    for (line, at, says) in cases {
        let e = prepare(line, &t, Backend::Jit).unwrap_err();
        assert_eq!(pointed(line, &e), at, "{line}: {e}");
        assert!(e.message().contains(says), "{line}: {e}");
    }
}

#[test]
fn new_globals_take_slots_the_hypervisor_has_not_given() {
    // The hypervisor's table has a gap at slot 1.
    let vm_names = vec![("a".to_string(), 0), ("c".to_string(), 2)];
    let p = prepare("? .b = .a + .c;", &target(vm_names), Backend::Jit).unwrap();
    assert_eq!(
        p.globals,
        [
            ("a".to_string(), 0),
            ("b".to_string(), 1),
            ("c".to_string(), 2)
        ]
    );
}

#[test]
fn the_interpreter_needs_the_hypervisors_values_in_process() {
    let e = prepare("? 1;", &target(vec![]), Backend::Interp).unwrap_err();
    assert!(
        e.message().contains("in the hypervisor's process only"),
        "{e}"
    );
    let mut t = target(vec![]);
    t.values = Some(Default::default());
    let p = prepare("? x = 1;", &t, Backend::Interp).unwrap();
    assert!(p.script.is_some() && p.code.is_none());
}
