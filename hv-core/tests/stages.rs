//! The calling-stage and short-circuit rules of DESIGN.md, one named test per rule, on a
//! simulated back end (real scripts, a recording emulation).

mod common;

use common::*;
use hv_core::*;
use hvscript_abi::GuestRegs;

fn cpuid_exit(leaf: u64) -> Exit {
    Exit::new(EventKind::Cpuid, 0, leaf)
}

/// Handles one exit whose emulation records that it ran and sets rax to 0x1234.
fn handle(rig: &Rig, exit: &Exit, regs: &mut GuestRegs) -> (ExitOutcome, bool) {
    let mut emulated = false;
    let outcome = rig
        .engine
        .handle_exit(exit, regs, &mut NoGuestMemory, |r, _| {
            emulated = true;
            r.rax = 0x1234;
        });
    (outcome, emulated)
}

#[test]
fn default_stage_is_pre() {
    let rig = Rig::new();
    let id = rig
        .add("!cpuid script { printf(\"stage %d\\n\", $stage); }")
        .unwrap();
    let (o, emulated) = handle(&rig, &cpuid_exit(1), &mut GuestRegs::default());
    assert!(emulated);
    assert_eq!((o.pre_executions, o.post_executions), (1, 0));
    assert_eq!(rig.sink.text(), "stage 0\n");
    assert_eq!(rig.counters(id).pre_runs, 1);
    assert_eq!(rig.counters(id).post_runs, 0);
}

#[test]
fn stage_all_runs_twice_with_stage_0_then_1() {
    let rig = Rig::new();
    rig.add("!cpuid stage all script { printf(\"%d %d rax=%x\\n\", $stage, $event_stage, @rax); }")
        .unwrap();
    let (o, _) = handle(
        &rig,
        &cpuid_exit(1),
        &mut GuestRegs {
            rax: 1,
            ..Default::default()
        },
    );
    assert_eq!((o.pre_executions, o.post_executions), (1, 1));
    // pre sees the input, post sees what the emulation produced
    assert_eq!(rig.sink.text(), "0 0 rax=1\n1 1 rax=1234\n");
}

#[test]
fn post_never_runs_after_a_short_circuit() {
    let rig = Rig::new();
    let id = rig.add("!cpuid stage all script { if ($stage == 0) { event_sc(1); } printf(\"ran %d\\n\", $stage); }").unwrap();
    let (o, emulated) = handle(&rig, &cpuid_exit(1), &mut GuestRegs::default());
    assert!(o.short_circuited && !emulated);
    assert_eq!(o.post_executions, 0);
    assert_eq!(rig.sink.text(), "ran 0\n");
    assert_eq!(rig.counters(id).short_circuits, 1);
}

#[test]
fn one_events_short_circuit_skips_the_emulation_and_every_post() {
    let rig = Rig::new();
    let older = rig
        .add("!cpuid stage all script { printf(\"older %d\\n\", $stage); }")
        .unwrap();
    let newer = rig
        .add("!cpuid script { event_sc(1); printf(\"newer\\n\"); }")
        .unwrap();
    let mut regs = GuestRegs {
        rax: 7,
        ..Default::default()
    };
    let (o, emulated) = handle(&rig, &cpuid_exit(1), &mut regs);
    assert!(o.short_circuited && !emulated);
    // newest first, and the older event's post never runs
    assert_eq!(rig.sink.text(), "newer\nolder 0\n");
    assert_eq!(
        regs.rax, 7,
        "a skipped CPUID leaves the registers as the scripts left them"
    );
    assert_eq!(rig.counters(older).post_runs, 0);
    assert_eq!(rig.counters(newer).short_circuits, 1);
}

#[test]
fn any_short_circuit_wins_even_against_an_older_sc_off_event() {
    // HyperDbg v0.23's code lets the last event run decide; the docs (and hvscript) say any one.
    let rig = Rig::new();
    rig.add("!cpuid sc off script { event_sc(0); }").unwrap();
    rig.add("!cpuid script { event_sc(1); }").unwrap();
    let (o, emulated) = handle(&rig, &cpuid_exit(1), &mut GuestRegs::default());
    assert!(o.short_circuited && !emulated);
}

#[test]
fn event_sc_in_post_changes_nothing_and_is_counted() {
    let rig = Rig::new();
    let id = rig
        .add("!cpuid stage all script { if ($stage == 1) { event_sc(1); } }")
        .unwrap();
    let (o, emulated) = handle(&rig, &cpuid_exit(1), &mut GuestRegs::default());
    assert!(emulated && !o.short_circuited);
    let c = rig.counters(id);
    assert_eq!((c.refused_short_circuits, c.short_circuits), (1, 0));
    assert!(rig
        .sink
        .text()
        .contains("event_sc in the post stage changes nothing"));
}

