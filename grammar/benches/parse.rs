//! Parse throughput of the syntax front end.
//!
//! - `parse/event_script_20_lines`: one typical event script (`parse_checked`), time per parse.
//! - `parse/hyperdbg_suites`: every HyperDbg `.ds` semantic suite parsed one by one, as bytes
//!   per second (`Throughput::Bytes` over their summed size). The suites are separate
//!   `? { ... }` scripts, so they are parsed each on its own, never concatenated.
//! - `lex/hyperdbg_suites`: the lexer alone over the same input.
//!
//! Without the shared suite directory, the second and third run over the event script's body
//! repeated inside one big `{ }`.
//!
//! `cargo bench -p hvscript-grammar --bench parse`

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hvscript_grammar::lexer::Lexer;

/// 20 lines: an MSR-read event handler with globals, a loop, a branch on `$context`,
/// memory reads and a three-argument printf.
const EVENT_SCRIPT: &str = r#"{
    .hits = .hits + 1;
    interlocked_increment(&.total);
    msr = $context & 0xffffffff;
    if (msr == 0xc0000080 && $stage == 1) {
        printf("EFER read on core %x by pid %x, hit %llx\n", $core, $pid, .hits);
    } elsif (msr == 0xc0000082 || msr == 0xc0000084) {
        entry = poi(@rcx + 0x10);
        printf("LSTAR/SFMASK read: rcx=%llx entry=%llx tid=%x\n", @rcx, entry, $tid);
    } else {
        .other = .other + 1;
    }
    sum = 0;
    for (i = 0; i < 4; i++) {
        sum = sum + dq(@rsp + i * 8);
    }
    if (sum != 0 && .hits > 0n100) {
        pause();
    }
}"#;

/// The `.ds` semantic suites, or `None` when the shared directory is absent.
fn suites() -> Option<Vec<String>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/hyperdbg-suite/semantic-test-cases");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ds"))
        .collect();
    paths.sort();
    let texts: Vec<String> = paths
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    (!texts.is_empty()).then_some(texts)
}

/// The event script's body 200 times inside one `{ }`: the fallback large input.
fn repeated_event_script() -> Vec<String> {
    let body = EVENT_SCRIPT
        .trim()
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .expect("the event script is braced");
    let mut big = String::from("{\n");
    for _ in 0..200 {
        big.push_str(body);
    }
    big.push_str("}\n");
    vec![big]
}

fn bench(c: &mut Criterion) {
    hvscript_grammar::parse_checked(EVENT_SCRIPT).expect("the event script parses");
    let (label, inputs) = match suites() {
        Some(s) => ("hyperdbg_suites", s),
        None => ("repeated_event_script", repeated_event_script()),
    };
    for src in &inputs {
        hvscript_grammar::parse_checked(src).expect("every large input parses");
    }
    let bytes: u64 = inputs.iter().map(|s| s.len() as u64).sum();

    let mut g = c.benchmark_group("parse");
    g.throughput(Throughput::Bytes(EVENT_SCRIPT.len() as u64));
    g.bench_function("event_script_20_lines", |b| {
        b.iter(|| hvscript_grammar::parse_checked(black_box(EVENT_SCRIPT)))
    });
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(label, |b| {
        b.iter(|| {
            for src in &inputs {
                black_box(hvscript_grammar::parse_checked(black_box(src)).is_ok());
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("lex");
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function(label, |b| {
        b.iter(|| {
            for src in &inputs {
                // Counting consumes every token (errors included) without collecting them.
                black_box(Lexer::new(black_box(src)).count());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
