//! Glob patterns for file search: `*` (any run of characters but `/`), `?` (one character but
//! `/`), `[abc]`, `[a-z]`, `[!x]`, `**` (anything, `/` included) and `**/` (any number of
//! directories, none included). A pattern without `/` matches a file's name in any directory;
//! one with `/` matches the path relative to the searched directory. Matching is a dynamic
//! program over pattern × path (no backtracking blow-up).

/// One element of a pattern.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    One,
    Star,
    Any,
    AnyDirs,
    Class(Vec<(char, char)>, bool),
}

/// A parsed pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    toks: Vec<Tok>,
    name_only: bool,
}

/// The longest pattern accepted.
const MAX_LEN: usize = 1024;

impl Pattern {
    /// Parses `p`; an error says what is wrong.
    pub fn new(p: &str) -> Result<Pattern, String> {
        if p.is_empty() {
            return Err("glob: empty".into());
        }
        if p.len() > MAX_LEN {
            return Err(format!("glob: longer than {MAX_LEN} bytes"));
        }
        let name_only = !p.contains('/');
        let p = p.strip_prefix("./").unwrap_or(p);
        let cs: Vec<char> = p.chars().collect();
        let mut toks = vec![];
        let mut i = 0;
        while i < cs.len() {
            match cs[i] {
                '*' if cs.get(i + 1) == Some(&'*') => {
                    if cs.get(i + 2) == Some(&'/') {
                        toks.push(Tok::AnyDirs);
                        i += 3;
                    } else {
                        toks.push(Tok::Any);
                        i += 2;
                    }
                }
                '*' => {
                    toks.push(Tok::Star);
                    i += 1;
                }
                '?' => {
                    toks.push(Tok::One);
                    i += 1;
                }
                '[' => {
                    let mut j = i + 1;
                    let neg = matches!(cs.get(j), Some('!') | Some('^'));
                    if neg {
                        j += 1;
                    }
                    let mut ranges = vec![];
                    let mut first = true;
                    loop {
                        let Some(&c) = cs.get(j) else {
                            return Err(format!("glob `{p}`: unclosed `[`"));
                        };
                        if c == ']' && !first {
                            break;
                        }
                        first = false;
                        if cs.get(j + 1) == Some(&'-') && cs.get(j + 2).is_some_and(|c| *c != ']') {
                            ranges.push((c, cs[j + 2]));
                            j += 3;
                        } else {
                            ranges.push((c, c));
                            j += 1;
                        }
                    }
                    toks.push(Tok::Class(ranges, neg));
                    i = j + 1;
                }
                '\\' if i + 1 < cs.len() => {
                    toks.push(Tok::Lit(cs[i + 1]));
                    i += 2;
                }
                c => {
                    toks.push(Tok::Lit(c));
                    i += 1;
                }
            }
        }
        Ok(Pattern { toks, name_only })
    }

    /// Whether `rel` (a path relative to the searched directory) matches.
    pub fn matches(&self, rel: &str) -> bool {
        let s = if self.name_only {
            rel.rsplit('/').next().unwrap_or(rel)
        } else {
            rel
        };
        let t: Vec<char> = s.chars().collect();
        let n = t.len();
        // prev[j]: the tokens so far match t[..j].
        let mut prev = vec![false; n + 1];
        prev[0] = true;
        let mut next = vec![false; n + 1];
        for tok in &self.toks {
            next[0] = matches!(tok, Tok::Star | Tok::Any | Tok::AnyDirs) && prev[0];
            let mut seen = prev[0];
            for j in 1..=n {
                let c = t[j - 1];
                next[j] = match tok {
                    Tok::Lit(l) => prev[j - 1] && c == *l,
                    Tok::One => prev[j - 1] && c != '/',
                    Tok::Class(r, neg) => {
                        prev[j - 1]
                            && c != '/'
                            && (r.iter().any(|(a, b)| *a <= c && c <= *b) != *neg)
                    }
                    Tok::Star => prev[j] || (next[j - 1] && c != '/'),
                    Tok::Any => prev[j] || next[j - 1],
                    // Nothing, or anything ending with `/`.
                    Tok::AnyDirs => prev[j] || (c == '/' && seen),
                };
                seen |= prev[j];
            }
            std::mem::swap(&mut prev, &mut next);
        }
        prev[n]
    }
}

#[cfg(test)]
mod tests {
    use super::Pattern;

    fn m(p: &str, s: &str) -> bool {
        Pattern::new(p).unwrap().matches(s)
    }

    #[test]
    fn globs() {
        assert!(m("*.rs", "src/main.rs"));
        assert!(m("*.rs", "main.rs"));
        assert!(!m("*.rs", "main.rsx"));
        assert!(m("src/*.rs", "src/main.rs"));
        assert!(!m("src/*.rs", "src/a/main.rs"));
        assert!(m("src/**/*.rs", "src/main.rs"));
        assert!(m("src/**/*.rs", "src/a/b/main.rs"));
        assert!(m("**/*.rs", "main.rs"));
        assert!(m("src/**", "src/a/b"));
        assert!(m("f?.txt", "f1.txt"));
        assert!(!m("f?.txt", "f12.txt"));
        assert!(m("f[0-9].txt", "f7.txt"));
        assert!(!m("f[!0-9].txt", "f7.txt"));
        assert!(m("f[!0-9].txt", "fx.txt"));
        assert!(m("[]]", "]"));
        assert!(m("a\\*", "a*"));
        assert!(!m("a\\*", "ab"));
        assert!(m("./src/*.rs", "src/x.rs"));
        assert!(m("*", ".hidden"));
        assert!(Pattern::new("[ab").is_err());
        assert!(Pattern::new("").is_err());
        // No exponential blow-up.
        let long = "a".repeat(200);
        assert!(!m("*a*a*a*a*a*a*a*a*a*a*a*b", &long));
    }
}
