//! The Flux subset the InfluxDB emulator runs: one pipeline of function calls.
//!
//! ```text
//! query    := source ('|>' call)*           (`//` comments anywhere)
//! source   := from(bucket: "...") |> range(start: ..., stop: ...) | buckets()
//! call     := filter(fn:) | group(columns:, mode:) | keep(columns:) | drop(columns:)
//!           | sum() | mean() | count() | median() | quantile(q:) | min() | max() | first()
//!           | last() | aggregateWindow(every:, fn:, createEmpty:) | pivot(rowKey:,
//!             columnKey:, valueColumn:) | map(fn:) | toFloat() | sort(columns:, desc:)
//!           | limit(n:) | yield(name:)
//! fn       := (r) => expr
//! expr     := or/and/not, == != < <= > >= =~ !~, + - * / %, unary -, exists r.x,
//!             if .. then .. else .., r.x, r["x"], literals (int, float, "string",
//!             /regex/, duration 5m, time 2024-01-01T00:00:00Z, true, false), records
//!             {a: x, ...} and {r with a: x}, float(v:), int(v:), now()
//! ```
//!
//! Values are typed as Flux types them: an `int` and a `float` do not mix in arithmetic
//! (`float(v: r.n)`), as in InfluxDB. `range` start and stop: a negative duration from now,
//! a time, Unix seconds, or `now()`.

use regex::Regex;
use std::collections::BTreeMap;

/// A value of Flux.
#[derive(Debug, Clone)]
pub enum Val {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Unix seconds.
    Time(f64),
    /// Seconds.
    Dur(f64),
    Regex(Regex),
    Array(Vec<Val>),
    Record(Vec<(String, Val)>),
    Func(Vec<String>, Box<Expr>),
}

impl PartialEq for Val {
    fn eq(&self, other: &Val) -> bool {
        match (self, other) {
            (Val::Null, Val::Null) => true,
            (Val::Bool(a), Val::Bool(b)) => a == b,
            (Val::Int(a), Val::Int(b)) => a == b,
            (Val::Float(a), Val::Float(b)) => a == b,
            (Val::Int(a), Val::Float(b)) | (Val::Float(b), Val::Int(a)) => (*a as f64) == *b,
            (Val::Str(a), Val::Str(b)) => a == b,
            (Val::Time(a), Val::Time(b)) | (Val::Dur(a), Val::Dur(b)) => a == b,
            _ => false,
        }
    }
}

impl Val {
    /// A key for grouping and pivoting.
    pub fn key(&self) -> String {
        match self {
            Val::Null => String::new(),
            Val::Bool(b) => b.to_string(),
            Val::Int(i) => i.to_string(),
            Val::Float(f) => f.to_string(),
            Val::Str(s) => s.clone(),
            Val::Time(t) | Val::Dur(t) => t.to_string(),
            other => format!("{other:?}"),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool(_) => "bool",
            Val::Int(_) => "int",
            Val::Float(_) => "float",
            Val::Str(_) => "string",
            Val::Time(_) => "time",
            Val::Dur(_) => "duration",
            Val::Regex(_) => "regexp",
            Val::Array(_) => "array",
            Val::Record(_) => "record",
            Val::Func(..) => "function",
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Float(f) => Some(*f),
            _ => None,
        }
    }
}

/// A row: column name to value.
pub type Row = BTreeMap<String, Val>;

/// A table of the stream: its group key (columns, in order) and its rows.
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub key: Vec<String>,
    pub rows: Vec<Row>,
}

impl Table {
    /// A table of the same group key holding `rows` (rows derived from this table's).
    pub fn with_rows(&self, rows: Vec<Row>) -> Table {
        Table {
            key: self.key.clone(),
            rows,
        }
    }

