//! Configurations whose image is built from a Dockerfile (`build.dockerfile`, or the legacy
//! top-level `dockerFile` and `context`), with Warren's own builder (`warren-build`).
//!
//! Build sandboxes are workspaces of a runtime rooted at `STATE/builds/sandboxes`, apart from
//! the real workspaces (the reconciler never sees them; the builder removes those of builds that
//! died). Host-local builds get the host's network (for `apt-get`); builds of server users'
//! workspaces stay isolated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

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

/// The Dockerfile build a configuration asks for (`build.dockerfile`, or the legacy top-level
/// `dockerFile` and `context`), if any: paths are relative to the devcontainer.json's folder, and
/// `build.args` were substituted with the rest of the file. A configuration with an `image` uses
/// the image.
pub fn dockerfile_build(loaded: &warren_devcontainer::Loaded) -> Option<DockerfileBuild> {
    let c = &loaded.config;
    if c.image.is_some() {
        return None;
    }
    let build = c.build.as_ref();
    let dockerfile = build
        .and_then(|b| b.dockerfile.clone())
        .or_else(|| c.docker_file.clone())?;
    let context = build
        .and_then(|b| b.context.clone())
        .or_else(|| c.context.clone())
        .unwrap_or_else(|| ".".into());
    let base = loaded
        .config_path
        .parent()
        .unwrap_or_else(|| Path::new("/"));
    Some(DockerfileBuild {
        dockerfile: base.join(dockerfile),
        context: base.join(context),
        args: build
            .map(|b| b.args.iter().cloned().collect())
            .unwrap_or_default(),
        target: build.and_then(|b| b.target.clone()),
    })
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

    fn load(text: &str) -> warren_devcontainer::Loaded {
        let env = |n: &str| (n == "WHO").then(|| "me".to_string());
        warren_devcontainer::load_str(
            text,
            Path::new("/p/.devcontainer/devcontainer.json"),
            Path::new("/p"),
            &env,
        )
        .unwrap()
    }

    #[test]
    fn build_sections_come_from_the_configuration() {
        let b = dockerfile_build(&load(
            r#"{
            // comment, "with quotes"
            "build": {
                "dockerfile": "Dockerfile", /* block */
                "context": "..",
                "args": {"A": "${localEnv:WHO}", "URL": "http://x//y",},
                "target": "dev",
            },
        }"#,
        ))
        .unwrap();
        assert_eq!(b.dockerfile, Path::new("/p/.devcontainer/Dockerfile"));
        assert_eq!(b.context, Path::new("/p/.devcontainer/.."));
        assert_eq!(b.args["A"], "me");
        assert_eq!(b.args["URL"], "http://x//y");
        assert_eq!(b.target.as_deref(), Some("dev"));
        let legacy = dockerfile_build(&load(r#"{"dockerFile": "D", "context": "c"}"#)).unwrap();
        assert_eq!(legacy.dockerfile, Path::new("/p/.devcontainer/D"));
        assert_eq!(legacy.context, Path::new("/p/.devcontainer/c"));
        assert_eq!(
            dockerfile_build(&load(r#"{"image": "x", "build": {"dockerfile": "D"}}"#)),
            None
        );
    }

    #[test]
    fn tags_are_valid_image_names() {
        let t = build_tag(Path::new("/home/me/My Project!"));
        assert!(t.starts_with("warren-build/my-project-"), "{t}");
        warren_image::normalize_name(&t).unwrap();
        warren_image::normalize_name(&build_tag(Path::new("/"))).unwrap();
    }
}
