//! IR -> Cranelift IR -> machine code: the translation of one [`Program`] into a
//! [`CodeObject`].
//!
//! Every IR function becomes `extern "C" fn(*mut ExecCtx) -> u64` (see
//! [`hvscript_abi::exec`] for the contract). Temps are Cranelift variables (zero at entry,
//! as in the interpreter); locals live in the frame `stack[sp..sp + locals]` of the context's
//! local stack; registers, pseudo-registers and globals are loads and stores at fixed
//! offsets from the context's pointers. Built-ins are called through the context's table
//! with their argument values in a stack slot and a call-site record in the rodata
//! ([`hvscript_abi::exec::call_record`]); user functions through
//! the entry table. Failing operations check their operands, store the error kind, site id
//! and value in the context and return 0; callers check the context's error kind after
//! every call and return too. Nothing refers to an absolute address, and the compile fails
//! if Cranelift reports a relocation.
//!
//! Typed loads and stores and the guest-memory built-ins (`dq`, `eq`, ...) are translated
//! by [`guest_memory`]: inline where the local stack or the translation cache serves them,
//! through the runtime otherwise.

use std::collections::HashMap;
use std::fmt;

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F64, I16, I32, I64, I8};
use cranelift_codegen::ir::{
    AbiParam, BlockArg, Endianness, Function as ClifFunction, InstBuilder, MemFlagsData, Signature,
    StackSlotData, StackSlotKind, Type, UserFuncName, Value,
};
use cranelift_codegen::isa::{CallConv, OwnedTargetIsa, TargetFrontendConfig};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};

use hvscript_abi::exec::{
    call_record_head, packed_bytes, printf_values_call, ARG_NARROW_STR, ARG_VALUE, ARG_WIDE_STR,
    PRINTF_VALUES,
};
use hvscript_abi::{Builtin, ExecError, Register};
use hvscript_grammar::ast::Span;
use hvscript_lang::ir::{
    BinaryOp, Block as IrBlock, Function, Inst, NumTy, Operand, Program, ScalarTy, StrLit,
    Terminator, UnaryOp,
};
use hvscript_runtime::{Arch, CodeObject, FunctionInfo, SourceRange, StringInfo, Usage};

use crate::layout as off;

mod guest_memory;

/// Cranelift's optimisation level (and register allocator) for script code.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OptLevel {
    /// Cranelift `opt_level=none` with the single-pass register allocator: the fastest
    /// compile (~30% less than `None`), but loops run up to 2.5x slower. For run-once use
    /// (`hvscript eval --jit`).
    Fast,
    /// `opt_level=none` with the backtracking register allocator. The default, chosen by
    /// measurement (see the crate documentation).
    #[default]
    None,
    /// `opt_level=speed` (e-graph optimisations, GVN, LICM) with the backtracking allocator.
    Speed,
}

/// Why a program could not be compiled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JitError {
    /// The host has no supported code generator.
    Isa(String),
    /// The IR is malformed (an index out of range ...).
    InvalidProgram(String),
    /// Cranelift failed (verifier or code generation).
    Codegen(String),
    /// The generated code needs relocations, so it would not be position-independent.
    Relocations { function: u32, count: usize },
}

impl fmt::Display for JitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JitError::Isa(m) => write!(f, "no code generator for this host: {m}"),
            JitError::InvalidProgram(m) => write!(f, "invalid IR: {m}"),
            JitError::Codegen(m) => write!(f, "code generation failed: {m}"),
            JitError::Relocations { function, count } => write!(
                f,
                "function {function} needs {count} relocation(s); code objects must have none"
            ),
        }
    }
}

impl std::error::Error for JitError {}

fn invalid<T>(msg: impl Into<String>) -> Result<T, JitError> {
    Err(JitError::InvalidProgram(msg.into()))
}

/// A compiled program, with the Cranelift IR of each function when it was asked for.
pub struct Compiled {
    pub object: CodeObject,
    /// The Cranelift IR of every function (before code generation), if requested.
    pub clif: Option<String>,
}

/// The compiler: a target ISA and reusable Cranelift contexts.
pub struct Jit {
    isa: OwnedTargetIsa,
    arch: Arch,
    ctx: Context,
    fctx: FunctionBuilderContext,
    opt: OptLevel,
}

impl Jit {
    /// A compiler for this host at the default optimisation level.
    pub fn new() -> Result<Jit, JitError> {
        Jit::with_opt_level(OptLevel::default())
    }

    pub fn with_opt_level(opt: OptLevel) -> Result<Jit, JitError> {
        let arch = Arch::host().ok_or_else(|| JitError::Isa("unsupported architecture".into()))?;
        let mut flags = settings::builder();
        let set = |flags: &mut settings::Builder, k: &str, v: &str| {
            flags
                .set(k, v)
                .map_err(|e| JitError::Isa(format!("setting {k}={v}: {e}")))
        };
        set(
            &mut flags,
            "opt_level",
            match opt {
                OptLevel::Fast | OptLevel::None => "none",
                OptLevel::Speed => "speed",
            },
        )?;
        set(&mut flags, "is_pic", "true")?;
        set(
            &mut flags,
            "regalloc_algorithm",
            match opt {
                OptLevel::Fast => "single_pass",
                OptLevel::None | OptLevel::Speed => "backtracking",
            },
        )?;
        set(&mut flags, "unwind_info", "false")?;
        // Large frames are probed inline: an out-of-line probe would be a libcall.
        set(&mut flags, "enable_probestack", "true")?;
        set(&mut flags, "probestack_strategy", "inline")?;
        set(
            &mut flags,
            "enable_verifier",
            if cfg!(debug_assertions) {
                "true"
            } else {
                "false"
            },
        )?;
        let isa_builder = cranelift_native::builder().map_err(|e| JitError::Isa(e.to_string()))?;
        let isa = isa_builder
            .finish(settings::Flags::new(flags))
            .map_err(|e| JitError::Isa(e.to_string()))?;
        Ok(Jit {
            isa,
            arch,
            ctx: Context::new(),
            fctx: FunctionBuilderContext::new(),
            opt,
        })
    }

    pub fn opt_level(&self) -> OptLevel {
        self.opt
    }

    /// Compiles `program` into a code object.
    pub fn compile(&mut self, program: &Program) -> Result<CodeObject, JitError> {
        Ok(self.compile_inner(program, false)?.object)
    }

    /// Compiles `program`, keeping the Cranelift IR text of every function.
    pub fn compile_with_clif(&mut self, program: &Program) -> Result<Compiled, JitError> {
        self.compile_inner(program, true)
    }

