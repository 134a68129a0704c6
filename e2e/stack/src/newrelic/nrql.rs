//! The NRQL subset the New Relic emulator answers.
//!
//! ```text
//! [SELECT items | SELECT *] FROM EventType [SELECT items] [WHERE cond] [FACET attr]
//!     [SINCE n unit AGO] [UNTIL n unit AGO | UNTIL NOW] [LIMIT n]
//! items := expr [AS alias] (',' expr [AS alias])*
//! expr  := arithmetic (+ - * /, parentheses, numbers) over functions:
//!          count(*) | count(attr) | average(attr) | sum(attr) | percentile(attr, n, ...)
//!          | percentage(count(*), WHERE cond) | filter(function, WHERE cond)
//! cond  := comparisons (= != <> < <= > >=, LIKE, NOT LIKE, IN (...), NOT IN (...),
//!          IS NULL, IS NOT NULL, IS TRUE, IS FALSE) joined by AND, OR, NOT, parentheses
//! ```
//!
//! Keywords are case-insensitive; attribute names may be backquoted.

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub event_type: String,
    /// `SELECT *`: the events themselves.
    pub select_all: bool,
    pub items: Vec<Item>,
    pub filter: Option<Cond>,
    pub facet: Option<String>,
    /// Window: from `since` seconds ago until `until` seconds ago.
    pub since: f64,
    pub until: f64,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub expr: Expr,
    pub alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Number(f64),
    Func(Func),
    Neg(Box<Expr>),
    Bin(Box<Expr>, char, Box<Expr>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Func {
    Count(Option<String>),
    Average(String),
    Sum(String),
    Percentile(String, Vec<f64>),
    Percentage(Box<Func>, Cond),
    Filter(Box<Func>, Cond),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp(String, String, Lit),
    Like(String, String, bool),
    In(String, Vec<Lit>, bool),
    IsNull(String, bool),
    IsBool(String, bool),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Ident(String),
    Str(String),
    Num(f64),
    Sym(String),
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let cs: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    while let Some(&c) = cs.get(i) {
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' || c == '"' {
            let mut v = String::new();
            i += 1;
            loop {
                match cs.get(i) {
                    None => return Err("unterminated string".into()),
                    Some(&q) if q == c => {
                        // '' escapes a quote inside a string.
                        if cs.get(i + 1) == Some(&c) {
                            v.push(c);
                            i += 2;
                        } else {
                            i += 1;
                            break;
                        }
                    }
                    Some(&x) => {
                        v.push(x);
                        i += 1;
                    }
                }
            }
            out.push(Tok::Str(v));
        } else if c == '`' {
            let start = i + 1;
            i = start;
            while cs.get(i).is_some_and(|x| *x != '`') {
                i += 1;
            }
            if i >= cs.len() {
                return Err("unterminated backquote".into());
            }
            out.push(Tok::Ident(cs[start..i].iter().collect()));
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && cs.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            while cs.get(i).is_some_and(|x| x.is_ascii_digit() || *x == '.') {
                i += 1;
            }
            let t: String = cs[start..i].iter().collect();
            out.push(Tok::Num(
                t.parse().map_err(|_| format!("invalid number {t}"))?,
            ));
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while cs
                .get(i)
                .is_some_and(|x| x.is_alphanumeric() || matches!(x, '_' | '.'))
            {
                i += 1;
            }
            out.push(Tok::Word(cs[start..i].iter().collect()));
        } else {
            let two: String = cs[i..(i + 2).min(cs.len())].iter().collect();
            if ["!=", "<>", "<=", ">="].contains(&two.as_str()) {
                out.push(Tok::Sym(two));
                i += 2;
            } else if "=<>(),*+-/".contains(c) {
                out.push(Tok::Sym(c.to_string()));
                i += 1;
            } else {
                return Err(format!("unexpected character {c:?}"));
            }
        }
    }
    Ok(out)
}

struct P {
    toks: Vec<Tok>,
    i: usize,
}

