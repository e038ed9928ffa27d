//! A compact S-expression form of the AST: what `hvscript check --ast` shows and what the
//! snapshot tests record. Numbers print in hex, as HyperDbg reads them.

use std::fmt::Write;

use crate::ast::*;

pub fn script(s: &Script) -> String {
    let mut out = String::new();
    for st in &s.stmts {
        stmt(st, 0, &mut out);
    }
    out
}

fn indent(depth: usize, out: &mut String) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

fn block(b: &Block, depth: usize, out: &mut String) {
    for st in &b.stmts {
        stmt(st, depth, out);
    }
}

fn stmt(s: &Stmt, depth: usize, out: &mut String) {
    indent(depth, out);
    match &s.kind {
        StmtKind::Assign { targets, value } => {
            out.push_str("(=");
            for t in targets {
                let _ = write!(out, " {}", expr(t));
            }
            let _ = writeln!(out, " {})", expr(value));
        }
        StmtKind::CompoundAssign { target, op, value } => {
            let _ = writeln!(out, "({}= {} {})", op.symbol(), expr(target), expr(value));
        }
        StmtKind::IncDec { target, increment } => {
            let _ = writeln!(
                out,
                "({} {})",
                if *increment { "++" } else { "--" },
                expr(target)
            );
        }
        StmtKind::Call(c) => {
            let _ = writeln!(out, "{}", expr(c));
        }
        StmtKind::Decl(d) => {
            let dims: String = d.dims.iter().map(|n| format!("[{}]", n.len)).collect();
            let init = d
                .init
                .as_ref()
                .map(|i| format!(" {}", init(i)))
                .unwrap_or_default();
            let _ = writeln!(out, "(decl {} {}{dims}{init})", d.ty, d.name.text);
        }
        StmtKind::StructDef(def) => match &def.members {
            None => {
                let _ = writeln!(out, "(struct {})", def.tag.text);
            }
            Some(members) => {
                let _ = write!(out, "(struct {}", def.tag.text);
                for m in members {
                    let dims: String = m.dims.iter().map(|n| format!("[{}]", n.len)).collect();
                    let _ = write!(out, " ({} {}{dims})", m.ty, m.name.text);
                }
                out.push_str(")\n");
            }
        },
        StmtKind::Typedef { ty, name, dims } => {
            let dims: String = dims.iter().map(|n| format!("[{}]", n.len)).collect();
            let _ = writeln!(out, "(typedef {ty} {}{dims})", name.text);
        }
        StmtKind::If { arms, otherwise } => {
            for (i, arm) in arms.iter().enumerate() {
                if i > 0 {
                    indent(depth, out);
                }
                let _ = writeln!(
                    out,
                    "({} {}",
                    if i == 0 { "if" } else { "elsif" },
                    expr(&arm.cond)
                );
                block(&arm.body, depth + 1, out);
                indent(depth, out);
                out.push_str(")\n");
            }
            if let Some(b) = otherwise {
                indent(depth, out);
                out.push_str("(else\n");
                block(b, depth + 1, out);
                indent(depth, out);
                out.push_str(")\n");
            }
        }
        StmtKind::While { cond, body } => {
            let _ = writeln!(out, "(while {}", expr(cond));
            block(body, depth + 1, out);
            indent(depth, out);
            out.push_str(")\n");
        }
        StmtKind::DoWhile { body, cond } => {
            out.push_str("(do\n");
            block(body, depth + 1, out);
            indent(depth, out);
            let _ = writeln!(out, "while {})", expr(cond));
        }
        StmtKind::For {
            init,
            cond,
            step,
            body,
        } => {
            out.push_str("(for\n");
            if let Some(i) = init {
                stmt(i, depth + 2, out);
            } else {
                indent(depth + 2, out);
                out.push_str("()\n");
            }
            indent(depth + 2, out);
            let _ = writeln!(out, "{}", expr(cond));
            stmt(step, depth + 2, out);
            block(body, depth + 1, out);
            indent(depth, out);
            out.push_str(")\n");
        }
        StmtKind::Break => out.push_str("(break)\n"),
        StmtKind::Continue => out.push_str("(continue)\n"),
        StmtKind::Return(None) => out.push_str("(return)\n"),
        StmtKind::Return(Some(e)) => {
            let _ = writeln!(out, "(return {})", expr(e));
        }
        StmtKind::FuncDef(f) => {
            let _ = write!(out, "(fn {} {} (", f.ret, f.name.text);
            for (i, p) in f.params.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                let _ = write!(out, "{} {}", p.ty, p.name.text);
            }
            out.push_str(")\n");
            block(&f.body, depth + 1, out);
            indent(depth, out);
            out.push_str(")\n");
        }
        StmtKind::Include { path } => {
            let _ = writeln!(out, "(include {:?})", String::from_utf8_lossy(path));
        }
    }
}

fn init(i: &Init) -> String {
    match i {
        Init::Expr(e) => expr(e),
        Init::List { items, .. } => {
            let items: Vec<String> = items.iter().map(init).collect();
            format!("{{{}}}", items.join(" "))
        }
    }
}

/// One expression as an S-expression.
pub fn expr(e: &Expr) -> String {
    match &e.kind {
        ExprKind::Number(n) => format!("0x{n:x}"),
        ExprKind::Float(x) => format!("{x:?}"),
        ExprKind::Str(s) => format!("{:?}", String::from_utf8_lossy(s)),
        ExprKind::WStr(s) => format!("L{:?}", String::from_utf16_lossy(s)),
        ExprKind::Register(r) => format!("@{}", r.name()),
        ExprKind::Pseudo(p) => format!("${}", p.name()),
        ExprKind::Local(n) => n.clone(),
        ExprKind::Global(n) => format!(".{n}"),
        ExprKind::Symbol(s) => s.clone(),
        ExprKind::Unary { op, operand } => format!("({} {})", op.symbol(), expr(operand)),
        ExprKind::Binary { op, lhs, rhs } => {
            format!("({} {} {})", op.symbol(), expr(lhs), expr(rhs))
        }
        ExprKind::Call { callee, args, .. } => {
            let mut s = format!("({}", callee.name());
            for a in args {
                s.push(' ');
                s.push_str(&expr(a));
            }
            s.push(')');
            s
        }
        ExprKind::Index { base, index } => format!("([] {} {})", expr(base), expr(index)),
        ExprKind::Cast { ty, operand } => format!("(cast {ty} {})", expr(operand)),
        ExprKind::SizeofType(ty) => format!("(sizeof-type {ty})"),
        ExprKind::SizeofExpr(e) => format!("(sizeof {})", expr(e)),
        ExprKind::Member { base, arrow, field } => {
            format!(
                "({} {} {})",
                if *arrow { "->" } else { "." },
                expr(base),
                field.text
            )
        }
    }
}
