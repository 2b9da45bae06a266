//! Building a Debian base image with mmdebstrap.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::error::ImageError;
use crate::import::DEFAULT_PATH;
use crate::name::parse_name;
use crate::spec::ImageConfig;
use crate::store::{ImageInfo, ImageStore};

/// mmdebstrap variants (see mmdebstrap(1)).
const VARIANTS: &[&str] = &[
    "extract",
    "custom",
    "essential",
    "apt",
    "required",
    "minbase",
    "buildd",
    "important",
    "debootstrap",
    "-",
    "standard",
];

/// What [`ImageStore::bootstrap_debian`] builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapOptions {
    /// Debian suite or codename, e.g. `bookworm` (the default), `trixie`, `stable`.
    pub suite: String,
    /// mmdebstrap variant; `minbase` by default.
    pub variant: String,
    /// Extra packages (`--include`).
    pub include: Vec<String>,
    /// Mirror URL; mmdebstrap's default (from the host's apt sources) when `None`.
    pub mirror: Option<String>,
    /// Image config; by default a Debian-like one (`PATH`, `/bin/bash`).
    pub config: Option<ImageConfig>,
    /// The mmdebstrap program to run (name looked up in `PATH`, or a path).
    pub program: PathBuf,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions {
            suite: "bookworm".to_string(),
            variant: "minbase".to_string(),
            include: Vec::new(),
            mirror: None,
            config: None,
            program: PathBuf::from("mmdebstrap"),
        }
    }
}

impl BootstrapOptions {
    /// The mmdebstrap arguments, output file last. Refuses values that could be taken for
    /// options.
    fn args(&self, output: &std::path::Path) -> Result<Vec<String>, ImageError> {
        let invalid = |reason: String| ImageError::InvalidOption {
            option: "bootstrap option",
            reason,
        };
        let word = |s: &str| {
            !s.is_empty()
                && !s.starts_with('-')
                && s.chars().all(|c| {
                    c.is_ascii_alphanumeric()
                        || matches!(c, '.' | '+' | '-' | ':' | '=' | '~' | '_')
                })
        };
        if !word(&self.suite) {
            return Err(invalid(format!("invalid suite `{}`", self.suite)));
        }
        if !VARIANTS.contains(&self.variant.as_str()) {
            return Err(invalid(format!(
                "invalid variant `{}` (one of {})",
                self.variant,
                VARIANTS.join(", ")
            )));
        }
        if let Some(bad) = self.include.iter().find(|p| !word(p)) {
            return Err(invalid(format!("invalid package name `{bad}`")));
        }
        let mut args = vec![format!("--variant={}", self.variant)];
        if !self.include.is_empty() {
            args.push(format!("--include={}", self.include.join(",")));
        }
        args.push(self.suite.clone());
        args.push(output.to_string_lossy().into_owned());
        if let Some(mirror) = &self.mirror {
            if mirror.starts_with('-') || mirror.chars().any(char::is_whitespace) {
                return Err(invalid(format!("invalid mirror `{mirror}`")));
            }
            args.push(mirror.clone());
        }
        Ok(args)
    }
}

