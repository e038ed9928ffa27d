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
//! in a script that only runs in the post stage, and the parts of the v0.23 type system
//! that are not supported yet.

use std::collections::{BTreeMap, HashMap};

use hvscript_abi::Builtin;
use hvscript_grammar::ast::{
    self, BinOp, Callee, Expr, ExprKind, Span, Stmt, StmtKind, TypeWord, UnOp,
};
use hvscript_grammar::Diagnostic;

use crate::globals::Globals;
use crate::ir::*;

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
    };
    let mut main = FnBuilder::new("main".into(), false, true);
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
    params: usize,
    returns_value: bool,
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
    params: u32,
    loops: Vec<LoopTargets>,
    returns_value: bool,
    is_main: bool,
}

impl FnBuilder {
    fn new(name: String, returns_value: bool, is_main: bool) -> FnBuilder {
        FnBuilder {
            name,
            blocks: vec![(Vec::new(), None)],
            current: 0,
            temps: 0,
            locals: HashMap::new(),
            params: 0,
            loops: Vec::new(),
            returns_value,
            is_main,
        }
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

    fn local(&mut self, name: &str) -> u32 {
        let n = self.locals.len() as u32;
        *self.locals.entry(name.to_string()).or_insert(n)
    }

    fn constant(&mut self, value: u64) -> Temp {
        let t = self.temp();
        self.emit(Inst::Const { dst: t, value });
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
            locals: self.locals.len() as u32,
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
    Memory(Temp),
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
                let v = self.expr(f, value);
                for t in targets {
                    if let Some(p) = self.place(f, t, true) {
                        self.store(f, p, v, t.span);
                    }
                }
            }
            StmtKind::CompoundAssign { target, op, value } => {
                let Some(p) = self.place(f, target, false) else {
                    return;
                };
                let old = self.load(f, &p, target.span);
                let rhs = self.expr(f, value);
                let dst = f.temp();
                f.emit(Inst::Binary {
                    ty: NumTy::I64,
                    dst,
                    op: arith(*op),
                    lhs: old,
                    rhs,
                    span: s.span,
                });
                self.store(f, p, dst, target.span);
            }
            StmtKind::IncDec { target, increment } => {
                let Some(p) = self.place(f, target, false) else {
                    return;
                };
                let old = self.load(f, &p, target.span);
                let one = f.constant(1);
                let dst = f.temp();
                let op = if *increment {
                    BinaryOp::Add
                } else {
                    BinaryOp::Sub
                };
                f.emit(Inst::Binary {
                    ty: NumTy::I64,
                    dst,
                    op,
                    lhs: old,
                    rhs: one,
                    span: s.span,
                });
                self.store(f, p, dst, target.span);
            }
            StmtKind::Call(e) => {
                self.call(f, e, false);
            }
            StmtKind::Decl(d) => {
                self.check_scalar_type(&d.ty, false);
                let v = self.expr(f, &d.init);
                let slot = f.local(&d.name.text);
                if self.function_index.contains_key(&d.name.text) {
                    self.error(Diagnostic::error(
                        format!("`{}` is a function", d.name.text),
                        d.name.span,
                    ));
                }
                f.emit(Inst::StoreLocal { slot, src: v });
            }
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
                Diagnostic::error("#include is not supported by hvscript", s.span).with_help(
                    "pass the included script as another -f file, or paste its body here",
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
        let c = self.expr(f, cond);
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
                let t = self.expr(f, e);
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

    fn check_scalar_type(&mut self, ty: &ast::TypeName, allow_void: bool) -> bool {
        let words = &ty.words;
        if words
            .iter()
            .any(|w| matches!(w, TypeWord::Float | TypeWord::Double))
        {
            self.error(
                Diagnostic::error(
                    "`float` and `double` are part of the v0.23 type system, not supported yet",
                    ty.span,
                )
                .with_note("hvscript's core values are 64-bit integers"),
            );
            return false;
        }
        if ty.pointers > 0 {
            self.error(Diagnostic::error(
                "pointer types are part of the v0.23 type system, not supported yet",
                ty.span,
            ));
            return false;
        }
        let void = words.contains(&TypeWord::Void);
        if void && (!allow_void || words.len() > 1) {
            self.error(Diagnostic::error(
                "`void` is not a type for a value",
                ty.span,
            ));
            return false;
        }
        true
    }

    fn function(&mut self, def: &ast::FuncDef, span: Span) {
        self.check_scalar_type(&def.ret, true);
        let returns_value = !def.ret.words.contains(&TypeWord::Void);
        if self.function_index.contains_key(&def.name.text) {
            self.error(Diagnostic::error(
                format!("function `{}` is already defined", def.name.text),
                def.name.span,
            ));
            return;
        }
        let id = self.functions.len() as FuncId;
        self.functions.push(None);
        self.function_index.insert(
            def.name.text.clone(),
            FuncInfo {
                id,
                params: def.params.len(),
                returns_value,
            },
        );
        let mut fb = FnBuilder::new(def.name.text.clone(), returns_value, false);
        for p in &def.params {
            self.check_scalar_type(&p.ty, false);
            if fb.locals.contains_key(&p.name.text) {
                self.error(Diagnostic::error(
                    format!("parameter `{}` is declared twice", p.name.text),
                    p.name.span,
                ));
            }
            fb.local(&p.name.text);
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
                    Some(&s) => Some(Place::Local(s)),
                    None if define => Some(Place::Local(f.local(name))),
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
            } => Some(Place::Memory(self.expr(f, operand))),
            ExprKind::Index { .. } | ExprKind::Member { .. } => {
                self.unsupported_aggregate(e.span);
                None
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

    fn unsupported_aggregate(&mut self, span: Span) {
        self.error(Diagnostic::error(
            "arrays, structures and member access are part of the v0.23 type system, not supported yet",
            span,
        ));
    }

    fn load(&mut self, f: &mut FnBuilder, p: &Place, span: Span) -> Temp {
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
        }
        dst
    }

    fn store(&mut self, f: &mut FnBuilder, p: Place, src: Temp, span: Span) {
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
        }
    }

    // ------------------------------------------------------------------ expressions

    fn expr(&mut self, f: &mut FnBuilder, e: &Expr) -> Temp {
        match &e.kind {
            ExprKind::Number(n) => f.constant(*n),
            ExprKind::Float(_) => {
                self.error(Diagnostic::error(
                    "floating-point numbers are part of the v0.23 type system, not supported yet",
                    e.span,
                ));
                f.constant(0)
            }
            ExprKind::Str(_) | ExprKind::WStr(_) => {
                self.error(Diagnostic::error("a string is not a value", e.span));
                f.constant(0)
            }
            ExprKind::Register(reg) => {
                let dst = f.temp();
                f.emit(Inst::ReadReg { dst, reg: *reg });
                dst
            }
            ExprKind::Pseudo(reg) => {
                let dst = f.temp();
                f.emit(Inst::ReadPseudo { dst, reg: *reg });
                dst
            }
            ExprKind::Local(_) | ExprKind::Global(_) => match self.place(f, e, false) {
                Some(p) => self.load(f, &p, e.span),
                None => f.constant(0),
            },
            ExprKind::Symbol(name) => match self.options.symbols.get(name) {
                Some(&v) => f.constant(v),
                None => {
                    self.error(
                        Diagnostic::error(format!("unknown symbol `{name}`"), e.span)
                            .with_help("give the debugger its address, e.g. --sym nt!ExAllocatePoolWithTag=0xfffff80012345678"),
                    );
                    f.constant(0)
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
                let a = self.expr(f, lhs);
                let b = self.expr(f, rhs);
                let dst = f.temp();
                f.emit(Inst::Binary {
                    ty: NumTy::I64,
                    dst,
                    op: arith(*op),
                    lhs: a,
                    rhs: b,
                    span: e.span,
                });
                dst
            }
            ExprKind::Call { .. } => match self.call(f, e, true) {
                Some(t) => t,
                None => f.constant(0),
            },
            ExprKind::Index { .. } | ExprKind::Member { .. } => {
                self.unsupported_aggregate(e.span);
                f.constant(0)
            }
        }
    }

    fn unary(&mut self, f: &mut FnBuilder, op: UnOp, operand: &Expr, span: Span) -> Temp {
        match op {
            UnOp::Plus => self.expr(f, operand),
            UnOp::AddrOf => self.address_of(f, operand),
            UnOp::Deref => {
                let addr = self.expr(f, operand);
                let dst = f.temp();
                f.emit(Inst::CallBuiltin {
                    dst: Some(dst),
                    builtin: Builtin::Poi,
                    args: vec![Operand::Temp(addr)],
                    span,
                });
                dst
            }
            UnOp::Neg | UnOp::BitNot | UnOp::LogNot => {
                let src = self.expr(f, operand);
                let dst = f.temp();
                let op = match op {
                    UnOp::Neg => UnaryOp::Neg,
                    UnOp::BitNot => UnaryOp::Not,
                    _ => UnaryOp::LogNot,
                };
                f.emit(Inst::Unary {
                    dst,
                    op,
                    ty: NumTy::I64,
                    src,
                });
                dst
            }
        }
    }

    /// `&x` declares `x` when it is new (it starts at 0): the interlocked and spinlock
    /// idioms take the address of a counter before anything is stored in it.
    fn address_of(&mut self, f: &mut FnBuilder, operand: &Expr) -> Temp {
        let dst = f.temp();
        match &operand.kind {
            ExprKind::Local(_) | ExprKind::Global(_) => match self.place(f, operand, true) {
                Some(Place::Local(slot)) => f.emit(Inst::AddrLocal { dst, slot }),
                Some(Place::Global(slot)) => f.emit(Inst::AddrGlobal { dst, slot }),
                _ => f.emit(Inst::Const { dst, value: 0 }),
            },
            ExprKind::Unary {
                op: UnOp::Deref,
                operand: inner,
            } => return self.expr(f, inner),
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
        dst
    }

    /// `a && b`, `a || b`: short-circuit, result 0 or 1.
    fn logical(&mut self, f: &mut FnBuilder, is_and: bool, lhs: &Expr, rhs: &Expr) -> Temp {
        let result = f.temp();
        let a = self.expr(f, lhs);
        f.emit(Inst::Unary {
            ty: NumTy::I64,
            dst: result,
            op: UnaryOp::LogNot,
            src: a,
        });
        f.emit(Inst::Unary {
            ty: NumTy::I64,
            dst: result,
            op: UnaryOp::LogNot,
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
        let b = self.expr(f, rhs);
        f.emit(Inst::Unary {
            ty: NumTy::I64,
            dst: result,
            op: UnaryOp::LogNot,
            src: b,
        });
        f.emit(Inst::Unary {
            ty: NumTy::I64,
            dst: result,
            op: UnaryOp::LogNot,
            src: result,
        });
        f.terminate(Terminator::Jump(done));
        f.switch_to(done);
        result
    }

    /// A call; `want_value` when the result is used. Returns the result temp.
    fn call(&mut self, f: &mut FnBuilder, e: &Expr, want_value: bool) -> Option<Temp> {
        let ExprKind::Call {
            callee,
            callee_span,
            args,
        } = &e.kind
        else {
            return Some(self.expr(f, e));
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
                let (id, params, returns_value) = (info.id, info.params, info.returns_value);
                if args.len() != params {
                    self.error(Diagnostic::error(
                        format!(
                            "`{name}` takes {params} argument{}, but {} were given",
                            if params == 1 { "" } else { "s" },
                            args.len()
                        ),
                        e.span,
                    ));
                }
                if want_value && !returns_value {
                    self.error(Diagnostic::error(
                        format!("`{name}` is `void` and has no value"),
                        *callee_span,
                    ));
                }
                let args: Vec<Temp> = args.iter().map(|a| self.expr(f, a)).collect();
                let dst = (want_value || returns_value).then(|| f.temp());
                f.emit(Inst::CallUser {
                    dst,
                    func: id,
                    args,
                    span: e.span,
                });
                dst
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
    ) -> Option<Temp> {
        if b == Builtin::Reference {
            return Some(match args {
                [x] => self.address_of(f, x),
                _ => f.constant(0),
            });
        }
        if b == Builtin::EventSc && self.options.stage == StageUse::PostOnly {
            self.error(
                Diagnostic::error("`event_sc` in a script that only runs in the post stage", span)
                    .with_note("short-circuiting in the post stage is meaningless: the emulation has already happened"),
            );
        }
        if b == Builtin::Printf {
            self.check_printf(args);
        }
        let mut ops = Vec::with_capacity(args.len());
        for a in args {
            ops.push(match &a.kind {
                ExprKind::Str(s) => Operand::Str(self.intern(StrLit::Narrow(s.clone()))),
                ExprKind::WStr(s) => Operand::Str(self.intern(StrLit::Wide(s.clone()))),
                _ => Operand::Temp(self.expr(f, a)),
            });
        }
        let dst = (want_value && b.info().shape.returns_value).then(|| f.temp());
        f.emit(Inst::CallBuiltin {
            dst,
            builtin: b,
            args: ops,
            span,
        });
        dst
    }

    fn check_printf(&mut self, args: &[Expr]) {
        let Some(fmt) = args.first() else { return };
        let ExprKind::Str(bytes) = &fmt.kind else {
            return;
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
                        "specifiers: %d %i %u %o %x %X %c %p %s %ws %ls with l, ll or h (no flags, width or precision); %% prints %",
                    ),
                );
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
            }
            Ok(_) => {}
        }
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
