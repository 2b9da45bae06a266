//! Warren's control plane logic: turns user intent (`up`, `stop`, `delete`...) into recorded state
//! transitions and runtime actions, and reconciles recorded state with what actually runs.
//!
//! The engine is embedded in the `warren` CLI today and will sit behind the REST API of `warren server`.
//! It never forks containers itself: the runtime starts a supervisor process per workspace.
#![forbid(unsafe_code)]

pub mod build;
pub mod devprops;
mod error;
mod lifecycle;
mod lock;
pub mod network;
mod reconcile;
mod resolve;
pub mod secrets;
mod wsspec;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use error::EngineError;
pub use lifecycle::{run_on_host as run_initialize_command, LifecycleState};
pub use reconcile::ReconcileReport;
pub use secrets::{SecretFiles, SecretSource};
pub use warren_build::BuiltImage;
pub use warren_runtime::Limits;
pub use wsspec::WsSpec;

use warren_api::{Event, Workspace, WorkspaceName, WorkspaceState};
use warren_devcontainer::LifecycleCommand;
use warren_image::{ImageInfo, ImageStore};
use warren_runtime::{ExecProcess, ExecSession, LinuxRuntime, OciRuntime, Runtime, Stdio};
pub use warren_store::Ownership;
use warren_store::{NewWorkspace, Store, WorkspaceRecord};

/// Where the engine keeps its state and how it runs workspaces.
#[derive(Debug, Clone)]
pub struct Config {
    /// State directory (database, images, workspaces, logs). Default `/var/lib/warren`.
    pub state_dir: PathBuf,
    /// OCI runtime for workspaces.
    pub oci: OciRuntime,
    /// The `warren` binary, re-executed as each workspace's supervisor.
    pub exe: PathBuf,
    /// Whether workspaces with an owner (made through a server) may have what their configuration
    /// asks beyond the default sandbox: added capabilities, privileged mode, unconfined seccomp.
    /// Host-local workspaces always may: their user is root on this host already.
    pub owned_may_have_privileges: bool,
    /// The plan in force of workspaces that have none recorded (host-local ones, and server
    /// workspaces made before network policies existed).
    pub default_egress: warren_runtime::network::EgressPlan,
    /// Warren's network on this host as asked for (unset parts are chosen on the first start).
    pub network: warren_runtime::network::NetRequest,
}

/// Reports progress of long steps to whoever drives the engine (the CLI prints them).
pub trait Progress: Send + Sync {
    /// A step begins ("Starting workspace hello").
    fn step(&self, msg: &str);
    /// Something the user should know (ignored config property...).
    fn warn(&self, msg: &str);
    /// A line of output from a lifecycle command or image build.
    fn output(&self, line: &str);
}

/// A progress sink that drops everything.
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _: &str) {}
    fn warn(&self, _: &str) {}
    fn output(&self, _: &str) {}
}

/// Options of `warren up`.
#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Workspace name; default derived from the project folder's name.
    pub name: Option<String>,
    /// Resource limits for a new workspace.
    pub limits: Limits,
    /// Delete and recreate an existing workspace for this folder.
    pub recreate: bool,
    /// Owner, organization and template of a new workspace (default: host-local). Names and
    /// project folders are looked up among this owner's workspaces.
    pub ownership: Ownership,
    /// Create only: fail with [`EngineError::NameTaken`] if the workspace exists, instead of
    /// starting it.
    pub create_only: bool,
    /// Wait for every lifecycle hook, not only up to `waitFor`.
    pub wait_all: bool,
}

/// Which lifecycle hooks a start runs and how long it waits for them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Hooks {
    /// A user attaches (`up`): postAttachCommand runs.
    pub attach: bool,
    /// Wait for every hook instead of only up to `waitFor`.
    pub wait_all: bool,
}

/// Names a workspace: a host-local one (the embedded CLI's) by name, or any by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WsRef {
    /// A host-local workspace (no owner) by name.
    Local(String),
    /// Any workspace by id.
    Id(String),
}

impl From<&str> for WsRef {
    fn from(name: &str) -> Self {
        WsRef::Local(name.to_string())
    }
}

impl From<&String> for WsRef {
    fn from(name: &String) -> Self {
        WsRef::Local(name.clone())
    }
}

impl std::fmt::Display for WsRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsRef::Local(n) => f.write_str(n),
            WsRef::Id(id) => f.write_str(id),
        }
    }
}

/// The control plane.
#[derive(Clone)]
pub struct Engine {
    cfg: Config,
    store: Store,
    images: ImageStore,
    runtime: Arc<dyn Runtime>,
    /// Where workspaces' secret files come from (the server sets it; none: no secrets).
    secrets: Arc<std::sync::OnceLock<Arc<dyn SecretSource>>>,
}

/// Grace period for a workspace's processes to exit on stop.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| EngineError::Internal(format!("background task: {e}")))?
}

