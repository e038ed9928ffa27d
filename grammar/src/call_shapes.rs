//! The call-shape pass: every built-in call against its HyperDbg arity class.
//!
//! HyperDbg encodes these rules in its grammar (one production per class); here the
//! grammar accepts any call and this pass says precisely what is wrong: the argument
//! count, a string where only a value fits (or the wrong kind of string), a format that is
//! not a string literal, or a statement-only built-in (`printf`, `event_sc`, ...) used for
//! its value. User-function calls may not take strings.

use hvscript_abi::ArgKind;

use crate::ast::*;
use crate::diagnostic::Diagnostic;

/// Every call-shape error in the script.
pub fn check(script: &Script) -> Vec<Diagnostic> {
    let mut errors = Vec::new();
    for stmt in &script.stmts {
        stmt_(stmt, &mut errors);
    }
    errors
}

fn block(b: &Block, errors: &mut Vec<Diagnostic>) {
    for s in &b.stmts {
        stmt_(s, errors);
    }
}

fn stmt_(s: &Stmt, errors: &mut Vec<Diagnostic>) {
    match &s.kind {
        StmtKind::Assign { targets, value } => {
            for t in targets {
                expr(t, errors);
            }
            expr(value, errors);
        }
        StmtKind::CompoundAssign { target, value, .. } => {
            expr(target, errors);
            expr(value, errors);
        }
        StmtKind::IncDec { target, .. } => expr(target, errors),
        StmtKind::Call(call) => call_(call, true, errors),
        StmtKind::Decl(d) => {
            for e in d.init.iter().flat_map(|i| i.exprs()) {
                expr(e, errors);
            }
        }
        StmtKind::If { arms, otherwise } => {
            for arm in arms {
                expr(&arm.cond, errors);
                block(&arm.body, errors);
            }
            if let Some(b) = otherwise {
                block(b, errors);
            }
        }
        StmtKind::While { cond, body } | StmtKind::DoWhile { body, cond } => {
            expr(cond, errors);
            block(body, errors);
        }
        StmtKind::For {
            init,
            cond,
            step,
            body,
        } => {
            if let Some(i) = init {
                stmt_(i, errors);
            }
            expr(cond, errors);
            stmt_(step, errors);
            block(body, errors);
        }
        StmtKind::Return(Some(e)) => expr(e, errors),
        StmtKind::FuncDef(f) => block(&f.body, errors),
        StmtKind::Break
        | StmtKind::Continue
        | StmtKind::Return(None)
        | StmtKind::Include { .. }
        | StmtKind::StructDef(_)
        | StmtKind::Typedef { .. } => {}
    }
}

fn expr(e: &Expr, errors: &mut Vec<Diagnostic>) {
    match &e.kind {
        ExprKind::Call { .. } => call_(e, false, errors),
        ExprKind::Str(_) | ExprKind::WStr(_) => errors.push(
            Diagnostic::error("a string is not a value", e.span)
                .with_help("strings may only be arguments of printf, strlen, strcmp, strncmp, memcmp, wcslen, wcscmp and wcsncmp"),
        ),
        ExprKind::Unary { operand, .. } => expr(operand, errors),
        ExprKind::Binary { lhs, rhs, .. } => {
            expr(lhs, errors);
            expr(rhs, errors);
        }
        ExprKind::Index { base, index } => {
            expr(base, errors);
            expr(index, errors);
        }
        ExprKind::Member { base, .. } => expr(base, errors),
        ExprKind::Cast { operand, .. } | ExprKind::SizeofExpr(operand) => expr(operand, errors),
        ExprKind::SizeofType(_) => {}
        _ => {}
    }
}

fn call_(e: &Expr, as_statement: bool, errors: &mut Vec<Diagnostic>) {
    let ExprKind::Call {
        callee,
        callee_span,
        args,
    } = &e.kind
    else {
        return expr(e, errors);
    };
    let Callee::Builtin(b) = callee else {
        for a in args {
            if matches!(a.kind, ExprKind::Str(_) | ExprKind::WStr(_)) {
                errors.push(
                    Diagnostic::error("a string is not a value", a.span)
                        .with_label(format!("argument of user function `{}`", callee.name()))
                        .with_help("user functions take values; pass the address of a string in memory instead"),
                );
            } else {
                expr(a, errors);
            }
        }
        return;
    };
    let info = b.info();
    let shape = info.shape;
    if !as_statement && !shape.returns_value {
        errors.push(
            Diagnostic::error(
                format!("`{}` does not return a value", info.name),
                *callee_span,
            )
            .with_label("used inside an expression")
            .with_note(format!(
                "`{}` can only stand as a statement: {}(...);",
                info.name, info.name
            )),
        );
    }
    let count_ok =
        args.len() >= shape.min_args() && shape.max_args().is_none_or(|m| args.len() <= m);
    if !count_ok {
        let wanted = match shape.max_args() {
            Some(1) => "1 argument".to_string(),
            Some(n) => format!("{n} arguments"),
            None => format!(
                "at least {} argument{}",
                shape.min_args(),
                if shape.min_args() == 1 { "" } else { "s" }
            ),
        };
        errors.push(
            Diagnostic::error(
                format!(
                    "`{}` takes {wanted}, but {} were given",
                    info.name,
                    args.len()
                ),
                e.span,
            )
            .with_label(format!("{} ({})", info.name, info.summary)),
        );
    }
    for (i, a) in args.iter().enumerate() {
        let kind = shape.arg_kind(i);
        match (&a.kind, kind) {
            (ExprKind::Str(_), ArgKind::NarrowStrOrValue | ArgKind::Format) => {}
            (ExprKind::WStr(_), ArgKind::WideStrOrValue) => {}
            (ExprKind::WStr(_), ArgKind::NarrowStrOrValue | ArgKind::Format) => errors.push(
                Diagnostic::error(
                    format!("`{}` takes a narrow string here, not a wide one", info.name),
                    a.span,
                )
                .with_help("drop the L prefix"),
            ),
            (ExprKind::Str(_), ArgKind::WideStrOrValue) => errors.push(
                Diagnostic::error(format!("`{}` takes a wide string here", info.name), a.span)
                    .with_help("write it as L\"...\""),
            ),
            (ExprKind::Str(_) | ExprKind::WStr(_), ArgKind::Value) => {
                errors.push(Diagnostic::error(
                    format!(
                        "argument {} of `{}` must be a value, not a string",
                        i + 1,
                        info.name
                    ),
                    a.span,
                ))
            }
            (_, ArgKind::Format) => errors.push(
                Diagnostic::error(
                    format!("the format of `{}` must be a string literal", info.name),
                    a.span,
                )
                .with_help("printf(\"value: %llx\\n\", x);"),
            ),
            _ => expr(a, errors),
        }
    }
}
