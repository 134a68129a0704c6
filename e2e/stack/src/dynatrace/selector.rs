//! The Dynatrace metric selector subset the emulator answers (Metrics API v2 selectors and
//! metric expressions), parsed into an expression tree.
//!
//! ```text
//! expr      := term (('+' | '-') term)*
//! term      := unary (('*' | '/') unary)*
//! unary     := '-' unary | '(' expr ')' | number | selector
//! selector  := key (':' transformation)*
//! key       := [builtin: | ext: | calc: | func:] name        name: letters, digits, . _ -
//! transformation := filter(cond) | splitBy(dim, ...) | names | default(number)
//!                 | avg | sum | min | max | count | value | median | percentile(n)
//! cond      := eq(dim, v) | ne(dim, v) | prefix(dim, v) | suffix(dim, v) | contains(dim, v)
//!            | in(dim, entitySelector("criterion, ...")) | existsKey(dim)
//!            | and(cond, ...) | or(cond, ...) | not(cond)
//! criterion := type(T) | entityId(id, ...) | entityName(n) | entityName.equals(n)
//!            | entityName.startsWith(n) | entityName.contains(n)
//! ```
//!
//! Arguments are quoted (`"..."`, where `~"` is a quote and `~~` a tilde) or bare (up to the
//! next `,` or `)`), as in Flagger's own example `filter(eq(Host,HOST-0990886B7D39FE29))`.

