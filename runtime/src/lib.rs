//! What it takes to RUN a compiled hvscript script, and nothing to compile one.
//!
//! The JIT (`hvscript-jit`, the compiler side) turns a script into a [`CodeObject`]; this
//! crate is everything after that, so a hypervisor can take `hvscript-runtime` + `hv-core`
//! and run scripts it is sent without linking the compiler (DESIGN.md, "Layout"):
//!
//! - [`object`]: the code object, its byte format and its validation; [`usage`]: what a
//!   code object says about itself for vetting (registers, pseudo-registers, `event_sc`);
//!   [`source_range`]: the byte ranges its error sites point at.
//! - [`memory`]: the [`ExecutableMemory`] a platform provides; on std hosts [`mmap`]
//!   ([`MmapMemory`]) and [`arena`] ([`ArenaMemory`], the default), over the page helpers
//!   in `page`; [`loaded`]: [`LoadedCode`], a validated object in such memory.
//! - [`runner`]: runs loaded code ([`Runner`] over a [`CodeImage`]) with an [`Invocation`]
//!   ([`invocation`]: registers, pseudo-registers, [`GlobalSlots`], environment, [`Limits`]);
//!   [`builtins`]: the table compiled code calls built-ins through, into
//!   `hvscript_stdlib::call`, and its typed-memory entry; `tlb`: the guest-memory
//!   translation cache compiled code checks inline, filled by those two.
//! - Deferred output, so an exit never formats: [`output_ring`] ([`OutputRing`], one per
//!   vCPU, and the [`Claim`] an exit stamps it with), [`output_record`] (what is in it),
//!   [`output_recorder`] ([`Recorder`]: printf as a format id and raw values, at event time),
//!   [`output_reader`] ([`OutputReader`]: the text, later, elsewhere) and [`printf_formats`]
//!   ([`FormatTable`]: formats by id).
//! - Shared with the interpreter (the reference semantics, in `hvscript-lang`), so both
//!   back ends route memory and word errors identically: [`script_memory`] (the script's
//!   own stack and globals versus guest memory), [`scalar`] (the types typed operations
//!   compute in), [`run_error`] (why a run stopped, in the words every back end uses).
//!
//! `no_std` + `alloc`; the `std` feature (default) adds the loaders that need an OS.

#![no_std]

extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "std")]
pub mod arena;
pub mod builtins;
pub mod globals;
pub mod invocation;
pub mod loaded;
pub mod memory;
#[cfg(feature = "std")]
pub mod mmap;
pub mod object;
pub mod output_reader;
pub mod output_record;
pub mod output_recorder;
pub mod output_ring;
#[cfg(feature = "std")]
mod page;
mod printf_call;
pub mod printf_formats;
pub mod run_error;
pub mod runner;
pub mod scalar;
pub mod script_memory;
pub mod source_range;
mod tlb;
pub mod usage;

#[cfg(feature = "std")]
pub use arena::ArenaMemory;
pub use builtins::builtin_table;
pub use globals::{GlobalSlots, DEFAULT_GLOBAL_SLOTS};
pub use invocation::{Invocation, Limits, RunStats};
pub use loaded::{DefaultMemory, LoadedCode};
pub use memory::{ExecutableMemory, LoadError, NoExecutableMemory};
#[cfg(feature = "std")]
pub use mmap::MmapMemory;
pub use object::{Arch, CodeObject, FormatError, FunctionInfo, StringInfo};
pub use output_reader::{Batch, OutputReader};
pub use output_recorder::Recorder;
pub use output_ring::{Claim, ClaimState, OutputRing};
pub use printf_formats::FormatTable;
pub use run_error::{RunError, RunErrorKind};
pub use runner::{CodeImage, Runner, RunnerError};
pub use scalar::{NumTy, ScalarTy};
pub use script_memory::ScriptMemory;
pub use source_range::SourceRange;
pub use usage::Usage;
