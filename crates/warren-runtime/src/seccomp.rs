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
const EPERM: u32 = 1;

/// The OCI `linux.seccomp` object.
pub fn profile() -> Value {
    json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": EPERM,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            { "names": ALLOWED_X86_64, "action": "SCMP_ACT_ALLOW" },
            { "names": ["clone"], "action": "SCMP_ACT_ALLOW",
              "args": [{ "index": 0, "value": CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ" }] },
            { "names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS }
        ]
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
            "read", "write", "openat", "execve", "fork", "wait4", "ptrace", "socket", "mmap",
            "futex",
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
