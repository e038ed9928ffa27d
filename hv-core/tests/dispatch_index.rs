//! The dispatch index finds exactly the events a scan of the whole table would, in the
//! same order (newest first), whatever the mix of exact keys, ranges, unfiltered events,
//! core filters and disabled events.

use std::sync::{Arc, Mutex};

use hv_core::*;
use hvscript_abi::GuestRegs;
use proptest::prelude::*;

#[derive(Default)]
struct Order(Mutex<Vec<u64>>);

impl OutputSink for Order {
    fn output(&self, _: u64, _: Stage, _: u32, _: &[u8]) {}
    fn triggered(&self, event_id: u64, stage: Stage, _: u32) {
        if stage == Stage::Pre {
            self.0.lock().unwrap().push(event_id);
        }
    }
}

fn command() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u16..6).prop_map(|p| format!("!ioin {p:x}")),
        Just("!ioin".to_string()),
        (0u16..6, 0u32..2).prop_map(|(p, c)| format!("!ioin {p:x} core {c}")),
        (
            0u64..0x40,
            0u64..0x20,
            prop_oneof![Just("r"), Just("w"), Just("rw")]
        )
            .prop_map(|(f, l, a)| format!("!monitor {a} {:x} l {:x}", 0x1000 + f, l + 1)),
        (0u16..6).prop_map(|p| format!("!ioout {p:x}")),
    ]
}

fn expected(engine: &Engine, specs: &[(u64, EventSpec, bool)], exit: &Exit) -> Vec<u64> {
    let _ = engine;
    let mut ids: Vec<u64> = specs
        .iter()
        .filter(|(_, s, enabled)| {
            *enabled
                && s.kind == exit.kind
                && s.options.core.is_none_or(|c| c == exit.core)
                && match &s.filter {
                    Filter::Any => true,
                    Filter::Value(v) => *v == exit.context,
                    Filter::Range {
                        access, from, to, ..
                    } => access.0 & exit.access.0 != 0 && (*from..=*to).contains(&exit.context),
                    _ => unreachable!(),
                }
        })
        .map(|(id, _, _)| *id)
        .collect();
    ids.reverse();
    ids
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_index_finds_what_a_scan_finds(
        commands in prop::collection::vec(command(), 0..60),
        disabled in prop::collection::vec(any::<bool>(), 60),
        cleared in prop::collection::vec(prop::bool::weighted(0.2), 60),
        exits in prop::collection::vec((0usize..3, 0u64..0x60, 0u32..2, 1u8..3), 1..40),
    ) {
        let order = Arc::new(Order::default());
        let engine = Engine::new(order.clone());
        let mut specs = Vec::new();
        for (i, c) in commands.iter().enumerate() {
            let spec = parse_event_command(c).unwrap();
            let id = engine.add(spec.clone(), None).unwrap();
            let enabled = !disabled[i];
            if !enabled {
                engine.apply(hvscript_stdlib::EventOp::Disable, Target::Id(id)).unwrap();
            }
            specs.push((id, spec, enabled));
            // Clear an earlier event now and then: later entries move in the table.
            if cleared[i] && i > 0 {
                let (old, _, enabled) = &mut specs[i / 2];
                if *enabled {
                    engine.apply(hvscript_stdlib::EventOp::Clear, Target::Id(*old)).unwrap();
                    *enabled = false;
                }
            }
        }
        for (kind, context, core, access) in exits {
            let kind = [EventKind::IoIn, EventKind::IoOut, EventKind::Monitor][kind];
            let context = if kind == EventKind::Monitor { 0x1000 + context } else { context % 8 };
            let mut exit = Exit::new(kind, core, context);
            exit.access = Access(access);
            order.0.lock().unwrap().clear();
            engine.handle_exit(&exit, &mut GuestRegs::default(), &mut NoGuestMemory, |_, _| {});
            let got = order.0.lock().unwrap().clone();
            prop_assert_eq!(got, expected(&engine, &specs, &exit), "{:?}", exit);
        }
    }
}