    fn compile_inner(&mut self, program: &Program, keep_clif: bool) -> Result<Compiled, JitError> {
        let Some(main) = program.functions.first() else {
            return invalid("the program has no functions");
        };
        let (rodata, strings) = build_rodata(&program.strings)?;
        let mut shared = Shared {
            rodata,
            program,
            strings: &strings,
            sites: vec![range(main.span)],
            site_ids: HashMap::new(),
            builtins: Vec::new(),
            global_slots: program
                .globals
                .iter()
                .map(|(_, s)| s + 1)
                .max()
                .unwrap_or(0),
            call_conv: self.isa.default_call_conv(),
            locals_in_memory: takes_local_addresses(program),
        };
        let mut code = Vec::new();
        let mut functions = Vec::with_capacity(program.functions.len());
        let mut clif = keep_clif.then(String::new);
        for (i, func) in program.functions.iter().enumerate() {
            self.ctx.clear();
            self.ctx.func = ClifFunction::with_name_signature(
                UserFuncName::user(0, i as u32),
                entry_signature(shared.call_conv),
            );
            translate(
                &mut self.ctx.func,
                &mut self.fctx,
                &mut shared,
                func,
                self.isa.frontend_config(),
            )?;
            if let Some(text) = clif.as_mut() {
                text.push_str(&format!(
                    "; fn{i} {}\n{}\n",
                    func.name,
                    self.ctx.func.display()
                ));
            }
            let compiled = self
                .ctx
                .compile(&*self.isa, &mut ControlPlane::default())
                .map_err(|e| JitError::Codegen(format!("fn{i} {}: {:?}", func.name, e.inner)))?;
            let relocs = compiled.buffer.relocs().len();
            if relocs != 0 {
                return Err(JitError::Relocations {
                    function: i as u32,
                    count: relocs,
                });
            }
            let bytes = compiled.code_buffer();
            while code.len() % 16 != 0 {
                code.push(0xcc); // int3 padding between functions
            }
            functions.push(FunctionInfo {
                offset: code.len() as u32,
                size: bytes.len() as u32,
                params: func.params,
                locals: func.locals,
            });
            code.extend_from_slice(bytes);
        }
        let Shared {
            rodata,
            sites,
            mut builtins,
            global_slots,
            ..
        } = shared;
        builtins.sort_unstable();
        builtins.dedup();
        let usage = usage(program);
        let object = CodeObject {
            arch: self.arch,
            code,
            functions,
            rodata,
            strings,
            global_slots,
            builtins,
            sites,
            usage,
        };
        object
            .validate()
            .map_err(|e| JitError::Codegen(e.to_string()))?;
        Ok(Compiled { object, clif })
    }
}

/// A source span as the runtime's byte range.
fn range(span: Span) -> SourceRange {
    SourceRange::new(span.start, span.end)
}

/// What the program reads, writes and calls, over every instruction of every function
/// (reachable or not: the sets may only over-approximate).
fn usage(program: &Program) -> Usage {
    let mut usage = Usage::default();
    let insts = program
        .functions
        .iter()
        .flat_map(|f| &f.blocks)
        .flat_map(|b| &b.insts);
    for inst in insts {
        match inst {
            Inst::ReadReg { reg, .. } => usage.note_read(*reg),
            Inst::WriteReg { reg, .. } => usage.note_write(*reg),
            Inst::ReadPseudo { reg, .. } => usage.note_pseudo(*reg),
            Inst::CallBuiltin {
                builtin: Builtin::EventSc,
                ..
            } => usage.calls_event_sc = true,
            _ => {}
        }
    }
    usage
}

/// String literal records: u32 length, then the bytes (or UTF-16LE units), 4-aligned.
fn build_rodata(strings: &[StrLit]) -> Result<(Vec<u8>, Vec<StringInfo>), JitError> {
    let mut rodata = Vec::new();
    let mut infos = Vec::with_capacity(strings.len());
    for s in strings {
        while rodata.len() % 4 != 0 {
            rodata.push(0);
        }
        let offset = u32::try_from(rodata.len())
            .map_err(|_| JitError::InvalidProgram("string literals too large".into()))?;
        let wide = matches!(s, StrLit::Wide(_));
        let (len, data): (usize, Vec<u8>) = match s {
            StrLit::Narrow(b) => (b.len(), b.clone()),
            StrLit::Wide(w) => (w.len(), w.iter().flat_map(|u| u.to_le_bytes()).collect()),
        };
        let len = u32::try_from(len)
            .map_err(|_| JitError::InvalidProgram("string literal too long".into()))?;
        rodata.extend_from_slice(&len.to_le_bytes());
        rodata.extend_from_slice(&data);
        infos.push(StringInfo { offset, wide });
    }
    Ok((rodata, infos))
}

fn entry_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    sig.params.push(AbiParam::new(I64));
    sig.returns.push(AbiParam::new(I64));
    sig
}

fn builtin_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    for t in [I64, I64, I64] {
        sig.params.push(AbiParam::new(t));
    }
    sig.returns.push(AbiParam::new(I64));
    sig
}

/// [`hvscript_abi::MemoryFn`]: `(ctx, access, addr, value) -> u64`.
fn memory_signature(call_conv: CallConv) -> Signature {
    let mut sig = Signature::new(call_conv);
    for t in [I64, I64, I64, I64] {
        sig.params.push(AbiParam::new(t));
    }
    sig.returns.push(AbiParam::new(I64));
    sig
}

/// The function's reference to a signature, imported on first use.
fn imported(
    b: &mut FunctionBuilder<'_>,
    sig: &mut Option<cranelift_codegen::ir::SigRef>,
    make: impl FnOnce() -> Signature,
) -> cranelift_codegen::ir::SigRef {
    *sig.get_or_insert_with(|| b.import_signature(make()))
}

/// State shared by the functions of one program.
struct Shared<'p> {
    /// String records, then the call-site records translation appends.
    rodata: Vec<u8>,
    program: &'p Program,
    strings: &'p [StringInfo],
    sites: Vec<SourceRange>,
    site_ids: HashMap<(u32, u32), u32>,
    builtins: Vec<u16>,
    global_slots: u32,
    call_conv: CallConv,
    /// See [`takes_local_addresses`].
    locals_in_memory: bool,
}

impl Shared<'_> {
    /// Appends a built-in call-site record to the rodata; returns its offset.
    fn call_record(&mut self, site: u32, builtin: u16, tags: &[u8]) -> Result<u32, JitError> {
        while !self.rodata.len().is_multiple_of(4) {
            self.rodata.push(0);
        }
        let offset = u32::try_from(self.rodata.len())
            .map_err(|_| JitError::InvalidProgram("read-only data too large".into()))?;
        let nargs = u16::try_from(tags.len()).map_err(|_| {
            JitError::InvalidProgram("built-in call with too many arguments".into())
        })?;
        self.rodata
            .extend_from_slice(&call_record_head(site, builtin, nargs));
        self.rodata.extend_from_slice(tags);
        Ok(offset)
    }

    fn site(&mut self, span: Span) -> u32 {
        let next = self.sites.len() as u32;
        let id = *self.site_ids.entry((span.start, span.end)).or_insert(next);
        if id == next {
            self.sites.push(range(span));
        }
        id
    }
}

/// Memory flags: every access generated here is to valid, aligned memory.
fn mem() -> MemFlagsData {
    MemFlagsData::trusted()
}

/// For context fields that do not change during a run (the pointers).
fn mem_const() -> MemFlagsData {
    MemFlagsData::trusted().with_readonly()
}

/// A typed access inside the local stack: in bounds (checked first) but at any
/// alignment, in the byte order the interpreter's `from_le_bytes` gives the bytes.
fn mem_typed() -> MemFlagsData {
    MemFlagsData::new()
        .with_notrap()
        .with_endianness(Endianness::Little)
}

