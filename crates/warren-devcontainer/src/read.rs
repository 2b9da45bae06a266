//! Reading a devcontainer.json the way the reference CLI (`@devcontainers/cli`) does for
//! `devcontainer read-configuration`: legacy properties moved under `customizations.vscode`, the
//! workspace folder and mount worked out from the raw config, then local variable substitution.

use std::path::{Component, Path, PathBuf};

use crate::json::{Json, Object};
use crate::jsonc::{Node, Value};
use crate::subst::posix_basename;
use crate::{ConfigError, Vars};

/// What `read-configuration` reports, before image metadata is merged in.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadConfiguration {
    /// The devcontainer.json that was read.
    pub config_path: PathBuf,
    /// The host project folder (`${localWorkspaceFolder}`).
    pub local_workspace_folder: String,
    /// `${containerWorkspaceFolder}` as substitution saw it.
    pub container_workspace_folder: Option<String>,
    /// The configuration after local substitution, in file order (no `configFilePath`).
    pub configuration: Json,
    /// The reference's `workspace`: `workspaceFolder` and `workspaceMount` (absent when undefined).
    pub workspace: Object,
}

impl ReadConfiguration {
    /// The `configFilePath` URI object the reference CLI prints.
    pub fn config_file_uri(&self) -> Json {
        let path = self.config_path.to_string_lossy().into_owned();
        let mut o = Object::new();
        o.insert("$mid", Json::Number(1.0));
        o.insert("fsPath", Json::String(path.clone()));
        o.insert("path", Json::String(path));
        o.insert("scheme", Json::String("vscode-fileHost".into()));
        Json::Object(o)
    }

    /// The configuration as the reference holds it in memory: with `configFilePath` set.
    pub fn configuration_with_path(&self) -> Json {
        let mut config = self.configuration.clone();
        if let Json::Object(o) = &mut config {
            o.insert("configFilePath", self.config_file_uri());
        }
        config
    }

    /// The whole `read-configuration` output object; `merged` is `mergedConfiguration`.
    pub fn output(&self, merged: Option<Json>) -> Json {
        let mut out = Object::new();
        out.insert("configuration", self.configuration_with_path());
        out.insert("workspace", Json::Object(self.workspace.clone()));
        if let Some(merged) = merged {
            out.insert("mergedConfiguration", merged);
        }
        Json::Object(out)
    }

    /// Substitutes local variables in `value` as this configuration's were (used for image and
    /// Feature metadata, which the reference substitutes with the config's own context).
    pub fn substitute_local(
        &self,
        value: &Json,
        local_env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Json, crate::SubstituteError> {
        let vars = Vars {
            local_workspace_folder: &self.local_workspace_folder,
            container_workspace_folder: self.container_workspace_folder.as_deref(),
            local_env,
        };
        substitute_json(value, &mut |s| crate::substitute(s, &vars))
    }
}

/// Applies `f` to every string value (not to keys) of `value`.
pub fn substitute_json<E>(
    value: &Json,
    f: &mut dyn FnMut(&str) -> Result<String, E>,
) -> Result<Json, E> {
    Ok(match value {
        Json::String(s) => Json::String(f(s)?),
        Json::Array(items) => Json::Array(
            items
                .iter()
                .map(|v| substitute_json(v, f))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(o) => {
            let mut out = Object::new();
            for (k, v) in o.iter() {
                out.insert(k.clone(), substitute_json(v, f)?);
            }
            Json::Object(out)
        }
        other => other.clone(),
    })
}

/// The folder the reference CLI mounts for `project_dir` with `--mount-workspace-git-root` (its
/// default): the closest ancestor (or the folder itself) that is a git work tree, else the folder.
/// Only files are read: a `.git` folder with a `HEAD`, or a `.git` file (worktrees, submodules).
pub fn git_root(project_dir: &Path) -> PathBuf {
    for dir in project_dir.ancestors() {
        let git = dir.join(".git");
        let is_repo = if git.is_dir() {
            git.join("HEAD").is_file()
        } else {
            std::fs::read_to_string(&git).is_ok_and(|s| s.starts_with("gitdir:"))
        };
        if is_repo {
            return dir.to_owned();
        }
    }
    project_dir.to_owned()
}

/// `path.posix.join`, normalized (`.` and `..` resolved lexically).
pub(crate) fn posix_join(parts: &[&str]) -> String {
    let joined = parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/");
    if joined.is_empty() {
        return ".".into();
    }
    let absolute = joined.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for seg in joined.split('/') {
        match seg {
            "" | "." => {}
            ".." if out.last().is_some_and(|s| *s != "..") => {
                out.pop();
            }
            ".." if absolute => {}
            seg => out.push(seg),
        }
    }
    let mut s = out.join("/");
    if absolute {
        s.insert(0, '/');
    }
    if joined.ends_with('/') && !s.ends_with('/') {
        s.push('/');
    }
    if s.is_empty() {
        ".".into()
    } else {
        s
    }
}

/// `path.resolve(cwd, p)` on POSIX: absolute, normalized, symlinks not followed.
pub fn resolve_path(cwd: &Path, p: &Path) -> PathBuf {
    let joined = cwd.join(p);
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

fn object_mut(node: &mut Node) -> Option<&mut Vec<(String, Node)>> {
    match &mut node.value {
        Value::Object(entries) => Some(entries),
        _ => None,
    }
}

fn get<'n>(entries: &'n [(String, Node)], key: &str) -> Option<&'n Node> {
    entries.iter().find(|(k, _)| k == key).map(|(_, n)| n)
}

fn truthy(node: &Node) -> bool {
    Json::from(node).truthy()
}

fn take(entries: &mut Vec<(String, Node)>, key: &str) -> Option<Node> {
    let at = entries.iter().position(|(k, _)| k == key)?;
    Some(entries.remove(at).1)
}

/// Sets `key` keeping an existing key's position (JavaScript assignment).
fn set(entries: &mut Vec<(String, Node)>, key: &str, node: Node) {
    match entries.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = node,
        None => entries.push((key.to_owned(), node)),
    }
}

