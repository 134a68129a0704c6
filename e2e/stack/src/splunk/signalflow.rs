//! The SignalFlow subset the Splunk emulator runs, parsed into statements.
//!
//! ```text
//! program   := statement ((newline | ';') statement)*       # '#' starts a comment
//! statement := [name '='] expr
//! expr      := or ; or := and ('or' and)* ; and := not ('and' not)* ; not := 'not' not | sum
//! sum       := product (('+' | '-') product)*
//! product   := unary (('*' | '/') unary)*
//! unary     := '-' unary | postfix
//! postfix   := atom ('.' name '(' arguments ')')*
//! atom      := number | 'string' | "string" | True | False | None | name
//!            | name '(' arguments ')' | '(' expr ')' | '[' expr, ... ']'
//! arguments := [argument (',' argument)*]     argument := [name '='] expr
//! ```
//!
//! Line breaks inside parentheses and brackets continue the statement, as in Python. What the
//! names mean (`data`, `filter`, `.sum()`, `.publish()`, ...) is the evaluator's business.

#[derive(Debug, Clone, PartialEq)]
pub enum Ast {
    Number(f64),
    Str(String),
    Bool(bool),
    None,
    Name(String),
    List(Vec<Ast>),
    Call(String, Args),
    Method(Box<Ast>, String, Args),
    Neg(Box<Ast>),
    Bin(Box<Ast>, char, Box<Ast>),
    And(Box<Ast>, Box<Ast>),
    Or(Box<Ast>, Box<Ast>),
    Not(Box<Ast>),
}

/// Positional and keyword arguments.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Args {
    pub positional: Vec<Ast>,
    pub keyword: Vec<(String, Ast)>,
}

