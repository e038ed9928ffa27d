//! Whatever the script, compiling and running it ends in a result or a located error:
//! never a panic, never a hang. Scripts are built from a grammar of HyperDbg fragments
//! (operators with extreme operands, shifts and divisions by anything, loops, calls,
//! memory built-ins on wild addresses, deep recursion) so most of them compile.

use hvscript_abi::{GuestRegs, PseudoValues};
use hvscript_lang::*;
use proptest::prelude::*;

fn operand() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("@rax".to_string()),
        Just("@eax".to_string()),
        Just("@ah".to_string()),
        Just("@r8w".to_string()),
        Just("@zf".to_string()),
        Just("$stage".to_string()),
        Just("$context".to_string()),
        Just("v1".to_string()),
        Just(".g1".to_string()),
        Just("0x8000000000000000".to_string()),
        Just("ffffffffffffffff".to_string()),
        Just("0n64".to_string()),
        Just("0".to_string()),
        Just("-1".to_string()),
        any::<u64>().prop_map(|n| format!("0x{n:x}")),
        (0u8..70).prop_map(|n| format!("0n{n}")),
    ]
}

fn expr() -> impl Strategy<Value = String> {
    let leaf = operand();
    leaf.prop_recursive(4, 24, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(vec!["+", "-", "*", "/", "%", "<<", ">>", "&", "|", "^"]),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a} {op} {b})")),
            (
                prop::sample::select(vec!["-", "~", "!", "+"]),
                inner.clone()
            )
                .prop_map(|(op, a)| format!("{op}({a})")),
            inner.clone().prop_map(|a| format!("poi({a})")),
            inner.clone().prop_map(|a| format!("db({a})")),
            inner.clone().prop_map(|a| format!("neg({a})")),
            inner.clone().prop_map(|a| format!("strlen({a})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("eq({a}, {b})")),
            inner.clone().prop_map(|a| format!("rec({a})")),
        ]
    })
}

fn cond() -> impl Strategy<Value = String> {
    (
        expr(),
        prop::sample::select(vec!["==", "!=", "<", ">", "<=", ">="]),
        expr(),
    )
        .prop_map(|(a, op, b)| format!("({a}) {op} ({b})"))
}

fn stmt() -> impl Strategy<Value = String> {
    let simple = prop_oneof![
        expr().prop_map(|e| format!("v1 = {e};")),
        expr().prop_map(|e| format!(".g1 = {e};")),
        expr().prop_map(|e| format!("@rax = {e};")),
        expr().prop_map(|e| format!("@ah = {e};")),
        expr().prop_map(|e| format!("v1 += {e};")),
        expr().prop_map(|e| format!("v1 >>= {e};")),
        expr().prop_map(|e| format!("printf(\"%llx %d %s\\n\", {e}, v1, {e});")),
        expr().prop_map(|e| format!("event_sc({e});")),
        expr().prop_map(|e| format!("interlocked_increment({e});")),
        (expr(), expr()).prop_map(|(a, b)| format!("memcpy({a}, {b}, 8);")),
        Just("v1++;".to_string()),
        Just("x = interlocked_increment(&.g1);".to_string()),
    ];
    simple.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            (cond(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("if ({c}) {{ {a} }} else {{ {b} }}")),
            (cond(), inner.clone())
                .prop_map(|(c, a)| format!("while ({c}) {{ {a} if (v1 == 3) {{ break; }} }}")),
            (inner.clone(), cond())
                .prop_map(|(a, c)| format!("do {{ {a} continue; }} while ({c});")),
            (cond(), inner.clone()).prop_map(|(c, a)| format!("for (i = 0; {c}; i++) {{ {a} }}")),
        ]
    })
}

fn script() -> impl Strategy<Value = String> {
    prop::collection::vec(stmt(), 1..6).prop_map(|stmts| {
        format!(
            "int rec(int n) {{ if (n > 0n300) {{ return rec(n - 1); }} return n + 1; }} v1 = 0; .g1 = 0; {}",
            stmts.join(" ")
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn compile_and_run_never_panic(src in script()) {
        let globals = Globals::default();
        match compile_source(&src, &globals, &CompileOptions::default()) {
            Err(errs) => prop_assert!(errs.iter().all(|d| (d.span.end as usize) <= src.len())),
            Ok(program) => {
                let mut env = HostEnv::default();
                env.memory.map(0x1000, 0x1000);
                let mut regs = GuestRegs { rax: 0x1000, ..Default::default() };
                let limits = Limits { fuel: 5_000, max_call_depth: 64, stack_slots: 1024 };
                let r = Interpreter::new().run(&program, &mut Invocation { regs: &mut regs, pseudo: &PseudoValues::default(), globals: &globals, host: &mut env, limits });
                if let Err(e) = r {
                    prop_assert!((e.span.end as usize) <= src.len(), "error span outside the script: {:?}", e);
                    prop_assert!(!e.message().is_empty());
                }
            }
        }
    }
}
