//! Mounts: the Docker `--mount` string form (`type=bind,source=..,target=..,readonly`) used by
//! `mounts` and `workspaceMount`.

use std::fmt;

/// The kind of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum MountKind {
    /// A host path.
    Bind,
    /// A named volume, or an anonymous one when there is no source.
    Volume,
    /// A fresh in-memory file system.
    Tmpfs,
}

/// One mount into the container.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    /// Bind, volume or tmpfs.
    pub kind: MountKind,
    /// Host path (bind), volume name (volume; `None` = anonymous), always `None` for tmpfs.
    pub source: Option<String>,
    /// Absolute path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Why a mount is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    /// A field that is neither `key=value` nor a bare flag.
    #[error("field `{0}` is not a key=value pair")]
    BadField(String),
    /// A `type` other than bind, volume or tmpfs.
    #[error("mount type `{0}` is not supported (use bind, volume or tmpfs)")]
    BadType(String),
    /// A `readonly` value that is not a boolean.
    #[error("`readonly` must be true or false, found `{0}`")]
    BadReadOnly(String),
    /// No `type` in the object form.
    #[error("missing `type`")]
    MissingType,
    /// No `target`.
    #[error("missing `target`")]
    MissingTarget,
    /// A relative `target`.
    #[error("target `{0}` is not an absolute path")]
    RelativeTarget(String),
    /// A bind mount without `source`.
    #[error("a bind mount needs a `source`")]
    MissingSource,
    /// A bind mount whose source is a relative path.
    #[error("bind source `{0}` is not an absolute path")]
    RelativeSource(String),
    /// A tmpfs mount with a `source`.
    #[error("a tmpfs mount takes no `source`")]
    TmpfsSource,
}

impl MountKind {
    /// Parses `bind`, `volume` or `tmpfs` (case-insensitive, as Docker does).
    pub fn parse(text: &str) -> Result<Self, MountError> {
        match text.to_ascii_lowercase().as_str() {
            "bind" => Ok(Self::Bind),
            "volume" => Ok(Self::Volume),
            "tmpfs" => Ok(Self::Tmpfs),
            _ => Err(MountError::BadType(text.to_owned())),
        }
    }

    /// The Docker name of the kind.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Volume => "volume",
            Self::Tmpfs => "tmpfs",
        }
    }
}

impl Mount {
    /// Builds a mount and checks it: absolute target, bind mounts need an absolute source,
    /// tmpfs mounts take none.
    pub fn new(
        kind: MountKind,
        source: Option<String>,
        target: String,
        read_only: bool,
    ) -> Result<Self, MountError> {
        if target.is_empty() {
            return Err(MountError::MissingTarget);
        }
        if !target.starts_with('/') {
            return Err(MountError::RelativeTarget(target));
        }
        let source = source.filter(|s| !s.is_empty());
        match (kind, &source) {
            (MountKind::Bind, None) => return Err(MountError::MissingSource),
            (MountKind::Bind, Some(s)) if !s.starts_with('/') => {
                return Err(MountError::RelativeSource(s.clone()))
            }
            (MountKind::Tmpfs, Some(_)) => return Err(MountError::TmpfsSource),
            _ => {}
        }
        Ok(Self {
            kind,
            source,
            target,
            read_only,
        })
    }

    /// Parses the Docker `--mount` string form. Keys: `type` (default `volume`, as in Docker),
    /// `source`/`src`, `target`/`destination`/`dst`, `readonly`/`ro` (bare or `=true|false|1|0`);
    /// `consistency` is accepted and has no effect on Linux. Returns the mount and the names of
    /// other options, which are not supported and were ignored.
    pub fn parse(spec: &str) -> Result<(Self, Vec<String>), MountError> {
        let (mut kind, mut source, mut target, mut read_only) =
            (MountKind::Volume, None, String::new(), false);
        let mut ignored = Vec::new();
        for field in spec.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
                None => (field.to_ascii_lowercase(), None),
            };
            match (key.as_str(), value) {
                ("readonly" | "ro", None) => read_only = true,
                ("readonly" | "ro", Some(v)) => {
                    read_only = match v.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(MountError::BadReadOnly(v.to_owned())),
                    }
                }
                (_, None) => return Err(MountError::BadField(field.to_owned())),
                ("type", Some(v)) => kind = MountKind::parse(v)?,
                ("source" | "src", Some(v)) => source = Some(v.to_owned()),
                ("target" | "destination" | "dst", Some(v)) => target = v.to_owned(),
                ("consistency", Some(_)) => {}
                (_, Some(_)) => ignored.push(key),
            }
        }
        Ok((Self::new(kind, source, target, read_only)?, ignored))
    }
}

