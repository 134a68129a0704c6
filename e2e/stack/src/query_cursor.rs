//! The scanning the emulators' hand-written query parsers share (CloudWatch metric math,
//! Datadog queries, Dynatrace selectors, Graphite targets): a [`Cursor`] over the query's
//! text, and the arithmetic of `+ - * /` the first three have. Each parser keeps its own
//! grammar and its own error messages.
//!
//! The cursor steps over bytes: the tokens of these languages are ASCII, and text that is
//! not (in names, values, strings) is taken whole, since no ASCII byte occurs inside a UTF-8
//! sequence of another character.

/// A position in a query's text.
pub struct Cursor<'a> {
    src: &'a str,
    /// A byte offset into `src`.
    pos: usize,
    /// Whitespace is Unicode's, not only ASCII's (the Dynatrace parser has always skipped it).
    unicode_space: bool,
}

impl<'a> Cursor<'a> {
    pub fn new(src: &'a str) -> Self {
        Cursor {
            src,
            pos: 0,
            unicode_space: false,
        }
    }

    /// The same cursor, skipping any Unicode whitespace.
    pub fn unicode_whitespace(self) -> Self {
        Cursor {
            unicode_space: true,
            ..self
        }
    }

    /// The byte offset.
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Back to an offset [`pos`](Self::pos) gave, to try another reading.
    pub fn set_pos(&mut self, pos: usize) {
        self.pos = pos;
    }

    /// The offset in characters: where the parser has always counted so in its messages.
    pub fn char_pos(&self) -> usize {
        self.src
            .get(..self.pos)
            .map_or(self.pos, |done| done.chars().count())
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.src.len()
    }

    pub fn skip_ws(&mut self) {
        while let Some(c) = self.src.get(self.pos..).and_then(|r| r.chars().next()) {
            let space = match self.unicode_space {
                true => c.is_whitespace(),
                false => c.is_ascii_whitespace(),
            };
            if !space {
                break;
            }
            self.pos += c.len_utf8();
        }
    }

    /// The next byte after whitespace (skipped).
    pub fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.here()
    }

    /// The next byte, whitespace or not.
    pub fn here(&self) -> Option<u8> {
        self.src.as_bytes().get(self.pos).copied()
    }

    /// Steps over the next byte: one that [`peek`](Self::peek) or [`here`](Self::here)
    /// showed to be ASCII, or a character's would be split.
    pub fn bump(&mut self) {
        self.pos += 1;
    }

    /// Skips whitespace, then steps over `c` if it comes next.
    pub fn eat(&mut self, c: u8) -> bool {
        let found = self.peek() == Some(c);
        if found {
            self.bump();
        }
        found
    }

    /// Steps over `s` if it comes next, whitespace not skipped.
    pub fn eat_here(&mut self, s: &str) -> bool {
        let found = self
            .src
            .as_bytes()
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(s.as_bytes()));
        if found {
            self.pos += s.len();
        }
        found
    }

    /// The next character, stepped over (for text taken character by character, as a quoted
    /// value with escapes).
    pub fn next_char(&mut self) -> Option<char> {
        let c = self.src.get(self.pos..)?.chars().next()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    /// The bytes from here while `more` holds, stepped over. `more` should hold for all
    /// non-ASCII bytes or for none, so that a character is taken whole or not at all.
    pub fn take_while(&mut self, more: impl Fn(u8) -> bool) -> String {
        let start = self.pos;
        while self.here().is_some_and(&more) {
            self.bump();
        }
        self.slice(start, self.pos)
    }

    /// The digits and points of a number from here, stepped over and read; `Err` carries the
    /// text when it is not a number (each parser words that error itself).
    pub fn number(&mut self) -> Result<f64, String> {
        let text = self.take_while(|c| c.is_ascii_digit() || c == b'.');
        match text.parse() {
            Ok(n) => Ok(n),
            Err(_) => Err(text),
        }
    }

    /// The text between two offsets.
    pub fn slice(&self, from: usize, to: usize) -> String {
        // Lossy: an excerpt cut at a byte count may end inside a character.
        String::from_utf8_lossy(self.src.as_bytes().get(from..to).unwrap_or_default()).into_owned()
    }

    /// The text not read yet.
    pub fn rest(&self) -> String {
        self.slice(self.pos, self.src.len())
    }

    /// At most `max` bytes of the text not read yet, for an error message.
    pub fn excerpt(&self, max: usize) -> String {
        self.slice(self.pos, self.src.len().min(self.pos + max))
    }
}

/// A byte of a plain name: a letter, a digit or `_`.
pub fn is_name_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// `sum := product (('+' | '-') product)*`, `product := operand (('*' | '/') operand)*`: the
/// arithmetic around each language's own operands, `*` and `/` binding tighter and every
/// operator left-associative (`a - b - c` is `(a - b) - c`). `join` builds a node.
pub fn arithmetic<'a, E>(
    c: &mut Cursor<'a>,
    operand: fn(&mut Cursor<'a>) -> Result<E, String>,
    join: fn(E, char, E) -> E,
) -> Result<E, String> {
    left_assoc(c, b"+-", &|c| left_assoc(c, b"*/", &operand, join), join)
}

/// `operand (op operand)*` for the operators in `ops`, folded to the left.
fn left_assoc<'a, E>(
    c: &mut Cursor<'a>,
    ops: &[u8],
    operand: &dyn Fn(&mut Cursor<'a>) -> Result<E, String>,
    join: fn(E, char, E) -> E,
) -> Result<E, String> {
    let mut e = operand(c)?;
    while let Some(op) = c.peek().filter(|op| ops.contains(op)) {
        c.bump();
        e = join(e, op as char, operand(c)?);
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum E {
        N(f64),
        Bin(Box<E>, char, Box<E>),
    }

    fn number(c: &mut Cursor<'_>) -> Result<E, String> {
        c.skip_ws();
        c.number().map(E::N)
    }

    fn bin(a: E, op: char, b: E) -> E {
        E::Bin(Box::new(a), op, Box::new(b))
    }

    #[test]
    fn arithmetic_binds_products_tighter_and_folds_left() {
        let mut c = Cursor::new("1 - 2 * 3 - 4");
        let e = arithmetic(&mut c, number, bin).unwrap();
        let want = bin(
            bin(E::N(1.0), '-', bin(E::N(2.0), '*', E::N(3.0))),
            '-',
            E::N(4.0),
        );
        assert_eq!(e, want);
        assert!(c.at_end());
        assert_eq!(
            arithmetic(&mut Cursor::new("1 +"), number, bin),
            Err(String::new())
        );
    }

    #[test]
    fn text_outside_ascii_is_taken_whole() {
        let mut c = Cursor::new("\u{a0}né(x)");
        assert_eq!(c.peek(), Some(0xc2));
        let mut c = Cursor::new("\u{a0}né(x)").unicode_whitespace();
        c.skip_ws();
        assert_eq!(c.take_while(|b| b != b'('), "né");
        assert_eq!(c.char_pos(), 3);
        assert!(c.eat_here("(x"));
        assert_eq!(c.rest(), ")");
        assert_eq!(Cursor::new("éé").excerpt(3), "é\u{fffd}");
        assert_eq!(Cursor::new("1.2.3").number(), Err("1.2.3".to_string()));
    }
}
