//! A small EDN reader: enough for Jepsen/Knossos histories (vectors, lists, maps, strings with
//! escapes, keywords, integers, `nil`, booleans, `;` comments, commas as whitespace).
//!
//! Invariant: never panics on any input; every error names the 1-based line where it happened.

use std::collections::BTreeMap;

/// An EDN value.
#[derive(Debug, Clone, PartialEq)]
pub enum Edn {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Keyword(String),
    Symbol(String),
    Vector(Vec<Edn>),
    List(Vec<Edn>),
    Map(BTreeMap<String, Edn>),
}

impl Edn {
    /// The element at `key` of a map whose keys are keywords (`:process` → `"process"`).
    pub fn get(&self, key: &str) -> Option<&Edn> {
        match self {
            Edn::Map(m) => m.get(key),
            _ => None,
        }
    }
}

/// A syntax error with its line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct EdnError {
    pub line: usize,
    pub message: String,
}

/// A parsed top-level form and the line it started on.
pub struct Form {
    pub line: usize,
    pub value: Edn,
}

struct Reader<'a> {
    s: &'a [u8],
    pos: usize,
    line: usize,
}

/// Nesting deeper than this is refused (histories nest at most three levels).
const DEPTH_MAX: usize = 64;

impl Reader<'_> {
    fn err(&self, message: impl Into<String>) -> EdnError {
        EdnError {
            line: self.line,
            message: message.into(),
        }
    }

    fn skip_ws(&mut self) {
        while let Some(&c) = self.s.get(self.pos) {
            match c {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                b' ' | b'\t' | b'\r' | b',' => self.pos += 1,
                b';' => {
                    while let Some(&c) = self.s.get(self.pos) {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn seq(&mut self, close: u8, depth: usize) -> Result<Vec<Edn>, EdnError> {
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            match self.s.get(self.pos) {
                None => return Err(self.err(format!("missing closing '{}'", close as char))),
                Some(&c) if c == close => {
                    self.pos += 1;
                    return Ok(items);
                }
                Some(_) => items.push(self.value(depth + 1)?),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Edn, EdnError> {
        if depth > DEPTH_MAX {
            return Err(self.err("nesting too deep"));
        }
        self.skip_ws();
        let Some(&c) = self.s.get(self.pos) else {
            return Err(self.err("unexpected end of input"));
        };
        match c {
            b'[' => {
                self.pos += 1;
                Ok(Edn::Vector(self.seq(b']', depth)?))
            }
            b'(' => {
                self.pos += 1;
                Ok(Edn::List(self.seq(b')', depth)?))
            }
            b'{' => {
                self.pos += 1;
                let items = self.seq(b'}', depth)?;
                if items.len() % 2 != 0 {
                    return Err(self.err("map with an odd number of forms"));
                }
                let mut m = BTreeMap::new();
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    let key = match k {
                        Edn::Keyword(k) | Edn::Str(k) | Edn::Symbol(k) => k,
                        other => format!("{other:?}"),
                    };
                    m.insert(key, v);
                }
                Ok(Edn::Map(m))
            }
            b'#' => {
                // Tagged literal or set: `#{...}` reads as a vector; `#tag value` as the value.
                self.pos += 1;
                if self.s.get(self.pos) == Some(&b'{') {
                    self.pos += 1;
                    return Ok(Edn::Vector(self.seq(b'}', depth)?));
                }
                let _tag = self.token();
                self.value(depth + 1)
            }
            b'"' => self.string(),
            b')' | b']' | b'}' => Err(self.err(format!("unexpected '{}'", c as char))),
            _ => {
                let tok = self.token();
                Ok(atom(&tok))
            }
        }
    }

    fn token(&mut self) -> String {
        let start = self.pos;
        while let Some(&c) = self.s.get(self.pos) {
            if c.is_ascii_whitespace() || b",()[]{}\";".contains(&c) {
                break;
            }
            self.pos += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.pos]).into_owned()
    }

    fn string(&mut self) -> Result<Edn, EdnError> {
        let start_line = self.line;
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.pos) else {
                return Err(EdnError {
                    line: start_line,
                    message: "unterminated string".into(),
                });
            };
            self.pos += 1;
            match c {
                b'"' => return Ok(Edn::Str(String::from_utf8_lossy(&out).into_owned())),
                b'\\' => {
                    let Some(&e) = self.s.get(self.pos) else {
                        return Err(self.err("unterminated escape"));
                    };
                    self.pos += 1;
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        other => other,
                    });
                }
                b'\n' => {
                    self.line += 1;
                    out.push(c);
                }
                _ => out.push(c),
            }
        }
    }
}

