//! Glob patterns with named captures, for identities, tenants and secret names.
//!
//! | token     | matches                                                        |
//! |-----------|----------------------------------------------------------------|
//! | `*`       | any run of characters without `/` (possibly empty)             |
//! | `**`      | any run of characters, `/` included (possibly empty)           |
//! | `{name}`  | one non-empty run without `/`, captured as `name`              |
//! | other     | itself                                                         |
//!
//! Matching is anchored at both ends and backtracks over a pattern that is at most
//! 512 bytes, so its cost is bounded.

use std::collections::{BTreeMap, HashSet};

/// Longest accepted pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 512;

/// Why a pattern is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// Empty, or longer than [`MAX_PATTERN_LEN`].
    #[error("pattern must be 1 to {MAX_PATTERN_LEN} bytes")]
    Length,
    /// A `{` without its `}`, or an empty or invalid capture name.
    #[error("capture must be {{name}} with name of a-z, 0-9 or _")]
    Capture,
    /// Three or more `*` in a row.
    #[error("use * or **, not ***")]
    Stars,
    /// The same capture name twice in one pattern.
    #[error("capture {{{0}}} appears twice")]
    DuplicateCapture(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(String),
    Star,
    DoubleStar,
    Capture(String),
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    source: String,
    tokens: Vec<Token>,
}

/// Captured values of a match, by name.
pub type Captures = BTreeMap<String, String>;

