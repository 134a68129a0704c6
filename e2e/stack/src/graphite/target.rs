//! The Graphite target subset the emulator renders, parsed into an expression tree.
//!
//! ```text
//! expr := call | path | number | 'string' | "string" | true | false
//! call := name '(' [arg (',' arg)*] ')'        arg := [name '='] expr
//! path := node ('.' node)*                      node: letters, digits, `_-:#@`, globs
//!                                               `*`, `?`, `[a-z0-9]`, `{a,b}`
//! ```
//!
//! Whitespace is allowed around arguments (Flagger sends a template's line breaks as spaces).

use crate::query_cursor::{Cursor, is_name_byte};

/// A parsed target.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Path(String),
    Number(f64),
    Str(String),
    Bool(bool),
    Call { name: String, args: Vec<Arg> },
}

/// One argument of a call: positional or `name=value`, and its text as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Option<String>,
    pub expr: Expr,
    pub text: String,
}

pub fn parse(target: &str) -> Result<Expr, String> {
    let mut p = Parser {
        c: Cursor::new(target),
        depth: 0,
    };
    let e = p.expr()?;
    if p.c.peek().is_some() {
        return Err(unexpected(&p.c, p.c.pos()));
    }
    Ok(e)
}

struct Parser<'a> {
    c: Cursor<'a>,
    /// Calls open: nesting is bounded, so parsing and evaluating are.
    depth: usize,
}

const MAX_DEPTH: usize = 64;

/// What is left at `at`, in a message short enough for a log line.
fn unexpected(c: &Cursor<'_>, at: usize) -> String {
    format!("unexpected {:?} at position {at}", c.excerpt(40))
}

/// Whether a word is a plain name (a function's, a keyword argument's).
fn is_name(word: &str) -> bool {
    word.bytes().all(is_name_byte)
}

impl Parser<'_> {
    fn text(&self, from: usize) -> String {
        self.c.slice(from, self.c.pos()).trim().to_string()
    }

    fn expr(&mut self) -> Result<Expr, String> {
        match self.c.peek() {
            None => Err("an expression is missing".into()),
            Some(q @ (b'\'' | b'"')) => {
                self.c.bump();
                let start = self.c.pos();
                self.c.take_while(|b| b != q);
                if self.c.at_end() {
                    return Err("unterminated string".into());
                }
                let s = self.text(start);
                self.c.bump();
                Ok(Expr::Str(s))
            }
            Some(_) => {
                let start = self.c.pos();
                let word = self.word()?;
                if self.c.peek() == Some(b'(') {
                    return self.call(word);
                }
                if word == "true" || word == "false" {
                    return Ok(Expr::Bool(word == "true"));
                }
                let numeric = word
                    .bytes()
                    .next()
                    .is_some_and(|c| c.is_ascii_digit() || c == b'-' || c == b'.');
                if numeric && let Ok(n) = word.parse::<f64>() {
                    return Ok(Expr::Number(n));
                }
                if word.is_empty() {
                    return Err(unexpected(&self.c, start));
                }
                Ok(Expr::Path(word))
            }
        }
    }

    /// The call of `name` (its `(` next).
    fn call(&mut self, name: String) -> Result<Expr, String> {
        if !is_name(&name) {
            return Err(format!("{name:?} is not a function name"));
        }
        self.c.bump();
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err("functions nested too deep".into());
        }
        let args = self.args()?;
        self.depth -= 1;
        Ok(Expr::Call { name, args })
    }

    /// A path or a name: up to whitespace, `(`, `)`, `=` or a `,` outside braces.
    fn word(&mut self) -> Result<String, String> {
        let start = self.c.pos();
        let mut braces = 0i32;
        let mut brackets = 0i32;
        while let Some(c) = self.c.here() {
            match c {
                b'{' => braces += 1,
                b'}' => braces -= 1,
                b'[' => brackets += 1,
                b']' => brackets -= 1,
                b',' if braces > 0 => {}
                b'(' | b')' | b',' | b'=' | b'\'' | b'"' => break,
                c if c.is_ascii_whitespace() => break,
                _ => {}
            }
            if braces < 0 || brackets < 0 {
                return Err(format!("unbalanced brace at position {}", self.c.pos()));
            }
            self.c.bump();
        }
        if braces != 0 || brackets != 0 {
            return Err("unbalanced braces".into());
        }
        Ok(self.text(start))
    }

    fn args(&mut self) -> Result<Vec<Arg>, String> {
        let mut args = Vec::new();
        if self.c.eat(b')') {
            return Ok(args);
        }
        loop {
            self.c.skip_ws();
            let start = self.c.pos();
            let name = self.keyword();
            let expr = self.expr()?;
            args.push(Arg {
                name,
                expr,
                text: self.text(start),
            });
            match self.c.peek() {
                Some(b',') => self.c.bump(),
                Some(b')') => {
                    self.c.bump();
                    return Ok(args);
                }
                _ => return Err(format!("expected , or ) at position {}", self.c.pos())),
            }
        }
    }

    /// The `name` of a `name=value` argument (a bare word followed by `=`), stepped over with
    /// its `=`; else nothing is.
    fn keyword(&mut self) -> Option<String> {
        let save = self.c.pos();
        match self.word() {
            Ok(w) if !w.is_empty() && is_name(&w) && self.c.peek() == Some(b'=') => {
                self.c.bump();
                Some(w)
            }
            _ => {
                self.c.set_pos(save);
                None
            }
        }
    }
}

