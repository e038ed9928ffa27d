//! hv-kvm's register and pseudo-register rules applied by the front end's token scan
//! (`hvscript_front::checks`): every refusal names the register and points at it.

use hv_core::EventKind;
use hv_kvm::KvmPlatform;
use hvscript_front::checks::check;

fn refused(kind: EventKind, script: &str) -> Vec<String> {
    check(&KvmPlatform, kind, script)
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
