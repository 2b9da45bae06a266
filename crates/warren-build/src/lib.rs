#![forbid(unsafe_code)]
//! Warren's own Dockerfile builder: no Docker engine, no BuildKit.
//!
//! [`build`] parses a Dockerfile ([`dockerfile`]), resolves its FROM images in Warren's image
//! store, and runs its steps:
//!
//! - RUN in a transient build sandbox driven through the [`Runtime`] trait ([`sandbox`]); the
//!   sandbox's overlay upper directory becomes the step's layer (whiteouts included).
//! - COPY and ADD on the host, into a staging directory that becomes the layer ([`copy`]).
//! - ENV, ARG, WORKDIR, USER, LABEL, EXPOSE, ENTRYPOINT, CMD and SHELL change the config.
//!
//! Every layer step has a cache key made like BuildKit's: the parent step's key, the
//! instruction after expansion, the build arguments in scope, and for COPY/ADD a digest of the
//! sources' names, modes and contents. Keys map to the resulting [`ImageState`] in the image
//! store, so an unchanged rebuild starts no sandbox at all.
//!
//! The tag moves only when the whole build succeeded.

mod confined;
pub mod copy;
pub mod dockerfile;
pub mod ignore;
mod sandbox;
pub mod view;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use warren_image::{History, ImageError, ImageState, ImageStore};
pub use warren_runtime::Network;
use warren_runtime::Runtime;

use crate::copy::{Item, Source, Stage};
use crate::dockerfile::{key_values, lex, scope_lookup, Args, Command, Instruction, Step};
use crate::ignore::Ignore;
use crate::sandbox::{RunOutcome, RunSpec};
use crate::view::{components, LayerView};

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// The Dockerfile's text.
    pub dockerfile: String,
    /// Where it came from, for messages (`Dockerfile:12: ...`).
    pub dockerfile_path: PathBuf,
    /// The build context directory (COPY and ADD sources; `.dockerignore` applies).
    pub context_dir: PathBuf,
    /// `--build-arg` / devcontainer `build.args`.
    pub build_args: BTreeMap<String, String>,
    /// The stage to build (`build.target`); the last one when unset.
    pub target: Option<String>,
    /// The name the image gets (`name[:tag]`).
    pub tag: String,
    /// The network of RUN steps: [`Network::Isolated`] unless the caller trusts the build.
    pub network: Network,
    /// Ignore the layer cache (results are still stored for later builds).
    pub no_cache: bool,
    /// Labels added to the final image.
    pub labels: BTreeMap<String, String>,
    /// ADD fetches URLs from public addresses only (builds of a server's users: never the
    /// server's loopback services, its network's private hosts or cloud metadata).
    pub public_fetches_only: bool,
}

/// A finished build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    /// Canonical `name:tag`.
    pub name: String,
    /// Manifest digest.
    pub digest: String,
    /// Layer steps (RUN, COPY, ADD, WORKDIR that created a directory) of the stages built.
    pub layer_steps: usize,
    /// Of those, how many came from the cache.
    pub cached_steps: usize,
    /// Build sandboxes started (0 for a fully cached build).
    pub sandboxes_started: usize,
}

/// Why a build failed. Each carries a one-line message; [`BuildError::hint`] says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile is wrong at a line (syntax, unsupported instruction, bad argument,
    /// missing COPY source...).
    #[error("{file}:{line}: {message}")]
    Dockerfile {
        /// Dockerfile name.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
        /// How to fix it.
        hint: Option<String>,
    },
    /// A RUN step exited non-zero; its output is in the build log.
    #[error("{file}:{line}: `{command}` failed with exit code {code}")]
    RunFailed {
        /// Dockerfile name.
        file: String,
        /// 1-based line.
        line: usize,
        /// The command (shortened).
        command: String,
        /// Its exit code.
        code: i32,
    },
    /// A FROM or `--from` image is not in the store.
    #[error("{file}:{line}: image `{image}` is not in Warren's image store")]
    MissingImage {
        /// Dockerfile name.
        file: String,
        /// 1-based line.
        line: usize,
        /// The image.
        image: String,
    },
    /// The image store failed.
    #[error("{0}")]
    Image(#[from] ImageError),
    /// Something on the host failed (sandbox, files).
    #[error("{0}")]
    Host(String),
}

impl BuildError {
    /// A suggestion for the user.
    pub fn hint(&self) -> Option<String> {
        match self {
            BuildError::Dockerfile { hint, .. } => hint.clone(),
            BuildError::RunFailed { .. } => Some(
                "the command's output is above; the previous image of this tag is unchanged"
                    .into(),
            ),
            BuildError::MissingImage { image, .. } => Some(format!(
                "Warren does not pull from registries yet: import it with `warren image import PATH {image}`, \
                 or for Debian build it with `warren image bootstrap {image}`"
            )),
            BuildError::Image(e) => e.hint(),
            BuildError::Host(_) => None,
        }
    }
}