/// A regular expression for one node of a path pattern: `*`, `?`, `[...]` and `{a,b}` as
/// Graphite's globs (they never cross a `.`).
pub fn node_regex(node: &str) -> String {
    let mut re = String::from("^");
    let mut chars = node.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str("[^.]*"),
            '?' => re.push_str("[^.]"),
            '{' => {
                let mut alternatives = String::new();
                for a in chars.by_ref() {
                    if a == '}' {
                        break;
                    }
                    alternatives.push(a);
                }
                let parts: Vec<String> = alternatives
                    .split(',')
                    .map(|a| {
                        node_regex(a)
                            .trim_start_matches('^')
                            .trim_end_matches('$')
                            .to_string()
                    })
                    .collect();
                re.push_str(&format!("(?:{})", parts.join("|")));
            }
            '[' => {
                let mut class = String::new();
                for a in chars.by_ref() {
                    if a == ']' {
                        break;
                    }
                    class.push(a);
                }
                let class: String = class
                    .chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                re.push_str(&format!("[{class}]"));
            }
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    re
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flaggers_documented_target() {
        let t = "summarize( asPercent( sumSeries( stats.timers.x.app.podinfo.outcome.{CLIENT_ERROR,SUCCESS}.count ), sumSeries( stats.timers.x.app.podinfo.outcome.*.count ) ), 1min, 'avg' )";
        let Expr::Call { name, args } = parse(t).unwrap() else {
            panic!("a call")
        };
        assert_eq!(name, "summarize");
        assert_eq!(args.len(), 3);
        assert_eq!(args[1].expr, Expr::Path("1min".into()));
        assert_eq!(args[2].expr, Expr::Str("avg".into()));
        let Expr::Call { args: inner, .. } = &args[0].expr else {
            panic!("asPercent")
        };
        let Expr::Call { args: sum, .. } = &inner[0].expr else {
            panic!("sumSeries")
        };
        assert_eq!(
            sum[0].expr,
            Expr::Path("stats.timers.x.app.podinfo.outcome.{CLIENT_ERROR,SUCCESS}.count".into())
        );
    }

    #[test]
    fn keyword_arguments_numbers_and_errors() {
        let Expr::Call { args, .. } =
            parse("summarize(a.b, '1min', func='max', alignToFrom=true)").unwrap()
        else {
            panic!()
        };
        assert_eq!(args[2].name.as_deref(), Some("func"));
        assert_eq!(args[3].expr, Expr::Bool(true));
        assert_eq!(parse("scale(a.*, -0.5)").ok().map(|_| ()), Some(()));
        for bad in [
            "sumSeries(a.b",
            "a.{b,c",
            "sumSeries(a.b))",
            "'open",
            "f(,)",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let deep = format!("{}a.b{}", "sum(".repeat(10_000), ")".repeat(10_000));
        assert!(parse(&deep).is_err());
    }

    #[test]
    fn globs_stay_within_a_node() {
        let re = regex::Regex::new(&node_regex("{CLIENT_ERROR,SUC*}")).unwrap();
        assert!(re.is_match("CLIENT_ERROR") && re.is_match("SUCCESS"));
        assert!(!re.is_match("SERVER_ERROR"));
        let re = regex::Regex::new(&node_regex("podinfo-[a-z]?")).unwrap();
        assert!(re.is_match("podinfo-x1") && !re.is_match("podinfo-primary"));
    }
}
