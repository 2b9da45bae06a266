//! `.dockerignore`: patterns (`*`, `?`, `[...]`, `**`), `!` exceptions, last match wins.

/// The patterns of a `.dockerignore` file.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    /// Parses `.dockerignore` text (comments with `#`, blank lines skipped).
    pub fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (negate, p) = match l.strip_prefix('!') {
                Some(rest) => (true, rest.trim()),
                None => (false, l),
            };
            let parts: Vec<String> = p
                .split('/')
                .filter(|c| !c.is_empty() && *c != ".")
                .map(str::to_string)
                .collect();
            if !parts.is_empty() {
                patterns.push((negate, parts));
            }
        }
        Ignore { patterns }
    }

    /// Whether any pattern is an exception (`!`): excluded directories must then still be
    /// walked.
    pub fn has_exceptions(&self) -> bool {
        self.patterns.iter().any(|(n, _)| *n)
    }

    /// Whether an exception (`!pattern`) could re-include something below the excluded
    /// directory `rel`, so that it must still be walked.
    pub fn may_include_below(&self, rel: &str) -> bool {
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        self.patterns
            .iter()
            .filter(|(negate, _)| *negate)
            .any(|(_, pat)| prefix_matches(pat, &comps))
    }

    /// Whether the context-relative path `rel` (components joined by `/`) is excluded.
    /// A path is also excluded when a pattern matches one of its parent directories.
    pub fn excluded(&self, rel: &str) -> bool {
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        let mut excluded = false;
        for (negate, pat) in &self.patterns {
            let hit = (1..=comps.len()).any(|n| match_parts(pat, &comps[..n]));
            if hit {
                excluded = !negate;
            }
        }
        excluded
    }
}

/// Whether `pat` can match some path strictly below `dir`.
fn prefix_matches(pat: &[String], dir: &[&str]) -> bool {
    match (pat.split_first(), dir.split_first()) {
        (Some((p, _)), _) if p == "**" => true,
        (Some((p, rest)), Some((c, tail))) => glob(p, c) && prefix_matches(rest, tail),
        (Some(_), None) => true,
        (None, _) => false,
    }
}

fn match_parts(pat: &[String], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((p, rest)) if p == "**" => {
            (0..=path.len()).any(|skip| match_parts(rest, &path[skip..]))
        }
        Some((p, rest)) => match path.split_first() {
            Some((c, tail)) => glob(p, c) && match_parts(rest, tail),
            None => false,
        },
    }
}

/// Matches one path component against a pattern (`*`, `?`, `[abc]`, `[a-z]`, `[!x]`, `\x`).
pub fn glob(pat: &str, s: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let t: Vec<char> = s.chars().collect();
    glob_at(&p, &t)
}

fn glob_at(p: &[char], t: &[char]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some('*') => (0..=t.len()).any(|i| glob_at(&p[1..], &t[i..])),
        Some('?') => !t.is_empty() && glob_at(&p[1..], &t[1..]),
        Some('[') => {
            let Some(c) = t.first() else { return false };
            let Some(end) = p.iter().skip(1).position(|x| *x == ']').map(|e| e + 1) else {
                return p[0] == *c && glob_at(&p[1..], &t[1..]);
            };
            let mut class = &p[1..end];
            let negate = matches!(class.first(), Some('!') | Some('^'));
            if negate {
                class = &class[1..];
            }
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= *c && *c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == *c;
                    i += 1;
                }
            }
            hit != negate && glob_at(&p[end + 1..], &t[1..])
        }
        Some('\\') if p.len() > 1 => t.first() == Some(&p[1]) && glob_at(&p[2..], &t[1..]),
        Some(x) => t.first() == Some(x) && glob_at(&p[1..], &t[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_exceptions_and_double_star() {
        let ig = Ignore::parse(
            "# comment\n*.log\n!keep.log\nbuild/\n**/*.tmp\n/secret\ndocs/[a-c]*.md\n",
        );
        assert!(ig.excluded("x.log"));
        assert!(!ig.excluded("keep.log"));
        assert!(!ig.excluded("sub/x.log"), "`*.log` only matches at the top");
        assert!(ig.excluded("build"));
        assert!(ig.excluded("build/out/bin"));
        assert!(ig.excluded("a/b/c.tmp"));
        assert!(ig.excluded("c.tmp"));
        assert!(ig.excluded("secret"));
        assert!(ig.excluded("docs/big.md"));
        assert!(!ig.excluded("docs/zed.md"));
        assert!(!ig.excluded("src/main.rs"));
        assert!(ig.has_exceptions());
        let ig = Ignore::parse("build\n!build/keep\n");
        assert!(ig.excluded("build") && !ig.excluded("build/keep") && ig.excluded("build/other"));
        assert!(ig.may_include_below("build"));
        assert!(!ig.may_include_below("docs"));
    }
}