#[test]
fn event_sc_in_a_post_only_script_is_refused_when_defined() {
    let rig = Rig::new();
    let err = rig
        .add("!cpuid stage post script { event_sc(1); }")
        .unwrap_err();
    assert!(err.contains("post stage"), "{err}");
}

#[test]
fn sc_on_with_stage_post_is_an_error() {
    for line in ["!cpuid sc on stage post", "!msrread stage all sc on"] {
        let e = parse_event_command(line).unwrap_err();
        assert!(e.message.contains("meaningless"), "{line}: {e:?}");
        assert_eq!(&line[e.start..e.end], "sc");
    }
}

#[test]
fn sc_on_short_circuits_every_execution_unless_the_script_says_event_sc_0() {
    let rig = Rig::new();
    let id = rig
        .add("!cpuid sc on script { if ($context == 2) { event_sc(0); } }")
        .unwrap();
    let (o, emulated) = handle(&rig, &cpuid_exit(1), &mut GuestRegs::default());
    assert!(o.short_circuited && !emulated);
    let (o, emulated) = handle(&rig, &cpuid_exit(2), &mut GuestRegs::default());
    assert!(!o.short_circuited && emulated);
    let plain = rig.add("!msrwrite sc on").unwrap();
    let mut emulated = false;
    let o = rig.engine.handle_exit(
        &Exit::new(EventKind::MsrWrite, 0, 0x10),
        &mut GuestRegs::default(),
        &mut NoGuestMemory,
        |_, _| emulated = true,
    );
    assert!(
        o.short_circuited && !emulated,
        "an event without a script short-circuits by its default"
    );
    assert_eq!(rig.counters(id).short_circuits, 1);
    assert_eq!(rig.counters(plain).short_circuits, 1);
}

#[test]
fn epthook_refuses_stage_and_sc() {
    for line in [
        "!epthook fffff80000001000 stage post",
        "!epthook2 1000 stage pre",
        "!epthook 1000 sc on",
    ] {
        let e = parse_event_command(line).unwrap_err();
        assert!(
            e.message.contains("no calling stages")
                || e.message.contains("cannot be short-circuited"),
            "{e:?}"
        );
    }
    let rig = Rig::new();
    rig.add("!epthook 401000 script { printf(\"hook at %llx\\n\", $context); }")
        .unwrap();
    let (o, emulated) = handle(
        &rig,
        &Exit::new(EventKind::EptHook, 0, 0x401000),
        &mut GuestRegs::default(),
    );
    assert!(emulated && o.pre_executions == 1 && o.post_executions == 0);
    assert_eq!(rig.sink.text(), "hook at 401000\n");
}

#[test]
fn core_pid_and_own_filters() {
    let rig = Rig::new();
    rig.add("!msrread c0000080 core 1 pid 4 script { printf(\"efer\\n\"); }")
        .unwrap();
    rig.add("!msrread script { printf(\"any %llx\\n\", $context); }")
        .unwrap();
    let mut exit = Exit::new(EventKind::MsrRead, 0, 0xc0000080);
    exit.pid = 4;
    handle(&rig, &exit, &mut GuestRegs::default()); // wrong core
    exit.core = 1;
    exit.pid = 5;
    handle(&rig, &exit, &mut GuestRegs::default()); // wrong pid
    exit.pid = 4;
    handle(&rig, &exit, &mut GuestRegs::default()); // match
    exit.context = 0x10;
    handle(&rig, &exit, &mut GuestRegs::default()); // other MSR
    assert_eq!(
        rig.sink.text(),
        "any c0000080\nany c0000080\nany c0000080\nefer\nany 10\n"
    );
}

#[test]
fn monitor_ranges_and_access_kinds() {
    let rig = Rig::new();
    rig.add("!monitor w 1000 l 10 script { printf(\"w %llx\\n\", $context); }")
        .unwrap();
    rig.add("!monitor rw 2000 2fff script { printf(\"rw %llx\\n\", $context); }")
        .unwrap();
    let at = |addr: u64, access: Access| {
        let mut e = Exit::new(EventKind::Monitor, 0, addr);
        e.access = access;
        handle(&rig, &e, &mut GuestRegs::default());
    };
    at(0x100f, Access::WRITE);
    at(0x1010, Access::WRITE); // past the end
    at(0x1000, Access::READ); // not watched for reads
    at(0x2fff, Access::READ);
    assert_eq!(rig.sink.text(), "w 100f\nrw 2fff\n");
}

