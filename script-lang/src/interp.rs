//! The host interpreter: executes IR against a register file, pseudo-registers, the
//! global slots and a host environment. It is the reference semantics every other back
//! end is compared against.
//!
//! Locals of every call live in one local stack (HyperDbg's per-run script stack), which
//! reads as zeroed at the start of each run, so `&local` is a stable address for the run.
//! Only what the last run touched is cleared (the frames it handed out, or all of it once a
//! store or a built-in reached into the stack through an address), as the JIT's runner does:
//! a run does not pay for the whole 16 Ki-slot stack. Each loop back edge and each
//! user-function call burns one unit of fuel; running out, nesting calls too deep, or any
//! run-time error ends the run with a [`RunError`] that carries the source span.

use hvscript_abi::Builtin;
use hvscript_grammar::ast::Span;
use hvscript_runtime::ScriptMemory;
pub use hvscript_runtime::{Invocation, Limits, RunStats};
use hvscript_stdlib::{Arg, ArgList, MemFault};

use crate::ir::*;
pub use crate::run_error::{RunError, RunErrorKind};
use crate::semantics;

/// Reusable interpreter state (the local stack), so repeated runs do not allocate.
#[derive(Default)]
pub struct Interpreter {
    stack: Vec<u64>,
    /// Temporaries of finished calls, reused by the next ones (a run allocates none).
    spare_temps: Vec<Vec<u64>>,
    /// Slots `dirty..` of the stack are known to be zero.
    dirty: usize,
}

struct Machine<'p, 'i, 'a> {
    program: &'p Program,
    inv: &'i mut Invocation<'a>,
    stack: &'i mut [u64],
    sp: usize,
    /// One past the highest slot this run may have written.
    high: usize,
    depth: u32,
    fuel_used: u64,
    spare_temps: &'i mut Vec<Vec<u64>>,
}

/// Zeroes `words`: a few with plain stores, more with `fill` (a `memset` call). A frame
/// has a few words, and the library's `memset` for a few is not only a call: in some
/// processes it was slow enough to double a short script's run (a profile of one put 37%
/// of the run in it).
fn zero(words: &mut [u64]) {
    if words.len() <= 16 {
        for w in words {
            // SAFETY: `w` is a reference, valid and aligned for a write. (Volatile keeps the
            // compiler from making the loop a `memset` call again.)
            unsafe { core::ptr::write_volatile(w, 0) };
        }
    } else {
        words.fill(0);
    }
}

impl Interpreter {
    pub fn new() -> Interpreter {
        Interpreter::default()
    }

    /// Runs `program`'s body once.
    pub fn run(
        &mut self,
        program: &Program,
        inv: &mut Invocation<'_>,
    ) -> Result<RunStats, RunError> {
        let slots = inv.limits.stack_slots;
        if self.stack.len() != slots {
            self.stack = vec![0; slots];
        } else {
            zero(&mut self.stack[..self.dirty.min(slots)]);
        }
        let mut m = Machine {
            program,
            inv,
            stack: &mut self.stack,
            sp: 0,
            high: 0,
            depth: 0,
            fuel_used: 0,
            spare_temps: &mut self.spare_temps,
        };
        let result = m.call(0, &[], program.functions[0].span);
        self.dirty = m.high.min(slots);
        result?;
        Ok(RunStats {
            fuel_used: m.fuel_used,
        })
    }
}

/// The error of a failed [`Inst::Load`] or [`Inst::Store`].
pub(crate) fn memory_error(
    addr: u64,
    len: usize,
    write: bool,
    fault: MemFault,
    span: Span,
) -> RunError {
    RunError {
        kind: RunErrorKind::memory(addr, len, write, fault),
        span,
    }
}

