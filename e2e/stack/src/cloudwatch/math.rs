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
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let e = p.expr()?;
    p.ws();
    if p.i < p.s.len() {
        return Err(format!("Unexpected character at position {}", p.i + 1));
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

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.peek() == Some(c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut e = self.term()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.i += 1;
            e = Expr::Bin(Box::new(e), op as char, Box::new(self.term()?));
        }
        Ok(e)
    }

    fn term(&mut self) -> Result<Expr, String> {
        let mut e = self.factor()?;
        while let Some(op @ (b'*' | b'/')) = self.peek() {
            self.i += 1;
            e = Expr::Bin(Box::new(e), op as char, Box::new(self.factor()?));
        }
        Ok(e)
    }

    fn number(&mut self) -> Result<f64, String> {
        self.ws();
        let start = self.i;
        if self.s.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        while self
            .s
            .get(self.i)
            .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
        {
            self.i += 1;
        }
        let text = String::from_utf8_lossy(self.s.get(start..self.i).unwrap_or_default());
        text.parse()
            .map_err(|_| format!("Invalid number at position {}", start + 1))
    }

    fn factor(&mut self) -> Result<Expr, String> {
        match self.peek() {
            None => Err("Unexpected end of expression".into()),
            Some(b'(') => {
                self.i += 1;
                let e = self.expr()?;
                if !self.eat(b')') {
                    return Err(format!("Expected ')' at position {}", self.i + 1));
                }
                Ok(e)
            }
            Some(b'-') => {
                self.i += 1;
                Ok(Expr::Neg(Box::new(self.factor()?)))
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => self.number().map(Expr::Number),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
                {
                    self.i += 1;
                }
                let name = String::from_utf8_lossy(self.s.get(start..self.i).unwrap_or_default())
                    .into_owned();
                if self.peek() != Some(b'(') {
                    return Ok(Expr::Id(name));
                }
                self.i += 1;
                if name != "FILL" {
                    return Err(format!("Function {name} is not supported by the emulator"));
                }
                let inner = self.expr()?;
                if !self.eat(b',') {
                    return Err("FILL takes two arguments".into());
                }
                let value = self.number()?;
                if !self.eat(b')') {
                    return Err(format!("Expected ')' at position {}", self.i + 1));
                }
                Ok(Expr::Fill(Box::new(inner), value))
            }
            Some(_) => Err(format!("Unexpected character at position {}", self.i + 1)),
        }
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
