//! The base image of a Dockerfile as the reference CLI finds it (`dockerfileUtils.ts`): the image of
//! the target stage (or the last one), following stage names, with `ARG` and `ENV` values and build
//! arguments substituted. `read-configuration --include-merged-configuration` reads that image's
//! metadata for Dockerfile configurations.

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::Regex;

fn re(cell: &'static OnceLock<Regex>, pattern: &str) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("a valid pattern"))
}

fn from_statement() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(
        &R,
        r#"(?mi)^\s*FROM\s+(?P<platform>--platform=\S+\s+)?(?P<image>"?[^\s]+"?)(\s+AS\s+(?P<label>[^\s]+))?"#,
    )
}

fn instructions_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(
        &R,
        r#"(?mi)^\s*(?P<instruction>ARG|ENV|USER)\s+(?P<name>[^\s=]+)([ =]+("(?P<value1>\S+)"|(?P<value2>\S+)))?"#,
    )
}

fn argument_re() -> &'static Regex {
    static R: OnceLock<Regex> = OnceLock::new();
    re(
        &R,
        r"\$\{?(?P<variable>[a-zA-Z0-9_]+)(?P<isVarExp>:(?P<option>-|\+)(?P<word>[^\}]+))?\}?",
    )
}

#[derive(Debug, Clone)]
struct Instruction {
    instruction: String,
    name: String,
    value: Option<String>,
}

#[derive(Debug, Clone)]
struct Stage {
    /// `None` for the preamble (before the first `FROM`).
    from_image: Option<String>,
    label: Option<String>,
    instructions: Vec<Instruction>,
}

struct Dockerfile {
    preamble: Stage,
    stages: Vec<Stage>,
    by_label: HashMap<String, usize>,
}

fn strip_quotes(s: &str) -> String {
    let s = s.strip_prefix(['\'', '"']).unwrap_or(s);
    s.strip_suffix(['\'', '"']).unwrap_or(s).to_owned()
}

fn instructions(text: &str) -> Vec<Instruction> {
    instructions_re()
        .captures_iter(text)
        .map(|c| Instruction {
            instruction: c["instruction"].to_uppercase(),
            name: c["name"].to_owned(),
            value: c
                .name("value1")
                .or_else(|| c.name("value2"))
                .map(|m| m.as_str().to_owned()),
        })
        .collect()
}

/// Byte offsets of the line starts followed by `[\t ]*FROM` (any case).
fn from_line_starts(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start_matches([' ', '\t']);
        if trimmed.len() >= 4 && trimmed[..4].eq_ignore_ascii_case("FROM") {
            starts.push(at);
        }
        at += line.len();
    }
    starts
}

fn parse(text: &str) -> Dockerfile {
    let starts = from_line_starts(text);
    let preamble_text = &text[..starts.first().copied().unwrap_or(text.len())];
    let mut stages = Vec::new();
    for (i, start) in starts.iter().enumerate() {
        let end = starts.get(i + 1).copied().unwrap_or(text.len());
        let stage_text = &text[*start..end];
        let (image, label) = match from_statement().captures(stage_text) {
            Some(c) => (
                strip_quotes(&c["image"]),
                c.name("label").map(|m| m.as_str().to_owned()),
            ),
            None => ("unknown".to_owned(), None),
        };
        stages.push(Stage {
            from_image: Some(image),
            label,
            instructions: instructions(stage_text),
        });
    }
    let mut by_label = HashMap::new();
    for (i, s) in stages.iter().enumerate() {
        if let Some(l) = &s.label {
            by_label.insert(l.clone(), i);
        }
    }
    Dockerfile {
        preamble: Stage {
            from_image: None,
            label: None,
            instructions: instructions(preamble_text),
        },
        stages,
        by_label,
    }
}

/// Which stage: `None` is the preamble.
type StageRef = Option<usize>;

impl Dockerfile {
    fn stage(&self, r: StageRef) -> &Stage {
        match r {
            None => &self.preamble,
            Some(i) => &self.stages[i],
        }
    }

    fn replace_variables(
        &self,
        args: &HashMap<String, String>,
        s: &str,
        stage: StageRef,
        before: usize,
        depth: usize,
    ) -> String {
        let mut out = String::new();
        let mut last = 0;
        for c in argument_re().captures_iter(s) {
            let m = c.get(0).expect("whole match");
            out.push_str(&s[last..m.start()]);
            let mut value = self
                .find_value(args, &c["variable"], stage, before, depth + 1)
                .unwrap_or_default();
            if c.name("isVarExp").is_some() {
                let set = !value.is_empty();
                let word = &c["word"];
                let chosen = match (&c["option"], set) {
                    ("-", true) | ("+", false) => value.clone(),
                    _ => word.to_owned(),
                };
                value = strip_quotes(&chosen);
            }
            out.push_str(&value);
            last = m.end();
        }
        out.push_str(&s[last..]);
        out
    }

