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
    let mut p = Parser {
        s: q.as_bytes(),
        i: 0,
    };
    let e = p.expr()?;
    p.ws();
    if p.i < p.s.len() {
        return Err(format!("unexpected {:?} at position {}", p.rest(), p.i));
    }
    Ok(e)
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

    fn rest(&self) -> String {
        String::from_utf8_lossy(self.s.get(self.i..).unwrap_or_default()).into_owned()
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

    fn factor(&mut self) -> Result<Expr, String> {
        match self.peek() {
            None => Err("unexpected end of query".into()),
            Some(b'(') => {
                self.i += 1;
                let e = self.expr()?;
                if !self.eat(b')') {
                    return Err(format!("expected ')' at position {}", self.i));
                }
                Ok(e)
            }
            Some(b'-') => {
                self.i += 1;
                Ok(Expr::Neg(Box::new(self.factor()?)))
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
                {
                    self.i += 1;
                }
                let text = String::from_utf8_lossy(self.s.get(start..self.i).unwrap_or_default());
                text.parse()
                    .map(Expr::Number)
                    .map_err(|_| format!("invalid number {text:?}"))
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => self.metric_or_name(),
            Some(_) => Err(format!(
                "unexpected {:?} at position {}",
                self.rest(),
                self.i
            )),
        }
    }

    fn ident(&mut self) -> String {
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.'))
        {
            self.i += 1;
        }
        String::from_utf8_lossy(self.s.get(start..self.i).unwrap_or_default()).into_owned()
    }

    /// Text up to the closing brace (the opening one already eaten).
    fn braced(&mut self) -> Result<String, String> {
        let start = self.i;
        while self.s.get(self.i).is_some_and(|c| *c != b'}') {
            self.i += 1;
        }
        if self.i >= self.s.len() {
            return Err("missing '}'".into());
        }
        let text = String::from_utf8_lossy(self.s.get(start..self.i).unwrap_or_default());
        self.i += 1;
        Ok(text.split_whitespace().collect::<Vec<_>>().join(""))
    }

    fn metric_or_name(&mut self) -> Result<Expr, String> {
        let first = self.ident();
        let (aggr, metric) = if self.s.get(self.i) == Some(&b':') {
            self.i += 1;
            self.ws();
            (Some(first), self.ident())
        } else {
            (None, first)
        };
        if self.peek() != Some(b'{') {
            if aggr.is_some() {
                return Err(format!("expected '{{' after {metric}"));
            }
            return Ok(Expr::Name(metric));
        }
        self.i += 1;
        let scope_text = self.braced()?;
        let mut scope = Vec::new();
        if scope_text != "*" && !scope_text.is_empty() {
            for item in scope_text.split(',') {
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
        let mut by = Vec::new();
        let save = self.i;
        self.ws();
        if self.s.get(self.i..self.i + 2) == Some(b"by") {
            self.i += 2;
            if !self.eat(b'{') {
                return Err("expected '{' after by".into());
            }
            by = self
                .braced()?
                .split(',')
                .filter(|t| !t.is_empty())
                .map(String::from)
                .collect();
        } else {
            self.i = save;
        }
        let mut as_rate = false;
        while self.s.get(self.i) == Some(&b'.') {
            self.i += 1;
            let f = self.ident();
            if !(self.eat(b'(') && self.eat(b')')) {
                return Err(format!("expected () after .{f}"));
            }
            match f.as_str() {
                "as_count" => as_rate = false,
                "as_rate" => as_rate = true,
                other => return Err(format!("unsupported function .{other}()")),
            }
        }
        Ok(Expr::Metric(MetricQuery {
            aggr,
            metric,
            scope,
            by,
            as_rate,
            scope_text,
        }))
    }
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