impl fmt::Display for Mount {
    /// Formats the mount in the `--mount` string form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "type={}", self.kind.as_str())?;
        if let Some(source) = &self.source {
            write!(f, ",source={source}")?;
        }
        write!(f, ",target={}", self.target)?;
        if self.read_only {
            f.write_str(",readonly")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(kind: MountKind, source: Option<&str>, target: &str, ro: bool) -> Mount {
        Mount {
            kind,
            source: source.map(Into::into),
            target: target.into(),
            read_only: ro,
        }
    }

    #[test]
    fn string_form_with_all_key_spellings() {
        let cases = [
            (
                "source=/a,target=/b,type=bind",
                mount(MountKind::Bind, Some("/a"), "/b", false),
            ),
            (
                "type=bind,src=/a,dst=/b,readonly",
                mount(MountKind::Bind, Some("/a"), "/b", true),
            ),
            (
                "Type=Volume,source=vol,destination=/b,ro=true",
                mount(MountKind::Volume, Some("vol"), "/b", true),
            ),
            (
                "type=volume,target=/var/lib/docker,ro=0",
                mount(MountKind::Volume, None, "/var/lib/docker", false),
            ),
            (
                "type=tmpfs,target=/tmp",
                mount(MountKind::Tmpfs, None, "/tmp", false),
            ),
            // Docker's default type is volume.
            (
                "source=cache,target=/c",
                mount(MountKind::Volume, Some("cache"), "/c", false),
            ),
            (
                "source=/a,target=/b,type=bind,consistency=cached",
                mount(MountKind::Bind, Some("/a"), "/b", false),
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(Mount::parse(spec), Ok((want, vec![])), "{spec}");
        }
    }

    #[test]
    fn unsupported_options_are_returned_not_dropped() {
        let (m, ignored) =
            Mount::parse("type=bind,source=/a,target=/b,bind-propagation=rshared").unwrap();
        assert_eq!(m, mount(MountKind::Bind, Some("/a"), "/b", false));
        assert_eq!(ignored, vec!["bind-propagation".to_owned()]);
    }

    #[test]
    fn invalid_mounts_are_rejected() {
        let cases = [
            ("type=bind,source=/a", MountError::MissingTarget),
            ("type=bind,target=/b", MountError::MissingSource),
            (
                "type=bind,source=rel,target=/b",
                MountError::RelativeSource("rel".into()),
            ),
            (
                "type=volume,target=b",
                MountError::RelativeTarget("b".into()),
            ),
            ("type=tmpfs,source=x,target=/t", MountError::TmpfsSource),
            ("type=npipe,target=/t", MountError::BadType("npipe".into())),
            (
                "target=/t,readonly=maybe",
                MountError::BadReadOnly("maybe".into()),
            ),
            ("target=/t,oops", MountError::BadField("oops".into())),
        ];
        for (spec, want) in cases {
            assert_eq!(Mount::parse(spec), Err(want), "{spec}");
        }
    }

    #[test]
    fn display_round_trips() {
        for m in [
            mount(MountKind::Bind, Some("/a b"), "/b", true),
            mount(MountKind::Volume, None, "/v", false),
            mount(MountKind::Tmpfs, None, "/t", false),
        ] {
            assert_eq!(Mount::parse(&m.to_string()), Ok((m, vec![])));
        }
    }
}