#[test]
fn register_writes_in_pre_feed_the_emulation_and_in_post_reach_the_guest() {
    let rig = Rig::new();
    rig.add("!msrwrite stage all script { if ($stage == 0) { @rax = 0x42; } else { @rdx = @rax + 1; } }").unwrap();
    let mut regs = GuestRegs::default();
    let mut seen = 0;
    rig.engine.handle_exit(
        &Exit::new(EventKind::MsrWrite, 0, 0x10),
        &mut regs,
        &mut NoGuestMemory,
        |r, _| seen = r.rax,
    );
    assert_eq!(seen, 0x42);
    assert_eq!(regs.rdx, 0x43);
}

#[test]
fn a_script_error_is_counted_and_does_not_affect_the_others_or_the_emulation() {
    let rig = Rig::new();
    let good = rig
        .add("!ioin script { printf(\"port %x\\n\", $context); }")
        .unwrap();
    let bad = rig
        .add("!ioin script { event_sc(1); x = poi(0x10); }")
        .unwrap();
    let looping = rig.add("!ioin script { while (1) { } }").unwrap();
    let (o, emulated) = handle(
        &rig,
        &Exit::new(EventKind::IoIn, 0, 0x60),
        &mut GuestRegs::default(),
    );
    assert!(
        emulated && !o.short_circuited,
        "a failed execution's event_sc does not count"
    );
    assert_eq!(rig.counters(bad).script_errors, 1);
    assert_eq!(rig.counters(looping).fuel_exhaustions, 1);
    assert_eq!(rig.counters(good).pre_runs, 1);
    let text = rig.sink.text();
    assert!(
        text.contains("port 60\n") && text.contains("error: event 0x2 (pre stage): poi"),
        "{text}"
    );
}

#[test]
fn pseudo_registers_of_an_event() {
    let rig = Rig::new();
    let id = rig.add("!ioout 80 script { printf(\"%x %x %x %x %llx\\n\", $event_id, $event_tag, $context, $core, $ip); }").unwrap();
    let mut exit = Exit::new(EventKind::IoOut, 3, 0x80);
    exit.pid = 1;
    handle(
        &rig,
        &exit,
        &mut GuestRegs {
            rip: 0xfff0,
            ..Default::default()
        },
    );
    assert_eq!(
        rig.sink.text(),
        format!("{id:x} {:x} 80 3 fff0\n", id + 0x1000000)
    );
}

#[test]
fn scripts_enable_disable_and_clear_events_after_the_exit() {
    let rig = Rig::new();
    let target = rig.add("!cpuid script { printf(\"target\\n\"); }").unwrap();
    rig.add(&format!("!cpuid script {{ event_disable({target:x}); }}"))
        .unwrap();
    handle(&rig, &cpuid_exit(0), &mut GuestRegs::default());
    handle(&rig, &cpuid_exit(0), &mut GuestRegs::default());
    assert_eq!(
        rig.sink.text(),
        "target\n",
        "the running exit keeps its table; the next one sees the change"
    );
    assert!(
        !rig.engine
            .list()
            .iter()
            .find(|l| l.id == target)
            .unwrap()
            .enabled
    );
}

#[test]
fn the_safe_buffer_is_visible_at_dollar_buffer() {
    let rig = Rig::new();
    rig.add(
        "!cpuid buffer 10 script { n = interlocked_increment($buffer); printf(\"%d\\n\", n); }",
    )
    .unwrap();
    handle(&rig, &cpuid_exit(0), &mut GuestRegs::default());
    handle(&rig, &cpuid_exit(0), &mut GuestRegs::default());
    assert_eq!(rig.sink.text(), "1\n2\n");
}

#[test]
fn events_commands_and_listing() {
    let rig = Rig::new();
    let a = rig.add("!cpuid").unwrap();
    let b = rig.add("!msrread 10").unwrap();
    assert_eq!(
        parse_command("events d 2").unwrap(),
        Command::Disable(Target::Id(2))
    );
    assert_eq!(
        parse_command("events c all").unwrap(),
        Command::Clear(Target::All)
    );
    assert_eq!(
        parse_command("events sc on").unwrap(),
        Command::ShortCircuit(true)
    );
    assert_eq!(parse_command("events").unwrap(), Command::List);
    rig.engine
        .apply(hvscript_stdlib::EventOp::Disable, Target::Id(b))
        .unwrap();
    let l = rig.engine.list();
    assert_eq!(
        (l[0].id, l[0].enabled, l[0].text.as_str()),
        (a, true, "!cpuid")
    );
    assert_eq!((l[1].id, l[1].enabled), (b, false));
    assert!(rig
        .engine
        .apply(hvscript_stdlib::EventOp::Clear, Target::Id(99))
        .is_err());
    rig.engine
        .apply(hvscript_stdlib::EventOp::Clear, Target::All)
        .unwrap();
    assert!(rig.engine.list().is_empty());
}
