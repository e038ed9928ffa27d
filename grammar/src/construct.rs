//! Building AST nodes from grammar actions, with the checks that belong to the syntax:
//! a statement that is only an expression must be a call, and assignment targets must be
//! places. These run inside the parser so the error points at the offending piece.

use lalrpop_util::ParseError;

use crate::ast::*;
use crate::lexer::{LexError, Tok, MAX_NESTING};

/// An error found while building the tree (or by the lexer), with its location.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntaxError {
    pub message: String,
    pub span: Span,
    pub help: Option<String>,
}

impl From<LexError> for SyntaxError {
    fn from(e: LexError) -> Self {
        let help = match &e.kind {
            crate::lexer::LexErrorKind::UnknownPseudoRegister(_) => Some(
                "pseudo-registers: $pid $tid $pname $core $proc $thread $peb $teb $ip $buffer $context \
                 $event_tag $event_id $event_stage (or $stage) $date $time"
                    .to_string(),
            ),
            crate::lexer::LexErrorKind::BadEscape(_) => {
                Some("escapes are \\n \\t \\\\ \\\" and \\x followed by 1-2 hex digits (1-4 in L\"...\")".into())
            }
            _ => None,
        };
        SyntaxError {
            message: e.kind.to_string(),
            span: e.span,
            help,
        }
    }
}

pub fn sp(l: usize, r: usize) -> Span {
    Span::new(l, r)
}

pub fn user<'s>(error: SyntaxError) -> ParseError<usize, Tok<'s>, SyntaxError> {
    ParseError::User { error }
}

fn describe(e: &Expr) -> &'static str {
    match &e.kind {
        ExprKind::Number(_) | ExprKind::Float(_) => "a number",
        ExprKind::Str(_) | ExprKind::WStr(_) => "a string",
        ExprKind::Pseudo(_) => "a pseudo-register (pseudo-registers are read-only)",
        ExprKind::Symbol(_) => "a symbol",
        ExprKind::Call { .. } => "a call",
        ExprKind::Unary { .. } | ExprKind::Binary { .. } => "an expression",
        _ => "this",
    }
}

fn place(e: Expr, what: &str) -> Result<Expr, SyntaxError> {
    if e.is_place() {
        return Ok(e);
    }
    Err(SyntaxError {
        message: format!("cannot {what} {}", describe(&e)),
        span: e.span,
        help: Some(
            "the target must be a variable, a global (.name), a register (@rax) or *address".into(),
        ),
    })
}

pub fn call_statement(e: Expr) -> Result<StmtKind, SyntaxError> {
    if matches!(e.kind, ExprKind::Call { .. }) {
        return Ok(StmtKind::Call(e));
    }
    Err(SyntaxError {
        message: "this expression does nothing on its own".into(),
        span: e.span,
        help: Some(
            "a statement is an assignment (x = ...;), x++; / x--;, or a call; to show a value use print(x); or printf(...);"
                .into(),
        ),
    })
}

pub fn assignment(first: Expr, mut rest: Vec<Expr>) -> Result<StmtKind, SyntaxError> {
    let value = rest
        .pop()
        .expect("the grammar gives at least one expression after `=`");
    let mut targets = Vec::with_capacity(rest.len() + 1);
    targets.push(place(first, "assign to")?);
    for t in rest {
        targets.push(place(t, "assign to")?);
    }
    Ok(StmtKind::Assign { targets, value })
}

pub fn compound(target: Expr, op: BinOp, value: Expr) -> Result<StmtKind, SyntaxError> {
    Ok(StmtKind::CompoundAssign {
        target: place(target, &format!("apply `{}=` to", op.symbol()))?,
        op,
        value,
    })
}

pub fn inc_dec(target: Expr, increment: bool) -> Result<StmtKind, SyntaxError> {
    let what = if increment { "increment" } else { "decrement" };
    Ok(StmtKind::IncDec {
        target: place(target, what)?,
        increment,
    })
}

pub fn binary(op: BinOp, lhs: Expr, rhs: Expr, span: Span) -> Result<Expr, SyntaxError> {
    node(
        ExprKind::Binary {
            op,
            lhs: Box::new(lhs),
            rhs: Box::new(rhs),
        },
        span,
    )
}

pub fn unary(op: UnOp, operand: Expr, span: Span) -> Result<Expr, SyntaxError> {
    node(
        ExprKind::Unary {
            op,
            operand: Box::new(operand),
        },
        span,
    )
}

/// A compound expression node (operator, call, index, member), refused if it would make the
/// tree deeper than [`MAX_NESTING`]. Every pass over the tree (printing, the checks, dropping
/// it, lowering in script-lang) recurses on it, so an unbounded depth (`~~~~...x`,
/// `1+1+...+1`, `poi(poi(...))`) would overflow the stack. All compound nodes are built here,
/// so children are within the limit and `height` recurses at most that deep.
pub fn node(kind: ExprKind, span: Span) -> Result<Expr, SyntaxError> {
    let e = Expr::new(kind, span);
    // Each level adds at least one byte (its operator or bracket) to the span, so a node
    // spanning few bytes cannot be deep: most nodes skip the walk.
    if (span.end.saturating_sub(span.start) as usize) <= MAX_NESTING || height(&e) <= MAX_NESTING {
        return Ok(e);
    }
    Err(SyntaxError {
        message: format!("expression nested more than {MAX_NESTING} deep"),
        span,
        help: Some("split it into several statements with temporary variables".into()),
    })
}

/// Levels of the expression tree: 1 for a leaf.
fn height(e: &Expr) -> usize {
    1 + match &e.kind {
        ExprKind::Unary { operand, .. } => height(operand),
        ExprKind::Binary { lhs, rhs, .. } => height(lhs).max(height(rhs)),
        ExprKind::Index { base, index } => height(base).max(height(index)),
        ExprKind::Member { base, .. } => height(base),
        ExprKind::Cast { operand, .. } | ExprKind::SizeofExpr(operand) => height(operand),
        ExprKind::SizeofType(_) => 0,
        ExprKind::Call { args, .. } => args.iter().map(height).max().unwrap_or(0),
        ExprKind::Number(_)
        | ExprKind::Float(_)
        | ExprKind::Str(_)
        | ExprKind::WStr(_)
        | ExprKind::Register(_)
        | ExprKind::Pseudo(_)
        | ExprKind::Local(_)
        | ExprKind::Global(_)
        | ExprKind::Symbol(_) => 0,
    }
}
