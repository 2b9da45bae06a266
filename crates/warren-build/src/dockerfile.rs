//! The Dockerfile parser: logical lines with their line numbers, parser directives, instructions
//! with their flags, and the shell-like lexer that splits words and expands variables where
//! Docker does.

use std::collections::BTreeMap;

/// A parse error: the 1-based line, a message and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line of the instruction at fault.
    pub line: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

/// A command in shell form (run by the image's shell) or exec (JSON) form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `RUN echo hi`: run with `SHELL` (default `/bin/sh -c`).
    Shell(String),
    /// `RUN ["echo", "hi"]`: argv as given.
    Exec(Vec<String>),
}

/// One instruction. Arguments are kept as written: variables are expanded when the build
/// reaches the instruction, with the environment and arguments in scope there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM [--platform=P] image [AS name]`.
    From {
        /// The image (unexpanded).
        image: String,
        /// The stage's name.
        alias: Option<String>,
        /// `--platform` (unexpanded).
        platform: Option<String>,
    },
    /// `RUN`.
    Run(Command),
    /// `COPY` or `ADD`.
    Copy {
        /// `ADD` rather than `COPY`.
        add: bool,
        /// The rest of the line: sources then destination (unexpanded), or the JSON form's
        /// strings.
        args: Args,
        /// `--from=stage|image`.
        from: Option<String>,
        /// `--chown=user[:group]`.
        chown: Option<String>,
        /// `--chmod=octal`.
        chmod: Option<String>,
    },
    /// `ENV k=v ...` or `ENV k v`.
    Env(String),
    /// `ARG name[=default] ...`.
    Arg(String),
    /// `WORKDIR path`.
    Workdir(String),
    /// `USER user[:group]`.
    User(String),
    /// `LABEL k=v ...`.
    Label(String),
    /// `EXPOSE port[/proto] ...`.
    Expose(String),
    /// `ENTRYPOINT`.
    Entrypoint(Command),
    /// `CMD`.
    Cmd(Command),
    /// `SHELL ["exe", "-c"]`.
    Shell(Vec<String>),
}

/// Arguments of COPY/ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Args {
    /// Whitespace-separated words, unexpanded.
    Words(String),
    /// The JSON form's strings, unexpanded.
    Json(Vec<String>),
}

/// An instruction with where it is and how it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// The instruction as written (continuations joined), for logs and history.
    pub text: String,
    /// The parsed instruction.
    pub instruction: Instruction,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character (`\` unless `# escape=` says otherwise).
    pub escape: char,
    /// Every instruction in order.
    pub steps: Vec<Step>,
    /// Notes for the build log (ignored directives).
    pub notes: Vec<String>,
}

fn err(line: usize, message: impl Into<String>, hint: Option<&str>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
        hint: hint.map(str::to_string),
    }
}

/// Parses Dockerfile text.
pub fn parse(text: &str) -> Result<Dockerfile, ParseError> {
    let mut escape = '\\';
    let mut notes = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    // Parser directives: `# key=value` lines before anything else.
    while i < lines.len() {
        let l = lines[i].trim();
        let Some(body) = l.strip_prefix('#') else {
            break;
        };
        let Some((k, v)) = body.split_once('=') else {
            break;
        };
        let k = k.trim().to_ascii_lowercase();
        if k.is_empty() || k.contains(char::is_whitespace) {
            break;
        }
        let v = v.trim();
        match k.as_str() {
            "escape" => {
                escape = match v {
                    "\\" => '\\',
                    "`" => '`',
                    _ => {
                        return Err(err(
                            i + 1,
                            format!("invalid escape directive `{v}`"),
                            Some("the escape character is `\\` or `` ` ``"),
                        ))
                    }
                }
            }
            "syntax" => notes.push(format!(
                "line {}: `# syntax={v}` is ignored: Warren parses Dockerfiles itself",
                i + 1
            )),
            other => notes.push(format!(
                "line {}: parser directive `{other}` is ignored",
                i + 1
            )),
        }
        i += 1;
    }

    let mut steps = Vec::new();
    let mut current: Option<(usize, String)> = None;
    while i < lines.len() {
        let raw = lines[i];
        let n = i + 1;
        i += 1;
        let trimmed = raw.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_none()) {
            continue;
        }
        if trimmed.is_empty() {
            // A blank line inside a continuation is skipped, as Docker does.
            continue;
        }
        let body = raw.trim_end();
        let (piece, continues) = match body.strip_suffix(escape) {
            Some(rest) => (rest, true),
            None => (body, false),
        };
        let (start, mut acc) = current.take().unwrap_or((n, String::new()));
        acc.push_str(if acc.is_empty() {
            piece.trim_start()
        } else {
            piece
        });
        if continues && i < lines.len() {
            current = Some((start, acc));
            continue;
        }
        steps.push(parse_instruction(start, &acc, escape)?);
    }
    if let Some((start, acc)) = current {
        steps.push(parse_instruction(start, &acc, escape)?);
    }
    if steps.is_empty() {
        return Err(err(
            1,
            "the Dockerfile has no instructions",
            Some("start it with `FROM <image>`"),
        ));
    }
    if let Some(first) = steps
        .iter()
        .find(|s| !matches!(s.instruction, Instruction::Arg(_)))
    {
        if !matches!(first.instruction, Instruction::From { .. }) {
            return Err(err(
                first.line,
                "the first instruction must be FROM (only ARG may come before it)",
                Some("start the Dockerfile with `FROM <image>`"),
            ));
        }
    } else {
        return Err(err(
            steps[0].line,
            "the Dockerfile has no FROM",
            Some("add `FROM <image>`"),
        ));
    }
    Ok(Dockerfile {
        escape,
        steps,
        notes,
    })
}

