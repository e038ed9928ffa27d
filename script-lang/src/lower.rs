//! Lowering: the checked AST to IR, with name resolution and every semantic check.
//!
//! One walk in source order, because HyperDbg's scoping is textual: a variable exists from
//! its first assignment onwards, so reading it before (even `x = x + 1` on a new `x`) is an
//! error, and a function must be defined above its first call (recursion works). Locals
//! are per function (`main`'s locals are invisible inside functions); globals are shared
//! through [`Globals`] and bound when the program compiles successfully.
//!
//! Checks here: unknown names and functions, read before assignment, call arity and
//! value use of void functions, printf specifiers against arguments, `break`/`continue`
//! outside a loop, `return` forms, function definitions outside the top level, `event_sc`
//! in a script that only runs in the post stage, and the v0.23 type rules: every
//! expression gets a static [`Type`] ([`crate::types`]), operations compute in the type
//! C's conversions give them, and stores convert to the destination's type.

use std::collections::{BTreeMap, HashMap};

use hvscript_abi::Builtin;
use hvscript_grammar::ast::{self, BinOp, Callee, Expr, ExprKind, Span, Stmt, StmtKind, UnOp};
use hvscript_grammar::Diagnostic;

use crate::globals::Globals;
use crate::ir::*;
use crate::semantics;
use crate::types::{common, StructId, StructTable, Type};

mod aggregates;

/// In which calling stages the script will run; decides whether `event_sc` is allowed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StageUse {
    /// Not attached to an event, or attached with `stage pre` or `stage all`.
    #[default]
    Any,
    /// Attached with `stage post`: short-circuiting is meaningless there.
    PostOnly,
}

#[derive(Clone, Debug, Default)]
pub struct CompileOptions {
    pub stage: StageUse,
    /// `module!name` symbols the debugger knows.
    pub symbols: BTreeMap<String, u64>,
}

