//! The event engine a hypervisor embeds, `no_std` + `alloc`.
//!
//! A hypervisor's VM-exit handlers describe each exit ([`Exit`]) and call
//! [`Engine::handle_exit`] with their emulation as a closure; the engine runs the matching
//! events' scripts in the pre stage, skips the emulation and every post execution if any
//! of them short-circuited, else emulates and runs the post stage. Users' HyperDbg command
//! lines are parsed by [`command`]; scripts arrive compiled, behind [`Script`]: a code
//! object loaded by the runtime (`hvscript-runtime`) is one as a [`CodeScript`]. A
//! hypervisor states what it supports as a [`Platform`] (data, no compiler), which a front
//! end checks scripts against before compiling and the hypervisor checks loaded code
//! against; a front end hands it a command line with a [`Prepared`]. Scripts' output is
//! recorded, not formatted, on the exit path ([`event_output`]): [`Engine::new`] formats
//! it as each execution ends, [`Engine::deferred`] leaves that to a consumer thread
//! ([`Engine::drain_output`]).

#![no_std]

extern crate alloc;

pub mod argument;
pub mod code_script;
pub mod command;
mod dispatch_index;
pub mod engine;
pub mod event;
pub mod event_output;
mod execution;
pub mod guest;
pub mod number;
pub mod output;
pub mod platform;
pub mod script;

pub use argument::{NoSymbols, SymbolMap, Symbols};
pub use code_script::CodeScript;
pub use command::{
    parse_command, parse_command_with, parse_event_command, parse_event_command_with, Command,
    CommandError, DebuggerCommand, Expr, OutputCommand, OutputKind, Target, DEBUGGER_COMMANDS,
};
pub use engine::{Engine, EngineError, EventTable, Exit, ExitOutcome, Listing};
pub use event::{
    Access, CounterValues, Event, EventKind, EventOptions, EventSpec, Filter, Stage, StageMode,
    EVENT_TAG_BASE,
};
pub use event_output::{OutputMode, DEFAULT_RING_BYTES};
pub use execution::EventRequest;
pub use guest::{GuestAccess, NoGuestMemory, PauseInfo};
pub use output::{NullSink, OutputContext, OutputSink};
pub use platform::{Platform, Prepared};
pub use script::{Script, ScriptFailure};