/// Per-function translation state.
struct FunctionTranslator<'a, 'b, 'p> {
    b: FunctionBuilder<'a>,
    shared: &'b mut Shared<'p>,
    func: &'b Function,
    temps: Vec<Variable>,
    /// Locals whose address is never taken live in Cranelift variables; the others in the
    /// frame, where `&x` can reach them.
    local_vars: Vec<Option<Variable>>,
    /// The temp defined by the last comparison of the current block and its `i8` result,
    /// so a branch on it tests the flags directly instead of a widened copy.
    last_cmp: Option<(u32, Value)>,
    /// Temps known to hold a constant in the current block (checks on constant shift
    /// counts and divisors are decided at compile time).
    known: Vec<Option<u64>>,
    blocks: Vec<cranelift_codegen::ir::Block>,
    ctx: Value,
    regs: Value,
    pseudo: Value,
    globals: Value,
    functions: Value,
    /// The local stack's address (when the function has a frame or typed accesses).
    stack: Value,
    /// This function's frame base (slot index) and its address.
    fp: Value,
    frame: Value,
    /// The shared error exit: (kind: i32, site: i32, value: i64) -> return 0.
    raise: cranelift_codegen::ir::Block,
    /// Return 0 after a callee or built-in recorded an error.
    unwind: cranelift_codegen::ir::Block,
    args_slot: Option<cranelift_codegen::ir::StackSlot>,
    builtin_sig: Option<cranelift_codegen::ir::SigRef>,
    entry_sig: Option<cranelift_codegen::ir::SigRef>,
    memory_sig: Option<cranelift_codegen::ir::SigRef>,
}

fn translate(
    clif: &mut ClifFunction,
    fctx: &mut FunctionBuilderContext,
    shared: &mut Shared<'_>,
    func: &Function,
    frontend: TargetFrontendConfig,
) -> Result<(), JitError> {
    check_function(shared.program, func)?;
    let mut b = FunctionBuilder::new(clif, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    let ctx = b.block_params(entry)[0];
    // Load only the context pointers this function uses (unused loads survive opt none).
    let uses = Uses::of(func, shared.locals_in_memory);
    let zero = b.ins().iconst(I64, 0);
    let load_ptr = |b: &mut FunctionBuilder<'_>, used: bool, o: i32| {
        if used {
            b.ins().load(I64, mem_const(), ctx, o)
        } else {
            zero
        }
    };
    let regs = load_ptr(&mut b, uses.regs, off::REGS);
    let pseudo = load_ptr(&mut b, uses.pseudo, off::PSEUDO);
    let globals = load_ptr(&mut b, uses.globals, off::GLOBALS);
    let functions = load_ptr(&mut b, uses.calls, off::FUNCTIONS);
    let stack = load_ptr(&mut b, uses.frame || uses.memory, off::STACK);
    let (fp, frame) = if uses.frame {
        let fp = b.ins().load(I64, mem(), ctx, off::SP);
        let fp_bytes = b.ins().ishl_imm_s(fp, 3);
        (fp, b.ins().iadd(stack, fp_bytes))
    } else {
        (zero, zero)
    };
    let temps: Vec<Variable> = (0..func.temps)
        .map(|_| {
            let v = b.declare_var(I64);
            b.def_var(v, zero);
            v
        })
        .collect();
    let local_vars: Vec<Option<Variable>> = (0..func.locals)
        .map(|slot| {
            if shared.locals_in_memory {
                return None;
            }
            let v = b.declare_var(I64);
            // Parameters arrive in the frame (the caller stored them); the rest start at 0.
            let init = if slot < func.params {
                b.ins().load(I64, mem(), frame, (slot * 8) as i32)
            } else {
                zero
            };
            b.def_var(v, init);
            Some(v)
        })
        .collect();
    // Blocks that only jump elsewhere are not created: branches go to where they lead.
    let targets = jump_targets(func);
    let mut blocks: Vec<_> = Vec::with_capacity(func.blocks.len());
    for (i, _) in func.blocks.iter().enumerate() {
        let block = if targets[i] == i {
            b.create_block()
        } else {
            // Filled in below once the final target's block exists.
            entry
        };
        blocks.push(block);
    }
    for i in 0..blocks.len() {
        blocks[i] = blocks[targets[i]];
    }
    b.ins().jump(blocks[0], &[]);

    let raise = b.create_block();
    b.append_block_param(raise, I32);
    b.append_block_param(raise, I32);
    b.append_block_param(raise, I64);
    b.set_cold_block(raise);
    let unwind = b.create_block();
    b.set_cold_block(unwind);

    let mut translator = FunctionTranslator {
        b,
        shared,
        func,
        known: vec![None; temps.len()],
        temps,
        local_vars,
        last_cmp: None,
        blocks,
        ctx,
        regs,
        pseudo,
        globals,
        functions,
        stack,
        fp,
        frame,
        raise,
        unwind,
        args_slot: None,
        builtin_sig: None,
        entry_sig: None,
        memory_sig: None,
    };
    for (i, block) in func.blocks.iter().enumerate() {
        if targets[i] == i {
            translator.block(i, block)?;
        }
    }
    // The error exits.
    let b = &mut translator.b;
    b.switch_to_block(raise);
    let p = b.block_params(raise).to_vec();
    b.ins().store(mem(), p[0], ctx, off::ERROR_KIND);
    b.ins().store(mem(), p[1], ctx, off::ERROR_SITE);
    b.ins().store(mem(), p[2], ctx, off::ERROR_VALUE);
    let z = b.ins().iconst(I64, 0);
    b.ins().return_(&[z]);
    b.switch_to_block(unwind);
    let z = b.ins().iconst(I64, 0);
    b.ins().return_(&[z]);
    translator.b.seal_all_blocks();
    translator.b.finalize(frontend);
    Ok(())
}

/// Which context pointers a function needs.
#[derive(Default)]
struct Uses {
    regs: bool,
    pseudo: bool,
    globals: bool,
    calls: bool,
    /// The local frame (locals, their addresses, calls).
    frame: bool,
    /// Typed loads and stores (the stack's address, for the inline path).
    memory: bool,
}

impl Uses {
    fn of(func: &Function, locals_in_memory: bool) -> Uses {
        let mut u = Uses::default();
        for inst in func.blocks.iter().flat_map(|b| &b.insts) {
            match inst {
                Inst::ReadReg { .. } | Inst::WriteReg { .. } => u.regs = true,
                Inst::ReadPseudo { .. } => u.pseudo = true,
                Inst::LoadGlobal { .. } | Inst::StoreGlobal { .. } | Inst::AddrGlobal { .. } => {
                    u.globals = true
                }
                Inst::LoadLocal { .. } | Inst::StoreLocal { .. } | Inst::AddrLocal { .. } => {
                    u.frame |= locals_in_memory
                }
                Inst::Load { .. } | Inst::Store { .. } => u.memory = true,
                Inst::CallUser { .. } => {
                    u.calls = true;
                    u.frame = true;
                }
                _ => {}
            }
        }
        // Parameters arrive in the frame.
        u.frame |= func.params > 0;
        u
    }
}

