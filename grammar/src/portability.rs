//! The portability pass: warnings for scripts hvscript accepts but HyperDbg v0.23 rejects,
//! so a script written here can be carried to HyperDbg knowingly.
//!
//! - Nested unary operators in a condition (`if (~~x)`): HyperDbg's condition grammar
//!   allows one unary operator on a primary (`E10 -> op E12`). hvscript accepts nesting
//!   there as in every other expression; HyperDbg's own "correct" test cases use it.
//! - `$stage`: HyperDbg v0.23 only knows `$event_stage`.

use hvscript_abi::PseudoReg;

use crate::ast::*;
use crate::diagnostic::Diagnostic;

/// Every portability warning of the script.
pub fn check(script: &Script, src: &str) -> Vec<Diagnostic> {
    let mut w = Vec::new();
    for s in &script.stmts {
        stmt(s, src, &mut w);
    }
    w
}

fn block(b: &Block, src: &str, w: &mut Vec<Diagnostic>) {
    for s in &b.stmts {
        stmt(s, src, w);
    }
}

fn stmt(s: &Stmt, src: &str, w: &mut Vec<Diagnostic>) {
    match &s.kind {
        StmtKind::Assign { targets, value } => {
            targets.iter().for_each(|t| expr(t, false, src, w));
            expr(value, false, src, w);
        }
        StmtKind::CompoundAssign { target, value, .. } => {
            expr(target, false, src, w);
            expr(value, false, src, w);
        }
        StmtKind::IncDec { target, .. } => expr(target, false, src, w),
        StmtKind::Call(e) | StmtKind::Return(Some(e)) => expr(e, false, src, w),
        StmtKind::Decl(d) => {
            for e in d.init.iter().flat_map(|i| i.exprs()) {
                expr(e, false, src, w);
            }
        }
        StmtKind::If { arms, otherwise } => {
            for a in arms {
                expr(&a.cond, true, src, w);
                block(&a.body, src, w);
            }
            if let Some(b) = otherwise {
                block(b, src, w);
            }
        }
        StmtKind::While { cond, body } | StmtKind::DoWhile { body, cond } => {
            expr(cond, true, src, w);
            block(body, src, w);
        }
        StmtKind::For {
            init,
            cond,
            step,
            body,
        } => {
            if let Some(i) = init {
                stmt(i, src, w);
            }
            expr(cond, true, src, w);
            stmt(step, src, w);
            block(body, src, w);
        }
        StmtKind::FuncDef(f) => block(&f.body, src, w),
        StmtKind::Break
        | StmtKind::Continue
        | StmtKind::Return(None)
        | StmtKind::Include { .. }
        | StmtKind::StructDef(_)
        | StmtKind::Typedef { .. } => {}
    }
}

fn expr(e: &Expr, in_cond: bool, src: &str, w: &mut Vec<Diagnostic>) {
    match &e.kind {
        ExprKind::Pseudo(PseudoReg::EventStage) if src.get(e.span.range()) == Some("$stage") => w
            .push(
                Diagnostic::warning(
                    "HyperDbg v0.23 calls this pseudo-register `$event_stage`",
                    e.span,
                )
                .with_note("hvscript accepts both `$stage` and `$event_stage`"),
            ),
        ExprKind::Unary { operand, .. } => {
            if in_cond && matches!(operand.kind, ExprKind::Unary { .. }) {
                let between = src
                    .get(e.span.start as usize..operand.span.start as usize)
                    .unwrap_or("");
                if !between.contains('(') {
                    w.push(
                        Diagnostic::warning(
                            "HyperDbg rejects nested unary operators in a condition",
                            e.span,
                        )
                        .with_help("write it with parentheses, e.g. ~(~x), to run on HyperDbg too"),
                    );
                }
            }
            expr(operand, in_cond, src, w);
        }
        ExprKind::Binary { lhs, rhs, .. } => {
            expr(lhs, in_cond, src, w);
            expr(rhs, in_cond, src, w);
        }
        ExprKind::Call { args, .. } => args.iter().for_each(|a| expr(a, in_cond, src, w)),
        ExprKind::Index { base, index } => {
            expr(base, in_cond, src, w);
            expr(index, in_cond, src, w);
        }
        ExprKind::Member { base, .. } => expr(base, in_cond, src, w),
        ExprKind::Cast { operand, .. } | ExprKind::SizeofExpr(operand) => {
            expr(operand, in_cond, src, w)
        }
        ExprKind::SizeofType(_) => {}
        _ => {}
    }
}
