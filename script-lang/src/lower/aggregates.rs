//! Lowering of HyperDbg v0.23's aggregates: `struct` definitions and forward
//! declarations, `typedef`, declarations with array dimensions and brace initializers,
//! the places `a[i]`, `s.m` and `p->m`, and struct copies.
//!
//! A local array or struct takes `ceil(size / 8)` consecutive local slots; its bytes are
//! packed there with C's x64 layout, and its elements and members are read and written
//! with their own width ([`Inst::Load`], [`Inst::Store`]). A struct pointer made by a cast
//! (`(struct T *) @rcx`) reaches guest memory the same way, with the same instructions:
//! the runtime decides from the address whether it is the script's own memory.
//!
//! Initializers are flattened as HyperDbg does: the expressions of nested braces fill the
//! scalar pieces of the variable in memory order, the rest is zero, and more expressions
//! than pieces is an error.

use hvscript_grammar::ast::{self, ArrayDim, Expr, ExprKind, Init, Name, NamedType, Span};
use hvscript_grammar::Diagnostic;

use super::{FnBuilder, Lowerer, Place, Val};
use crate::ir::{BinaryOp, Inst, NumTy, ScalarTy, Temp};
use crate::types::{StructLayout, Type};

/// Arrays and structs larger than this are refused: they live in the script's stack.
const MAX_AGGREGATE_BYTES: u64 = 64 * 1024;

