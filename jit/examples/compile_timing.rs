//! Breaks the compile latency of a typical event script into its phases (front end,
//! Cranelift, mapping): `cargo run --release -p hvscript-jit --example compile_timing`.
use std::time::Instant;

use hvscript_jit::{Jit, OptLevel};
use hvscript_lang::{compile_source, CompileOptions, Globals};
use hvscript_runtime::LoadedCode;

const EVENT: &str = include_str!("../benches/event_script.ds");

fn main() {
    for (name, src) in [("event script", EVENT), ("one statement", "@rax = 1;")] {
        println!("{name}:");
        for opt in [OptLevel::Fast, OptLevel::None, OptLevel::Speed] {
            let globals = Globals::default();
            let mut jit = Jit::with_opt_level(opt).unwrap();
            let (mut front, mut cl, mut load) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..2000 {
                let t0 = Instant::now();
                let p = compile_source(src, &globals, &CompileOptions::default()).unwrap();
                let t1 = Instant::now();
                let o = jit.compile(&p).unwrap();
                let t2 = Instant::now();
                let code: LoadedCode = LoadedCode::load(o).unwrap();
                drop(code);
                let t3 = Instant::now();
                front.push(t1 - t0);
                cl.push(t2 - t1);
                load.push(t3 - t2);
            }
            let med = |v: &mut Vec<std::time::Duration>| {
                v.sort();
                v[v.len() / 2]
            };
            println!(
                "{opt:?}: front end {:?}, cranelift {:?}, map+unmap {:?}",
                med(&mut front),
                med(&mut cl),
                med(&mut load)
            );
        }
    }
}
