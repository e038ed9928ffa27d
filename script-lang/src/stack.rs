//! What a program needs of a run's [`Limits`] before it runs: the local-stack slots and the
//! call depth of its deepest non-recursive call path. A program that cannot fit is refused
//! when it is compiled, with the call that overflows underlined, so `check` and every
//! runner agree: both ask this module with the limits the runner will use.
//!
//! Recursion cannot be bounded before running; a recursive call is counted once, and the
//! run-time checks (which remain) stop a recursion that goes too deep.

use hvscript_grammar::ast::Span;
use hvscript_grammar::Diagnostic;

use crate::interp::Limits;
use crate::ir::{FuncId, Inst, Program};

/// The worst path from one function down: slots and depth it needs, and its first call.
#[derive(Clone, Copy, Default)]
struct Need {
    slots: u64,
    depth: u32,
    /// The call that starts the worst path (the callee and the call's span).
    call: Option<(FuncId, Span)>,
}

/// Refuses `program` when a run with `limits` would always run out of local stack or call
/// depth on one of its call paths.
pub fn check(program: &Program, limits: &Limits) -> Result<(), Diagnostic> {
    let Some(main) = program.functions.first() else {
        return Ok(());
    };
    let mut memo: Vec<Option<Need>> = vec![None; program.functions.len()];
    let mut on_path = vec![false; program.functions.len()];
    let need = need_of(program, 0, &mut memo, &mut on_path);
    let slot_limit = limits.stack_slots as u64;
    if need.slots <= slot_limit && need.depth <= limits.max_call_depth {
        return Ok(());
    }
    // Walk the worst path to the call that crosses a limit.
    let (mut slots, mut depth, mut f, mut span) = (0u64, 0u32, 0 as FuncId, main.span);
    loop {
        let func = &program.functions[f as usize];
        slots += u64::from(func.locals);
        depth += 1;
        if slots > slot_limit || depth > limits.max_call_depth {
            break;
        }
        match memo[f as usize].and_then(|n| n.call) {
            Some((callee, call)) => {
                f = callee;
                span = call;
            }
            None => break,
        }
    }
    let what = if need.slots > slot_limit {
        format!(
            "local variables need {} stack slots of 8 bytes on this call path, more than the {} a run has",
            need.slots, slot_limit
        )
    } else {
        format!(
            "calls nest {} deep on this call path, more than the {} a run allows",
            need.depth, limits.max_call_depth
        )
    };
    Err(Diagnostic::error(what, span)
        .with_help("use smaller arrays and structs, or fewer nested calls"))
}

fn need_of(
    program: &Program,
    f: FuncId,
    memo: &mut Vec<Option<Need>>,
    on_path: &mut Vec<bool>,
) -> Need {
    if let Some(n) = memo[f as usize] {
        return n;
    }
    on_path[f as usize] = true;
    let func = &program.functions[f as usize];
    let mut worst = Need::default();
    for inst in func.blocks.iter().flat_map(|b| &b.insts) {
        if let Inst::CallUser {
            func: callee, span, ..
        } = inst
        {
            if on_path[*callee as usize] {
                continue;
            }
            let n = need_of(program, *callee, memo, on_path);
            if n.slots > worst.slots || (n.slots == worst.slots && n.depth > worst.depth) {
                worst = Need {
                    call: Some((*callee, *span)),
                    ..n
                };
            }
        }
    }
    on_path[f as usize] = false;
    let need = Need {
        slots: u64::from(func.locals) + worst.slots,
        depth: 1 + worst.depth,
        call: worst.call,
    };
    memo[f as usize] = Some(need);
    need
}

#[cfg(test)]
mod tests {
    use super::check;
    use crate::{
        compile_source, CompileOptions, Globals, HostEnv, Interpreter, Invocation, Limits,
        RunErrorKind, Stage,
    };

    fn limits(stack_slots: usize, max_call_depth: u32) -> Limits {
        Limits {
            stack_slots,
            max_call_depth,
            ..Limits::default()
        }
    }

    /// Whether the interpreter runs out of stack or depth with these limits.
    fn runs_out(src: &str, limits: Limits) -> bool {
        let globals = Globals::default();
        let program = compile_source(src, &globals, &CompileOptions::default()).unwrap();
        let mut env = HostEnv::new(Stage::Pre);
        let mut regs = Default::default();
        let pseudo = Default::default();
        let mut inv = Invocation {
            regs: &mut regs,
            pseudo: &pseudo,
            globals: &globals,
            host: &mut env,
            limits,
        };
        matches!(
            Interpreter::new()
                .run(&program, &mut inv)
                .map_err(|e| e.kind),
            Err(RunErrorKind::StackExhausted(_) | RunErrorKind::CallDepth(_))
        )
    }

    fn refused(src: &str, limits: Limits) -> Option<String> {
        let program = compile_source(src, &Globals::default(), &CompileOptions::default()).unwrap();
        check(&program, &limits)
            .err()
            .map(|d| format!("{}@{}", d.message, d.span.start))
    }

    #[test]
    fn refused_exactly_when_the_run_would_run_out() {
        let scripts = [
            "int t[100] = {0};",
            "void fn_one() { int u[60] = {0}; }\nint t[50] = {0};\nfn_one();",
            "void gx1() { }\nvoid gx2() { gx1(); }\nvoid gx3() { gx2(); }\ngx3();",
            "void hx1(int n) { long v[9] = {0}; }\nvoid hx2() { hx1(1); hx1(2); }\nint t[3] = {0};\nhx2();",
        ];
        for src in scripts {
            for slots in (0..300).step_by(7) {
                for depth in 0..6 {
                    let l = limits(slots, depth);
                    assert_eq!(
                        refused(src, l).is_some(),
                        runs_out(src, l),
                        "{src} with {slots} slots, depth {depth}: {:?}",
                        refused(src, l)
                    );
                }
            }
        }
    }

    #[test]
    fn the_overflowing_call_is_underlined() {
        let src = "void fn_one() { int u[600] = {0}; }\nint t[50] = {0};\nfn_one();";
        let e = refused(src, limits(200, 8)).unwrap();
        assert!(e.contains("stack slots"), "{e}");
        assert!(
            e.ends_with(&format!("@{}", src.find("fn_one();").unwrap())),
            "{e}"
        );
        let e = refused("void gx1() { }\ngx1();", limits(200, 1)).unwrap();
        assert!(e.contains("nest 2 deep"), "{e}");
    }

    #[test]
    fn unused_functions_and_recursion_are_left_to_the_run() {
        assert_eq!(
            refused("void fn_one() { int u[900] = {0}; }", limits(100, 8)),
            None
        );
        let src = "void rx1(int n) { if (n) { rx1(n - 1); } }\nrx1(1000);";
        assert_eq!(refused(src, limits(100, 8)), None);
    }
}