use crate::query_cursor::{Cursor, arithmetic};

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    Selector(Selector),
    Neg(Box<Expr>),
    Bin(Box<Expr>, char, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub key: String,
    pub transforms: Vec<Transform>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    Filter(Cond),
    SplitBy(Vec<String>),
    Names,
    Default(f64),
    Aggregate(Aggregation),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aggregation {
    Avg,
    Sum,
    Min,
    Max,
    Count,
    Value,
    Median,
    Percentile(f64),
}

impl Aggregation {
    pub fn name(self) -> String {
        match self {
            Aggregation::Avg => "avg".into(),
            Aggregation::Sum => "sum".into(),
            Aggregation::Min => "min".into(),
            Aggregation::Max => "max".into(),
            Aggregation::Count => "count".into(),
            Aggregation::Value => "value".into(),
            Aggregation::Median => "median".into(),
            Aggregation::Percentile(p) => format!("percentile({p})"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    /// `eq`, `ne`, `prefix`, `suffix`, `contains`: (function, dimension, value).
    Compare(String, String, String),
    In(String, Vec<Criterion>),
    Exists(String),
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Criterion {
    Type(String),
    Id(Vec<String>),
    /// Case-insensitive substring (`entityName(n)`, `entityName.contains(n)`).
    NameContains(String),
    NameEquals(String),
    /// Case-insensitive prefix.
    NameStartsWith(String),
}

/// An argument: a value, or a function applied to arguments.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    Value(String),
    Call(String, Vec<Term>),
}

const KEY_PREFIXES: [&str; 4] = ["builtin", "ext", "calc", "func"];

pub fn parse(text: &str) -> Result<Expr, String> {
    let mut c = cursor(text);
    let e = expr(&mut c)?;
    if c.peek().is_some() {
        return Err(format!(
            "unexpected {:?} at position {}",
            c.rest(),
            c.char_pos()
        ));
    }
    Ok(e)
}

/// Positions in messages count characters, and any Unicode whitespace separates.
fn cursor(text: &str) -> Cursor<'_> {
    Cursor::new(text).unicode_whitespace()
}

/// The criteria of an entity selector (the text inside `entitySelector("...")`).
fn entity_selector(text: &str) -> Result<Vec<Criterion>, String> {
    let mut c = cursor(text);
    let mut out = Vec::new();
    loop {
        out.push(criterion(term(&mut c)?)?);
        if c.peek().is_none() {
            return Ok(out);
        }
        if !c.eat(b',') {
            return Err(format!("entity selector: unexpected {:?}", c.rest()));
        }
    }
}

fn criterion(term: Term) -> Result<Criterion, String> {
    let Term::Call(name, args) = term else {
        return Err(format!("entity selector: {term:?} is not a criterion"));
    };
    let values: Vec<String> = args
        .into_iter()
        .map(|a| match a {
            Term::Value(v) => Ok(v),
            Term::Call(f, _) => Err(format!("entity selector: {f}(...) is not a value")),
        })
        .collect::<Result<_, _>>()?;
    let one = |values: &[String]| match values {
        [v] => Ok(v.clone()),
        _ => Err(format!("entity selector: {name} takes one value")),
    };
    Ok(match name.as_str() {
        "type" => Criterion::Type(one(&values)?),
        "entityId" if !values.is_empty() => Criterion::Id(values),
        "entityName" | "entityName.contains" => Criterion::NameContains(one(&values)?),
        "entityName.equals" => Criterion::NameEquals(one(&values)?),
        "entityName.startsWith" => Criterion::NameStartsWith(one(&values)?),
        other => return Err(format!("entity selector: {other} is not emulated")),
    })
}

fn cond(term: Term) -> Result<Cond, String> {
    let Term::Call(name, args) = term else {
        return Err(format!("{term:?} is not a condition"));
    };
    let value = |t: &Term| match t {
        Term::Value(v) => Ok(v.clone()),
        Term::Call(f, _) => Err(format!("{name}: {f}(...) is not a value")),
    };
    Ok(match (name.as_str(), args.as_slice()) {
        ("eq" | "ne" | "prefix" | "suffix" | "contains", [dim, v]) => {
            Cond::Compare(name.clone(), value(dim)?, value(v)?)
        }
        ("existsKey", [dim]) => Cond::Exists(value(dim)?),
        ("in", [dim, Term::Call(f, inner)]) if f == "entitySelector" => match inner.as_slice() {
            [Term::Value(text)] => Cond::In(value(dim)?, entity_selector(text)?),
            _ => return Err("entitySelector takes one quoted selector".into()),
        },
        ("and" | "or", conds) if !conds.is_empty() => {
            let conds = conds.iter().cloned().map(cond).collect::<Result<_, _>>()?;
            if name == "and" {
                Cond::And(conds)
            } else {
                Cond::Or(conds)
            }
        }
        ("not", [c]) => Cond::Not(Box::new(cond(c.clone())?)),
        (other, _) => {
            return Err(format!(
                "{other}(...) with {} arguments is not a condition the emulator knows",
                args.len()
            ));
        }
    })
}

fn expr(c: &mut Cursor<'_>) -> Result<Expr, String> {
    arithmetic(c, unary, |a, op, b| Expr::Bin(Box::new(a), op, Box::new(b)))
}

fn unary(c: &mut Cursor<'_>) -> Result<Expr, String> {
    match c.peek() {
        None => Err("unexpected end of the selector".into()),
        Some(b'-') => {
            c.bump();
            Ok(Expr::Neg(Box::new(unary(c)?)))
        }
        Some(b'(') => {
            c.bump();
            let e = expr(c)?;
            if !c.eat(b')') {
                return Err(format!("expected ')' at position {}", c.char_pos()));
            }
            Ok(e)
        }
        Some(b) if b.is_ascii_digit() || b == b'.' => c
            .number()
            .map(Expr::Number)
            .map_err(|text| format!("invalid number {text:?}")),
        Some(b) if b.is_ascii_alphabetic() => selector(c).map(Expr::Selector),
        Some(_) => Err(format!(
            "unexpected {:?} at position {}",
            c.rest(),
            c.char_pos()
        )),
    }
}

fn selector(c: &mut Cursor<'_>) -> Result<Selector, String> {
    let key_byte = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
    let mut key = c.take_while(key_byte);
    if KEY_PREFIXES.contains(&key.as_str()) && c.eat_here(":") {
        key.push(':');
        key.push_str(&c.take_while(key_byte));
    }
    let mut transforms = Vec::new();
    while c.eat_here(":") {
        let name = c.take_while(|b| b.is_ascii_alphabetic());
        let args = if c.eat_here("(") {
            Some(args(c)?)
        } else {
            None
        };
        transforms.push(transform(&name, args)?);
    }
    Ok(Selector { key, transforms })
}

/// Arguments up to the closing parenthesis (the opening one eaten).
fn args(c: &mut Cursor<'_>) -> Result<Vec<Term>, String> {
    let mut out = Vec::new();
    if c.eat(b')') {
        return Ok(out);
    }
    loop {
        out.push(term(c)?);
        if c.eat(b')') {
            return Ok(out);
        }
        if !c.eat(b',') {
            return Err(format!("expected ',' or ')' at position {}", c.char_pos()));
        }
    }
}

fn term(c: &mut Cursor<'_>) -> Result<Term, String> {
    if c.eat(b'"') {
        return quoted(c).map(Term::Value);
    }
    c.skip_ws();
    let bare = c.take_while(|b| !matches!(b, b',' | b'(' | b')' | b'"'));
    let bare = bare.trim().to_string();
    if bare.is_empty() {
        return Err(format!("expected a value at position {}", c.char_pos()));
    }
    if c.eat_here("(") {
        return Ok(Term::Call(bare, args(c)?));
    }
    Ok(Term::Value(bare))
}

/// A quoted value's text up to its closing quote (the opening one eaten): `~` escapes the
/// character after it.
fn quoted(c: &mut Cursor<'_>) -> Result<String, String> {
    let mut v = String::new();
    loop {
        match c.next_char() {
            None => return Err("unterminated quoted value".into()),
            Some('~') => match c.next_char() {
                Some(escaped) => v.push(escaped),
                None => return Err("a value ends in '~'".into()),
            },
            Some('"') => return Ok(v),
            Some(ch) => v.push(ch),
        }
    }
}

fn transform(name: &str, args: Option<Vec<Term>>) -> Result<Transform, String> {
    let values = |args: &[Term]| -> Result<Vec<String>, String> {
        args.iter()
            .map(|a| match a {
                Term::Value(v) => Ok(v.clone()),
                Term::Call(f, _) => Err(format!("{name}: {f}(...) is not a value")),
            })
            .collect()
    };
    let number = |args: &[Term]| -> Result<f64, String> {
        match values(args)?.as_slice() {
            [v] => v
                .parse()
                .map_err(|_| format!("{name}: {v:?} is not a number")),
            _ => Err(format!("{name} takes one number")),
        }
    };
    let args = args.unwrap_or_default();
    let plain = |t: Transform| match args.is_empty() {
        true => Ok(t),
        false => Err(format!("{name} takes no arguments")),
    };
    match name {
        "filter" => match args.as_slice() {
            [c] => Ok(Transform::Filter(cond(c.clone())?)),
            _ => Err("filter takes one condition".into()),
        },
        "splitBy" => Ok(Transform::SplitBy(values(&args)?)),
        "names" => plain(Transform::Names),
        "default" => Ok(Transform::Default(number(&args)?)),
        "avg" => plain(Transform::Aggregate(Aggregation::Avg)),
        "sum" => plain(Transform::Aggregate(Aggregation::Sum)),
        "min" => plain(Transform::Aggregate(Aggregation::Min)),
        "max" => plain(Transform::Aggregate(Aggregation::Max)),
        "count" => plain(Transform::Aggregate(Aggregation::Count)),
        "value" => plain(Transform::Aggregate(Aggregation::Value)),
        "median" => plain(Transform::Aggregate(Aggregation::Median)),
        "percentile" => {
            let p = number(&args)?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("percentile({p}) is not within 0..100"));
            }
            Ok(Transform::Aggregate(Aggregation::Percentile(p)))
        }
        "" => Err("a transformation name is expected after ':'".into()),
        other => Err(format!("the transformation {other} is not emulated")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn selector(e: Expr) -> Selector {
        match e {
            Expr::Selector(s) => s,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flaggers_examples_parse() {
        let s = selector(
            parse("builtin:service.response.time:filter(eq(dt.entity.service,SERVICE-ABCDEFG0123456789)):percentile(95)")
                .unwrap(),
        );
        assert_eq!(s.key, "builtin:service.response.time");
        assert_eq!(
            s.transforms,
            vec![
                Transform::Filter(Cond::Compare(
                    "eq".into(),
                    "dt.entity.service".into(),
                    "SERVICE-ABCDEFG0123456789".into()
                )),
                Transform::Aggregate(Aggregation::Percentile(95.0)),
            ]
        );
        let s = selector(
            parse("builtin:host.cpu.usage:filter(eq(Host,HOST-0990886B7D39FE29))").unwrap(),
        );
        assert_eq!(s.key, "builtin:host.cpu.usage");
    }

    #[test]
    fn entity_selectors_escapes_and_expressions() {
        let e = parse(
            "(builtin:service.errors.server.successCount:filter(in(\"dt.entity.service\",entitySelector(\"type(SERVICE),entityName.equals(~\"pod info~\")\"))):splitBy():sum \n\
             / builtin:service.requestCount.total:splitBy():sum) * 100",
        )
        .unwrap();
        let Expr::Bin(ratio, '*', hundred) = e else {
            panic!("{e:?}")
        };
        assert_eq!(*hundred, Expr::Number(100.0));
        let Expr::Bin(ok, '/', _) = *ratio else {
            panic!()
        };
        let ok = selector(*ok);
        assert_eq!(
            ok.transforms[0],
            Transform::Filter(Cond::In(
                "dt.entity.service".into(),
                vec![
                    Criterion::Type("SERVICE".into()),
                    Criterion::NameEquals("pod info".into())
                ]
            ))
        );
        assert_eq!(ok.transforms[1], Transform::SplitBy(vec![]));
        let s = selector(
            parse("ext:my-metric:filter(and(ne(a,\"x~~y\"),not(existsKey(b)))):names:default(0)")
                .unwrap(),
        );
        assert_eq!(s.key, "ext:my-metric");
        assert_eq!(
            s.transforms[0],
            Transform::Filter(Cond::And(vec![
                Cond::Compare("ne".into(), "a".into(), "x~y".into()),
                Cond::Not(Box::new(Cond::Exists("b".into())))
            ]))
        );
        assert_eq!(s.transforms[2], Transform::Default(0.0));
    }

    #[test]
    fn what_is_not_a_selector_is_an_error() {
        for bad in [
            "",
            "builtin:x:filter(",
            "builtin:x:filter(eq(a))",
            "builtin:x:rollup(avg)",
            "builtin:x:percentile(101)",
            "builtin:x:avg(1)",
            "builtin:x:filter(in(a,entitySelector(\"tag(x)\")))",
            "builtin:x:filter(eq(a,\"b)",
            "builtin:x)",
            "(builtin:x",
            "builtin:x:",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