impl Engine {
    /// Opens (creating if needed) the state under `cfg.state_dir`.
    pub async fn open(cfg: Config) -> Result<Engine, EngineError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(EngineError::Privilege);
        }
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| {
            EngineError::Internal(format!("create state dir {}: {e}", cfg.state_dir.display()))
        })?;
        let store = Store::open(&cfg.state_dir.join("warren.db")).await?;
        let images = ImageStore::open(&cfg.state_dir.join("images"))?;
        let root = cfg.state_dir.join("workspaces");
        let net = warren_runtime::network::for_root(&root, &cfg.network)
            .map_err(|e| EngineError::Internal(format!("workspace network: {e}")))?;
        let runtime: Arc<dyn Runtime> =
            Arc::new(LinuxRuntime::new(&root, cfg.oci.clone(), &cfg.exe).with_network(net)?);
        Ok(Engine {
            cfg,
            store,
            images,
            runtime,
            secrets: Default::default(),
        })
    }

    /// The image store.
    pub fn images(&self) -> &ImageStore {
        &self.images
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.cfg.state_dir
    }

    /// The argv that runs this binary's `args` inside a workspace, from its read-only `/.warren`
    /// tools mount (`warren_runtime::tools`): how the SSH gateway starts the SFTP server.
    pub fn tool_command(&self, args: &[&str]) -> Vec<String> {
        warren_runtime::tools::command(&self.cfg.exe, args)
    }

    /// Sets where workspaces' secret files come from (once; later calls are ignored). Every
    /// clone of this engine shares it.
    pub fn set_secret_source(&self, source: Arc<dyn SecretSource>) {
        let _ = self.secrets.set(source);
    }

    /// Writes `value` to `/run/secrets/NAME` in a running workspace (0400, owned by the remote
    /// user), replacing any file of that name, through `warren __put-secret` run as root.
    pub async fn put_secret(
        &self,
        rec: &WorkspaceRecord,
        name: &str,
        value: &[u8],
    ) -> Result<(), EngineError> {
        if !secrets::valid_secret_name(name) {
            return Err(EngineError::Internal(format!(
                "invalid secret file name {name:?}"
            )));
        }
        let argv = self.tool_command(&[secrets::PUT_SECRET, name]);
        secrets::put(self.runtime.clone(), &rec.id, argv, value.to_vec()).await
    }

    /// Writes every secret file of a workspace that just started, before its lifecycle hooks.
    async fn provide_secrets(
        &self,
        rec: &WorkspaceRecord,
        progress: &dyn Progress,
    ) -> Result<(), EngineError> {
        let Some(source) = self.secrets.get() else {
            return Ok(());
        };
        let got = source
            .secrets_for(rec)
            .await
            .map_err(|e| EngineError::Internal(format!("secrets: {e}")))?;
        for w in &got.warnings {
            progress.warn(w);
        }
        for (name, value) in &got.files {
            self.put_secret(rec, name, value).await?;
        }
        Ok(())
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.cfg.state_dir.join("logs").join(format!("{id}.log"))
    }

    fn lock_dir(&self) -> PathBuf {
        self.cfg.state_dir.join("locks")
    }

    /// Takes the workspace's operation lock and re-reads its record under it (another process may have
    /// changed or deleted it while we waited).
    async fn lock(
        &self,
        rec: &WorkspaceRecord,
    ) -> Result<(lock::OpLock, WorkspaceRecord), EngineError> {
        let l = lock::OpLock::acquire(&self.lock_dir(), &rec.id).await?;
        let fresh = self
            .store
            .get(&rec.id)
            .await?
            .ok_or_else(|| EngineError::NotFound(rec.name.to_string()))?;
        Ok((l, fresh))
    }

    /// Finds a workspace.
    pub async fn get(&self, ws: impl Into<WsRef>) -> Result<WorkspaceRecord, EngineError> {
        let ws = ws.into();
        let found = match &ws {
            WsRef::Local(name) => self.store.get_by_name("", name).await?,
            WsRef::Id(id) => self.store.get(id).await?,
        };
        found.ok_or_else(|| EngineError::NotFound(ws.to_string()))
    }

    /// The store (the server reads and writes users, templates, jobs... through it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The host-local workspaces (those of the embedded CLI; server users' workspaces are listed
    /// through the API).
    pub async fn list(&self) -> Result<Vec<Workspace>, EngineError> {
        Ok(self
            .store
            .list()
            .await?
            .into_iter()
            .filter(|r| r.ownership.owner_id.is_empty())
            .map(Workspace::from)
            .collect())
    }

    /// Applies `event` to the workspace's current state (generation-checked), returning the new record.
    async fn apply(
        &self,
        rec: &WorkspaceRecord,
        event: Event,
        msg: Option<&str>,
    ) -> Result<WorkspaceRecord, EngineError> {
        Ok(self
            .store
            .apply(&rec.id, rec.generation, event, msg)
            .await?
            .0)
    }

    /// Brings up the workspace for the project folder `dir`: creates it on first use, starts it if it is
    /// stopped, and runs the devcontainer lifecycle commands. Returns the workspace.
    pub async fn up(
        &self,
        dir: &Path,
        opts: &UpOptions,
        progress: &dyn Progress,
    ) -> Result<WorkspaceRecord, EngineError> {
        let dir = std::fs::canonicalize(dir).map_err(|e| EngineError::ProjectDir {
            path: dir.to_path_buf(),
            error: e.to_string(),
        })?;
        let (read, loaded) = load_config(&dir, &opts.ownership)?;
        resolve::refuse_unsupported(&loaded)?;
        warn_config(&loaded, progress);
        // initializeCommand runs on the host, at every `up`, before anything else. Only for the
        // embedded CLI, whose user owns this host; a server never runs its users' commands on
        // itself (the CLI runs it on the user's machine before uploading instead).
        if let Some(cmd) = &loaded.config.initialize_command {
            if opts.ownership.owner_id.is_empty() {
                progress.step("Running initializeCommand on the host");
                lifecycle::run_on_host(cmd, &dir, progress).await?;
            }
        }
        // An `image` must be there now; a Dockerfile is built only when a workspace is created
        // (starting an existing workspace never waits for, or fails on, a build).
        if build::dockerfile_build(&loaded).is_none() {
            image_of(&loaded)?;
        }
        let dir_s = dir.display().to_string();

        let owner = opts.ownership.owner_id.as_str();
        let existing = match &opts.name {
            Some(n) => self.store.get_by_name(owner, n).await?,
            None => self.store.find_by_project_dir(owner, &dir_s).await?,
        };
        if let Some(rec) = existing {
            if opts.create_only {
                return Err(EngineError::NameTaken {
                    name: rec.name.to_string(),
                    dir: String::new(),
                });
            }
            if rec.project_dir != dir_s {
                return Err(EngineError::NameTaken {
                    name: rec.name.to_string(),
                    dir: rec.project_dir.clone(),
                });
            }
            if opts.recreate {
                progress.step(&format!("Deleting workspace {} to recreate it", rec.name));
                self.delete(WsRef::Id(rec.id.clone()), true).await?;
            } else {
                let spec: WsSpec = rec.spec()?;
                let created = LifecycleState::from_json(&rec.lifecycle_json).created;
                if spec.config_hash != wsspec::hash_config(&loaded)
                    && rec.state == WorkspaceState::Failed
                    && !created
                {
                    // It never finished being created: take the corrected configuration, and say so
                    // (the project folder is writable from inside, so the change may not be the user's).
                    progress.warn(&format!(
                        "{} changed since the failed creation of workspace {}; creating it with the new configuration",
                        loaded.config_path.display(),
                        rec.name
                    ));
                    let image_name = self
                        .image_for(&loaded, &dir, &opts.ownership, progress)
                        .await?;
                    let image = self.ensure_image(&image_name, progress).await?;
                    let spec = self
                        .new_spec(
                            &read,
                            &loaded,
                            &image,
                            spec.limits,
                            &opts.ownership,
                            &dir,
                            progress,
                        )
                        .await?;
                    let json = serde_json::to_string(&spec)
                        .map_err(|e| EngineError::Internal(e.to_string()))?;
                    let rec = self
                        .store
                        .set_spec(&rec.id, rec.generation, &image.name, &json)
                        .await?;
                    return self.start_record(rec, up_hooks(opts), progress).await;
                }
                if spec.config_hash != wsspec::hash_config(&loaded) {
                    progress.warn(&format!(
                        "{} changed since workspace {} was created; run `warren up --recreate` to apply it",
                        loaded.config_path.display(),
                        rec.name
                    ));
                }
                return self.start_record(rec, up_hooks(opts), progress).await;
            }
        }

        let image_name = self
            .image_for(&loaded, &dir, &opts.ownership, progress)
            .await?;
        let image = self.ensure_image(&image_name, progress).await?;
        let name = match &opts.name {
            Some(n) => WorkspaceName::new(n.clone())?,
            None => {
                let base = dir
                    .file_name()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default();
                warren_api::workspace_name_from_dir(&base)
            }
        };
        let spec = self
            .new_spec(
                &read,
                &loaded,
                &image,
                opts.limits.clone(),
                &opts.ownership,
                &dir,
                progress,
            )
            .await?;
        let created = self
            .store
            .create_workspace(NewWorkspace {
                name: name.clone(),
                project_dir: dir_s.clone(),
                config_path: loaded.config_path.display().to_string(),
                image: image.name.clone(),
                spec_json: serde_json::to_string(&spec)
                    .map_err(|e| EngineError::Internal(e.to_string()))?,
                ownership: opts.ownership.clone(),
            })
            .await;
        let rec = match created {
            Ok(rec) => rec,
            // Another `warren up` of the same folder got there first: use its workspace.
            Err(warren_store::StoreError::NameTaken { .. }) => {
                match self.store.get_by_name(owner, name.as_str()).await? {
                    Some(other) if other.project_dir == dir_s => {
                        return self.start_record(other, up_hooks(opts), progress).await
                    }
                    Some(other) => {
                        return Err(EngineError::NameTaken {
                            name: name.to_string(),
                            dir: other.project_dir,
                        })
                    }
                    None => {
                        return Err(EngineError::Internal(
                            "workspace vanished while being created".into(),
                        ))
                    }
                }
            }
            Err(e) => return Err(e.into()),
        };
        progress.step(&format!(
            "Creating workspace {} from image {}",
            rec.name, image.name
        ));
        self.start_record(rec, up_hooks(opts), progress).await
    }

    async fn ensure_image(
        &self,
        name: &str,
        progress: &dyn Progress,
    ) -> Result<warren_image::Image, EngineError> {
        let images = self.images.clone();
        let n = name.to_string();
        match blocking(move || images.resolve(&n).map_err(EngineError::from)).await {
            Err(EngineError::Image(warren_image::ImageError::NotFound { .. }))
                if debian_suite(name).is_some() =>
            {
                let suite = debian_suite(name).unwrap_or("bookworm").to_string();
                progress.step(&format!(
                    "Image {name} is not in the local store: building it from Debian packages with mmdebstrap (first use only)"
                ));
                self.bootstrap(name, &suite, progress).await?;
                let images = self.images.clone();
                let n = name.to_string();
                blocking(move || images.resolve(&n).map_err(EngineError::from)).await
            }
            other => other,
        }
    }

    /// Builds a Debian image `name` from Debian's packages.
    pub async fn bootstrap(
        &self,
        name: &str,
        suite: &str,
        progress: &dyn Progress,
    ) -> Result<ImageInfo, EngineError> {
        let images = self.images.clone();
        let name = name.to_string();
        let opts = warren_image::BootstrapOptions {
            suite: suite.to_string(),
            include: vec!["ca-certificates".into(), "procps".into(), "less".into()],
            ..Default::default()
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let task = tokio::task::spawn_blocking(move || {
            images.bootstrap_debian(&name, &opts, &mut |line| {
                let _ = tx.send(line.to_string());
            })
        });
        while let Some(line) = rx.recv().await {
            progress.output(&line);
        }
        Ok(task
            .await
            .map_err(|e| EngineError::Internal(e.to_string()))??)
    }

    /// Starts a workspace by name (creating its container if needed) and runs postStart.
    pub async fn start(
        &self,
        ws: impl Into<WsRef>,
        progress: &dyn Progress,
    ) -> Result<WorkspaceRecord, EngineError> {
        let rec = self.get(ws).await?;
        self.start_record(rec, Hooks::default(), progress).await
    }

    async fn start_record(
        &self,
        rec: WorkspaceRecord,
        how: Hooks,
        progress: &dyn Progress,
    ) -> Result<WorkspaceRecord, EngineError> {
        let (_lock, rec) = self.lock(&rec).await?;
        self.start_locked(rec, how, progress).await
    }

    /// Records a new workspace for the project folder `dir` in state Pending, without touching the
    /// host or resolving its image: the server answers at once and [`Engine::provision`] does the
    /// rest in a job. Fails if the owner already has a workspace of that name.
    pub async fn create_pending(
        &self,
        dir: &Path,
        opts: &UpOptions,
    ) -> Result<(WorkspaceRecord, Vec<String>), EngineError> {
        let dir = std::fs::canonicalize(dir).map_err(|e| EngineError::ProjectDir {
            path: dir.to_path_buf(),
            error: e.to_string(),
        })?;
        let (_, loaded) = load_config(&dir, &opts.ownership)?;
        resolve::refuse_unsupported(&loaded)?;
        // A Dockerfile's image is built by `provision`; the record names its tag meanwhile.
        let image_name = match build::dockerfile_build(&loaded) {
            Some(_) => build::build_tag(&dir),
            None => image_of(&loaded)?,
        };
        let name = match &opts.name {
            Some(n) => WorkspaceName::new(n.clone())?,
            None => warren_api::workspace_name_from_dir(
                &dir.file_name()
                    .map(|s| s.to_string_lossy().to_string())
                    .unwrap_or_default(),
            ),
        };
        let rec = self
            .store
            .create_workspace(NewWorkspace {
                name: name.clone(),
                project_dir: dir.display().to_string(),
                config_path: loaded.config_path.display().to_string(),
                image: image_name,
                // Resolved by `provision` once the image is there.
                spec_json: String::new(),
                ownership: opts.ownership.clone(),
            })
            .await
            .map_err(|e| match e {
                warren_store::StoreError::NameTaken { .. } => EngineError::NameTaken {
                    name: name.to_string(),
                    dir: String::new(),
                },
                e => e.into(),
            })?;
        let warnings = loaded.warnings.iter().map(|w| w.to_string()).collect();
        Ok((rec, warnings))
    }

    /// Finishes creating a workspace recorded by [`Engine::create_pending`]: resolves (or builds)
    /// its image, records the resolved spec, starts it and runs its lifecycle commands. Holds the
    /// workspace's operation lock throughout, so the reconciler leaves it alone.
    pub async fn provision(
        &self,
        id: &str,
        progress: &dyn Progress,
    ) -> Result<WorkspaceRecord, EngineError> {
        self.provision_with(id, ATTACH, progress).await
    }

    /// [`Engine::provision`], choosing which hooks to wait for.
    pub async fn provision_with(
        &self,
        id: &str,
        how: Hooks,
        progress: &dyn Progress,
    ) -> Result<WorkspaceRecord, EngineError> {
        let rec = self.get(WsRef::Id(id.to_string())).await?;
        let (_lock, rec) = self.lock(&rec).await?;
        // The limits recorded at creation, every time it is provisioned.
        let limits: Limits = match rec.ownership.limits_json.as_str() {
            "" | "{}" => Limits::default(),
            j => serde_json::from_str(j).map_err(|e| {
                EngineError::Internal(format!("workspace {} has unreadable limits: {e}", rec.name))
            })?,
        };
        if !rec.spec_json.is_empty() {
            return self.start_locked(rec, how, progress).await;
        }
        let res = async {
            let dir = Path::new(&rec.project_dir);
            let (read, loaded) = load_config(dir, &rec.ownership)?;
            resolve::refuse_unsupported(&loaded)?;
            warn_config(&loaded, progress);
            let image_name = self
                .image_for(&loaded, dir, &rec.ownership, progress)
                .await?;
            let image = self.ensure_image(&image_name, progress).await?;
            progress.step(&format!(
                "Creating workspace {} from image {}",
                rec.name, image.name
            ));
            let spec = self
                .new_spec(
                    &read,
                    &loaded,
                    &image,
                    limits,
                    &rec.ownership,
                    dir,
                    progress,
                )
                .await?;
            let json =
                serde_json::to_string(&spec).map_err(|e| EngineError::Internal(e.to_string()))?;
            Ok::<_, EngineError>(
                self.store
                    .set_spec(&rec.id, rec.generation, &image.name, &json)
                    .await?,
            )
        }
        .await;
        match res {
            Ok(rec) => self.start_locked(rec, how, progress).await,
            Err(e) => {
                let _ = self.fail(&rec, &e.to_string()).await;
                Err(e)
            }
        }
    }

    /// Stops a workspace and forgets its resolved spec, so that [`Engine::provision`] builds it
    /// again from its (changed) configuration; files, volumes and once-only lifecycle state are
    /// kept. Holds the operation lock.
    pub async fn unprovision(&self, id: &str) -> Result<(), EngineError> {
        let rec = self.stop(WsRef::Id(id.to_string())).await?;
        let (_lock, rec) = self.lock(&rec).await?;
        self.store
            .set_spec(&rec.id, rec.generation, &rec.image, "")
            .await?;
        Ok(())
    }

    async fn start_locked(
        &self,
        rec: WorkspaceRecord,
        how: Hooks,
        progress: &dyn Progress,
    ) -> Result<WorkspaceRecord, EngineError> {
        if rec.spec_json.is_empty() {
            return Err(EngineError::InvalidState {
                name: rec.name.to_string(),
                state: rec.state,
                action: "start (it was never provisioned; delete and create it again)",
            });
        }
        match rec.state {
            WorkspaceState::Running => {
                // Running already: nothing to do unless an interrupted start left once-only steps
                // undone, or a user attaches.
                let ls = LifecycleState::from_json(&rec.lifecycle_json);
                if ls.created && !how.attach {
                    return Ok(rec);
                }
            }
            WorkspaceState::Deleting | WorkspaceState::Deleted => {
                return Err(EngineError::InvalidState {
                    name: rec.name.to_string(),
                    state: rec.state,
                    action: "start",
                })
            }
            _ => {}
        }
        let started = rec.state != WorkspaceState::Running;
        let rec = if !started {
            rec
        } else {
            let spec: WsSpec = rec.spec()?;
            // Privileges are the server's to grant at every start: an administrator who stops
            // allowing them stops them for existing workspaces too.
            let s = &spec.security;
            if !rec.ownership.owner_id.is_empty()
                && !self.cfg.owned_may_have_privileges
                && (s.privileged || s.seccomp_unconfined || !s.cap_add.is_empty())
            {
                return Err(EngineError::Refused {
                    config: PathBuf::from(&rec.config_path),
                    message: format!(
                        "workspace {} was granted privileges this server no longer grants",
                        rec.name
                    ),
                    hint:
                        "recreate it without capAdd, privileged or seccomp=unconfined, or ask an \
                           administrator to allow privileges (`warren server --allow-privileges`)"
                            .into(),
                });
            }
            let rec = self.apply(&rec, Event::Start, None).await?;
            progress.step(&format!("Starting workspace {}", rec.name));
            let mut rt_spec = spec.runtime_spec(&rec);
            rt_spec.network = self.workspace_network();
            let rt = self.runtime.clone();
            let id = rec.id.clone();
            failpoint("before-provision");
            let plan = self.egress_plan(&rec).await?;
            let egress = rt_spec.network == warren_runtime::Network::Egress;
            let applied = plan.clone();
            let res = blocking(move || {
                rt.create(&rt_spec)?;
                // Before the start: the workspace never runs under an older plan.
                if egress {
                    rt.set_egress(&id, &plan)?;
                }
                rt.start(&id)?;
                Ok(())
            })
            .await;
            // A plan recorded while this start was under way (`set_network` does not wait for
            // the workspace's lock) may have been overwritten by the one read above: the newest
            // recorded plan is applied last.
            let res = match res {
                Ok(()) if egress => self.reapply_if_changed(&rec, &applied).await,
                other => other,
            };
            failpoint("after-provision");
            if let Err(e) = res {
                // The original error is what the user needs; recording the failure is best effort
                // (the reconciler finishes it if this does not).
                let _ = self.fail(&rec, &e.to_string()).await;
                return Err(e);
            }
            let rec = self.apply(&rec, Event::Started, None).await?;
            // The secret files, before any lifecycle hook runs (a fresh tmpfs at every start).
            if let Err(e) = self.provide_secrets(&rec, progress).await {
                let _ = self.fail(&rec, &e.to_string()).await;
                return Err(e);
            }
            rec
        };
        self.run_lifecycle(rec, started, how, progress).await
    }

    async fn run_lifecycle(
        &self,
        rec: WorkspaceRecord,
        started: bool,
        how: Hooks,
        progress: &dyn Progress,
    ) -> Result<WorkspaceRecord, EngineError> {
        let spec: WsSpec = rec.spec()?;
        let mut ls = LifecycleState::from_json(&rec.lifecycle_json);
        let log = self.log_path(&rec.id);
        let mut rec = rec;
        // Probed at each start (a running workspace keeps what its start probed).
        if started {
            let probed = lifecycle::probe_user_env(
                self.runtime.clone(),
                &rec.id,
                &spec,
                &spec.user_env_probe,
                progress,
            )
            .await;
            if probed != ls.user_env {
                ls.user_env = probed;
                rec = self
                    .store
                    .set_lifecycle_json(&rec.id, rec.generation, &ls.to_json())
                    .await?;
            }
        }
        if !ls.created {
            if let Some(sync) = &spec.owner_sync {
                let user = spec.remote_user().unwrap_or_else(|| "root".into());
                if user != "root" && user != "0" {
                    let mut as_root = spec.clone();
                    as_root.config.remote_user = Some("root".into());
                    let script = lifecycle::owner_sync_script(sync, &user, &spec.workspace_folder);
                    let res = lifecycle::run(
                        self.runtime.clone(),
                        &rec.id,
                        &as_root,
                        &[],
                        "updateRemoteUserUID",
                        &LifecycleCommand::Shell(script),
                        &log,
                        progress,
                    )
                    .await;
                    if let Err(e) = res {
                        let _ = self.fail(&rec, &e.to_string()).await;
                        return Err(e);
                    }
                }
            }
        }
        // The hooks due now: the once-only ones until they have run, postStart after a start,
        // postAttach when a user attaches (`up`).
        let due: Vec<(String, Vec<LifecycleCommand>)> = lifecycle::HOOKS
            .iter()
            .filter(|(what, once)| match *what {
                "postStartCommand" => started || !ls.created,
                "postAttachCommand" => how.attach,
                what => *once && !ls.created && !ls.done.iter().any(|d| d == what),
            })
            .map(|(what, _)| (what.to_string(), spec.hook_commands(what)))
            .filter(|(_, cmds)| !cmds.is_empty())
            .collect();
        // `waitFor`: up to and including that hook in the foreground, the rest in the background.
        // (`waitFor: initializeCommand` waits for nothing in the workspace.)
        let wait_index = match spec.wait_for.as_str() {
            "initializeCommand" => None,
            w => Some(
                lifecycle::HOOKS
                    .iter()
                    .position(|(h, _)| *h == w)
                    .unwrap_or(1),
            ),
        };
        let (fg, bg): (Vec<_>, Vec<_>) = due.into_iter().partition(|(what, _)| {
            how.wait_all
                || lifecycle::HOOKS
                    .iter()
                    .position(|(w, _)| w == what)
                    .zip(wait_index)
                    .is_some_and(|(i, w)| i <= w)
        });
        for (what, cmds) in &fg {
            for cmd in cmds {
                progress.step(&format!("Running {what}"));
                let res = lifecycle::run(
                    self.runtime.clone(),
                    &rec.id,
                    &spec,
                    &ls.user_env,
                    what,
                    cmd,
                    &log,
                    progress,
                )
                .await;
                if let Err(e) = res {
                    // The original error is what the user needs; recording the failure is best
                    // effort (the reconciler finishes it if this does not).
                    let _ = self.fail(&rec, &e.to_string()).await;
                    return Err(e);
                }
            }
            let once = lifecycle::HOOKS.iter().any(|(h, o)| h == what && *o);
            if once && !ls.created {
                ls.done.push(what.clone());
                rec = self
                    .store
                    .set_lifecycle_json(&rec.id, rec.generation, &ls.to_json())
                    .await?;
            }
        }
        if !bg.is_empty() {
            let names: Vec<&str> = bg.iter().map(|(w, _)| w.as_str()).collect();
            progress.step(&format!(
                "{} continue{} in the background (waitFor is {}); `warren logs {}` shows {}",
                names.join(", "),
                if names.len() == 1 { "s" } else { "" },
                spec.wait_for,
                rec.name,
                if names.len() == 1 { "it" } else { "them" }
            ));
            if let Err(e) = lifecycle::spawn_background(
                self.runtime.clone(),
                &rec.id,
                &spec,
                &ls.user_env,
                &bg,
                &log,
            )
            .await
            {
                let _ = self.fail(&rec, &e.to_string()).await;
                return Err(e);
            }
        }
        // The once-only hooks have run, or run now in the background: never again.
        if !ls.created {
            ls.created = true;
            rec = self
                .store
                .set_lifecycle_json(&rec.id, rec.generation, &ls.to_json())
                .await?;
        }
        if rec.last_error.is_some() {
            rec = self
                .store
                .set_last_error(&rec.id, rec.generation, None)
                .await?;
        }
        Ok(rec)
    }

    /// The spec of a new workspace: the configuration merged with its image's metadata (and its
    /// features'), under the workspace's policy.
    #[allow(clippy::too_many_arguments)]
    async fn new_spec(
        &self,
        read: &warren_devcontainer::ReadConfiguration,
        loaded: &warren_devcontainer::Loaded,
        image: &warren_image::Image,
        limits: Limits,
        ownership: &Ownership,
        dir: &Path,
        progress: &dyn Progress,
    ) -> Result<WsSpec, EngineError> {
        let owned = !ownership.owner_id.is_empty();
        let label = image
            .config
            .labels
            .get(warren_devcontainer::METADATA_LABEL)
            .map(String::as_str);
        let host_env = |k: &str| std::env::var(k).ok();
        let no_env = |_: &str| None;
        let env: &dyn Fn(&str) -> Option<String> = if owned { &no_env } else { &host_env };
        let (_, merged) =
            read.merge(label, &[], env)
                .map_err(|e| EngineError::Refused {
                    config: loaded.config_path.clone(),
                    message: format!("image metadata: {e}"),
                    hint: "fix the variable in the devcontainer.json or the image's devcontainer.metadata label".into(),
                })?;
        let mut spec = WsSpec::new(loaded, image, limits);
        spec.owner_sync = owner_sync(dir, owned);
        let ceilings = match (owned, &ownership.template_version_id) {
            (true, Some(v)) => self
                .store
                .version(v)
                .await?
                .and_then(|v| serde_json::from_str(&v.ceilings_json).ok()),
            _ => None,
        };
        let policy = devprops::Policy {
            allow_privileges: !owned || self.cfg.owned_may_have_privileges,
            privileges_hint:
                "an administrator can allow it with `warren server --allow-privileges` \
                              (WARREN_ALLOW_PRIVILEGES=true)"
                    .into(),
            ceilings,
            host_cpus: (!owned)
                .then(|| std::thread::available_parallelism().ok())
                .flatten()
                .map(|n| n.get() as f64),
            host_memory_bytes: (!owned).then(host_memory_bytes).flatten(),
            binds_only_of: owned.then(|| dir.display().to_string()),
        };
        let id = warren_devcontainer::devcontainer_id_for(
            &dir.display().to_string(),
            &loaded.config_path.display().to_string(),
        );
        resolve::apply(&mut spec, loaded, &merged, image, &policy, &id, progress)?;
        Ok(spec)
    }

    /// Marks the workspace failed with `message` and stops its container.
    async fn fail(&self, rec: &WorkspaceRecord, message: &str) -> Result<(), EngineError> {
        let cur = self
            .store
            .get(&rec.id)
            .await?
            .ok_or_else(|| EngineError::NotFound(rec.name.to_string()))?;
        let cur = self
            .store
            .apply(&cur.id, cur.generation, Event::Fail, Some(message))
            .await?
            .0;
        self.store
            .set_last_error(&cur.id, cur.generation, Some(message))
            .await?;
        let rt = self.runtime.clone();
        let id = cur.id.clone();
        blocking(move || Ok(rt.stop(&id, Duration::from_secs(2))?)).await
    }

    /// Stops a workspace. Stopping a stopped workspace does nothing.
    pub async fn stop(&self, ws: impl Into<WsRef>) -> Result<WorkspaceRecord, EngineError> {
        let rec = self.get(ws).await?;
        let (_lock, rec) = self.lock(&rec).await?;
        if matches!(rec.state, WorkspaceState::Stopped) {
            return Ok(rec);
        }
        let rec = self
            .store
            .apply(&rec.id, rec.generation, Event::Stop, None)
            .await
            .map_err(|e| EngineError::from_transition(e, &rec, "stop"))?
            .0;
        let rt = self.runtime.clone();
        let id = rec.id.clone();
        blocking(move || Ok(rt.stop(&id, STOP_GRACE)?)).await?;
        if rec.state == WorkspaceState::Stopping {
            return self.apply(&rec, Event::Stopped, None).await;
        }
        Ok(rec)
    }

    /// Stops then starts a workspace.
    pub async fn restart(
        &self,
        ws: impl Into<WsRef>,
        progress: &dyn Progress,
    ) -> Result<WorkspaceRecord, EngineError> {
        let rec = self.stop(ws).await?;
        self.start(WsRef::Id(rec.id), progress).await
    }

    /// Deletes a workspace and everything it has on the host. A running workspace needs `force`.
    pub async fn delete(&self, ws: impl Into<WsRef>, force: bool) -> Result<(), EngineError> {
        let rec = self.get(ws).await?;
        let (_lock, rec) = self.lock(&rec).await?;
        if !force
            && matches!(
                rec.state,
                WorkspaceState::Running | WorkspaceState::Starting
            )
        {
            return Err(EngineError::Running(rec.name.to_string()));
        }
        let rec = self.apply(&rec, Event::Delete, None).await?;
        failpoint("mid-delete");
        self.teardown(rec).await
    }

    /// Removes a workspace in state Deleting from the host and the store. Idempotent.
    async fn teardown(&self, rec: WorkspaceRecord) -> Result<(), EngineError> {
        let rt = self.runtime.clone();
        let id = rec.id.clone();
        blocking(move || Ok(rt.destroy(&id)?)).await?;
        let _ = std::fs::remove_file(self.log_path(&rec.id));
        let rec = self.apply(&rec, Event::Deleted, None).await?;
        self.store.delete_record(&rec.id).await?;
        lock::remove(&self.lock_dir(), &rec.id);
        Ok(())
    }

    /// Starts a process in a running workspace, as its remote user, in its workspace folder, with its
    /// remoteEnv, unless `process` says otherwise.
    pub async fn exec(
        &self,
        ws: impl Into<WsRef>,
        process: ExecProcess,
        stdio: Option<Stdio>,
    ) -> Result<ExecSession, EngineError> {
        let rec = self.get(ws).await?;
        self.exec_record(rec, process, stdio).await
    }

    /// [`Engine::exec`] in a workspace whose record the caller has just read (the API's
    /// authorization did): one store read less on a hot path.
    pub async fn exec_record(
        &self,
        rec: WorkspaceRecord,
        mut process: ExecProcess,
        stdio: Option<Stdio>,
    ) -> Result<ExecSession, EngineError> {
        if rec.state != WorkspaceState::Running {
            return Err(not_running(&rec));
        }
        let spec: WsSpec = rec.spec()?;
        let ls = LifecycleState::from_json(&rec.lifecycle_json);
        spec.apply_exec_defaults(&mut process, &ls.user_env);
        self.on_running(rec, move |rt, id| rt.exec(id, &process, stdio))
            .await
    }

    /// Runs `f` against the runtime for a workspace the record says is running; a runtime that
    /// finds nothing running gets the record reconciled and the same error exec gives.
    async fn on_running<T: Send + 'static>(
        &self,
        rec: WorkspaceRecord,
        f: impl FnOnce(&dyn Runtime, &str) -> Result<T, warren_runtime::RuntimeError> + Send + 'static,
    ) -> Result<T, EngineError> {
        if rec.state != WorkspaceState::Running {
            return Err(not_running(&rec));
        }
        let rt = self.runtime.clone();
        let id = rec.id.clone();
        match blocking(move || Ok(f(rt.as_ref(), &id)?)).await {
            Err(EngineError::Runtime(warren_runtime::RuntimeError::NotRunning)) => {
                let _ = self.reconcile().await;
                Err(EngineError::NotRunning {
                    name: rec.name.to_string(),
                    state: self
                        .get(WsRef::Id(rec.id.clone()))
                        .await
                        .map(|r| r.state)
                        .unwrap_or(WorkspaceState::Failed),
                })
            }
            other => other,
        }
    }

    /// An unconnected, non-blocking TCP socket inside a running workspace's network namespace
    /// (port forwarding, preview URLs). The caller decides where it may connect.
    pub async fn tcp_socket(
        &self,
        ws: impl Into<WsRef>,
        ipv6: bool,
    ) -> Result<std::os::fd::OwnedFd, EngineError> {
        let rec = self.get(ws).await?;
        self.on_running(rec, move |rt, id| rt.tcp_socket(id, ipv6))
            .await
    }

    /// The TCP ports listened on inside a running workspace.
    pub async fn listening_ports(
        &self,
        ws: impl Into<WsRef>,
    ) -> Result<Vec<warren_runtime::ListeningPort>, EngineError> {
        let rec = self.get(ws).await?;
        self.on_running(rec, |rt, id| rt.listening_ports(id)).await
    }

    /// The lifecycle log of a workspace.
    pub async fn logs(&self, ws: impl Into<WsRef>) -> Result<String, EngineError> {
        let rec = self.get(ws).await?;
        // Lifecycle commands print whatever bytes they like.
        let bytes = std::fs::read(self.log_path(&rec.id)).unwrap_or_default();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The path of a workspace's lifecycle log (lifecycle commands append to it).
    pub fn log_file(&self, rec: &WorkspaceRecord) -> PathBuf {
        self.log_path(&rec.id)
    }

    /// Resource usage of a workspace.
    pub async fn stats(&self, ws: impl Into<WsRef>) -> Result<warren_runtime::Stats, EngineError> {
        let rec = self.get(ws).await?;
        Ok(self.runtime.stats(&rec.id)?)
    }

    /// The CPU time a workspace's processes have used, in nanoseconds (from its cgroup; none if
    /// it has none or it cannot be read). Cheap: no store access.
    pub fn cpu_ns(&self, id: &str) -> Option<u64> {
        self.runtime.stats(id).ok()?.cpu_ns
    }

    /// Removes an image unless a workspace uses it.
    pub async fn remove_image(&self, name: &str) -> Result<(), EngineError> {
        let in_use: Vec<String> = self
            .store
            .list()
            .await?
            .into_iter()
            .map(|r| r.image)
            .collect();
        let images = self.images.clone();
        let name = name.to_string();
        blocking(move || Ok(images.remove_with(&name, &in_use)?)).await
    }
}

