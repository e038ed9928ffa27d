//! The back ends a script can run on, named once for every front end.

use core::fmt;
use core::str::FromStr;

/// Which engine runs a compiled script: the one back-end choice every front end makes
/// (`eval --jit`, `conformance --backend`, `run --interp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The host interpreter (`hvscript-lang`), the reference semantics.
    Interp,
    /// Cranelift-compiled native code (`hvscript-jit`), run by `hvscript_runtime::Runner`.
    Jit,
    /// The same code object sent to a hypervisor (hv-kvm), loaded by it and run on a real
    /// exit: `conformance --backend vm`.
    Vm,
}

impl Backend {
    /// The back ends that run in this process, in the order a full run uses them.
    pub const ALL: &'static [Backend] = &[Backend::Interp, Backend::Jit];
    /// Every back end a command line may name.
    pub const NAMED: &'static [Backend] = &[Backend::Interp, Backend::Jit, Backend::Vm];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Interp => "interp",
            Backend::Jit => "jit",
            Backend::Vm => "vm",
        }
    }

    /// Whether the script becomes a code object (the JIT's, run here or by a hypervisor).
    pub fn compiles(self) -> bool {
        matches!(self, Backend::Jit | Backend::Vm)
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Backend, String> {
        Backend::NAMED
            .iter()
            .copied()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Backend::NAMED.iter().map(|b| b.name()).collect();
                format!("unknown back end `{s}` (known: {})", names.join(", "))
            })
    }
}