impl Pattern {
    /// Compiles `source`.
    pub fn parse(source: &str) -> Result<Self, PatternError> {
        if source.is_empty() || source.len() > MAX_PATTERN_LEN {
            return Err(PatternError::Length);
        }
        let mut tokens = Vec::new();
        let mut literal = String::new();
        let mut chars = source.chars().peekable();
        let mut names: Vec<String> = Vec::new();
        while let Some(c) = chars.next() {
            let token = match c {
                '*' => {
                    if chars.peek() == Some(&'*') {
                        chars.next();
                        if chars.peek() == Some(&'*') {
                            return Err(PatternError::Stars);
                        }
                        Token::DoubleStar
                    } else {
                        Token::Star
                    }
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(n) if n.is_ascii_lowercase() || n.is_ascii_digit() || n == '_' => {
                                name.push(n);
                            }
                            _ => return Err(PatternError::Capture),
                        }
                    }
                    if name.is_empty() {
                        return Err(PatternError::Capture);
                    }
                    if names.contains(&name) {
                        return Err(PatternError::DuplicateCapture(name));
                    }
                    names.push(name.clone());
                    Token::Capture(name)
                }
                '}' => return Err(PatternError::Capture),
                other => {
                    literal.push(other);
                    continue;
                }
            };
            if !literal.is_empty() {
                tokens.push(Token::Literal(std::mem::take(&mut literal)));
            }
            tokens.push(token);
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(literal));
        }
        Ok(Self {
            source: source.to_owned(),
            tokens,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Names of the captures, in order.
    pub fn capture_names(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().filter_map(|t| match t {
            Token::Capture(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Whether the pattern is exactly one capture, such as `{tenant}`.
    pub fn as_capture_reference(&self) -> Option<&str> {
        match self.tokens.as_slice() {
            [Token::Capture(name)] => Some(name),
            _ => None,
        }
    }

    /// Matches `text` in full; returns the captures on success.
    pub fn matches(&self, text: &str) -> Option<Captures> {
        // The shapes most rules have (an exact name, `*`, `**`) are decided without the
        // matcher, which allocates as it goes; `forms_without_the_matcher_agree_with_it`
        // holds the two to the same answers.
        match self.tokens.as_slice() {
            [Token::Literal(literal)] => (text == literal).then(Captures::new),
            [Token::Star] => (!text.contains('/')).then(Captures::new),
            [Token::DoubleStar] => Some(Captures::new()),
            _ => self.match_tokens(text),
        }
    }

    fn match_tokens(&self, text: &str) -> Option<Captures> {
        let mut matcher = Matcher {
            tokens: &self.tokens,
            text,
            captures: Captures::new(),
            failed: HashSet::new(),
        };
        matcher.at(0, 0).then_some(matcher.captures)
    }
}

/// Backtracking matcher that remembers failed (token, offset) states, so the cost is
/// at most tokens × text length states, each trying at most text length splits.
/// Captures are not back-references, so a state that failed once fails again.
struct Matcher<'a> {
    tokens: &'a [Token],
    text: &'a str,
    captures: Captures,
    failed: HashSet<(usize, usize)>,
}

impl Matcher<'_> {
    fn at(&mut self, token: usize, offset: usize) -> bool {
        if self.failed.contains(&(token, offset)) {
            return false;
        }
        let matched = self.try_at(token, offset);
        if !matched {
            self.failed.insert((token, offset));
        }
        matched
    }

    fn try_at(&mut self, token: usize, offset: usize) -> bool {
        let Some(rest) = self.text.get(offset..) else {
            return false;
        };
        let Some(current) = self.tokens.get(token) else {
            return rest.is_empty();
        };
        match current {
            Token::Literal(lit) => {
                rest.starts_with(lit.as_str()) && self.at(token + 1, offset + lit.len())
            }
            Token::Star | Token::DoubleStar | Token::Capture(_) => {
                let min = usize::from(matches!(current, Token::Capture(_)));
                let limit = if matches!(current, Token::DoubleStar) {
                    rest.len()
                } else {
                    rest.find('/').unwrap_or(rest.len())
                };
                let splits: Vec<usize> = rest
                    .char_indices()
                    .map(|(i, _)| i)
                    .chain(std::iter::once(rest.len()))
                    .filter(|&i| i >= min && i <= limit)
                    .collect();
                for split in splits {
                    if let (Token::Capture(name), Some(head)) = (current, rest.get(..split)) {
                        self.captures.insert(name.clone(), head.to_owned());
                    }
                    if self.at(token + 1, offset + split) {
                        return true;
                    }
                }
                if let Token::Capture(name) = current {
                    self.captures.remove(name);
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> Option<Captures> {
        Pattern::parse(p).unwrap().matches(t)
    }

    #[test]
    fn forms_without_the_matcher_agree_with_it() {
        let texts = [
            "",
            "acme",
            "acme-2",
            "acm",
            "a/b",
            "/",
            "acme/",
            "é",
            "spiffe://x.example/svc/gw",
        ];
        for pattern in ["acme", "*", "**", "spiffe://x.example/svc/gw"] {
            let pattern = Pattern::parse(pattern).unwrap();
            for text in texts {
                let fast = pattern.matches(text);
                assert_eq!(fast, pattern.match_tokens(text), "{pattern:?} on {text:?}");
            }
        }
        assert!(m("*", "acme").is_some() && m("*", "a/b").is_none());
        assert!(m("**", "a/b").is_some() && m("acme", "acme-2").is_none());
    }

    #[test]
    fn stars_and_captures() {
        assert!(
            m(
                "spiffe://billing.example/svc/*",
                "spiffe://billing.example/svc/gateway"
            )
            .is_some()
        );
        assert!(
            m(
                "spiffe://billing.example/svc/*",
                "spiffe://billing.example/svc/a/b"
            )
            .is_none()
        );
        assert!(
            m(
                "spiffe://billing.example/**",
                "spiffe://billing.example/svc/a/b"
            )
            .is_some()
        );
        assert!(m("byok/*", "byok/openai").is_some());
        assert!(m("byok/*", "byokX/openai").is_none());
        let caps = m(
            "spiffe://b.example/tenant/{tenant}/svc/*",
            "spiffe://b.example/tenant/acme/svc/w1",
        )
        .unwrap();
        assert_eq!(caps.get("tenant").map(String::as_str), Some("acme"));
        assert!(
            m(
                "spiffe://b.example/tenant/{tenant}/svc/*",
                "spiffe://b.example/tenant//svc/w1"
            )
            .is_none()
        );
        assert!(m("exact", "exact").is_some());
        assert!(m("exact", "exactly").is_none());
        assert!(m("*", "").is_some());
    }

    #[test]
    fn invalid_patterns() {
        assert_eq!(Pattern::parse(""), Err(PatternError::Length));
        assert_eq!(Pattern::parse("a***"), Err(PatternError::Stars));
        assert_eq!(Pattern::parse("{Tenant}"), Err(PatternError::Capture));
        assert_eq!(Pattern::parse("{t"), Err(PatternError::Capture));
        assert_eq!(Pattern::parse("a}"), Err(PatternError::Capture));
        assert_eq!(
            Pattern::parse("{t}/{t}"),
            Err(PatternError::DuplicateCapture("t".into()))
        );
        assert_eq!(
            Pattern::parse("{tenant}").unwrap().as_capture_reference(),
            Some("tenant")
        );
    }
}

#[cfg(test)]
mod cost {
    use super::*;

    #[test]
    fn pathological_patterns_stay_cheap() {
        let pattern = Pattern::parse(&"*a".repeat(100)).unwrap();
        let text = "a".repeat(400) + "b";
        // Without the failed-state memo these take exponential time and never finish.
        assert!(pattern.matches(&text).is_none());
        let pattern = Pattern::parse(&"**a".repeat(60)).unwrap();
        assert!(pattern.matches(&text).is_none());
    }
}