/// `updateRemoteUserUID` (default on): on the embedded CLI the remote user takes the uid and gid of
/// the project folder's owner, unless that is root (as the reference implementation does); on a
/// server, where the folder is Warren's copy, the folder is given to the remote user instead.
fn owner_sync(dir: &Path, owned: bool) -> Option<lifecycle::OwnerSync> {
    use std::os::unix::fs::MetadataExt;
    if owned {
        return Some(lifecycle::OwnerSync::FolderFollowsUser);
    }
    let meta = std::fs::metadata(dir).ok()?;
    (meta.uid() != 0).then_some(lifecycle::OwnerSync::UserFollowsFolder {
        uid: meta.uid(),
        gid: meta.gid(),
    })
}

/// The host's memory (MemTotal), for warnings about `hostRequirements`.
fn host_memory_bytes() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb << 10)
}

fn up_hooks(opts: &UpOptions) -> Hooks {
    Hooks {
        attach: true,
        wait_all: opts.wait_all,
    }
}

/// What a server job that creates or rebuilds a workspace runs: like `up`.
const ATTACH: Hooks = Hooks {
    attach: true,
    wait_all: false,
};

impl Engine {
    /// The image a configuration runs: its `image`, or the one its Dockerfile builds, with its
    /// features installed on top (built now, from the cache when nothing changed). Prints the
    /// loader's warnings.
    async fn image_for(
        &self,
        loaded: &warren_devcontainer::Loaded,
        dir: &Path,
        ownership: &Ownership,
        progress: &dyn Progress,
    ) -> Result<String, EngineError> {
        let dockerfile = build::dockerfile_build(loaded);
        // Host-local builds get the host's network (apt-get...); server users' builds stay
        // isolated until workspaces have networks of their own.
        let network = if ownership.owner_id.is_empty() {
            warren_build::Network::Host
        } else {
            warren_build::Network::Isolated
        };
        let base = match dockerfile {
            None => image_of(loaded)?,
            Some(b) => {
                let tag = build::build_tag(dir);
                progress.step(&format!(
                    "Building image {tag} from {}",
                    b.dockerfile.display()
                ));
                self.run_build(
                    b,
                    tag.clone(),
                    network,
                    false,
                    (!ownership.owner_id.is_empty()).then_some(dir),
                    progress,
                )
                .await?;
                tag
            }
        };
        if loaded.config.features.is_empty() {
            return Ok(base);
        }
        self.install_features(
            loaded,
            dir,
            &base,
            network,
            !ownership.owner_id.is_empty(),
            progress,
        )
        .await
    }

