//! Deferred output (issue 17): executions record printf as a format id and raw values in
//! their vCPU's ring and a consumer formats them later. The text is what immediate output
//! gives (strings as memory held them at the event), errors stay the script's, a ring that
//! nobody drains drops and counts instead of blocking, and a consumer draining while
//! several vCPUs print emits the executions in the exits' order.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
use hv_core::event_output::EventOutput;
use hv_core::*;
use hvscript_abi::GuestRegs;
use hvscript_lang::{compile_source, CompileOptions, Globals};
use hvscript_runtime::{Limits, LoadedCode};

fn jit_script(src: &str, globals: &Globals) -> Arc<dyn Script> {
    let program = compile_source(src, globals, &CompileOptions::default()).unwrap();
    let bytes = hvscript_jit::Jit::new()
        .unwrap()
        .compile(&program)
        .unwrap()
        .to_bytes();
    let code = LoadedCode::<hvscript_runtime::ArenaMemory>::from_bytes(&bytes).unwrap();
    Arc::new(CodeScript::new(
        code,
        globals.values().clone(),
        Limits::default(),
    ))
}

const SCRIPTS: &[&str] = &[
    r#"printf("rax=%x rbx=%d s=%s|%ws\n", @rax, @rbx, 0x100, 0x200);"#,
    r#"print(@rax); printf("%c%c%p %llx %f\n", 0x41, 0, @rcx, @rdx, 2.5);"#,
    r#"char t[8] = {0x6c, 0x6f, 0x63, 0x61, 0x6c, 0}; printf("own %s\n", &t);"#,
    r#"printf("before\n"); printf("%s\n", 0xfffff0); printf("never\n");"#,
];

/// Runs every script on both back ends for three exits, changing the strings in memory
/// after each; returns the sink's text and the error counts.
fn run(rig: &Rig) -> (String, u64) {
    let mut ids = Vec::new();
    for src in SCRIPTS {
        ids.push(rig.add(&format!("!cpuid script {{ {src} }}")).unwrap());
        let spec = parse_event_command("!cpuid").unwrap();
        ids.push(
            rig.engine
                .add(spec, Some(jit_script(src, &rig.globals)))
                .unwrap(),
        );
    }
    let mut mem = FlatMemory(vec![0; 0x1000]);
    for round in 0..3u8 {
        mem.0[0x100..0x106].copy_from_slice(&[b'a' + round, b'b', b'c', 0, 0, 0]);
        mem.0[0x200..0x206].copy_from_slice(&[b'W', 0, 0xe9, 0, 0, 0]);
        let mut regs = GuestRegs {
            rax: 0x10 + u64::from(round),
            rbx: 7,
            rcx: 0xdead,
            rdx: u64::MAX,
            ..Default::default()
        };
        rig.cpuid(0, 1, &mut regs, &mut mem);
        // What the consumer sees later must be what memory held at the event.
        mem.0[0x100] = b'X';
    }
    rig.engine.drain_output();
    let errors = ids.iter().map(|&id| rig.counters(id).script_errors).sum();
    (rig.sink.text(), errors)
}

#[test]
fn deferred_output_is_the_text_immediate_output_gives() {
    let (immediate, errors_now) = run(&Rig::new());
    let deferred = Rig::deferred();
    let (later, errors_later) = run(&deferred);
    assert_eq!(later, immediate);
    assert_eq!((errors_now, errors_later), (6, 6));
    assert!(immediate.contains("s=abc|W?\n") && immediate.contains("s=bbc|W?\n"));
    assert!(immediate.contains("own local\n"));
    assert!(immediate.contains("A000000000000DEAD ffffffffffffffff 2.500000\n"));
    // The unreadable %s stops the script where it is, with its location.
    assert!(immediate.contains("before\nerror: event"), "{immediate}");
    assert!(immediate.contains("cannot read") && !immediate.contains("never"));
    assert_eq!(deferred.engine.output_dropped(), 0);
}

