//! A read-only view of an image's merged filesystem, read straight from its unpacked layers
//! (overlayfs form: 0/0 character devices are whiteouts, `trusted.overlay.opaque=y` marks opaque
//! directories), without mounting anything. `COPY --from` reads its sources through it, and
//! COPY, ADD and WORKDIR use it to find the destination's real parent directories (following
//! the image's symlinks, e.g. `/bin -> usr/bin`) and their ownership and modes.

use std::collections::BTreeMap;
use std::fs::{self, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

/// Most symlinks followed while resolving one path.
const MAX_LINKS: usize = 40;

/// An image's filesystem, as its layers (bottom first) make it.
#[derive(Debug, Clone)]
pub struct LayerView {
    layers: Vec<PathBuf>,
}

fn is_whiteout(m: &Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

fn is_opaque(p: &std::path::Path) -> bool {
    let mut v = [0u8; 4];
    matches!(rustix::fs::lgetxattr(p, "trusted.overlay.opaque", &mut v[..]), Ok(1) if v[0] == b'y')
}

/// Splits an absolute image path into its components (`.`/`..` handled lexically).
pub fn components(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

impl LayerView {
    /// A view of `layers`, bottom first.
    pub fn new(layers: Vec<PathBuf>) -> LayerView {
        LayerView { layers }
    }

    /// The host path of the entry at `comps` (not following a symlink there) and its metadata.
    pub fn lookup(&self, comps: &[String]) -> Option<(PathBuf, Metadata)> {
        if comps.is_empty() {
            let top = self.layers.last()?;
            return fs::symlink_metadata(top).ok().map(|m| (top.clone(), m));
        }
        for layer in self.layers.iter().rev() {
            let mut p = layer.clone();
            let mut hidden_below = false;
            for (i, c) in comps.iter().enumerate() {
                p.push(c);
                match fs::symlink_metadata(&p) {
                    Err(_) => break,
                    Ok(m) if is_whiteout(&m) => return None,
                    Ok(m) if i + 1 == comps.len() => return Some((p, m)),
                    Ok(m) if !m.is_dir() => return None,
                    Ok(_) => {
                        if is_opaque(&p) {
                            hidden_below = true;
                        }
                    }
                }
            }
            if hidden_below {
                return None;
            }
        }
        None
    }

    /// Resolves `path` inside the image, following symlinks in every component (and in the last
    /// one when `follow_last`). Components that do not exist are kept as they are.
    pub fn resolve(&self, path: &str, follow_last: bool) -> Result<Vec<String>, String> {
        let mut pending: Vec<String> = path
            .split('/')
            .filter(|c| !c.is_empty())
            .map(str::to_string)
            .rev()
            .collect();
        let mut out: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(c) = pending.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    out.pop();
                    continue;
                }
                _ => {}
            }
            out.push(c);
            if pending.is_empty() && !follow_last {
                break;
            }
            if let Some((host, m)) = self.lookup(&out) {
                if m.file_type().is_symlink() {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(format!("too many levels of symbolic links in {path}"));
                    }
                    let target = fs::read_link(&host)
                        .map_err(|e| format!("cannot read symlink {}: {e}", host.display()))?;
                    let target = target.to_string_lossy().into_owned();
                    out.pop();
                    if target.starts_with('/') {
                        out.clear();
                    }
                    pending.extend(
                        target
                            .split('/')
                            .filter(|c| !c.is_empty())
                            .map(str::to_string)
                            .rev(),
                    );
                }
            }
        }
        Ok(out)
    }

    /// The merged entries of the directory at `comps` (resolved): name to host path.
    pub fn read_dir(&self, comps: &[String]) -> BTreeMap<String, PathBuf> {
        let mut seen: BTreeMap<String, Option<PathBuf>> = BTreeMap::new();
        for layer in self.layers.iter().rev() {
            let mut p = layer.clone();
            let mut ok = true;
            let mut stop = false;
            for c in comps {
                p.push(c);
                match fs::symlink_metadata(&p) {
                    Ok(m) if is_whiteout(&m) => stop = true,
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => stop = true,
                    Err(_) => ok = false,
                }
                if stop || !ok {
                    break;
                }
            }
            if stop {
                break;
            }
            if !ok {
                continue;
            }
            if let Ok(rd) = fs::read_dir(&p) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if seen.contains_key(&name) {
                        continue;
                    }
                    let whiteout = e.metadata().is_ok_and(|m| is_whiteout(&m));
                    seen.insert(name, (!whiteout).then(|| e.path()));
                }
            }
            if is_opaque(&p) {
                break;
            }
        }
        seen.into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    }

    /// Reads a small regular file of the image (e.g. `/etc/passwd`), following symlinks.
    pub fn read_file(&self, path: &str) -> Option<String> {
        let comps = self.resolve(path, true).ok()?;
        let (host, m) = self.lookup(&comps)?;
        if !m.is_file() || m.len() > 4 << 20 {
            return None;
        }
        fs::read_to_string(host).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn upper_layers_win_whiteouts_hide_and_symlinks_resolve() {
        let tmp = tempfile::tempdir().unwrap();
        let l1 = tmp.path().join("l1");
        let l2 = tmp.path().join("l2");
        fs::create_dir_all(l1.join("usr/bin")).unwrap();
        fs::create_dir_all(l1.join("etc")).unwrap();
        fs::write(l1.join("etc/a"), "a1").unwrap();
        fs::write(l1.join("etc/b"), "b1").unwrap();
        symlink("usr/bin", l1.join("bin")).unwrap();
        fs::create_dir_all(l2.join("etc")).unwrap();
        fs::write(l2.join("etc/a"), "a2").unwrap();
        let whiteout = rustix::fs::mknodat(
            rustix::fs::CWD,
            l2.join("etc/b"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            0,
        )
        .is_ok();
        let v = LayerView::new(vec![l1.clone(), l2.clone()]);
        assert_eq!(v.read_file("/etc/a").as_deref(), Some("a2"));
        assert_eq!(
            v.resolve("/bin/tool", false).unwrap(),
            ["usr", "bin", "tool"]
        );
        assert_eq!(v.resolve("/bin/../etc", true).unwrap(), ["usr", "etc"]);
        if whiteout {
            assert_eq!(v.read_file("/etc/b"), None);
            let names: Vec<String> = v.read_dir(&["etc".to_string()]).into_keys().collect();
            assert_eq!(names, ["a"]);
        }
    }
}
