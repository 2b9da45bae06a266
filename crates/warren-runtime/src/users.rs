//! Resolves user names inside a workspace's filesystem (`/etc/passwd`, `/etc/group`).

use std::path::{Path, PathBuf};

use crate::spec::User;

/// Resolves `user` (a name, a uid, or `uid:gid`) against the passwd and group files of the root
/// filesystem at `rootfs` (symlinks resolve inside it: see [`crate::inroot`]).
pub fn resolve(rootfs: &Path, user: &str) -> Result<User, String> {
    resolve_with(user, |rel| crate::inroot::read_to_string(rootfs, rel).ok())
}

/// Like [`resolve`], reading files from image layers (bottom first) under an overlay `upper` dir,
/// without mounting anything.
pub fn resolve_in_layers(layers: &[PathBuf], upper: &Path, user: &str) -> Result<User, String> {
    resolve_with(user, |rel| {
        std::iter::once(upper)
            .chain(layers.iter().rev().map(|p| p.as_path()))
            .find_map(|d| crate::inroot::read_to_string(d, rel).ok())
    })
}

fn resolve_with(user: &str, read: impl Fn(&str) -> Option<String>) -> Result<User, String> {
    let (who, group) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read("etc/passwd").unwrap_or_default();
    let entry = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 7 && (f[0] == who || f[2] == who)).then(|| {
            (
                f[0].to_string(),
                f[2].parse::<u32>().ok(),
                f[3].parse::<u32>().ok(),
                f[5].to_string(),
                Some(f[6].trim())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            )
        })
    });
    let (name, uid, gid, home, shell) = match entry {
        Some((n, Some(u), Some(g), h, sh)) => (Some(n), u, g, h, sh),
        _ => match who.parse::<u32>() {
            Ok(uid) => (None, uid, uid, "/".to_string(), None),
            Err(_) => {
                return Err(format!(
                    "user `{who}` does not exist in the workspace image (no entry in /etc/passwd)"
                ))
            }
        },
    };
    let groups = read("etc/group").unwrap_or_default();
    let gid = match group {
        None => gid,
        Some(g) => g
            .parse::<u32>()
            .ok()
            .or_else(|| {
                groups.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() >= 3 && f[0] == g)
                        .then(|| f[2].parse().ok())
                        .flatten()
                })
            })
            .ok_or_else(|| format!("group `{g}` does not exist in the workspace image"))?,
    };
    let mut additional_gids: Vec<u32> = match &name {
        Some(n) => groups
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 4 && f[3].split(',').any(|m| m == n))
                    .then(|| f[2].parse().ok())
                    .flatten()
            })
            .collect(),
        None => vec![],
    };
    additional_gids.retain(|g| *g != gid);
    Ok(User {
        uid,
        gid,
        additional_gids,
        home,
        name,
        shell,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(rel: &str) -> Option<String> {
        match rel {
            "etc/passwd" => {
                Some("root:x:0:0:root:/root:/bin/sh\ndev:x:1000:1000::/home/dev:/bin/bash\n".into())
            }
            "etc/group" => {
                Some("root:x:0:\ndev:x:1000:\ndocker:x:998:dev\nstaff:x:50:dev,other\n".into())
            }
            _ => None,
        }
    }

    #[test]
    fn names_uids_and_groups_resolve_from_the_image() {
        let u = resolve_with("dev", files).unwrap();
        assert_eq!((u.uid, u.gid, u.home.as_str()), (1000, 1000, "/home/dev"));
        assert_eq!(u.additional_gids, vec![998, 50]);
        assert_eq!(
            resolve_with("1000", files).unwrap().name.as_deref(),
            Some("dev")
        );
        assert_eq!(resolve_with("dev:docker", files).unwrap().gid, 998);
        let anon = resolve_with("4242", files).unwrap();
        assert_eq!((anon.uid, anon.gid, anon.name), (4242, 4242, None));
    }

    #[test]
    fn unknown_users_and_groups_are_errors_naming_them() {
        assert!(resolve_with("nobody-here", files)
            .unwrap_err()
            .contains("nobody-here"));
        assert!(resolve_with("dev:nogroup", files)
            .unwrap_err()
            .contains("nogroup"));
    }
}
