//! `tsvector` and `tsquery` as PostgreSQL prints them, from their binary forms.

use std::fmt::Write as _;

use super::binary::Reader;

/// `'word'` with `'` and `\` doubled.
fn push_quoted(s: &mut String, word: &str) {
    s.push('\'');
    for c in word.chars() {
        if c == '\'' || c == '\\' {
            s.push(c);
        }
        s.push(c);
    }
    s.push('\'');
}

/// `tsvector`: `'lexeme':1A,2 'other'`.
pub(super) fn tsvector(b: &[u8]) -> Option<String> {
    let mut r = Reader(b);
    let n = r.u32()?;
    let mut s = String::with_capacity(b.len() + 8);
    for i in 0..n {
        if i > 0 {
            s.push(' ');
        }
        push_quoted(&mut s, r.cstr()?);
        for j in 0..r.u16()? {
            s.push(if j == 0 { ':' } else { ',' });
            let pos = r.u16()?;
            let _ = write!(s, "{}", pos & 0x3fff);
            // The weight is in the top two bits; D (0) is not printed.
            s.push_str(["", "C", "B", "A"][usize::from(pos >> 14)]);
        }
    }
    r.0.is_empty().then_some(s)
}

const OP_NOT: u8 = 1;
const OP_AND: u8 = 2;
const OP_OR: u8 = 3;
const OP_PHRASE: u8 = 4;

/// A parsed `tsquery` node.
enum Node<'a> {
    Operand { word: &'a str, weight: u8, prefix: bool },
    Not(Box<Node<'a>>),
    Binary { op: u8, distance: i16, left: Box<Node<'a>>, right: Box<Node<'a>> },
}

/// Operators nested deeper than this are not decoded (the recursion is bounded).
const MAX_DEPTH: usize = 2000;

/// The items are in prefix order, an operator's right operand before its left one.
fn node<'a>(r: &mut Reader<'a>, budget: &mut u32, depth: usize) -> Option<Node<'a>> {
    *budget = budget.checked_sub(1)?;
    if depth > MAX_DEPTH {
        return None;
    }
    match r.u8()? {
        1 => {
            let weight = r.u8()?;
            let prefix = r.u8()? != 0;
            Some(Node::Operand { word: r.cstr()?, weight, prefix })
        }
        2 => match r.u8()? {
            OP_NOT => Some(Node::Not(Box::new(node(r, budget, depth + 1)?))),
            op @ (OP_AND | OP_OR | OP_PHRASE) => {
                let distance = if op == OP_PHRASE { r.u16()?.cast_signed() } else { 0 };
                let right = Box::new(node(r, budget, depth + 1)?);
                let left = Box::new(node(r, budget, depth + 1)?);
                Some(Node::Binary { op, distance, left, right })
            }
            _ => None,
        },
        _ => None,
    }
}

fn priority(op: u8) -> i32 {
    match op {
        OP_NOT => 4,
        OP_PHRASE => 3,
        OP_AND => 2,
        _ => 1,
    }
}

/// Prints `n` in infix form, with parentheses where the operator binds less tightly than its
/// parent's, and around a phrase that is the right operand of a phrase.
fn infix(s: &mut String, n: &Node<'_>, parent: i32, right_of_phrase: bool) {
    match n {
        Node::Operand { word, weight, prefix } => {
            push_quoted(s, word);
            if *weight != 0 || *prefix {
                s.push(':');
                if *prefix {
                    s.push('*');
                }
                for (bit, c) in [(8, 'A'), (4, 'B'), (2, 'C'), (1, 'D')] {
                    if weight & bit != 0 {
                        s.push(c);
                    }
                }
            }
        }
        Node::Not(child) => {
            let p = priority(OP_NOT);
            let paren = p < parent;
            s.push_str(if paren { "( !" } else { "!" });
            infix(s, child, p, false);
            if paren {
                s.push_str(" )");
            }
        }
        Node::Binary { op, distance, left, right } => {
            let p = priority(*op);
            let paren = p < parent || (*op == OP_PHRASE && right_of_phrase);
            if paren {
                s.push_str("( ");
            }
            infix(s, left, p, false);
            match (*op, distance) {
                (OP_OR, _) => s.push_str(" | "),
                (OP_AND, _) => s.push_str(" & "),
                (_, 1) => s.push_str(" <-> "),
                (_, d) => {
                    let _ = write!(s, " <{d}> ");
                }
            }
            infix(s, right, p, *op == OP_PHRASE);
            if paren {
                s.push_str(" )");
            }
        }
    }
}

/// `tsquery`: `'fat' & ( 'rat' | !'cat' )`; empty for an empty query.
pub(super) fn tsquery(b: &[u8]) -> Option<String> {
    let mut r = Reader(b);
    let mut budget = r.u32()?;
    let mut s = String::with_capacity(b.len() + 8);
    if budget > 0 {
        let root = node(&mut r, &mut budget, 0)?;
        if budget != 0 {
            return None;
        }
        infix(&mut s, &root, -1, false);
    }
    r.0.is_empty().then_some(s)
}