/// One built stage: its state, its last cache key and its filesystem.
struct Built {
    state: ImageState,
    key: String,
}

struct Ctx<'a> {
    images: &'a ImageStore,
    rt: &'a dyn Runtime,
    work: &'a Path,
    req: &'a BuildRequest,
    file: String,
    escape: char,
    context: PathBuf,
    /// The context directory, held open: COPY and ADD read it only through this.
    context_root: confined::Root,
    ignore: Ignore,
    stats: BuiltImage,
    used_args: BTreeSet<String>,
    log: &'a mut (dyn Write + Send),
}

/// The largest `.dockerignore` read (1 MiB).
pub const MAX_DOCKERIGNORE_BYTES: u64 = 1 << 20;

/// The largest file ADD fetches from a URL (4 GiB); larger bodies are refused.
pub const MAX_ADD_URL_BYTES: u64 = 4 << 30;

/// The longest one ADD URL fetch may take, connecting included.
const ADD_URL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// The longest an ADD URL fetch may wait for the next bytes of the body.
const ADD_URL_STALL: std::time::Duration = std::time::Duration::from_secs(120);

fn hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// This machine's architecture as OCI names it.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}

fn shorten(s: &str) -> String {
    let one_line = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 80 {
        format!("{}...", one_line.chars().take(77).collect::<String>())
    } else {
        one_line
    }
}

