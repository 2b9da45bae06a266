//! Configurations whose image is built from a Dockerfile (`build.dockerfile`, or the legacy
//! top-level `dockerFile` and `context`), with Warren's own builder (`warren-build`).
//!
//! The typed devcontainer model does not carry these properties yet, so they are read from the
//! configuration's raw text here, in one place; `build.args` get the same `${localEnv:..}` and
//! `${localWorkspaceFolder}` substitution as the rest of the file.
//!
//! Build sandboxes are workspaces of a runtime rooted at `STATE/builds/sandboxes`, apart from
//! the real workspaces (the reconciler never sees them; the builder removes those of builds that
//! died). Host-local builds get the host's network (for `apt-get`); builds of server users'
//! workspaces stay isolated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::EngineError;

/// What a configuration asks to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerfileBuild {
    /// The Dockerfile.
    pub dockerfile: PathBuf,
    /// The build context directory.
    pub context: PathBuf,
    /// `build.args`.
    pub args: BTreeMap<String, String>,
    /// `build.target`.
    pub target: Option<String>,
}

/// Properties the loader warns about that a Dockerfile build handles.
pub(crate) const BUILD_PROPERTIES: &[&str] = &["build", "dockerFile", "context"];

/// Removes `//` and `/* */` comments and trailing commas from JSONC text (strings untouched).
fn strip_jsonc(text: &str) -> String {
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '"' {
            out.push(c);
            i += 1;
            while i < b.len() {
                out.push(b[i]);
                if b[i] == '\\' && i + 1 < b.len() {
                    out.push(b[i + 1]);
                    i += 2;
                    continue;
                }
                i += 1;
                if b[i - 1] == '"' {
                    break;
                }
            }
        } else if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == '*' && b[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == ',' {
            let mut j = i + 1;
            while j < b.len() && b[j].is_whitespace() {
                j += 1;
            }
            if !matches!(b.get(j), Some('}') | Some(']')) {
                out.push(c);
            }
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The Dockerfile build `text` (a devcontainer.json at `config_path`) asks for, if any. A
/// configuration with an `image` uses the image.
pub fn dockerfile_build(
    text: &str,
    config_path: &Path,
    project_dir: &Path,
    local_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<DockerfileBuild>, EngineError> {
    let bad = |msg: String| EngineError::Policy(format!("{}: {msg}", config_path.display()));
    let Ok(root) = serde_json::from_str::<Value>(&strip_jsonc(text)) else {
        // The loader reports syntax errors with their line; nothing to build here.
        return Ok(None);
    };
    if root.get("image").is_some() {
        return Ok(None);
    }
    let build = root.get("build");
    let dockerfile = build
        .and_then(|b| b.get("dockerfile").or_else(|| b.get("dockerFile")))
        .or_else(|| root.get("dockerFile"));
    let Some(dockerfile) = dockerfile else {
        return Ok(None);
    };
    let dockerfile = dockerfile
        .as_str()
        .ok_or_else(|| bad("`build.dockerfile` must be a string".into()))?;
    let context = build
        .and_then(|b| b.get("context"))
        .or_else(|| root.get("context"))
        .map(|c| {
            c.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad("`build.context` must be a string".into()))
        })
        .transpose()?
        .unwrap_or_else(|| ".".into());
    let project = project_dir.to_string_lossy().into_owned();
    let vars = warren_devcontainer::Vars {
        local_workspace_folder: &project,
        container_workspace_folder: None,
        local_env,
    };
    let subst = |s: &str| warren_devcontainer::substitute(s, &vars).map_err(|e| bad(e.to_string()));
    let mut args = BTreeMap::new();
    if let Some(a) = build.and_then(|b| b.get("args")) {
        let obj = a
            .as_object()
            .ok_or_else(|| bad("`build.args` must be an object of strings".into()))?;
        for (k, v) in obj {
            let v = v
                .as_str()
                .ok_or_else(|| bad(format!("`build.args.{k}` must be a string")))?;
            args.insert(k.clone(), subst(v)?);
        }
    }
    let target = match build.and_then(|b| b.get("target")) {
        None => None,
        Some(t) => Some(
            t.as_str()
                .ok_or_else(|| bad("`build.target` must be a string".into()))?
                .to_string(),
        ),
    };
    let base = config_path.parent().unwrap_or(project_dir);
    Ok(Some(DockerfileBuild {
        dockerfile: base.join(subst(dockerfile)?),
        context: base.join(subst(&context)?),
        args,
        target,
    }))
}

/// The tag a project's built image gets: `warren-build/<folder>-<hash of its path>:latest`.
pub fn build_tag(project_dir: &Path) -> String {
    let base: String = project_dir
        .file_name()
        .map(|s| s.to_string_lossy().to_lowercase())
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let base = base.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let h = hex::encode(Sha256::digest(project_dir.as_os_str().as_encoded_bytes()));
    let base = if base.is_empty() { "project" } else { base };
    format!("warren-build/{base}-{}:latest", &h[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_sections_are_read_from_jsonc() {
        let cfg = Path::new("/p/.devcontainer/devcontainer.json");
        let text = r#"{
            // comment, "with quotes"
            "build": {
                "dockerfile": "Dockerfile", /* block */
                "context": "..",
                "args": {"A": "${localEnv:WHO}", "URL": "http://x//y",},
                "target": "dev",
            },
        }"#;
        let env = |n: &str| (n == "WHO").then(|| "me".to_string());
        let b = dockerfile_build(text, cfg, Path::new("/p"), &env)
            .unwrap()
            .unwrap();
        assert_eq!(b.dockerfile, Path::new("/p/.devcontainer/Dockerfile"));
        assert_eq!(b.context, Path::new("/p/.devcontainer/.."));
        assert_eq!(b.args["A"], "me");
        assert_eq!(b.args["URL"], "http://x//y");
        assert_eq!(b.target.as_deref(), Some("dev"));
        let legacy = dockerfile_build(
            r#"{"dockerFile": "D", "context": "c"}"#,
            cfg,
            Path::new("/p"),
            &env,
        )
        .unwrap()
        .unwrap();
        assert_eq!(legacy.dockerfile, Path::new("/p/.devcontainer/D"));
        assert_eq!(legacy.context, Path::new("/p/.devcontainer/c"));
        assert_eq!(
            dockerfile_build(
                r#"{"image": "x", "build": {"dockerfile": "D"}}"#,
                cfg,
                Path::new("/p"),
                &env
            )
            .unwrap(),
            None
        );
        assert!(dockerfile_build(
            r#"{"build": {"dockerfile": 3}}"#,
            cfg,
            Path::new("/p"),
            &env
        )
        .is_err());
    }

    #[test]
    fn tags_are_valid_image_names() {
        let t = build_tag(Path::new("/home/me/My Project!"));
        assert!(t.starts_with("warren-build/my-project-"), "{t}");
        warren_image::normalize_name(&t).unwrap();
        warren_image::normalize_name(&build_tag(Path::new("/"))).unwrap();
    }
}
