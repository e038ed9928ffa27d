//! [`SourceRange`]: where in the script's text something happened, as plain byte offsets.
//!
//! The runtime never sees the source (a hypervisor is sent only the code object), so an
//! error site is just `start..end` into the text the front end compiled; the front end
//! turns it back into a line and column (`hvscript_grammar::ast::Span` has the same shape).

/// Bytes `start..end` of the script's source text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SourceRange {
    pub start: u32,
    pub end: u32,
}

impl SourceRange {
    pub const fn new(start: u32, end: u32) -> SourceRange {
        SourceRange { start, end }
    }
}
