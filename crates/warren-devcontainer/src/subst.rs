//! `${...}` variable substitution as done by the reference CLI before a container exists (the "local" phase).

/// What `${...}` variables resolve to.
pub struct Vars<'a> {
    /// Host path of the project folder (`${localWorkspaceFolder}`).
    pub local_workspace_folder: &'a str,
    /// In-container workspace folder (`${containerWorkspaceFolder}`); `None` leaves it untouched.
    pub container_workspace_folder: Option<&'a str>,
    /// Looks up a host environment variable (`${localEnv:NAME}`, legacy `${env:NAME}`).
    pub local_env: &'a dyn Fn(&str) -> Option<String>,
}

/// A variable that cannot be substituted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstituteError {
    /// `${localEnv}` / `${env}` without a variable name.
    #[error("`{0}` cannot be resolved because no environment variable name is given")]
    MissingEnvName(String),
}

/// Replaces the variables in `text`.
///
/// `${localEnv:NAME}` and `${env:NAME}` become the variable's value, or empty when unset;
/// `${localEnv:NAME:default}` uses `default` when unset. `${localWorkspaceFolder}`,
/// `${localWorkspaceFolderBasename}`, `${containerWorkspaceFolder}` and
/// `${containerWorkspaceFolderBasename}` become paths. Anything else (`${containerEnv:..}`,
/// `${devcontainerId}`, `${templateOption:..}`, ...) is left as written.
pub fn substitute(text: &str, vars: &Vars<'_>) -> Result<String, SubstituteError> {
    replace_variables(text, &mut |whole, name, args| {
        resolve(whole, name, args, vars)
    })
}

/// Resolves one variable: `(whole match, name, arguments)` to its replacement.
pub(crate) type Replace<'a, E> = dyn FnMut(&str, &str, &[&str]) -> Result<String, E> + 'a;