impl Lowerer<'_> {
    /// The type a struct tag or typedef name denotes. `struct Tag` that was never seen is
    /// declared (incomplete) when it is only pointed to, as in C, and an error otherwise.
    pub(super) fn named_type(&mut self, named: &NamedType, pointed_to: bool) -> Option<Type> {
        match named {
            NamedType::Typedef(name) => match self.typedefs.get(&name.text) {
                Some(t) => Some(t.clone()),
                None => {
                    self.error(Diagnostic::error(
                        format!("unknown type `{}`", name.text),
                        name.span,
                    ));
                    None
                }
            },
            NamedType::Struct(tag) => match self.struct_tags.get(&tag.text) {
                Some(&id) => Some(self.struct_type(id)),
                None if pointed_to => Some(self.declare_struct(&tag.text)),
                None => {
                    self.error(
                        Diagnostic::error(format!("unknown struct `{}`", tag.text), tag.span)
                            .with_help(format!(
                                "define it first: struct {} {{ int member; }};",
                                tag.text
                            )),
                    );
                    None
                }
            },
        }
    }

    fn struct_type(&self, id: u32) -> Type {
        Type::Struct {
            id,
            tag: self.structs.structs[id as usize].tag.clone(),
        }
    }

    /// A new, incomplete struct.
    fn declare_struct(&mut self, tag: &str) -> Type {
        let id = self.structs.structs.len() as u32;
        self.structs.structs.push(StructLayout {
            tag: tag.into(),
            members: None,
            size: 0,
            align: 1,
        });
        self.struct_tags.insert(tag.to_string(), id);
        self.struct_type(id)
    }

    /// `struct Tag { ... };` or `struct Tag;`.
    pub(super) fn define_struct(&mut self, def: &ast::StructDef) {
        let ty = match self.struct_tags.get(&def.tag.text) {
            Some(&id) => self.struct_type(id),
            None => self.declare_struct(&def.tag.text),
        };
        let Type::Struct { id, .. } = ty else {
            return;
        };
        let Some(members) = &def.members else {
            return;
        };
        if self.structs.is_complete(id) {
            self.error(Diagnostic::error(
                format!("struct `{}` is already defined", def.tag.text),
                def.tag.span,
            ));
            return;
        }
        let mut resolved: Vec<(String, Type)> = Vec::with_capacity(members.len());
        for m in members {
            if resolved.iter().any(|(n, _)| *n == m.name.text) {
                self.error(Diagnostic::error(
                    format!(
                        "struct `{}` has two members named `{}`",
                        def.tag.text, m.name.text
                    ),
                    m.name.span,
                ));
                continue;
            }
            let Some(ty) = self.declared_type(&m.ty, &m.dims) else {
                continue;
            };
            if ty == Type::Void {
                self.error(Diagnostic::error("a member cannot be `void`", m.ty.span));
                continue;
            }
            if self.structs.size(&ty).is_none() {
                self.error(
                    Diagnostic::error(
                        format!(
                            "member `{}` has incomplete type `{ty}` (a struct cannot contain itself)",
                            m.name.text
                        ),
                        m.ty.span,
                    )
                    .with_help("point to it instead: struct Node *next;"),
                );
                continue;
            }
            resolved.push((m.name.text.clone(), ty));
        }
        match self.structs.layout(&resolved) {
            Ok((fields, size, align)) if size <= MAX_AGGREGATE_BYTES => {
                let s = &mut self.structs.structs[id as usize];
                s.members = Some(fields);
                s.size = size;
                s.align = align;
            }
            Ok((_, size, _)) => self.error(Diagnostic::error(
                format!(
                    "struct `{}` is {size} bytes; scripts keep structs up to {MAX_AGGREGATE_BYTES} bytes",
                    def.tag.text
                ),
                def.tag.span,
            )),
            Err(_) => {}
        }
    }

    /// `typedef TYPE NAME[dims];`
    pub(super) fn define_typedef(&mut self, ty: &ast::TypeName, name: &Name, dims: &[ArrayDim]) {
        let Some(t) = self.declared_type(ty, dims) else {
            return;
        };
        if let Some(old) = self.typedefs.get(&name.text) {
            if *old != t {
                self.error(Diagnostic::error(
                    format!("`{}` is already a typedef of `{old}`", name.text),
                    name.span,
                ));
            }
            return;
        }
        self.typedefs.insert(name.text.clone(), t);
    }

    /// A declared type with its array dimensions (`int t[3][4]`: 3 arrays of 4 ints).
    pub(super) fn declared_type(&mut self, ty: &ast::TypeName, dims: &[ArrayDim]) -> Option<Type> {
        let mut t = self.resolve_type(ty, dims.is_empty())?;
        for d in dims.iter().rev() {
            if d.len == 0 {
                self.error(Diagnostic::error(
                    "an array needs at least one element",
                    d.span,
                ));
                return None;
            }
            if t == Type::Void {
                self.error(Diagnostic::error("an array of `void`", ty.span));
                return None;
            }
            t = Type::Array {
                elem: Box::new(t),
                len: d.len,
            };
            if self
                .structs
                .size(&t)
                .is_none_or(|n| n > MAX_AGGREGATE_BYTES)
            {
                self.error(Diagnostic::error(
                    format!("`{t}` is larger than the {MAX_AGGREGATE_BYTES} bytes a script keeps"),
                    d.span,
                ));
                return None;
            }
        }
        Some(t)
    }

    /// Structs travel by pointer between functions: a by-value struct parameter or result
    /// does not fit the one-word calling convention.
    pub(super) fn by_value_check(&mut self, ty: Type, span: Span) -> Type {
        if ty.is_aggregate() {
            self.error(
                Diagnostic::error(
                    format!("a `{ty}` cannot be passed or returned by value"),
                    span,
                )
                .with_help(format!("pass a pointer: {ty} *")),
            );
            return Type::LONG;
        }
        ty
    }

    /// `TYPE name[dims] = init;` (the initializer is optional for anything holding structs).
    pub(super) fn declare(&mut self, f: &mut FnBuilder, d: &ast::VarDecl) {
        if self.function_index.contains_key(&d.name.text) {
            self.error(Diagnostic::error(
                format!("`{}` is a function", d.name.text),
                d.name.span,
            ));
        }
        let ty = self.declared_type(&d.ty, &d.dims);
        let Some(ty) = ty else {
            // Still check the initializer's own expressions.
            for e in d.init.iter().flat_map(|i| i.exprs()) {
                self.value(f, e);
            }
            return;
        };
        if ty.is_aggregate() {
            return self.declare_aggregate(f, d, ty);
        }
        let init = match &d.init {
            Some(Init::Expr(e)) => e,
            Some(Init::List { items, span }) => match items.as_slice() {
                // `int x = {5};` is C for `int x = 5;`
                [Init::Expr(e)] => e,
                _ => {
                    self.error(Diagnostic::error(
                        format!("a brace list of several values initializes an array or a struct, not `{ty}`"),
                        *span,
                    ));
                    return;
                }
            },
            None if ty.innermost_struct().is_some() => {
                // A struct pointer may start empty (HyperDbg's struct declarations).
                let slot = self.fresh_scalar(f, &d.name.text, ty);
                let zero = f.constant(0);
                f.emit(Inst::StoreLocal { slot, src: zero });
                return;
            }
            None => {
                self.error(
                    Diagnostic::error(
                        format!("`{}` is declared without an initializer", d.name.text),
                        d.name.span,
                    )
                    .with_help(format!(
                        "HyperDbg's variables are declared with a value: {} {} = 0;",
                        d.ty, d.name.text
                    )),
                );
                return;
            }
        };
        let v = self.value(f, init);
        let slot = self.fresh_scalar(f, &d.name.text, ty.clone());
        let src = self.convert(f, v, &ty, init.span);
        f.emit(Inst::StoreLocal { slot, src });
    }

    /// The slot of a declared scalar: a declaration with another type makes a new variable
    /// from here on (HyperDbg's scoping is textual: `for (int i = 0; ...)` after an
    /// implicit `i` is fine).
    fn fresh_scalar(&mut self, f: &mut FnBuilder, name: &str, ty: Type) -> u32 {
        if f.locals
            .get(name)
            .is_some_and(|&slot| f.local_types[slot as usize] != ty)
        {
            f.locals.remove(name);
        }
        f.local(name, ty)
    }

    fn declare_aggregate(&mut self, f: &mut FnBuilder, d: &ast::VarDecl, ty: Type) {
        let Some(size) = self.structs.size(&ty) else {
            let what = ty.innermost_struct().map_or(ty.to_string(), |id| {
                format!("struct {}", self.structs.structs[id as usize].tag)
            });
            self.error(
                Diagnostic::error(format!("`{what}` is declared but not defined"), d.ty.span)
                    .with_help("define its members before declaring a variable of it"),
            );
            return;
        };
        let holds_struct = ty.innermost_struct().is_some();
        if d.init.is_none() && !holds_struct {
            let dims = dims_text(&d.dims);
            self.error(Diagnostic::error(
                format!(
                    "array `{}` is declared without an initializer (`{} {}{dims} = {{0}};`)",
                    d.name.text, d.ty, d.name.text
                ),
                d.name.span,
            ));
            return;
        }
        // Evaluate a non-brace initializer before the new variable exists (`struct P a = a;`
        // reads an older `a`, or fails).
        let source = match &d.init {
            Some(Init::Expr(e)) => Some((self.value(f, e), e.span)),
            _ => None,
        };
        let slots = size.div_ceil(8).max(1) as u32;
        let slot = f.aggregate_local(&d.name.text, ty.clone(), slots);
        // Zero every slot first: initializers fill only what they name, and a declaration
        // inside a loop starts from zero on every pass.
        let zero = f.constant(0);
        for i in 0..slots {
            f.emit(Inst::StoreLocal {
                slot: slot + i,
                src: zero,
            });
        }
        let base = f.temp();
        f.emit(Inst::AddrLocal { dst: base, slot });
        match (&d.init, source) {
            (_, Some((_, span))) if matches!(ty, Type::Array { .. }) => {
                self.error(Diagnostic::error(
                    format!(
                        "an array is initialized with a brace list: {} {}[..] = {{...}};",
                        d.ty, d.name.text
                    ),
                    span,
                ))
            }
            (_, Some((v, span))) => self.store_aggregate(f, base, &ty, v, span),
            (Some(list @ Init::List { .. }), None) => {
                let mut leaves = Vec::new();
                self.structs.leaves(&ty, 0, &mut leaves);
                let exprs = list.exprs();
                if exprs.len() > leaves.len() {
                    let dims = dims_text(&d.dims);
                    self.error(Diagnostic::error(
                        format!(
                            "too many initializers for `{} {}{dims}` ({} given)",
                            d.ty,
                            d.name.text,
                            exprs.len()
                        ),
                        exprs[leaves.len()].span,
                    ));
                }
                for ((offset, leaf_ty), e) in leaves.into_iter().zip(exprs) {
                    let v = self.value(f, e);
                    let src = self.convert(f, v, &leaf_ty, e.span);
                    let addr = self.offset_address(f, base, offset, e.span);
                    if let Some(s) = leaf_ty.scalar() {
                        f.emit(Inst::Store {
                            addr,
                            src,
                            ty: s,
                            span: e.span,
                        });
                    }
                }
            }
            _ => {}
        }
    }

    /// `dst = v` for an aggregate destination: a struct of the same type is copied byte
    /// for byte; anything else is refused.
    pub(super) fn store_aggregate(
        &mut self,
        f: &mut FnBuilder,
        dst: Temp,
        ty: &Type,
        v: Val,
        span: Span,
    ) {
        match ty {
            Type::Struct { .. } if v.ty == *ty => {
                let size = self.structs.size(ty).unwrap_or(0);
                self.copy_bytes(f, dst, v.t, size, span);
            }
            Type::Array { .. } => self.error(
                Diagnostic::error(format!("an array (`{ty}`) cannot be assigned"), span)
                    .with_help("assign its elements one by one: a[0] = ...;"),
            ),
            _ => self.error(Diagnostic::error(
                format!("a `{}` cannot be assigned to a `{ty}`", v.ty),
                span,
            )),
        }
    }

    /// `base[index]`: an array element or what a pointer points to, `index` elements on.
    /// No bounds check, as in C and HyperDbg: the runtime checks the address.
    pub(super) fn index_place(
        &mut self,
        f: &mut FnBuilder,
        base: &Expr,
        index: &Expr,
        span: Span,
    ) -> Option<Place> {
        let b = self.value(f, base);
        let elem = match &b.ty {
            Type::Pointer(t) if **t != Type::Void => (**t).clone(),
            other => {
                self.error(Diagnostic::error(
                    format!(
                        "{} is not an array or a pointer (it is `{other}`): it cannot be indexed",
                        describe(base)
                    ),
                    span,
                ));
                return None;
            }
        };
        let i = self.value(f, index);
        if !i.ty.is_integer() {
            self.error(Diagnostic::error(
                format!("an index is an integer, not a `{}`", i.ty),
                index.span,
            ));
            return None;
        }
        let offset = self.scaled(f, &i, &elem, span);
        let addr = self.emit_binary(f, BinaryOp::Add, NumTy::U64, b.t, offset, span);
        Some(Place::Typed { addr, ty: elem })
    }

    /// `base.field` and `base->field`.
    pub(super) fn member_place(
        &mut self,
        f: &mut FnBuilder,
        base: &Expr,
        arrow: bool,
        field: &Name,
        span: Span,
    ) -> Option<Place> {
        let b = self.value(f, base);
        let pointee = match &b.ty {
            Type::Pointer(to) => match **to {
                Type::Struct { id, .. } => Some(id),
                _ => None,
            },
            _ => None,
        };
        let id = match (&b.ty, pointee, arrow) {
            (Type::Struct { id, .. }, _, false) => *id,
            (_, Some(id), true) => id,
            (Type::Struct { .. }, _, true) => {
                self.error(Diagnostic::error(
                    format!(
                        "`->` needs a pointer to a struct, but {} is a `{}` (use `.`)",
                        describe(base),
                        b.ty
                    ),
                    span,
                ));
                return None;
            }
            (_, Some(_), false) => {
                self.error(Diagnostic::error(
                    format!(
                        "{} is a pointer (`{}`): use `->` to reach `{}`",
                        describe(base),
                        b.ty,
                        field.text
                    ),
                    span,
                ));
                return None;
            }
            (other, _, _) => {
                self.error(Diagnostic::error(
                    format!(
                        "{} is not a struct (it is `{other}`): it has no member `{}`",
                        describe(base),
                        field.text
                    ),
                    span,
                ));
                return None;
            }
        };
        let tag = self.structs.structs[id as usize].tag.clone();
        if !self.structs.is_complete(id) {
            self.error(Diagnostic::error(
                format!("`struct {tag}` is declared but not defined: it has no members"),
                span,
            ));
            return None;
        }
        let Some(m) = self.structs.field(id, &field.text).cloned() else {
            self.error(Diagnostic::error(
                format!("`struct {tag}` has no member `{}`", field.text),
                span,
            ));
            return None;
        };
        let addr = self.offset_address(f, b.t, m.offset, span);
        Some(Place::Typed { addr, ty: m.ty })
    }

    /// `base + offset` as an address.
    fn offset_address(&mut self, f: &mut FnBuilder, base: Temp, offset: u64, span: Span) -> Temp {
        if offset == 0 {
            return base;
        }
        let off = f.constant(offset);
        self.emit_binary(f, BinaryOp::Add, NumTy::U64, base, off, span)
    }

    /// Copies `size` bytes from `src` to `dst` (struct assignment), widest pieces first.
    fn copy_bytes(&mut self, f: &mut FnBuilder, dst: Temp, src: Temp, size: u64, span: Span) {
        let mut at = 0;
        for (width, ty) in [
            (8, ScalarTy::U64),
            (4, ScalarTy::U32),
            (2, ScalarTy::U16),
            (1, ScalarTy::U8),
        ] {
            while size - at >= width {
                let from = self.offset_address(f, src, at, span);
                let to = self.offset_address(f, dst, at, span);
                let t = f.temp();
                f.emit(Inst::Load {
                    dst: t,
                    addr: from,
                    ty,
                    span,
                });
                f.emit(Inst::Store {
                    addr: to,
                    src: t,
                    ty,
                    span,
                });
                at += width;
            }
        }
    }
}

/// `[3][4]`: array dimensions as a message shows them.
fn dims_text(dims: &[ArrayDim]) -> String {
    dims.iter().map(|n| format!("[{}]", n.len)).collect()
}

/// How an error names the expression it is about.
fn describe(e: &Expr) -> String {
    fn text(e: &Expr) -> Option<String> {
        Some(match &e.kind {
            ExprKind::Local(n) => n.clone(),
            ExprKind::Global(n) => format!(".{n}"),
            ExprKind::Member { base, arrow, field } => {
                format!(
                    "{}{}{}",
                    text(base)?,
                    if *arrow { "->" } else { "." },
                    field.text
                )
            }
            ExprKind::Index { base, index } => format!("{}[{}]", text(base)?, text(index)?),
            ExprKind::Number(n) => format!("{n:#x}"),
            _ => return None,
        })
    }
    match text(e) {
        Some(t) => format!("`{t}`"),
        None => "this".into(),
    }
}
