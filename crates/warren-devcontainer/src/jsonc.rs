//! A small JSONC parser (JSON plus `//` and `/* */` comments and trailing commas) that keeps 1-based
//! line:column positions for every value, so type errors can point at the offending value.

/// A 1-based line and column (columns count Unicode scalar values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

/// A JSON value; object entries keep file order and unique keys (a repeated key keeps its last value).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Null,
    Bool(bool),
    /// The number as written (devcontainer.json never needs its numeric value).
    Number(String),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

/// A value and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub pos: Pos,
    pub value: Value,
}

impl Value {
    /// The JSON type name used in error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
}

/// A syntax error at a position.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// A key that appeared more than once in one object (the later value wins).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Duplicate {
    pub key: String,
    pub pos: Pos,
}

const MAX_DEPTH: usize = 128;

/// Parses a whole JSONC document into a value tree and the list of duplicated keys.
pub(crate) fn parse(text: &str) -> Result<(Node, Vec<Duplicate>), SyntaxError> {
    parse_with(text, false)
}

/// Parses strict JSON (`JSON.parse`): no comments, no trailing commas.
pub(crate) fn parse_strict(text: &str) -> Result<(Node, Vec<Duplicate>), SyntaxError> {
    parse_with(text, true)
}

fn parse_with(text: &str, strict: bool) -> Result<(Node, Vec<Duplicate>), SyntaxError> {
    let mut p = Parser {
        chars: text.chars().collect(),
        i: 0,
        line: 1,
        column: 1,
        duplicates: Vec::new(),
        strict,
    };
    if p.peek() == Some('\u{feff}') {
        p.bump();
    }
    p.skip_blank()?;
    let node = p.value(0)?;
    p.skip_blank()?;
    if p.peek().is_some() {
        return p.fail(
            p.pos(),
            format!("unexpected {} after the end of the document", p.found()),
        );
    }
    Ok((node, p.duplicates))
}

struct Parser {
    chars: Vec<char>,
    i: usize,
    line: usize,
    column: usize,
    duplicates: Vec<Duplicate>,
    strict: bool,
}