/// Runs `replace(whole, name, args)` on every `${name[:arg]...}` in `text`, like the reference's
/// `/\$\{(.*?)\}/g`: the name runs to the first `}` on the same line and is split at `:`.
pub(crate) fn replace_variables<E>(text: &str, replace: &mut Replace<'_, E>) -> Result<String, E> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find(['}', '\n', '\r', '\u{2028}', '\u{2029}']) {
            Some(end) if after[end..].starts_with('}') => {
                let whole = &rest[start..start + 2 + end + 1];
                let mut parts = after[..end].split(':');
                let name = parts.next().unwrap_or_default();
                let args: Vec<&str> = parts.collect();
                out.push_str(&replace(whole, name, &args)?);
                rest = &after[end + 1..];
            }
            _ => {
                out.push('$');
                rest = &rest[start + 1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// `path.posix.basename`: the last segment, trailing slashes ignored.
pub(crate) fn posix_basename(p: &str) -> String {
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return String::new();
    }
    trimmed.rsplit('/').next().unwrap_or("").to_owned()
}

/// `${localEnv:NAME[:default]}` semantics shared with `${containerEnv:..}`.
fn lookup(
    whole: &str,
    args: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, SubstituteError> {
    match args.first() {
        None => Err(SubstituteError::MissingEnvName(whole.to_owned())),
        Some(var) => {
            Ok(env(var).unwrap_or_else(|| args.get(1).copied().unwrap_or_default().to_owned()))
        }
    }
}

fn resolve(
    whole: &str,
    name: &str,
    args: &[&str],
    vars: &Vars<'_>,
) -> Result<String, SubstituteError> {
    Ok(match name {
        "localEnv" | "env" => lookup(whole, args, vars.local_env)?,
        "localWorkspaceFolder" => vars.local_workspace_folder.to_owned(),
        "localWorkspaceFolderBasename" => posix_basename(vars.local_workspace_folder),
        "containerWorkspaceFolder" => vars
            .container_workspace_folder
            .map_or_else(|| whole.to_owned(), str::to_owned),
        "containerWorkspaceFolderBasename" => vars
            .container_workspace_folder
            .map_or_else(|| whole.to_owned(), posix_basename),
        _ => whole.to_owned(),
    })
}

/// The container phase: replaces `${containerEnv:NAME[:default]}` with the container's environment
/// (unset and no default: empty); every other variable is left as written. The engine applies this
/// once the container exists, to `remoteEnv` and the lifecycle commands, as the reference CLI does.
pub fn substitute_container_env(
    text: &str,
    container_env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, SubstituteError> {
    replace_variables(text, &mut |whole, name, args| match name {
        "containerEnv" => lookup(whole, args, container_env),
        _ => Ok(whole.to_owned()),
    })
}

/// The reference CLI's `${devcontainerId}`: SHA-256 of the JSON of the container's id labels
/// (`devcontainer.local_folder` = the project folder, `devcontainer.config_file` = the
/// devcontainer.json path) with sorted keys, written in base 32 and padded to 52 digits.
pub fn devcontainer_id(labels: &[(&str, &str)]) -> String {
    use sha2::Digest;
    let mut sorted: Vec<_> = labels.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    sorted.dedup_by(|a, b| a.0 == b.0);
    let mut json = String::from("{");
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            json.push(',');
        }
        crate::json::js_quote(k, &mut json);
        json.push(':');
        crate::json::js_quote(v, &mut json);
    }
    json.push('}');
    let hash = sha2::Sha256::digest(json.as_bytes());
    // 256 bits = 1 + 51 × 5: the first digit holds the top bit, then 5 bits a digit.
    const DIGITS: &[u8; 32] = b"0123456789abcdefghijklmnopqrstuv";
    let bit = |i: usize| (hash[i / 8] >> (7 - i % 8)) & 1;
    let mut out = String::with_capacity(52);
    out.push(DIGITS[bit(0) as usize] as char);
    for d in 0..51 {
        let v = (0..5).fold(0usize, |acc, j| acc << 1 | bit(1 + d * 5 + j) as usize);
        out.push(DIGITS[v] as char);
    }
    out
}

/// The id labels of a local workspace, as the reference CLI makes them.
pub fn devcontainer_id_for(project_folder: &str, config_file: &str) -> String {
    devcontainer_id(&[
        ("devcontainer.local_folder", project_folder),
        ("devcontainer.config_file", config_file),
    ])
}

/// Replaces `${devcontainerId}` with `id` (the phase before the container is created).
pub fn substitute_devcontainer_id(text: &str, id: &str) -> String {
    replace_variables::<std::convert::Infallible>(text, &mut |whole, name, _| {
        Ok(if name == "devcontainerId" {
            id.to_owned()
        } else {
            whole.to_owned()
        })
    })
    .unwrap_or_else(|never| match never {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_env_phase_replaces_only_container_env() {
        let env = |n: &str| (n == "PATH").then(|| "/usr/bin".to_owned());
        assert_eq!(
            substitute_container_env(
                "${containerEnv:PATH}:/x ${containerEnv:NOPE} ${containerEnv:NOPE:d} ${localEnv:HOME}",
                &env
            )
            .unwrap(),
            "/usr/bin:/x  d ${localEnv:HOME}"
        );
        assert!(substitute_container_env("${containerEnv}", &env).is_err());
    }

    /// `devcontainerIdForLabels` of variableSubstitution.ts, run with Node.js on the labels below.
    const REFERENCE_ID: &str = "028dkg40spu65a7l1n62elujb4om3r9jq5i4c66rlbh5asas5dhn";

    #[test]
    fn devcontainer_id_matches_the_reference_algorithm() {
        // Computed with the reference CLI's devcontainerIdForLabels for these two labels.
        let id = devcontainer_id_for(
            "/tmp/dcws/project",
            "/tmp/dcws/project/.devcontainer/devcontainer.json",
        );
        assert_eq!(id.len(), 52);
        assert!(id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='v').contains(&c)));
        assert_eq!(id, REFERENCE_ID);
        assert_eq!(
            substitute_devcontainer_id("vol-${devcontainerId}-${other}", "abc"),
            "vol-abc-${other}"
        );
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME" => Some("/home/dev".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    fn sub(text: &str) -> String {
        let vars = Vars {
            local_workspace_folder: "/src/my-app",
            container_workspace_folder: Some("/workspaces/my-app"),
            local_env: &env,
        };
        substitute(text, &vars).unwrap()
    }

    #[test]
    fn workspace_folders_and_basenames() {
        assert_eq!(
            sub("${localWorkspaceFolder}|${localWorkspaceFolderBasename}"),
            "/src/my-app|my-app"
        );
        assert_eq!(
            sub("${containerWorkspaceFolder}/x ${containerWorkspaceFolderBasename}"),
            "/workspaces/my-app/x my-app"
        );
    }

    #[test]
    fn local_env_with_and_without_defaults() {
        assert_eq!(sub("${localEnv:HOME}/.ssh"), "/home/dev/.ssh");
        assert_eq!(sub("a${localEnv:NOPE}b"), "ab");
        assert_eq!(sub("${localEnv:NOPE:fallback}"), "fallback");
        assert_eq!(sub("${localEnv:HOME:fallback}"), "/home/dev");
        // A set-but-empty variable is used as is, not replaced by the default.
        assert_eq!(sub("[${localEnv:EMPTY:fallback}]"), "[]");
        // Like the reference, the default ends at the next colon.
        assert_eq!(sub("${localEnv:NOPE:http://x}"), "http");
        assert_eq!(sub("${env:HOME}"), "/home/dev");
    }

    #[test]
    fn unknown_and_container_phase_variables_are_left_untouched() {
        for text in [
            "${containerEnv:PATH}:/x",
            "${devcontainerId}",
            "${templateOption:imageVariant}",
            "${workspaceFolder}",
            "${}",
            "$HOME ${HOME}",
            "${unclosed",
            "${broken\n}",
        ] {
            assert_eq!(sub(text), text);
        }
    }

    #[test]
    fn container_folder_is_untouched_when_unknown() {
        let vars = Vars {
            local_workspace_folder: "/p",
            container_workspace_folder: None,
            local_env: &env,
        };
        assert_eq!(
            substitute("${containerWorkspaceFolder}", &vars).unwrap(),
            "${containerWorkspaceFolder}"
        );
    }

    #[test]
    fn env_without_a_name_is_an_error() {
        let vars = Vars {
            local_workspace_folder: "/p",
            container_workspace_folder: None,
            local_env: &env,
        };
        assert_eq!(
            substitute("x ${localEnv}", &vars),
            Err(SubstituteError::MissingEnvName("${localEnv}".into()))
        );
    }
}