impl Args {
    /// The argument named `name`, or else the positional one at `index`.
    pub fn get(&self, index: usize, name: &str) -> Option<&Ast> {
        self.keyword
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .or_else(|| self.positional.get(index))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    pub assign: Option<String>,
    pub expr: Ast,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Name(String),
    Str(String),
    Num(f64),
    Sym(char),
    /// The end of a statement (a line break or `;`).
    End,
}

fn lex(text: &str) -> Result<Vec<Tok>, String> {
    let cs: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&c) = cs.get(i) {
        match c {
            '\n' | ';' => {
                if depth == 0 {
                    out.push(Tok::End);
                }
                i += 1;
            }
            c if c.is_whitespace() => i += 1,
            '#' => {
                while cs.get(i).is_some_and(|c| *c != '\n') {
                    i += 1;
                }
            }
            '\'' | '"' => {
                let mut v = String::new();
                i += 1;
                loop {
                    match cs.get(i).copied() {
                        None | Some('\n') => return Err("unterminated string".into()),
                        Some('\\') => {
                            if let Some(&e) = cs.get(i + 1) {
                                v.push(e);
                            }
                            i += 2;
                        }
                        Some(q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some(x) => {
                            v.push(x);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(v));
            }
            c if c.is_ascii_digit()
                || (c == '.' && cs.get(i + 1).is_some_and(char::is_ascii_digit)) =>
            {
                let start = i;
                while cs
                    .get(i)
                    .is_some_and(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E'))
                {
                    i += 1;
                }
                let text: String = cs.get(start..i).unwrap_or_default().iter().collect();
                out.push(Tok::Num(
                    text.parse()
                        .map_err(|_| format!("invalid number {text:?}"))?,
                ));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while cs.get(i).is_some_and(|c| c.is_alphanumeric() || *c == '_') {
                    i += 1;
                }
                out.push(Tok::Name(
                    cs.get(start..i).unwrap_or_default().iter().collect(),
                ));
            }
            '(' | '[' => {
                depth += 1;
                out.push(Tok::Sym(c));
                i += 1;
            }
            ')' | ']' => {
                depth = depth.saturating_sub(1);
                out.push(Tok::Sym(c));
                i += 1;
            }
            '=' | ',' | '.' | '+' | '-' | '*' | '/' => {
                out.push(Tok::Sym(c));
                i += 1;
            }
            other => return Err(format!("unexpected character {other:?}")),
        }
    }
    out.push(Tok::End);
    Ok(out)
}

pub fn parse(text: &str) -> Result<Vec<Statement>, String> {
    let mut p = Parser {
        toks: lex(text)?,
        i: 0,
    };
    let mut out = Vec::new();
    while p.i < p.toks.len() {
        if p.peek() == Some(&Tok::End) {
            p.i += 1;
            continue;
        }
        let assign = match (p.toks.get(p.i), p.toks.get(p.i + 1)) {
            (Some(Tok::Name(n)), Some(Tok::Sym('='))) => {
                let n = n.clone();
                p.i += 2;
                Some(n)
            }
            _ => None,
        };
        let expr = p.expr()?;
        if p.peek() != Some(&Tok::End) {
            return Err(format!("unexpected {:?} after a statement", p.peek()));
        }
        out.push(Statement { assign, expr });
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    i: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i)
    }

    fn sym(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Sym(c)) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn keyword(&mut self, k: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Name(n)) if n == k) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Ast, String> {
        let mut e = self.and()?;
        while self.keyword("or") {
            e = Ast::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Ast, String> {
        let mut e = self.not()?;
        while self.keyword("and") {
            e = Ast::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Ast, String> {
        if self.keyword("not") {
            return Ok(Ast::Not(Box::new(self.not()?)));
        }
        self.sum()
    }

    fn sum(&mut self) -> Result<Ast, String> {
        let mut e = self.product()?;
        while let Some(Tok::Sym(op @ ('+' | '-'))) = self.peek() {
            let op = *op;
            self.i += 1;
            e = Ast::Bin(Box::new(e), op, Box::new(self.product()?));
        }
        Ok(e)
    }

    fn product(&mut self) -> Result<Ast, String> {
        let mut e = self.unary()?;
        while let Some(Tok::Sym(op @ ('*' | '/'))) = self.peek() {
            let op = *op;
            self.i += 1;
            e = Ast::Bin(Box::new(e), op, Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Ast, String> {
        if self.sym('-') {
            return Ok(Ast::Neg(Box::new(self.unary()?)));
        }
        let mut e = self.atom()?;
        while self.sym('.') {
            let Some(Tok::Name(name)) = self.peek().cloned() else {
                return Err("a method name is expected after '.'".into());
            };
            self.i += 1;
            if !self.sym('(') {
                return Err(format!("expected '(' after .{name}"));
            }
            let args = self.args()?;
            e = Ast::Method(Box::new(e), name, args);
        }
        Ok(e)
    }

    fn atom(&mut self) -> Result<Ast, String> {
        let tok = self.peek().cloned();
        self.i += 1;
        Ok(match tok {
            Some(Tok::Num(n)) => Ast::Number(n),
            Some(Tok::Str(s)) => Ast::Str(s),
            Some(Tok::Name(n)) => match n.as_str() {
                "True" => Ast::Bool(true),
                "False" => Ast::Bool(false),
                "None" => Ast::None,
                _ if self.sym('(') => Ast::Call(n, self.args()?),
                _ => Ast::Name(n),
            },
            Some(Tok::Sym('(')) => {
                let e = self.expr()?;
                if !self.sym(')') {
                    return Err("expected ')'".into());
                }
                e
            }
            Some(Tok::Sym('[')) => {
                let mut items = Vec::new();
                if !self.sym(']') {
                    loop {
                        items.push(self.expr()?);
                        if self.sym(']') {
                            break;
                        }
                        if !self.sym(',') {
                            return Err("expected ',' or ']'".into());
                        }
                    }
                }
                Ast::List(items)
            }
            Some(Tok::End) | None => return Err("unexpected end of the statement".into()),
            Some(other) => return Err(format!("unexpected {other:?}")),
        })
    }

    /// Arguments up to the closing parenthesis (the opening one eaten).
    fn args(&mut self) -> Result<Args, String> {
        let mut args = Args::default();
        if self.sym(')') {
            return Ok(args);
        }
        loop {
            match (self.toks.get(self.i), self.toks.get(self.i + 1)) {
                (Some(Tok::Name(n)), Some(Tok::Sym('='))) => {
                    let n = n.clone();
                    self.i += 2;
                    args.keyword.push((n, self.expr()?));
                }
                _ => {
                    if !args.keyword.is_empty() {
                        return Err("a positional argument follows a keyword argument".into());
                    }
                    args.positional.push(self.expr()?);
                }
            }
            if self.sym(')') {
                return Ok(args);
            }
            if !self.sym(',') {
                return Err("expected ',' or ')' in the arguments".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flaggers_documented_program_parses() {
        let program = "total = data('traces.count', filter=filter('sf_service', 'podinfo')).sum().publish(enable=False)\n\
            success = data('traces.count', filter=filter('sf_service', 'podinfo') and filter('sf_error', 'false')).sum().publish(enable=False)\n\
            ((success/total) * 100).publish()\n";
        let statements = parse(program).unwrap();
        assert_eq!(statements.len(), 3);
        assert_eq!(statements[0].assign.as_deref(), Some("total"));
        assert_eq!(statements[2].assign, None);
        let Ast::Method(target, name, args) = &statements[1].expr else {
            panic!("{:?}", statements[1])
        };
        assert_eq!(name, "publish");
        assert_eq!(args.get(9, "enable"), Some(&Ast::Bool(false)));
        let Ast::Method(data, sum, _) = target.as_ref() else {
            panic!()
        };
        assert_eq!(sum, "sum");
        let Ast::Call(f, args) = data.as_ref() else {
            panic!()
        };
        assert_eq!(f, "data");
        assert!(matches!(args.get(1, "filter"), Some(Ast::And(..))));
    }

    #[test]
    fn line_breaks_inside_parentheses_continue_and_semicolons_end() {
        let program = "A = data('m',\n  filter=filter('a', 'x', \"y\"),  # a comment\n  rollup='sum').sum(by=['sf_service']); A.publish('A')";
        let statements = parse(program).unwrap();
        assert_eq!(statements.len(), 2);
        assert_eq!(
            statements[1].expr,
            Ast::Method(
                Box::new(Ast::Name("A".into())),
                "publish".into(),
                Args {
                    positional: vec![Ast::Str("A".into())],
                    keyword: vec![]
                }
            )
        );
    }

    #[test]
    fn broken_programs_are_errors() {
        for bad in [
            "data('m'",
            "data('m).publish()",
            "data('m').",
            "data('m').sum",
            "a = ",
            "data('m') data('n')",
            "f(a=1, 2)",
            "[1, 2",
            "x = 1 $ 2",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
