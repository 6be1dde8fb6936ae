//! A reader for the subset of EDN (Clojure's data notation) that Jepsen-style histories use.
//!
//! Why our own: Knossos and Porcupine write histories as EDN, and the subset they need (nil,
//! booleans, integers, floats, strings, keywords, symbols, vectors, lists, sets, maps, `;`
//! comments and `#_` discards) is small enough that a reader here costs less than a dependency.
//! Tagged literals (`#inst`, `#uuid`, records) are refused, not guessed at.
//!
//! Every error is a [`ParseError`] naming the 1-based line where the reader stopped, and every
//! top-level entry of a history remembers the line it starts on, so the converters in
//! [`crate::formats`] can name the line of an entry they refuse. Nesting is bounded by
//! [`MAX_NESTING_DEPTH`], so a hostile file cannot overflow the stack.

use crate::history::ParseError;

/// Deepest nesting of collections accepted; histories need about four.
pub const MAX_NESTING_DEPTH: usize = 64;

/// An EDN value.
#[derive(Clone, Debug, PartialEq)]
pub enum Edn {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// Without the leading colon.
    Keyword(String),
    Symbol(String),
    Vector(Vec<Edn>),
    List(Vec<Edn>),
    Set(Vec<Edn>),
    /// Pairs in file order (histories' maps are small; lookups scan).
    Map(Vec<(Edn, Edn)>),
}

impl Edn {
    /// Looks up a keyword key in a map: `get("process")` finds `:process`.
    pub fn get(&self, keyword: &str) -> Option<&Edn> {
        match self {
            Edn::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| matches!(k, Edn::Keyword(name) if name == keyword))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn keyword(&self) -> Option<&str> {
        match self {
            Edn::Keyword(k) => Some(k),
            _ => None,
        }
    }

    pub fn int(&self) -> Option<i64> {
        match self {
            Edn::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The items of a vector or a list.
    pub fn items(&self) -> Option<&[Edn]> {
        match self {
            Edn::Vector(v) | Edn::List(v) => Some(v),
            _ => None,
        }
    }
}

/// One top-level entry of a history, with the 1-based line it starts on.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub line: usize,
    pub form: Edn,
}

/// Parses every top-level form of `text`.
pub fn parse(text: &str) -> Result<Vec<Entry>, ParseError> {
    Ok(Reader::new(text).top_level()?.0)
}

/// A history file's entries: either one vector (or list) of maps, or one form after another
/// (usually one map per line). Either way, each entry carries its own line.
pub fn parse_history(text: &str) -> Result<Vec<Entry>, ParseError> {
    let mut reader = Reader::new(text);
    let (mut forms, item_lines) = reader.top_level()?;
    if forms.len() == 1 {
        if let Edn::Vector(items) | Edn::List(items) = &mut forms[0].form {
            debug_assert_eq!(items.len(), item_lines.len());
            let items = std::mem::take(items);
            return Ok(item_lines
                .into_iter()
                .zip(items)
                .map(|(line, form)| Entry { line, form })
                .collect());
        }
    }
    Ok(forms)
}

struct Reader {
    chars: Vec<char>,
    pos: usize,
    /// 1-based line of `chars[pos]`.
    line: usize,
    /// Collections currently open.
    depth: usize,
    /// Start lines of the items of top-level collections, in order.
    item_lines: Vec<usize>,
}

impl Reader {
    fn new(text: &str) -> Reader {
        Reader {
            chars: text.chars().collect(),
            pos: 0,
            line: 1,
            depth: 0,
            item_lines: Vec::new(),
        }
    }

    fn error(&self, reason: impl Into<String>) -> ParseError {
        ParseError {
            line: self.line,
            reason: reason.into(),
        }
    }

    /// All top-level forms, and the start lines of the items of top-level collections.
    fn top_level(&mut self) -> Result<(Vec<Entry>, Vec<usize>), ParseError> {
        let mut forms = Vec::new();
        loop {
            self.skip_blank();
            if self.peek().is_none() {
                return Ok((forms, std::mem::take(&mut self.item_lines)));
            }
            let line = self.line;
            forms.push(Entry {
                line,
                form: self.form()?,
            });
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += 1;
        if c == '\n' {
            self.line += 1;
        }
        Some(c)
    }

    fn skip_blank(&mut self) {
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c == ',' {
                self.bump();
            } else if c == ';' {
                while self.peek().is_some_and(|c| c != '\n') {
                    self.bump();
                }
            } else {
                break;
            }
        }
    }

    /// The forms up to `close` (the opening delimiter already consumed).
    fn seq(&mut self, close: char) -> Result<Vec<Edn>, ParseError> {
        if self.depth >= MAX_NESTING_DEPTH {
            return Err(self.error(format!(
                "collections nested deeper than {MAX_NESTING_DEPTH}"
            )));
        }
        self.depth += 1;
        let mut items = Vec::new();
        loop {
            self.skip_blank();
            match self.peek() {
                None => return Err(self.error(format!("end of input before {close:?}"))),
                Some(c) if c == close => {
                    self.bump();
                    self.depth -= 1;
                    return Ok(items);
                }
                Some(_) => {
                    if self.depth == 1 {
                        self.item_lines.push(self.line);
                    }
                    items.push(self.form()?);
                }
            }
        }
    }

    fn token(&mut self) -> String {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if c.is_whitespace() || ",;()[]{}\"".contains(c) {
                break;
            }
            self.bump();
        }
        self.chars[start..self.pos].iter().collect()
    }

    fn form(&mut self) -> Result<Edn, ParseError> {
        self.skip_blank();
        let c = self
            .peek()
            .ok_or_else(|| self.error("unexpected end of input"))?;
        match c {
            '[' => {
                self.bump();
                Ok(Edn::Vector(self.seq(']')?))
            }
            '(' => {
                self.bump();
                Ok(Edn::List(self.seq(')')?))
            }
            '{' => {
                self.bump();
                let line = self.line;
                let items = self.seq('}')?;
                if items.len() % 2 != 0 {
                    return Err(ParseError {
                        line,
                        reason: "a map with an odd number of forms".into(),
                    });
                }
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    pairs.push((k, v));
                }
                Ok(Edn::Map(pairs))
            }
            '#' => {
                self.bump();
                match self.peek() {
                    Some('{') => {
                        self.bump();
                        Ok(Edn::Set(self.seq('}')?))
                    }
                    Some('_') => {
                        self.bump();
                        self.form()?;
                        self.form()
                    }
                    _ => Err(self.error("unsupported '#' dispatch (tagged literal?)")),
                }
            }
            '"' => {
                self.bump();
                self.string()
            }
            ':' => {
                self.bump();
                let name = self.token();
                if name.is_empty() {
                    return Err(self.error("a keyword without a name"));
                }
                Ok(Edn::Keyword(name))
            }
            ']' | ')' | '}' => Err(self.error(format!("unmatched {c:?}"))),
            _ => {
                let token = self.token();
                if token.is_empty() {
                    return Err(self.error(format!("unexpected {c:?}")));
                }
                self.atom(&token)
            }
        }
    }

