//! Loading what a front end compiled ([`Prepared`]) for one command line: the VM's side of
//! "the front end compiles, the hypervisor loads". A script block in the line must come
//! with a compiled script and a compiled script needs a script block; object bytes are
//! validated and loaded by the runtime (`CodeObject::from_bytes`, `LoadedCode`), their
//! usage sets vetted against [`KvmPlatform`] (so a client that skipped the front end's
//! checks still cannot make hv-kvm silently drop a register write), and the global
//! bindings the script was compiled with accepted by the VM ([`Vm::bind_globals`]). Every
//! refusal is a [`CommandError`] located at the script in the line.

use std::sync::Arc;

use hv_core::{CodeScript, CommandError, EventKind, Prepared, Script};
use hvscript_runtime::{CodeObject, Limits, LoadedCode};

use crate::platform::KvmPlatform;
use crate::vmm::Vm;

/// A script's text range in its line, for errors.
fn script_range(line: &str, script: Option<&(String, usize)>) -> (usize, usize) {
    match script {
        Some((text, offset)) => (*offset, offset + text.len().max(1)),
        None => (0, line.trim_end().len().max(1)),
    }
}

impl Vm {
    /// The script to run for `line`'s script block (`script`: its text and offset), from
    /// what the front end `prepared`; `kind` is the event's (`None` for `? SCRIPT`).
    pub(crate) fn load_script(
        &self,
        line: &str,
        script: Option<&(String, usize)>,
        kind: Option<EventKind>,
        prepared: &Prepared,
        limits: Limits,
    ) -> Result<Option<Arc<dyn Script>>, CommandError> {
        let (start, end) = script_range(line, script);
        let at = |message: String| CommandError::new(message, start, end, None);
        let Some((_, offset)) = script else {
            if prepared.has_script() {
                return Err(at(
                    "a compiled script came with a command that has no script block".into(),
                ));
            }
            return Ok(None);
        };
        let loaded: Arc<dyn Script> = match (&prepared.code, &prepared.script) {
            (None, None) => {
                return Err(CommandError::new(
                    "this command's script was not compiled: hv-kvm loads code objects and \
                     does not compile",
                    start,
                    end,
                    Some(
                        "send it with `hvscript attach`, which compiles on the client side".into(),
                    ),
                ))
            }
            (Some(_), Some(_)) => {
                return Err(at(
                    "both a code object and an in-process script came with this \
                               command; send one"
                        .into(),
                ))
            }
            (None, Some(script)) => {
                self.bind_globals(&prepared.globals).map_err(at)?;
                script.clone()
            }
            (Some(bytes), None) => {
                let object = CodeObject::from_bytes(bytes)
                    .map_err(|e| at(format!("the code object was refused: {}", e.0)))?;
                if let Some(kind) = kind {
                    let refused =
                        hv_core::platform::usage_refusals(&KvmPlatform, kind, object.usage());
                    if let Some(first) = refused.into_iter().next() {
                        return Err(at(first));
                    }
                }
                let code: LoadedCode = LoadedCode::load(object)
                    .map_err(|e| at(format!("the code object could not be loaded: {e}")))?;
                self.bind_globals(&prepared.globals).map_err(at)?;
                Arc::new(
                    CodeScript::new(code, self.globals().clone(), limits)
                        .with_origin(line, *offset),
                )
            }
        };
        Ok(Some(loaded))
    }
}
