//! Warren's default seccomp profile: deny by default, allow the syscalls ordinary development work needs.
//!
//! Same intent as Docker's default profile: no mounting, no kernel modules or kexec, no keyrings, no BPF
//! or perf, no new namespaces (`unshare`, `setns`, namespace flags to `clone`), no clock changes, no
//! io_uring, no handle-based file opening. `clone3` answers ENOSYS so libc falls back to `clone`, whose
//! flags can be checked.

use serde_json::{json, Value};

use crate::seccomp_list::ALLOWED_X86_64;

/// Namespace-creating clone flags (CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET).
pub const CLONE_NS_FLAGS: u64 = 0x7E02_0000;

const ENOSYS: u32 = 38;

/// `AF_VSOCK`: sockets to the hypervisor host, which network namespaces do not isolate.
const AF_VSOCK: u64 = 40;

/// Address families after AF_VSOCK that stay allowed (AF_KCM .. AF_MCTP).
const FAMILIES_ABOVE_VSOCK: &[u64] = &[41, 42, 43, 44, 45];

/// The `personality(2)` values allowed (Linux, ADDR_NO_RANDOMIZE-free variants Docker allows, and the
/// query value 0xffffffff).
const PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];
const EPERM: u32 = 1;

/// The OCI `linux.seccomp` object.
pub fn profile() -> Value {
    let mut rules = vec![
        json!({ "names": ALLOWED_X86_64, "action": "SCMP_ACT_ALLOW" }),
        json!({ "names": ["clone"], "action": "SCMP_ACT_ALLOW",
          "args": [{ "index": 0, "value": CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }] }),
        json!({ "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS }),
        // Address families below AF_VSOCK, compared as 64-bit values so that high bits cannot smuggle
        // a 40 past the check (the kernel truncates the argument to an int).
        json!({ "names": ["socket"], "action": "SCMP_ACT_ALLOW",
          "args": [{ "index": 0, "value": AF_VSOCK, "op": "SCMP_CMP_LT" }] }),
    ];
    rules.extend(FAMILIES_ABOVE_VSOCK.iter().map(|f| {
        json!({ "names": ["socket"], "action": "SCMP_ACT_ALLOW",
          "args": [{ "index": 0, "value": f, "op": "SCMP_CMP_EQ" }] })
    }));
    rules.extend(PERSONALITIES.iter().map(|p| {
        json!({ "names": ["personality"], "action": "SCMP_ACT_ALLOW",
          "args": [{ "index": 0, "value": p, "op": "SCMP_CMP_EQ" }] })
    }));
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_syscalls_are_not_allowed() {
        for bad in [
            "mount",
            "umount2",
            "kexec_load",
            "init_module",
            "finit_module",
            "keyctl",
            "bpf",
            "unshare",
            "setns",
            "perf_event_open",
            "open_by_handle_at",
            "io_uring_setup",
            "reboot",
            "pivot_root",
            "add_key",
            "clock_settime",
            "fsopen",
            "move_mount",
        ] {
            assert!(!ALLOWED_X86_64.contains(&bad), "{bad} must not be allowed");
        }
    }

    #[test]
    fn everyday_syscalls_are_allowed() {
        for ok in [
            "read", "write", "openat", "execve", "fork", "wait4", "ptrace", "mmap", "futex",
        ] {
            assert!(ALLOWED_X86_64.contains(&ok), "{ok} must be allowed");
        }
    }

    #[test]
    fn profile_parses_as_oci_seccomp() {
        let s: oci_spec::runtime::LinuxSeccomp = serde_json::from_value(profile()).unwrap();
        assert_eq!(
            s.default_action(),
            oci_spec::runtime::LinuxSeccompAction::ScmpActErrno
        );
    }
}

/// Compiles the default profile to a classic BPF program (what the kernel loads), caching it in
/// `cache_dir` keyed by the profile and libseccomp version: compiling takes milliseconds per process,
/// loading a compiled program takes microseconds.
pub fn compiled(cache_dir: &std::path::Path) -> std::io::Result<std::path::PathBuf> {
    use sha2::{Digest, Sha256};
    let v = libseccomp::ScmpVersion::current().map_err(std::io::Error::other)?;
    let key = hex::encode(Sha256::digest(format!(
        "{}|{}.{}.{}",
        profile(),
        v.major,
        v.minor,
        v.micro
    )));
    let path = cache_dir.join(format!("seccomp-{}.bpf", &key[..16]));
    if let Ok(b) = std::fs::read(&path) {
        if !b.is_empty() && b.len().is_multiple_of(8) {
            return Ok(path);
        }
    }
    std::fs::create_dir_all(cache_dir)?;
    let tmp = cache_dir.join(format!(".seccomp-{}.{}", &key[..16], std::process::id()));
    let bpf = compile(&tmp.with_extension("scratch")).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, &bpf)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn compile(scratch: &std::path::Path) -> Result<Vec<u8>, String> {
    use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
    let e = |e: libseccomp::error::SeccompError| e.to_string();
    let mut ctx = ScmpFilterContext::new(ScmpAction::Errno(EPERM as i32)).map_err(e)?;
    // x86_64 only: on i386, socket() goes through socketcall(), whose address family a filter cannot
    // see, so 32-bit programs would slip past the socket rules. They are refused instead.
    // Warren sets no_new_privs itself before loading the filter.
    ctx.set_ctl_nnp(false).map_err(e)?;
    for name in ALLOWED_X86_64 {
        // A name this libseccomp does not know cannot be allowed: it stays denied.
        if let Ok(sc) = ScmpSyscall::from_name(name) {
            ctx.add_rule(ScmpAction::Allow, sc).map_err(e)?;
        }
    }
    ctx.add_rule_conditional(
        ScmpAction::Allow,
        ScmpSyscall::from_name("clone").map_err(e)?,
        &[ScmpArgCompare::new(
            0,
            ScmpCompareOp::MaskedEqual(CLONE_NS_FLAGS),
            0,
        )],
    )
    .map_err(e)?;
    ctx.add_rule(
        ScmpAction::Errno(ENOSYS as i32),
        ScmpSyscall::from_name("clone3").map_err(e)?,
    )
    .map_err(e)?;
    let socket = ScmpSyscall::from_name("socket").map_err(e)?;
    ctx.add_rule_conditional(
        ScmpAction::Allow,
        socket,
        &[ScmpArgCompare::new(0, ScmpCompareOp::Less, AF_VSOCK)],
    )
    .map_err(e)?;
    for &f in FAMILIES_ABOVE_VSOCK {
        ctx.add_rule_conditional(
            ScmpAction::Allow,
            socket,
            &[ScmpArgCompare::new(0, ScmpCompareOp::Equal, f)],
        )
        .map_err(e)?;
    }
    for &p in PERSONALITIES {
        ctx.add_rule_conditional(
            ScmpAction::Allow,
            ScmpSyscall::from_name("personality").map_err(e)?,
            &[ScmpArgCompare::new(0, ScmpCompareOp::Equal, p)],
        )
        .map_err(e)?;
    }
    let f = std::fs::File::create(scratch).map_err(|e| e.to_string())?;
    ctx.export_bpf(&f).map_err(e)?;
    drop(f);
    let out = std::fs::read(scratch).map_err(|e| e.to_string());
    let _ = std::fs::remove_file(scratch);
    out
}

/// Installs a compiled filter on the calling thread. The caller must already have set no_new_privs.
pub fn load(bpf: &[u8]) -> std::io::Result<()> {
    if bpf.is_empty() || !bpf.len().is_multiple_of(8) || bpf.len() / 8 > u16::MAX as usize {
        return Err(std::io::Error::other("invalid seccomp program"));
    }
    let prog = libc::sock_fprog {
        len: (bpf.len() / 8) as u16,
        filter: bpf.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `bpf`, which holds `len` complete 8-byte sock_filter instructions and
    // outlives the call; the kernel copies the program.
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const libc::sock_fprog,
            0,
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod compiled_tests {
    use super::*;

    #[test]
    fn compiled_program_is_cached_and_denies_what_the_profile_denies() {
        let dir = tempfile::tempdir().unwrap();
        let path = compiled(dir.path()).unwrap();
        let a = std::fs::read(&path).unwrap();
        assert!(a.len() > 8 * 100, "a real program, not a stub");
        let cached: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(cached.len(), 1);
        assert_eq!(
            compiled(dir.path()).unwrap(),
            path,
            "second call reads the cache"
        );
        // Load it in a child process and try a denied and an allowed syscall.
        // SAFETY: the child only calls async-signal-safe functions (prctl, syscall, _exit).
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                // SAFETY: plain prctl with integer arguments.
                unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
                let ok = load(&a).is_ok();
                // SAFETY: unshare(CLONE_NEWUTS) takes an integer flag.
                let denied = unsafe { libc::unshare(libc::CLONE_NEWUTS) } == -1;
                // SAFETY: socket(2) with integer arguments; a vsock socket must be refused, TCP allowed.
                let vsock_denied =
                    unsafe { libc::socket(libc::AF_VSOCK, libc::SOCK_STREAM, 0) } == -1;
                // SAFETY: as above.
                let tcp_allowed = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) } >= 0;
                let denied = denied && vsock_denied && tcp_allowed;
                // SAFETY: getpid has no arguments.
                let allowed = unsafe { libc::getpid() } > 0;
                // SAFETY: _exit ends the child without running destructors.
                unsafe { libc::_exit(if ok && denied && allowed { 0 } else { 1 }) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                let st = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(st, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
