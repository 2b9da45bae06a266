#![forbid(unsafe_code)]
//! Warren's content-addressed local store of OCI images.
//!
//! Layout under the store root (e.g. `/var/lib/warren/images`):
//!
//! - `blobs/sha256/<hex>`: OCI blobs (manifests, configs, layer tars), verified by digest.
//! - `layers/<hex of diff_id>/`: each layer unpacked once, whiteouts in overlayfs form,
//!   shared read-only by every image and workspace using it (overlayfs lowerdirs).
//! - `refs.json`: image name (`name:tag`) to manifest digest.
//! - `buildcache/<hex>.json`: the image builder's layer cache (cache key to [`ImageState`]).
//! - `tmp/`: work area; things move from here to their final names by atomic rename.
//! - `lock`, `refs.lock`: flock files coordinating concurrent processes.
//!
//! All calls are blocking; run them on a blocking thread from async code.
//!
//! ```no_run
//! # fn main() -> Result<(), warren_image::ImageError> {
//! use warren_image::ImageStore;
//! let store = ImageStore::open(std::path::Path::new("/var/lib/warren/images"))?;
//! store.import_rootfs(std::path::Path::new("rootfs.tar.gz"), "mybox:v1", None)?;
//! let image = store.resolve("mybox:v1")?;
//! // overlayfs wants the top layer first:
//! let lower: Vec<_> = image.layer_dirs.iter().rev().collect();
//! # let _ = lower; Ok(()) }
//! ```

mod bootstrap;
mod compose;
mod digest;
mod error;
mod import;
mod name;
mod pack;
pub mod registry;
mod spec;
mod store;
mod unpack;

pub use bootstrap::BootstrapOptions;
pub use compose::{now_rfc3339, ImageState, LayerRef, StoreHold};
pub use error::ImageError;
pub use name::normalize_name;
pub use spec::{History, ImageConfig};
pub use store::{GcReport, Image, ImageInfo, ImageStore};
