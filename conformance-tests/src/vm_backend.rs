//! `--backend vm`: each case's script as a hypervisor runs it. The JIT's code object goes
//! to hv-kvm through the loader a hot-loaded command takes (`Vm::run_on_exit`: object
//! validation, global bindings, `hv_core::CodeScript`), and runs on a real port-I/O exit
//! of the demo guest, on the vCPU's thread, with the case's registers, pseudo-registers
//! and memory as its context. One VM per calling thread serves all its cases (so parallel
//! test threads never share globals); its guest loops until the process ends.

use std::time::Duration;

use hv_core::{Prepared, ScriptFailure};
use hv_kvm::probe::ExitContext;
use hv_kvm::{Vm, VmConfig};
use hvscript_lang::{Globals, Program};
use hvscript_runtime::Limits;

use crate::exec::Located;

thread_local! {
    static VM: std::cell::OnceCell<Result<&'static Vm, String>> = const { std::cell::OnceCell::new() };
}

/// The VM this thread's cases run on, started on first use; `Err` says why there is none
/// (no `/dev/kvm`).
fn vm() -> Result<&'static Vm, String> {
    VM.with(|cell| cell.get_or_init(start).clone())
}

fn start() -> Result<&'static Vm, String> {
    {
        hv_kvm::kvm_available()?;
        let config = VmConfig {
            vcpus: 1,
            iterations: 0,
            msr_rounds: 0,
            duration: None,
            timeout: Duration::from_secs(24 * 3600),
        };
        let vm =
            Vm::new(config, std::sync::Arc::new(hv_core::NullSink)).map_err(|e| e.to_string())?;
        let vm: &'static Vm = Box::leak(Box::new(vm));
        std::thread::Builder::new()
            .name("conformance vm".into())
            .spawn(move || vm.run())
            .map_err(|e| e.to_string())?;
        Ok(vm)
    }
}

/// Whether a VM can be had here (else the reason).
pub fn available() -> Result<(), String> {
    vm().map(|_| ())
}

/// Runs `program` (compiled from `src` against `globals`, which had no names before:
/// `fresh`) on a real exit. Returns the
/// registers and environment after it, and the located error that stopped it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run<E: hvscript_stdlib::Env + Send + 'static>(
    fresh: bool,
    src: &str,
    program: &Program,
    globals: &Globals,
    regs: hvscript_abi::GuestRegs,
    pseudo: hvscript_abi::PseudoValues,
    env: E,
    limits: Limits,
) -> Result<(hvscript_abi::GuestRegs, E, Option<Located>), String> {
    let vm = vm()?;
    if fresh {
        // A case's first run: a fresh session, as the interpreter's fresh globals.
        vm.reset_globals();
    }
    let bindings = globals.bindings();
    let object = hvscript_jit::Jit::new()
        .and_then(|mut j| j.compile(program))
        .map_err(|e| format!("jit: {e}"))?;
    let prepared = Prepared {
        code: Some(object.to_bytes()),
        script: None,
        globals: bindings,
    };
    let run = vm
        .run_on_exit(
            src,
            &prepared,
            ExitContext {
                regs,
                pseudo,
                env,
                limits,
            },
            Duration::from_secs(30),
        )
        .map_err(|e| format!("the VM refused the case: {}", e.message))?;
    let error = match run.result {
        Ok(()) => None,
        Err(ScriptFailure::FuelExhausted(Some(text)) | ScriptFailure::Error(text)) => {
            Some(locate(&text))
        }
        Err(ScriptFailure::FuelExhausted(None)) => Some(Located {
            line: 0,
            column: 0,
            message: format!(
                "fuel exhausted: {} loop iterations and calls without finishing",
                limits.fuel
            ),
        }),
    };
    Ok((run.regs, run.env, error))
}

/// `LINE:COL: message` of the command `?\n<src>` back to the script's own line and column.
fn locate(text: &str) -> Located {
    let mut parts = text.splitn(3, ':');
    let (line, col, rest) = (parts.next(), parts.next(), parts.next());
    match (
        line.and_then(|l| l.parse::<usize>().ok()),
        col.and_then(|c| c.parse::<usize>().ok()),
        rest,
    ) {
        (Some(l), Some(c), Some(m)) if l >= 2 => Located {
            line: l - 1,
            column: c,
            message: m.trim_start().to_string(),
        },
        _ => Located {
            line: 0,
            column: 0,
            message: text.to_string(),
        },
    }
}
