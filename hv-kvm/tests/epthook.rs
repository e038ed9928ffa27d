//! `!epthook` / `!epthook2` on guest kernel code through hardware execute breakpoints:
//! the event runs once per execution of the hooked instruction (no stages), `$context`
//! = the address, the script may change registers, the instruction then runs normally,
//! and the guest reading its own code sees the original bytes. At most 4 hooks; CPL3
//! addresses are refused.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use hv_kvm::*;

const CALLS: u64 = 10;

fn run_hook(vcpus: usize, events: &[&str]) -> (Vm, Vec<u64>, RunReport, Arc<RecordingSink>) {
    run_prepared(config(vcpus, 10), events, |vm| vm.set_hook_rounds(CALLS))
}

fn target() -> u64 {
    demo::demo_image().unwrap().hook_target
}

#[test]
fn epthook_fires_once_per_call_with_the_address_as_context() {
    if !kvm_or_skip() {
        return;
    }
    let t = target();
    let (vm, ids, report, sink) = run_hook(
        2,
        &[&format!(
            r#"!epthook {t:x} script {{ printf("%x %x %d\n", $context, @rip, @rdi); }}"#
        )],
    );
    let calls: u64 = report.vcpus.iter().map(|v| v.guest.hook_calls).sum();
    assert_eq!(calls, 2 * CALLS);
    let c = counters(&vm, ids[0]);
    assert_eq!((c.pre_runs, c.post_runs, c.script_errors), (calls, 0, 0));
    let lines = sink.lines_of(ids[0]);
    for n in 0..CALLS {
        let l = format!("{t:x} {t:x} {n}\n");
        assert_eq!(lines.iter().filter(|x| **x == l).count(), 2, "{lines:?}");
    }
    for v in &report.vcpus {
        assert_eq!(v.exits.breakpoints, CALLS);
        // The function ran normally after each hook.
        assert_eq!(v.guest.hook_arg_sum, (0..CALLS).sum::<u64>());
        assert_eq!(v.guest.hook_ret_sum, (1..=CALLS).sum::<u64>());
    }
}

#[test]
fn hook_script_changes_the_functions_argument_and_the_hook_is_invisible() {
    if !kvm_or_skip() {
        return;
    }
    let img = demo::demo_image().unwrap();
    let t = img.hook_target;
    let (_, _, report, _) = run_hook(1, &[&format!("!epthook2 {t:x} script {{ @rdi = 0x64; }}")]);
    let g = report.vcpus[0].guest;
    assert_eq!(g.hook_calls, CALLS);
    assert_eq!(g.hook_arg_sum, 100 * CALLS);
    assert_eq!(g.hook_ret_sum, 101 * CALLS);
    // The guest read its own code: the original bytes.
    let off = (t - img.load_addr) as usize;
    let original = u64::from_le_bytes(img.code[off..off + 8].try_into().unwrap());
    assert_eq!(g.hook_code, original);
}

#[test]
fn hooks_are_refused_on_user_code_beyond_four_and_inside_instructions() {
    if !kvm_or_skip() {
        return;
    }
    let vm = Vm::new(config(1, 1), Arc::new(hv_core::NullSink)).unwrap();
    let img = vm.image();
    let user = img.user_entry;
    let err = vm
        .front_add_event(&format!("!epthook {user:x}"))
        .unwrap_err();
    assert!(err.message().contains("CPL3"), "{}", err.message());
    let err = vm
        .front_add_event(&format!("!epthook {:x}", img.hook_target + 1))
        .unwrap_err();
    assert!(
        err.message().contains("start of an instruction"),
        "{}",
        err.message()
    );
    let err = vm.front_add_event("!epthook 1000").unwrap_err();
    assert!(err.message().contains("kernel code"), "{}", err.message());
    let err = vm
        .front_add_event(&format!("!epthook {:x}", img.sysret_addr))
        .unwrap_err();
    assert!(
        err.message().contains("leaves kernel mode"),
        "{}",
        err.message()
    );
    // Four distinct kernel instructions: the stub entries of vectors 0..4.
    for s in &img.stubs[..4] {
        vm.front_add_event(&format!("!epthook {s:x}")).unwrap();
    }
    // The same address again is fine (same debug register).
    vm.front_add_event(&format!("!epthook2 {:x}", img.stubs[0]))
        .unwrap();
    let err = vm
        .front_add_event(&format!("!epthook {:x}", img.stubs[4]))
        .unwrap_err();
    assert!(err.message().contains("at most 4"), "{}", err.message());
    assert_eq!(vm.hooks().len(), 4);
    let err = vm
        .front_add_event(&format!("!epthook {:x} stage post", img.stubs[0]))
        .unwrap_err();
    assert!(!err.message().is_empty());
}

#[test]
fn hooks_are_added_and_removed_while_the_guest_runs() {
    if !kvm_or_skip() {
        return;
    }
    // The hook on the function fires at boot; mid-run (the user loop, until told to
    // stop) a second hook is added and the first cleared: every vCPU is parked and
    // reprograms its debug registers, and the guest goes on.
    let img = demo::demo_image().unwrap();
    let sink = Arc::new(RecordingSink::default());
    let mut cfg = config(2, 0);
    cfg.duration = Some(Duration::from_millis(400));
    let vm = Arc::new(Vm::new(cfg, sink).unwrap());
    vm.set_hook_rounds(CALLS);
    let id = vm
        .front_add_event(&format!("!epthook {:x}", img.hook_target))
        .unwrap();
    let runner = {
        let vm = vm.clone();
        std::thread::spawn(move || vm.run().unwrap())
    };
    std::thread::sleep(Duration::from_millis(100));
    let start = Instant::now();
    vm.front_add_event(&format!("!epthook {:x}", img.syscall_entry))
        .unwrap();
    vm.apply(hvscript_stdlib::EventOp::Clear, hv_core::Target::Id(id))
        .unwrap();
    let changed = start.elapsed();
    assert!(changed < Duration::from_secs(5), "{changed:?}");
    assert_eq!(vm.hooks(), vec![img.syscall_entry]);
    let report = runner.join().unwrap();
    for v in &report.vcpus {
        assert_eq!(v.stop, StopReason::GuestExit(0));
        assert_eq!(v.exits.breakpoints, CALLS);
        assert!(v.guest.iterations > 0);
    }
    eprintln!("two hook changes while running took {changed:?}");
}
