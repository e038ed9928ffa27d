//! Quick end-to-end checks of the JIT on a handful of scripts.
mod common;
use common::*;

#[test]
fn smoke() {
    let mut jit = hvscript_jit::Jit::new().unwrap();
    let o = assert_same(
        &mut jit,
        "@rax = @rbx + 5; printf(\"%d\\n\", @rax);",
        &Setup::default(),
    );
    assert_eq!(o.output, "5\n");
    let o = assert_same(&mut jit, "x = 1 / 0;", &Setup::default());
    assert!(o.result.is_err());
    let o = assert_same(
        &mut jit,
        ".g = 0; for (i = 0; i < 10; i++) { .g = .g + i; } print(.g);",
        &Setup::default(),
    );
    assert!(o.result.is_ok(), "{o:?}");
}
