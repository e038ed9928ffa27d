//! [`Platform`]: what a hypervisor can and cannot do with an event command, as data the
//! hypervisor side owns without the compiler — which event kinds it raises, which register
//! writes it can apply, which pseudo-registers have a value, and the bounds of one event
//! execution. A front end checks a script against it before compiling (so the user gets a
//! located error), and the hypervisor checks a code object's
//! [`Usage`](hvscript_runtime::Usage) against the same rules when it loads it (so a client
//! that skips the front end's checks still cannot make it silently drop a write).
//!
//! [`Prepared`] is what a front end hands a hypervisor with a command line: the compiled
//! script (code-object bytes, or an in-process [`Script`]) and the global-variable
//! bindings it was compiled against.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;

use hvscript_abi::{PseudoReg, Register};
use hvscript_runtime::{Limits, Usage};

use crate::command::CommandError;
use crate::event::{EventKind, EventSpec, Filter};
use crate::script::Script;

/// A hypervisor's rules for event commands (see the module documentation).
pub trait Platform: Send + Sync {
    /// The hypervisor's name, for messages (`hv-kvm`).
    fn name(&self) -> &str;

    /// Why this hypervisor cannot raise `kind`, or `None` when it does.
    fn refusal(&self, kind: EventKind) -> Option<&str>;

    /// Why a script of a `kind` event cannot read (`write == false`) or write `reg`.
    fn register_refusal(&self, kind: EventKind, reg: Register, write: bool) -> Option<String>;

    /// Why a script cannot read `reg`.
    fn pseudo_refusal(&self, reg: PseudoReg) -> Option<String>;

    /// Why the `pid` option cannot filter here, with a help line.
    fn pid_refusal(&self) -> Option<(String, String)> {
        None
    }

    /// Why a script cannot call built-in `b` here (a built-in with nothing behind it on
    /// this hypervisor), or `None`.
    fn builtin_refusal(&self, _b: hvscript_abi::Builtin) -> Option<String> {
        None
    }

    /// Why this hypervisor cannot honour the event's own filter (a `!monitor` range it
    /// cannot watch, say), or `None`.
    fn filter_refusal(&self, _kind: EventKind, _filter: &Filter) -> Option<String> {
        None
    }

    /// The bounds of one event execution.
    fn event_limits(&self) -> Limits;

    /// The bounds of one `? SCRIPT` evaluation.
    fn eval_limits(&self) -> Limits {
        self.event_limits()
    }

    /// The event commands this hypervisor raises, for messages (`!ioin, !ioout, ...`).
    fn raised_kinds(&self) -> String {
        let names: Vec<String> = EventKind::ALL
            .iter()
            .filter(|k| self.refusal(**k).is_none())
            .map(|k| format!("!{}", k.command()))
            .collect();
        names.join(", ")
    }
}

/// Refuses an event command this platform cannot raise as written (its kind, its `pid`
/// option), located in `line`.
pub fn check_event(
    platform: &dyn Platform,
    line: &str,
    spec: &EventSpec,
) -> Result<(), CommandError> {
    if let Some(why) = platform.refusal(spec.kind) {
        let start = line.len() - line.trim_start().len();
        let name_len = spec.kind.command().len() + 1;
        return Err(CommandError {
            message: format!(
                "!{} cannot be raised by {}: {why}",
                spec.kind.command(),
                platform.name()
            ),
            start,
            end: start + name_len,
            help: Some(format!(
                "{} raises {} from real exits",
                platform.name(),
                platform.raised_kinds()
            )),
        });
    }
    if spec.options.pid.is_some() {
        if let Some((why, help)) = platform.pid_refusal() {
            let (start, end) = option_word(line, "pid", spec.script.as_ref().map(|s| s.1));
            return Err(CommandError {
                message: why,
                start,
                end,
                help: Some(help),
            });
        }
    }
    if let Some(why) = platform.filter_refusal(spec.kind, &spec.filter) {
        // Point at the arguments: from after the command's name to the first option.
        let after_name = line.len() - line.trim_start().len() + spec.kind.command().len() + 1;
        let start = after_name
            + line
                .get(after_name..)
                .map_or(0, |rest| rest.len() - rest.trim_start().len());
        let head = &line[..spec
            .script
            .as_ref()
            .map_or(line.len(), |s| s.1)
            .min(line.len())];
        let end = head.trim_end().len().max(start + 1);
        return Err(CommandError {
            message: format!("!{} cannot do this here: {why}", spec.kind.command()),
            start: start.min(line.len()),
            end: end.min(line.len().max(start + 1)),
            help: None,
        });
    }
    Ok(())
}

/// Every refusal a code object's usage sets earn on `platform` for a `kind` event, as
/// messages naming the register (the object has no source positions for them).
pub fn usage_refusals(platform: &dyn Platform, kind: EventKind, usage: &Usage) -> Vec<String> {
    let mut out = Vec::new();
    for reg in usage.registers_written() {
        if let Some(why) = platform.register_refusal(kind, reg, true) {
            out.push(why);
        }
    }
    for reg in usage.registers_read() {
        if usage.writes(reg) && platform.register_refusal(kind, reg, true).is_some() {
            continue;
        }
        if let Some(why) = platform.register_refusal(kind, reg, false) {
            out.push(why);
        }
    }
    for reg in usage.pseudo_registers_read() {
        if let Some(why) = platform.pseudo_refusal(reg) {
            out.push(why);
        }
    }
    out
}

/// The byte range of the option word `name` in `line`, before the script block (which
/// starts at `script_at`) so a `pid` inside the script is not taken for it.
fn option_word(line: &str, name: &str, script_at: Option<usize>) -> (usize, usize) {
    let head = &line[..script_at.unwrap_or(line.len()).min(line.len())];
    let mut at = 0;
    for word in head.split_ascii_whitespace() {
        let start = at + head[at..].find(word).unwrap_or(0);
        at = start + word.len();
        if word == name {
            return (start, at);
        }
    }
    (0, line.trim_end().len().max(1))
}

/// What a front end made of one command line for a hypervisor to load: nothing (a command
/// without a script), code-object bytes, or an in-process [`Script`] (the interpreter), and
/// the global-variable names the script was compiled against with their slots.
#[derive(Clone, Default)]
pub struct Prepared {
    /// A serialised code object (`hvscript_runtime::CodeObject::to_bytes`).
    pub code: Option<Vec<u8>>,
    /// A script already in this process (the front end's interpreter back end).
    pub script: Option<Arc<dyn Script>>,
    /// `(name, slot)` of every global the compiler knew, the new ones included.
    pub globals: Vec<(String, u32)>,
}

impl Prepared {
    /// Whether a compiled script came with it.
    pub fn has_script(&self) -> bool {
        self.code.is_some() || self.script.is_some()
    }
}

impl core::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Prepared")
            .field("code", &self.code.as_ref().map(|c| c.len()))
            .field("script", &self.script.is_some())
            .field("globals", &self.globals)
            .finish()
    }
}