    fn key_values(&self) -> Vec<(String, Val)> {
        let first = self.rows.first();
        self.key
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    first.and_then(|r| r.get(k)).cloned().unwrap_or(Val::Null),
                )
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Regex(String),
    Int(i64),
    Float(f64),
    Dur(f64),
    Time(f64),
    Sym(&'static str),
}

const SYMBOLS: &[&str] = &[
    "|>", "=>", "==", "!=", "=~", "!~", "<=", ">=", "<", ">", "=", "+", "-", "*", "/", "%", "(",
    ")", "{", "}", "[", "]", ",", ":", ".",
];

fn lex(text: &str) -> Result<Vec<Tok>, String> {
    let cs: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let time_re = Regex::new(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
        .map_err(|e| e.to_string())?;
    while let Some(&c) = cs.get(i) {
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && cs.get(i + 1) == Some(&'/') {
            while cs.get(i).is_some_and(|c| *c != '\n') {
                i += 1;
            }
        } else if c == '"' {
            let mut s = String::new();
            i += 1;
            loop {
                match cs.get(i) {
                    None => return Err("unterminated string literal".into()),
                    Some('"') => break,
                    Some('\\') => {
                        i += 1;
                        match cs.get(i) {
                            Some('n') => s.push('\n'),
                            Some('t') => s.push('\t'),
                            Some(&e) => s.push(e),
                            None => return Err("unterminated string literal".into()),
                        }
                    }
                    Some(&x) => s.push(x),
                }
                i += 1;
            }
            i += 1;
            out.push(Tok::Str(s));
        } else if c == '/'
            && matches!(
                out.last(),
                Some(Tok::Sym("=~" | "!~" | "(" | "," | ":" | "[" | "=="))
            )
        {
            let mut s = String::new();
            i += 1;
            loop {
                match cs.get(i) {
                    None | Some('\n') => return Err("unterminated regular expression".into()),
                    Some('/') => break,
                    Some('\\') if cs.get(i + 1) == Some(&'/') => {
                        s.push('/');
                        i += 1;
                    }
                    Some(&x) => s.push(x),
                }
                i += 1;
            }
            i += 1;
            out.push(Tok::Regex(s));
        } else if c.is_ascii_digit() {
            let rest: String = cs[i..cs.len().min(i + 40)].iter().collect();
            if let Some(m) = time_re.find(&rest) {
                let t = chrono::DateTime::parse_from_rfc3339(m.as_str())
                    .map_err(|e| format!("invalid time {}: {e}", m.as_str()))?;
                out.push(Tok::Time(
                    t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9,
                ));
                i += m.as_str().chars().count();
                continue;
            }
            let start = i;
            while cs.get(i).is_some_and(|x| x.is_ascii_digit() || *x == '.') {
                i += 1;
            }
            let number: String = cs[start..i].iter().collect();
            if cs.get(i).is_some_and(|x| x.is_ascii_alphabetic()) {
                // A duration: (number unit)+.
                let mut secs = 0.0;
                let mut j = start;
                while cs.get(j).is_some_and(char::is_ascii_digit) {
                    let n0 = j;
                    while cs.get(j).is_some_and(char::is_ascii_digit) {
                        j += 1;
                    }
                    let n: f64 = cs[n0..j]
                        .iter()
                        .collect::<String>()
                        .parse()
                        .map_err(|_| "invalid duration".to_string())?;
                    let u0 = j;
                    while cs
                        .get(j)
                        .is_some_and(|x| x.is_ascii_alphabetic() || *x == 'µ')
                    {
                        j += 1;
                    }
                    let unit: String = cs[u0..j].iter().collect();
                    secs += n * match unit.as_str() {
                        "ns" => 1e-9,
                        "us" | "µs" => 1e-6,
                        "ms" => 1e-3,
                        "s" => 1.0,
                        "m" => 60.0,
                        "h" => 3600.0,
                        "d" => 86400.0,
                        "w" => 7.0 * 86400.0,
                        "mo" => 30.0 * 86400.0,
                        "y" => 365.0 * 86400.0,
                        other => return Err(format!("invalid duration unit {other:?}")),
                    };
                }
                i = j;
                out.push(Tok::Dur(secs));
            } else if number.contains('.') {
                out.push(Tok::Float(
                    number
                        .parse()
                        .map_err(|_| format!("invalid number {number}"))?,
                ));
            } else {
                out.push(Tok::Int(
                    number
                        .parse()
                        .map_err(|_| format!("invalid integer {number}"))?,
                ));
            }
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while cs.get(i).is_some_and(|x| x.is_alphanumeric() || *x == '_') {
                i += 1;
            }
            out.push(Tok::Ident(cs[start..i].iter().collect()));
        } else {
            let rest: String = cs[i..cs.len().min(i + 2)].iter().collect();
            let Some(sym) = SYMBOLS.iter().find(|s| rest.starts_with(*s)) else {
                return Err(format!("invalid character {c:?}"));
            };
            i += sym.chars().count();
            out.push(Tok::Sym(sym));
        }
    }
    Ok(out)
}

/// An expression.
#[derive(Debug, Clone)]
pub enum Expr {
    Lit(Val),
    Ident(String),
    Member(Box<Expr>, String),
    Call(Box<Expr>, Vec<(String, Expr)>),
    Unary(&'static str, Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    Array(Vec<Expr>),
    Record(Option<Box<Expr>>, Vec<(String, Expr)>),
    Func(Vec<String>, Box<Expr>),
    If(Box<Expr>, Box<Expr>, Box<Expr>),
}

/// One call of the pipeline: its name and named arguments.
#[derive(Debug, Clone)]
pub struct Call {
    pub name: String,
    pub args: Vec<(String, Expr)>,
}

/// Parses a query into its pipeline.
pub fn parse(text: &str) -> Result<Vec<Call>, String> {
    let toks = lex(text)?;
    if toks.len() > MAX_TOKENS {
        return Err(format!("the query is too long ({} tokens)", toks.len()));
    }
    let mut p = Parser {
        toks,
        i: 0,
        depth: 0,
        nodes: 0,
    };
    let mut calls = vec![p.call()?];
    while p.eat("|>") {
        calls.push(p.call()?);
    }
    if let Some(t) = p.toks.get(p.i) {
        return Err(format!("unexpected {t:?} (the emulator runs one pipeline)"));
    }
    Ok(calls)
}

struct Parser {
    toks: Vec<Tok>,
    i: usize,
    depth: usize,
    /// Operator nodes so far: a long chain (`1+1+...`) nests as deep as its length.
    nodes: usize,
}

/// Bounds on a query, so that parsing and evaluating recurse boundedly.
const MAX_DEPTH: usize = 64;
const MAX_NODES: usize = 500;
const MAX_TOKENS: usize = 10_000;

impl Parser {
    /// Counts one operator node.
    fn node(&mut self) -> Result<(), String> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err("the expression is too large".into());
        }
        Ok(())
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }

    fn eat(&mut self, sym: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(s)) if *s == sym) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, sym: &str) -> Result<(), String> {
        if self.eat(sym) {
            Ok(())
        } else {
            Err(format!("expected {sym:?}, found {:?}", self.peek()))
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.toks.get(self.i).cloned() {
            Some(Tok::Ident(s)) => {
                self.i += 1;
                Ok(s)
            }
            other => Err(format!("expected a name, found {other:?}")),
        }
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s == w)
    }

    fn call(&mut self) -> Result<Call, String> {
        let name = self.ident()?;
        self.expect("(")?;
        let args = self.args()?;
        Ok(Call { name, args })
    }

    /// `name: expr, ...)`.
    fn args(&mut self) -> Result<Vec<(String, Expr)>, String> {
        let mut args = Vec::new();
        while !self.eat(")") {
            let name = self.ident()?;
            self.expect(":")?;
            args.push((name, self.expr()?));
            if !self.eat(",") {
                self.expect(")")?;
                break;
            }
        }
        Ok(args)
    }

    fn expr(&mut self) -> Result<Expr, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("expression nested too deep".into());
        }
        let e = self.or();
        self.depth -= 1;
        e
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut e = self.and()?;
        while self.is_word("or") {
            self.i += 1;
            self.node()?;
            e = Expr::Binary("or", Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut e = self.not()?;
        while self.is_word("and") {
            self.i += 1;
            self.node()?;
            e = Expr::Binary("and", Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.is_word("not") {
            self.i += 1;
            self.node()?;
            return Ok(Expr::Unary("not", Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, String> {
        let e = self.additive()?;
        for op in ["==", "!=", "=~", "!~", "<=", ">=", "<", ">"] {
            if self.eat(op) {
                self.node()?;
                return Ok(Expr::Binary(
                    op_name(op),
                    Box::new(e),
                    Box::new(self.additive()?),
                ));
            }
        }
        Ok(e)
    }

    fn additive(&mut self) -> Result<Expr, String> {
        let mut e = self.multiplicative()?;
        loop {
            let op = if self.eat("+") {
                "+"
            } else if self.eat("-") {
                "-"
            } else {
                return Ok(e);
            };
            self.node()?;
            e = Expr::Binary(op, Box::new(e), Box::new(self.multiplicative()?));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, String> {
        let mut e = self.unary()?;
        loop {
            let op = if self.eat("*") {
                "*"
            } else if self.eat("/") {
                "/"
            } else if self.eat("%") {
                "%"
            } else {
                return Ok(e);
            };
            self.node()?;
            e = Expr::Binary(op, Box::new(e), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.eat("-") {
            self.node()?;
            return Ok(Expr::Unary("-", Box::new(self.unary()?)));
        }
        if self.is_word("exists") {
            self.i += 1;
            return Ok(Expr::Unary("exists", Box::new(self.postfix()?)));
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, String> {
        let mut e = self.primary()?;
        loop {
            if matches!(self.peek(), Some(Tok::Sym("." | "[" | "("))) {
                self.node()?;
            }
            if self.eat(".") {
                e = Expr::Member(Box::new(e), self.ident()?);
            } else if self.eat("[") {
                let key = match self.toks.get(self.i).cloned() {
                    Some(Tok::Str(s)) => s,
                    other => return Err(format!("expected a column name, found {other:?}")),
                };
                self.i += 1;
                self.expect("]")?;
                e = Expr::Member(Box::new(e), key);
            } else if self.eat("(") {
                e = Expr::Call(Box::new(e), self.args()?);
            } else {
                return Ok(e);
            }
        }
    }

    /// `(a, b) =>` ahead: a function literal.
    fn function_ahead(&self) -> bool {
        let mut j = self.i + 1;
        loop {
            match self.toks.get(j) {
                Some(Tok::Ident(_)) => j += 1,
                _ => return false,
            }
            match self.toks.get(j) {
                Some(Tok::Sym(",")) => j += 1,
                Some(Tok::Sym(")")) => {
                    return matches!(self.toks.get(j + 1), Some(Tok::Sym("=>")));
                }
                _ => return false,
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, String> {
        let Some(t) = self.toks.get(self.i).cloned() else {
            return Err("unexpected end of the query".into());
        };
        self.i += 1;
        Ok(match t {
            Tok::Int(n) => Expr::Lit(Val::Int(n)),
            Tok::Float(f) => Expr::Lit(Val::Float(f)),
            Tok::Str(s) => Expr::Lit(Val::Str(s)),
            Tok::Dur(d) => Expr::Lit(Val::Dur(d)),
            Tok::Time(t) => Expr::Lit(Val::Time(t)),
            Tok::Regex(r) => Expr::Lit(Val::Regex(
                Regex::new(&r).map_err(|e| format!("invalid regular expression: {e}"))?,
            )),
            Tok::Ident(w) if w == "true" || w == "false" => Expr::Lit(Val::Bool(w == "true")),
            Tok::Ident(w) if w == "if" => {
                let c = self.expr()?;
                if !self.is_word("then") {
                    return Err("expected then".into());
                }
                self.i += 1;
                let a = self.expr()?;
                if !self.is_word("else") {
                    return Err("expected else".into());
                }
                self.i += 1;
                Expr::If(Box::new(c), Box::new(a), Box::new(self.expr()?))
            }
            Tok::Ident(w) => Expr::Ident(w),
            Tok::Sym("(") => {
                self.i -= 1;
                if self.function_ahead() {
                    self.i += 1;
                    let mut params = Vec::new();
                    while !self.eat(")") {
                        params.push(self.ident()?);
                        self.eat(",");
                    }
                    self.expect("=>")?;
                    Expr::Func(params, Box::new(self.expr()?))
                } else {
                    self.i += 1;
                    let e = self.expr()?;
                    self.expect(")")?;
                    e
                }
            }
            Tok::Sym("[") => {
                let mut items = Vec::new();
                while !self.eat("]") {
                    items.push(self.expr()?);
                    if !self.eat(",") {
                        self.expect("]")?;
                        break;
                    }
                }
                Expr::Array(items)
            }
            Tok::Sym("{") => {
                // `{r with a: x}` or `{a: x}`.
                let with = match (self.toks.get(self.i), self.toks.get(self.i + 1)) {
                    (Some(Tok::Ident(_)), Some(Tok::Ident(w))) if w == "with" => {
                        let base = self.ident()?;
                        self.i += 1;
                        Some(Box::new(Expr::Ident(base)))
                    }
                    _ => None,
                };
                let mut fields = Vec::new();
                while !self.eat("}") {
                    let name = match self.toks.get(self.i).cloned() {
                        Some(Tok::Ident(s) | Tok::Str(s)) => s,
                        other => return Err(format!("expected a property name, found {other:?}")),
                    };
                    self.i += 1;
                    self.expect(":")?;
                    fields.push((name, self.expr()?));
                    if !self.eat(",") {
                        self.expect("}")?;
                        break;
                    }
                }
                Expr::Record(with, fields)
            }
            other => return Err(format!("unexpected {other:?}")),
        })
    }
}

fn op_name(op: &str) -> &'static str {
    ["==", "!=", "=~", "!~", "<=", ">=", "<", ">"]
        .into_iter()
        .find(|o| *o == op)
        .unwrap_or("==")
}

/// What an expression is evaluated in: the query's `now` and the function's parameters.
struct Scope<'a> {
    now: f64,
    vars: &'a [(String, Val)],
}

fn eval(e: &Expr, scope: &Scope<'_>) -> Result<Val, String> {
    Ok(match e {
        Expr::Lit(v) => v.clone(),
        Expr::Ident(name) => scope
            .vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("undefined identifier {name}"))?,
        Expr::Member(base, key) => match eval(base, scope)? {
            Val::Record(fields) => fields
                .into_iter()
                .find(|(k, _)| k == key)
                .map_or(Val::Null, |(_, v)| v),
            other => return Err(format!("cannot read {key} of a {}", other.type_name())),
        },
        Expr::Call(f, args) => {
            let Expr::Ident(name) = f.as_ref() else {
                return Err("only float(), int() and now() are callable in expressions".into());
            };
            let arg = |n: &str| -> Result<Val, String> {
                args.iter()
                    .find(|(k, _)| k == n)
                    .map(|(_, e)| eval(e, scope))
                    .unwrap_or(Ok(Val::Null))
            };
            match name.as_str() {
                "now" => Val::Time(scope.now),
                "float" => match arg("v")? {
                    Val::Null => Val::Null,
                    Val::Str(s) => Val::Float(
                        s.parse()
                            .map_err(|_| format!("cannot convert {s:?} to float"))?,
                    ),
                    Val::Bool(b) => Val::Float(if b { 1.0 } else { 0.0 }),
                    v => Val::Float(
                        v.number()
                            .ok_or(format!("cannot convert {} to float", v.type_name()))?,
                    ),
                },
                "int" => match arg("v")? {
                    Val::Null => Val::Null,
                    Val::Float(f) => Val::Int(f.trunc() as i64),
                    Val::Int(i) => Val::Int(i),
                    v => return Err(format!("cannot convert {} to int", v.type_name())),
                },
                other => return Err(format!("function {other} is not emulated in expressions")),
            }
        }
        Expr::Unary(op, x) => {
            let v = eval(x, scope)?;
            match (*op, v) {
                ("exists", v) => Val::Bool(!matches!(v, Val::Null)),
                (_, Val::Null) => Val::Null,
                ("not", Val::Bool(b)) => Val::Bool(!b),
                ("-", Val::Int(i)) => Val::Int(i.wrapping_neg()),
                ("-", Val::Float(f)) => Val::Float(-f),
                ("-", Val::Dur(d)) => Val::Dur(-d),
                (op, v) => return Err(format!("cannot apply {op} to a {}", v.type_name())),
            }
        }
        Expr::Binary(op, a, b) => {
            let a = eval(a, scope)?;
            match *op {
                "and" | "or" => {
                    let truth = |v: Val| match v {
                        Val::Bool(b) => Ok(b),
                        Val::Null => Ok(false),
                        other => Err(format!("{op} needs bools, not {}", other.type_name())),
                    };
                    let a = truth(a)?;
                    if (*op == "and" && !a) || (*op == "or" && a) {
                        return Ok(Val::Bool(a));
                    }
                    Val::Bool(truth(eval(b, scope)?)?)
                }
                _ => binary(op, a, eval(b, scope)?)?,
            }
        }
        Expr::Array(items) => Val::Array(
            items
                .iter()
                .map(|i| eval(i, scope))
                .collect::<Result<_, _>>()?,
        ),
        Expr::Record(with, fields) => {
            let mut out: Vec<(String, Val)> = match with {
                Some(base) => match eval(base, scope)? {
                    Val::Record(f) => f,
                    other => return Err(format!("cannot extend a {}", other.type_name())),
                },
                None => Vec::new(),
            };
            for (k, e) in fields {
                let v = eval(e, scope)?;
                match out.iter_mut().find(|(n, _)| n == k) {
                    Some(slot) => slot.1 = v,
                    None => out.push((k.clone(), v)),
                }
            }
            Val::Record(out)
        }
        Expr::Func(params, body) => Val::Func(params.clone(), body.clone()),
        Expr::If(c, a, b) => match eval(c, scope)? {
            Val::Bool(true) => eval(a, scope)?,
            Val::Bool(false) | Val::Null => eval(b, scope)?,
            other => return Err(format!("if needs a bool, not {}", other.type_name())),
        },
    })
}

fn binary(op: &str, a: Val, b: Val) -> Result<Val, String> {
    use Val::{Bool, Dur, Float, Int, Null, Regex as Re, Str, Time};
    Ok(match (op, a, b) {
        ("=~", Str(s), Re(r)) => Bool(r.is_match(&s)),
        ("!~", Str(s), Re(r)) => Bool(!r.is_match(&s)),
        ("=~" | "!~", Null, _) => Bool(false),
        ("==", a, b) => Bool(a == b),
        ("!=", a, b) => Bool(a != b && !matches!((&a, &b), (Null, _) | (_, Null))),
        (_, Null, _) | (_, _, Null) => Null,
        ("<" | "<=" | ">" | ">=", a, b) => {
            let ord = match (&a, &b) {
                (Str(x), Str(y)) => x.partial_cmp(y),
                (Time(x), Time(y)) | (Dur(x), Dur(y)) => x.partial_cmp(y),
                _ => match (a.number(), b.number()) {
                    (Some(x), Some(y)) => x.partial_cmp(&y),
                    _ => {
                        return Err(format!(
                            "cannot compare a {} with a {}",
                            a.type_name(),
                            b.type_name()
                        ));
                    }
                },
            };
            Bool(match (op, ord) {
                (_, None) => false,
                ("<", Some(o)) => o.is_lt(),
                ("<=", Some(o)) => o.is_le(),
                (">", Some(o)) => o.is_gt(),
                (_, Some(o)) => o.is_ge(),
            })
        }
        ("+", Str(x), Str(y)) => Str(x + &y),
        (op, Int(x), Int(y)) => Int(match op {
            "+" => x.wrapping_add(y),
            "-" => x.wrapping_sub(y),
            "*" => x.wrapping_mul(y),
            "/" | "%" if y == 0 => return Err("integer division by zero".into()),
            "/" => x.wrapping_div(y),
            _ => x.wrapping_rem(y),
        }),
        (op, Float(x), Float(y)) => Float(match op {
            "+" => x + y,
            "-" => x - y,
            "*" => x * y,
            "/" => x / y,
            _ => x % y,
        }),
        ("+", Time(t), Dur(d)) | ("+", Dur(d), Time(t)) => Time(t + d),
        ("-", Time(t), Dur(d)) => Time(t - d),
        (op, a, b) => {
            return Err(format!(
                "type error: cannot apply {op} to a {} and a {} (convert with float(v:))",
                a.type_name(),
                b.type_name()
            ));
        }
    })
}

/// Calls a function value on one argument record (`(r) => ...`).
fn apply(f: &Val, r: &Row, now: f64) -> Result<Val, String> {
    let Val::Func(params, body) = f else {
        return Err("fn must be a function".into());
    };
    let record = Val::Record(r.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
    let vars: Vec<(String, Val)> = params.iter().map(|p| (p.clone(), record.clone())).collect();
    eval(body, &Scope { now, vars: &vars })
}

/// The data a query reads: the rows of a bucket in a time range, and the buckets.
pub trait Source {
    /// `None`: no such bucket. Rows of every series with `_time` in `[start, stop)`, grouped
    /// by series (measurement, field and tags).
    fn read(&self, bucket: &str, start: f64, stop: f64) -> Option<Vec<Table>>;
    fn buckets(&self) -> Vec<String>;
}

/// Why a query failed: before running (a compilation error, an unknown bucket: InfluxDB
/// answers 400 or 404) or while running (an error table in the CSV).
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    Invalid(String),
    NotFound(String),
    Runtime(String),
}

/// The result of a query: its name (`yield`) and tables.
pub struct Output {
    pub name: String,
    pub tables: Vec<Table>,
}

pub fn run(query: &str, source: &dyn Source, now: f64) -> Result<Output, Failure> {
    let calls = parse(query).map_err(|e| Failure::Invalid(format!("compilation failed: {e}")))?;
    let scope = Scope { now, vars: &[] };
    let arg = |call: &Call, name: &str| -> Result<Option<Val>, Failure> {
        call.args
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, e)| eval(e, &scope).map_err(Failure::Invalid))
            .transpose()
    };
    let mut rest = calls.iter();
    let Some(first) = rest.next() else {
        return Err(Failure::Invalid("an empty query".into()));
    };
    let mut tables = match first.name.as_str() {
        "buckets" => vec![Table {
            key: Vec::new(),
            rows: source
                .buckets()
                .into_iter()
                .map(|b| Row::from([("name".to_string(), Val::Str(b))]))
                .collect(),
        }],
        "from" => {
            let Some(Val::Str(bucket)) = arg(first, "bucket")? else {
                return Err(Failure::Invalid(
                    "from: bucket is required (a string)".into(),
                ));
            };
            let range = rest.next().filter(|c| c.name == "range").ok_or_else(|| {
                Failure::Invalid(format!(
                    "cannot submit unbounded read to {bucket:?}; try bounding 'from' with a \
                     call to 'range'"
                ))
            })?;
            let at = |v: Option<Val>, default: f64| -> Result<f64, Failure> {
                Ok(match v {
                    None => default,
                    Some(Val::Dur(d)) => now + d,
                    Some(Val::Time(t)) => t,
                    Some(Val::Int(i)) => i as f64,
                    Some(other) => {
                        return Err(Failure::Invalid(format!(
                            "range: a {} is not a time",
                            other.type_name()
                        )));
                    }
                })
            };
            let start = match arg(range, "start")? {
                None => return Err(Failure::Invalid("range: start is required".into())),
                v => at(v, now)?,
            };
            let stop = at(arg(range, "stop")?, now)?;
            let read = source.read(&bucket, start, stop).ok_or_else(|| {
                Failure::NotFound(format!(
                    "failed to initialize execute state: could not find bucket {bucket:?}"
                ))
            })?;
            read.into_iter()
                .map(|mut t| {
                    for r in &mut t.rows {
                        r.insert("_start".into(), Val::Time(start));
                        r.insert("_stop".into(), Val::Time(stop));
                    }
                    t.key
                        .splice(0..0, ["_start".to_string(), "_stop".to_string()]);
                    t
                })
                .collect()
        }
        other => {
            return Err(Failure::Invalid(format!(
                "the query must start with from() |> range() or buckets(), not {other}()"
            )));
        }
    };
    let mut name = "_result".to_string();
    for call in rest {
        let runtime = |e: String| Failure::Runtime(format!("{}: {e}", call.name));
        tables = match call.name.as_str() {
            "yield" => {
                if let Some(Val::Str(n)) = arg(call, "name")? {
                    name = n;
                }
                tables
            }
            "filter" => {
                let f = arg(call, "fn")?
                    .ok_or_else(|| Failure::Invalid("filter: fn is required".into()))?;
                let mut out = Vec::new();
                for mut t in tables {
                    let mut kept = Vec::new();
                    for r in t.rows {
                        match apply(&f, &r, now).map_err(runtime)? {
                            Val::Bool(true) => kept.push(r),
                            Val::Bool(false) | Val::Null => {}
                            other => {
                                return Err(runtime(format!(
                                    "the predicate returned a {}, not a bool",
                                    other.type_name()
                                )));
                            }
                        }
                    }
                    t.rows = kept;
                    if !t.rows.is_empty() {
                        out.push(t);
                    }
                }
                out
            }
            "group" => {
                let columns = strings(arg(call, "columns")?).map_err(runtime)?;
                let except = matches!(arg(call, "mode")?, Some(Val::Str(m)) if m == "except");
                regroup(tables, |row| {
                    if except {
                        row.keys()
                            .filter(|k| !columns.contains(k))
                            .cloned()
                            .collect()
                    } else {
                        columns
                            .iter()
                            .filter(|c| row.contains_key(*c))
                            .cloned()
                            .collect()
                    }
                })
            }
            "keep" | "drop" => {
                let columns = strings(arg(call, "columns")?).map_err(runtime)?;
                let keep = call.name == "keep";
                tables
                    .into_iter()
                    .map(|mut t| {
                        let wanted = |k: &String| columns.contains(k) == keep;
                        t.key.retain(wanted);
                        for r in &mut t.rows {
                            r.retain(|k, _| wanted(k));
                        }
                        t
                    })
                    .collect()
            }
            "sum" | "mean" | "count" | "median" | "quantile" | "min" | "max" | "first" | "last" => {
                let column = column_arg(arg(call, "column")?);
                let q = match (call.name.as_str(), arg(call, "q")?) {
                    ("median", _) => 0.5,
                    ("quantile", Some(v)) => v
                        .number()
                        .ok_or_else(|| runtime("q must be a number".into()))?,
                    ("quantile", None) => {
                        return Err(Failure::Invalid("quantile: q is required".into()));
                    }
                    _ => 0.0,
                };
                tables
                    .into_iter()
                    .map(|t| aggregate(&call.name, &column, q, t).map_err(runtime))
                    .collect::<Result<_, _>>()?
            }
            "aggregateWindow" => {
                let every = match arg(call, "every")? {
                    Some(Val::Dur(d)) if d > 0.0 => d,
                    _ => {
                        return Err(Failure::Invalid(
                            "aggregateWindow: every must be a positive duration".into(),
                        ));
                    }
                };
                let func = match call.args.iter().find(|(k, _)| k == "fn") {
                    Some((_, Expr::Ident(f)))
                        if ["mean", "sum", "count", "median", "min", "max", "first", "last"]
                            .contains(&f.as_str()) =>
                    {
                        f.clone()
                    }
                    _ => return Err(Failure::Invalid("aggregateWindow: fn must name an aggregate (mean, sum, count, median, min, max, first, last)".into())),
                };
                let create_empty = !matches!(arg(call, "createEmpty")?, Some(Val::Bool(false)));
                let column = column_arg(arg(call, "column")?);
                tables
                    .into_iter()
                    .map(|t| window(t, every, &func, &column, create_empty).map_err(runtime))
                    .collect::<Result<_, _>>()?
            }
            "pivot" => {
                let row_key = strings(arg(call, "rowKey")?).map_err(runtime)?;
                let column_key = strings(arg(call, "columnKey")?).map_err(runtime)?;
                let value = column_arg(arg(call, "valueColumn")?);
                pivot(tables, &row_key, &column_key, &value).map_err(runtime)?
            }
            "map" => {
                let f = arg(call, "fn")?
                    .ok_or_else(|| Failure::Invalid("map: fn is required".into()))?;
                let mut mapped = Vec::new();
                for t in tables {
                    let key = t.key.clone();
                    let mut rows = Vec::new();
                    for r in &t.rows {
                        match apply(&f, r, now).map_err(runtime)? {
                            Val::Record(fields) => {
                                let mut out: Row = fields.into_iter().collect();
                                // Group key columns the function dropped keep their value.
                                for k in &key {
                                    if let Some(v) = r.get(k) {
                                        out.entry(k.clone()).or_insert_with(|| v.clone());
                                    }
                                }
                                rows.push(out);
                            }
                            other => {
                                return Err(runtime(format!(
                                    "fn returned a {}, not a record",
                                    other.type_name()
                                )));
                            }
                        }
                    }
                    mapped.push(Table { key, rows });
                }
                mapped
            }
            "toFloat" => tables
                .into_iter()
                .map(|mut t| {
                    for r in &mut t.rows {
                        if let Some(v) = r.get_mut("_value") {
                            *v = match std::mem::replace(v, Val::Null) {
                                Val::Int(i) => Val::Float(i as f64),
                                Val::Bool(b) => Val::Float(if b { 1.0 } else { 0.0 }),
                                Val::Str(s) => s.parse().map(Val::Float).unwrap_or(Val::Null),
                                other => other,
                            };
                        }
                    }
                    t
                })
                .collect(),
            "sort" => {
                let columns = match arg(call, "columns")? {
                    None => vec!["_value".to_string()],
                    v => strings(v).map_err(runtime)?,
                };
                let desc = matches!(arg(call, "desc")?, Some(Val::Bool(true)));
                tables
                    .into_iter()
                    .map(|mut t| {
                        t.rows.sort_by(|a, b| {
                            let o = columns
                                .iter()
                                .map(|c| compare(a.get(c), b.get(c)))
                                .find(|o| o.is_ne())
                                .unwrap_or(std::cmp::Ordering::Equal);
                            if desc { o.reverse() } else { o }
                        });
                        t
                    })
                    .collect()
            }
            "limit" => {
                let n = match arg(call, "n")? {
                    Some(Val::Int(n)) if n >= 0 => usize::try_from(n).unwrap_or(usize::MAX),
                    _ => {
                        return Err(Failure::Invalid(
                            "limit: n must be a non-negative int".into(),
                        ));
                    }
                };
                tables
                    .into_iter()
                    .map(|mut t| {
                        t.rows.truncate(n);
                        t
                    })
                    .collect()
            }
            other => {
                return Err(Failure::Invalid(format!(
                    "function {other}() is not emulated"
                )));
            }
        };
    }
    Ok(Output { name, tables })
}

fn column_arg(v: Option<Val>) -> String {
    match v {
        Some(Val::Str(c)) => c,
        _ => "_value".into(),
    }
}

fn strings(v: Option<Val>) -> Result<Vec<String>, String> {
    match v {
        None => Ok(Vec::new()),
        Some(Val::Array(items)) => items
            .into_iter()
            .map(|i| match i {
                Val::Str(s) => Ok(s),
                other => Err(format!(
                    "a list of strings is expected, not a {}",
                    other.type_name()
                )),
            })
            .collect(),
        Some(other) => Err(format!(
            "a list of strings is expected, not a {}",
            other.type_name()
        )),
    }
}

fn compare(a: Option<&Val>, b: Option<&Val>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Val::Str(x)), Some(Val::Str(y))) => x.cmp(y),
        (Some(x), Some(y)) => match (x.number(), y.number()) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
            _ => match (x, y) {
                (Val::Time(x), Val::Time(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
                _ => Ordering::Equal,
            },
        },
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    }
}

/// Regroups every row by the columns `key` picks for it; tables in order of first appearance.
fn regroup(tables: Vec<Table>, key: impl Fn(&Row) -> Vec<String>) -> Vec<Table> {
    let mut out: Vec<Table> = Vec::new();
    let mut index: BTreeMap<Vec<(String, String)>, usize> = BTreeMap::new();
    for t in &tables {
        for r in &t.rows {
            let columns = key(r);
            let id: Vec<(String, String)> = columns
                .iter()
                .map(|c| (c.clone(), r.get(c).map(Val::key).unwrap_or_default()))
                .collect();
            let i = *index.entry(id).or_insert_with(|| {
                out.push(Table {
                    key: columns.clone(),
                    rows: Vec::new(),
                });
                out.len() - 1
            });
            if let Some(table) = out.get_mut(i) {
                table.rows.push(r.clone());
            }
        }
    }
    out
}

/// An aggregate (one row of the group key and the column) or a selector (the row it picks).
fn aggregate(func: &str, column: &str, q: f64, t: Table) -> Result<Table, String> {
    let values: Vec<(usize, &Val)> = t
        .rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.get(column)
                .filter(|v| !matches!(v, Val::Null))
                .map(|v| (i, v))
        })
        .collect();
    let selected = |i: Option<usize>| {
        t.with_rows(i.and_then(|i| t.rows.get(i).cloned()).into_iter().collect())
    };
    let numbers = || -> Result<Vec<f64>, String> {
        values
            .iter()
            .map(|(_, v)| {
                v.number()
                    .ok_or_else(|| format!("cannot aggregate a {}", v.type_name()))
            })
            .collect()
    };
    let pick = |better: fn(f64, f64) -> bool| -> Result<Option<usize>, String> {
        let mut best: Option<(usize, f64)> = None;
        for (i, v) in &values {
            let x = v
                .number()
                .ok_or_else(|| format!("cannot select from a {}", v.type_name()))?;
            if best.is_none_or(|(_, b)| better(x, b)) {
                best = Some((*i, x));
            }
        }
        Ok(best.map(|(i, _)| i))
    };
    let value = match func {
        "first" => return Ok(selected(values.first().map(|(i, _)| *i))),
        "last" => return Ok(selected(values.last().map(|(i, _)| *i))),
        "min" => return Ok(selected(pick(|x, b| x < b)?)),
        "max" => return Ok(selected(pick(|x, b| x > b)?)),
        "count" => Val::Int(values.len() as i64),
        "sum" => match values.first().map(|(_, v)| *v) {
            None => Val::Null,
            Some(Val::Int(_)) => Val::Int(
                values
                    .iter()
                    .map(|(_, v)| match v {
                        Val::Int(i) => Ok(*i),
                        other => Err(format!("cannot sum a {}", other.type_name())),
                    })
                    .sum::<Result<i64, String>>()?,
            ),
            Some(_) => Val::Float(numbers()?.iter().sum()),
        },
        "mean" => {
            let xs = numbers()?;
            if xs.is_empty() {
                Val::Null
            } else {
                Val::Float(xs.iter().sum::<f64>() / xs.len() as f64)
            }
        }
        _ => {
            let mut xs = numbers()?;
            if xs.is_empty() {
                Val::Null
            } else {
                xs.sort_by(f64::total_cmp);
                let pos = q.clamp(0.0, 1.0) * (xs.len() - 1) as f64;
                let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
                let (a, b) = (xs[lo.min(xs.len() - 1)], xs[hi.min(xs.len() - 1)]);
                Val::Float(a + (b - a) * (pos - pos.floor()))
            }
        }
    };
    let mut row: Row = t.key_values().into_iter().collect();
    row.insert(column.to_string(), value);
    Ok(Table {
        key: t.key,
        rows: vec![row],
    })
}

/// `aggregateWindow`: the table's rows in windows of `every` (aligned to the epoch), each
/// aggregated by `func`, its `_time` the window's stop.
fn window(
    t: Table,
    every: f64,
    func: &str,
    column: &str,
    create_empty: bool,
) -> Result<Table, String> {
    let start = t.rows.first().and_then(|r| match r.get("_start") {
        Some(Val::Time(s)) => Some(*s),
        _ => None,
    });
    let stop = t.rows.first().and_then(|r| match r.get("_stop") {
        Some(Val::Time(s)) => Some(*s),
        _ => None,
    });
    let (Some(start), Some(stop)) = (start, stop) else {
        return Err("aggregateWindow needs _start and _stop (call range first)".into());
    };
    let first = (start / every).floor() * every;
    let windows = ((stop - first) / every).ceil().clamp(0.0, 100_000.0) as usize;
    let mut buckets: Vec<Vec<Row>> = vec![Vec::new(); windows];
    for r in &t.rows {
        if let Some(Val::Time(time)) = r.get("_time")
            && let Some(b) = buckets.get_mut(((time - first) / every).floor().max(0.0) as usize)
        {
            b.push(r.clone());
        }
    }
    let mut rows = Vec::new();
    for (i, b) in buckets.into_iter().enumerate() {
        let w_stop = (first + (i + 1) as f64 * every).min(stop);
        if b.is_empty() && !create_empty {
            continue;
        }
        let aggregated = aggregate(func, column, 0.5, t.with_rows(b))?;
        let mut row = aggregated.rows.into_iter().next().unwrap_or_else(|| {
            let mut r: Row = t.key_values().into_iter().collect();
            r.insert(column.to_string(), Val::Null);
            r
        });
        row.insert("_time".into(), Val::Time(w_stop));
        rows.push(row);
    }
    Ok(Table { key: t.key, rows })
}

/// `pivot`: per new group key (the old one without `column_key`), one row per `row_key`
/// value, a column per `column_key` value holding `value`.
fn pivot(
    tables: Vec<Table>,
    row_key: &[String],
    column_key: &[String],
    value: &str,
) -> Result<Vec<Table>, String> {
    let mut out: Vec<Table> = Vec::new();
    for t in tables {
        let key: Vec<String> = t
            .key
            .iter()
            .filter(|k| !column_key.contains(k))
            .cloned()
            .collect();
        let key_values: Vec<String> = key
            .iter()
            .map(|k| {
                t.rows
                    .first()
                    .and_then(|r| r.get(k))
                    .map(Val::key)
                    .unwrap_or_default()
            })
            .collect();
        let i = match out.iter().position(|o| {
            o.key == key
                && o.key.iter().zip(&key_values).all(|(k, v)| {
                    o.rows
                        .first()
                        .and_then(|r| r.get(k))
                        .map(Val::key)
                        .unwrap_or_default()
                        == *v
                })
        }) {
            Some(i) => i,
            None => {
                out.push(Table {
                    key: key.clone(),
                    rows: Vec::new(),
                });
                out.len() - 1
            }
        };
        let Some(target) = out.get_mut(i) else {
            continue;
        };
        for r in &t.rows {
            for c in row_key.iter().chain(column_key) {
                if !r.contains_key(c) {
                    return Err(format!("pivot: the column {c:?} does not exist"));
                }
            }
            let name = column_key
                .iter()
                .map(|c| r.get(c).map(Val::key).unwrap_or_default())
                .collect::<Vec<_>>()
                .join("_");
            let id: Vec<String> = row_key
                .iter()
                .map(|c| r.get(c).map(Val::key).unwrap_or_default())
                .collect();
            let existing = target.rows.iter_mut().find(|o| {
                row_key
                    .iter()
                    .map(|c| o.get(c).map(Val::key).unwrap_or_default())
                    .collect::<Vec<_>>()
                    == id
            });
            let v = r.get(value).cloned().unwrap_or(Val::Null);
            match existing {
                Some(o) => {
                    o.insert(name, v);
                }
                None => {
                    let mut o: Row = key
                        .iter()
                        .chain(row_key)
                        .filter_map(|k| r.get(k).map(|v| (k.clone(), v.clone())))
                        .collect();
                    o.insert(name, v);
                    target.rows.push(o);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Vec<Table>);

    impl Source for Fixed {
        fn read(&self, bucket: &str, start: f64, stop: f64) -> Option<Vec<Table>> {
            (bucket == "default").then(|| {
                self.0
                    .iter()
                    .map(|t| {
                        let in_range = |r: &&Row| matches!(r.get("_time"), Some(Val::Time(x)) if *x >= start && *x < stop);
                        t.with_rows(t.rows.iter().filter(in_range).cloned().collect())
                    })
                    .filter(|t| !t.rows.is_empty())
                    .collect()
            })
        }

        fn buckets(&self) -> Vec<String> {
            vec!["default".into()]
        }
    }

    /// Two series of `http_requests` (workload `web`, status 200 and 500) with fields
    /// `requests` and `errors`, at t = 90..99.
    fn source() -> Fixed {
        let mut tables = Vec::new();
        for (status, requests, errors) in [("200", 9.0, 0.0), ("500", 1.0, 1.0)] {
            for (field, v) in [("requests", requests), ("errors", errors)] {
                let rows = (90..100)
                    .map(|t| {
                        Row::from([
                            ("_time".to_string(), Val::Time(f64::from(t))),
                            ("_value".into(), Val::Float(v)),
                            ("_field".into(), Val::Str(field.into())),
                            ("_measurement".into(), Val::Str("http_requests".into())),
                            ("workload".into(), Val::Str("web".into())),
                            ("status".into(), Val::Str(status.into())),
                        ])
                    })
                    .collect();
                tables.push(Table {
                    key: ["_measurement", "_field", "status", "workload"]
                        .map(String::from)
                        .to_vec(),
                    rows,
                });
            }
        }
        Fixed(tables)
    }

    fn value(out: &Output) -> Option<Val> {
        out.tables.first()?.rows.first()?.get("_value").cloned()
    }

    #[test]
    fn success_rate_by_pivot_and_map() {
        let q = r#"from(bucket: "default")
          |> range(start: -10s) // the window
          |> filter(fn: (r) => r._measurement == "http_requests" and r["workload"] == "web")
          |> filter(fn: (r) => r._field == "requests" or r._field == "errors")
          |> group(columns: ["_start", "_field"])
          |> sum()
          |> pivot(rowKey: ["_start"], columnKey: ["_field"], valueColumn: "_value")
          |> map(fn: (r) => ({_value: 100.0 * (r.requests - r.errors) / r.requests}))
          |> yield(name: "rate")"#;
        let out = run(q, &source(), 100.0).unwrap();
        assert_eq!(out.name, "rate");
        assert_eq!(value(&out), Some(Val::Float(90.0)));
    }

    #[test]
    fn aggregates_selectors_windows_and_types() {
        let base = r#"from(bucket: "default") |> range(start: 95) |> filter(fn: (r) => r._field == "requests" and r.status =~ /^5/)"#;
        let out = run(&format!("{base} |> count()"), &source(), 100.0).unwrap();
        assert_eq!(value(&out), Some(Val::Int(5)));
        let out = run(&format!("{base} |> group() |> sum()"), &source(), 100.0).unwrap();
        assert_eq!(value(&out), Some(Val::Float(5.0)));
        let out = run(&format!("{base} |> last()"), &source(), 100.0).unwrap();
        assert_eq!(out.tables[0].rows[0].get("_time"), Some(&Val::Time(99.0)));
        let out = run(
            &format!("{base} |> aggregateWindow(every: 2s, fn: sum, createEmpty: false)"),
            &source(),
            100.0,
        )
        .unwrap();
        assert_eq!(out.tables[0].rows.len(), 3);
        // An int and a float do not mix, as in Flux.
        let err = run(
            &format!("{base} |> count() |> map(fn: (r) => ({{_value: r._value * 2.0}}))"),
            &source(),
            100.0,
        )
        .err();
        assert!(matches!(err, Some(Failure::Runtime(e)) if e.contains("type error")));
        let out = run(
            &format!(
                "{base} |> count() |> map(fn: (r) => ({{r with _value: float(v: r._value) * 2.0}}))"
            ),
            &source(),
            100.0,
        )
        .unwrap();
        assert_eq!(value(&out), Some(Val::Float(10.0)));
    }

    #[test]
    fn failures_before_and_while_running() {
        assert!(
            matches!(run("from(bucket: \"default\")", &source(), 0.0), Err(Failure::Invalid(e)) if e.contains("unbounded"))
        );
        assert!(
            matches!(run("from(bucket: \"x\") |> range(start: -1h)", &source(), 0.0), Err(Failure::NotFound(e)) if e.contains("could not find bucket"))
        );
        assert!(matches!(
            run(
                "from(bucket: \"default\") |> range(start: -1h) |> bogus()",
                &source(),
                0.0
            ),
            Err(Failure::Invalid(_))
        ));
        assert!(matches!(
            run("from(bucket: ", &source(), 0.0),
            Err(Failure::Invalid(_))
        ));
        let deep = format!(
            "from(bucket: \"default\") |> range(start: -1h) |> filter(fn: (r) => {}1{})",
            "(".repeat(500),
            ")".repeat(500)
        );
        assert!(run(&deep, &source(), 100.0).is_err());
        let out = run("buckets() |> limit(n: 1)", &source(), 0.0).unwrap();
        assert_eq!(out.tables[0].rows.len(), 1);
    }
}