impl Machine<'_, '_, '_> {
    /// The script's memory as typed accesses and built-ins see it.
    fn memory(&mut self) -> ScriptMemory<'_> {
        ScriptMemory::new(
            &mut *self.stack,
            self.inv.globals.slots(),
            &mut *self.inv.host,
        )
    }

    /// A write through `addr` may land anywhere in the stack if it points into it: the
    /// next run must then clear all of it.
    fn note_stack_address(&mut self, addr: u64) {
        let lo = self.stack.as_ptr() as u64;
        if (lo..lo + self.stack.len() as u64 * 8).contains(&addr) {
            self.high = self.stack.len();
        }
    }

    fn burn(&mut self, span: Span) -> Result<(), RunError> {
        if self.fuel_used >= self.inv.limits.fuel {
            return Err(RunError {
                kind: RunErrorKind::FuelExhausted(self.inv.limits.fuel),
                span,
            });
        }
        self.fuel_used += 1;
        Ok(())
    }

    fn call(&mut self, id: FuncId, args: &[u64], span: Span) -> Result<u64, RunError> {
        let func = &self.program.functions[id as usize];
        if self.depth >= self.inv.limits.max_call_depth {
            return Err(RunError {
                kind: RunErrorKind::CallDepth(self.inv.limits.max_call_depth),
                span,
            });
        }
        let fp = self.sp;
        let top = fp + func.locals as usize;
        if top > self.stack.len() {
            return Err(RunError {
                kind: RunErrorKind::StackExhausted(self.stack.len()),
                span,
            });
        }
        zero(&mut self.stack[fp..top]);
        self.stack[fp..fp + args.len()].copy_from_slice(args);
        self.sp = top;
        self.high = self.high.max(top);
        self.depth += 1;
        let mut temps = self.spare_temps.pop().unwrap_or_default();
        temps.clear();
        temps.resize(func.temps as usize, 0);
        let result = self.execute(func, fp, &mut temps);
        self.spare_temps.push(temps);
        self.depth -= 1;
        self.sp = fp;
        result
    }

    fn execute(&mut self, func: &Function, fp: usize, t: &mut [u64]) -> Result<u64, RunError> {
        let mut block = &func.blocks[0];
        loop {
            for inst in &block.insts {
                self.step(inst, fp, t)?;
            }
            block = match &block.term {
                Terminator::Jump(b) => &func.blocks[*b as usize],
                Terminator::Branch {
                    cond,
                    then,
                    otherwise,
                } => {
                    &func.blocks[if t[*cond as usize] != 0 {
                        *then
                    } else {
                        *otherwise
                    } as usize]
                }
                Terminator::Return(v) => return Ok(v.map_or(0, |v| t[v as usize])),
            };
        }
    }

    /// A built-in call, out of [`Machine::step`]'s way: its argument list would otherwise
    /// make every step's frame larger.
    #[inline(never)]
    fn call_builtin(
        &mut self,
        builtin: Builtin,
        args: &[Operand],
        t: &[u64],
        span: Span,
    ) -> Result<u64, RunError> {
        for a in args {
            if let Operand::Temp(x) = a {
                // A built-in given a stack address may write anywhere in the stack.
                self.note_stack_address(t[*x as usize]);
            }
        }
        let located = |e| RunError {
            kind: RunErrorKind::Builtin(e),
            span,
        };
        // Guest-memory reads and writes of as many values as they take, without an
        // argument list (anything else gets `call`'s checks and errors).
        let values = args.iter().all(|a| matches!(a, Operand::Temp(_)));
        if values
            && hvscript_stdlib::is_virtual_memory(builtin)
            && args.len() == builtin.shape().args.len()
        {
            let value = |i: usize| match args.get(i) {
                Some(Operand::Temp(x)) => t[*x as usize],
                _ => 0,
            };
            let mut mem = ScriptMemory::new(
                &mut *self.stack,
                self.inv.globals.slots(),
                &mut *self.inv.host,
            );
            return hvscript_stdlib::call_virtual_memory(builtin, &mut mem, value(0), value(1))
                .map_err(located);
        }
        let strings = &self.program.strings;
        let mut list = ArgList::new();
        for a in args {
            list.push(match a {
                Operand::Temp(x) => Arg::Val(t[*x as usize]),
                Operand::Str(s) => match &strings[*s as usize] {
                    StrLit::Narrow(b) => Arg::Str(b),
                    StrLit::Wide(w) => Arg::WStr(w),
                },
            });
        }
        let mut mem = ScriptMemory::new(
            &mut *self.stack,
            self.inv.globals.slots(),
            &mut *self.inv.host,
        );
        hvscript_stdlib::call(builtin, &mut mem, list.as_slice()).map_err(located)
    }

    fn step(&mut self, inst: &Inst, fp: usize, t: &mut [u64]) -> Result<(), RunError> {
        match inst {
            Inst::Const { dst, value } => t[*dst as usize] = *value,
            Inst::Copy { dst, src } => t[*dst as usize] = t[*src as usize],
            Inst::ReadReg { dst, reg } => t[*dst as usize] = self.inv.regs.read(*reg),
            Inst::WriteReg { reg, src } => self.inv.regs.write(*reg, t[*src as usize]),
            Inst::ReadPseudo { dst, reg } => t[*dst as usize] = self.inv.pseudo.get(*reg),
            Inst::LoadLocal { dst, slot } => t[*dst as usize] = self.stack[fp + *slot as usize],
            Inst::StoreLocal { slot, src } => self.stack[fp + *slot as usize] = t[*src as usize],
            Inst::LoadGlobal { dst, slot } => t[*dst as usize] = self.inv.globals.get(*slot),
            Inst::StoreGlobal { slot, src } => self.inv.globals.set(*slot, t[*src as usize]),
            Inst::AddrLocal { dst, slot } => {
                t[*dst as usize] = self.stack.as_ptr() as u64 + ((fp + *slot as usize) * 8) as u64
            }
            Inst::AddrGlobal { dst, slot } => {
                t[*dst as usize] = self.inv.globals.slot(*slot) as *const _ as u64
            }
            Inst::Unary { dst, op, ty, src } => {
                t[*dst as usize] = semantics::unary(*op, *ty, t[*src as usize])
            }
            Inst::Convert {
                dst,
                src,
                from,
                to,
                span,
            } => {
                t[*dst as usize] = semantics::convert(*from, *to, t[*src as usize])
                    .map_err(|kind| RunError { kind, span: *span })?
            }
            Inst::Binary {
                dst,
                op,
                ty,
                lhs,
                rhs,
                span,
            } => {
                t[*dst as usize] = semantics::binary(*op, *ty, t[*lhs as usize], t[*rhs as usize])
                    .map_err(|kind| RunError { kind, span: *span })?
            }
            Inst::Load {
                dst,
                addr,
                ty,
                span,
            } => {
                let addr = t[*addr as usize];
                let len = ty.bytes();
                let raw = self
                    .memory()
                    .read_le(addr, len)
                    .map_err(|fault| memory_error(addr, len, false, fault, *span))?;
                t[*dst as usize] = ty.normalize(raw);
            }
            Inst::Store {
                addr,
                src,
                ty,
                span,
            } => {
                let addr = t[*addr as usize];
                let len = ty.bytes();
                self.note_stack_address(addr);
                self.memory()
                    .write_le(addr, len, t[*src as usize])
                    .map_err(|fault| memory_error(addr, len, true, fault, *span))?;
            }
            Inst::CallBuiltin {
                dst,
                builtin,
                args,
                span,
            } => {
                let v = self.call_builtin(*builtin, args, t, *span)?;
                if let Some(d) = dst {
                    t[*d as usize] = v;
                }
            }
            Inst::CallUser {
                dst,
                func,
                args,
                span,
            } => {
                self.burn(*span)?;
                let values: Vec<u64> = args.iter().map(|a| t[*a as usize]).collect();
                let v = self.call(*func, &values, *span)?;
                if let Some(d) = dst {
                    t[*d as usize] = v;
                }
            }
            Inst::Fuel { span } => self.burn(*span)?,
        }
        Ok(())
    }
}