/// The reference's `updateFromOldProperties`: top-level `extensions`, `settings` and `devPort`
/// move under `customizations.vscode` (extensions appended, settings merged under the existing ones).
pub(crate) fn update_from_old_properties(root: &mut Node) {
    let pos = root.pos;
    let Some(entries) = object_mut(root) else {
        return;
    };
    let has = |k: &str| get(entries, k).is_some_and(truthy);
    if !(has("extensions") || has("settings") || get(entries, "devPort").is_some()) {
        return;
    }
    let custom_ok = match get(entries, "customizations") {
        Some(c) if truthy(c) => matches!(c.value, Value::Object(_)),
        _ => true,
    };
    if !custom_ok {
        return; // Validation reports the malformed `customizations`.
    }
    let extensions = get(entries, "extensions")
        .filter(|n| truthy(n))
        .is_some()
        .then(|| take(entries, "extensions"))
        .flatten();
    let settings = get(entries, "settings")
        .filter(|n| truthy(n))
        .is_some()
        .then(|| take(entries, "settings"))
        .flatten();
    let dev_port = get(entries, "devPort").cloned();
    let custom = match get(entries, "customizations") {
        Some(c) if truthy(c) => c.clone(),
        _ => Node {
            pos,
            value: Value::Object(Vec::new()),
        },
    };
    let mut custom = custom;
    let custom_entries = object_mut(&mut custom).expect("checked above");
    let mut vscode = match get(custom_entries, "vscode") {
        Some(v) if truthy(v) => v.clone(),
        _ => Node {
            pos,
            value: Value::Object(Vec::new()),
        },
    };
    if let Some(vs) = object_mut(&mut vscode) {
        if let Some(ext) = extensions {
            let mut items = match get(vs, "extensions") {
                Some(Node {
                    value: Value::Array(items),
                    ..
                }) => items.clone(),
                Some(n) if truthy(n) => vec![n.clone()],
                _ => Vec::new(),
            };
            match ext.value {
                Value::Array(more) => items.extend(more),
                _ => items.push(ext.clone()),
            }
            set(
                vs,
                "extensions",
                Node {
                    pos: ext.pos,
                    value: Value::Array(items),
                },
            );
        }
        if let Some(settings) = settings {
            let mut merged: Vec<(String, Node)> = match settings.value {
                Value::Object(e) => e,
                _ => Vec::new(),
            };
            if let Some(Node {
                value: Value::Object(existing),
                ..
            }) = get(vs, "settings")
            {
                for (k, v) in existing.clone() {
                    set(&mut merged, &k, v);
                }
            }
            set(
                vs,
                "settings",
                Node {
                    pos: settings.pos,
                    value: Value::Object(merged),
                },
            );
        }
        if let Some(port) = dev_port {
            if get(vs, "devPort").is_none() {
                set(vs, "devPort", port);
                take(entries, "devPort");
            }
        }
    }
    set(custom_entries, "vscode", vscode);
    set(entries, "customizations", custom);
}

