//! The CloudWatch metric math subset the emulator evaluates:
//!
//! ```text
//! expr   := term (('+' | '-') term)*
//! term   := factor (('*' | '/') factor)*
//! factor := number | id | '(' expr ')' | '-' factor | FILL '(' expr ',' number ')'
//! ```
//!
//! `id` names another query of the request. Series combine on their common timestamps (a
//! timestamp missing on one side has no value, as in CloudWatch); a division by zero has no
//! value; `FILL(x, v)` gives `v` where `x` has none among the other series' timestamps.

use crate::query_cursor::{Cursor, arithmetic, is_name_byte};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    Id(String),
    Neg(Box<Expr>),
    Bin(Box<Expr>, char, Box<Expr>),
    Fill(Box<Expr>, f64),
}

/// Values by timestamp (Unix seconds).
pub type Series = BTreeMap<i64, f64>;

/// A value of the math: a number or a series.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Scalar(f64),
    Series(Series),
}

pub fn parse(text: &str) -> Result<Expr, String> {
    let mut c = Cursor::new(text);
    let e = expr(&mut c)?;
    if c.peek().is_some() {
        return Err(format!("Unexpected character at position {}", c.pos() + 1));
    }
    Ok(e)
}

/// The ids an expression reads.
pub fn ids(e: &Expr, out: &mut Vec<String>) {
    match e {
        Expr::Id(id) => out.push(id.clone()),
        Expr::Neg(x) | Expr::Fill(x, _) => ids(x, out),
        Expr::Bin(a, _, b) => {
            ids(a, out);
            ids(b, out);
        }
        Expr::Number(_) => {}
    }
}

/// Evaluates `e` with the series of each id; `all` holds every timestamp of the request's
/// series (where `FILL` fills).
pub fn eval(e: &Expr, series: &dyn Fn(&str) -> Option<Series>, all: &[i64]) -> Result<Val, String> {
    Ok(match e {
        Expr::Number(n) => Val::Scalar(*n),
        Expr::Id(id) => Val::Series(series(id).ok_or_else(|| format!("Unrecognized id: {id}"))?),
        Expr::Neg(x) => combine(Val::Scalar(0.0), '-', eval(x, series, all)?),
        Expr::Bin(a, op, b) => combine(eval(a, series, all)?, *op, eval(b, series, all)?),
        Expr::Fill(x, v) => match eval(x, series, all)? {
            Val::Scalar(s) => Val::Scalar(s),
            Val::Series(mut s) => {
                for t in all {
                    s.entry(*t).or_insert(*v);
                }
                Val::Series(s)
            }
        },
    })
}

fn apply(op: char, a: f64, b: f64) -> Option<f64> {
    match op {
        '+' => Some(a + b),
        '-' => Some(a - b),
        '*' => Some(a * b),
        _ => (b != 0.0).then(|| a / b),
    }
}

fn combine(a: Val, op: char, b: Val) -> Val {
    match (a, b) {
        (Val::Scalar(x), Val::Scalar(y)) => Val::Scalar(apply(op, x, y).unwrap_or(f64::NAN)),
        (Val::Scalar(x), Val::Series(s)) => Val::Series(
            s.into_iter()
                .filter_map(|(t, y)| apply(op, x, y).map(|v| (t, v)))
                .collect(),
        ),
        (Val::Series(s), Val::Scalar(y)) => Val::Series(
            s.into_iter()
                .filter_map(|(t, x)| apply(op, x, y).map(|v| (t, v)))
                .collect(),
        ),
        (Val::Series(a), Val::Series(b)) => Val::Series(
            a.into_iter()
                .filter_map(|(t, x)| b.get(&t).and_then(|y| apply(op, x, *y)).map(|v| (t, v)))
                .collect(),
        ),
    }
}

fn expr(c: &mut Cursor<'_>) -> Result<Expr, String> {
    arithmetic(c, factor, |a, op, b| {
        Expr::Bin(Box::new(a), op, Box::new(b))
    })
}

/// A number, its sign included (`FILL`'s value may be negative).
fn number(c: &mut Cursor<'_>) -> Result<f64, String> {
    c.skip_ws();
    let start = c.pos();
    let negative = c.eat_here("-");
    let n = c
        .number()
        .map_err(|_| format!("Invalid number at position {}", start + 1))?;
    Ok(if negative { -n } else { n })
}

fn factor(c: &mut Cursor<'_>) -> Result<Expr, String> {
    match c.peek() {
        None => Err("Unexpected end of expression".into()),
        Some(b'(') => {
            c.bump();
            let e = expr(c)?;
            close(c)?;
            Ok(e)
        }
        Some(b'-') => {
            c.bump();
            Ok(Expr::Neg(Box::new(factor(c)?)))
        }
        Some(b) if b.is_ascii_digit() || b == b'.' => number(c).map(Expr::Number),
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => id_or_fill(c),
        Some(_) => Err(format!("Unexpected character at position {}", c.pos() + 1)),
    }
}

/// An id, or `FILL(expr, number)`: the one function emulated.
fn id_or_fill(c: &mut Cursor<'_>) -> Result<Expr, String> {
    let name = c.take_while(is_name_byte);
    if c.peek() != Some(b'(') {
        return Ok(Expr::Id(name));
    }
    c.bump();
    if name != "FILL" {
        return Err(format!("Function {name} is not supported by the emulator"));
    }
    let inner = expr(c)?;
    if !c.eat(b',') {
        return Err("FILL takes two arguments".into());
    }
    let value = number(c)?;
    close(c)?;
    Ok(Expr::Fill(Box::new(inner), value))
}

/// The `)` of a group or of `FILL(`.
fn close(c: &mut Cursor<'_>) -> Result<(), String> {
    match c.eat(b')') {
        true => Ok(()),
        false => Err(format!("Expected ')' at position {}", c.pos() + 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_evaluates_on_common_timestamps() {
        let e = parse("100 * FILL(errors, 0) / requests").unwrap();
        let mut read = Vec::new();
        ids(&e, &mut read);
        assert_eq!(read, ["errors", "requests"]);
        let errors = Series::from([(60, 2.0)]);
        let requests = Series::from([(0, 10.0), (60, 20.0)]);
        let series = |id: &str| match id {
            "errors" => Some(errors.clone()),
            "requests" => Some(requests.clone()),
            _ => None,
        };
        let v = eval(&e, &series, &[0, 60]).unwrap();
        assert_eq!(v, Val::Series(Series::from([(0, 0.0), (60, 10.0)])));
        let e = parse("errors / requests").unwrap();
        assert_eq!(
            eval(&e, &series, &[0, 60]).unwrap(),
            Val::Series(Series::from([(60, 0.1)]))
        );
        assert!(parse("m1 +").is_err());
        assert!(parse("AVG(m1)").is_err());
        assert!(eval(&parse("m9").unwrap(), &series, &[]).is_err());
    }
}
