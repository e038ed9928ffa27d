//! The hvscript JIT: compiles a script's IR ([`hvscript_lang::ir::Program`]) with Cranelift
//! into a [`CodeObject`] — position-independent machine code, one
//! `extern "C" fn(*mut ExecCtx) -> u64` per IR function, plus read-only data, slot counts,
//! the built-ins it calls, the error-site table and the usage sets a hypervisor vets it by.
//! The code-object format, the loader and the runner are the runtime's
//! (`hvscript-runtime`), which a hypervisor links without this crate.
//!
//! - [`codegen`]: IR -> Cranelift IR -> machine code ([`Jit`]); its `guest_memory` part
//!   translates memory accesses (the local stack inline, guest memory through the
//!   translation cache checked inline, the runtime on a miss).
//! - [`layout`]: the `ExecCtx` offsets the generated code uses.
//! - [`disasm`]: Intel-syntax disassembly for `--dump-asm`.
//!
//! Compiled code never refers to the stdlib: it calls built-ins through the table in the
//! context, which the runtime's [`Runner`](hvscript_runtime::Runner) provides:
//! ```no_run
//! # use hvscript_lang::{compile_source, CompileOptions, Globals};
//! let globals = Globals::default();
//! let program = compile_source("@rax = @rbx + 1;", &globals, &CompileOptions::default()).unwrap();
//! let object = hvscript_jit::Jit::new().unwrap().compile(&program).unwrap();
//! let code: hvscript_runtime::LoadedCode = hvscript_runtime::LoadedCode::load(object).unwrap();
//! // hvscript_runtime::Runner::new().run(&code.image(), &mut invocation)
//! ```
//!
//! Optimisation level: `none` (with the backtracking register allocator), by measurement
//! (release build on the 2-core development VM, `cargo bench -p hvscript-jit`; the
//! `compile_event_script`, `run_event_script` and `levels_*` groups compile and run a
//! typical 20-line event script, `benches/event_script.ds`, and the 1..1000 loop):
//!
//! | level | compile (text -> loaded) | event script run | 1..1000 loop | arith |
//! |---|---|---|---|---|
//! | `Fast` (none + single-pass regalloc) | 217 µs | 568 ns | 2.27 µs | 17.2 ns |
//! | `None` (none + backtracking) | 269 µs | 553 ns | 0.96 µs | 15.9 ns |
//! | `Speed` (speed + backtracking) | 384 µs | 566 ns | 0.95 µs | 17.2 ns |
//!
//! `speed` costs 40% more compile time and buys nothing measurable on script code, which
//! is dominated by loads, stores and calls through the context; the single-pass allocator
//! compiles faster but makes loops 2.4x slower, so it is only the choice for run-once
//! evaluation (`hvscript eval --jit` uses [`OptLevel::Fast`]). About 40 µs of the compile
//! time is the front end (parse, check, lower); loading costs ~1 µs (the runtime's
//! `ArenaMemory`: code goes into a dual-mapped executable arena, no system call per object).

pub mod codegen;
pub mod disasm;
pub mod layout;

pub use codegen::{Compiled, Jit, JitError, OptLevel};
pub use disasm::disassemble;
/// What [`Jit::compile`] produces (the runtime's format).
pub use hvscript_runtime::CodeObject;