    /// The rest of a string literal (the opening quote consumed).
    fn string(&mut self) -> Result<Edn, ParseError> {
        let mut s = String::new();
        loop {
            let c = self
                .bump()
                .ok_or_else(|| self.error("end of input inside a string"))?;
            match c {
                '"' => return Ok(Edn::Str(s)),
                '\\' => {
                    let escaped = self
                        .bump()
                        .ok_or_else(|| self.error("end of input inside a string"))?;
                    s.push(match escaped {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        other => other,
                    });
                }
                other => s.push(other),
            }
        }
    }

    fn atom(&self, token: &str) -> Result<Edn, ParseError> {
        Ok(match token {
            "nil" => Edn::Nil,
            "true" => Edn::Bool(true),
            "false" => Edn::Bool(false),
            t if t.starts_with(|c: char| c.is_ascii_digit())
                || (t.len() > 1 && t.starts_with(['-', '+'])) =>
            {
                // `N` marks a big integer and `M` a big decimal; ours fit 64 bits or are refused.
                let digits = t.trim_end_matches('N');
                match digits.parse::<i64>() {
                    Ok(i) => Edn::Int(i),
                    Err(_) => Edn::Float(
                        digits
                            .trim_end_matches('M')
                            .parse()
                            .map_err(|_| self.error(format!("bad number {t:?}")))?,
                    ),
                }
            }
            t => Edn::Symbol(t.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_vector_history_with_lines() {
        let text = "; a comment\n[{:process 0, :type :invoke, :f :read, :value nil}\n {:process 0 :type :ok :f :read :value [1 \"a\" :x]}]\n";
        let entries = parse_history(text).expect("parses");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].line, 2);
        assert_eq!(entries[1].line, 3);
        assert_eq!(
            entries[1].form.get("type"),
            Some(&Edn::Keyword("ok".into()))
        );
        assert_eq!(
            entries[1].form.get("value"),
            Some(&Edn::Vector(vec![
                Edn::Int(1),
                Edn::Str("a".into()),
                Edn::Keyword("x".into())
            ]))
        );
    }

    #[test]
    fn reads_one_map_per_line() {
        let text = "{:a 1}\n\n{:a #{2} :b #_ 3 4}\n";
        let entries = parse_history(text).expect("parses");
        assert_eq!(
            entries.iter().map(|e| e.line).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(entries[1].form.get("b"), Some(&Edn::Int(4)));
    }

    #[test]
    fn errors_name_their_line() {
        for (text, line) in [
            ("{:a 1}\n{:a", 2),
            ("{:a 1}\n{:a 1 :b}", 2),
            ("[1\n2\n#inst \"2020\"]", 3),
            ("\n\n\"unclosed", 3),
            ("{:a 1}}", 1),
        ] {
            let error = parse_history(text).expect_err(text);
            assert_eq!(error.line, line, "{text:?}: {error}");
        }
        let deep = "[".repeat(MAX_NESTING_DEPTH + 1);
        assert!(parse(&deep).is_err());
    }
}
