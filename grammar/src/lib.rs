//! The syntax of HyperDbg's script language, and nothing else.
//!
//! `text --lexer--> tokens --LALRPOP--> AST --call_shapes--> AST`, each step with located
//! errors ([`Diagnostic`]). Name resolution, types and semantics live in `script-lang`.
//!
//! ```
//! let script = hvscript_grammar::parse("if (@rax == 5) { printf(\"five\\n\"); }").unwrap();
//! assert_eq!(script.stmts.len(), 1);
//! ```

pub mod ast;
pub mod call_shapes;
mod construct;
pub mod diagnostic;
pub mod lexer;
pub mod portability;
pub mod print;
pub mod typedef_names;

lalrpop_util::lalrpop_mod!(
    #[allow(clippy::all, clippy::pedantic, unused_parens, dead_code)]
    script
);

pub use construct::SyntaxError;
pub use diagnostic::{Diagnostic, Severity};

use ast::Script;

/// Parses a script (statements, optionally in `{ }`, optionally as a `?` command).
/// Stops at the first syntax error.
pub fn parse(src: &str) -> Result<Script, Diagnostic> {
    let tokens = typedef_names::TypedefNames::new(lexer::Lexer::new(src))
        .map(|t| t.map_err(SyntaxError::from));
    script::ScriptParser::new()
        .parse(tokens)
        .map_err(|e| diagnostic::from_parse_error(e, src))
}

/// Parses a script and checks the shape of every built-in call (argument count, which
/// arguments may be strings, statement-only built-ins used as values). Returns every
/// shape error, not only the first.
pub fn parse_checked(src: &str) -> Result<Script, Vec<Diagnostic>> {
    let script = parse(src).map_err(|d| vec![d])?;
    let errors = call_shapes::check(&script);
    if errors.is_empty() {
        Ok(script)
    } else {
        Err(errors)
    }
}
