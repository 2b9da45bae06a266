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
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        // Like the reference's /\$\{(.*?)\}/: the name runs to the first `}` on the same line.
        match after.find(['}', '\n', '\r', '\u{2028}', '\u{2029}']) {
            Some(end) if after[end..].starts_with('}') => {
                let whole = &rest[start..start + 2 + end + 1];
                out.push_str(&resolve(whole, &after[..end], vars)?);
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

fn resolve(whole: &str, inner: &str, vars: &Vars<'_>) -> Result<String, SubstituteError> {
    let mut parts = inner.split(':');
    let name = parts.next().unwrap_or_default();
    let args: Vec<&str> = parts.collect();
    let basename = |p: &str| {
        p.trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_owned()
    };
    Ok(match name {
        "localEnv" | "env" => match args.first() {
            None => return Err(SubstituteError::MissingEnvName(whole.to_owned())),
            Some(var) => (vars.local_env)(var)
                .unwrap_or_else(|| args.get(1).copied().unwrap_or_default().to_owned()),
        },
        "localWorkspaceFolder" => vars.local_workspace_folder.to_owned(),
        "localWorkspaceFolderBasename" => basename(vars.local_workspace_folder),
        "containerWorkspaceFolder" => vars
            .container_workspace_folder
            .map_or_else(|| whole.to_owned(), str::to_owned),
        "containerWorkspaceFolderBasename" => vars
            .container_workspace_folder
            .map_or_else(|| whole.to_owned(), basename),
        _ => whole.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