/// Whether the program takes the address of any local. Pointer arithmetic from one
/// local's address reaches the others and, past the frame, the frames of callees (which
/// the interpreter keeps after they return), so then every local of every function lives
/// in the local stack, exactly where the interpreter keeps it.
fn takes_local_addresses(program: &Program) -> bool {
    program
        .functions
        .iter()
        .flat_map(|f| &f.blocks)
        .flat_map(|b| &b.insts)
        .any(|i| matches!(i, Inst::AddrLocal { .. }))
}

/// For every block, the block control really reaches from it: an empty block ending in a
/// jump forwards to its target's target (cycles of empty blocks stay as they are).
fn jump_targets(func: &Function) -> Vec<usize> {
    let forward = |i: usize| match (&func.blocks[i].insts[..], &func.blocks[i].term) {
        ([], Terminator::Jump(t)) if i != 0 => Some(*t as usize),
        _ => None,
    };
    (0..func.blocks.len())
        .map(|start| {
            let mut at = start;
            for _ in 0..func.blocks.len() {
                match forward(at) {
                    Some(next) if next != start => at = next,
                    // `start` is on a cycle of empty blocks: keep it.
                    Some(_) => return start,
                    None => return at,
                }
            }
            start
        })
        .collect()
}

/// Checks every index in `func` so translation cannot go out of range.
fn check_function(program: &Program, func: &Function) -> Result<(), JitError> {
    let name = &func.name;
    if func.blocks.is_empty() {
        return invalid(format!("{name}: no blocks"));
    }
    if func.params > func.locals {
        return invalid(format!("{name}: more parameters than locals"));
    }
    let temp = |t: u32| {
        if t < func.temps {
            Ok(())
        } else {
            invalid(format!("{name}: temp t{t} out of range"))
        }
    };
    let local = |s: u32| {
        if s < func.locals {
            Ok(())
        } else {
            invalid(format!("{name}: local slot l{s} out of range"))
        }
    };
    let block = |b: u32| {
        if (b as usize) < func.blocks.len() {
            Ok(())
        } else {
            invalid(format!("{name}: block b{b} out of range"))
        }
    };
    for bl in &func.blocks {
        for inst in &bl.insts {
            match inst {
                Inst::Const { dst, .. }
                | Inst::ReadReg { dst, .. }
                | Inst::ReadPseudo { dst, .. } => temp(*dst)?,
                Inst::Copy { dst, src }
                | Inst::Unary { dst, src, .. }
                | Inst::Convert { dst, src, .. } => {
                    temp(*dst)?;
                    temp(*src)?
                }
                Inst::WriteReg { src, .. } | Inst::StoreGlobal { src, .. } => temp(*src)?,
                Inst::LoadLocal { dst, slot } | Inst::AddrLocal { dst, slot } => {
                    temp(*dst)?;
                    local(*slot)?
                }
                Inst::StoreLocal { slot, src } => {
                    temp(*src)?;
                    local(*slot)?
                }
                Inst::LoadGlobal { dst, .. } | Inst::AddrGlobal { dst, .. } => temp(*dst)?,
                Inst::Load { dst, addr, .. } => {
                    temp(*dst)?;
                    temp(*addr)?
                }
                Inst::Store { addr, src, .. } => {
                    temp(*addr)?;
                    temp(*src)?
                }
                Inst::Binary {
                    dst,
                    op,
                    ty,
                    lhs,
                    rhs,
                    ..
                } => {
                    if ty.is_float() && !op.works_on_floats() {
                        return invalid(format!("{name}: {op:?} on {ty}"));
                    }
                    temp(*dst)?;
                    temp(*lhs)?;
                    temp(*rhs)?
                }
                Inst::CallBuiltin { dst, args, .. } => {
                    if let Some(d) = dst {
                        temp(*d)?
                    }
                    for a in args {
                        match a {
                            Operand::Temp(t) => temp(*t)?,
                            Operand::Str(s) if (*s as usize) < program.strings.len() => {}
                            Operand::Str(s) => {
                                return invalid(format!("{name}: string {s} out of range"))
                            }
                        }
                    }
                }
                Inst::CallUser {
                    dst, func: f, args, ..
                } => {
                    if let Some(d) = dst {
                        temp(*d)?
                    }
                    for a in args {
                        temp(*a)?
                    }
                    match program.functions.get(*f as usize) {
                        Some(callee) if args.len() <= callee.locals as usize => {}
                        Some(_) => {
                            return invalid(format!(
                                "{name}: call to fn{f} with too many arguments"
                            ))
                        }
                        None => return invalid(format!("{name}: call to unknown fn{f}")),
                    }
                }
                Inst::Fuel { .. } => {}
            }
        }
        match &bl.term {
            Terminator::Jump(t) => block(*t)?,
            Terminator::Branch {
                cond,
                then,
                otherwise,
            } => {
                temp(*cond)?;
                block(*then)?;
                block(*otherwise)?
            }
            Terminator::Return(Some(t)) => temp(*t)?,
            Terminator::Return(None) => {}
        }
    }
    Ok(())
}