#[test]
fn nothing_reaches_the_sink_until_the_consumer_drains() {
    let rig = Rig::deferred();
    rig.add(r#"!cpuid script { printf("%d\n", @rax); }"#)
        .unwrap();
    rig.cpuid(0, 1, &mut GuestRegs::default(), &mut NoGuestMemory);
    assert!(rig.sink.text().is_empty());
    assert!(rig.engine.output_pending());
    assert_eq!(rig.engine.drain_output(), 1);
    assert_eq!(rig.sink.text(), "0\n");
    assert!(!rig.engine.output_pending());
}

#[test]
fn a_ring_nobody_drains_drops_and_counts_without_blocking() {
    let rig = Rig::deferred();
    let globals = rig.globals.clone();
    let spec = parse_event_command("!cpuid").unwrap();
    rig.engine
        .add(
            spec,
            Some(jit_script(
                r#"printf("%d %d %d\n", @rax, @rbx, @rcx);"#,
                &globals,
            )),
        )
        .unwrap();
    let n = 20_000u64;
    for i in 0..n {
        let mut regs = GuestRegs {
            rax: i,
            ..Default::default()
        };
        rig.cpuid(3, 1, &mut regs, &mut NoGuestMemory);
    }
    let dropped = rig.engine.output_dropped();
    assert!(dropped > 0 && dropped < n, "{dropped}");
    let delivered = rig.engine.drain_output() as u64;
    assert_eq!(delivered + dropped, n);
    // The first messages are kept, in order.
    let text = rig.sink.text();
    assert!(text.starts_with("0 0 0\n1 0 0\n2 0 0\n"));
    assert_eq!(text.lines().count() as u64, delivered);
}

#[test]
fn the_hypervisors_notes_go_out_between_the_exits_they_came_between() {
    let rig = Rig::deferred();
    rig.add(r#"!cpuid script { printf("exit %d\n", @rax); }"#)
        .unwrap();
    let exit = |rax| {
        let mut regs = GuestRegs {
            rax,
            ..Default::default()
        };
        rig.cpuid(1, 1, &mut regs, &mut NoGuestMemory);
    };
    rig.engine.note(0, 0, Stage::Pre, b"note 0\n");
    exit(1);
    rig.engine.note(1, 0, Stage::Pre, b"note 1\n");
    exit(2);
    rig.engine.drain_output();
    rig.engine.note(0, 0, Stage::Post, b"note 2\n");
    rig.engine.drain_output();
    assert_eq!(rig.sink.text(), "note 0\nexit 1\nnote 1\nexit 2\nnote 2\n");
}

#[test]
fn immediate_output_of_an_execution_longer_than_its_ring_is_all_delivered() {
    let rig = Rig::new();
    let spec = parse_event_command("!cpuid").unwrap();
    let src = r#"for (i = 0; i < 0n20000; i++) { printf("line %d of %d\n", i, 0n20000); }"#;
    rig.engine
        .add(spec, Some(jit_script(src, &rig.globals)))
        .unwrap();
    rig.cpuid(0, 1, &mut GuestRegs::default(), &mut NoGuestMemory);
    let text = rig.sink.text();
    assert_eq!(text.lines().count(), 20_000);
    assert!(text
        .lines()
        .enumerate()
        .all(|(i, l)| l == format!("line {i} of 20000")));
    assert_eq!(rig.engine.output_dropped(), 0);
    // It came in several pieces, each a ring's worth: the ring was emptied as it filled.
    assert!(rig.sink.lines.lock().unwrap().len() > 1);
}

/// Records every sink call's event id and the text's stamp (the text is the stamp).
#[derive(Default)]
struct Stamps(Mutex<Vec<(u32, u64)>>);

impl OutputSink for Stamps {
    fn output(&self, _: u64, _: Stage, core: u32, text: &[u8]) {
        let stamp = std::str::from_utf8(text).unwrap().trim().parse().unwrap();
        self.0.lock().unwrap().push((core, stamp));
    }
}

#[test]
fn a_consumer_draining_while_vcpus_print_emits_in_the_exits_order() {
    let out = EventOutput::new(OutputMode::Deferred, 16 * 1024);
    let sink = Stamps::default();
    let done = AtomicBool::new(false);
    const EXITS: u64 = 30_000;
    std::thread::scope(|s| {
        let vcpus: Vec<_> = (0..3u32)
            .map(|core| {
                let out = &out;
                s.spawn(move || {
                    for _ in 0..EXITS {
                        let mut rec = out.recorder(core, None).unwrap();
                        rec.begin(1, Stage::Pre, core, 0, 0);
                        let text = format!("{}\n", rec.stamp());
                        rec.text(text.as_bytes());
                        // Some exits run long: the consumer must wait for them.
                        if rec.stamp().is_multiple_of(97) {
                            std::thread::yield_now();
                        }
                        rec.end();
                    }
                })
            })
            .collect();
        s.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                out.drain(&sink);
            }
        });
        for v in vcpus {
            v.join().unwrap();
        }
        done.store(true, Ordering::SeqCst);
    });
    out.drain(&sink);
    let got = sink.0.into_inner().unwrap();
    assert_eq!(got.len() as u64 + out.dropped(), 3 * EXITS);
    assert!(
        got.windows(2).all(|w| w[0].1 < w[1].1),
        "emitted out of the exits' order"
    );
    for core in 0..3 {
        assert!(got.iter().any(|&(c, _)| c == core));
    }
}

