//! Reads and cleans up workspace cgroups on cgroup v1, v2 and hybrid hosts.
//!
//! The OCI runtime creates and deletes cgroups; this module only reads usage and removes what a crashed
//! supervisor left behind.

use std::path::{Path, PathBuf};

const ROOT: &str = "/sys/fs/cgroup";
const V1_CONTROLLERS: &[&str] = &[
    "memory", "pids", "cpu", "cpuacct", "cpuset", "devices", "freezer", "blkio", "systemd",
    "unified",
];

/// Resource usage of one workspace.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Memory charged to the workspace, in bytes.
    pub memory_bytes: Option<u64>,
    /// Memory limit, in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Number of tasks.
    pub pids: Option<u64>,
    /// CPU time used, in nanoseconds.
    pub cpu_ns: Option<u64>,
}

fn is_v2() -> bool {
    Path::new(ROOT).join("cgroup.controllers").exists()
}

fn read_u64(p: PathBuf) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Every existing cgroup directory of `rel` (e.g. `/warren/abc`) across hierarchies.
pub fn dirs(rel: &str) -> Vec<PathBuf> {
    let rel = rel.trim_start_matches('/');
    if is_v2() {
        return vec![Path::new(ROOT).join(rel)]
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
    }
    V1_CONTROLLERS
        .iter()
        .map(|c| Path::new(ROOT).join(c).join(rel))
        .filter(|p| p.is_dir())
        .collect()
}

/// Usage of the cgroup `rel`.
pub fn stats(rel: &str) -> Stats {
    let rel = rel.trim_start_matches('/');
    let r = Path::new(ROOT);
    if is_v2() {
        let d = r.join(rel);
        let cpu = std::fs::read_to_string(d.join("cpu.stat"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| {
                        l.strip_prefix("usage_usec ")
                            .and_then(|v| v.trim().parse::<u64>().ok())
                    })
                    .map(|us| us * 1000)
            });
        return Stats {
            memory_bytes: read_u64(d.join("memory.current")),
            memory_limit_bytes: read_u64(d.join("memory.max")),
            pids: read_u64(d.join("pids.current")),
            cpu_ns: cpu,
        };
    }
    let limit = read_u64(r.join("memory").join(rel).join("memory.limit_in_bytes"))
        .filter(|l| *l < (1 << 62));
    Stats {
        memory_bytes: read_u64(r.join("memory").join(rel).join("memory.usage_in_bytes")),
        memory_limit_bytes: limit,
        pids: read_u64(r.join("pids").join(rel).join("pids.current")),
        cpu_ns: read_u64(r.join("cpuacct").join(rel).join("cpuacct.usage")),
    }
}

/// Kills every process left in the cgroup `rel` and removes its directories. Idempotent.
pub fn remove(rel: &str) -> std::io::Result<()> {
    for d in dirs(rel) {
        for _ in 0..50 {
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            let pids: Vec<i32> = procs
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Nested cgroups (created by the runtime for exec'd processes) go first.
        let mut children: Vec<PathBuf> = walk(&d);
        children.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for c in children {
            let _ = std::fs::remove_dir(&c);
        }
        match std::fs::remove_dir(&d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(d) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                out.extend(walk(&e.path()));
                out.push(e.path());
            }
        }
    }
    out
}

/// Pids of every process in the cgroup `rel` and its descendants (from the first hierarchy that has it).
pub fn pids(rel: &str) -> Vec<i32> {
    let Some(d) = dirs(rel).into_iter().next() else {
        return Vec::new();
    };
    let mut all = vec![d.clone()];
    all.extend(walk(&d));
    all.iter()
        .flat_map(|c| {
            std::fs::read_to_string(c.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}
