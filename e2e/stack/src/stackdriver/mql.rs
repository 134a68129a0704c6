//! The Monitoring Query Language subset the Stackdriver emulator answers, parsed:
//!
//! ```text
//! query    := 'fetch' resource ['::' metric] ('|' op)*
//! op       := 'metric' string
//!           | 'filter' pred
//!           | 'align' ('delta' | 'rate') '(' duration ')'
//!           | 'every' duration
//!           | 'within' duration
//!           | 'group_by' '[' labels ']' [',' (reducer | '[' [name ':'] reducer, ... ']')]
//!           | 'filter_ratio_by' '[' labels ']' ',' pred
//!           | 'filter_ratio' pred
//! pred     := pred ('&&' | '||') pred | '!' pred | '(' pred ')' | operand cmp operand
//! cmp      := '==' | '=' | '!=' | '<' | '<=' | '>' | '>=' | '=~' | '!~'
//! operand  := label | 'string' | "string" | number
//! reducer  := ('sum' | 'mean' | 'count' | 'aggregate') '(' column ')'
//!           | 'percentile' '(' column ',' number ')'
//! column   := 'val()' | 'value.' name
//! duration := number ('ms' | 's' | 'm' | 'h' | 'd' | 'w')
//! ```
//!
//! A label is `metric.<name>`, `resource.<name>`, or a bare name (metric labels first).
//! `and`, `or` and `not` are spelled as in MQL too.

