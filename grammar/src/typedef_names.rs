//! Typedef names as type tokens: C's "lexer hack", as a pass over the token stream.
//!
//! `word value = 1;` and `(word) x` only parse if the parser knows that `word` is a type.
//! HyperDbg's typedefs are per script and must come before their use, so one pass in
//! source order suffices: after `typedef ... NAME ;` every later `NAME` becomes
//! [`Tok::TypedefName`]. A name right after `struct`, `.` or `->` stays a name (struct tags
//! and members are other namespaces).

use std::collections::HashSet;

use crate::lexer::{LexError, Tok};

type Spanned<'s> = Result<(usize, Tok<'s>, usize), LexError>;

pub struct TypedefNames<'s, I> {
    inner: I,
    names: HashSet<&'s str>,
    /// Inside `typedef ... ;`: the last plain name seen is the one being declared.
    declaring: Option<Option<&'s str>>,
    /// The previous token keeps the next name a name (`struct`, `.`, `->`).
    keep_next: bool,
}

impl<'s, I: Iterator<Item = Spanned<'s>>> TypedefNames<'s, I> {
    pub fn new(inner: I) -> Self {
        TypedefNames {
            inner,
            names: HashSet::new(),
            declaring: None,
            keep_next: false,
        }
    }
}

impl<'s, I: Iterator<Item = Spanned<'s>>> Iterator for TypedefNames<'s, I> {
    type Item = Spanned<'s>;

    fn next(&mut self) -> Option<Spanned<'s>> {
        let (l, mut tok, r) = match self.inner.next()? {
            Ok(t) => t,
            Err(e) => return Some(Err(e)),
        };
        let keep = std::mem::replace(
            &mut self.keep_next,
            matches!(tok, Tok::Struct | Tok::Dot | Tok::Arrow),
        );
        match tok {
            Tok::Typedef => self.declaring = Some(None),
            Tok::Ident(name) if !keep && self.names.contains(name) => {
                tok = Tok::TypedefName(name);
            }
            Tok::Ident(name) if !keep => {
                if let Some(last) = &mut self.declaring {
                    *last = Some(name);
                }
            }
            Tok::Semi | Tok::LBrace | Tok::RBrace => {
                if let Some(Some(name)) = self.declaring.take() {
                    if tok == Tok::Semi {
                        self.names.insert(name);
                    }
                }
            }
            _ => {}
        }
        Some(Ok((l, tok, r)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lexer::Lexer;

    fn kinds(src: &str) -> Vec<String> {
        TypedefNames::new(Lexer::new(src))
            .map(|t| match t.unwrap().1 {
                Tok::Ident(n) => format!("id:{n}"),
                Tok::TypedefName(n) => format!("ty:{n}"),
                other => other.to_string(),
            })
            .collect()
    }

    #[test]
    fn names_become_types_after_their_typedef() {
        let k = kinds("x = word; typedef unsigned short word; word w = 1; s.word = 2;");
        assert_eq!(k[2], "id:word");
        assert!(k.contains(&"ty:word".to_string()));
        // `w` itself stays a name; a member named like the type stays a name.
        assert!(k.contains(&"id:w".to_string()));
        assert_eq!(k.iter().filter(|t| *t == "id:word").count(), 3);
    }

    #[test]
    fn struct_tags_are_not_typedef_names() {
        let k = kinds("typedef struct Node *PNODE; struct PNODE x; PNODE p;");
        assert!(k.contains(&"id:Node".to_string()));
        assert_eq!(k.iter().filter(|t| *t == "ty:PNODE").count(), 1);
    }
}