/// Builds `req` into the image store, running RUN steps as sandboxes of `runtime` (whose
/// workspace root must be reserved for builds) and writing progress and command output to
/// `log`. `work` holds the builder's own files (sandbox locks).
pub fn build(
    images: &ImageStore,
    runtime: &dyn Runtime,
    work: &Path,
    req: &BuildRequest,
    log: &mut (dyn Write + Send),
) -> Result<BuiltImage, BuildError> {
    let file = req
        .dockerfile_path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "Dockerfile".into());
    let df = dockerfile::parse(&req.dockerfile).map_err(|e| BuildError::Dockerfile {
        file: file.clone(),
        line: e.line,
        message: e.message,
        hint: e.hint,
    })?;
    for n in &df.notes {
        let _ = writeln!(log, "note: {file}: {n}");
    }
    warren_image::normalize_name(&req.tag)?;
    let context = fs::canonicalize(&req.context_dir).map_err(|e| {
        BuildError::Host(format!("build context {}: {e}", req.context_dir.display()))
    })?;
    let context_root = confined::Root::open(&context)
        .map_err(|e| BuildError::Host(format!("build context {}: {e}", context.display())))?;
    // Read without following a symlink and bounded: the context's owner controls it.
    let ignore = match context_root.read_top_file(".dockerignore", MAX_DOCKERIGNORE_BYTES) {
        Ok(Some(t)) => Ignore::parse(&t),
        Ok(None) => Ignore::default(),
        Err(e) => {
            return Err(BuildError::Host(format!(
                "build context {}: {e}",
                context.display()
            )))
        }
    };
    fs::create_dir_all(work)
        .map_err(|e| BuildError::Host(format!("create {}: {e}", work.display())))?;
    let _hold = images.hold()?;
    sandbox::clean_stale(runtime, work);
    sandbox::clean_stale_dirs(work);
    let mut ctx = Ctx {
        images,
        rt: runtime,
        work,
        req,
        file,
        escape: df.escape,
        context,
        context_root,
        ignore,
        stats: BuiltImage {
            name: String::new(),
            digest: String::new(),
            layer_steps: 0,
            cached_steps: 0,
            sandboxes_started: 0,
        },
        used_args: BTreeSet::new(),
        log,
    };

    // Global ARGs (before the first FROM), then stages. BuildKit's platform arguments are
    // predefined there (this machine's platform: Warren builds for where it runs).
    let arch = host_arch();
    let mut global_args: BTreeMap<String, String> = ["TARGET", "BUILD"]
        .iter()
        .flat_map(|p| {
            [
                (format!("{p}PLATFORM"), format!("linux/{arch}")),
                (format!("{p}OS"), "linux".to_string()),
                (format!("{p}ARCH"), arch.to_string()),
            ]
        })
        .collect();
    let mut stages: Vec<(Option<String>, Vec<&Step>)> = Vec::new();
    for step in &df.steps {
        match &step.instruction {
            Instruction::From { alias, .. } => stages.push((alias.clone(), vec![step])),
            Instruction::Arg(a) if stages.is_empty() => {
                for (name, value) in ctx.arg_decls(step, a, &global_args)? {
                    if let Some(v) = value {
                        global_args.insert(name, v);
                    }
                }
            }
            _ => stages
                .last_mut()
                .expect("parse checks FROM comes first")
                .1
                .push(step),
        }
    }
    let target = match &req.target {
        None => stages.len() - 1,
        Some(t) => stages
            .iter()
            .position(|(a, _)| a.as_deref() == Some(t.to_ascii_lowercase().as_str()))
            .ok_or_else(|| BuildError::Dockerfile {
                file: ctx.file.clone(),
                line: 1,
                message: format!("target stage `{t}` is not in the Dockerfile"),
                hint: Some(format!(
                    "stages named with `FROM ... AS name`: {}",
                    stages
                        .iter()
                        .filter_map(|(a, _)| a.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            })?,
    };
    // Only the stages the target needs.
    let names: Vec<Option<String>> = stages.iter().map(|(a, _)| a.clone()).collect();
    let stage_ref = |r: &str| -> Option<usize> {
        let r = r.to_ascii_lowercase();
        names
            .iter()
            .position(|a| a.as_deref() == Some(r.as_str()))
            .or_else(|| r.parse::<usize>().ok().filter(|i| *i < names.len()))
    };
    let mut needed = vec![false; stages.len()];
    needed[target] = true;
    for i in (0..=target).rev() {
        if !needed[i] {
            continue;
        }
        for step in &stages[i].1 {
            let dep = match &step.instruction {
                Instruction::From { image, .. } => stage_ref(image),
                Instruction::Copy { from: Some(f), .. } => stage_ref(f),
                _ => None,
            };
            if let Some(d) = dep.filter(|d| *d < i) {
                needed[d] = true;
            }
        }
    }

    let mut built: Vec<Option<Built>> = Vec::new();
    for (i, (_, steps)) in stages.iter().enumerate().take(target + 1) {
        if !needed[i] {
            built.push(None);
            continue;
        }
        let b = ctx.build_stage(i, steps, &global_args, &built, &stage_ref)?;
        built.push(Some(b));
    }
    let mut final_state = built
        .pop()
        .flatten()
        .expect("the target stage was built")
        .state;
    for (k, v) in &req.labels {
        final_state.config.labels.insert(k.clone(), v.clone());
    }
    for a in req.build_args.keys() {
        if !ctx.used_args.contains(a) && !global_args.contains_key(a) {
            let _ = writeln!(
                ctx.log,
                "warning: build argument `{a}` was not consumed by any ARG"
            );
        }
    }
    let info = images.commit_state(&req.tag, &final_state)?;
    let _ = writeln!(ctx.log, "Tagged {} ({})", info.name, info.digest);
    ctx.stats.name = info.name;
    ctx.stats.digest = info.digest;
    Ok(ctx.stats)
}

impl Ctx<'_> {
    fn err(&self, step: &Step, message: impl Into<String>, hint: Option<&str>) -> BuildError {
        BuildError::Dockerfile {
            file: self.file.clone(),
            line: step.line,
            message: message.into(),
            hint: hint.map(str::to_string),
        }
    }

    /// `ARG a b=c`: names and their values (build argument, else default).
    fn arg_decls(
        &mut self,
        step: &Step,
        text: &str,
        scope: &BTreeMap<String, String>,
    ) -> Result<Vec<(String, Option<String>)>, BuildError> {
        let lookup = scope_lookup(&[], scope);
        let words = lex(text, self.escape, &lookup, true)
            .map_err(|e| self.err(step, format!("ARG: {e}"), None))?;
        let mut out = Vec::new();
        for w in words {
            let (name, default) = match w.split_once('=') {
                Some((n, d)) => (n.to_string(), Some(d.to_string())),
                None => (w.clone(), None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(self.err(
                    step,
                    format!("ARG: `{name}` is not a valid name"),
                    Some("names are letters, digits and `_`"),
                ));
            }
            let value = match self.req.build_args.get(&name) {
                Some(v) => {
                    self.used_args.insert(name.clone());
                    Some(v.clone())
                }
                None => default,
            };
            out.push((name, value));
        }
        Ok(out)
    }

    fn build_stage(
        &mut self,
        index: usize,
        steps: &[&Step],
        global_args: &BTreeMap<String, String>,
        built: &[Option<Built>],
        stage_ref: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<Built, BuildError> {
        let from = steps[0];
        let Instruction::From {
            image, platform, ..
        } = &from.instruction
        else {
            unreachable!("stages start with FROM")
        };
        let glookup = scope_lookup(&[], global_args);
        let expand_one = |s: &str, lookup: &dyn Fn(&str) -> Option<String>| {
            lex(s, self.escape, lookup, false).map(|v| v.concat())
        };
        let image = expand_one(image, &glookup).map_err(|e| self.err(from, e, None))?;
        if let Some(p) = platform {
            let p = expand_one(p, &glookup).map_err(|e| self.err(from, e, None))?;
            let arch = host_arch();
            if p != format!("linux/{arch}") {
                return Err(self.err(
                    from,
                    format!("platform `{p}` is not this machine's (linux/{arch})"),
                    Some("Warren builds for the machine it runs on; remove --platform or use this machine's"),
                ));
            }
        }
        let (mut state, mut key) = match stage_ref(&image).filter(|i| *i < index) {
            Some(i) => {
                let b = built[i].as_ref().expect("needed stages are built");
                (b.state.clone(), b.key.clone())
            }
            None if image == "scratch" => (
                ImageState {
                    layers: vec![],
                    config: Default::default(),
                    history: vec![],
                    architecture: host_arch().into(),
                },
                hash(&["scratch"]),
            ),
            None => {
                let (state, digest) = self.image(from, &image)?;
                (state, hash(&["from", &digest]))
            }
        };
        let mut args: BTreeMap<String, String> = BTreeMap::new();
        let mut cmd_set_here = false;
        let total = steps.len();
        for (n, step) in steps.iter().enumerate() {
            let header = format!("[stage {index} {}/{total}] {}", n + 1, shorten(&step.text));
            self.progress(&header);
            let env_now = state.config.env.clone();
            let args_now = args.clone();
            let lookup = scope_lookup(&env_now, &args_now);
            let expand = |s: &str| -> Result<String, BuildError> {
                lex(s, self.escape, &lookup, false)
                    .map(|v| v.concat())
                    .map_err(|e| self.err(step, e, None))
            };
            let mut config_step: Option<String> = None;
            match &step.instruction {
                Instruction::From { .. } => {}
                Instruction::Arg(text) => {
                    let decls = self.arg_decls(step, text, &args)?;
                    let mut desc = String::from("ARG");
                    for (name, value) in decls {
                        let value = value.or_else(|| global_args.get(&name).cloned());
                        desc.push_str(&format!(" {name}={}", value.clone().unwrap_or_default()));
                        if let Some(v) = value {
                            args.insert(name, v);
                        } else {
                            args.remove(&name);
                        }
                    }
                    key = hash(&[&key, &desc]);
                    continue;
                }
                Instruction::Env(text) => {
                    let kv = key_values(text, self.escape, &lookup, true).map_err(|e| {
                        self.err(step, format!("ENV: {e}"), Some("write `ENV KEY=value`"))
                    })?;
                    let mut desc = String::from("ENV");
                    for (k, v) in kv {
                        warren_runtime::spec::set_env(&mut state.config.env, &k, &v);
                        desc.push_str(&format!(" {k}={v}"));
                    }
                    config_step = Some(desc);
                }
                Instruction::Label(text) => {
                    let kv = key_values(text, self.escape, &lookup, false).map_err(|e| {
                        self.err(step, format!("LABEL: {e}"), Some("write `LABEL key=value`"))
                    })?;
                    let mut desc = String::from("LABEL");
                    for (k, v) in kv {
                        desc.push_str(&format!(" {k}={v}"));
                        state.config.labels.insert(k, v);
                    }
                    config_step = Some(desc);
                }
                Instruction::Expose(text) => {
                    let words = lex(text, self.escape, &lookup, true)
                        .map_err(|e| self.err(step, e, None))?;
                    for w in &words {
                        let (port, proto) = w.split_once('/').unwrap_or((w, "tcp"));
                        let ok_port = port
                            .split('-')
                            .all(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
                        if !ok_port || !["tcp", "udp", "sctp"].contains(&proto) {
                            return Err(self.err(
                                step,
                                format!("EXPOSE: `{w}` is not a port"),
                                Some("write `EXPOSE 8080` or `EXPOSE 53/udp`"),
                            ));
                        }
                        state.config.exposed_ports.insert(format!("{port}/{proto}"));
                    }
                    config_step = Some(format!("EXPOSE {}", words.join(" ")));
                }
                Instruction::User(text) => {
                    let u = expand(text)?;
                    config_step = Some(format!("USER {u}"));
                    state.config.user = Some(u).filter(|u| !u.is_empty());
                }
                Instruction::Shell(v) => {
                    state.config.shell = v.clone();
                    config_step = Some(format!("SHELL {v:?}"));
                }
                Instruction::Entrypoint(c) => {
                    state.config.entrypoint = self.argv(&state, c);
                    if !cmd_set_here {
                        state.config.cmd.clear();
                    }
                    config_step = Some(format!("ENTRYPOINT {:?}", state.config.entrypoint));
                }
                Instruction::Cmd(c) => {
                    state.config.cmd = self.argv(&state, c);
                    cmd_set_here = true;
                    config_step = Some(format!("CMD {:?}", state.config.cmd));
                }
                Instruction::Workdir(text) => {
                    let w = expand(text)?;
                    let base = state
                        .config
                        .working_dir
                        .clone()
                        .unwrap_or_else(|| "/".into());
                    let path = if w.starts_with('/') {
                        w
                    } else {
                        format!("{}/{w}", base.trim_end_matches('/'))
                    };
                    let path = format!("/{}", components(&path).join("/"));
                    state.config.working_dir = Some(path.clone());
                    let desc = format!("WORKDIR {path}");
                    let view = self.view(&state)?;
                    let resolved = view
                        .resolve(&path, true)
                        .map_err(|e| self.err(step, e, None))?;
                    if view.lookup(&resolved).is_some() {
                        config_step = Some(desc);
                    } else {
                        // The directory does not exist yet: create it in a layer of its own.
                        key = hash(&[&key, &desc]);
                        let k = key.clone();
                        state = self.layer_step(&k, state, &desc, |ctx, st, view| {
                            let mut stage = Stage::new(st.to_path_buf(), view);
                            stage
                                .ensure_dir(&resolved)
                                .map_err(|e| ctx.err(step, e, None))?;
                            stage.finish();
                            Ok(())
                        })?;
                    }
                }
                Instruction::Run(c) => {
                    let argv = self.argv(&state, c);
                    let extra_env: Vec<String> = args
                        .iter()
                        .filter(|(k, _)| {
                            !state
                                .config
                                .env
                                .iter()
                                .any(|e| e.starts_with(&format!("{k}=")))
                        })
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    let desc = format!("RUN {}", serde_json::to_string(&argv).unwrap_or_default());
                    key = hash(&[&key, &desc, &extra_env.join("\n")]);
                    state = self.run_step(step, &key, state, &desc, argv, extra_env)?;
                }
                Instruction::Copy {
                    add,
                    args: cargs,
                    from,
                    chown,
                    chmod,
                } => {
                    let (new_key, new_state) = self.copy_step(
                        step,
                        &key,
                        state,
                        *add,
                        cargs,
                        from.as_deref(),
                        chown.as_deref(),
                        chmod.as_deref(),
                        &lookup,
                        built,
                        stage_ref,
                        index,
                    )?;
                    key = new_key;
                    state = new_state;
                }
            }
            if let Some(desc) = config_step {
                key = hash(&[&key, &desc]);
                // Config-only steps take the time of the last layer: the same steps on the same
                // cached layers always give the same image digest.
                let created = state
                    .history
                    .iter()
                    .rev()
                    .find_map(|h| h.created.clone())
                    .or_else(warren_image::now_rfc3339);
                state.history.push(History {
                    created,
                    created_by: Some(desc),
                    comment: Some("warren build".into()),
                    empty_layer: true,
                });
            }
        }
        Ok(Built { state, key })
    }

    fn progress(&mut self, line: &str) {
        let _ = writeln!(self.log, "{line}");
        let _ = self.log.flush();
    }

    /// A FROM/`--from` image from the store: its state and manifest digest.
    fn image(&self, step: &Step, name: &str) -> Result<(ImageState, String), BuildError> {
        let image = match self.images.resolve(name) {
            Ok(i) => i,
            Err(ImageError::NotFound { .. }) => {
                return Err(BuildError::MissingImage {
                    file: self.file.clone(),
                    line: step.line,
                    image: name.to_string(),
                })
            }
            Err(ImageError::InvalidName { reason, .. }) => return Err(self.err(
                step,
                format!("invalid image name `{name}`: {reason}"),
                Some(
                    "use `name[:tag]` of an image in `warren image ls`, or an earlier stage's name",
                ),
            )),
            Err(e) => return Err(e.into()),
        };
        let state = self.images.image_state(&image.digest)?;
        Ok((state, image.digest))
    }

    fn view(&self, state: &ImageState) -> Result<LayerView, BuildError> {
        Ok(LayerView::new(self.images.layer_dirs(state)?))
    }

    /// A command's argv: exec form as is, shell form through SHELL (default `/bin/sh -c`).
    fn argv(&self, state: &ImageState, c: &Command) -> Vec<String> {
        match c {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut v = if state.config.shell.is_empty() {
                    vec!["/bin/sh".to_string(), "-c".to_string()]
                } else {
                    state.config.shell.clone()
                };
                v.push(s.clone());
                v
            }
        }
    }

    /// Looks `key` up in the cache, else makes the layer with `make` (which fills a staging
    /// directory on top of the parent's view) and remembers it.
    fn layer_step(
        &mut self,
        key: &str,
        state: ImageState,
        desc: &str,
        make: impl FnOnce(&Self, &Path, &LayerView) -> Result<(), BuildError>,
    ) -> Result<ImageState, BuildError> {
        self.stats.layer_steps += 1;
        if let Some(hit) = self.cached(key) {
            return Ok(hit);
        }
        let view = self.view(&state)?;
        let staging = self.work.join(format!(
            "staging-{}",
            &hash(&[key, &format!("{:?}", std::time::SystemTime::now())])[..16]
        ));
        fs::create_dir_all(&staging)
            .map_err(|e| BuildError::Host(format!("create {}: {e}", staging.display())))?;
        let result = (|| -> Result<ImageState, BuildError> {
            make(self, &staging, &view)?;
            let layer = self.images.layer_from_dir(&staging)?;
            Ok(self.add_layer(state, layer, desc))
        })();
        let _ = fs::remove_dir_all(&staging);
        let new = result?;
        self.images.cache_put(key, &new)?;
        Ok(new)
    }

    fn cached(&mut self, key: &str) -> Option<ImageState> {
        if self.req.no_cache {
            return None;
        }
        let hit = self.images.cache_get(key)?;
        self.stats.cached_steps += 1;
        self.progress("  CACHED");
        Some(hit)
    }

    fn add_layer(
        &self,
        mut state: ImageState,
        layer: Option<warren_image::LayerRef>,
        desc: &str,
    ) -> ImageState {
        let empty = layer.is_none();
        if let Some(l) = layer {
            state.layers.push(l);
        }
        state.history.push(History {
            created: warren_image::now_rfc3339(),
            created_by: Some(desc.to_string()),
            comment: Some("warren build".into()),
            empty_layer: empty,
        });
        state
    }

    fn run_step(
        &mut self,
        step: &Step,
        key: &str,
        state: ImageState,
        desc: &str,
        argv: Vec<String>,
        extra_env: Vec<String>,
    ) -> Result<ImageState, BuildError> {
        self.stats.layer_steps += 1;
        if let Some(hit) = self.cached(key) {
            return Ok(hit);
        }
        let layers = self.images.layer_dirs(&state)?;
        let view = LayerView::new(layers.clone());
        let spec = RunSpec {
            layers,
            env: state.config.env.clone(),
            extra_env,
            argv,
            cwd: state
                .config
                .working_dir
                .clone()
                .unwrap_or_else(|| "/".into()),
            user: state.config.user.clone(),
            network: self.req.network,
            view: &view,
        };
        self.stats.sandboxes_started += 1;
        let images = self.images;
        let outcome = sandbox::run(self.rt, self.work, &spec, &mut *self.log, &|upper| {
            images.layer_from_upper(upper).map_err(|e| e.to_string())
        });
        match outcome.map_err(BuildError::Host)? {
            RunOutcome::Failed(code) => Err(BuildError::RunFailed {
                file: self.file.clone(),
                line: step.line,
                command: shorten(&step.text),
                code,
            }),
            RunOutcome::Done(layer) => {
                let new = self.add_layer(state, layer, desc);
                self.images.cache_put(key, &new)?;
                Ok(new)
            }
        }
    }

    /// COPY and ADD.
    #[allow(clippy::too_many_arguments)]
    fn copy_step(
        &mut self,
        step: &Step,
        key: &str,
        state: ImageState,
        add: bool,
        cargs: &Args,
        from: Option<&str>,
        chown: Option<&str>,
        chmod: Option<&str>,
        lookup: &dyn Fn(&str) -> Option<String>,
        built: &[Option<Built>],
        stage_ref: &dyn Fn(&str) -> Option<usize>,
        index: usize,
    ) -> Result<(String, ImageState), BuildError> {
        let what = if add { "ADD" } else { "COPY" };
        let one = |s: &str| -> Result<String, BuildError> {
            lex(s, self.escape, lookup, false)
                .map(|v| v.concat())
                .map_err(|e| self.err(step, format!("{what}: {e}"), None))
        };
        let mut words = match cargs {
            Args::Words(w) => lex(w, self.escape, lookup, true)
                .map_err(|e| self.err(step, format!("{what}: {e}"), None))?,
            Args::Json(v) => v.iter().map(|w| one(w)).collect::<Result<_, _>>()?,
        };
        let dest_raw = words.pop().unwrap_or_default();
        let srcs = words;
        if srcs.is_empty() || dest_raw.is_empty() {
            return Err(self.err(
                step,
                format!("{what} needs at least one source and a destination"),
                Some("e.g. `COPY src/ /app/`"),
            ));
        }
        let workdir = state
            .config
            .working_dir
            .clone()
            .unwrap_or_else(|| "/".into());
        let dest = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{}/{dest_raw}", workdir.trim_end_matches('/'))
        };
        let dest_is_dir = dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        let dest_view = self.view(&state)?;

        // Where the sources come from.
        let from = from.map(&one).transpose()?;
        let (source_view, source_id) = match &from {
            None => (None, "context".to_string()),
            Some(f) => match stage_ref(f).filter(|i| *i < index) {
                Some(i) => {
                    let b = built[i].as_ref().expect("needed stages are built");
                    (Some(self.view(&b.state)?), format!("stage {}", b.key))
                }
                None => {
                    if stage_ref(f).is_some() {
                        return Err(self.err(
                            step,
                            format!("{what} --from={f} names this stage or a later one"),
                            Some("--from must name an earlier stage"),
                        ));
                    }
                    let (st, digest) = self.image(step, f)?;
                    (Some(self.view(&st)?), format!("image {digest}"))
                }
            },
        };
        let ignore = self.ignore.clone();
        let source = match &source_view {
            None => Source::Context {
                root: self.context_root.clone(),
                ignore: &ignore,
            },
            Some(v) => Source::Layers(v),
        };
        let owner = match chown {
            None => (0, 0),
            Some(c) => {
                let c = one(c)?;
                copy::resolve_owner(&dest_view, &c).map_err(|e| {
                    self.err(
                        step,
                        format!("{what} --chown: {e}"),
                        Some("use numeric ids (`--chown=1000:1000`) or names the image defines"),
                    )
                })?
            }
        };
        let chmod = match chmod {
            None => None,
            Some(m) => Some(
                u32::from_str_radix(m, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| {
                        self.err(
                            step,
                            format!("{what} --chmod=`{m}` is not an octal mode"),
                            Some("e.g. `--chmod=0755`"),
                        )
                    })?,
            ),
        };

        // Expand the sources and digest them for the cache key.
        enum Src {
            Local(Item),
            Url(String, PathBuf),
        }
        let mut items: Vec<Src> = Vec::new();
        let mut digests = Vec::new();
        let downloads = tempfile_dir(self.work)?;
        for src in &srcs {
            if src.starts_with("http://") || src.starts_with("https://") {
                if !add {
                    return Err(self.err(step, "COPY cannot fetch URLs", Some("use ADD for URLs")));
                }
                let file = downloads.path.join(format!("{}", items.len()));
                self.progress(&format!("  fetching {src}"));
                let digest = download(src, &file, self.req.public_fetches_only, MAX_ADD_URL_BYTES).map_err(|e| self.err(step, format!("ADD {src}: {e}"), Some("check the URL; host-local builds have the host's network, server builds none yet")))?;
                digests.push(digest);
                items.push(Src::Url(src.clone(), file));
                continue;
            }
            let found = source
                .expand(src)
                .map_err(|e| self.err(step, format!("{what}: {e}"), None))?;
            if found.is_empty() {
                return Err(self.err(
                    step,
                    format!(
                        "{what}: `{src}` not found in {}",
                        match &from {
                            None => format!("the build context {}", self.context.display()),
                            Some(f) => format!("`{f}`"),
                        }
                    ),
                    Some(if from.is_none() {
                        "source paths are relative to the build context; check the path and .dockerignore"
                    } else {
                        "check the path in that stage or image"
                    }),
                ));
            }
            for item in found {
                digests.push(format!(
                    "{}:{}",
                    item.rel,
                    source.digest(&item).map_err(|e| self.err(
                        step,
                        format!("{what}: {e}"),
                        None
                    ))?
                ));
                items.push(Src::Local(item));
            }
        }
        if items.len() > 1 && !dest_is_dir {
            return Err(self.err(
                step,
                format!(
                    "{what} with more than one source needs a destination directory ending in `/`"
                ),
                Some(&format!("write `{dest_raw}/`")),
            ));
        }
        let desc = format!(
            "{what} from={source_id} chown={}:{} chmod={chmod:?} {} {dest}",
            owner.0,
            owner.1,
            serde_json::to_string(&srcs).unwrap_or_default()
        );
        let new_key = hash(&[key, &desc, &workdir, &digests.join("\n")]);
        let state = self.layer_step(&new_key, state, &desc, |ctx, staging, view| {
            let mut stage = Stage::new(staging.to_path_buf(), view);
            let fail = |e: String| ctx.err(step, format!("{what}: {e}"), None);
            for item in &items {
                match item {
                    Src::Local(item) if item.meta.is_dir() => {
                        let comps = view.resolve(&dest, true).map_err(fail)?;
                        let target = stage.ensure_dir(&comps).map_err(fail)?;
                        stage
                            .copy_item(&source, item, &target, owner, chmod)
                            .map_err(fail)?;
                    }
                    Src::Local(item)
                        if add
                            && source_view.is_none()
                            && source.open(item).is_ok_and(|mut f| copy::is_tar(&mut f)) =>
                    {
                        let comps = view.resolve(&dest, true).map_err(fail)?;
                        let target = stage.ensure_dir(&comps).map_err(fail)?;
                        let f = source.open(item).map_err(fail)?;
                        copy::extract_tar(f, &item.rel, &target).map_err(fail)?;
                    }
                    Src::Local(item) => {
                        let base = Path::new(&item.rel)
                            .file_name()
                            .map(|f| f.to_string_lossy().into_owned())
                            .unwrap_or_default();
                        let comps = file_target(view, &dest, dest_is_dir, &base).map_err(fail)?;
                        let (last, parent) = comps
                            .split_last()
                            .ok_or_else(|| fail("cannot copy a file to /".into()))?;
                        let dir = stage.ensure_dir(parent).map_err(fail)?;
                        stage
                            .copy_item(&source, item, &dir.join(last), owner, chmod)
                            .map_err(fail)?;
                    }
                    Src::Url(url, file) => {
                        let base = url
                            .split(['?', '#'])
                            .next()
                            .and_then(|u| u.rsplit('/').next())
                            .filter(|b| !b.is_empty())
                            .unwrap_or("download")
                            .to_string();
                        let comps = file_target(view, &dest, dest_is_dir, &base).map_err(fail)?;
                        let (last, parent) = comps
                            .split_last()
                            .ok_or_else(|| fail("cannot write a file to /".into()))?;
                        let dir = stage.ensure_dir(parent).map_err(fail)?;
                        let target = dir.join(last);
                        fs::copy(file, &target).map_err(|e| fail(e.to_string()))?;
                        use std::os::unix::fs::PermissionsExt;
                        fs::set_permissions(
                            &target,
                            fs::Permissions::from_mode(chmod.unwrap_or(0o600)),
                        )
                        .map_err(|e| fail(e.to_string()))?;
                        std::os::unix::fs::lchown(&target, Some(owner.0), Some(owner.1))
                            .map_err(|e| fail(e.to_string()))?;
                    }
                }
            }
            stage.finish();
            Ok(())
        })?;
        drop(downloads);
        Ok((new_key, state))
    }
}

/// The image path (resolved) a single file lands at.
fn file_target(
    view: &LayerView,
    dest: &str,
    dest_is_dir: bool,
    base: &str,
) -> Result<Vec<String>, String> {
    let full = view.resolve(dest, true)?;
    let is_dir = dest_is_dir || view.lookup(&full).is_some_and(|(_, m)| m.is_dir());
    if is_dir {
        let mut c = full;
        c.push(base.to_string());
        Ok(c)
    } else {
        let mut c = view.resolve(dest, false)?;
        let last = c.pop().ok_or("the destination is /")?;
        let mut parent = view.resolve(&format!("/{}", c.join("/")), true)?;
        parent.push(last);
        Ok(parent)
    }
}

/// A temporary directory under the builder's work directory, removed when dropped.
struct TempDir {
    path: PathBuf,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn tempfile_dir(work: &Path) -> Result<TempDir, BuildError> {
    let path = work.join(format!(
        "tmp-{}-{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    fs::create_dir_all(&path)
        .map_err(|e| BuildError::Host(format!("create {}: {e}", path.display())))?;
    Ok(TempDir { path })
}

/// Fetches `url` into `dest`, streaming, and returns the body's SHA-256 (hex). Runs on a
/// thread with a runtime of its own, so that callers inside an async runtime's blocking pool
/// are fine. With `public_only`, only from public addresses. Bodies larger than `max` bytes
/// are refused (by their `Content-Length` before anything is written, else once they pass it).
fn download(url: &str, dest: &Path, public_only: bool, max: u64) -> Result<String, String> {
    std::thread::scope(|s| {
        s.spawn(|| -> Result<String, String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let client = warren_image::registry::RegistryClient::new(
                    &warren_image::registry::ClientOptions {
                        public_only,
                        timeout: Some(ADD_URL_TIMEOUT),
                        ..Default::default()
                    },
                )
                .map_err(|e| e.to_string())?;
                client.check_url(url)?;
                let mut resp = client
                    .http()
                    .get(url)
                    .send()
                    .await
                    .map_err(|e| warren_image::registry::error_chain(&e))?;
                if !resp.status().is_success() {
                    return Err(format!("the server answered {}", resp.status()));
                }
                let too_big =
                    || format!("the file is larger than the {} MiB ADD allows", max >> 20);
                if resp.content_length().is_some_and(|n| n > max) {
                    return Err(too_big());
                }
                let mut out = fs::File::create(dest)
                    .map_err(|e| format!("cannot create {}: {e}", dest.display()))?;
                let mut h = Sha256::new();
                let mut total: u64 = 0;
                loop {
                    let chunk = tokio::time::timeout(ADD_URL_STALL, resp.chunk())
                        .await
                        .map_err(|_| {
                            format!("no data for {} s; giving up", ADD_URL_STALL.as_secs())
                        })?
                        .map_err(|e| warren_image::registry::error_chain(&e))?;
                    let Some(chunk) = chunk else { break };
                    total += chunk.len() as u64;
                    if total > max {
                        return Err(too_big());
                    }
                    h.update(&chunk);
                    out.write_all(&chunk)
                        .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
                }
                out.sync_all()
                    .map_err(|e| format!("cannot write {}: {e}", dest.display()))?;
                Ok(hex::encode(h.finalize()))
            })
        })
        .join()
        .unwrap_or_else(|_| Err("the download thread panicked".into()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Serves `head` + `body` once on loopback; returns the URL.
    fn serve_once(head: &'static str, body: Vec<u8>) -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        });
        format!("http://127.0.0.1:{port}/f")
    }

    #[test]
    fn downloads_stream_to_the_file_and_stop_at_the_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("f");
        let url = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\n",
            b"hello".to_vec(),
        );
        let digest = download(&url, &dest, false, 5).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"hello");
        assert_eq!(digest, hex::encode(Sha256::digest(b"hello")));
        // Refused by its Content-Length, before anything is written.
        let url = serve_once(
            "HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n",
            vec![b'x'; 100],
        );
        let e = download(&url, &tmp.path().join("g"), false, 10).unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        // Without a length (read to the end of the connection), once it passes the cap.
        let url = serve_once(
            "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n",
            vec![b'x'; 64 * 1024],
        );
        let e = download(&url, &tmp.path().join("h"), false, 1000).unwrap_err();
        assert!(e.contains("larger than"), "{e}");
        assert!(fs::metadata(tmp.path().join("h")).unwrap().len() <= 1000);
    }
}
