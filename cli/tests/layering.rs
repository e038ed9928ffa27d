//! The hypervisor side never links the compiler (DESIGN.md, issue 15): `cargo tree -e
//! normal` of hv-kvm and of hv-core lists none of the compiler's crates, so the layering
//! cannot quietly come back through a dependency someone adds.

use std::process::Command;

/// Crate names (as `cargo tree` prints them) of the compiler side.
const COMPILER: &[&str] = &[
    "cranelift",
    "hvscript-grammar",
    "hvscript-lang",
    "hvscript-jit",
    "hvscript-front",
    "lalrpop",
    "logos",
];

fn normal_dependencies(package: &str) -> String {
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn assert_no_compiler(package: &str) {
    let tree = normal_dependencies(package);
    assert!(tree.contains("hvscript-runtime"), "{tree}");
    let linked: Vec<&str> = tree
        .lines()
        .filter(|l| COMPILER.iter().any(|c| l.starts_with(c)))
        .collect();
    assert!(
        linked.is_empty(),
        "{package} links the compiler side: {linked:?}\n{tree}"
    );
}

#[test]
fn hv_kvm_links_no_compiler_crate() {
    assert_no_compiler("hv-kvm");
}

#[test]
fn hv_core_links_no_compiler_crate() {
    assert_no_compiler("hv-core");
}

#[test]
fn the_front_end_does_link_the_compiler() {
    // The check sees what it looks for: the front end's tree has the compiler in it.
    let tree = normal_dependencies("hvscript-front");
    for c in ["cranelift", "hvscript-lang", "logos"] {
        assert!(
            tree.lines().any(|l| l.starts_with(c)),
            "{c} missing:\n{tree}"
        );
    }
}
