//! The build plan: a Dockerfile over the base image plus a context folder laid out like the
//! reference CLI's (non-BuildKit) one, and the features' image-metadata entries.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::FeatureError;
use crate::fetch::copy_tree;
use crate::manifest::LIFECYCLE_HOOKS;
use crate::options::env_lines;
use crate::{FeatureSource, Resolved, ResolvedFeature};

/// Where the features' files go inside the image being built (as in the reference).
pub const FEATURES_DEST: &str = "/tmp/dev-container-features";

/// The users the features are installed for. Features' `install.sh` always runs as root; these
/// become `_CONTAINER_USER`, `_REMOTE_USER`, `_CONTAINER_USER_HOME` and `_REMOTE_USER_HOME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildUsers {
    /// The container user (`containerUser`, else the base image's user).
    pub container_user: String,
    /// The remote user (`remoteUser`); `None` means the container user.
    pub remote_user: Option<String>,
    /// The container user's home; `None`: looked up in the image during the build (`getent
    /// passwd`, falling back to `/etc/passwd`), as the reference does.
    pub container_user_home: Option<String>,
    /// The remote user's home; `None`: looked up during the build.
    pub remote_user_home: Option<String>,
    /// The base image's own user, restored by a final `USER` (default `root`).
    pub image_user: String,
}

impl BuildUsers {
    /// Container user `user`, no remote user, homes looked up during the build, image user root.
    pub fn new(container_user: &str) -> Self {
        BuildUsers {
            container_user: container_user.to_string(),
            remote_user: None,
            container_user_home: None,
            remote_user_home: None,
            image_user: "root".to_string(),
        }
    }
}

/// A Dockerfile, its context folder and the features' image-metadata entries.
#[derive(Debug, Clone, PartialEq)]
pub struct BuildPlan {
    /// The Dockerfile text (FROM, USER, COPY, RUN, ENV only).
    pub dockerfile: String,
    /// The build context: `devcontainer-features.builtin.env` and one folder per feature
    /// (`<id>_<index>`) holding its files, `devcontainer-features.env` and
    /// `devcontainer-features-install.sh`.
    pub context_dir: PathBuf,
    /// One entry per feature, in install order, in the `devcontainer.metadata` label's format.
    pub metadata: Vec<Value>,
}

impl BuildPlan {
    /// The Dockerfile followed by `LABEL devcontainer.metadata="..."` holding `entries` (the
    /// merged metadata: base image's, these features', the config's), quoted as the reference does.
    pub fn dockerfile_with_label(&self, entries: &[Value]) -> String {
        let json = Value::Array(entries.to_vec()).to_string();
        let mut quoted = String::with_capacity(json.len());
        for c in json.chars() {
            if matches!(c, '"' | '\\' | '$') {
                quoted.push('\\');
            }
            quoted.push(c);
        }
        format!(
            "{}LABEL devcontainer.metadata=\"{quoted}\"\n",
            self.dockerfile
        )
    }
}

fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 256
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | '$'))
        && !user.starts_with('-')
}

/// `(command -v getent ... && getent passwd 'u' || grep ... /etc/passwd || true)`, as the
/// reference's `getEntPasswdShellCommand`.
fn getent_passwd(user: &str) -> String {
    let escaped_for_grep = user.replace('.', "\\.");
    format!(
        "(command -v getent >/dev/null 2>&1 && getent passwd '{user}' || grep -E '^{escaped_for_grep}|^[^:]*:[^:]*:{escaped_for_grep}:' /etc/passwd || true)"
    )
}