impl FunctionTranslator<'_, '_, '_> {
    fn get(&mut self, t: u32) -> Value {
        self.b.use_var(self.temps[t as usize])
    }

    fn set(&mut self, t: u32, v: Value) {
        self.b.def_var(self.temps[t as usize], v);
        self.known[t as usize] = None;
        if self.last_cmp.is_some_and(|(c, _)| c == t) {
            self.last_cmp = None;
        }
    }

    fn known(&self, t: u32) -> Option<u64> {
        self.known[t as usize]
    }

    /// Branches to the error exit with `kind`/`site`/`value` when `cond` is non-zero.
    fn raise_if(&mut self, cond: Value, kind: ExecError, site: u32, value: Value) {
        let cont = self.b.create_block();
        let k = self.b.ins().iconst(I32, kind as i64);
        let s = self.b.ins().iconst(I32, site as i64);
        let args = [
            BlockArg::Value(k),
            BlockArg::Value(s),
            BlockArg::Value(value),
        ];
        self.b.ins().brif(cond, self.raise, &args, cont, &[]);
        self.b.switch_to_block(cont);
    }

    /// Returns 0 at once if a callee or built-in recorded an error.
    fn unwind_on_error(&mut self) {
        let kind = self.b.ins().load(I32, mem(), self.ctx, off::ERROR_KIND);
        let cont = self.b.create_block();
        self.b.ins().brif(kind, self.unwind, &[], cont, &[]);
        self.b.switch_to_block(cont);
    }

    fn fuel(&mut self, site: u32) {
        let fuel = self.b.ins().load(I64, mem(), self.ctx, off::FUEL_LEFT);
        let empty = self.b.ins().icmp_imm_s(IntCC::Equal, fuel, 0);
        let zero = self.b.ins().iconst(I64, 0);
        self.raise_if(empty, ExecError::FuelExhausted, site, zero);
        let left = self.b.ins().iadd_imm_s(fuel, -1);
        self.b.ins().store(mem(), left, self.ctx, off::FUEL_LEFT);
    }

    fn block(&mut self, i: usize, block: &IrBlock) -> Result<(), JitError> {
        self.b.switch_to_block(self.blocks[i]);
        self.known.iter_mut().for_each(|k| *k = None);
        self.last_cmp = None;
        for inst in &block.insts {
            self.inst(inst)?;
        }
        match &block.term {
            Terminator::Jump(t) => {
                self.b.ins().jump(self.blocks[*t as usize], &[]);
            }
            Terminator::Branch {
                cond,
                then,
                otherwise,
            } => {
                let c = match self.last_cmp {
                    Some((t, flag)) if t == *cond => flag,
                    _ => self.get(*cond),
                };
                let (t, o) = (
                    self.blocks[*then as usize],
                    self.blocks[*otherwise as usize],
                );
                self.b.ins().brif(c, t, &[], o, &[]);
            }
            Terminator::Return(v) => {
                let v = match v {
                    Some(t) => self.get(*t),
                    None => self.b.ins().iconst(I64, 0),
                };
                self.b.ins().return_(&[v]);
            }
        }
        Ok(())
    }

    fn inst(&mut self, inst: &Inst) -> Result<(), JitError> {
        match inst {
            Inst::Const { dst, value } => {
                let v = self.b.ins().iconst(I64, *value as i64);
                self.set(*dst, v);
                self.known[*dst as usize] = Some(*value);
            }
            Inst::Copy { dst, src } => {
                let v = self.get(*src);
                let k = self.known(*src);
                self.set(*dst, v);
                self.known[*dst as usize] = k;
            }
            Inst::ReadReg { dst, reg } => {
                let v = self.read_reg(*reg);
                self.set(*dst, v);
            }
            Inst::WriteReg { reg, src } => {
                let v = self.get(*src);
                self.write_reg(*reg, v);
            }
            Inst::ReadPseudo { dst, reg } => {
                let o = (reg.index() * 8) as i32;
                let v = self.b.ins().load(I64, mem(), self.pseudo, o);
                self.set(*dst, v);
            }
            Inst::LoadLocal { dst, slot } => {
                let v = match self.local_vars[*slot as usize] {
                    Some(var) => self.b.use_var(var),
                    None => self
                        .b
                        .ins()
                        .load(I64, mem(), self.frame, (*slot * 8) as i32),
                };
                self.set(*dst, v);
            }
            Inst::StoreLocal { slot, src } => {
                let v = self.get(*src);
                match self.local_vars[*slot as usize] {
                    Some(var) => self.b.def_var(var, v),
                    None => {
                        self.b.ins().store(mem(), v, self.frame, (*slot * 8) as i32);
                    }
                }
            }
            Inst::LoadGlobal { dst, slot } => {
                self.note_global(*slot);
                let v = self
                    .b
                    .ins()
                    .load(I64, mem(), self.globals, global_offset(*slot)?);
                self.set(*dst, v);
            }
            Inst::StoreGlobal { slot, src } => {
                self.note_global(*slot);
                let v = self.get(*src);
                self.b
                    .ins()
                    .store(mem(), v, self.globals, global_offset(*slot)?);
            }
            Inst::AddrLocal { dst, slot } => {
                let v = match *slot {
                    0 => self.frame,
                    s => self.b.ins().iadd_imm_s(self.frame, (s as i64) * 8),
                };
                self.set(*dst, v);
            }
            Inst::AddrGlobal { dst, slot } => {
                self.note_global(*slot);
                let v = match global_offset(*slot)? {
                    0 => self.globals,
                    o => self.b.ins().iadd_imm_s(self.globals, o as i64),
                };
                self.set(*dst, v);
            }
            Inst::Unary { dst, op, ty, src } => {
                let a = self.get(*src);
                let v = self.unary(*op, *ty, a);
                self.set(*dst, v);
            }
            Inst::Binary {
                dst,
                op,
                ty,
                lhs,
                rhs,
                span,
            } => {
                let (a, c) = (self.get(*lhs), self.get(*rhs));
                let (v, flag) = if ty.is_float() {
                    self.float_binary(*op, *ty, a, c, *span)
                } else {
                    self.binary(*op, *ty, a, c, self.known(*rhs), *span)
                };
                self.set(*dst, v);
                if let Some(flag) = flag {
                    self.last_cmp = Some((*dst, flag));
                }
            }
            Inst::Convert {
                dst,
                src,
                from,
                to,
                span,
            } => {
                let a = self.get(*src);
                let v = self.convert(*from, *to, a, *span);
                self.set(*dst, v);
            }
            Inst::Load {
                dst,
                addr,
                ty,
                span,
            } => {
                let a = self.get(*addr);
                let v = self.typed_load(*ty, a, self.known(*addr), *span);
                self.set(*dst, v);
            }
            Inst::Store {
                addr,
                src,
                ty,
                span,
            } => {
                let (a, v) = (self.get(*addr), self.get(*src));
                self.typed_store(*ty, a, self.known(*addr), v, *span);
            }
            Inst::CallBuiltin {
                dst,
                builtin,
                args,
                span,
            } => {
                let v = self.builtin(*builtin, args, *span)?;
                if let Some(d) = dst {
                    self.set(*d, v);
                }
            }
            Inst::CallUser {
                dst,
                func,
                args,
                span,
            } => {
                let v = self.call_user(*func, args, *span);
                if let Some(d) = dst {
                    self.set(*d, v);
                }
            }
            Inst::Fuel { span } => {
                let site = self.shared.site(*span);
                self.fuel(site);
            }
        }
        Ok(())
    }

    fn note_global(&mut self, slot: u32) {
        self.shared.global_slots = self.shared.global_slots.max(slot.saturating_add(1));
    }

    fn read_reg(&mut self, reg: Register) -> Value {
        let f = reg.field();
        let v = self
            .b
            .ins()
            .load(I64, mem(), self.regs, f.byte_offset() as i32);
        let v = if f.shift > 0 {
            self.b.ins().ushr_imm_s(v, f.shift as i64)
        } else {
            v
        };
        if f.bits < 64 {
            self.b.ins().band_imm_s(v, f.mask() as i64)
        } else {
            v
        }
    }

    fn write_reg(&mut self, reg: Register, value: Value) {
        let f = reg.field();
        let o = f.byte_offset() as i32;
        if f.bits >= 64 {
            self.b.ins().store(mem(), value, self.regs, o);
            return;
        }
        let mask = f.mask() << f.shift;
        let old = self.b.ins().load(I64, mem(), self.regs, o);
        let kept = self.b.ins().band_imm_s(old, !mask as i64);
        let shifted = if f.shift > 0 {
            self.b.ins().ishl_imm_s(value, f.shift as i64)
        } else {
            value
        };
        let new = self.b.ins().band_imm_s(shifted, mask as i64);
        let merged = self.b.ins().bor(kept, new);
        self.b.ins().store(mem(), merged, self.regs, o);
    }

    /// Truncates a 64-bit word to the integer type `ty` and extends it back.
    fn normalize(&mut self, ty: NumTy, v: Value) -> Value {
        self.normalize_scalar(ty.scalar(), v)
    }

    fn unary(&mut self, op: UnaryOp, ty: NumTy, a: Value) -> Value {
        match (op, ty) {
            (UnaryOp::Neg | UnaryOp::LogNot, NumTy::F32 | NumTy::F64) => {
                let x = self.word_to_float(ty, a);
                if op == UnaryOp::Neg {
                    let r = self.b.ins().fneg(x);
                    self.float_to_word(ty, r)
                } else {
                    let zero = self.float_zero(ty);
                    let c = self.b.ins().fcmp(FloatCC::Equal, x, zero);
                    self.b.ins().uextend(I64, c)
                }
            }
            (UnaryOp::Not, NumTy::F32) => {
                let r = self.b.ins().bnot(a);
                self.b.ins().band_imm_s(r, 0xffff_ffff)
            }
            (UnaryOp::Neg, _) => {
                let r = self.b.ins().ineg(a);
                self.normalize(ty, r)
            }
            (UnaryOp::Not, _) => {
                let r = self.b.ins().bnot(a);
                self.normalize(ty, r)
            }
            (UnaryOp::LogNot, _) => {
                let c = self.b.ins().icmp_imm_s(IntCC::Equal, a, 0);
                self.b.ins().uextend(I64, c)
            }
        }
    }

    /// The integer result, and for comparisons also the `i8` flag it widens.
    fn binary(
        &mut self,
        op: BinaryOp,
        ty: NumTy,
        a: Value,
        c: Value,
        rhs: Option<u64>,
        span: Span,
    ) -> (Value, Option<Value>) {
        let signed = ty.is_signed();
        let cc = match (op, signed) {
            (BinaryOp::Eq, _) => IntCC::Equal,
            (BinaryOp::Ne, _) => IntCC::NotEqual,
            (BinaryOp::Lt, true) => IntCC::SignedLessThan,
            (BinaryOp::Le, true) => IntCC::SignedLessThanOrEqual,
            (BinaryOp::Gt, true) => IntCC::SignedGreaterThan,
            (BinaryOp::Ge, true) => IntCC::SignedGreaterThanOrEqual,
            (BinaryOp::Lt, false) => IntCC::UnsignedLessThan,
            (BinaryOp::Le, false) => IntCC::UnsignedLessThanOrEqual,
            (BinaryOp::Gt, false) => IntCC::UnsignedGreaterThan,
            (BinaryOp::Ge, false) => IntCC::UnsignedGreaterThanOrEqual,
            _ => return (self.arith(op, ty, a, c, rhs, span), None),
        };
        // A constant `c` is still an `iconst`, which instruction selection folds.
        let flag = self.b.ins().icmp(cc, a, c);
        (self.b.ins().uextend(I64, flag), Some(flag))
    }

    fn arith(
        &mut self,
        op: BinaryOp,
        ty: NumTy,
        a: Value,
        c: Value,
        rhs: Option<u64>,
        span: Span,
    ) -> Value {
        let signed = ty.is_signed();
        let bits = ty.bits() as u64;
        let min: i64 = if bits == 32 {
            i32::MIN as i64
        } else {
            i64::MIN
        };
        match op {
            BinaryOp::Add => {
                let r = self.b.ins().iadd(a, c);
                self.normalize(ty, r)
            }
            BinaryOp::Sub => {
                let r = self.b.ins().isub(a, c);
                self.normalize(ty, r)
            }
            BinaryOp::Mul => {
                let r = self.b.ins().imul(a, c);
                self.normalize(ty, r)
            }
            // A constant divisor other than 0 (and -1 when signed) cannot fail.
            BinaryOp::Div | BinaryOp::Rem
                if rhs.is_some_and(|d| d != 0 && !(signed && d as i64 == -1)) =>
            {
                self.divide(op, signed, a, c)
            }
            BinaryOp::Div | BinaryOp::Rem => {
                let site = self.shared.site(span);
                let zero = self.b.ins().iconst(I64, 0);
                let is_zero = self.b.ins().icmp_imm_s(IntCC::Equal, c, 0);
                self.raise_if(is_zero, ExecError::DivisionByZero, site, zero);
                if signed {
                    let is_min = self.b.ins().icmp_imm_s(IntCC::Equal, a, min);
                    let is_m1 = self.b.ins().icmp_imm_s(IntCC::Equal, c, -1);
                    let both = self.b.ins().band(is_min, is_m1);
                    let kind = if bits == 32 {
                        ExecError::DivisionOverflow32
                    } else {
                        ExecError::DivisionOverflow
                    };
                    self.raise_if(both, kind, site, zero);
                }
                self.divide(op, signed, a, c)
            }
            BinaryOp::Shl | BinaryOp::Shr => {
                // A constant count in range cannot fail.
                if rhs.is_none_or(|n| n >= bits) {
                    let site = self.shared.site(span);
                    let big =
                        self.b
                            .ins()
                            .icmp_imm_s(IntCC::UnsignedGreaterThan, c, bits as i64 - 1);
                    let kind = if bits == 32 {
                        ExecError::ShiftCount32
                    } else {
                        ExecError::ShiftCount
                    };
                    self.raise_if(big, kind, site, c);
                }
                match (op, signed) {
                    (BinaryOp::Shl, _) => {
                        let r = self.b.ins().ishl(a, c);
                        self.normalize(ty, r)
                    }
                    // Normalised values: a 64-bit shift is the narrower type's shift.
                    (_, true) => self.b.ins().sshr(a, c),
                    (_, false) => self.b.ins().ushr(a, c),
                }
            }
            BinaryOp::And => self.b.ins().band(a, c),
            BinaryOp::Or => self.b.ins().bor(a, c),
            BinaryOp::Xor => self.b.ins().bxor(a, c),
            BinaryOp::Eq
            | BinaryOp::Ne
            | BinaryOp::Lt
            | BinaryOp::Le
            | BinaryOp::Gt
            | BinaryOp::Ge => unreachable!("comparisons are handled by `binary`"),
        }
    }

    /// Division of normalised operands the caller has checked (the result is normalised).
    fn divide(&mut self, op: BinaryOp, signed: bool, a: Value, c: Value) -> Value {
        match (op, signed) {
            (BinaryOp::Div, true) => self.b.ins().sdiv(a, c),
            (BinaryOp::Div, false) => self.b.ins().udiv(a, c),
            (_, true) => self.b.ins().srem(a, c),
            (_, false) => self.b.ins().urem(a, c),
        }
    }

    fn float_type(ty: NumTy) -> Type {
        if ty == NumTy::F32 {
            F32
        } else {
            F64
        }
    }

    /// The float a word holds (a `float` in its low 32 bits).
    fn word_to_float(&mut self, ty: NumTy, v: Value) -> Value {
        if ty == NumTy::F32 {
            let low = self.b.ins().ireduce(I32, v);
            self.b.ins().bitcast(F32, MemFlagsData::new(), low)
        } else {
            self.b.ins().bitcast(F64, MemFlagsData::new(), v)
        }
    }

    /// The word that holds a float.
    fn float_to_word(&mut self, ty: NumTy, x: Value) -> Value {
        if ty == NumTy::F32 {
            let low = self.b.ins().bitcast(I32, MemFlagsData::new(), x);
            self.b.ins().uextend(I64, low)
        } else {
            self.b.ins().bitcast(I64, MemFlagsData::new(), x)
        }
    }

    fn float_zero(&mut self, ty: NumTy) -> Value {
        if ty == NumTy::F32 {
            self.b.ins().f32const(0.0)
        } else {
            self.b.ins().f64const(0.0)
        }
    }

    /// Stops the script unless `x` is finite.
    fn check_finite(&mut self, ty: NumTy, x: Value, site: u32) {
        let max = if ty == NumTy::F32 {
            self.b.ins().f32const(f32::MAX)
        } else {
            self.b.ins().f64const(f64::MAX)
        };
        let magnitude = self.b.ins().fabs(x);
        // NaN is unordered: the condition holds for it too.
        let bad = self
            .b
            .ins()
            .fcmp(FloatCC::UnorderedOrGreaterThan, magnitude, max);
        let zero = self.b.ins().iconst(I64, 0);
        self.raise_if(bad, ExecError::FloatRange, site, zero);
    }

    fn float_binary(
        &mut self,
        op: BinaryOp,
        ty: NumTy,
        a: Value,
        c: Value,
        span: Span,
    ) -> (Value, Option<Value>) {
        let (x, y) = (self.word_to_float(ty, a), self.word_to_float(ty, c));
        let cc = match op {
            BinaryOp::Eq => Some(FloatCC::Equal),
            BinaryOp::Ne => Some(FloatCC::NotEqual),
            BinaryOp::Lt => Some(FloatCC::LessThan),
            BinaryOp::Le => Some(FloatCC::LessThanOrEqual),
            BinaryOp::Gt => Some(FloatCC::GreaterThan),
            BinaryOp::Ge => Some(FloatCC::GreaterThanOrEqual),
            _ => None,
        };
        if let Some(cc) = cc {
            let flag = self.b.ins().fcmp(cc, x, y);
            return (self.b.ins().uextend(I64, flag), Some(flag));
        }
        let site = self.shared.site(span);
        let r = match op {
            BinaryOp::Add => self.b.ins().fadd(x, y),
            BinaryOp::Sub => self.b.ins().fsub(x, y),
            BinaryOp::Mul => self.b.ins().fmul(x, y),
            _ => {
                // Division (check_function rejected the operations floats do not have).
                let zero = self.float_zero(ty);
                let is_zero = self.b.ins().fcmp(FloatCC::Equal, y, zero);
                let z = self.b.ins().iconst(I64, 0);
                self.raise_if(is_zero, ExecError::DivisionByZero, site, z);
                self.b.ins().fdiv(x, y)
            }
        };
        self.check_finite(ty, r, site);
        (self.float_to_word(ty, r), None)
    }

    fn convert(&mut self, from: ScalarTy, to: ScalarTy, v: Value, span: Span) -> Value {
        let num = |t: ScalarTy| {
            if t == ScalarTy::F32 {
                NumTy::F32
            } else {
                NumTy::F64
            }
        };
        match (from.is_float(), to.is_float()) {
            (false, false) => self.normalize_scalar(to, v),
            (false, true) => {
                let ft = Self::float_type(num(to));
                let x = if from.is_signed() {
                    self.b.ins().fcvt_from_sint(ft, v)
                } else {
                    self.b.ins().fcvt_from_uint(ft, v)
                };
                self.float_to_word(num(to), x)
            }
            (true, true) => {
                let x = self.word_to_float(num(from), v);
                match (from, to) {
                    (ScalarTy::F32, ScalarTy::F64) => {
                        let r = self.b.ins().fpromote(F64, x);
                        self.float_to_word(NumTy::F64, r)
                    }
                    (ScalarTy::F64, ScalarTy::F32) => {
                        let r = self.b.ins().fdemote(F32, x);
                        // Overflow of a finite double to an infinite float is an error.
                        let site = self.shared.site(span);
                        let inf32 = self.b.ins().f32const(f32::INFINITY);
                        let inf64 = self.b.ins().f64const(f64::INFINITY);
                        let r_abs = self.b.ins().fabs(r);
                        let x_abs = self.b.ins().fabs(x);
                        let r_inf = self.b.ins().fcmp(FloatCC::Equal, r_abs, inf32);
                        let x_finite = self.b.ins().fcmp(FloatCC::LessThan, x_abs, inf64);
                        let bad = self.b.ins().band(r_inf, x_finite);
                        let zero = self.b.ins().iconst(I64, 0);
                        self.raise_if(bad, ExecError::FloatRange, site, zero);
                        self.float_to_word(NumTy::F32, r)
                    }
                    _ => v,
                }
            }
            (true, false) => {
                let x = self.word_to_float(num(from), v);
                let x = if from == ScalarTy::F32 {
                    self.b.ins().fpromote(F64, x)
                } else {
                    x
                };
                if to == ScalarTy::Bool {
                    let zero = self.b.ins().f64const(0.0);
                    let c = self.b.ins().fcmp(FloatCC::NotEqual, x, zero);
                    return self.b.ins().uextend(I64, c);
                }
                let t = self.b.ins().trunc(x);
                let bits = to.bits() as i32;
                let (lo, hi) = if to.is_signed() {
                    (-(2f64.powi(bits - 1)), 2f64.powi(bits - 1))
                } else {
                    (0.0, 2f64.powi(bits))
                };
                let lo = self.b.ins().f64const(lo);
                let hi = self.b.ins().f64const(hi);
                // NaN is unordered: both comparisons fail for it.
                let above = self.b.ins().fcmp(FloatCC::GreaterThanOrEqual, t, lo);
                let below = self.b.ins().fcmp(FloatCC::LessThan, t, hi);
                let fits = self.b.ins().band(above, below);
                let bad = self.b.ins().bxor_imm_s(fits, 1);
                let site = self.shared.site(span);
                let code = self.b.ins().iconst(I64, to.code() as i64);
                self.raise_if(bad, ExecError::FloatConversion, site, code);
                if to == ScalarTy::U64 {
                    self.b.ins().fcvt_to_uint(I64, t)
                } else {
                    // In range, so the 64-bit conversion is exact and already normalised.
                    self.b.ins().fcvt_to_sint(I64, t)
                }
            }
        }
    }

    fn normalize_scalar(&mut self, to: ScalarTy, v: Value) -> Value {
        let (narrow, signed) = match to {
            ScalarTy::Bool => {
                let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0);
                return self.b.ins().uextend(I64, c);
            }
            ScalarTy::I8 => (I8, true),
            ScalarTy::U8 => (I8, false),
            ScalarTy::I16 => (I16, true),
            ScalarTy::U16 => (I16, false),
            ScalarTy::I32 => (I32, true),
            ScalarTy::U32 => (I32, false),
            _ => return v,
        };
        let low = self.b.ins().ireduce(narrow, v);
        if signed {
            self.b.ins().sextend(I64, low)
        } else {
            self.b.ins().uextend(I64, low)
        }
    }

    /// A built-in call through its table entry; a printf of values alone goes through
    /// [`PRINTF_VALUES`] instead, with its format passed as [`packed_bytes`] (the call-site
    /// record is written all the same, for errors and the general path).
    fn call_builtin(&mut self, id: u16, args: &[Operand], span: Span) -> Result<Value, JitError> {
        let printf_format = self.printf_of_values(id, args);
        let site = self.shared.site(span);
        self.shared.builtins.push(id);
        let mut tags = Vec::with_capacity(args.len());
        let addr = if args.is_empty() {
            self.b.ins().iconst(I64, 0)
        } else {
            let slot = self.args_slot();
            let base = self.b.ins().stack_addr(I64, slot, 0);
            for (i, a) in args.iter().enumerate() {
                let (tag, value) = match a {
                    Operand::Temp(t) => (ARG_VALUE, self.get(*t)),
                    Operand::Str(s) => {
                        let info = self.shared.strings[*s as usize];
                        let tag = if info.wide {
                            ARG_WIDE_STR
                        } else {
                            ARG_NARROW_STR
                        };
                        let word = match printf_format {
                            Some(format) if i == 0 => format,
                            _ => u64::from(info.offset),
                        };
                        (tag, self.b.ins().iconst(I64, word as i64))
                    }
                };
                tags.push(tag);
                self.b.ins().store(mem(), value, base, (i * 8) as i32);
            }
            base
        };
        let record = self.shared.call_record(site, id, &tags)?;
        Ok(match printf_format {
            Some(_) => {
                let values = u32::try_from(args.len() - 1).map_err(|_| {
                    JitError::InvalidProgram("printf with too many arguments".into())
                })?;
                self.call_table(PRINTF_VALUES, printf_values_call(record, values), addr)
            }
            None => self.call_table(usize::from(id), u64::from(record), addr),
        })
    }

    /// Calls entry `entry` of the built-in table with `(ctx, call, args)`, then leaves if
    /// it stopped the run.
    fn call_table(&mut self, entry: usize, call: u64, args: Value) -> Value {
        let call_conv = self.shared.call_conv;
        let sig = imported(&mut self.b, &mut self.builtin_sig, || {
            builtin_signature(call_conv)
        });
        // The table's address is loaded here, not once on entry: most built-in calls are a
        // memory access's miss path, and a value held from entry across them costs every
        // run of the function a callee-saved register.
        let table = self.b.ins().load(I64, mem_const(), self.ctx, off::BUILTINS);
        let fnptr = self
            .b
            .ins()
            .load(I64, mem_const(), table, (entry * 8) as i32);
        let call = self.b.ins().iconst(I64, call as i64);
        let inst = self
            .b
            .ins()
            .call_indirect(sig, fnptr, &[self.ctx, call, args]);
        let v = self.b.inst_results(inst)[0];
        self.unwind_on_error();
        v
    }

    /// The format's bytes in the rodata ([`packed_bytes`]) when this is a printf of a
    /// narrow literal format and values alone, which has an entry of its own.
    fn printf_of_values(&self, id: u16, args: &[Operand]) -> Option<u64> {
        let (Operand::Str(s), values) = args.split_first()? else {
            return None;
        };
        if id != Builtin::Printf.id() || !values.iter().all(|a| matches!(a, Operand::Temp(_))) {
            return None;
        }
        let info = self.shared.strings[*s as usize];
        let StrLit::Narrow(bytes) = &self.shared.program.strings[*s as usize] else {
            return None;
        };
        // The record's u32 length, then the bytes.
        Some(packed_bytes(
            info.offset.checked_add(4)?,
            u32::try_from(bytes.len()).ok()?,
        ))
    }

    /// One stack slot per function, big enough for the widest built-in call.
    fn args_slot(&mut self) -> cranelift_codegen::ir::StackSlot {
        if let Some(s) = self.args_slot {
            return s;
        }
        let max_args = self
            .func
            .blocks
            .iter()
            .flat_map(|b| &b.insts)
            .filter_map(|i| match i {
                Inst::CallBuiltin { args, .. } => Some(args.len()),
                _ => None,
            })
            .max()
            .unwrap_or(0)
            .max(1);
        let s = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            (max_args * 8) as u32,
            3,
        ));
        self.args_slot = Some(s);
        s
    }

    fn call_user(&mut self, callee: u32, args: &[u32], span: Span) -> Value {
        let site = self.shared.site(span);
        let callee_locals = self.shared.program.functions[callee as usize].locals as i64;
        let my_locals = self.func.locals as i64;
        let zero = self.b.ins().iconst(I64, 0);
        // The interpreter's order: fuel, depth, room on the stack.
        self.fuel(site);
        let depth = self.b.ins().load(I32, mem(), self.ctx, off::DEPTH);
        let limit = self.b.ins().load(I32, mem(), self.ctx, off::DEPTH_LIMIT);
        let too_deep = self
            .b
            .ins()
            .icmp(IntCC::UnsignedGreaterThanOrEqual, depth, limit);
        self.raise_if(too_deep, ExecError::CallDepth, site, zero);
        let new_fp = self.b.ins().iadd_imm_s(self.fp, my_locals);
        let top = self.b.ins().iadd_imm_s(new_fp, callee_locals);
        let slots = self.b.ins().load(I64, mem(), self.ctx, off::STACK_SLOTS);
        let no_room = self.b.ins().icmp(IntCC::UnsignedGreaterThan, top, slots);
        self.raise_if(no_room, ExecError::StackExhausted, site, zero);
        let high = self.b.ins().load(I64, mem(), self.ctx, off::STACK_HIGH);
        let high = self.b.ins().umax(high, top);
        self.b.ins().store(mem(), high, self.ctx, off::STACK_HIGH);
        // Zero the callee's frame, then store the arguments.
        let values: Vec<Value> = args.iter().map(|a| self.get(*a)).collect();
        let callee_frame = self.b.ins().iadd_imm_s(self.frame, my_locals * 8);
        if callee_locals <= 16 {
            for j in args.len() as i64..callee_locals {
                self.b
                    .ins()
                    .store(mem(), zero, callee_frame, (j * 8) as i32);
            }
        } else {
            let end = self.b.ins().iadd_imm_s(callee_frame, callee_locals * 8);
            let body = self.b.create_block();
            let done = self.b.create_block();
            self.b.append_block_param(body, I64);
            self.b.ins().jump(body, &[BlockArg::Value(callee_frame)]);
            self.b.switch_to_block(body);
            let p = self.b.block_params(body)[0];
            self.b.ins().store(mem(), zero, p, 0);
            let next = self.b.ins().iadd_imm_s(p, 8);
            let more = self.b.ins().icmp(IntCC::UnsignedLessThan, next, end);
            self.b
                .ins()
                .brif(more, body, &[BlockArg::Value(next)], done, &[]);
            self.b.switch_to_block(done);
        }
        for (k, v) in values.into_iter().enumerate() {
            self.b.ins().store(mem(), v, callee_frame, (k * 8) as i32);
        }
        self.b.ins().store(mem(), new_fp, self.ctx, off::SP);
        let deeper = self.b.ins().iadd_imm_s(depth, 1);
        self.b.ins().store(mem(), deeper, self.ctx, off::DEPTH);
        let call_conv = self.shared.call_conv;
        let sig = imported(&mut self.b, &mut self.entry_sig, || {
            entry_signature(call_conv)
        });
        let entry = self
            .b
            .ins()
            .load(I64, mem_const(), self.functions, callee as i32 * 8);
        let call = self.b.ins().call_indirect(sig, entry, &[self.ctx]);
        let v = self.b.inst_results(call)[0];
        self.b.ins().store(mem(), depth, self.ctx, off::DEPTH);
        self.unwind_on_error();
        v
    }
}

fn global_offset(slot: u32) -> Result<i32, JitError> {
    slot.checked_mul(8)
        .and_then(|o| i32::try_from(o).ok())
        .ok_or_else(|| JitError::InvalidProgram(format!("global slot {slot} out of range")))
}