/// Scripts that call no built-in do not take the vCPU's ring, yet an error they stop with
/// is still printed (the ring is taken then), in its place among the exit's other output;
/// and an exit whose scripts print nothing leaves no trace in the output.
#[test]
fn scripts_that_cannot_print_take_the_ring_only_to_report_an_error() {
    for rig in [Rig::new(), Rig::deferred()] {
        let quiet = jit_script("@rax = @rax + 1;", &rig.globals);
        let failing = jit_script("x = 0; @rbx = 5 / x;", &rig.globals);
        let printing = jit_script(r#"printf("rax=%d\n", @rax);"#, &rig.globals);
        assert!(!quiet.may_output() && !failing.may_output() && printing.may_output());
        let spec = || parse_event_command("!cpuid").unwrap();
        // Newest first: printing, failing, quiet run in that order at each exit.
        rig.engine.add(spec(), Some(quiet)).unwrap();
        let failing_id = rig.engine.add(spec(), Some(failing)).unwrap();
        rig.engine.add(spec(), Some(printing)).unwrap();
        let mut mem = FlatMemory(vec![0; 0x1000]);
        for round in 0..3u64 {
            let mut regs = GuestRegs {
                rax: round,
                ..Default::default()
            };
            rig.cpuid(0, 1, &mut regs, &mut mem);
            assert_eq!(regs.rax, round + 1);
        }
        rig.engine.drain_output();
        let text = rig.sink.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 6, "{text}");
        for (round, pair) in lines.chunks(2).enumerate() {
            assert_eq!(pair[0], format!("rax={round}"));
            assert!(
                pair[1].starts_with(&format!("error: event {failing_id:#x} (pre stage)"))
                    && pair[1].contains("division by zero"),
                "{}",
                pair[1]
            );
        }
        assert_eq!(rig.engine.output_dropped(), 0);
    }
    // Nothing that prints: no ring is ever taken, and nothing waits.
    let rig = Rig::deferred();
    rig.engine
        .add(
            parse_event_command("!cpuid").unwrap(),
            Some(jit_script("@rax = 1;", &rig.globals)),
        )
        .unwrap();
    let mut mem = FlatMemory(vec![0; 0x1000]);
    let mut regs = GuestRegs::default();
    rig.cpuid(0, 1, &mut regs, &mut mem);
    assert!(!rig.engine.output_pending());
    assert_eq!(rig.sink.text(), "");
}

/// A guest whose `pause()` runs an exit on core 1 and drains the output, as another vCPU
/// and the output thread do while this core waits for `g`; it keeps what the sink had then.
struct PausingGuest<'a> {
    rig: &'a Rig,
    during_pause: Option<String>,
}

impl GuestAccess for PausingGuest<'_> {
    fn read(&mut self, _: u64, _: &mut [u8]) -> Result<(), hvscript_stdlib::MemFault> {
        Err(hvscript_stdlib::MemFault::Invalid)
    }
    fn write(&mut self, _: u64, _: &[u8]) -> Result<(), hvscript_stdlib::MemFault> {
        Err(hvscript_stdlib::MemFault::Invalid)
    }
    fn can_pause(&self) -> bool {
        true
    }
    fn pause(&mut self, _at: &PauseInfo, _regs: &mut GuestRegs) {
        let mut regs = GuestRegs::default();
        self.rig.cpuid(1, 2, &mut regs, &mut NoGuestMemory);
        self.rig.engine.drain_output();
        self.during_pause = Some(self.rig.sink.text());
    }
}

/// A core paused at a break does not hold the other cores' output back until `g`: what it
/// printed before the break and what the others print during it go out meanwhile, and its
/// executions after the break follow them.
#[test]
fn a_paused_exit_does_not_hold_back_the_other_cores_output() {
    let rig = Rig::deferred();
    // Newest first: the pausing event runs before the other one on the same exit.
    rig.add(r#"!cpuid script { printf("second %d\n", $core); }"#)
        .unwrap();
    rig.add(r#"!cpuid script { printf("first %d\n", $core); if ($core == 0) { pause(); } }"#)
        .unwrap();
    let mut guest = PausingGuest {
        rig: &rig,
        during_pause: None,
    };
    let mut regs = GuestRegs::default();
    rig.cpuid(0, 1, &mut regs, &mut guest);
    rig.engine.drain_output();
    assert_eq!(
        guest.during_pause.as_deref(),
        Some("first 0\nfirst 1\nsecond 1\n"),
        "while core 0 is paused"
    );
    assert_eq!(rig.sink.text(), "first 0\nfirst 1\nsecond 1\nsecond 0\n");
}