impl ImageStore {
    /// Builds a Debian root filesystem with mmdebstrap and imports it as `name`.
    ///
    /// Each line mmdebstrap prints (stdout and stderr) is passed to `progress` as it comes.
    /// Needs root and network access to the mirror; takes tens of seconds.
    pub fn bootstrap_debian(
        &self,
        name: &str,
        opts: &BootstrapOptions,
        progress: &mut dyn FnMut(&str),
    ) -> Result<ImageInfo, ImageError> {
        parse_name(name)?;
        let tool = opts.program.display().to_string();
        let output = self.tmp_path("bootstrap").with_extension("tar");
        let _cleanup = RemoveOnDrop(output.clone());
        let args = opts.args(&output)?;

        let (read_end, write_end) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
            .map_err(|e| ImageError::io("create pipe for", &opts.program)(e.into()))?;
        let write_end2 = write_end
            .try_clone()
            .map_err(ImageError::io("create pipe for", &opts.program))?;
        let mut cmd = Command::new(&opts.program);
        cmd.args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::from(write_end2));
        progress(&format!("running {tool} {}", args.join(" ")));
        let spawned = cmd.spawn();
        // Drop our copies of the write end so reading ends when the tool exits.
        drop(cmd);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ImageError::ToolMissing {
                    tool,
                    package: "mmdebstrap".to_string(),
                })
            }
            Err(e) => return Err(ImageError::io("run", &opts.program)(e)),
        };

        let mut last_lines: VecDeque<String> = VecDeque::new();
        let mut reader = BufReader::new(File::from(read_end));
        let mut buf = Vec::new();
        loop {
            buf.clear();
            // Progress bars redraw with '\r'; treat it as a line end too.
            let n = read_line_cr(&mut reader, &mut buf)
                .map_err(ImageError::io("read output of", &opts.program))?;
            if n == 0 {
                break;
            }
            let line = String::from_utf8_lossy(&buf);
            let line = line.trim_end();
            if !line.is_empty() {
                progress(line);
                if last_lines.len() == 20 {
                    last_lines.pop_front();
                }
                last_lines.push_back(line.to_string());
            }
        }
        let status = child
            .wait()
            .map_err(ImageError::io("wait for", &opts.program))?;
        if !status.success() {
            return Err(ImageError::ToolFailed {
                tool,
                status: status.to_string(),
                last_line: last_lines
                    .back()
                    .cloned()
                    .unwrap_or_else(|| "no output".to_string()),
            });
        }
        progress(&format!("importing root filesystem as {name}"));
        let config = opts.config.clone().unwrap_or_else(|| ImageConfig {
            env: vec![DEFAULT_PATH.to_string()],
            cmd: vec!["/bin/bash".to_string()],
            ..ImageConfig::default()
        });
        self.import_rootfs(&output, name, Some(config))
    }
}

/// Reads up to and including the next `\n` or `\r`.
fn read_line_cr(reader: &mut impl BufRead, out: &mut Vec<u8>) -> io::Result<usize> {
    let mut total = 0;
    loop {
        let available = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(total);
        }
        if let Some(i) = available.iter().position(|b| *b == b'\n' || *b == b'\r') {
            out.extend_from_slice(&available[..=i]);
            reader.consume(i + 1);
            return Ok(total + i + 1);
        }
        let n = available.len();
        out.extend_from_slice(available);
        reader.consume(n);
        total += n;
    }
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_follow_the_options() {
        let opts = BootstrapOptions {
            include: vec!["git".into(), "ca-certificates".into()],
            ..BootstrapOptions::default()
        };
        let args = opts.args(std::path::Path::new("/tmp/out.tar")).unwrap();
        assert_eq!(
            args,
            vec![
                "--variant=minbase",
                "--include=git,ca-certificates",
                "bookworm",
                "/tmp/out.tar"
            ]
        );
    }

    #[test]
    fn option_like_values_are_refused() {
        for opts in [
            BootstrapOptions {
                suite: "--hook-dir=/x".into(),
                ..Default::default()
            },
            BootstrapOptions {
                variant: "bogus".into(),
                ..Default::default()
            },
            BootstrapOptions {
                include: vec!["--customize-hook=rm -rf /".into()],
                ..Default::default()
            },
        ] {
            assert!(
                opts.args(std::path::Path::new("/o.tar")).is_err(),
                "{opts:?}"
            );
        }
    }

    #[test]
    fn cr_and_lf_both_end_lines() {
        let mut r = io::Cursor::new(b"a\rb\nc".to_vec());
        let mut lines = Vec::new();
        loop {
            let mut buf = Vec::new();
            if read_line_cr(&mut r, &mut buf).unwrap() == 0 {
                break;
            }
            lines.push(String::from_utf8(buf).unwrap());
        }
        assert_eq!(lines, vec!["a\r", "b\n", "c"]);
    }
}
