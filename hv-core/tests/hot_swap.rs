//! Hot-swap under load: 4 threads dispatch exits while another adds, removes, enables,
//! disables and replaces events. Every execution must be counted exactly once: by the
//! engine's per-event counters, by the scripts themselves, and by the dispatchers.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use hv_core::*;
use hvscript_abi::{GuestRegs, PseudoValues};
use hvscript_stdlib::{Env, EventOp};

/// Every script ever attached, with its event id.
type Registry = Vec<(u64, Arc<Counting>)>;

/// A script that counts its own executions per stage.
struct Counting {
    pre: AtomicU64,
    post: AtomicU64,
}

impl Script for Counting {
    fn execute(
        &self,
        _regs: &mut GuestRegs,
        pseudo: &PseudoValues,
        _env: &mut dyn Env,
    ) -> Result<(), ScriptFailure> {
        if pseudo.get(hvscript_abi::PseudoReg::EventStage) == 0 {
            self.pre.fetch_add(1, Ordering::Relaxed);
        } else {
            self.post.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
    fn uses_short_circuit(&self) -> bool {
        false
    }
}

#[test]
fn four_dispatchers_and_a_mutator_lose_and_double_nothing() {
    const THREADS: u64 = 4;
    const EXITS_PER_THREAD: u64 = 250_000;
    const MIN_CHANGES: u64 = 10_000;

    let engine = Arc::new(Engine::new(Arc::new(NullSink)));
    let scripts: Arc<std::sync::Mutex<Registry>> = Default::default();
    let stop = Arc::new(AtomicBool::new(false));
    let changes = Arc::new(AtomicU64::new(0));

    let mutator = {
        let (engine, scripts, stop, changes) = (
            engine.clone(),
            scripts.clone(),
            stop.clone(),
            changes.clone(),
        );
        std::thread::spawn(move || {
            let mut live: Vec<u64> = Vec::new();
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) || changes.load(Ordering::Relaxed) < MIN_CHANGES {
                i += 1;
                match i % 5 {
                    0 | 1 if live.len() < 8 => {
                        let stage = ["pre", "post", "all"][(i % 3) as usize];
                        let spec = parse_event_command(&format!("!cpuid stage {stage}")).unwrap();
                        let s = Arc::new(Counting {
                            pre: AtomicU64::new(0),
                            post: AtomicU64::new(0),
                        });
                        let id = engine.add(spec, Some(s.clone())).unwrap();
                        scripts.lock().unwrap().push((id, s));
                        live.push(id);
                    }
                    2 if !live.is_empty() => {
                        let id = live.remove((i as usize / 5) % live.len());
                        engine.apply(EventOp::Clear, Target::Id(id)).unwrap();
                    }
                    3 if !live.is_empty() => {
                        let id = live[(i as usize) % live.len()];
                        let op = if i.is_multiple_of(2) {
                            EventOp::Disable
                        } else {
                            EventOp::Enable
                        };
                        engine.apply(op, Target::Id(id)).unwrap();
                    }
                    _ if !live.is_empty() => {
                        // replace a script: the old one keeps what it counted
                        let id = live[(i as usize) % live.len()];
                        let s = Arc::new(Counting {
                            pre: AtomicU64::new(0),
                            post: AtomicU64::new(0),
                        });
                        engine.replace_script(id, Some(s.clone())).unwrap();
                        scripts.lock().unwrap().push((id, s));
                    }
                    _ => continue,
                }
                changes.fetch_add(1, Ordering::Relaxed);
            }
            live
        })
    };

    let dispatchers: Vec<_> = (0..THREADS)
        .map(|core| {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let (mut pre, mut post, mut emulations) = (0u64, 0u64, 0u64);
                let mut regs = GuestRegs::default();
                for n in 0..EXITS_PER_THREAD {
                    let o = engine.handle_exit(
                        &Exit::new(EventKind::Cpuid, core as u32, n & 7),
                        &mut regs,
                        &mut NoGuestMemory,
                        |_, _| emulations += 1,
                    );
                    pre += u64::from(o.pre_executions);
                    post += u64::from(o.post_executions);
                }
                (pre, post, emulations)
            })
        })
        .collect();

    let mut dispatched = (0u64, 0u64, 0u64);
    for d in dispatchers {
        let (a, b, c) = d.join().unwrap();
        dispatched = (dispatched.0 + a, dispatched.1 + b, dispatched.2 + c);
    }
    stop.store(true, Ordering::Relaxed);
    mutator.join().unwrap();

    let scripts = scripts.lock().unwrap();
    let by_scripts = scripts.iter().fold((0, 0), |acc, (_, s)| {
        (
            acc.0 + s.pre.load(Ordering::Relaxed),
            acc.1 + s.post.load(Ordering::Relaxed),
        )
    });
    // Counters of events still in the table; cleared events took theirs with them, so
    // compare those through the scripts of the live events only.
    let live_ids: std::collections::HashSet<u64> = engine.list().iter().map(|l| l.id).collect();
    for l in engine.list() {
        let own: (u64, u64) =
            scripts
                .iter()
                .filter(|(id, _)| *id == l.id)
                .fold((0, 0), |acc, (_, s)| {
                    (
                        acc.0 + s.pre.load(Ordering::Relaxed),
                        acc.1 + s.post.load(Ordering::Relaxed),
                    )
                });
        assert_eq!(
            (l.counters.pre_runs, l.counters.post_runs),
            own,
            "event {} counters vs its scripts",
            l.id
        );
    }
    assert!(!live_ids.is_empty() || changes.load(Ordering::Relaxed) > 0);
    assert_eq!(
        dispatched.2,
        THREADS * EXITS_PER_THREAD,
        "no short-circuits here, so every exit emulates once"
    );
    assert_eq!(
        (dispatched.0, dispatched.1),
        by_scripts,
        "executions reported by dispatch == executions the scripts saw"
    );
    let total_changes = changes.load(Ordering::Relaxed);
    println!(
        "{} exits on {THREADS} threads, {total_changes} table changes, {} pre + {} post executions, all accounted for",
        THREADS * EXITS_PER_THREAD,
        dispatched.0,
        dispatched.1
    );
    assert!(total_changes >= MIN_CHANGES);
}
