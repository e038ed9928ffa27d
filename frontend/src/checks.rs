//! What hv-kvm refuses in an event's script when the event is defined, so that nothing a
//! user writes is silently dropped or silently zero at run time:
//!
//! - register writes hv-kvm cannot apply: segment selectors, LDTR and TR (KVM loads a
//!   selector only with its hidden descriptor, and hv-kvm does not emulate a segment load);
//! - debug registers, read or written: hv-kvm owns DR0..DR7 (execute hooks and `!cpuid`
//!   stepping use them) and does not expose the guest's, except that a `!monitor` script
//!   sees the access's data in `@dr0` and its length in `@dr1` (`vmm::exits::monitor`);
//! - pseudo-registers the guest has no notion of: the demo guest has no processes or
//!   threads, so `$pid $tid $pname $proc $thread $peb $teb` have no value.
//!
//! General registers, RIP, RFLAGS, CR0/CR2/CR3/CR4/CR8 and the GDTR/IDTR bases are applied
//! (the last two through `KVM_SET_SREGS`). Every refusal names the register and points at
//! it in the command line.

use hv_core::EventKind;
use hvscript_abi::{PseudoReg, Register};
use hvscript_grammar::ast::Span;
use hvscript_grammar::lexer::{tokenize, Tok};
use hvscript_grammar::Diagnostic;

/// GuestRegs slots (abi::regs): 18..=23 segment selectors, 29..=34 DR0..DR7, 37 LDTR,
/// 38 TR.
fn slot_refusal(kind: EventKind, reg: Register, write: bool) -> Option<String> {
    let slot = reg.field().slot;
    let name = reg.name();
    match slot {
        18..=23 | 37 | 38 if write => Some(format!(
            "hv-kvm cannot apply a write to @{name}: KVM loads a selector only together with \
             its hidden descriptor, and hv-kvm does not emulate a segment load"
        )),
        29 | 30 if kind == EventKind::Monitor => None,
        29..=34 => Some(format!(
            "@{name} is not available to scripts on hv-kvm: the VMM owns the debug registers \
             (execute hooks and !cpuid stepping use them){}",
            if slot <= 30 {
                "; only a !monitor script has @dr0/@dr1, the access's data and length"
            } else {
                ""
            }
        )),
        _ => None,
    }
}

fn pseudo_refusal(reg: PseudoReg) -> Option<String> {
    use PseudoReg::*;
    matches!(reg, Pid | Tid | Pname | Proc | Thread | Peb | Teb).then(|| {
        format!(
            "${} has no value on hv-kvm's demo guest: it has no processes or threads",
            reg.name()
        )
    })
}

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
pub fn check(kind: EventKind, script: &str) -> Vec<Diagnostic> {
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
                slot_refusal(kind, *reg, write)
            }
            Tok::Pseudo(p) => pseudo_refusal(*p),
            _ => None,
        };
        if let Some(message) = why {
            out.push(Diagnostic::error(message, Span::new(*start, *end)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(kind: EventKind, script: &str) -> Vec<String> {
        check(kind, script)
            .into_iter()
            .map(|d| {
                let s = d.span;
                script[s.start as usize..s.end as usize].to_string()
            })
            .collect()
    }

    #[test]
    fn writes_kvm_cannot_apply_are_refused() {
        let s = "@cr3 = 1; @cr0 |= 1; @cs = 8; x = @ss; @tr++; --@ldtr; @gdtr = 5;";
        assert_eq!(refused(EventKind::IoIn, s), ["@cs", "@tr", "@ldtr"]);
    }

    #[test]
    fn debug_registers_only_for_monitor_data() {
        let s = "@dr0 = @dr1 + @dr7;";
        assert_eq!(refused(EventKind::IoIn, s), ["@dr0", "@dr1", "@dr7"]);
        assert_eq!(refused(EventKind::Monitor, s), ["@dr7"]);
    }

    #[test]
    fn process_pseudo_registers_are_refused() {
        let s = "printf(\"%x %s %s\", $pid, $date, $pname); // $tid";
        assert_eq!(refused(EventKind::IoOut, s), ["$pid", "$pname"]);
    }
}