const KEYWORDS: &[&str] = &[
    "select",
    "from",
    "where",
    "facet",
    "since",
    "until",
    "limit",
    "as",
    "and",
    "or",
    "not",
    "like",
    "in",
    "is",
    "ago",
    "timeseries",
];

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).cloned();
        self.i += 1;
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw))
    }

    fn kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), String> {
        if self.kw(kw) {
            Ok(())
        } else {
            Err(format!(
                "expected {} near {:?}",
                kw.to_uppercase(),
                self.peek()
            ))
        }
    }

    fn sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(x)) if x == s) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect_sym(&mut self, s: &str) -> Result<(), String> {
        if self.sym(s) {
            Ok(())
        } else {
            Err(format!("expected '{s}' near {:?}", self.peek()))
        }
    }

    fn attr(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Ident(a)) => Ok(a),
            Some(Tok::Word(w)) if !KEYWORDS.contains(&w.to_lowercase().as_str()) => Ok(w),
            t => Err(format!("expected an attribute, found {t:?}")),
        }
    }

    fn query(&mut self) -> Result<Query, String> {
        let mut q = Query {
            event_type: String::new(),
            select_all: false,
            items: Vec::new(),
            filter: None,
            facet: None,
            since: 3600.0,
            until: 0.0,
            limit: None,
        };
        while self.peek().is_some() {
            if self.kw("select") {
                if self.sym("*") {
                    q.select_all = true;
                } else {
                    q.items = self.items()?;
                }
            } else if self.kw("from") {
                q.event_type = self.attr()?;
            } else if self.kw("where") {
                let c = self.cond()?;
                q.filter = Some(match q.filter.take() {
                    Some(prev) => Cond::And(Box::new(prev), Box::new(c)),
                    None => c,
                });
            } else if self.kw("facet") {
                q.facet = Some(self.attr()?);
            } else if self.kw("since") {
                q.since = self.ago()?;
            } else if self.kw("until") {
                q.until = if self.kw("now") { 0.0 } else { self.ago()? };
            } else if self.kw("limit") {
                match self.next() {
                    Some(Tok::Num(n)) => q.limit = Some(n as usize),
                    Some(Tok::Word(w)) if w.eq_ignore_ascii_case("max") => q.limit = None,
                    t => return Err(format!("expected a number after LIMIT, found {t:?}")),
                }
            } else if self.is_kw("timeseries") || self.is_kw("compare") {
                return Err("TIMESERIES and COMPARE WITH are not emulated".into());
            } else {
                return Err(format!("unexpected {:?}", self.peek()));
            }
        }
        if q.event_type.is_empty() {
            return Err("missing FROM".into());
        }
        if q.items.is_empty() && !q.select_all {
            return Err("missing SELECT".into());
        }
        Ok(q)
    }

    /// `n unit AGO` in seconds.
    fn ago(&mut self) -> Result<f64, String> {
        let n = match self.next() {
            Some(Tok::Num(n)) => n,
            t => return Err(format!("expected a number, found {t:?}")),
        };
        let unit = match self.next() {
            Some(Tok::Word(w)) => w.to_lowercase(),
            t => return Err(format!("expected a time unit, found {t:?}")),
        };
        let secs = match unit.trim_end_matches('s') {
            "second" => 1.0,
            "minute" => 60.0,
            "hour" => 3600.0,
            "day" => 86400.0,
            "week" => 604800.0,
            _ => return Err(format!("unknown time unit {unit}")),
        };
        self.expect_kw("ago")?;
        Ok(n * secs)
    }

    fn items(&mut self) -> Result<Vec<Item>, String> {
        let mut items = Vec::new();
        loop {
            let expr = self.expr()?;
            let alias = if self.kw("as") {
                Some(match self.next() {
                    Some(Tok::Word(w) | Tok::Ident(w) | Tok::Str(w)) => w,
                    t => return Err(format!("expected an alias, found {t:?}")),
                })
            } else {
                None
            };
            items.push(Item { expr, alias });
            if !self.sym(",") {
                return Ok(items);
            }
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut e = self.term()?;
        loop {
            let op = if self.sym("+") {
                '+'
            } else if self.sym("-") {
                '-'
            } else {
                return Ok(e);
            };
            e = Expr::Bin(Box::new(e), op, Box::new(self.term()?));
        }
    }

    fn term(&mut self) -> Result<Expr, String> {
        let mut e = self.factor()?;
        loop {
            let op = if self.sym("*") {
                '*'
            } else if self.sym("/") {
                '/'
            } else {
                return Ok(e);
            };
            e = Expr::Bin(Box::new(e), op, Box::new(self.factor()?));
        }
    }

    fn factor(&mut self) -> Result<Expr, String> {
        if self.sym("(") {
            let e = self.expr()?;
            self.expect_sym(")")?;
            return Ok(e);
        }
        if self.sym("-") {
            return Ok(Expr::Neg(Box::new(self.factor()?)));
        }
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.i += 1;
                Ok(Expr::Number(n))
            }
            Some(Tok::Word(_)) => Ok(Expr::Func(self.func()?)),
            t => Err(format!("unexpected {t:?}")),
        }
    }

    fn func(&mut self) -> Result<Func, String> {
        let name = match self.next() {
            Some(Tok::Word(w)) => w.to_lowercase(),
            t => return Err(format!("expected a function, found {t:?}")),
        };
        self.expect_sym("(")?;
        let f = match name.as_str() {
            "count" => {
                if self.sym("*") {
                    Func::Count(None)
                } else {
                    Func::Count(Some(self.attr()?))
                }
            }
            "average" | "avg" => Func::Average(self.attr()?),
            "sum" => Func::Sum(self.attr()?),
            "percentile" => {
                let a = self.attr()?;
                let mut ps = Vec::new();
                while self.sym(",") {
                    match self.next() {
                        Some(Tok::Num(n)) => ps.push(n),
                        t => return Err(format!("expected a percentile, found {t:?}")),
                    }
                }
                if ps.is_empty() {
                    ps.push(50.0);
                }
                Func::Percentile(a, ps)
            }
            "percentage" | "filter" => {
                let inner = self.func()?;
                self.expect_sym(",")?;
                self.expect_kw("where")?;
                let c = self.cond()?;
                if name == "percentage" {
                    Func::Percentage(Box::new(inner), c)
                } else {
                    Func::Filter(Box::new(inner), c)
                }
            }
            other => return Err(format!("function {other}() is not emulated")),
        };
        self.expect_sym(")")?;
        Ok(f)
    }

    fn cond(&mut self) -> Result<Cond, String> {
        let mut c = self.conj()?;
        while self.kw("or") {
            c = Cond::Or(Box::new(c), Box::new(self.conj()?));
        }
        Ok(c)
    }

    fn conj(&mut self) -> Result<Cond, String> {
        let mut c = self.atom()?;
        while self.kw("and") {
            c = Cond::And(Box::new(c), Box::new(self.atom()?));
        }
        Ok(c)
    }

    fn lit(&mut self) -> Result<Lit, String> {
        match self.next() {
            Some(Tok::Str(s)) => Ok(Lit::Str(s)),
            Some(Tok::Num(n)) => Ok(Lit::Num(n)),
            Some(Tok::Sym(s)) if s == "-" => match self.next() {
                Some(Tok::Num(n)) => Ok(Lit::Num(-n)),
                t => Err(format!("expected a number, found {t:?}")),
            },
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("true") => Ok(Lit::Bool(true)),
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("false") => Ok(Lit::Bool(false)),
            t => Err(format!("expected a value, found {t:?}")),
        }
    }

    fn atom(&mut self) -> Result<Cond, String> {
        if self.kw("not") {
            return Ok(Cond::Not(Box::new(self.atom()?)));
        }
        if self.sym("(") {
            let c = self.cond()?;
            self.expect_sym(")")?;
            return Ok(c);
        }
        let a = self.attr()?;
        if self.kw("is") {
            let neg = self.kw("not");
            let c = if self.kw("null") {
                Cond::IsNull(a, !neg)
            } else if self.kw("true") {
                Cond::IsBool(a, !neg)
            } else if self.kw("false") {
                Cond::IsBool(a, neg)
            } else {
                return Err("expected NULL, TRUE or FALSE after IS".into());
            };
            return Ok(c);
        }
        let neg = self.kw("not");
        if self.kw("like") {
            return match self.next() {
                Some(Tok::Str(p)) => Ok(Cond::Like(a, p, neg)),
                t => Err(format!("expected a pattern, found {t:?}")),
            };
        }
        if self.kw("in") {
            self.expect_sym("(")?;
            let mut vs = vec![self.lit()?];
            while self.sym(",") {
                vs.push(self.lit()?);
            }
            self.expect_sym(")")?;
            return Ok(Cond::In(a, vs, neg));
        }
        if neg {
            return Err("expected LIKE or IN after NOT".into());
        }
        let op = match self.next() {
            Some(Tok::Sym(s)) if ["=", "!=", "<>", "<", "<=", ">", ">="].contains(&s.as_str()) => s,
            t => return Err(format!("expected a comparison after {a}, found {t:?}")),
        };
        Ok(Cond::Cmp(a, op, self.lit()?))
    }
}

