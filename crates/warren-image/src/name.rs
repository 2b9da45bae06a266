//! Image names: `[a-z0-9][a-z0-9._/-]*` with an optional `:tag` (default `latest`).

use crate::error::ImageError;

/// The longest accepted name (repository part), in bytes.
const MAX_NAME: usize = 255;
/// The longest accepted tag, as in the OCI distribution spec.
const MAX_TAG: usize = 128;

/// A validated image name split into repository and tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageName {
    pub repo: String,
    pub tag: String,
}

impl ImageName {
    /// The canonical `repo:tag` form used as the key in refs.json.
    pub fn canonical(&self) -> String {
        format!("{}:{}", self.repo, self.tag)
    }
}

/// Normalizes a user-supplied image name to `repo:tag` (adding `:latest` when no tag is given).
///
/// Returns [`ImageError::InvalidName`] for names outside `[a-z0-9][a-z0-9._/-]*[:tag]`.
pub fn normalize_name(name: &str) -> Result<String, ImageError> {
    parse_name(name).map(|n| n.canonical())
}

pub(crate) fn parse_name(name: &str) -> Result<ImageName, ImageError> {
    let invalid = |reason: &str| ImageError::InvalidName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let (repo, tag) = match name.rsplit_once(':') {
        Some((repo, tag)) => (repo, Some(tag)),
        None => (name, None),
    };
    if repo.is_empty() {
        return Err(invalid("the name is empty"));
    }
    if repo.len() > MAX_NAME {
        return Err(invalid("the name is longer than 255 characters"));
    }
    let mut chars = repo.chars();
    let first = chars.next().unwrap_or(' ');
    if !(first.is_ascii_lowercase() || first.is_ascii_digit()) {
        return Err(invalid("it must start with a lowercase letter or a digit"));
    }
    if let Some(bad) = repo.chars().find(|c| {
        !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '/' | '-'))
    }) {
        return Err(invalid(&format!(
            "character `{bad}` is not allowed (use lowercase letters, digits and `._/-`)"
        )));
    }
    let tag = match tag {
        None => "latest".to_string(),
        Some("") => return Err(invalid("the tag after `:` is empty")),
        Some(tag) => {
            if tag.len() > MAX_TAG {
                return Err(invalid("the tag is longer than 128 characters"));
            }
            let first = tag.chars().next().unwrap_or(' ');
            if !(first.is_ascii_alphanumeric() || first == '_') {
                return Err(invalid("the tag must start with a letter, digit or `_`"));
            }
            if let Some(bad) = tag
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
            {
                return Err(invalid(&format!(
                    "character `{bad}` is not allowed in a tag"
                )));
            }
            tag.to_string()
        }
    };
    Ok(ImageName {
        repo: repo.to_string(),
        tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_tag_is_latest_and_explicit_tags_are_kept() {
        assert_eq!(normalize_name("hello").unwrap(), "hello:latest");
        assert_eq!(
            normalize_name("debian:bookworm").unwrap(),
            "debian:bookworm"
        );
        assert_eq!(
            normalize_name("ghcr.io/acme/dev-box_1:v1.2-rc_3").unwrap(),
            "ghcr.io/acme/dev-box_1:v1.2-rc_3"
        );
        assert_eq!(normalize_name("0day").unwrap(), "0day:latest");
    }

    #[test]
    fn invalid_names_are_refused_with_a_reason() {
        for bad in [
            "",
            ":tag",
            "Debian",
            "-x",
            ".hidden",
            "/abs",
            "a b",
            "deb:",
            "deb:-x",
            "deb:a/b",
            "ubuntu@sha256",
            "héllo",
        ] {
            let err = normalize_name(bad).unwrap_err();
            assert!(
                matches!(err, ImageError::InvalidName { .. }),
                "{bad:?} gave {err:?}"
            );
            assert!(err.hint().is_some());
            assert!(!err.to_string().contains('\n'));
        }
        let long = "a".repeat(256);
        assert!(normalize_name(&long).is_err());
        assert!(normalize_name(&"a".repeat(255)).is_ok());
    }
}
