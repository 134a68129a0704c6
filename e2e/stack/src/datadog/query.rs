//! The Datadog metric query subset the emulator answers, parsed into an expression tree.
//!
//! ```text
//! expr   := term (('+' | '-') term)*
//! term   := factor (('*' | '/') factor)*
//! factor := number | '(' expr ')' | '-' factor | metric | name
//! metric := [aggr ':'] metric.name '{' scope '}' [by '{' tag, ... '}'] [.as_count() | .as_rate()]
//! scope  := '*' | item (',' item)*      item := [!]key:value   (value may use '*' globs)
//! ```
//!
//! `name` (a bare identifier) is only meaningful in v2 formulas (`a / b`).

use crate::query_cursor::{Cursor, arithmetic, is_name_byte};

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    Metric(MetricQuery),
    Name(String),
    Neg(Box<Expr>),
    Bin(Box<Expr>, char, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct MetricQuery {
    pub aggr: Option<String>,
    pub metric: String,
    /// `(negated, key, value)`; empty for `*`.
    pub scope: Vec<(bool, String, String)>,
    pub by: Vec<String>,
    /// `.as_rate()`: per second instead of per bucket.
    pub as_rate: bool,
    /// The scope as written (for the response's `scope`).
    pub scope_text: String,
}

pub fn parse(q: &str) -> Result<Expr, String> {
    let mut c = Cursor::new(q);
    let e = expr(&mut c)?;
    if c.peek().is_some() {
        return Err(format!("unexpected {:?} at position {}", c.rest(), c.pos()));
    }
    Ok(e)
}

fn expr(c: &mut Cursor<'_>) -> Result<Expr, String> {
    arithmetic(c, factor, |a, op, b| {
        Expr::Bin(Box::new(a), op, Box::new(b))
    })
}

fn factor(c: &mut Cursor<'_>) -> Result<Expr, String> {
    match c.peek() {
        None => Err("unexpected end of query".into()),
        Some(b'(') => {
            c.bump();
            let e = expr(c)?;
            if !c.eat(b')') {
                return Err(format!("expected ')' at position {}", c.pos()));
            }
            Ok(e)
        }
        Some(b'-') => {
            c.bump();
            Ok(Expr::Neg(Box::new(factor(c)?)))
        }
        Some(b) if b.is_ascii_digit() || b == b'.' => c
            .number()
            .map(Expr::Number)
            .map_err(|text| format!("invalid number {text:?}")),
        Some(b) if b.is_ascii_alphabetic() || b == b'_' => metric_or_name(c),
        Some(_) => Err(format!("unexpected {:?} at position {}", c.rest(), c.pos())),
    }
}

/// A metric name or an aggregator: letters, digits, `_` and `.`.
fn ident(c: &mut Cursor<'_>) -> String {
    c.take_while(|b| is_name_byte(b) || b == b'.')
}

/// Text up to the closing brace (the opening one already eaten), whitespace removed.
fn braced(c: &mut Cursor<'_>) -> Result<String, String> {
    let text = c.take_while(|b| b != b'}');
    if c.at_end() {
        return Err("missing '}'".into());
    }
    c.bump();
    Ok(text.split_whitespace().collect::<Vec<_>>().join(""))
}

fn metric_or_name(c: &mut Cursor<'_>) -> Result<Expr, String> {
    let first = ident(c);
    let (aggr, metric) = if c.eat_here(":") {
        c.skip_ws();
        (Some(first), ident(c))
    } else {
        (None, first)
    };
    if c.peek() != Some(b'{') {
        if aggr.is_some() {
            return Err(format!("expected '{{' after {metric}"));
        }
        return Ok(Expr::Name(metric));
    }
    c.bump();
    let scope_text = braced(c)?;
    let scope = scope(&scope_text)?;
    let by = by(c)?;
    let as_rate = as_rate(c)?;
    Ok(Expr::Metric(MetricQuery {
        aggr,
        metric,
        scope,
        by,
        as_rate,
        scope_text,
    }))
}

/// The items of a scope (`*` or none: no item).
fn scope(text: &str) -> Result<Vec<(bool, String, String)>, String> {
    let mut scope = Vec::new();
    if text != "*" && !text.is_empty() {
        for item in text.split(',') {
            let (neg, item) = match item.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            let (k, v) = item
                .split_once(':')
                .ok_or_else(|| format!("invalid scope item {item:?} (want key:value)"))?;
            scope.push((neg, k.to_string(), v.to_string()));
        }
    }
    Ok(scope)
}

/// `by {tag, ...}` if it follows.
fn by(c: &mut Cursor<'_>) -> Result<Vec<String>, String> {
    let save = c.pos();
    c.skip_ws();
    if !c.eat_here("by") {
        c.set_pos(save);
        return Ok(Vec::new());
    }
    if !c.eat(b'{') {
        return Err("expected '{' after by".into());
    }
    Ok(braced(c)?
        .split(',')
        .filter(|t| !t.is_empty())
        .map(String::from)
        .collect())
}

/// The functions that follow (`.as_count()`, `.as_rate()`): whether the last is `.as_rate()`.
fn as_rate(c: &mut Cursor<'_>) -> Result<bool, String> {
    let mut as_rate = false;
    while c.eat_here(".") {
        let f = ident(c);
        if !(c.eat(b'(') && c.eat(b')')) {
            return Err(format!("expected () after .{f}"));
        }
        match f.as_str() {
            "as_count" => as_rate = false,
            "as_rate" => as_rate = true,
            other => return Err(format!("unsupported function .{other}()")),
        }
    }
    Ok(as_rate)
}

/// Datadog-style glob: `*` matches any run of characters.
pub fn glob(pattern: &str, s: &str) -> bool {
    if !pattern.contains('*') {
        return pattern == s;
    }
    let re = format!(
        "^{}$",
        pattern
            .split('*')
            .map(regex::escape)
            .collect::<Vec<_>>()
            .join(".*")
    );
    regex::Regex::new(&re).is_ok_and(|r| r.is_match(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flaggers_datadog_example_shape() {
        let e = parse(
            "100 - (sum:istio.mesh.request.count{reporter:destination, destination_workload:podinfo, !response_code:404}.as_count() \
             / sum:istio.mesh.request.count{reporter:destination,destination_workload:podinfo}.as_count()) * 100",
        )
        .unwrap();
        let Expr::Bin(l, '-', r) = e else {
            panic!("{e:?}")
        };
        assert_eq!(*l, Expr::Number(100.0));
        let Expr::Bin(ratio, '*', _) = *r else {
            panic!()
        };
        let Expr::Bin(num, '/', _) = *ratio else {
            panic!()
        };
        let Expr::Metric(m) = *num else { panic!() };
        assert_eq!(m.aggr.as_deref(), Some("sum"));
        assert_eq!(m.metric, "istio.mesh.request.count");
        assert_eq!(m.scope[2], (true, "response_code".into(), "404".into()));
    }

    #[test]
    fn parses_by_and_rate_and_names() {
        let Expr::Metric(m) =
            parse("sum:trace.http.request.hits{service:web} by {kube_deployment}.as_rate()")
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(m.by, vec!["kube_deployment".to_string()]);
        assert!(m.as_rate);
        assert_eq!(
            parse("a / b").unwrap(),
            Expr::Bin(
                Box::new(Expr::Name("a".into())),
                '/',
                Box::new(Expr::Name("b".into()))
            )
        );
        assert!(parse("sum:x{").is_err());
        assert!(parse("sum:x{a:b}.rollup()").is_err());
        assert!(glob("podinfo*", "podinfo-primary") && !glob("podinfo", "podinfo-primary"));
    }
}