    fn find_value(
        &self,
        args: &HashMap<String, String>,
        variable: &str,
        mut stage: StageRef,
        mut before: usize,
        depth: usize,
    ) -> Option<String> {
        if depth > 64 {
            return None;
        }
        let mut consider_arg = true;
        let mut seen = Vec::new();
        loop {
            if seen.contains(&stage) {
                return None;
            }
            seen.push(stage);
            let st = self.stage(stage);
            let found = st.instructions[..before.min(st.instructions.len())]
                .iter()
                .rposition(|i| {
                    i.name == variable
                        && (i.instruction == "ENV"
                            || (consider_arg && (args.contains_key(&i.name) || i.value.is_some())))
                });
            if let Some(i) = found {
                let ins = &st.instructions[i];
                if ins.instruction == "ENV" {
                    let v = ins.value.clone().unwrap_or_default();
                    return Some(self.replace_variables(args, &v, stage, i, depth));
                }
                if ins.instruction == "ARG" {
                    let v = args
                        .get(&ins.name)
                        .cloned()
                        .or_else(|| ins.value.clone())
                        .unwrap_or_default();
                    return Some(self.replace_variables(args, &v, stage, i, depth));
                }
            }
            let image = st.from_image.as_ref()?;
            let image =
                self.replace_variables(args, image, None, self.preamble.instructions.len(), depth);
            stage = self.by_label.get(&image).copied();
            before = self.stage(stage).instructions.len();
            consider_arg = stage.is_none();
        }
    }
}

/// The image a Dockerfile builds on (`FROM`), for the `target` stage or the last one, with build
/// `args` applied; `None` when stages refer to each other in a loop or the target is unknown.
pub fn dockerfile_base_image(
    text: &str,
    args: &[(String, String)],
    target: Option<&str>,
) -> Option<String> {
    let d = parse(text);
    let args: HashMap<String, String> = args.iter().cloned().collect();
    let mut stage = match target.filter(|t| !t.is_empty()) {
        Some(t) => d.by_label.get(t).copied()?,
        None => d.stages.len().checked_sub(1)?,
    };
    let mut seen = Vec::new();
    loop {
        if seen.contains(&stage) {
            return None;
        }
        seen.push(stage);
        let image = d.stages[stage].from_image.clone().unwrap_or_default();
        let image = d.replace_variables(&args, &image, None, d.preamble.instructions.len(), 0);
        match d.by_label.get(&image) {
            Some(next) => stage = *next,
            None => return Some(image),
        }
    }
}

/// Where the image metadata of a configuration comes from, as the reference CLI decides it for a
/// merged configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataImage {
    /// A Dockerfile configuration (checked first, even when `image` is set too): its base image,
    /// `None` when it cannot be worked out (no `FROM`, an unknown target, stages in a loop).
    DockerfileBase(Option<String>),
    /// A Compose configuration: the service's image (not read by Warren yet).
    Compose,
    /// An `image` configuration.
    Image(String),
    /// None of them.
    None,
}

/// Works out [`MetadataImage`] for `config` read from `config_path`; reads the Dockerfile.
pub fn metadata_image(
    config: &crate::DevContainer,
    config_path: &std::path::Path,
) -> Result<MetadataImage, crate::ConfigError> {
    if let Some(dockerfile) = config.dockerfile() {
        let dir = config_path.parent().unwrap_or(std::path::Path::new("/"));
        let path = crate::resolve_path(dir, std::path::Path::new(dockerfile));
        let text = std::fs::read_to_string(&path)
            .map_err(|error| crate::ConfigError::Io { path, error })?;
        let build = config.build.clone().unwrap_or_default();
        return Ok(MetadataImage::DockerfileBase(dockerfile_base_image(
            &text,
            &build.args,
            build.target.as_deref(),
        )));
    }
    if config.docker_compose_file.is_some() {
        return Ok(MetadataImage::Compose);
    }
    Ok(match &config.image {
        Some(image) => MetadataImage::Image(image.clone()),
        None => MetadataImage::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(text: &str, args: &[(&str, &str)], target: Option<&str>) -> Option<String> {
        let args: Vec<(String, String)> = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        dockerfile_base_image(text, &args, target)
    }

    #[test]
    fn last_stage_follows_stage_names_and_args() {
        let text = "# syntax=docker/dockerfile:1\nARG VARIANT=bookworm\nARG REG\n\
                    FROM mcr.microsoft.com/devcontainers/base:${VARIANT} AS base\nRUN x\n\
                    from base as dev\nUSER vscode\n";
        assert_eq!(
            base(text, &[], None).as_deref(),
            Some("mcr.microsoft.com/devcontainers/base:bookworm")
        );
        assert_eq!(
            base(text, &[("VARIANT", "bullseye")], None).as_deref(),
            Some("mcr.microsoft.com/devcontainers/base:bullseye")
        );
        assert_eq!(
            base(
                "ARG R\nARG T\nFROM ${R:-docker.io}/debian:$T\n",
                &[("T", "12")],
                None
            )
            .as_deref(),
            Some("docker.io/debian:12")
        );
        // A build argument the Dockerfile does not declare is not used (as in Docker).
        assert_eq!(
            base("FROM debian:$T\n", &[("T", "12")], None).as_deref(),
            Some("debian:")
        );
    }

    #[test]
    fn target_selects_the_stage_and_loops_give_none() {
        let text = "FROM a AS one\nFROM b AS two\nFROM one\n";
        assert_eq!(base(text, &[], Some("two")).as_deref(), Some("b"));
        assert_eq!(base(text, &[], None).as_deref(), Some("a"));
        assert_eq!(base(text, &[], Some("nope")), None);
        assert_eq!(base("FROM x AS x\n", &[], None), None);
        assert_eq!(base("", &[], None), None);
        assert_eq!(
            base("FROM --platform=linux/amd64 \"img:1\"\n", &[], None).as_deref(),
            Some("img:1")
        );
    }
}
