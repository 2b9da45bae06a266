//! `warren devcontainer read-configuration`: prints what the reference Dev Containers CLI's
//! `devcontainer read-configuration` prints, as one line of JSON.

use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::{Args, Subcommand};
use warren_devcontainer::{
    merge_configuration, metadata_entries, parse_metadata_label, read_configuration, ConfigError,
    Json, MetadataImage, METADATA_LABEL,
};

use crate::output::{user_error, Printer};
use warren_engine::Progress;

/// `warren devcontainer ...`.
#[derive(Subcommand, Debug)]
pub(crate) enum DevcontainerCmd {
    /// Print a project's devcontainer.json as the Dev Containers CLI's `read-configuration` does.
    ReadConfiguration(ReadArgs),
}

/// `warren devcontainer read-configuration`.
#[derive(Args, Debug)]
pub(crate) struct ReadArgs {
    /// The project folder (default: the current directory).
    #[arg(long, value_name = "DIR")]
    workspace_folder: Option<PathBuf>,
    /// Also print `mergedConfiguration`: the config merged with the image's `devcontainer.metadata`
    /// label (read from Warren's image store when the image is there).
    #[arg(long)]
    include_merged_configuration: bool,
    /// Mount the project's git root rather than the project folder (as the reference CLI does by
    /// default); `--mount-workspace-git-root false` mounts the folder itself.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    mount_workspace_git_root: bool,
    /// For tests: take the image's labels from this `docker inspect` output (a JSON array or
    /// object with `Config.Labels`) instead of the image store.
    #[arg(long, value_name = "FILE", env = "WARREN_DEVCONTAINER_IMAGE_INSPECT")]
    image_inspect: Option<PathBuf>,
}

/// Runs a `warren devcontainer` command.
pub(crate) fn run(cmd: DevcontainerCmd, state_dir: &Path) -> Result<u8> {
    match cmd {
        DevcontainerCmd::ReadConfiguration(a) => read(a, state_dir),
    }
}

