//! Reading the packets nftables logs to an nflog group (`log group N`): Warren's deny chains log
//! each refused connection attempt (rate-limited) with the prefix `warren:<id> `.
//!
//! A [`Listener`] is a `NETLINK_NETFILTER` socket bound to one group, in packet-copy mode (the first
//! bytes of each packet: enough for the IPv4 and transport headers).

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    /// The rule's log prefix (`warren:<id> `), without trailing NULs.
    pub prefix: String,
    /// Source address.
    pub saddr: Ipv4Addr,
    /// Destination address.
    pub daddr: Ipv4Addr,
    /// IP protocol number (6 tcp, 17 udp, 1 icmp).
    pub protocol: u8,
    /// Destination port (tcp, udp, sctp, udplite), when there is one.
    pub dport: Option<u16>,
}

impl Logged {
    /// The workspace id in a `warren:<id> ` prefix.
    pub fn workspace(&self) -> Option<&str> {
        self.prefix.strip_prefix("warren:").map(str::trim_end)
    }

    /// `tcp`, `udp`, `icmp` or the protocol number.
    pub fn protocol_name(&self) -> String {
        match self.protocol {
            1 => "icmp".into(),
            6 => "tcp".into(),
            17 => "udp".into(),
            132 => "sctp".into(),
            n => n.to_string(),
        }
    }
}

const NETLINK_NETFILTER: i32 = 12;
const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_CFG_CMD_UNBIND: u8 = 2;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const NFGEN_HDRLEN: usize = 4;

/// A netlink socket receiving the packets logged to one nflog group.
pub struct Listener {
    sock: OwnedFd,
    group: u16,
    buf: Vec<u8>,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn attr(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(data);
    out.resize(align4(out.len()), 0);
}

/// A config message for `group` with one attribute.
fn config_msg(group: u16, family: u8, attrs: &[(u16, Vec<u8>)], seq: u32) -> Vec<u8> {
    let mut body = vec![family, 0];
    body.extend_from_slice(&group.to_be_bytes());
    for (k, d) in attrs {
        attr(&mut body, *k, d);
    }
    let mut m = Vec::new();
    let len = (NLMSG_HDRLEN + body.len()) as u32;
    m.extend_from_slice(&len.to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&body);
    m
}

impl Listener {
    /// Binds a new socket to nflog `group` (only one listener per group on a host: a second gets
    /// "busy").
    pub fn bind(group: u16) -> std::io::Result<Listener> {
        // SAFETY: socket(2) with constant arguments; a non-negative result is a new descriptor.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; all zeroes is valid (pid 0: the kernel picks).
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `sa` is a valid sockaddr_nl that outlives the call, with its exact size.
        let rc = unsafe {
            libc::bind(
                sock.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut l = Listener {
            sock,
            group,
            buf: vec![0u8; 1 << 16],
        };
        // A previous listener that died may still hold the group in the kernel's eyes: unbind first
        // (an error just means nobody did).
        let _ = l.request(&config_msg(
            group,
            0,
            &[(NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_UNBIND])],
            1,
        ));
        l.request(&config_msg(
            group,
            0,
            &[(NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_BIND])],
            2,
        ))?;
        // Copy mode: the first 128 bytes of each packet.
        let mut mode = 128u32.to_be_bytes().to_vec();
        mode.push(NFULNL_COPY_PACKET);
        mode.push(0);
        l.request(&config_msg(group, 0, &[(NFULA_CFG_MODE, mode)], 3))?;
        Ok(l)
    }

    /// The group listened to.
    pub fn group(&self) -> u16 {
        self.group
    }

    fn request(&mut self, msg: &[u8]) -> std::io::Result<()> {
        // SAFETY: `msg` is a valid buffer of its length; a null address sends to the kernel (the
        // socket is unconnected, so the default destination, pid 0, is the kernel).
        let n = unsafe { libc::send(self.sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Wait for the ack (an NLMSG_ERROR with error 0), skipping logged packets in between.
        for _ in 0..64 {
            let n = self.recv_raw(Some(Duration::from_secs(2)))?;
            let mut off = 0;
            while off + NLMSG_HDRLEN <= n {
                let len =
                    u32::from_ne_bytes(self.buf[off..off + 4].try_into().expect("4")) as usize;
                let kind = u16::from_ne_bytes(self.buf[off + 4..off + 6].try_into().expect("2"));
                if len < NLMSG_HDRLEN || off + len > n {
                    break;
                }
                if kind == NLMSG_ERROR && len >= NLMSG_HDRLEN + 4 {
                    let e = i32::from_ne_bytes(
                        self.buf[off + NLMSG_HDRLEN..off + NLMSG_HDRLEN + 4]
                            .try_into()
                            .expect("4"),
                    );
                    return if e == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::from_raw_os_error(-e))
                    };
                }
                off += align4(len);
            }
        }
        Err(std::io::Error::other("no answer from nfnetlink_log"))
    }