use crate::metric_emulator::duration_unit_secs;

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub resource: String,
    pub metric: Option<String>,
    pub filters: Vec<Pred>,
    /// The aligner and its window in seconds.
    pub align: Option<(Aligner, f64)>,
    pub every: Option<f64>,
    pub within: Option<f64>,
    pub reduce: Option<Reduce>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Aligner {
    Delta,
    Rate,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reduce {
    /// The labels kept, and the reducer with its output column's name (`None`: aggregate).
    GroupBy(Vec<String>, Option<(String, Reducer)>),
    /// The labels kept, and the predicate of the numerator.
    FilterRatioBy(Vec<String>, Pred),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reducer {
    Sum,
    Mean,
    Count,
    Aggregate,
    Percentile(f64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    And(Box<Pred>, Box<Pred>),
    Or(Box<Pred>, Box<Pred>),
    Not(Box<Pred>),
    Cmp(Operand, Cmp, Operand),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Label(String),
    Str(String),
    Num(f64),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Matches,
    NotMatches,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Num(f64),
    /// Seconds.
    Dur(f64),
    Sym(&'static str),
}

/// Two-character symbols first: the first that starts the rest of the text is the token.
const SYMBOLS: [&str; 20] = [
    "::", "==", "!=", "<=", ">=", "=~", "!~", "&&", "||", "|", "[", "]", "(", ")", ",", ":", "=",
    "<", ">", "!",
];

fn tokenize(text: &str) -> Result<Vec<(Tok, usize)>, String> {
    let s: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let at = i + 1;
        if c == '\'' || c == '"' {
            let mut value = String::new();
            i += 1;
            loop {
                match s.get(i) {
                    None => return Err(format!("column {at}: unterminated string")),
                    Some(&q) if q == c => break,
                    Some('\\') => {
                        i += 1;
                        if let Some(&e) = s.get(i) {
                            value.push(e);
                        }
                    }
                    Some(&x) => value.push(x),
                }
                i += 1;
            }
            i += 1;
            out.push((Tok::Str(value), at));
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && s.get(i + 1).is_some_and(char::is_ascii_digit)) {
            let start = i;
            while s.get(i).is_some_and(|c| c.is_ascii_digit() || *c == '.') {
                i += 1;
            }
            let number: String = s[start..i].iter().collect();
            let n: f64 = number
                .parse()
                .map_err(|_| format!("column {at}: invalid number {number}"))?;
            let unit_start = i;
            while s.get(i).is_some_and(char::is_ascii_alphabetic) {
                i += 1;
            }
            let unit: String = s[unit_start..i].iter().collect();
            if unit.is_empty() {
                out.push((Tok::Num(n), at));
                continue;
            }
            let Some(factor) = duration_unit_secs(&unit) else {
                return Err(format!("column {at}: unknown duration unit {unit:?}"));
            };
            out.push((Tok::Dur(n * factor), at));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let start = i;
            while s
                .get(i)
                .is_some_and(|c| c.is_alphanumeric() || matches!(c, '_' | '.' | '/'))
            {
                i += 1;
            }
            out.push((Tok::Word(s[start..i].iter().collect()), at));
            continue;
        }
        let rest: String = s[i..s.len().min(i + 2)].iter().collect();
        let Some(sym) = SYMBOLS.iter().find(|sym| rest.starts_with(**sym)) else {
            return Err(format!("column {at}: unexpected {c:?}"));
        };
        i += sym.chars().count();
        out.push((Tok::Sym(sym), at));
    }
    Ok(out)
}

pub fn parse(text: &str) -> Result<Query, String> {
    let mut p = Parser {
        toks: tokenize(text)?,
        i: 0,
    };
    p.query()
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|(t, _)| t)
    }

    fn at(&self) -> String {
        match self.toks.get(self.i) {
            Some((_, col)) => format!("column {col}"),
            None => "the end".into(),
        }
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.i).map(|(t, _)| t.clone());
        self.i += 1;
        t
    }

    fn sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(x)) if *x == s) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, s: &str) -> Result<(), String> {
        if self.sym(s) {
            Ok(())
        } else {
            Err(format!("{}: expected '{s}'", self.at()))
        }
    }

    fn word(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            _ => {
                self.i -= 1;
                Err(format!("{}: expected a name", self.at()))
            }
        }
    }

    fn keyword(&mut self, k: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Word(w)) if w == k) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn duration(&mut self) -> Result<f64, String> {
        match self.next() {
            Some(Tok::Dur(d)) if d > 0.0 => Ok(d),
            _ => {
                self.i -= 1;
                Err(format!("{}: expected a duration (e.g. 1m)", self.at()))
            }
        }
    }

    fn query(&mut self) -> Result<Query, String> {
        if !self.keyword("fetch") {
            return Err(format!("{}: a query starts with 'fetch'", self.at()));
        }
        let resource = self.word()?;
        let mut q = Query {
            resource,
            metric: None,
            filters: Vec::new(),
            align: None,
            every: None,
            within: None,
            reduce: None,
        };
        if self.sym("::") {
            q.metric = Some(match self.next() {
                Some(Tok::Word(w) | Tok::Str(w)) => w,
                _ => return Err(format!("{}: expected a metric after '::'", self.at())),
            });
        }
        while self.i < self.toks.len() {
            self.expect("|")?;
            let op = self.word()?;
            if q.reduce.is_some() && op != "every" && op != "within" {
                return Err(format!(
                    "'{op}' after a group_by or filter_ratio_by is not emulated"
                ));
            }
            match op.as_str() {
                "metric" => match self.next() {
                    Some(Tok::Str(m) | Tok::Word(m)) => q.metric = Some(m),
                    _ => return Err(format!("{}: 'metric' takes a metric type", self.at())),
                },
                "filter" => q.filters.push(self.pred()?),
                "align" => {
                    let aligner = match self.word()?.as_str() {
                        "delta" => Aligner::Delta,
                        "rate" => Aligner::Rate,
                        other => return Err(format!("aligner '{other}' is not emulated")),
                    };
                    self.expect("(")?;
                    let window = self.duration()?;
                    self.expect(")")?;
                    q.align = Some((aligner, window));
                }
                "every" => q.every = Some(self.duration()?),
                "within" => q.within = Some(self.duration()?),
                "group_by" => {
                    let labels = self.labels()?;
                    let reducer = if self.sym(",") {
                        Some(self.reducers()?)
                    } else {
                        None
                    };
                    q.reduce = Some(Reduce::GroupBy(labels, reducer));
                }
                "filter_ratio_by" => {
                    let labels = self.labels()?;
                    self.expect(",")?;
                    q.reduce = Some(Reduce::FilterRatioBy(labels, self.pred()?));
                }
                "filter_ratio" => q.reduce = Some(Reduce::FilterRatioBy(Vec::new(), self.pred()?)),
                other => return Err(format!("table operation '{other}' is not emulated")),
            }
        }
        Ok(q)
    }

    fn labels(&mut self) -> Result<Vec<String>, String> {
        self.expect("[")?;
        let mut labels = Vec::new();
        while !self.sym("]") {
            if !labels.is_empty() {
                self.expect(",")?;
            }
            labels.push(self.word()?);
        }
        Ok(labels)
    }

    /// `reducer` or `[name: reducer]` (one column).
    fn reducers(&mut self) -> Result<(String, Reducer), String> {
        if !self.sym("[") {
            let (column, reducer) = self.reducer()?;
            return Ok((column, reducer));
        }
        let mut name = None;
        if let Some(Tok::Word(w)) = self.peek().cloned()
            && self.toks.get(self.i + 1).map(|(t, _)| t) == Some(&Tok::Sym(":"))
        {
            self.i += 2;
            name = Some(w);
        }
        let (column, reducer) = self.reducer()?;
        if !self.sym("]") {
            return Err(format!(
                "{}: one reduced column is emulated per group_by",
                self.at()
            ));
        }
        Ok((name.unwrap_or(column), reducer))
    }

    /// A reducer and its default column name.
    fn reducer(&mut self) -> Result<(String, Reducer), String> {
        let f = self.word()?;
        self.expect("(")?;
        let column = self.column()?;
        let reducer = match f.as_str() {
            "sum" => Reducer::Sum,
            "mean" => Reducer::Mean,
            "count" => Reducer::Count,
            "aggregate" => Reducer::Aggregate,
            "percentile" => {
                self.expect(",")?;
                match self.next() {
                    Some(Tok::Num(p)) if (0.0..=100.0).contains(&p) => Reducer::Percentile(p),
                    _ => return Err(format!("{}: percentile takes 0..100", self.at())),
                }
            }
            other => return Err(format!("reducer '{other}' is not emulated")),
        };
        self.expect(")")?;
        Ok((format!("{column}_{f}"), reducer))
    }

    /// `val()` or `value.name`: the value column (the query has one).
    fn column(&mut self) -> Result<String, String> {
        let w = self.word()?;
        if w == "val" {
            self.expect("(")?;
            self.expect(")")?;
            return Ok("value".into());
        }
        match w.strip_prefix("value.") {
            Some(name) => Ok(format!("value_{name}")),
            None => Err(format!("{}: expected val() or value.<column>", self.at())),
        }
    }

    fn pred(&mut self) -> Result<Pred, String> {
        let mut left = self.conj()?;
        while self.sym("||") || self.keyword("or") {
            left = Pred::Or(Box::new(left), Box::new(self.conj()?));
        }
        Ok(left)
    }

    fn conj(&mut self) -> Result<Pred, String> {
        let mut left = self.unary()?;
        while self.sym("&&") || self.keyword("and") {
            left = Pred::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Pred, String> {
        if self.keyword("not") || self.peek() == Some(&Tok::Sym("!")) {
            if self.peek() == Some(&Tok::Sym("!")) {
                self.i += 1;
            }
            return Ok(Pred::Not(Box::new(self.unary()?)));
        }
        if self.sym("(") {
            let p = self.pred()?;
            self.expect(")")?;
            return Ok(p);
        }
        let left = self.operand()?;
        let cmp = match self.next() {
            Some(Tok::Sym("==" | "=")) => Cmp::Eq,
            Some(Tok::Sym("!=")) => Cmp::Ne,
            Some(Tok::Sym("<")) => Cmp::Lt,
            Some(Tok::Sym("<=")) => Cmp::Le,
            Some(Tok::Sym(">")) => Cmp::Gt,
            Some(Tok::Sym(">=")) => Cmp::Ge,
            Some(Tok::Sym("=~")) => Cmp::Matches,
            Some(Tok::Sym("!~")) => Cmp::NotMatches,
            _ => {
                self.i -= 1;
                return Err(format!("{}: expected a comparison", self.at()));
            }
        };
        Ok(Pred::Cmp(left, cmp, self.operand()?))
    }

    fn operand(&mut self) -> Result<Operand, String> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(Operand::Label(w)),
            Some(Tok::Str(s)) => Ok(Operand::Str(s)),
            Some(Tok::Num(n)) => Ok(Operand::Num(n)),
            _ => {
                self.i -= 1;
                Err(format!("{}: expected a label, string or number", self.at()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flaggers_documented_query() {
        let q = parse(
            "fetch k8s_container\n| metric 'istio.io/service/server/response_latencies'\n\
             | filter\n    (metric.destination_service_name == 'podinfo-canary'\n    && \
             metric.destination_service_namespace == 'test')\n| align delta(1m)\n| every 1m\n\
             | group_by [],\n    [value_response_latencies_percentile:\n      \
             percentile(value.response_latencies, 99)]",
        )
        .unwrap();
        assert_eq!(q.resource, "k8s_container");
        assert_eq!(
            q.metric.as_deref(),
            Some("istio.io/service/server/response_latencies")
        );
        assert_eq!(q.align, Some((Aligner::Delta, 60.0)));
        assert_eq!(q.every, Some(60.0));
        assert_eq!(
            q.reduce,
            Some(Reduce::GroupBy(
                vec![],
                Some((
                    "value_response_latencies_percentile".into(),
                    Reducer::Percentile(99.0)
                ))
            ))
        );
        assert!(matches!(q.filters[0], Pred::And(..)));
    }

    #[test]
    fn parses_ratios_shorthand_and_refuses_the_rest() {
        let q = parse(
            "fetch k8s_container::istio.io/service/server/request_count | within 5m \
             | filter_ratio_by [metric.destination_workload_name], metric.response_code >= 500",
        )
        .unwrap();
        assert_eq!(q.within, Some(300.0));
        assert!(matches!(q.reduce, Some(Reduce::FilterRatioBy(ref l, _)) if l.len() == 1));
        assert!(parse("").is_err());
        assert!(parse("fetch k8s_container | align next_older(1m)").is_err());
        assert!(parse("fetch k8s_container | filter metric.x == 'unterminated").is_err());
        assert!(parse("fetch k8s_container | every 1parsec").is_err());
    }
}
