//! The platform's register, pseudo-register and built-in rules applied to a script's text, so that
//! what a hypervisor would refuse (a register write it cannot apply, a pseudo-register
//! with no value there; the rules are the [`Platform`]'s, e.g. `hv_kvm::KvmPlatform`) is
//! refused before compiling, with the offending name pointed at in the command line. The
//! hypervisor vets the code object's usage sets against the same rules when it loads it.

use hv_core::{EventKind, Platform};
use hvscript_grammar::ast::Span;
use hvscript_grammar::lexer::{tokenize, Tok};
use hvscript_grammar::Diagnostic;

/// Whether the token after a register makes it the target of an assignment.
fn assigns(next: Option<&Tok<'_>>) -> bool {
    matches!(
        next,
        Some(
            Tok::Assign
                | Tok::AddAssign
                | Tok::SubAssign
                | Tok::MulAssign
                | Tok::DivAssign
                | Tok::ModAssign
                | Tok::ShlAssign
                | Tok::ShrAssign
                | Tok::AndAssign
                | Tok::XorAssign
                | Tok::OrAssign
                | Tok::Inc
                | Tok::Dec
        )
    )
}

/// Every refusal in `script` (a script that already compiled), with spans in the script.
pub fn check(platform: &dyn Platform, kind: EventKind, script: &str) -> Vec<Diagnostic> {
    let Ok(tokens) = tokenize(script) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, (start, tok, end)) in tokens.iter().enumerate() {
        let why = match tok {
            Tok::Register(reg) => {
                let prev = i.checked_sub(1).map(|p| &tokens[p].1);
                let write = assigns(tokens.get(i + 1).map(|t| &t.1))
                    || matches!(prev, Some(Tok::Inc | Tok::Dec));
                platform.register_refusal(kind, *reg, write)
            }
            Tok::Pseudo(p) => platform.pseudo_refusal(*p),
            Tok::Builtin(b) => platform.builtin_refusal(*b),
            _ => None,
        };
        if let Some(message) = why {
            out.push(Diagnostic::error(message, Span::new(*start, *end)));
        }
    }
    out
}