/// Compiles a parsed script. On success the program's globals are bound in `globals`.
pub fn compile(
    script: &ast::Script,
    globals: &Globals,
    options: &CompileOptions,
) -> Result<Program, Vec<Diagnostic>> {
    let mut l = Lowerer {
        globals,
        options,
        functions: vec![None],
        function_index: HashMap::new(),
        strings: Vec::new(),
        string_ids: HashMap::new(),
        global_slots: BTreeMap::new(),
        errors: Vec::new(),
        structs: StructTable::default(),
        struct_tags: HashMap::new(),
        typedefs: HashMap::new(),
    };
    let mut main = FnBuilder::new("main".into(), Type::Void, true);
    for stmt in &script.stmts {
        l.stmt(&mut main, stmt, true);
    }
    main.terminate(Terminator::Return(None));
    l.functions[0] = Some(main.finish(script.span, 0));
    if !l.errors.is_empty() {
        return Err(l.errors);
    }
    // Bind the globals this program introduced, then patch their provisional slots.
    let names: Vec<String> = l.global_slots.keys().cloned().collect();
    let Some(slots) = globals.bind(&names) else {
        return Err(vec![Diagnostic::error(
            format!(
                "too many global variables: the table holds {}",
                globals.capacity()
            ),
            script.span,
        )]);
    };
    let provisional: HashMap<u32, u32> = l
        .global_slots
        .values()
        .copied()
        .zip(slots.iter().copied())
        .collect();
    let mut functions: Vec<Function> = l.functions.into_iter().flatten().collect();
    for f in &mut functions {
        for b in &mut f.blocks {
            for inst in &mut b.insts {
                match inst {
                    Inst::LoadGlobal { slot, .. }
                    | Inst::StoreGlobal { slot, .. }
                    | Inst::AddrGlobal { slot, .. } => {
                        *slot = provisional[slot];
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(Program {
        functions,
        strings: l.strings,
        globals: names.into_iter().zip(slots).collect(),
    })
}

struct FuncInfo {
    id: FuncId,
    params: Vec<Type>,
    ret: Type,
}

struct Lowerer<'a> {
    globals: &'a Globals,
    options: &'a CompileOptions,
    functions: Vec<Option<Function>>,
    function_index: HashMap<String, FuncInfo>,
    strings: Vec<StrLit>,
    string_ids: HashMap<StrLit, StrId>,
    /// Globals this program uses, with provisional slot numbers (patched after binding).
    global_slots: BTreeMap<String, u32>,
    errors: Vec<Diagnostic>,
    /// The script's structs (tags and typedefs are per script, defined before use).
    structs: StructTable,
    struct_tags: HashMap<String, StructId>,
    typedefs: HashMap<String, Type>,
}

struct LoopTargets {
    continue_to: BlockId,
    break_to: BlockId,
}

struct FnBuilder {
    name: String,
    blocks: Vec<(Vec<Inst>, Option<Terminator>)>,
    current: BlockId,
    temps: u32,
    locals: HashMap<String, u32>,
    /// The static type of every local slot.
    local_types: Vec<Type>,
    /// Slots created by plain assignment (implicit `unsigned long long`, which also takes
    /// a pointer without a cast).
    implicit: Vec<bool>,
    params: u32,
    loops: Vec<LoopTargets>,
    returns_value: bool,
    ret: Type,
    is_main: bool,
    /// Temps made by [`FnBuilder::constant`] (assigned once), for constant folding.
    constants: HashMap<Temp, u64>,
}

/// A computed value and its static type.
#[derive(Clone, Debug)]
struct Val {
    t: Temp,
    ty: Type,
}

impl FnBuilder {
    fn new(name: String, ret: Type, is_main: bool) -> FnBuilder {
        FnBuilder {
            name,
            blocks: vec![(Vec::new(), None)],
            current: 0,
            temps: 0,
            locals: HashMap::new(),
            local_types: Vec::new(),
            implicit: Vec::new(),
            params: 0,
            loops: Vec::new(),
            returns_value: ret != Type::Void,
            ret,
            is_main,
            constants: HashMap::new(),
        }
    }

    /// A builder for code that is typed and then thrown away (`sizeof`'s operand): same
    /// names and types, no blocks of this function.
    fn scratch(&self) -> FnBuilder {
        FnBuilder {
            name: self.name.clone(),
            blocks: vec![(Vec::new(), None)],
            current: 0,
            temps: self.temps,
            locals: self.locals.clone(),
            local_types: self.local_types.clone(),
            implicit: self.implicit.clone(),
            params: self.params,
            loops: Vec::new(),
            returns_value: self.returns_value,
            ret: self.ret.clone(),
            is_main: self.is_main,
            constants: HashMap::new(),
        }
    }

    fn constant_value(&self, t: Temp) -> Option<u64> {
        self.constants.get(&t).copied()
    }

    fn temp(&mut self) -> Temp {
        self.temps += 1;
        self.temps - 1
    }

    fn emit(&mut self, inst: Inst) {
        self.blocks[self.current as usize].0.push(inst);
    }

    fn new_block(&mut self) -> BlockId {
        self.blocks.push((Vec::new(), None));
        (self.blocks.len() - 1) as BlockId
    }

    /// Ends the current block; code after it (unreachable) goes to a fresh block.
    fn terminate(&mut self, term: Terminator) {
        let cur = &mut self.blocks[self.current as usize];
        if cur.1.is_none() {
            cur.1 = Some(term);
        }
        self.current = self.new_block();
    }

    fn switch_to(&mut self, block: BlockId) {
        self.current = block;
    }

    /// A new local of aggregate type `ty` taking `slots` consecutive slots (its bytes are
    /// packed in them, as HyperDbg keeps arrays and structs in its script stack).
    fn aggregate_local(&mut self, name: &str, ty: Type, slots: u32) -> u32 {
        let slot = self.local_types.len() as u32;
        self.locals.insert(name.to_string(), slot);
        self.local_types.push(ty);
        self.implicit.push(false);
        for _ in 1..slots.max(1) {
            self.local_types.push(Type::ULONGLONG);
            self.implicit.push(false);
        }
        slot
    }

    /// The slot of local `name`, created with type `ty` when it is new.
    fn local(&mut self, name: &str, ty: Type) -> u32 {
        if let Some(&slot) = self.locals.get(name) {
            return slot;
        }
        let slot = self.local_types.len() as u32;
        self.locals.insert(name.to_string(), slot);
        self.local_types.push(ty);
        self.implicit.push(false);
        slot
    }

    fn constant(&mut self, value: u64) -> Temp {
        let t = self.temp();
        self.emit(Inst::Const { dst: t, value });
        self.constants.insert(t, value);
        t
    }

    fn finish(mut self, span: Span, _id: FuncId) -> Function {
        // Blocks left open fall off the end: a value function yields 0 there.
        let fallthrough = if self.returns_value {
            let zero = self.temp();
            for b in &mut self.blocks {
                if b.1.is_none() {
                    b.0.push(Inst::Const {
                        dst: zero,
                        value: 0,
                    });
                    b.1 = Some(Terminator::Return(Some(zero)));
                }
            }
            None
        } else {
            Some(Terminator::Return(None))
        };
        let blocks: Vec<Block> = self
            .blocks
            .into_iter()
            .map(|(insts, term)| Block {
                insts,
                term: term
                    .or_else(|| fallthrough.clone())
                    .unwrap_or(Terminator::Return(None)),
            })
            .collect();
        let blocks = prune_unreachable(blocks);
        Function {
            name: self.name,
            params: self.params,
            locals: self.local_types.len() as u32,
            temps: self.temps,
            returns_value: self.returns_value,
            blocks,
            span,
        }
    }
}

/// Where a value goes.
enum Place {
    Local(u32),
    Global(u32),
    Register(hvscript_abi::Register),
    /// HyperDbg's `*addr` on an address that is not a typed pointer: 8 bytes, like `poi`.
    Memory(Temp),
    /// A typed place in memory: an array element, a struct member, a local aggregate,
    /// anything behind a typed pointer. Scalars are read and written with their width;
    /// an aggregate's value is its address.
    Typed {
        addr: Temp,
        ty: Type,
    },
}

impl Place {
    /// The static type of what the place holds: globals are implicit variables,
    /// registers `long`, and `*addr` reads 8 bytes like `poi`.
    fn ty(&self, f: &FnBuilder) -> Type {
        match self {
            Place::Local(slot) => f.local_types[*slot as usize].clone(),
            Place::Typed { ty, .. } => ty.clone(),
            Place::Global(_) | Place::Memory(_) => Type::ULONGLONG,
            Place::Register(_) => Type::LONG,
        }
    }
}

impl Lowerer<'_> {
    fn error(&mut self, d: Diagnostic) {
        self.errors.push(d);
    }

    fn intern(&mut self, s: StrLit) -> StrId {
        if let Some(&id) = self.string_ids.get(&s) {
            return id;
        }
        let id = self.strings.len() as StrId;
        self.strings.push(s.clone());
        self.string_ids.insert(s, id);
        id
    }

    fn global_slot(&mut self, name: &str, define: bool) -> Option<u32> {
        if let Some(&s) = self.global_slots.get(name) {
            return Some(s);
        }
        if define || self.globals.lookup(name).is_some() {
            let provisional = self.global_slots.len() as u32;
            self.global_slots.insert(name.to_string(), provisional);
            return Some(provisional);
        }
        None
    }

    // ------------------------------------------------------------------ statements

    fn block(&mut self, f: &mut FnBuilder, b: &ast::Block) {
        for s in &b.stmts {
            self.stmt(f, s, false);
        }
    }

    fn stmt(&mut self, f: &mut FnBuilder, s: &Stmt, top_level: bool) {
        match &s.kind {
            StmtKind::Assign { targets, value } => {
                let v = self.value(f, value);
                for t in targets {
                    if let Some(p) = self.place(f, t, true) {
                        self.store(f, p, v.clone(), t.span, value.span);
                    }
                }
            }
            StmtKind::CompoundAssign { target, op, value } => {
                let Some(p) = self.place(f, target, false) else {
                    return;
                };
                let old = self.load(f, &p, target.span);
                let rhs = self.value(f, value);
                let v = self.binary(f, *op, old, rhs, s.span);
                self.store(f, p, v, target.span, s.span);
            }
            StmtKind::IncDec { target, increment } => {
                let Some(p) = self.place(f, target, false) else {
                    return;
                };
                let old = self.load(f, &p, target.span);
                let one = Val {
                    t: f.constant(1),
                    ty: Type::LONG,
                };
                let op = if *increment { BinOp::Add } else { BinOp::Sub };
                let v = self.binary(f, op, old, one, s.span);
                self.store(f, p, v, target.span, s.span);
            }
            StmtKind::Call(e) => {
                self.call(f, e, false);
            }
            StmtKind::Decl(d) => self.declare(f, d),
            StmtKind::StructDef(def) => self.define_struct(def),
            StmtKind::Typedef { ty, name, dims } => self.define_typedef(ty, name, dims),
            StmtKind::If { arms, otherwise } => {
                let end = f.new_block();
                for arm in arms {
                    let then = f.new_block();
                    let next = f.new_block();
                    self.branch_on(f, &arm.cond, then, next);
                    f.switch_to(then);
                    self.block(f, &arm.body);
                    f.terminate(Terminator::Jump(end));
                    f.switch_to(next);
                }
                if let Some(b) = otherwise {
                    self.block(f, b);
                }
                f.terminate(Terminator::Jump(end));
                f.switch_to(end);
            }
            StmtKind::While { cond, body } => self.pretest_loop(f, cond, body, None, s.span),
            StmtKind::DoWhile { body, cond } => {
                let body_b = f.new_block();
                let check = f.new_block();
                let back = f.new_block();
                let exit = f.new_block();
                f.terminate(Terminator::Jump(body_b));
                f.switch_to(body_b);
                self.loop_body(f, body, check, exit);
                f.switch_to(check);
                self.branch_on(f, cond, back, exit);
                f.switch_to(back);
                f.emit(Inst::Fuel { span: s.span });
                f.terminate(Terminator::Jump(body_b));
                f.switch_to(exit);
            }
            StmtKind::For {
                init,
                cond,
                step,
                body,
            } => {
                if let Some(i) = init {
                    self.stmt(f, i, false);
                }
                self.pretest_loop(f, cond, body, Some(step), s.span);
            }
            StmtKind::Break | StmtKind::Continue => {
                let is_break = matches!(s.kind, StmtKind::Break);
                match f.loops.last() {
                    Some(t) => {
                        let to = if is_break { t.break_to } else { t.continue_to };
                        f.terminate(Terminator::Jump(to));
                    }
                    None => self.error(Diagnostic::error(
                        format!(
                            "`{}` outside a loop",
                            if is_break { "break" } else { "continue" }
                        ),
                        s.span,
                    )),
                }
            }
            StmtKind::Return(value) => self.return_(f, value.as_ref(), s.span),
            StmtKind::FuncDef(def) => {
                if !(top_level && f.is_main) {
                    self.error(
                        Diagnostic::error(
                            "functions can only be defined at the top level of a script",
                            def.name.span,
                        )
                        .with_help("move the definition out of the block or function"),
                    );
                    return;
                }
                self.function(def, s.span);
            }
            StmtKind::Include { .. } => self.error(
                Diagnostic::error("#include reached the compiler unexpanded", s.span).with_help(
                    "the hvscript command (eval, check, run, attach) expands #include before \
                     compiling; text compiled by other means must be expanded first",
                ),
            ),
        }
    }

    /// `while` and `for`: test, body, then a latch that runs the step and burns fuel.
    fn pretest_loop(
        &mut self,
        f: &mut FnBuilder,
        cond: &Expr,
        body: &ast::Block,
        step: Option<&Stmt>,
        span: Span,
    ) {
        let head = f.new_block();
        let body_b = f.new_block();
        let latch = f.new_block();
        let exit = f.new_block();
        f.terminate(Terminator::Jump(head));
        f.switch_to(head);
        self.branch_on(f, cond, body_b, exit);
        f.switch_to(body_b);
        self.loop_body(f, body, latch, exit);
        f.switch_to(latch);
        if let Some(step) = step {
            self.stmt(f, step, false);
        }
        f.emit(Inst::Fuel { span });
        f.terminate(Terminator::Jump(head));
        f.switch_to(exit);
    }

    /// A loop body with its `continue` and `break` targets; falls through to `continue_to`.
    fn loop_body(
        &mut self,
        f: &mut FnBuilder,
        body: &ast::Block,
        continue_to: BlockId,
        break_to: BlockId,
    ) {
        f.loops.push(LoopTargets {
            continue_to,
            break_to,
        });
        self.block(f, body);
        f.loops.pop();
        f.terminate(Terminator::Jump(continue_to));
    }

    /// Ends the current block with a branch on `cond`.
    fn branch_on(&mut self, f: &mut FnBuilder, cond: &Expr, then: BlockId, otherwise: BlockId) {
        let c = self.truth(f, cond);
        f.terminate(Terminator::Branch {
            cond: c,
            then,
            otherwise,
        });
    }

    fn return_(&mut self, f: &mut FnBuilder, value: Option<&Expr>, span: Span) {
        match (value, f.is_main, f.returns_value) {
            (None, true, _) | (None, false, false) => f.terminate(Terminator::Return(None)),
            (Some(e), false, true) => {
                let v = self.value(f, e);
                let ret = f.ret.clone();
                let t = self.convert(f, v, &ret, e.span);
                f.terminate(Terminator::Return(Some(t)));
            }
            (Some(e), true, _) => self.error(
                Diagnostic::error("`return` with a value outside a function", e.span)
                    .with_note("`return;` ends the script; values are returned from functions"),
            ),
            (Some(e), false, false) => self.error(Diagnostic::error(
                format!("`{}` is declared `void` and cannot return a value", f.name),
                e.span,
            )),
            (None, false, true) => self.error(Diagnostic::error(
                format!("`{}` returns a value: write `return <value>;`", f.name),
                span,
            )),
        }
    }

    /// The type a type name denotes; reports an error and returns `None` when it denotes
    /// none (or `void` where a value is needed).
    fn resolve_type(&mut self, name: &ast::TypeName, allow_void: bool) -> Option<Type> {
        let resolved = match &name.named {
            Some(named) => {
                let mut t = self.named_type(named, name.pointers > 0)?;
                for _ in 0..name.pointers {
                    t = Type::Pointer(Box::new(t));
                }
                Ok(t)
            }
            None => Type::from_name(name),
        };
        match resolved {
            Ok(Type::Void) if !allow_void => {
                self.error(Diagnostic::error(
                    "`void` is not a type for a value",
                    name.span,
                ));
                None
            }
            Ok(ty) => Some(ty),
            Err(message) => {
                self.error(Diagnostic::error(message, name.span).with_note(
                    "types: void bool char short int long (long long), signed or unsigned, float, double, and pointers to them",
                ));
                None
            }
        }
    }

    fn function(&mut self, def: &ast::FuncDef, span: Span) {
        let ret = self.resolve_type(&def.ret, true).unwrap_or(Type::LONG);
        let ret = self.by_value_check(ret, def.ret.span);
        if self.function_index.contains_key(&def.name.text) {
            self.error(Diagnostic::error(
                format!("function `{}` is already defined", def.name.text),
                def.name.span,
            ));
            return;
        }
        let params: Vec<Type> = def
            .params
            .iter()
            .map(|p| {
                let ty = self.resolve_type(&p.ty, false).unwrap_or(Type::LONG);
                self.by_value_check(ty, p.ty.span)
            })
            .collect();
        let id = self.functions.len() as FuncId;
        self.functions.push(None);
        self.function_index.insert(
            def.name.text.clone(),
            FuncInfo {
                id,
                params: params.clone(),
                ret: ret.clone(),
            },
        );
        let mut fb = FnBuilder::new(def.name.text.clone(), ret, false);
        for (p, ty) in def.params.iter().zip(params) {
            if fb.locals.contains_key(&p.name.text) {
                self.error(Diagnostic::error(
                    format!("parameter `{}` is declared twice", p.name.text),
                    p.name.span,
                ));
            }
            fb.local(&p.name.text, ty);
        }
        fb.params = def.params.len() as u32;
        self.block(&mut fb, &def.body);
        fb.terminate(Terminator::Return(None));
        self.functions[id as usize] = Some(fb.finish(span, id));
    }

    // ------------------------------------------------------------------ places

    fn place(&mut self, f: &mut FnBuilder, e: &Expr, define: bool) -> Option<Place> {
        match &e.kind {
            ExprKind::Local(name) => {
                if self.function_index.contains_key(name) {
                    self.error(Diagnostic::error(
                        format!("`{name}` is a function, not a variable"),
                        e.span,
                    ));
                    return None;
                }
                match f.locals.get(name) {
                    Some(&s) if f.local_types[s as usize].is_aggregate() => {
                        let addr = f.temp();
                        f.emit(Inst::AddrLocal { dst: addr, slot: s });
                        let ty = f.local_types[s as usize].clone();
                        Some(Place::Typed { addr, ty })
                    }
                    Some(&s) => Some(Place::Local(s)),
                    // A variable created by assignment is `unsigned long long` (HyperDbg's
                    // implicit type).
                    None if define => {
                        let slot = f.local(name, Type::ULONGLONG);
                        f.implicit[slot as usize] = true;
                        Some(Place::Local(slot))
                    }
                    None => {
                        self.unassigned(e.span, name, "");
                        None
                    }
                }
            }
            ExprKind::Global(name) => match self.global_slot(name, define) {
                Some(s) => Some(Place::Global(s)),
                None => {
                    self.unassigned(e.span, name, ".");
                    None
                }
            },
            ExprKind::Register(r) => Some(Place::Register(*r)),
            ExprKind::Unary {
                op: UnOp::Deref,
                operand,
            } => Some(self.deref_place(f, operand)),
            ExprKind::Index { base, index } => self.index_place(f, base, index, e.span),
            ExprKind::Member { base, arrow, field } => {
                self.member_place(f, base, *arrow, field, e.span)
            }
            _ => {
                self.error(Diagnostic::error("this cannot be assigned", e.span));
                None
            }
        }
    }

    fn unassigned(&mut self, span: Span, name: &str, prefix: &str) {
        self.error(
            Diagnostic::error(format!("`{prefix}{name}` is read before it is assigned"), span).with_help(format!(
                "assign it first ({prefix}{name} = 0;): HyperDbg creates a variable at its first assignment"
            )),
        );
    }

    fn load(&mut self, f: &mut FnBuilder, p: &Place, span: Span) -> Val {
        let dst = f.temp();
        match *p {
            Place::Local(slot) => f.emit(Inst::LoadLocal { dst, slot }),
            Place::Global(slot) => f.emit(Inst::LoadGlobal { dst, slot }),
            Place::Register(reg) => f.emit(Inst::ReadReg { dst, reg }),
            Place::Memory(addr) => f.emit(Inst::CallBuiltin {
                dst: Some(dst),
                builtin: Builtin::Poi,
                args: vec![Operand::Temp(addr)],
                span,
            }),
            Place::Typed { addr, ref ty } => {
                return match ty {
                    // An array is used as the address of its first element.
                    Type::Array { elem, .. } => Val {
                        t: addr,
                        ty: Type::Pointer(elem.clone()),
                    },
                    Type::Struct { .. } => Val {
                        t: addr,
                        ty: ty.clone(),
                    },
                    _ => match ty.scalar() {
                        Some(s) => {
                            f.emit(Inst::Load {
                                dst,
                                addr,
                                ty: s,
                                span,
                            });
                            Val {
                                t: dst,
                                ty: ty.clone(),
                            }
                        }
                        None => {
                            self.error(Diagnostic::error(
                                format!("a `{ty}` has no value to read"),
                                span,
                            ));
                            Val {
                                t: addr,
                                ty: Type::ULONGLONG,
                            }
                        }
                    },
                };
            }
        }
        let ty = p.ty(f);
        // A narrow variable's slot can be rewritten through its address (`ed(&x, v)`
        // writes 4 bytes, `eq` 8): reading it takes its own width again, so every value
        // entering an operation is normalised.
        if let (Place::Local(_), Some(to)) = (p, ty.scalar()) {
            if to.bits() < 64 && !to.is_float() {
                let t = self.convert_scalar(f, dst, ScalarTy::U64, to, span);
                return Val { t, ty };
            }
        }
        Val { t: dst, ty }
    }

    /// Stores `v`, converted to the place's type (`value_span` locates conversion errors).
    fn store(&mut self, f: &mut FnBuilder, p: Place, v: Val, span: Span, value_span: Span) {
        let ty = p.ty(f);
        // Implicit variables, globals, registers and memory words take a pointer as is.
        let takes_pointer = match p {
            Place::Local(slot) => f.implicit[slot as usize],
            Place::Typed { .. } => false,
            _ => true,
        };
        if let Place::Typed { addr, ty } = &p {
            if ty.is_aggregate() {
                self.store_aggregate(f, *addr, ty, v, value_span);
                return;
            }
        }
        let src = if takes_pointer && v.ty.is_pointer() {
            v.t
        } else {
            self.convert(f, v, &ty, value_span)
        };
        match p {
            Place::Local(slot) => f.emit(Inst::StoreLocal { slot, src }),
            Place::Global(slot) => f.emit(Inst::StoreGlobal { slot, src }),
            Place::Register(reg) => f.emit(Inst::WriteReg { reg, src }),
            // `*p = v` writes 8 bytes like `eq`, and like `eq` a bad address is not an error.
            Place::Memory(addr) => f.emit(Inst::CallBuiltin {
                dst: None,
                builtin: Builtin::Eq,
                args: vec![Operand::Temp(addr), Operand::Temp(src)],
                span,
            }),
            Place::Typed { addr, ty } => {
                if let Some(s) = ty.scalar() {
                    f.emit(Inst::Store {
                        addr,
                        src,
                        ty: s,
                        span,
                    });
                }
            }
        }
    }

    // ------------------------------------------------------------------ conversions

    /// Converts `v` to type `to` as an assignment or initialisation does; reports what C
    /// would not convert implicitly. Constants are converted at compile time, so a float
    /// literal out of range of a `float` is a compile error.
    fn convert(&mut self, f: &mut FnBuilder, v: Val, to: &Type, span: Span) -> Temp {
        if v.ty == *to {
            return v.t;
        }
        let (Some(from_s), Some(to_s)) = (v.ty.scalar(), to.scalar()) else {
            self.error(Diagnostic::error(
                format!("a `{}` value cannot be converted to `{to}`", v.ty),
                span,
            ));
            return v.t;
        };
        if mixes_pointer_and_float(&v.ty, to) {
            self.error(Diagnostic::error(
                format!("a `{}` cannot be converted to `{to}`", v.ty),
                span,
            ));
            return v.t;
        }
        if v.ty.is_pointer() && !to.is_pointer() {
            self.error(
                Diagnostic::error(format!("a pointer (`{}`) is not a `{to}`", v.ty), span)
                    .with_help(format!("cast it: ({to}) value")),
            );
            return v.t;
        }
        if to.is_pointer() && !v.ty.is_pointer() && f.constant_value(v.t) != Some(0) {
            self.error(
                Diagnostic::error(format!("an integer is not a `{to}`"), span)
                    .with_help(format!("cast it: ({to}) value")),
            );
            return v.t;
        }
        self.convert_scalar(f, v.t, from_s, to_s, span)
    }

    /// An explicit cast `(to) v`: also integer <-> pointer.
    fn cast(&mut self, f: &mut FnBuilder, v: Val, to: &Type, span: Span) -> Temp {
        match (v.ty.scalar(), to.scalar()) {
            (Some(from), Some(to_s)) if !mixes_pointer_and_float(&v.ty, to) => {
                self.convert_scalar(f, v.t, from, to_s, span)
            }
            _ => {
                self.error(Diagnostic::error(
                    format!("a `{}` cannot be cast to `{to}`", v.ty),
                    span,
                ));
                v.t
            }
        }
    }

    fn convert_scalar(
        &mut self,
        f: &mut FnBuilder,
        t: Temp,
        from: ScalarTy,
        to: ScalarTy,
        span: Span,
    ) -> Temp {
        if from == to
            || (from.bits() == 64 && to.bits() == 64 && !from.is_float() && !to.is_float())
        {
            return t;
        }
        if let Some(c) = f.constant_value(t) {
            if from == ScalarTy::F64 && to == ScalarTy::F32 {
                let x = f64::from_bits(c);
                if x != 0.0 && x.is_finite() && (x as f32) == 0.0 {
                    self.error(Diagnostic::error(
                        "floating-point value out of range of `float` (it rounds to zero)",
                        span,
                    ));
                    return t;
                }
            }
            match semantics::convert(from, to, c) {
                Ok(v) => return f.constant(v),
                Err(_) if from.is_float() && to.is_float() => {
                    self.error(Diagnostic::error(
                        format!("floating-point value out of range of `{}`", scalar_name(to)),
                        span,
                    ));
                    return t;
                }
                // Integer conversions of out-of-range floats stay a run-time error.
                Err(_) => {}
            }
        }
        let dst = f.temp();
        f.emit(Inst::Convert {
            dst,
            src: t,
            from,
            to,
            span,
        });
        dst
    }

    /// The promoted arithmetic type of `v`, or an error for `void`.
    fn arith_type(&mut self, v: &Val, span: Span) -> NumTy {
        match v.ty.promoted() {
            Some(t) => t,
            None if v.ty == Type::Void => {
                self.error(Diagnostic::error("a `void` value has no value", span));
                NumTy::I64
            }
            None => {
                self.error(
                    Diagnostic::error(format!("a `{}` is not a number", v.ty), span)
                        .with_help("use one of its members (s.x), or its address (&s)"),
                );
                NumTy::I64
            }
        }
    }

    /// Converts `v` to the arithmetic type `to` (from its own promoted type).
    fn convert_to_num(&mut self, f: &mut FnBuilder, v: &Val, to: NumTy, span: Span) -> Temp {
        match v.ty.scalar() {
            Some(from) => self.convert_scalar(f, v.t, from, to.scalar(), span),
            None => v.t,
        }
    }

    /// An address operand (for `*p`, `poi` ...): pointers and integers are words; a float
    /// is refused.
    fn address_word(&mut self, v: Val, span: Span) -> Temp {
        if v.ty.is_float() {
            self.error(
                Diagnostic::error(format!("a `{}` is not an address", v.ty), span)
                    .with_help("cast it to an integer first: (unsigned long long) value"),
            );
        }
        v.t
    }

    /// A condition's truth: integers and pointers test the word, floats the value.
    fn truth(&mut self, f: &mut FnBuilder, cond: &Expr) -> Temp {
        let v = self.value(f, cond);
        match v.ty.scalar() {
            Some(from) if from.is_float() => {
                self.convert_scalar(f, v.t, from, ScalarTy::Bool, cond.span)
            }
            _ => v.t,
        }
    }

    // ------------------------------------------------------------------ expressions

    fn value(&mut self, f: &mut FnBuilder, e: &Expr) -> Val {
        let long = |t| Val { t, ty: Type::LONG };
        match &e.kind {
            ExprKind::Number(n) => long(f.constant(*n)),
            ExprKind::Float(x) => Val {
                t: f.constant(x.to_bits()),
                ty: Type::Double,
            },
            ExprKind::Str(_) | ExprKind::WStr(_) => {
                self.error(Diagnostic::error("a string is not a value", e.span));
                long(f.constant(0))
            }
            ExprKind::Register(reg) => {
                let dst = f.temp();
                f.emit(Inst::ReadReg { dst, reg: *reg });
                long(dst)
            }
            ExprKind::Pseudo(reg) => {
                let dst = f.temp();
                f.emit(Inst::ReadPseudo { dst, reg: *reg });
                long(dst)
            }
            ExprKind::Local(_) | ExprKind::Global(_) => match self.place(f, e, false) {
                Some(p) => self.load(f, &p, e.span),
                None => long(f.constant(0)),
            },
            ExprKind::Symbol(name) => match self.options.symbols.get(name) {
                Some(&v) => long(f.constant(v)),
                None => {
                    self.error(
                        Diagnostic::error(format!("unknown symbol `{name}`"), e.span)
                            .with_help("give the debugger its address, e.g. --sym nt!ExAllocatePoolWithTag=0xfffff80012345678"),
                    );
                    long(f.constant(0))
                }
            },
            ExprKind::Unary { op, operand } => self.unary(f, *op, operand, e.span),
            ExprKind::Binary {
                op: BinOp::LogAnd,
                lhs,
                rhs,
            } => self.logical(f, true, lhs, rhs),
            ExprKind::Binary {
                op: BinOp::LogOr,
                lhs,
                rhs,
            } => self.logical(f, false, lhs, rhs),
            ExprKind::Binary { op, lhs, rhs } => {
                let a = self.value(f, lhs);
                let b = self.value(f, rhs);
                self.binary(f, *op, a, b, e.span)
            }
            ExprKind::Call { .. } => match self.call(f, e, true) {
                Some(v) => v,
                None => long(f.constant(0)),
            },
            ExprKind::Cast { ty, operand } => {
                let v = self.value(f, operand);
                match self.resolve_type(ty, true) {
                    Some(Type::Void) => {
                        // `(void) e`: evaluated for its effects, no value.
                        Val {
                            t: v.t,
                            ty: Type::Void,
                        }
                    }
                    Some(to) => {
                        let t = self.cast(f, v, &to, e.span);
                        Val { t, ty: to }
                    }
                    None => v,
                }
            }
            ExprKind::SizeofType(ty) => {
                let size = self
                    .resolve_type(ty, true)
                    .map(|t| self.size_of(&t, e.span));
                Val {
                    t: f.constant(size.unwrap_or(0)),
                    ty: Type::ULONGLONG,
                }
            }
            ExprKind::SizeofExpr(operand) => {
                // The operand is typed but not evaluated: lower it into a scratch copy of
                // the function and throw the code away.
                let mut scratch = f.scratch();
                let ty = self.type_of_unevaluated(&mut scratch, operand);
                let size = self.size_of(&ty, e.span);
                Val {
                    t: f.constant(size),
                    ty: Type::ULONGLONG,
                }
            }
            ExprKind::Index { .. } | ExprKind::Member { .. } => match self.place(f, e, false) {
                Some(p) => self.load(f, &p, e.span),
                None => long(f.constant(0)),
            },
        }
    }

    /// The type of `e` as `sizeof` sees it: an array stays an array.
    fn type_of_unevaluated(&mut self, f: &mut FnBuilder, e: &Expr) -> Type {
        let is_place = matches!(
            e.kind,
            ExprKind::Local(_) | ExprKind::Index { .. } | ExprKind::Member { .. }
        );
        if is_place {
            if let Some(p) = self.place(f, e, false) {
                return p.ty(f);
            }
        }
        self.value(f, e).ty
    }

    fn size_of(&mut self, ty: &Type, span: Span) -> u64 {
        match self.structs.size(ty) {
            Some(n) => n,
            None => {
                self.error(Diagnostic::error(format!("`{ty}` has no size"), span));
                0
            }
        }
    }

    /// A binary operation with C's conversions (and pointer arithmetic).
    fn binary(&mut self, f: &mut FnBuilder, op: BinOp, a: Val, b: Val, span: Span) -> Val {
        let irop = arith(op);
        // Pointer arithmetic: `p + n`, `n + p`, `p - n` step by the pointee's size;
        // `p - q` counts elements.
        match (&a.ty, &b.ty, op) {
            (Type::Pointer(to), _, BinOp::Add | BinOp::Sub) if b.ty.is_integer() => {
                let to = (**to).clone();
                let offset = self.scaled(f, &b, &to, span);
                let t = self.emit_binary(f, irop, NumTy::U64, a.t, offset, span);
                return Val { t, ty: a.ty };
            }
            (_, Type::Pointer(to), BinOp::Add) if a.ty.is_integer() => {
                let to = (**to).clone();
                let offset = self.scaled(f, &a, &to, span);
                let t = self.emit_binary(f, irop, NumTy::U64, offset, b.t, span);
                return Val { t, ty: b.ty };
            }
            (Type::Pointer(p), Type::Pointer(q), BinOp::Sub) => {
                if p != q {
                    self.error(Diagnostic::error(
                        format!("`{}` and `{}` point to different types", a.ty, b.ty),
                        span,
                    ));
                }
                let bytes = self.emit_binary(f, BinaryOp::Sub, NumTy::I64, a.t, b.t, span);
                let size = self.structs.size(p).unwrap_or(1).max(1);
                let size = f.constant(size);
                let t = self.emit_binary(f, BinaryOp::Div, NumTy::I64, bytes, size, span);
                return Val { t, ty: Type::LONG };
            }
            (Type::Pointer(_), _, _) | (_, Type::Pointer(_), _) if !irop.is_comparison() => {
                self.error(Diagnostic::error(
                    format!("`{}` {} `{}` is not defined", a.ty, op.symbol(), b.ty),
                    span,
                ));
                return Val {
                    t: a.t,
                    ty: Type::ULONGLONG,
                };
            }
            _ => {}
        }
        let (ta, tb) = (self.arith_type(&a, span), self.arith_type(&b, span));
        // Shifts compute in the left operand's promoted type; the count is its own value.
        let ty = if matches!(op, BinOp::Shl | BinOp::Shr) {
            ta
        } else {
            common(ta, tb)
        };
        if ty.is_float() && !irop.works_on_floats() {
            self.error(Diagnostic::error(
                format!("`{}` is not defined on floating-point values", op.symbol()),
                span,
            ));
        }
        if matches!(op, BinOp::Shl | BinOp::Shr) && tb.is_float() {
            self.error(Diagnostic::error("a shift count must be an integer", span));
        }
        let x = self.convert_to_num(f, &a, ty, span);
        let y = if matches!(op, BinOp::Shl | BinOp::Shr) {
            b.t
        } else {
            self.convert_to_num(f, &b, ty, span)
        };
        let t = self.emit_binary(f, irop, ty, x, y, span);
        let result = if irop.is_comparison() {
            Type::INT
        } else {
            Type::of_num(ty)
        };
        Val { t, ty: result }
    }

    /// `n * sizeof(to)` as an unsigned 64-bit byte offset.
    fn scaled(&mut self, f: &mut FnBuilder, n: &Val, to: &Type, span: Span) -> Temp {
        let n64 = self.convert_to_num(f, n, NumTy::I64, span);
        match self.structs.size(to) {
            Some(1) => n64,
            Some(size) => {
                let size = f.constant(size);
                self.emit_binary(f, BinaryOp::Mul, NumTy::U64, n64, size, span)
            }
            None => {
                self.error(Diagnostic::error(
                    format!("`{to} *` points to something without a size"),
                    span,
                ));
                n64
            }
        }
    }

    fn emit_binary(
        &mut self,
        f: &mut FnBuilder,
        op: BinaryOp,
        ty: NumTy,
        lhs: Temp,
        rhs: Temp,
        span: Span,
    ) -> Temp {
        // Constant operands fold (a failing fold stays a run-time error at its place).
        if let (Some(x), Some(y)) = (f.constant_value(lhs), f.constant_value(rhs)) {
            if let Ok(v) = semantics::binary(op, ty, x, y) {
                return f.constant(v);
            }
        }
        let dst = f.temp();
        f.emit(Inst::Binary {
            dst,
            op,
            ty,
            lhs,
            rhs,
            span,
        });
        dst
    }

    /// The place `*operand` names: what a typed pointer points to, read and written with
    /// its width as in C, or for any other address HyperDbg's 8-byte memory word.
    fn deref_place(&mut self, f: &mut FnBuilder, operand: &Expr) -> Place {
        let v = self.value(f, operand);
        match v.ty {
            Type::Pointer(to) if *to != Type::Void => Place::Typed { addr: v.t, ty: *to },
            _ => Place::Memory(self.address_word(v, operand.span)),
        }
    }

    fn unary(&mut self, f: &mut FnBuilder, op: UnOp, operand: &Expr, span: Span) -> Val {
        match op {
            UnOp::AddrOf => self.address_of(f, operand),
            UnOp::Deref => {
                let p = self.deref_place(f, operand);
                self.load(f, &p, span)
            }
            UnOp::Plus | UnOp::Neg | UnOp::BitNot | UnOp::LogNot => {
                let v = self.value(f, operand);
                self.unary_value(f, op, v, span)
            }
        }
    }

    /// `+ - ~ !` on a value (also `neg(x)` and `not(x)`, which are the same operators).
    fn unary_value(&mut self, f: &mut FnBuilder, op: UnOp, v: Val, span: Span) -> Val {
        if v.ty.is_pointer() && op != UnOp::LogNot {
            self.error(Diagnostic::error(
                format!("`{}` is not defined on `{}`", op.symbol(), v.ty),
                span,
            ));
        }
        let ty = self.arith_type(&v, span);
        let src = self.convert_to_num(f, &v, ty, span);
        let irop = match op {
            UnOp::Plus => {
                return Val {
                    t: src,
                    ty: Type::of_num(ty),
                }
            }
            UnOp::Neg => UnaryOp::Neg,
            UnOp::BitNot => {
                if ty.is_float() {
                    self.error(Diagnostic::error(
                        "`~` is not defined on floating-point values",
                        span,
                    ));
                }
                UnaryOp::Not
            }
            _ => UnaryOp::LogNot,
        };
        let result = if irop == UnaryOp::LogNot {
            Type::INT
        } else {
            Type::of_num(ty)
        };
        if let Some(c) = f.constant_value(src) {
            let t = f.constant(semantics::unary(irop, ty, c));
            return Val { t, ty: result };
        }
        let dst = f.temp();
        f.emit(Inst::Unary {
            dst,
            op: irop,
            ty,
            src,
        });
        Val { t: dst, ty: result }
    }

    /// `&x` declares `x` when it is new (it starts at 0): the interlocked and spinlock
    /// idioms take the address of a counter before anything is stored in it.
    fn address_of(&mut self, f: &mut FnBuilder, operand: &Expr) -> Val {
        let dst = f.temp();
        let mut ty = Type::ULONGLONG;
        match &operand.kind {
            ExprKind::Local(_) | ExprKind::Global(_) => match self.place(f, operand, true) {
                Some(Place::Local(slot)) => {
                    ty = f.local_types[slot as usize].clone();
                    f.emit(Inst::AddrLocal { dst, slot })
                }
                Some(Place::Global(slot)) => f.emit(Inst::AddrGlobal { dst, slot }),
                Some(Place::Typed { addr, ty }) => {
                    return Val {
                        t: addr,
                        ty: Type::Pointer(Box::new(ty)),
                    }
                }
                _ => f.emit(Inst::Const { dst, value: 0 }),
            },
            ExprKind::Index { .. }
            | ExprKind::Member { .. }
            | ExprKind::Unary {
                op: UnOp::Deref, ..
            } => {
                return match self.place(f, operand, false) {
                    Some(Place::Typed { addr, ty }) => Val {
                        t: addr,
                        ty: Type::Pointer(Box::new(ty)),
                    },
                    // `&*addr` of an untyped address is the address of a memory word.
                    Some(Place::Memory(addr)) => Val {
                        t: addr,
                        ty: Type::Pointer(Box::new(Type::ULONGLONG)),
                    },
                    _ => Val {
                        t: f.constant(0),
                        ty: Type::ULONGLONG,
                    },
                };
            }
            ExprKind::Register(_) => {
                self.error(Diagnostic::error("a register has no address", operand.span));
                f.emit(Inst::Const { dst, value: 0 });
            }
            _ => {
                self.error(
                    Diagnostic::error("only a variable has an address", operand.span)
                        .with_help("take the address of a local or a global: &x, &.counter"),
                );
                f.emit(Inst::Const { dst, value: 0 });
            }
        }
        Val {
            t: dst,
            ty: Type::Pointer(Box::new(ty)),
        }
    }

    /// `a && b`, `a || b`: short-circuit, result 0 or 1 (`int`).
    fn logical(&mut self, f: &mut FnBuilder, is_and: bool, lhs: &Expr, rhs: &Expr) -> Val {
        let result = f.temp();
        let a = self.truth(f, lhs);
        f.emit(Inst::Unary {
            dst: result,
            op: UnaryOp::LogNot,
            ty: NumTy::I64,
            src: a,
        });
        f.emit(Inst::Unary {
            dst: result,
            op: UnaryOp::LogNot,
            ty: NumTy::I64,
            src: result,
        });
        let eval_rhs = f.new_block();
        let done = f.new_block();
        let (then, otherwise) = if is_and {
            (eval_rhs, done)
        } else {
            (done, eval_rhs)
        };
        f.terminate(Terminator::Branch {
            cond: a,
            then,
            otherwise,
        });
        f.switch_to(eval_rhs);
        let b = self.truth(f, rhs);
        f.emit(Inst::Unary {
            dst: result,
            op: UnaryOp::LogNot,
            ty: NumTy::I64,
            src: b,
        });
        f.emit(Inst::Unary {
            dst: result,
            op: UnaryOp::LogNot,
            ty: NumTy::I64,
            src: result,
        });
        f.terminate(Terminator::Jump(done));
        f.switch_to(done);
        Val {
            t: result,
            ty: Type::INT,
        }
    }

    /// A call; `want_value` when the result is used. Returns the result.
    fn call(&mut self, f: &mut FnBuilder, e: &Expr, want_value: bool) -> Option<Val> {
        let ExprKind::Call {
            callee,
            callee_span,
            args,
        } = &e.kind
        else {
            return Some(self.value(f, e));
        };
        match callee {
            Callee::Builtin(b) => self.builtin_call(f, *b, args, e.span, want_value),
            Callee::User(name) => {
                let Some(info) = self.function_index.get(name) else {
                    let d = Diagnostic::error(format!("unknown function `{name}`"), *callee_span);
                    self.error(if f.locals.contains_key(name) {
                        d.with_note(format!("`{name}` is a variable"))
                    } else {
                        d.with_help("define it above its first call: int name(int a) { ... }")
                    });
                    return None;
                };
                let (id, params, ret) = (info.id, info.params.clone(), info.ret.clone());
                if args.len() != params.len() {
                    self.error(Diagnostic::error(
                        format!(
                            "`{name}` takes {} argument{}, but {} were given",
                            params.len(),
                            if params.len() == 1 { "" } else { "s" },
                            args.len()
                        ),
                        e.span,
                    ));
                }
                let returns_value = ret != Type::Void;
                if want_value && !returns_value {
                    self.error(Diagnostic::error(
                        format!("`{name}` is `void` and has no value"),
                        *callee_span,
                    ));
                }
                let mut temps = Vec::with_capacity(args.len());
                for (i, a) in args.iter().enumerate() {
                    let v = self.value(f, a);
                    temps.push(match params.get(i) {
                        Some(p) => self.convert(f, v, p, a.span),
                        None => v.t,
                    });
                }
                let dst = (want_value || returns_value).then(|| f.temp());
                f.emit(Inst::CallUser {
                    dst,
                    func: id,
                    args: temps,
                    span: e.span,
                });
                dst.map(|t| Val { t, ty: ret })
            }
        }
    }

    fn builtin_call(
        &mut self,
        f: &mut FnBuilder,
        b: Builtin,
        args: &[Expr],
        span: Span,
        want_value: bool,
    ) -> Option<Val> {
        if b == Builtin::Reference {
            return Some(match args {
                [x] => self.address_of(f, x),
                _ => Val {
                    t: f.constant(0),
                    ty: Type::ULONGLONG,
                },
            });
        }
        // `neg(x)` and `not(x)` are unary `-` and `~`, with their types.
        if let (Builtin::Neg | Builtin::Not, [x]) = (b, args) {
            let v = self.value(f, x);
            let op = if b == Builtin::Neg {
                UnOp::Neg
            } else {
                UnOp::BitNot
            };
            return Some(self.unary_value(f, op, v, span));
        }
        if b == Builtin::EventSc && self.options.stage == StageUse::PostOnly {
            self.error(
                Diagnostic::error("`event_sc` in a script that only runs in the post stage", span)
                    .with_note("short-circuiting in the post stage is meaningless: the emulation has already happened"),
            );
        }
        let specs = if b == Builtin::Printf {
            self.check_printf(args)
        } else {
            None
        };
        let mut ops = Vec::with_capacity(args.len());
        for (i, a) in args.iter().enumerate() {
            ops.push(match &a.kind {
                ExprKind::Str(s) => Operand::Str(self.intern(StrLit::Narrow(s.clone()))),
                ExprKind::WStr(s) => Operand::Str(self.intern(StrLit::Wide(s.clone()))),
                _ => {
                    let v = self.value(f, a);
                    let wants_float = specs
                        .as_ref()
                        .and_then(|s| s.get(i.wrapping_sub(1)).copied());
                    Operand::Temp(self.builtin_arg(f, b, v, wants_float, a.span))
                }
            });
        }
        let dst = (want_value && b.info().shape.returns_value).then(|| f.temp());
        f.emit(Inst::CallBuiltin {
            dst,
            builtin: b,
            args: ops,
            span,
        });
        dst.map(|t| Val {
            t,
            ty: Type::ULONGLONG,
        })
    }

    /// A built-in's value argument: a word. printf's float conversions take a `double`
    /// (a `float` is promoted, as C's varargs do); everything else takes an integer or a
    /// pointer. `wants_float` is printf's view of the argument, if it is one.
    fn builtin_arg(
        &mut self,
        f: &mut FnBuilder,
        b: Builtin,
        v: Val,
        wants_float: Option<bool>,
        span: Span,
    ) -> Temp {
        match wants_float {
            Some(true) if v.ty.is_float() => self.convert(f, v, &Type::Double, span),
            Some(true) => {
                self.error(
                    Diagnostic::error(
                        format!(
                            "printf's floating-point conversion needs a `double`, not `{}`",
                            v.ty
                        ),
                        span,
                    )
                    .with_help("cast it: (double) value"),
                );
                v.t
            }
            Some(false) if v.ty.is_float() => {
                self.error(
                    Diagnostic::error(
                        format!(
                            "printf's integer conversion needs an integer, not `{}`",
                            v.ty
                        ),
                        span,
                    )
                    .with_help("print it with %f, or cast it: (long) value"),
                );
                v.t
            }
            _ if v.ty.is_float() => {
                self.error(
                    Diagnostic::error(
                        format!("`{}` takes integers, not `{}`", b.name(), v.ty),
                        span,
                    )
                    .with_help("cast it: (long) value"),
                );
                v.t
            }
            _ if v.ty == Type::Void => {
                self.error(Diagnostic::error("a `void` value has no value", span));
                v.t
            }
            _ if v.ty.is_aggregate() => {
                self.error(
                    Diagnostic::error(format!("a `{}` is not a value here", v.ty), span)
                        .with_help("pass one of its members (s.x), or its address (&s)"),
                );
                v.t
            }
            _ => v.t,
        }
    }

    /// Checks printf's format against its arguments; returns, per argument after the
    /// format, whether its conversion takes a floating-point value.
    fn check_printf(&mut self, args: &[Expr]) -> Option<Vec<bool>> {
        let fmt = args.first()?;
        let ExprKind::Str(bytes) = &fmt.kind else {
            return None;
        };
        match hvscript_stdlib::parse_format(bytes) {
            Err(e) => {
                // +1 for the opening quote; escapes can shift it, so fall back to the string.
                let at = fmt.span.start as usize + 1 + e.offset;
                let span = if at < fmt.span.end as usize {
                    Span::new(at, at + 1)
                } else {
                    fmt.span
                };
                self.error(
                    Diagnostic::error(format!("bad printf format: {e}"), span).with_note(
                        "specifiers: %d %i %u %o %x %X %c %p %s %ws %ls with l, ll or h, %f for doubles; %% prints %",
                    ),
                );
                None
            }
            Ok(specs) if specs.len() != args.len() - 1 => {
                self.error(Diagnostic::error(
                    format!(
                        "printf's format has {} specifier{} but {} argument{} follow{}",
                        specs.len(),
                        if specs.len() == 1 { "" } else { "s" },
                        args.len() - 1,
                        if args.len() == 2 { "" } else { "s" },
                        if args.len() == 2 { "s" } else { "" },
                    ),
                    fmt.span,
                ));
                None
            }
            Ok(specs) => Some(specs.iter().map(|s| s.expects_float()).collect()),
        }
    }
}

/// Pointers and floats never convert into each other, not even with a cast.
fn mixes_pointer_and_float(a: &Type, b: &Type) -> bool {
    (a.is_pointer() && b.is_float()) || (a.is_float() && b.is_pointer())
}

fn scalar_name(t: ScalarTy) -> &'static str {
    match t {
        ScalarTy::F32 => "float",
        ScalarTy::F64 => "double",
        _ => "an integer type",
    }
}

/// Drops blocks no path from the entry reaches (code after `break`, `return`, ...) and
/// renumbers the rest in order, so back ends see only live code.
fn prune_unreachable(blocks: Vec<Block>) -> Vec<Block> {
    let mut reachable = vec![false; blocks.len()];
    let mut work = vec![0usize];
    while let Some(b) = work.pop() {
        if std::mem::replace(&mut reachable[b], true) {
            continue;
        }
        match &blocks[b].term {
            Terminator::Jump(t) => work.push(*t as usize),
            Terminator::Branch {
                then, otherwise, ..
            } => {
                work.push(*then as usize);
                work.push(*otherwise as usize);
            }
            Terminator::Return(_) => {}
        }
    }
    let mut renumber = vec![0 as BlockId; blocks.len()];
    let mut next = 0;
    for (i, r) in reachable.iter().enumerate() {
        if *r {
            renumber[i] = next;
            next += 1;
        }
    }
    blocks
        .into_iter()
        .zip(reachable)
        .filter(|(_, r)| *r)
        .map(|(mut b, _)| {
            b.term = match b.term {
                Terminator::Jump(t) => Terminator::Jump(renumber[t as usize]),
                Terminator::Branch {
                    cond,
                    then,
                    otherwise,
                } => Terminator::Branch {
                    cond,
                    then: renumber[then as usize],
                    otherwise: renumber[otherwise as usize],
                },
                r => r,
            };
            b
        })
        .collect()
}

fn arith(op: BinOp) -> BinaryOp {
    match op {
        BinOp::Mul => BinaryOp::Mul,
        BinOp::Div => BinaryOp::Div,
        BinOp::Mod => BinaryOp::Rem,
        BinOp::Add => BinaryOp::Add,
        BinOp::Sub => BinaryOp::Sub,
        BinOp::Shl => BinaryOp::Shl,
        BinOp::Shr => BinaryOp::Shr,
        BinOp::BitAnd => BinaryOp::And,
        BinOp::BitXor => BinaryOp::Xor,
        BinOp::BitOr => BinaryOp::Or,
        BinOp::Eq => BinaryOp::Eq,
        BinOp::Ne => BinaryOp::Ne,
        BinOp::Lt => BinaryOp::Lt,
        BinOp::Gt => BinaryOp::Gt,
        BinOp::Le => BinaryOp::Le,
        BinOp::Ge => BinaryOp::Ge,
        // lowered with branches in `logical`
        BinOp::LogAnd | BinOp::LogOr => BinaryOp::And,
    }
}
