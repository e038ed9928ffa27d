//! Run-time errors located in the source: the runtime's [`RunErrorKind`] (why a script
//! stopped, in the words every back end reports) with a grammar [`Span`], so a front end can
//! render it as a diagnostic. The runtime's own error ([`hvscript_runtime::RunError`], byte
//! offsets) converts into this one. At the bottom of the crate: it imports none of the
//! back ends.

use hvscript_grammar::ast::Span;
use hvscript_grammar::Diagnostic;
pub use hvscript_runtime::RunErrorKind;

/// A run-time error: what and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunError {
    pub kind: RunErrorKind,
    pub span: Span,
}

impl RunError {
    pub fn message(&self) -> String {
        self.kind.message()
    }

    pub fn to_diagnostic(&self) -> Diagnostic {
        let d = Diagnostic::error(self.message(), self.span).with_label("the script stopped here");
        match self.kind {
            RunErrorKind::FuelExhausted(_) => {
                d.with_help("raise the budget with --fuel N if the loop is meant to be long")
            }
            _ => d,
        }
    }
}

impl From<hvscript_runtime::RunError> for RunError {
    fn from(e: hvscript_runtime::RunError) -> RunError {
        RunError {
            kind: e.kind,
            span: Span {
                start: e.range.start,
                end: e.range.end,
            },
        }
    }
}