fn atom(tok: &str) -> Edn {
    match tok {
        "nil" => Edn::Nil,
        "true" => Edn::Bool(true),
        "false" => Edn::Bool(false),
        _ => {
            if let Some(k) = tok.strip_prefix(':') {
                Edn::Keyword(k.to_string())
            } else if let Ok(i) = tok.parse::<i64>() {
                Edn::Int(i)
            } else if let Ok(f) = tok.parse::<f64>() {
                Edn::Float(f)
            } else {
                Edn::Symbol(tok.to_string())
            }
        }
    }
}

/// Reads every top-level form of `text`.
pub fn parse_all(text: &str) -> Result<Vec<Form>, EdnError> {
    let mut r = Reader {
        s: text.as_bytes(),
        pos: 0,
        line: 1,
    };
    let mut forms = Vec::new();
    loop {
        r.skip_ws();
        if r.pos >= r.s.len() {
            return Ok(forms);
        }
        let line = r.line;
        let value = r.value(0)?;
        forms.push(Form { line, value });
    }
}

/// The operation maps of a history file: the elements of one top-level vector or list, or
/// the top-level maps themselves; each with the line it starts on.
pub fn history_maps(text: &str) -> Result<Vec<(usize, Edn)>, EdnError> {
    let forms = parse_all(text)?;
    if forms.len() == 1 && matches!(forms[0].value, Edn::Vector(_) | Edn::List(_)) {
        // Element lines are not tracked inside a collection; re-read to find them.
        return collection_with_lines(text);
    }
    Ok(forms.into_iter().map(|f| (f.line, f.value)).collect())
}

fn collection_with_lines(text: &str) -> Result<Vec<(usize, Edn)>, EdnError> {
    let mut r = Reader {
        s: text.as_bytes(),
        pos: 0,
        line: 1,
    };
    r.skip_ws();
    let close = match r.s.get(r.pos) {
        Some(b'[') => b']',
        _ => b')',
    };
    r.pos += 1;
    let mut out = Vec::new();
    loop {
        r.skip_ws();
        match r.s.get(r.pos) {
            None => return Err(r.err("missing closing bracket")),
            Some(&c) if c == close => return Ok(out),
            Some(_) => {
                let line = r.line;
                out.push((line, r.value(1)?));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_history_shapes() {
        let text = "; comment\n[{:process 1, :type :invoke, :f :cas, :value [1 2]}\n ; mid\n {:process :nemesis :type :info :f :start :value \"Cut off [:n3 #[:n4]] \\\"x\\\"\"}]";
        let maps = history_maps(text).expect("parse");
        assert_eq!(maps.len(), 2);
        assert_eq!(maps[0].0, 2);
        assert_eq!(maps[1].0, 4);
        assert_eq!(
            maps[0].1.get("value"),
            Some(&Edn::Vector(vec![Edn::Int(1), Edn::Int(2)]))
        );
        assert_eq!(
            maps[1].1.get("process"),
            Some(&Edn::Keyword("nemesis".into()))
        );
    }

    #[test]
    fn errors_name_the_line_and_never_panic() {
        let e = history_maps("[{:a 1}\n{:b").expect_err("error");
        assert_eq!(e.line, 2);
        for bad in ["", "[", "\"", "{:a}", ")", "#", "[\\", "{:a \"\\"] {
            let _ = history_maps(bad);
        }
    }
}