    /// Builds `base` with the configuration's features installed, each feature's install.sh a
    /// cached layer of its own, and labels the result with the base image's metadata followed by
    /// the features' (`devcontainer.metadata`), which the workspace's spec merges.
    async fn install_features(
        &self,
        loaded: &warren_devcontainer::Loaded,
        dir: &Path,
        base: &str,
        network: warren_build::Network,
        owned: bool,
        progress: &dyn Progress,
    ) -> Result<String, EngineError> {
        let base_image = self.ensure_image(base, progress).await?;
        let refused = |message: String, hint: Option<String>| EngineError::Refused {
            config: loaded.config_path.clone(),
            message,
            hint: hint.unwrap_or_else(|| "check the `features` of the devcontainer.json".into()),
        };
        let features: Vec<(String, serde_json::Value)> = loaded
            .config
            .features
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v)))
            .collect();
        let config_dir = loaded.config_path.parent().unwrap_or(dir);
        progress.step(&format!(
            "Resolving feature{} {}",
            if features.len() == 1 { "" } else { "s" },
            features
                .iter()
                .map(|(k, _)| k.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let resolved = warren_features::prepare(
            &features,
            loaded
                .config
                .override_feature_install_order
                .as_deref()
                .unwrap_or(&[]),
            config_dir,
            &self.cfg.state_dir.join("features"),
            // A server fetches its users' features only from public addresses: never its own
            // loopback services, its network's private hosts or cloud metadata.
            &warren_features::FetchOptions {
                public_only: owned,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| refused(e.to_string(), e.hint()))?;
        for w in &resolved.warnings {
            progress.warn(w);
        }
        let image_user = base_image
            .config
            .user
            .clone()
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| "root".into());
        let users = warren_features::BuildUsers {
            container_user: loaded
                .config
                .container_user
                .clone()
                .unwrap_or_else(|| image_user.clone()),
            remote_user: loaded.config.remote_user.clone(),
            container_user_home: None,
            remote_user_home: None,
            image_user,
        };
        let ctx = self
            .cfg
            .state_dir
            .join("builds/features")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let plan = resolved
            .build_plan(&base_image.name, &users, &ctx)
            .map_err(|e| refused(e.to_string(), e.hint()))?;
        let mut entries: Vec<serde_json::Value> = base_image
            .config
            .labels
            .get(warren_devcontainer::METADATA_LABEL)
            .map(|l| warren_devcontainer::parse_metadata_label(l))
            .unwrap_or_default()
            .iter()
            .map(serde_json::Value::from)
            .collect();
        entries.extend(plan.metadata.iter().cloned());
        let tag = build::build_tag(dir).replacen("warren-build/", "warren-features/", 1);
        progress.step(&format!(
            "Installing feature{} {} into {tag}",
            if resolved.features.len() == 1 {
                ""
            } else {
                "s"
            },
            resolved
                .features
                .iter()
                .map(|f| f.manifest.id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let req = warren_build::BuildRequest {
            dockerfile: plan.dockerfile.clone(),
            dockerfile_path: ctx.join("Dockerfile"),
            context_dir: ctx.clone(),
            build_args: Default::default(),
            target: None,
            tag: tag.clone(),
            network,
            no_cache: false,
            labels: [(
                warren_devcontainer::METADATA_LABEL.to_string(),
                serde_json::Value::Array(entries).to_string(),
            )]
            .into(),
            public_fetches_only: owned,
        };
        let res = self.build_once(req, progress).await;
        let _ = std::fs::remove_dir_all(&ctx);
        res?;
        Ok(tag)
    }

    /// Builds the image of the project folder `dir` (`warren build DIR`): its devcontainer.json
    /// must use `build.dockerfile`. Host-local, so RUN steps have the host's network.
    pub async fn build(
        &self,
        dir: &Path,
        no_cache: bool,
        progress: &dyn Progress,
    ) -> Result<BuiltImage, EngineError> {
        let dir = std::fs::canonicalize(dir).map_err(|e| EngineError::ProjectDir {
            path: dir.to_path_buf(),
            error: e.to_string(),
        })?;
        let loaded = warren_devcontainer::load(&dir)?;
        let b = build::dockerfile_build(&loaded)
            .ok_or_else(|| EngineError::NoDockerfile(loaded.config_path.clone()))?;
        let tag = build::build_tag(&dir);
        progress.step(&format!(
            "Building image {tag} from {}",
            b.dockerfile.display()
        ));
        self.run_build(
            b,
            tag,
            warren_build::Network::Host,
            no_cache,
            None,
            progress,
        )
        .await
    }

    /// Runs Warren's builder on a blocking thread, streaming its log to `progress`.
    async fn run_build(
        &self,
        b: build::DockerfileBuild,
        tag: String,
        network: warren_build::Network,
        no_cache: bool,
        untrusted: Option<&Path>,
        progress: &dyn Progress,
    ) -> Result<BuiltImage, EngineError> {
        if let Some(project) = untrusted {
            // The folder is the user's: neither the Dockerfile nor the build context may lead the
            // host out of it (`"context": "/"`, `..`, or symlinks anywhere on the way).
            let root = std::fs::canonicalize(project).map_err(|e| EngineError::ProjectDir {
                path: project.to_path_buf(),
                error: e.to_string(),
            })?;
            let inside = |p: &Path| std::fs::canonicalize(p).is_ok_and(|c| c.starts_with(&root));
            let is_file = std::fs::symlink_metadata(&b.dockerfile).is_ok_and(|m| m.is_file());
            if !is_file || !inside(&b.dockerfile) || !inside(&b.context) {
                return Err(EngineError::Policy(format!(
                    "the Dockerfile ({}) must be a regular file and the build context ({}) a folder, \
                     both inside the project folder",
                    b.dockerfile.display(),
                    b.context.display()
                )));
            }
        }
        let dockerfile =
            std::fs::read_to_string(&b.dockerfile).map_err(|e| EngineError::ProjectDir {
                path: b.dockerfile.clone(),
                error: e.to_string(),
            })?;
        let req = warren_build::BuildRequest {
            dockerfile,
            dockerfile_path: b.dockerfile.clone(),
            context_dir: b.context.clone(),
            build_args: b.args,
            target: b.target,
            tag,
            network,
            no_cache,
            labels: Default::default(),
            public_fetches_only: untrusted.is_some(),
        };
        self.build_image(req, progress).await
    }

    /// Builds `req` with Warren's builder into the engine's image store, its RUN steps in build
    /// sandboxes under `STATE/builds` (the way for other parts of Warren, e.g. Dev Container
    /// features, to build images). The build log goes to `progress.output`. As for `image`, a
    /// missing `debian:<suite>` base image is built from Debian's packages first.
    pub async fn build_image(
        &self,
        req: warren_build::BuildRequest,
        progress: &dyn Progress,
    ) -> Result<BuiltImage, EngineError> {
        let first = self.build_once(req.clone(), progress).await;
        match first {
            Err(EngineError::Build(warren_build::BuildError::MissingImage { image, .. }))
                if debian_suite(&image).is_some() =>
            {
                let suite = debian_suite(&image).unwrap_or("bookworm").to_string();
                progress.step(&format!(
                    "Image {image} is not in the local store: building it from Debian packages with mmdebstrap (first use only)"
                ));
                self.bootstrap(&image, &suite, progress).await?;
                self.build_once(req, progress).await
            }
            other => other,
        }
    }

    async fn build_once(
        &self,
        req: warren_build::BuildRequest,
        progress: &dyn Progress,
    ) -> Result<BuiltImage, EngineError> {
        let images = self.images.clone();
        let work = self.cfg.state_dir.join("builds");
        let rt = LinuxRuntime::new(&work.join("sandboxes"), self.cfg.oci.clone(), &self.cfg.exe)
            .without_tools();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let task = tokio::task::spawn_blocking(move || {
            let mut log = LineSender {
                tx,
                buf: Vec::new(),
            };
            let r = warren_build::build(&images, &rt, &work, &req, &mut log);
            log.flush_rest();
            r
        });
        while let Some(line) = rx.recv().await {
            progress.output(&line);
        }
        Ok(task
            .await
            .map_err(|e| EngineError::Internal(format!("build task: {e}")))??)
    }
}

/// Shows the loader's warnings, except those about the build properties when a Dockerfile build
/// handles them.
fn warn_config(loaded: &warren_devcontainer::Loaded, progress: &dyn Progress) {
    for w in &loaded.warnings {
        progress.warn(&w.to_string());
    }
}

/// A `Write` that sends whole lines over a channel (the build log to `Progress::output`).
struct LineSender {
    tx: tokio::sync::mpsc::UnboundedSender<String>,
    buf: Vec<u8>,
}

impl LineSender {
    fn flush_rest(&mut self) {
        if !self.buf.is_empty() {
            let line = String::from_utf8_lossy(&self.buf).into_owned();
            let _ = self.tx.send(line);
            self.buf.clear();
        }
    }
}

impl std::io::Write for LineSender {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let _ = self
                .tx
                .send(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The image a configuration names in `image`.
fn image_of(loaded: &warren_devcontainer::Loaded) -> Result<String, EngineError> {
    loaded
        .config
        .image
        .clone()
        .ok_or_else(|| EngineError::NoImage(loaded.config_path.clone()))
}

/// Loads a workspace's devcontainer.json. Workspaces of server users (an owner is set) are
/// untrusted: their configuration must not reach the host, so `${localEnv:...}` sees an empty
/// environment (not the server's) and bind mounts of host paths are refused. Host-local workspaces
/// of the embedded CLI are their root user's own business.
fn load_config(dir: &Path, ownership: &Ownership) -> Result<Config2, EngineError> {
    if ownership.owner_id.is_empty() {
        return Ok(warren_devcontainer::read_configuration(dir, false, &|k| {
            std::env::var(k).ok()
        })?);
    }
    let dir = std::fs::canonicalize(dir).map_err(|e| EngineError::ProjectDir {
        path: dir.to_path_buf(),
        error: e.to_string(),
    })?;
    // The server keeps the rendered configuration beside the project folder, where the workspace
    // cannot reach it: once the workspace has run, files in its folder are its own (a symlink
    // there must never make the host read something else).
    let server_copy = server_config_path(&dir);
    let text = std::fs::read_to_string(&server_copy).map_err(|e| EngineError::ProjectDir {
        path: server_copy.clone(),
        error: e.to_string(),
    })?;
    let config_path = dir.join(".devcontainer/devcontainer.json");
    let (read, mut loaded) =
        warren_devcontainer::read_str(&text, &config_path, &dir, &dir, &|_| None)?;
    if loaded.config.initialize_command.is_some() {
        loaded.warnings.push(warren_devcontainer::Warning {
            property: "initializeCommand".into(),
            message: "runs on the machine of whoever runs `warren up`, before uploading; the \
                      server never runs it"
                .into(),
        });
    }
    // Refused here already, before anything is recorded; `resolve` applies the same rule again
    // to what image metadata, features and `runArgs` add.
    devprops::check_binds(
        loaded
            .config
            .mounts
            .iter()
            .chain(loaded.config.workspace_mount.iter()),
        &dir.display().to_string(),
    )
    .map_err(|r| EngineError::Refused {
        config: config_path.clone(),
        message: r.message,
        hint: r.hint,
    })?;
    Ok((read, loaded))
}

/// A configuration as read (for merging with image and feature metadata) and as resolved.
type Config2 = (
    warren_devcontainer::ReadConfiguration,
    warren_devcontainer::Loaded,
);

/// Where the server keeps the rendered devcontainer.json of a workspace whose project folder is
/// `project_dir`: beside it, outside anything the workspace can write.
pub fn server_config_path(project_dir: &Path) -> PathBuf {
    let mut name = project_dir.as_os_str().to_owned();
    name.push(".devcontainer.json");
    PathBuf::from(name)
}

/// `debian:<suite>` names Warren can build itself.
fn debian_suite(name: &str) -> Option<&str> {
    let tag = name
        .strip_prefix("debian:")
        .or_else(|| name.strip_prefix("docker.io/library/debian:"))?;
    let suite = tag.strip_suffix("-slim").unwrap_or(tag);
    match suite {
        "bookworm" | "12" => Some("bookworm"),
        "trixie" | "13" => Some("trixie"),
        "bullseye" | "11" => Some("bullseye"),
        "stable" | "latest" => Some("stable"),
        _ => None,
    }
}

/// Test hook: when `WARREN_FAILPOINT` names this point, announce it on stderr and hang, so a test can
/// kill the process at an exact step.
fn failpoint(name: &str) {
    if std::env::var("WARREN_FAILPOINT").is_ok_and(|v| v == name) {
        eprintln!("failpoint {name} reached");
        std::thread::sleep(Duration::from_secs(3600));
    }
}

trait RecordExt {
    fn spec(&self) -> Result<WsSpec, EngineError>;
}

impl RecordExt for WorkspaceRecord {
    fn spec(&self) -> Result<WsSpec, EngineError> {
        serde_json::from_str(&self.spec_json).map_err(|e| {
            EngineError::Internal(format!(
                "workspace {} has an unreadable spec: {e}",
                self.name
            ))
        })
    }
}

fn not_running(rec: &WorkspaceRecord) -> EngineError {
    EngineError::NotRunning {
        name: rec.name.to_string(),
        state: rec.state,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_debian_suites_are_bootstrapped() {
        assert_eq!(debian_suite("debian:bookworm"), Some("bookworm"));
        assert_eq!(debian_suite("debian:12-slim"), Some("bookworm"));
        assert_eq!(
            debian_suite("docker.io/library/debian:trixie"),
            Some("trixie")
        );
        assert_eq!(debian_suite("ubuntu:22.04"), None);
        assert_eq!(debian_suite("debian:sid-nonsense"), None);
    }
}
