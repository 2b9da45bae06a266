//! The supervisor's control protocol: one JSON document per `SOCK_SEQPACKET` message, with file
//! descriptors (stdio pipes, PTY masters) passed alongside as `SCM_RIGHTS`.
//!
//! Message boundaries come from the socket type, so there is no framing to get wrong, and a message's
//! descriptors always arrive with the message they belong to.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{
    connect, recvmsg, sendmsg, socket, AddressFamily, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType, UnixAddr,
};
use serde::{Deserialize, Serialize};

/// Largest message either side sends.
pub const MAX_MSG: usize = 256 * 1024;
const MAX_FDS: usize = 4;

/// A process to start inside a running workspace.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExecProcess {
    /// argv; `argv[0]` is looked up in the workspace's PATH.
    pub argv: Vec<String>,
    /// Extra `KEY=VALUE` entries on top of the workspace's environment.
    pub env: Vec<String>,
    /// Working directory inside the workspace (default: the user's home, else `/`).
    pub cwd: Option<String>,
    /// User name or numeric uid (default: the workspace's container user).
    pub user: Option<String>,
    /// Allocate a PTY of this size (rows, cols); `None` passes three stdio descriptors instead.
    pub tty: Option<(u16, u16)>,
    /// Not tied to the connection that started it: no hangup when that connection goes away (a
    /// background runner). Its exit is not reported; the supervisor reaps it.
    #[serde(default)]
    pub detach: bool,
    /// Run the user's login shell from the workspace's `/etc/passwd` (as `SHELL -l`) instead of
    /// `argv`, when it names an executable that is not `nologin`/`false`; `argv` otherwise.
    #[serde(default)]
    pub login_shell: bool,
}

/// Client to supervisor.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start a process; stdin, stdout and stderr descriptors come with the message unless `tty` is set.
    Exec {
        /// What to run.
        process: ExecProcess,
    },
    /// Deliver a signal to the process this connection started.
    Signal {
        /// Signal number.
        signal: i32,
    },
    /// Report the workspace init's pid.
    Status,
    /// Stop the workspace: SIGTERM to its init, SIGKILL to everything after `timeout_ms`.
    Stop {
        /// Grace period.
        timeout_ms: u64,
    },
    /// Make an unconnected TCP socket in the workspace's network namespace; it comes back with
    /// `Response::Socket`.
    Socket {
        /// IPv6 rather than IPv4.
        ipv6: bool,
    },
    /// List the TCP ports listened on in the workspace's network namespace.
    Ports,
}

/// Supervisor to client.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// The process started; the PTY master comes with this message when one was asked for.
    Started {
        /// Host pid of the process.
        pid: i32,
    },
    /// The process exited: its exit code, or 128 + signal number when a signal killed it.
    Exited {
        /// Exit code.
        code: i32,
    },
    /// Answer to `Status`.
    Status {
        /// Host pid of the workspace init.
        init_pid: i32,
    },
    /// The workspace stopped.
    Stopped {
        /// Exit code of its init.
        code: i32,
    },
    /// Answer to `Socket`; the socket comes with this message.
    Socket,
    /// Answer to `Ports`.
    Ports {
        /// Listening sockets, by port.
        ports: Vec<crate::net::ListeningPort>,
    },
    /// The request failed.
    Error {
        /// One line saying why.
        message: String,
        /// The caller's command could not be run (not found, not executable, a bad working
        /// directory): the caller's mistake, not the workspace's.
        #[serde(default)]
        command: bool,
    },
}

/// Sends one message with `fds` attached.
pub fn send<T: Serialize>(sock: BorrowedFd<'_>, msg: &T, fds: &[RawFd]) -> std::io::Result<()> {
    let data = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    let iov = [IoSlice::new(&data)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sock.as_raw_fd(), &iov, cmsgs, MsgFlags::MSG_NOSIGNAL, None) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receives one message and the descriptors that came with it. `Ok(None)` means the peer hung up.
pub fn recv<T: for<'de> Deserialize<'de>>(
    sock: BorrowedFd<'_>,
) -> std::io::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MSG];
    let mut cmsg_space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let (len, fds) = loop {
        let mut iov = [IoSliceMut::new(&mut buf)];
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg_space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => {
                let mut fds = Vec::new();
                for c in m.cmsgs().map_err(std::io::Error::from)? {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        for fd in raw {
                            // SAFETY: the kernel just installed `fd` in our table for this message; nobody
                            // else owns it.
                            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
                break (m.bytes, fds);
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if len == 0 {
        return Ok(None);
    }
    let msg = serde_json::from_slice(&buf[..len])
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    Ok(Some((msg, fds)))
}

/// Connects to a supervisor's control socket.
pub fn connect_to(path: &Path) -> std::io::Result<OwnedFd> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(path)?;
    connect(fd.as_raw_fd(), &addr)?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::socketpair;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    #[test]
    fn messages_and_descriptors_arrive_together() {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let req = Request::Exec {
            process: ExecProcess {
                argv: vec!["echo".into(), "hi".into()],
                ..Default::default()
            },
        };
        send(a.as_fd(), &req, &[w.as_raw_fd()]).unwrap();
        drop(w);
        let (got, fds): (Request, _) = recv(b.as_fd()).unwrap().unwrap();
        assert_eq!(got, req);
        assert_eq!(fds.len(), 1);
        let mut f = std::fs::File::from(fds.into_iter().next().unwrap());
        f.write_all(b"through the passed pipe").unwrap();
        drop(f);
        let mut s = String::new();
        std::fs::File::from(r).read_to_string(&mut s).unwrap();
        assert_eq!(s, "through the passed pipe");
        drop(a);
        assert!(
            recv::<Request>(b.as_fd()).unwrap().is_none(),
            "hang-up is None"
        );
    }
}