    fn recv_raw(&mut self, timeout: Option<Duration>) -> std::io::Result<usize> {
        if let Some(t) = timeout {
            let mut fds = [nix::poll::PollFd::new(
                self.sock.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let ms = nix::poll::PollTimeout::try_from(t.as_millis().min(i32::MAX as u128) as i32)
                .unwrap_or(nix::poll::PollTimeout::MAX);
            if nix::poll::poll(&mut fds, ms).map_err(std::io::Error::from)? == 0 {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
        }
        // SAFETY: `buf` is a valid writable buffer of its length for the duration of the call.
        let n = unsafe {
            libc::recv(
                self.sock.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Waits up to `timeout` (forever when `None`) for logged packets; those of one datagram. A
    /// timeout returns an empty list. ENOBUFS (the kernel dropped messages: too slow) is reported as
    /// an empty list too, since what was lost cannot be had.
    pub fn recv(&mut self, timeout: Option<Duration>) -> std::io::Result<Vec<Logged>> {
        let n = match self.recv_raw(timeout) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => return Ok(Vec::new()),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(parse_datagram(&self.buf[..n]))
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// Every logged packet in a netlink datagram.
pub fn parse_datagram(buf: &[u8]) -> Vec<Logged> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + NLMSG_HDRLEN <= buf.len() {
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().expect("4")) as usize;
        let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().expect("2"));
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            break;
        }
        if kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
            if let Some(l) = parse_packet(&buf[off + NLMSG_HDRLEN..off + len]) {
                out.push(l);
            }
        }
        off += align4(len);
    }
    out
}

fn parse_packet(msg: &[u8]) -> Option<Logged> {
    let mut off = NFGEN_HDRLEN;
    let (mut prefix, mut payload) = (None, None);
    while off + 4 <= msg.len() {
        let len = u16::from_ne_bytes(msg[off..off + 2].try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(msg[off + 2..off + 4].try_into().ok()?) & 0x3fff;
        if len < 4 || off + len > msg.len() {
            break;
        }
        let data = &msg[off + 4..off + len];
        match kind {
            NFULA_PREFIX => {
                let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
                prefix = Some(String::from_utf8_lossy(&data[..end]).into_owned());
            }
            NFULA_PAYLOAD => payload = Some(data),
            _ => {}
        }
        off += align4(len);
    }
    let p = payload?;
    if p.len() < 20 || p[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(p[0] & 0x0f) * 4;
    let protocol = p[9];
    let saddr = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
    let daddr = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
    let dport = match protocol {
        6 | 17 | 132 | 136 if p.len() >= ihl + 4 => {
            Some(u16::from_be_bytes([p[ihl + 2], p[ihl + 3]]))
        }
        _ => None,
    };
    Some(Logged {
        prefix: prefix.unwrap_or_default(),
        saddr,
        daddr,
        protocol,
        dport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_logged_tcp_syn() {
        let mut ip = vec![
            0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 10, 250, 0, 2, 203, 0, 113, 1,
        ];
        ip.extend_from_slice(&[0xc0, 0x00, 0x1f, 0x90, 0, 0, 0, 0]);
        let mut body = vec![2u8, 0, 0, 7];
        attr(&mut body, NFULA_PREFIX, b"warren:abc \0");
        attr(&mut body, NFULA_PAYLOAD, &ip);
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&body);
        let got = parse_datagram(&m);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].workspace(), Some("abc"));
        assert_eq!(got[0].daddr, Ipv4Addr::new(203, 0, 113, 1));
        assert_eq!(got[0].dport, Some(8080));
        assert_eq!(got[0].protocol_name(), "tcp");
        assert!(parse_datagram(&m[..20]).is_empty());
    }
}