/// Splits leading `--name=value` flags off an instruction's arguments.
fn split_flags(rest: &str) -> (Vec<(String, Option<String>)>, &str) {
    let mut flags = Vec::new();
    let mut rest = rest.trim_start();
    while let Some(after) = rest.strip_prefix("--") {
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        let flag = &after[..end];
        match flag.split_once('=') {
            Some((k, v)) => flags.push((k.to_ascii_lowercase(), Some(v.to_string()))),
            None => flags.push((flag.to_ascii_lowercase(), None)),
        }
        rest = after[end..].trim_start();
    }
    (flags, rest)
}

fn json_array(rest: &str) -> Option<Vec<String>> {
    let t = rest.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

fn command(rest: &str) -> Command {
    match json_array(rest) {
        Some(v) => Command::Exec(v),
        None => Command::Shell(rest.trim().to_string()),
    }
}

fn has_heredoc(rest: &str) -> bool {
    let b = rest.as_bytes();
    let mut i = 0;
    while i + 2 < b.len() {
        if &b[i..i + 2] == b"<<" && (i == 0 || b[i - 1] != b'<') {
            let mut j = i + 2;
            if b.get(j) == Some(&b'-') {
                j += 1;
            }
            if matches!(b.get(j), Some(c) if c.is_ascii_alphabetic() || *c == b'_' || *c == b'"' || *c == b'\'')
            {
                return true;
            }
        }
        i += 1;
    }
    false
}

const UNSUPPORTED: &[(&str, &str)] = &[
    ("ONBUILD", "run the commands in this Dockerfile itself instead of deferring them to images built FROM it"),
    ("HEALTHCHECK", "Warren does not run health checks; remove it or use a postStartCommand that checks"),
    ("VOLUME", "declare volumes in devcontainer.json `mounts` instead"),
    ("STOPSIGNAL", "remove it: Warren stops workspaces with SIGTERM, then SIGKILL"),
    ("MAINTAINER", "use `LABEL org.opencontainers.image.authors=...` instead"),
];

fn parse_instruction(line: usize, text: &str, escape: char) -> Result<Step, ParseError> {
    let text = text.trim();
    let (word, rest) = match text.find(char::is_whitespace) {
        Some(p) => (&text[..p], text[p..].trim_start()),
        None => (text, ""),
    };
    let keyword = word.to_ascii_uppercase();
    if let Some((_, hint)) = UNSUPPORTED.iter().find(|(k, _)| *k == keyword) {
        return Err(err(
            line,
            format!("{keyword} is not supported by Warren's builder"),
            Some(hint),
        ));
    }
    let needs_args = |what: &str| {
        if rest.is_empty() {
            Err(err(
                line,
                format!("{keyword} needs {what}"),
                Some("see https://docs.docker.com/reference/dockerfile/"),
            ))
        } else {
            Ok(())
        }
    };
    let (flags, args) = split_flags(rest);
    let allowed: &[&str] = match keyword.as_str() {
        "FROM" => &["platform"],
        "COPY" => &["from", "chown", "chmod", "link"],
        "ADD" => &["chown", "chmod", "link"],
        _ => &[],
    };
    for (k, _) in &flags {
        if !allowed.contains(&k.as_str()) && keyword != "RUN" {
            return Err(err(
                line,
                format!("{keyword} --{k} is not supported"),
                Some(if allowed.is_empty() {
                    "remove the flag".to_string()
                } else {
                    format!(
                        "{keyword} takes {}",
                        allowed
                            .iter()
                            .map(|a| format!("--{a}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
                .as_deref(),
            ));
        }
    }
    let flag = |name: &str| -> Result<Option<String>, ParseError> {
        match flags.iter().find(|(k, _)| k == name) {
            Some((_, Some(v))) if !v.is_empty() => Ok(Some(v.clone())),
            Some(_) => Err(err(
                line,
                format!("{keyword} --{name} needs a value (`--{name}=...`)"),
                None,
            )),
            None => Ok(None),
        }
    };
    let instruction = match keyword.as_str() {
        "FROM" => {
            needs_args("an image")?;
            let words: Vec<&str> = args.split_whitespace().collect();
            let (image, alias) = match words.as_slice() {
                [image] => (image.to_string(), None),
                [image, as_, name] if as_.eq_ignore_ascii_case("as") => {
                    (image.to_string(), Some(name.to_ascii_lowercase()))
                }
                _ => {
                    return Err(err(
                        line,
                        "FROM takes an image and optionally `AS name`",
                        Some("e.g. `FROM debian:bookworm AS build`"),
                    ))
                }
            };
            Instruction::From {
                image,
                alias,
                platform: flag("platform")?,
            }
        }
        "RUN" => {
            if let Some((k, _)) = flags.first() {
                return Err(err(
                    line,
                    format!("RUN --{k} is not supported by Warren's builder"),
                    Some("remove the flag; RUN steps run with the image's files and, for host-local builds, the host's network"),
                ));
            }
            needs_args("a command")?;
            if has_heredoc(args) {
                return Err(err(
                    line,
                    "heredocs (`<<EOF`) are not supported by Warren's builder",
                    Some("put the script in a file in the build context, COPY it and RUN it"),
                ));
            }
            Instruction::Run(command(args))
        }
        "COPY" | "ADD" => {
            needs_args("sources and a destination")?;
            if has_heredoc(args) {
                return Err(err(
                    line,
                    "heredocs (`<<EOF`) are not supported by Warren's builder",
                    Some("put the content in a file in the build context and COPY it"),
                ));
            }
            let parsed = match json_array(args) {
                Some(v) => Args::Json(v),
                None => Args::Words(args.to_string()),
            };
            let count = match &parsed {
                Args::Json(v) => v.len(),
                Args::Words(w) => lex(w, escape, &|_| None, true).map(|v| v.len()).unwrap_or(2),
            };
            if count < 2 {
                return Err(err(
                    line,
                    format!("{keyword} needs at least one source and a destination"),
                    Some("e.g. `COPY src/ /app/`"),
                ));
            }
            Instruction::Copy {
                add: keyword == "ADD",
                args: parsed,
                from: flag("from")?,
                chown: flag("chown")?,
                chmod: flag("chmod")?,
            }
        }
        "ENV" => {
            needs_args("`KEY=value`")?;
            Instruction::Env(args.to_string())
        }
        "ARG" => {
            needs_args("a name")?;
            Instruction::Arg(args.to_string())
        }
        "WORKDIR" => {
            needs_args("a path")?;
            Instruction::Workdir(args.to_string())
        }
        "USER" => {
            needs_args("a user")?;
            Instruction::User(args.to_string())
        }
        "LABEL" => {
            needs_args("`key=value`")?;
            Instruction::Label(args.to_string())
        }
        "EXPOSE" => {
            needs_args("a port")?;
            Instruction::Expose(args.to_string())
        }
        "ENTRYPOINT" => {
            needs_args("a command")?;
            Instruction::Entrypoint(command(args))
        }
        "CMD" => {
            needs_args("a command")?;
            Instruction::Cmd(command(args))
        }
        "SHELL" => match json_array(args) {
            Some(v) if !v.is_empty() => Instruction::Shell(v),
            _ => {
                return Err(err(
                    line,
                    "SHELL needs the JSON form",
                    Some(r#"e.g. `SHELL ["/bin/bash", "-c"]`"#),
                ))
            }
        },
        other => {
            return Err(err(
                line,
                format!("unknown instruction `{other}`"),
                Some("see https://docs.docker.com/reference/dockerfile/ (Warren's builder supports FROM, RUN, COPY, ADD, ENV, ARG, WORKDIR, USER, LABEL, EXPOSE, ENTRYPOINT, CMD and SHELL)"),
            ))
        }
    };
    Ok(Step {
        line,
        text: text.to_string(),
        instruction,
    })
}

/// Splits (when `split`) and unquotes `input` as Docker's shell lexer does, expanding `$VAR`,
/// `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:+alt}` and `${VAR+alt}` with `lookup`.
/// Expansions are not themselves re-split.
pub fn lex(
    input: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
    split: bool,
) -> Result<Vec<String>, String> {
    let chars: Vec<char> = input.chars().collect();
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if split && c.is_whitespace() {
            if in_word {
                words.push(std::mem::take(&mut cur));
                in_word = false;
            }
            i += 1;
            continue;
        }
        in_word = true;
        if c == escape {
            if let Some(&next) = chars.get(i + 1) {
                cur.push(next);
            }
            i += 2;
        } else if c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                cur.push(chars[i]);
                i += 1;
            }
            if i >= chars.len() {
                return Err("unterminated single quote".into());
            }
            i += 1;
        } else if c == '"' {
            i += 1;
            loop {
                let Some(&d) = chars.get(i) else {
                    return Err("unterminated double quote".into());
                };
                if d == '"' {
                    i += 1;
                    break;
                }
                if d == escape {
                    match chars.get(i + 1) {
                        Some(&n) if n == '"' || n == '$' || n == escape => {
                            cur.push(n);
                            i += 2;
                        }
                        _ => {
                            cur.push(d);
                            i += 1;
                        }
                    }
                } else if d == '$' {
                    i = expand(&chars, i, escape, lookup, &mut cur)?;
                } else {
                    cur.push(d);
                    i += 1;
                }
            }
        } else if c == '$' {
            i = expand(&chars, i, escape, lookup, &mut cur)?;
        } else {
            cur.push(c);
            i += 1;
        }
    }
    if in_word || !split {
        words.push(cur);
    }
    Ok(words)
}

/// Expands the variable reference starting at `chars[i] == '$'`; returns the index after it.
fn expand(
    chars: &[char],
    i: usize,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<usize, String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    match chars.get(i + 1) {
        Some('{') => {
            let mut j = i + 2;
            let start = j;
            while j < chars.len() && is_name(chars[j]) {
                j += 1;
            }
            let name: String = chars[start..j].iter().collect();
            if name.is_empty() {
                return Err("bad substitution: `${}` needs a variable name".into());
            }
            // The modifier and its word, up to the matching `}`.
            let mut depth = 1;
            let word_start = j;
            while j < chars.len() {
                match chars[j] {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            if j >= chars.len() {
                return Err(format!("missing `}}` after `${{{name}`"));
            }
            let modifier: String = chars[word_start..j].iter().collect();
            let value = lookup(&name);
            let sub =
                |w: &str| -> Result<String, String> { Ok(lex(w, escape, lookup, false)?.concat()) };
            let result = if modifier.is_empty() {
                value.unwrap_or_default()
            } else if let Some(w) = modifier.strip_prefix(":-") {
                match value {
                    Some(v) if !v.is_empty() => v,
                    _ => sub(w)?,
                }
            } else if let Some(w) = modifier.strip_prefix(":+") {
                match value {
                    Some(v) if !v.is_empty() => sub(w)?,
                    _ => String::new(),
                }
            } else if let Some(w) = modifier.strip_prefix('-') {
                match value {
                    Some(v) => v,
                    None => sub(w)?,
                }
            } else if let Some(w) = modifier.strip_prefix('+') {
                match value {
                    Some(_) => sub(w)?,
                    None => String::new(),
                }
            } else {
                return Err(format!(
                    "unsupported substitution `${{{name}{modifier}}}`: use `:-`, `-`, `:+` or `+`"
                ));
            };
            out.push_str(&result);
            Ok(j + 1)
        }
        Some(&c) if is_name(c) => {
            let mut j = i + 1;
            while j < chars.len() && is_name(chars[j]) {
                j += 1;
            }
            let name: String = chars[i + 1..j].iter().collect();
            out.push_str(&lookup(&name).unwrap_or_default());
            Ok(j)
        }
        _ => {
            out.push('$');
            Ok(i + 1)
        }
    }
}

/// Parses `k=v k2="v 2"` pairs (or the legacy `k v...` form when `legacy` allows it).
pub fn key_values(
    args: &str,
    escape: char,
    lookup: &dyn Fn(&str) -> Option<String>,
    legacy: bool,
) -> Result<Vec<(String, String)>, String> {
    let raw_first = args.split_whitespace().next().unwrap_or("");
    if legacy && !raw_first.contains('=') {
        let value = args[args.find(raw_first).unwrap_or(0) + raw_first.len()..].trim();
        if value.is_empty() {
            return Err(format!("`{raw_first}` needs a value (`{raw_first}=value`)"));
        }
        let v = lex(value, escape, lookup, false)?.concat();
        return Ok(vec![(raw_first.to_string(), v)]);
    }
    let mut out = Vec::new();
    for word in lex(args, escape, lookup, true)? {
        match word.split_once('=') {
            Some((k, v)) if !k.is_empty() => out.push((k.to_string(), v.to_string())),
            _ => return Err(format!("`{word}` is not of the form key=value")),
        }
    }
    Ok(out)
}

/// The variables visible to an instruction: ARGs in scope, overridden by ENV.
pub fn scope_lookup<'a>(
    env: &'a [String],
    args: &'a BTreeMap<String, String>,
) -> impl Fn(&str) -> Option<String> + 'a {
    move |name: &str| {
        let prefix = format!("{name}=");
        env.iter()
            .rev()
            .find_map(|e| e.strip_prefix(&prefix).map(str::to_string))
            .or_else(|| args.get(name).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn every_instruction_parses_with_its_line() {
        let text = r#"# syntax=docker/dockerfile:1
ARG BASE=debian:bookworm
FROM --platform=linux/amd64 ${BASE} AS build
# a comment
RUN apt-get update && \
    # comment inside a continuation
    apt-get install -y \
      curl
RUN ["echo", "exec form"]
COPY --from=build --chown=1000:1000 --chmod=0755 a b /dst/
ADD https://example.com/x.tar.gz /opt/
ENV A=1 B="two words"
ENV LEGACY value with spaces
WORKDIR /src
USER dev:dev
LABEL org.example.a=1 "b c"=d
EXPOSE 80 443/tcp
ENTRYPOINT ["/bin/sh", "-c"]
CMD echo hi
SHELL ["/bin/bash", "-c"]
"#;
        let df = parse(text).unwrap();
        assert_eq!(df.notes.len(), 1, "{:?}", df.notes);
        let lines: Vec<usize> = df.steps.iter().map(|s| s.line).collect();
        assert_eq!(
            lines,
            vec![2, 3, 5, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
        );
        assert_eq!(
            df.steps[1].instruction,
            Instruction::From {
                image: "${BASE}".into(),
                alias: Some("build".into()),
                platform: Some("linux/amd64".into())
            }
        );
        let Instruction::Run(Command::Shell(cmd)) = &df.steps[2].instruction else {
            panic!()
        };
        assert_eq!(
            cmd.split_whitespace().collect::<Vec<_>>().join(" "),
            "apt-get update && apt-get install -y curl"
        );
        assert_eq!(
            df.steps[3].instruction,
            Instruction::Run(Command::Exec(vec!["echo".into(), "exec form".into()]))
        );
        let Instruction::Copy {
            add,
            from,
            chown,
            chmod,
            ..
        } = &df.steps[4].instruction
        else {
            panic!()
        };
        assert!(!add);
        assert_eq!(from.as_deref(), Some("build"));
        assert_eq!(chown.as_deref(), Some("1000:1000"));
        assert_eq!(chmod.as_deref(), Some("0755"));
        assert!(matches!(
            df.steps[5].instruction,
            Instruction::Copy { add: true, .. }
        ));
        assert_eq!(
            df.steps[14].instruction,
            Instruction::Shell(vec!["/bin/bash".into(), "-c".into()])
        );
        assert_eq!(
            df.steps[13].instruction,
            Instruction::Cmd(Command::Shell("echo hi".into()))
        );
        let Instruction::Env(env) = &df.steps[6].instruction else {
            panic!()
        };
        assert_eq!(
            key_values(env, '\\', &none, true).unwrap(),
            vec![("A".into(), "1".into()), ("B".into(), "two words".into())]
        );
        let Instruction::Env(env) = &df.steps[7].instruction else {
            panic!()
        };
        assert_eq!(
            key_values(env, '\\', &none, true).unwrap(),
            vec![("LEGACY".into(), "value with spaces".into())]
        );
        let Instruction::Label(l) = &df.steps[10].instruction else {
            panic!()
        };
        assert_eq!(
            key_values(l, '\\', &none, false).unwrap(),
            vec![
                ("org.example.a".into(), "1".into()),
                ("b c".into(), "d".into())
            ]
        );
    }

    #[test]
    fn expansion_follows_docker() {
        let vars = |n: &str| match n {
            "A" => Some("a".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let one = |s: &str| lex(s, '\\', &vars, false).unwrap().concat();
        assert_eq!(one("$A/${A}x"), "a/ax");
        assert_eq!(one("${NOPE:-dflt}"), "dflt");
        assert_eq!(one("${EMPTY:-dflt}"), "dflt");
        assert_eq!(one("${EMPTY-dflt}"), "");
        assert_eq!(one("${A:-dflt}"), "a");
        assert_eq!(one("${A:+alt}"), "alt");
        assert_eq!(one("${NOPE:+alt}"), "");
        assert_eq!(one("${NOPE:-${A}b}"), "ab");
        assert_eq!(one("'$A'"), "$A");
        assert_eq!(one("\"$A\""), "a");
        assert_eq!(one("\\$A"), "$A");
        assert_eq!(one("cost $ now$"), "cost $ now$");
        assert_eq!(
            lex("a 'b c' \"d $A\"", '\\', &vars, true).unwrap(),
            vec!["a", "b c", "d a"]
        );
        assert!(lex("${A", '\\', &vars, false).is_err());
        assert!(lex("'open", '\\', &vars, false).is_err());
    }

    #[test]
    fn escape_directive_changes_the_continuation_character() {
        let df = parse("# escape=`\nFROM busybox\nRUN echo a `\n  b\n").unwrap();
        assert_eq!(df.escape, '`');
        assert_eq!(
            df.steps[1].instruction,
            Instruction::Run(Command::Shell("echo a   b".into()))
        );
        assert_eq!(df.steps[1].line, 3);
    }

    #[test]
    fn errors_name_the_line_and_give_a_hint() {
        let cases = [
            ("FROM a\n\nONBUILD RUN x\n", 3, "ONBUILD is not supported"),
            (
                "FROM a\nHEALTHCHECK CMD true\n",
                2,
                "HEALTHCHECK is not supported",
            ),
            ("FROM a\nVOLUME /data\n", 2, "VOLUME is not supported"),
            (
                "FROM a\nSTOPSIGNAL SIGINT\n",
                2,
                "STOPSIGNAL is not supported",
            ),
            (
                "FROM a\nRUN --mount=type=cache,target=/x true\n",
                2,
                "RUN --mount",
            ),
            ("FROM a\nRUN <<EOF\necho\nEOF\n", 2, "heredocs"),
            ("FROM a\nFROBNICATE\n", 2, "unknown instruction"),
            ("RUN true\n", 1, "first instruction must be FROM"),
            ("FROM a\nCOPY onlyone\n", 2, "at least one source"),
            ("FROM a\nSHELL /bin/bash -c\n", 2, "JSON form"),
            ("FROM a b c d\n", 1, "FROM takes"),
            ("\n# nothing\n", 1, "no instructions"),
            ("FROM a\nCOPY --parents a b\n", 2, "COPY --parents"),
        ];
        for (text, line, msg) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e:?}");
            assert!(e.message.contains(msg), "{text:?}: {e:?}");
            assert!(e.hint.is_some(), "{text:?}: {e:?}");
        }
    }
}