pub fn parse(nrql: &str) -> Result<Query, String> {
    let mut p = P {
        toks: lex(nrql)?,
        i: 0,
    };
    p.query()
}

/// An attribute's value on an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Num(f64),
    Bool(bool),
}

impl Value {
    fn num(&self) -> Option<f64> {
        match self {
            Value::Num(n) => Some(*n),
            Value::Str(s) => s.parse().ok(),
            Value::Bool(_) => None,
        }
    }

    pub fn text(&self) -> String {
        match self {
            Value::Str(s) => s.clone(),
            Value::Num(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
        }
    }
}

fn lit_value(l: &Lit) -> Value {
    match l {
        Lit::Str(s) => Value::Str(s.clone()),
        Lit::Num(n) => Value::Num(*n),
        Lit::Bool(b) => Value::Bool(*b),
    }
}

fn equal(v: &Value, l: &Lit) -> bool {
    let lv = lit_value(l);
    match (v.num(), lv.num()) {
        (Some(a), Some(b)) => a == b,
        _ => v.text() == lv.text(),
    }
}

fn like(pattern: &str, s: &str) -> bool {
    let re = format!(
        "^{}$",
        pattern
            .split('%')
            .map(regex::escape)
            .collect::<Vec<_>>()
            .join(".*")
    );
    regex::Regex::new(&re).is_ok_and(|r| r.is_match(s))
}

/// Whether an event with these attributes matches.
pub fn matches(c: &Cond, attr: &dyn Fn(&str) -> Option<Value>) -> bool {
    match c {
        Cond::And(a, b) => matches(a, attr) && matches(b, attr),
        Cond::Or(a, b) => matches(a, attr) || matches(b, attr),
        Cond::Not(a) => !matches(a, attr),
        Cond::IsNull(a, null) => attr(a).is_none() == *null,
        Cond::IsBool(a, want) => attr(a) == Some(Value::Bool(*want)),
        Cond::Like(a, p, neg) => attr(a).is_some_and(|v| like(p, &v.text()) != *neg),
        Cond::In(a, ls, neg) => attr(a).is_some_and(|v| ls.iter().any(|l| equal(&v, l)) != *neg),
        Cond::Cmp(a, op, l) => {
            let Some(v) = attr(a) else { return false };
            match op.as_str() {
                "=" => equal(&v, l),
                "!=" | "<>" => !equal(&v, l),
                _ => {
                    let ord = match (v.num(), lit_value(l).num()) {
                        (Some(x), Some(y)) => x.partial_cmp(&y),
                        _ => Some(v.text().cmp(&lit_value(l).text())),
                    };
                    let Some(ord) = ord else { return false };
                    match op.as_str() {
                        "<" => ord.is_lt(),
                        "<=" => ord.is_le(),
                        ">" => ord.is_gt(),
                        _ => ord.is_ge(),
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flagger_and_argo_shapes() {
        let q = parse(
            "SELECT filter(count(*), WHERE httpResponseCode >= 500) / count(*) * 100 FROM Transaction \
             WHERE appName = 'podinfo' SINCE 60 seconds ago",
        )
        .unwrap();
        assert_eq!(q.event_type, "Transaction");
        assert_eq!(q.since, 60.0);
        assert!(matches!(q.items[0].expr, Expr::Bin(_, '*', _)));
        let q = parse(
            "FROM Transaction SELECT percentage(count(*), WHERE httpResponseCode != 500) as successRate \
             where appName = 'web' SINCE 5 minutes ago",
        )
        .unwrap();
        assert_eq!(q.items[0].alias.as_deref(), Some("successRate"));
        assert_eq!(q.since, 300.0);
        let q = parse("SELECT percentile(duration, 95, 99) FROM Transaction FACET appName LIMIT 5")
            .unwrap();
        assert_eq!(
            q.items[0].expr,
            Expr::Func(Func::Percentile("duration".into(), vec![95.0, 99.0]))
        );
        assert_eq!(q.facet.as_deref(), Some("appName"));
        assert!(parse("SELEC count(*) FROM Transaction").is_err());
        assert!(parse("SELECT count(*)").is_err());
        assert!(parse("SELECT uniqueCount(x) FROM Transaction").is_err());
    }

    #[test]
    fn conditions() {
        let attrs = |a: &str| match a {
            "httpResponseCode" => Some(Value::Str("503".into())),
            "appName" => Some(Value::Str("podinfo-primary".into())),
            "error" => Some(Value::Bool(true)),
            _ => None,
        };
        let q = |c: &str| {
            parse(&format!("SELECT count(*) FROM T WHERE {c}"))
                .unwrap()
                .filter
                .unwrap()
        };
        for (c, want) in [
            ("httpResponseCode >= 500", true),
            ("httpResponseCode = '503'", true),
            ("httpResponseCode LIKE '5%'", true),
            ("appName NOT LIKE '%primary'", false),
            ("appName IN ('a', 'podinfo-primary')", true),
            ("error IS TRUE AND NOT (appName = 'x')", true),
            ("missing IS NULL OR appName = 'x'", true),
            ("missing = 1", false),
        ] {
            assert_eq!(matches(&q(c), &attrs), want, "{c}");
        }
    }
}