fn config_error(e: ConfigError) -> anyhow::Error {
    let hint = e.hint().unwrap_or_else(|| {
        "check the path and the file's permissions (`--workspace-folder DIR`)".into()
    });
    user_error(e.to_string(), hint)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn read(a: ReadArgs, state_dir: &Path) -> Result<u8> {
    let folder = a.workspace_folder.unwrap_or_else(|| PathBuf::from("."));
    let (read, loaded) =
        read_configuration(&folder, a.mount_workspace_git_root, &env).map_err(config_error)?;
    for w in &loaded.warnings {
        Printer.warn(&w.to_string());
    }
    let merged = if a.include_merged_configuration {
        let image = image_metadata(
            &loaded.config,
            &loaded.config_path,
            a.image_inspect.as_deref(),
            state_dir,
        )?;
        if !loaded.config.features.is_empty() {
            Printer.warn(
                "devcontainer.json: the metadata of `features` is not merged yet (only the image's \
                 and the configuration's)",
            );
        }
        let entries = metadata_entries(&read, &image, &[], &env).map_err(|e| {
            user_error(
                format!("image metadata: {e}"),
                "the image's devcontainer.metadata label uses a variable that cannot be resolved",
            )
        })?;
        Some(merge_configuration(
            &read.configuration_with_path(),
            &entries,
        ))
    } else {
        None
    };
    println!("{}", read.output(merged).to_json_string());
    Ok(0)
}

/// The image's metadata entries (the image of an `image` configuration, or the base image of a
/// Dockerfile one): from `--image-inspect`, else from the image store when the image is there.
/// No entries otherwise (with a warning).
fn image_metadata(
    config: &warren_devcontainer::DevContainer,
    config_path: &Path,
    inspect: Option<&Path>,
    state_dir: &Path,
) -> Result<Vec<Json>> {
    let image =
        match warren_devcontainer::metadata_image(config, config_path).map_err(config_error)? {
            MetadataImage::Image(image) | MetadataImage::DockerfileBase(Some(image)) => image,
            MetadataImage::DockerfileBase(None) | MetadataImage::None => return Ok(Vec::new()),
            MetadataImage::Compose => {
                Printer.warn(
                    "devcontainer.json: the image metadata of a Compose service is not read \
                     yet: merged without it",
                );
                return Ok(Vec::new());
            }
        };
    if let Some(path) = inspect {
        let text = std::fs::read_to_string(path).map_err(|e| {
            user_error(
                format!("cannot read {}: {e}", path.display()),
                "give the path of a `docker inspect` output",
            )
        })?;
        let parsed: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            user_error(
                format!("{} is not JSON: {e}", path.display()),
                "give the output of `docker inspect IMAGE`",
            )
        })?;
        let first = parsed.as_array().and_then(|a| a.first()).unwrap_or(&parsed);
        let label = first["Config"]["Labels"][METADATA_LABEL].as_str();
        return Ok(label.map(parse_metadata_label).unwrap_or_default());
    }
    let images = state_dir.join("images");
    let found = images
        .is_dir()
        .then(|| warren_image::ImageStore::open(&images).and_then(|s| s.resolve(&image)))
        .and_then(Result::ok);
    match found {
        Some(img) => Ok(img
            .config
            .labels
            .get(METADATA_LABEL)
            .map(|l| parse_metadata_label(l))
            .unwrap_or_default()),
        None => {
            Printer.warn(&format!(
                "image `{image}` is not in Warren's image store ({}): merged without its metadata",
                images.display()
            ));
            Ok(Vec::new())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// Writes `bytes` as a blob of an OCI layout; returns its descriptor.
    fn blob(dir: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("blobs/sha256").join(&hex), bytes).unwrap();
        serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
    }

    /// An image with a `devcontainer.metadata` label, imported into a state dir's image store.
    fn state_with_labelled_image(label: &str) -> tempfile::TempDir {
        let state = tempfile::tempdir().unwrap();
        let layout = state.path().join("layout");
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Labels": {METADATA_LABEL: label}},
            "rootfs": {"type": "layers", "diff_ids": []}
        });
        let config = blob(
            &layout,
            "application/vnd.oci.image.config.v1+json",
            config.to_string().as_bytes(),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config, "layers": []
        });
        let manifest = blob(
            &layout,
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string().as_bytes(),
        );
        std::fs::write(
            layout.join("oci-layout"),
            r#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .unwrap();
        std::fs::write(
            layout.join("index.json"),
            serde_json::json!({"schemaVersion": 2, "manifests": [manifest]}).to_string(),
        )
        .unwrap();
        let store = warren_image::ImageStore::open(&state.path().join("images")).unwrap();
        store.import_oci_layout(&layout, "example/img:1").unwrap();
        state
    }

    #[test]
    fn merged_configuration_reads_the_label_from_the_image_store() {
        let state =
            state_with_labelled_image(r#"[{"remoteUser":"vscode","capAdd":["NET_ADMIN"]}]"#);
        let config = warren_devcontainer::DevContainer {
            image: Some("example/img:1".into()),
            ..Default::default()
        };
        let entries = image_metadata(
            &config,
            Path::new("/p/.devcontainer.json"),
            None,
            state.path(),
        )
        .unwrap();
        assert_eq!(
            entries.iter().map(Json::to_json_string).collect::<Vec<_>>(),
            [r#"{"remoteUser":"vscode","capAdd":["NET_ADMIN"]}"#]
        );
        // An image that is not in the store gives no entries (and a warning).
        let other = warren_devcontainer::DevContainer {
            image: Some("example/other:1".into()),
            ..Default::default()
        };
        assert!(image_metadata(
            &other,
            Path::new("/p/.devcontainer.json"),
            None,
            state.path()
        )
        .unwrap()
        .is_empty());
    }

    #[test]
    fn image_inspect_file_overrides_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let inspect = dir.path().join("inspect.json");
        std::fs::write(
            &inspect,
            r#"[{"Config": {"Labels": {"devcontainer.metadata": "{\"init\": true}"}}}]"#,
        )
        .unwrap();
        let config = warren_devcontainer::DevContainer {
            image: Some("example/img:1".into()),
            ..Default::default()
        };
        let entries = image_metadata(
            &config,
            Path::new("/p/.devcontainer.json"),
            Some(&inspect),
            dir.path(),
        )
        .unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].to_json_string(), r#"{"init":true}"#);
    }
}