/// Works out the workspace folder and mount from the raw config, as the reference's
/// `getWorkspaceConfiguration`. `mount_root` is the folder that is mounted (the project folder, or
/// its git root).
fn workspace_config(
    root: &[(String, Node)],
    project_dir: &str,
    mount_root: &str,
) -> (Option<Json>, Option<Json>) {
    let raw = |k: &str| get(root, k).map(Json::from);
    if get(root, "dockerComposeFile").is_some() {
        let folder = raw("workspaceFolder")
            .filter(Json::truthy)
            .unwrap_or(Json::String("/".into()));
        return (Some(folder), None);
    }
    let mut folder = raw("workspaceFolder");
    let mut mount = raw("workspaceMount");
    let has_mount = get(root, "workspaceMount").is_some();
    let folder_set = folder.as_ref().is_some_and(Json::truthy);
    if !folder_set || !has_mount {
        let target = posix_join(&["/workspaces", &posix_basename(mount_root)]);
        if !folder_set {
            let relative = Path::new(project_dir)
                .strip_prefix(mount_root)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            folder = Some(Json::String(posix_join(&[&target, &relative])));
        }
        if !has_mount {
            let q = |s: &str| if s.contains(',') { "\"" } else { "" };
            mount = Some(Json::String(format!(
                "type=bind,{q1}source={mount_root}{q1},{q2}target={target}{q2}",
                q1 = q(mount_root),
                q2 = q(&target),
            )));
        }
    }
    (folder, mount)
}

/// Everything the loader produces from one document.
pub(crate) struct Read {
    pub read: ReadConfiguration,
    pub substituted: Node,
}

/// Parses, updates legacy properties, works out the workspace and substitutes local variables.
pub(crate) fn read(
    mut root: Node,
    config_path: &Path,
    project_dir: &str,
    mount_root: &str,
    local_env: &dyn Fn(&str) -> Option<String>,
) -> Result<Read, ConfigError> {
    if !matches!(root.value, Value::Object(_)) {
        return Err(ConfigError::Invalid {
            file: config_path.to_owned(),
            line: root.pos.line,
            column: root.pos.column,
            property: String::new(),
            message: format!(
                "expected an object at the top level, found {}",
                root.value.kind()
            ),
        });
    }
    update_from_old_properties(&mut root);
    let entries = match &root.value {
        Value::Object(e) => e.as_slice(),
        _ => &[],
    };
    let (folder, mount) = workspace_config(entries, project_dir, mount_root);
    // The container folder is itself substituted, seeing its raw value as `${containerWorkspaceFolder}`.
    let container_workspace_folder = match folder.as_ref().and_then(Json::as_str) {
        Some(raw) if !raw.is_empty() => {
            let vars = Vars {
                local_workspace_folder: project_dir,
                container_workspace_folder: Some(raw),
                local_env,
            };
            Some(crate::substitute(raw, &vars).map_err(|e| {
                let node = get(entries, "workspaceFolder").unwrap_or(&root);
                ConfigError::Invalid {
                    file: config_path.to_owned(),
                    line: node.pos.line,
                    column: node.pos.column,
                    property: "workspaceFolder".into(),
                    message: e.to_string(),
                }
            })?)
        }
        _ => None,
    };
    let vars = Vars {
        local_workspace_folder: project_dir,
        container_workspace_folder: container_workspace_folder.as_deref(),
        local_env,
    };
    crate::substitute_tree(&mut root, &vars, config_path, "")?;
    let configuration = Json::from(&root);
    let mut workspace = Object::new();
    let substituted_folder = configuration.get("workspaceFolder");
    let folder = match substituted_folder {
        Some(Json::String(s)) => Some(Json::String(s.clone())),
        _ => folder,
    };
    if let Some(folder) = folder {
        workspace.insert("workspaceFolder", folder);
    }
    let mount = match configuration.get("workspaceMount") {
        Some(m) => Some(m.clone()),
        None => mount,
    };
    if let Some(mount) = mount {
        workspace.insert("workspaceMount", mount);
    }
    Ok(Read {
        read: ReadConfiguration {
            config_path: config_path.to_owned(),
            local_workspace_folder: project_dir.to_owned(),
            container_workspace_folder,
            configuration,
            workspace,
        },
        substituted: root,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_join_normalizes() {
        assert_eq!(
            posix_join(&["/workspaces", "project"]),
            "/workspaces/project"
        );
        assert_eq!(posix_join(&["/workspaces/p", ""]), "/workspaces/p");
        assert_eq!(posix_join(&["/workspaces/p", "a/../b"]), "/workspaces/p/b");
        assert_eq!(posix_join(&["/workspaces", ""]), "/workspaces");
    }

    #[test]
    fn resolve_path_is_lexical() {
        assert_eq!(
            resolve_path(Path::new("/a/b"), Path::new("../c/./d/")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(
            resolve_path(Path::new("/a"), Path::new("/x/y")),
            PathBuf::from("/x/y")
        );
    }
}
