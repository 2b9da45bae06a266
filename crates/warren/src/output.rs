//! How the CLI talks to people: progress on stderr, one-line errors with `hint:` lines, tables.

use std::io::IsTerminal;

use warren_engine::{EngineError, Progress};

fn color() -> bool {
    std::env::var_os("NO_COLOR").is_none() && std::io::stderr().is_terminal()
}

fn paint(code: &str, s: &str) -> String {
    if color() {
        format!("\x1b[{code}m{s}\x1b[0m")
    } else {
        s.to_string()
    }
}

/// Prints an error line and its hint.
pub fn error(msg: &str, hint: Option<&str>) {
    eprintln!("{} {msg}", paint("1;31", "error:"));
    if let Some(h) = hint {
        for line in h.lines() {
            eprintln!("{} {line}", paint("1;36", "hint:"));
        }
    }
}

/// Prints an error from anywhere in the CLI, with the hint the engine knows for it.
pub fn report(e: &anyhow::Error) {
    if let Some(ee) = e.downcast_ref::<EngineError>() {
        error(&ee.to_string(), ee.hint().as_deref());
    } else if let Some(ie) = e.downcast_ref::<warren_image::ImageError>() {
        error(&ie.to_string(), ie.hint().as_deref());
    } else if let Some(u) = e.downcast_ref::<UserError>() {
        error(&u.msg, u.hint.as_deref());
    } else {
        let chain: Vec<String> = e.chain().map(|c| c.to_string()).collect();
        error(&chain.join(": "), None);
    }
}

/// A mistake in how the CLI was called, with a hint.
#[derive(Debug)]
pub struct UserError {
    /// What is wrong.
    pub msg: String,
    /// What to do.
    pub hint: Option<String>,
}

impl std::fmt::Display for UserError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for UserError {}

/// A user error as an `anyhow::Error`.
pub fn user_error(msg: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UserError {
        msg: msg.into(),
        hint: Some(hint.into()),
    })
}

/// Progress printed on stderr.
pub struct Printer;

impl Progress for Printer {
    fn step(&self, msg: &str) {
        eprintln!("{} {msg}", paint("1;34", "==>"));
    }
    fn warn(&self, msg: &str) {
        eprintln!("{} {msg}", paint("1;33", "warning:"));
    }
    fn output(&self, line: &str) {
        eprintln!("    {}", paint("2", line));
    }
}

/// Renders rows as an aligned table.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(header.iter().map(|s| s.to_string()).collect());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.clone()));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["a".into(), "running".into()],
                vec!["long-name".into(), "stopped".into()],
            ],
        );
        assert_eq!(
            t,
            "NAME       STATE\na          running\nlong-name  stopped\n"
        );
    }
}
