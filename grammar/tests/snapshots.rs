//! Snapshots of the AST of representative scripts and of the diagnostics of broken ones.
//! `cargo insta review` after an intended change.

use hvscript_grammar::{parse_checked, print};

fn ast(src: &str) -> String {
    match parse_checked(src) {
        Ok(s) => print::script(&s),
        Err(errs) => panic!("{}", errs[0].render("snapshot", src)),
    }
}

fn diagnostics(src: &str) -> String {
    match parse_checked(src) {
        Ok(_) => panic!("expected an error for {src:?}"),
        Err(errs) => errs
            .iter()
            .map(|d| d.render("broken.ds", src))
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

#[test]
fn ast_event_script_with_branches() {
    insta::assert_snapshot!(ast(r#"{
    if ($context == 0xc0000080 && $stage == 1) {
        printf("EFER read: %llx (core %x)\n", @rax, $core);
        @rax = @rax & ~0x800;
    } elsif (@ecx == 0n23 || poi(@rsp) != 0) {
        event_sc(1);
    } else {
        .misses = .misses + 1;
    }
}"#));
}

#[test]
fn ast_loops_and_control_flow() {
    insta::assert_snapshot!(ast(r#"
x = 55;
while (x) { x = x - 1; if (x == 10) { continue; } }
for (i = 10; i != 0; i--) { printf("%d\n", i); }
do { y += 2; if (y > 0n100) { break; } } while (1);
"#));
}

#[test]
fn ast_user_functions_and_recursion() {
    insta::assert_snapshot!(ast(r#"? {
    int my_func(int var1) {
        if (var1 == 0) { return 0; }
        if (var1 == 1) { return 1; }
        return my_func(var1 - 1) + my_func(var1 - 2);
    }
    void log_it(int v) { printf("%d\n", v); return; }
    var = my_func(9);
    log_it(var);
}"#));
}

#[test]
fn ast_registers_memory_and_numbers() {
    insta::assert_snapshot!(ast(r#"
@ebx = @rdx | 0xfffff550 + @edx;
@rsp = fffff800`5b660000;
IsEditApplied = eb(poi(@rcx) + 8, 0x90);
*(@rsp + 8) = dead + 0n10 + 0y101 + 0o17 + 10;
r = interlocked_compare_exchange(&.lock, 1, 0);
s = strcmp("hyperdbg", $pname) + wcslen(L"wide") + memcmp(@r15, "Hello", 5);
@zf = !@zf; @ah = -~@al;
"#));
}

#[test]
fn diagnostic_comparison_outside_a_condition() {
    insta::assert_snapshot!(diagnostics("x = (@rax > 5);"));
}

#[test]
fn diagnostic_else_if() {
    insta::assert_snapshot!(diagnostics(
        "if (@rax) {\n  x = 1;\n} else if (@rbx) {\n  x = 2;\n}"
    ));
}

#[test]
fn diagnostic_missing_semicolon() {
    insta::assert_snapshot!(diagnostics("x = 1\ny = 2;"));
}

#[test]
fn diagnostic_unknown_register_and_pseudo_register() {
    insta::assert_snapshot!(diagnostics("x = @rxx;"));
    insta::assert_snapshot!(diagnostics("x = $stagee;"));
}

#[test]
fn diagnostic_bad_escape_and_unterminated_string() {
    insta::assert_snapshot!(diagnostics(r#"printf("a\qb");"#));
    insta::assert_snapshot!(diagnostics("printf(\"abc);\n"));
}

#[test]
fn diagnostic_call_shapes() {
    insta::assert_snapshot!(diagnostics(
        "x = printf(\"%d\", 1);\npoi(1, 2);\ny = eq(@rax, \"s\");"
    ));
}

#[test]
fn diagnostic_call_argument_in_a_condition() {
    insta::assert_snapshot!(diagnostics("if (poi(@rax & 0xfff) == 0) { pause(); }"));
}

#[test]
fn diagnostic_text_after_the_script() {
    insta::assert_snapshot!(diagnostics("{ x = 1; } y = 2;"));
}

#[test]
fn diagnostic_unterminated_comment_and_unknown_character() {
    insta::assert_snapshot!(diagnostics("x = 1; /* never closed"));
    insta::assert_snapshot!(diagnostics("x = 1 # 2;"));
}

#[test]
fn diagnostic_assignment_to_a_pseudo_register() {
    insta::assert_snapshot!(diagnostics("$context = 1;"));
}

#[test]
fn ast_structs_arrays_and_typedefs() {
    insta::assert_snapshot!(ast(r#"
struct Node;
struct Node { unsigned long long value; struct Node *next, *prev; char name[10]; };
typedef struct Node *PNODE;
typedef unsigned short word;
word w1 = 5;
PNODE head = (PNODE) @rcx;
struct Node local = {1, 0, 0, {0x41, 0x42,}};
int grid[2][3] = {{1, 2, 3}, {4}};
head->next->value = grid[1][0] + local.name[1];
printf("%d\n", sizeof(struct Node) + sizeof(word) + sizeof head->name);
"#));
}