/// `ENV K="v"` lines, `"` and `\` escaped (the reference's `generateContainerEnvs`).
fn env_instructions(env: &[(String, String)]) -> String {
    env.iter()
        .map(|(k, v)| {
            let mut q = String::with_capacity(v.len());
            for c in v.chars() {
                if c == '"' || c == '\\' {
                    q.push('\\');
                }
                q.push(c);
            }
            format!("ENV {k}=\"{q}\"")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn shell_single_quote_inner(s: &str) -> String {
    s.replace('\'', "'\\''")
}

/// The `devcontainer-features-install.sh` wrapper (the reference's
/// `getFeatureInstallWrapperScript`).
fn install_wrapper(f: &ResolvedFeature, env: &[String]) -> String {
    let q = shell_single_quote_inner;
    let id = match &f.source {
        FeatureSource::Oci { reference, .. } => reference.resource.clone(),
        _ => f.user_id.clone(),
    };
    let m = &f.manifest;
    let name = q(m.name.as_deref().unwrap_or("Unknown"));
    let description = q(m.description.as_deref().unwrap_or(""));
    let version = q(m.version.as_deref().unwrap_or(""));
    let documentation = q(m.documentation_url.as_deref().unwrap_or(""));
    let options = q(&env
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n"));
    let mut warning = String::new();
    if m.deprecated {
        let _ = writeln!(
            warning,
            "(!) WARNING: Using the deprecated Feature \"{}\". This Feature will no longer receive any further updates/support.",
            q(&m.id)
        );
    }
    if f.renamed_from.is_some() {
        let _ = write!(
            warning,
            "(!) WARNING: This feature has been renamed. Please update the reference in devcontainer.json to \"{}\".",
            q(&m.id)
        );
    }
    let echo_warning = if warning.is_empty() {
        String::new()
    } else {
        format!("echo '{warning}'")
    };
    let id = q(&id);
    let trouble = if documentation.is_empty() {
        String::new()
    } else {
        format!(
            " Look at the documentation at {documentation} for help troubleshooting this error."
        )
    };
    format!(
        "#!/bin/sh\nset -e\n\non_exit () {{\n\t[ $? -eq 0 ] && exit\n\techo 'ERROR: Feature \"{name}\" ({id}) failed to install!{trouble}'\n}}\n\ntrap on_exit EXIT\n\n\
echo ===========================================================================\n{echo_warning}\n\
echo 'Feature       : {name}'\necho 'Description   : {description}'\necho 'Id            : {id}'\n\
echo 'Version       : {version}'\necho 'Documentation : {documentation}'\necho 'Options       :'\n\
echo '{options}'\necho ===========================================================================\n\n\
set -a\n. ../devcontainer-features.builtin.env\n. ./devcontainer-features.env\nset +a\n\n\
chmod +x ./install.sh\n./install.sh\n"
    )
}

/// The image-metadata entry of one feature: `id` plus the properties the reference picks
/// (lifecycle hooks, init, privileged, capAdd, securityOpt, entrypoint, mounts,
/// customizations), and `containerEnv`.
pub(crate) fn metadata_entry(f: &ResolvedFeature) -> Value {
    let mut entry = Map::new();
    entry.insert("id".to_string(), Value::String(f.user_id.clone()));
    let raw = f.manifest.raw.as_object();
    let picked = LIFECYCLE_HOOKS.iter().copied().chain([
        "init",
        "privileged",
        "capAdd",
        "securityOpt",
        "entrypoint",
        "mounts",
        "customizations",
        "containerEnv",
    ]);
    for key in picked {
        if let Some(v) = raw.and_then(|o| o.get(key)) {
            if !v.is_null() {
                entry.insert(key.to_string(), v.clone());
            }
        }
    }
    Value::Object(entry)
}

fn folder_name(f: &ResolvedFeature, index: usize) -> String {
    let id: String = f
        .source_id()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{id}_{index}")
}

pub(crate) fn build_plan(
    resolved: &Resolved,
    base_image: &str,
    users: &BuildUsers,
    context_dir: &Path,
) -> Result<BuildPlan, FeatureError> {
    let bad_user = |user: &str| FeatureError::InvalidOption {
        feature: "(build)".to_string(),
        reason: format!("user name `{user}` cannot be used in a build"),
        hint: Some("user names are letters, digits and `._-@$`".to_string()),
    };
    let remote_user = users
        .remote_user
        .clone()
        .unwrap_or_else(|| users.container_user.clone());
    for u in [&users.container_user, &remote_user, &users.image_user] {
        if !valid_user(u) {
            return Err(bad_user(u));
        }
    }
    if base_image.trim().is_empty() || base_image.chars().any(char::is_whitespace) {
        return Err(FeatureError::InvalidOption {
            feature: "(build)".to_string(),
            reason: format!("base image name `{base_image}` is not usable"),
            hint: Some(
                "pass an image name from Warren's store, e.g. `debian:bookworm`".to_string(),
            ),
        });
    }
    fs::create_dir_all(context_dir).map_err(FeatureError::io("create", context_dir))?;
    if fs::read_dir(context_dir)
        .map_err(FeatureError::io("read", context_dir))?
        .next()
        .is_some()
    {
        return Err(FeatureError::Io {
            action: "use as an empty build context",
            path: context_dir.to_path_buf(),
            source: std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                "the folder is not empty",
            ),
        });
    }

    let quote_env = |v: &str| -> String {
        let mut q = String::new();
        for c in v.chars() {
            if matches!(c, '\\' | '"' | '$' | '`') {
                q.push('\\');
            }
            q.push(c);
        }
        format!("\"{q}\"")
    };
    let mut builtin = format!(
        "_CONTAINER_USER={}\n_REMOTE_USER={remote_user}\n",
        users.container_user
    );
    if let Some(h) = &users.container_user_home {
        let _ = writeln!(builtin, "_CONTAINER_USER_HOME={}", quote_env(h));
    }
    if let Some(h) = &users.remote_user_home {
        let _ = writeln!(builtin, "_REMOTE_USER_HOME={}", quote_env(h));
    }
    let builtin_path = context_dir.join("devcontainer-features.builtin.env");
    fs::write(&builtin_path, builtin).map_err(FeatureError::io("write", &builtin_path))?;

    let builtin_dest = format!("{FEATURES_DEST}/devcontainer-features.builtin.env");
    let mut df = String::new();
    let _ = writeln!(df, "FROM {base_image}");
    let _ = writeln!(df, "USER root");
    let _ = writeln!(df, "COPY devcontainer-features.builtin.env {builtin_dest}");
    let mut lookups = Vec::new();
    if users.container_user_home.is_none() {
        lookups.push(format!(
            "echo \"_CONTAINER_USER_HOME=$( {} | cut -d: -f6)\" >> {builtin_dest}",
            getent_passwd(&users.container_user)
        ));
    }
    if users.remote_user_home.is_none() {
        lookups.push(format!(
            "echo \"_REMOTE_USER_HOME=$( {} | cut -d: -f6)\" >> {builtin_dest}",
            getent_passwd(&remote_user)
        ));
    }
    if !lookups.is_empty() {
        let _ = writeln!(df, "RUN \\\n{}", lookups.join(" && \\\n"));
    }
    let _ = writeln!(df);

    let mut metadata = Vec::new();
    for (index, f) in resolved.features.iter().enumerate() {
        let folder = folder_name(f, index);
        let dir = context_dir.join(&folder);
        copy_tree(&f.user_id, &f.dir, &dir)?;
        let env = env_lines(&f.values);
        let env_path = dir.join("devcontainer-features.env");
        fs::write(&env_path, env.join("\n")).map_err(FeatureError::io("write", &env_path))?;
        let wrapper_path = dir.join("devcontainer-features-install.sh");
        fs::write(&wrapper_path, install_wrapper(f, &env))
            .map_err(FeatureError::io("write", &wrapper_path))?;

        let envs = env_instructions(&f.manifest.container_env);
        if !envs.is_empty() {
            let _ = writeln!(df, "{envs}");
        }
        let dest = format!("{FEATURES_DEST}/{folder}");
        let _ = writeln!(df, "COPY {folder} {dest}");
        let _ = writeln!(
            df,
            "RUN chmod -R 0755 {dest} \\\n&& cd {dest} \\\n&& chmod +x ./devcontainer-features-install.sh \\\n&& ./devcontainer-features-install.sh\n"
        );
        metadata.push(metadata_entry(f));
    }
    let _ = writeln!(df, "USER {}", users.image_user);
    Ok(BuildPlan {
        dockerfile: df,
        context_dir: context_dir.to_path_buf(),
        metadata,
    })
}