impl Parser {
    fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.i).copied()
    }

    fn peek_at(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.i + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.i += 1;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn fail<T>(&self, pos: Pos, message: impl Into<String>) -> Result<T, SyntaxError> {
        Err(SyntaxError {
            pos,
            message: message.into(),
        })
    }

    /// Describes the token at the cursor for "found ..." messages.
    fn found(&self) -> String {
        match self.peek() {
            None => "end of file".into(),
            Some('"') => "a string".into(),
            Some(c) if c == '-' || c.is_ascii_digit() => "a number".into(),
            Some(c) if c.is_alphanumeric() || c == '_' => {
                let word: String = self.chars[self.i..]
                    .iter()
                    .take_while(|c| c.is_alphanumeric() || **c == '_')
                    .collect();
                format!("`{word}`")
            }
            Some(c) => format!("`{c}`"),
        }
    }

    /// Skips whitespace and comments.
    fn skip_blank(&mut self) -> Result<(), SyntaxError> {
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Some(c), _) if c.is_whitespace() || c == '\u{feff}' => {
                    self.bump();
                }
                (Some('/'), Some('/' | '*')) if self.strict => {
                    return self.fail(self.pos(), "comments are not allowed in JSON")
                }
                (Some('/'), Some('/')) => {
                    while self.peek().is_some_and(|c| c != '\n') {
                        self.bump();
                    }
                }
                (Some('/'), Some('*')) => {
                    let start = self.pos();
                    self.bump();
                    self.bump();
                    loop {
                        match self.bump() {
                            None => return self.fail(start, "unterminated block comment"),
                            Some('*') if self.peek() == Some('/') => {
                                self.bump();
                                break;
                            }
                            Some(_) => {}
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        let pos = self.pos();
        if depth > MAX_DEPTH {
            return self.fail(pos, format!("values are nested more than {MAX_DEPTH} deep"));
        }
        let value = match self.peek() {
            Some('{') => self.object(depth)?,
            Some('[') => self.array(depth)?,
            Some('"') => Value::String(self.string()?),
            Some(c) if c == '-' || c.is_ascii_digit() => self.number()?,
            Some(c) if c.is_alphabetic() => self.keyword()?,
            _ => return self.fail(pos, format!("expected a value, found {}", self.found())),
        };
        Ok(Node { pos, value })
    }

    fn object(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.bump(); // `{`
        let mut entries: Vec<(String, Node)> = Vec::new();
        loop {
            self.skip_blank()?;
            match self.peek() {
                Some('}') if self.strict && !entries.is_empty() => {
                    return self.fail(self.pos(), "trailing commas are not allowed in JSON")
                }
                Some('}') => {
                    self.bump();
                    return Ok(Value::Object(entries));
                }
                Some('"') => {}
                _ => {
                    let expected = if entries.is_empty() {
                        "a property name in double quotes or `}`"
                    } else {
                        "a property name in double quotes"
                    };
                    return self.fail(
                        self.pos(),
                        format!("expected {expected}, found {}", self.found()),
                    );
                }
            }
            let key_pos = self.pos();
            let key = self.string()?;
            self.skip_blank()?;
            if self.peek() != Some(':') {
                return self.fail(
                    self.pos(),
                    format!(
                        "expected `:` after the property name, found {}",
                        self.found()
                    ),
                );
            }
            self.bump();
            self.skip_blank()?;
            let node = self.value(depth + 1)?;
            // As in JavaScript, a repeated key keeps its first position and takes the last value.
            if let Some(slot) = entries.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = node;
                self.duplicates.push(Duplicate {
                    key: key.clone(),
                    pos: key_pos,
                });
            } else {
                entries.push((key, node));
            }
            self.skip_blank()?;
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some('}') => {
                    self.bump();
                    return Ok(Value::Object(entries));
                }
                _ => {
                    return self.fail(
                        self.pos(),
                        format!("expected `,` or `}}`, found {}", self.found()),
                    )
                }
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, SyntaxError> {
        self.bump(); // `[`
        let mut items = Vec::new();
        loop {
            self.skip_blank()?;
            if self.peek() == Some(']') {
                if self.strict && !items.is_empty() {
                    return self.fail(self.pos(), "trailing commas are not allowed in JSON");
                }
                self.bump();
                return Ok(Value::Array(items));
            }
            items.push(self.value(depth + 1)?);
            self.skip_blank()?;
            match self.peek() {
                Some(',') => {
                    self.bump();
                }
                Some(']') => {
                    self.bump();
                    return Ok(Value::Array(items));
                }
                _ => {
                    return self.fail(
                        self.pos(),
                        format!("expected `,` or `]`, found {}", self.found()),
                    )
                }
            }
        }
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        let start = self.pos();
        self.bump(); // opening quote
        let mut out = String::new();
        loop {
            let here = self.pos();
            match self.bump() {
                None | Some('\n') => return self.fail(start, "unterminated string"),
                Some('"') => return Ok(out),
                Some('\\') => {
                    let c = match self.bump() {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('u') => self.unicode_escape(here)?,
                        Some(c) if c != '\n' => {
                            return self.fail(here, format!("invalid escape sequence `\\{c}`"))
                        }
                        _ => return self.fail(start, "unterminated string"),
                    };
                    out.push(c);
                }
                Some(c) => out.push(c),
            }
        }
    }

    /// Reads the 4 hex digits after `\u` (and a following low surrogate if needed).
    fn unicode_escape(&mut self, at: Pos) -> Result<char, SyntaxError> {
        let first = self.hex4(at)?;
        let code = if (0xD800..0xDC00).contains(&first)
            && self.peek() == Some('\\')
            && self.peek_at(1) == Some('u')
        {
            let save = (self.i, self.line, self.column);
            self.bump();
            self.bump();
            let second = self.hex4(at)?;
            if (0xDC00..0xE000).contains(&second) {
                0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            } else {
                (self.i, self.line, self.column) = save;
                first
            }
        } else {
            first
        };
        // A lone surrogate cannot be represented in a Rust string.
        Ok(char::from_u32(code).unwrap_or('\u{fffd}'))
    }

    fn hex4(&mut self, at: Pos) -> Result<u32, SyntaxError> {
        let mut code = 0;
        for _ in 0..4 {
            match self.peek().and_then(|c| c.to_digit(16)) {
                Some(d) => {
                    self.bump();
                    code = code * 16 + d;
                }
                None => return self.fail(at, "invalid `\\u` escape: expected 4 hex digits"),
            }
        }
        Ok(code)
    }

    fn number(&mut self) -> Result<Value, SyntaxError> {
        let start = self.pos();
        let from = self.i;
        let digits = |p: &mut Parser| {
            let n = p.chars[p.i..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            for _ in 0..n {
                p.bump();
            }
            n
        };
        if self.peek() == Some('-') {
            self.bump();
        }
        let int_start = self.i;
        let mut ok = digits(self) > 0 && !(self.chars[int_start] == '0' && self.i - int_start > 1);
        if ok && self.peek() == Some('.') {
            self.bump();
            ok = digits(self) > 0;
        }
        if ok && matches!(self.peek(), Some('e' | 'E')) {
            self.bump();
            if matches!(self.peek(), Some('+' | '-')) {
                self.bump();
            }
            ok = digits(self) > 0;
        }
        if !ok || self.peek().is_some_and(|c| c.is_alphanumeric() || c == '.') {
            return self.fail(start, "invalid number");
        }
        Ok(Value::Number(self.chars[from..self.i].iter().collect()))
    }

    fn keyword(&mut self) -> Result<Value, SyntaxError> {
        let start = self.pos();
        let found = self.found();
        let word: String = self.chars[self.i..]
            .iter()
            .take_while(|c| c.is_alphanumeric() || **c == '_')
            .collect();
        let value = match word.as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            "null" => Value::Null,
            _ => return self.fail(start, format!("expected a value, found {found}")),
        };
        for _ in 0..word.chars().count() {
            self.bump();
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> (usize, usize, String) {
        let e = parse(text).unwrap_err();
        (e.pos.line, e.pos.column, e.message)
    }

    fn obj(text: &str) -> Vec<(String, Node)> {
        match parse(text).unwrap().0.value {
            Value::Object(entries) => entries,
            other => panic!("not an object: {other:?}"),
        }
    }

    #[test]
    fn comments_and_trailing_commas_are_accepted() {
        let entries =
            obj("// head\n{ /* a */ \"a\": [1, 2,], // tail\n \"b\": {\"c\": null,}, }\n/* end */");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, "a");
        let Value::Array(items) = &entries[0].1.value else {
            panic!()
        };
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].value, Value::Number("2".into()));
        assert_eq!(entries[1].1.pos, Pos { line: 3, column: 7 });
    }

    #[test]
    fn comment_markers_inside_strings_are_text() {
        let entries = obj(r#"{"url": "http://x/*y*/"}"#);
        assert_eq!(entries[0].1.value, Value::String("http://x/*y*/".into()));
    }

    #[test]
    fn string_escapes_are_decoded() {
        let entries = obj(r#"{"s": "a\"b\\c\n\u00e9\ud83d\ude00\/"}"#);
        assert_eq!(entries[0].1.value, Value::String("a\"b\\c\né😀/".into()));
    }

    #[test]
    fn literals_and_numbers_parse() {
        let entries = obj(r#"{"t": true, "f": false, "n": null, "x": -1.5e+3, "z": 0}"#);
        let values: Vec<_> = entries.iter().map(|(_, n)| n.value.clone()).collect();
        assert_eq!(
            values,
            vec![
                Value::Bool(true),
                Value::Bool(false),
                Value::Null,
                Value::Number("-1.5e+3".into()),
                Value::Number("0".into())
            ]
        );
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_and_are_reported() {
        let (node, dups) = parse("{\"a\": 1,\n \"a\": 2}").unwrap();
        let Value::Object(entries) = node.value else {
            panic!()
        };
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].1.value, Value::Number("2".into()));
        assert_eq!(dups[0].key, "a");
        assert_eq!(dups[0].pos, Pos { line: 2, column: 2 });
    }

    #[test]
    fn syntax_errors_point_at_the_offending_token() {
        assert_eq!(
            err("{\n  \"a\": 1\n  \"b\": 2\n}"),
            (3, 3, "expected `,` or `}`, found a string".into())
        );
        assert_eq!(
            err("{\"a\": [1 2]}"),
            (1, 10, "expected `,` or `]`, found a number".into())
        );
        assert_eq!(
            err("{\n  \"a\" 1}"),
            (
                2,
                7,
                "expected `:` after the property name, found a number".into()
            )
        );
        assert_eq!(
            err("{\"a\": tru}"),
            (1, 7, "expected a value, found `tru`".into())
        );
        assert_eq!(
            err("{a: 1}"),
            (
                1,
                2,
                "expected a property name in double quotes or `}`, found `a`".into()
            )
        );
        assert_eq!(
            err("{\"a\": 'x'}"),
            (1, 7, "expected a value, found `'`".into())
        );
        assert_eq!(err("{\"a\": 01}"), (1, 7, "invalid number".into()));
        assert_eq!(
            err("{} x"),
            (1, 4, "unexpected `x` after the end of the document".into())
        );
    }

    #[test]
    fn unterminated_constructs_are_reported_where_they_start() {
        assert_eq!(
            err("{\n \"a\": \"abc\n}"),
            (2, 7, "unterminated string".into())
        );
        assert_eq!(
            err("{ /* never\n closed }"),
            (1, 3, "unterminated block comment".into())
        );
        assert_eq!(
            err("{\"a\": 1,"),
            (
                1,
                9,
                "expected a property name in double quotes, found end of file".into()
            )
        );
        assert_eq!(
            err(""),
            (1, 1, "expected a value, found end of file".into())
        );
        assert_eq!(
            err(r#"{"a": "\q"}"#),
            (1, 8, "invalid escape sequence `\\q`".into())
        );
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        assert_eq!(
            err("{\"é\": 1 2}"),
            (1, 9, "expected `,` or `}`, found a number".into())
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let text = "[".repeat(10_000);
        assert!(err(&text).2.contains("nested"));
    }
}
