//! SFTP's wire format: big-endian integers, length-prefixed strings, attributes. Every read is
//! bounds-checked; a short or inconsistent packet is [`Malformed`], never a panic.

use std::path::PathBuf;

/// A request that does not parse.
#[derive(Debug)]
pub struct Malformed;

pub type Parse<T> = Result<T, Malformed>;

const ATTR_SIZE: u32 = 0x1;
const ATTR_UIDGID: u32 = 0x2;
const ATTR_PERMISSIONS: u32 = 0x4;
const ATTR_ACMODTIME: u32 = 0x8;
const ATTR_EXTENDED: u32 = 0x8000_0000;

/// File attributes (version 3): each field optional.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Attrs {
    pub size: Option<u64>,
    pub uid_gid: Option<(u32, u32)>,
    pub perms: Option<u32>,
    /// (atime, mtime) in seconds.
    pub times: Option<(u32, u32)>,
}

/// Reads a request's fields in order.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Parse<&'a [u8]> {
        if self.buf.len() < n {
            return Err(Malformed);
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }

    pub fn u32(&mut self) -> Parse<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Parse<u64> {
        let hi = self.u32()? as u64;
        let lo = self.u32()? as u64;
        Ok(hi << 32 | lo)
    }

    pub fn string(&mut self) -> Parse<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    pub fn attrs(&mut self) -> Parse<Attrs> {
        let flags = self.u32()?;
        let mut a = Attrs::default();
        if flags & ATTR_SIZE != 0 {
            a.size = Some(self.u64()?);
        }
        if flags & ATTR_UIDGID != 0 {
            a.uid_gid = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_PERMISSIONS != 0 {
            a.perms = Some(self.u32()?);
        }
        if flags & ATTR_ACMODTIME != 0 {
            a.times = Some((self.u32()?, self.u32()?));
        }
        if flags & ATTR_EXTENDED != 0 {
            let n = self.u32()?;
            for _ in 0..n {
                // Each pair needs at least 8 bytes, so a huge count runs out of packet quickly.
                self.string()?;
                self.string()?;
            }
        }
        Ok(a)
    }

    /// Nothing may follow the last field.
    pub fn end(&self) -> Parse<()> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(Malformed)
        }
    }

    /// A path as the request's last field.
    pub fn end_path(&mut self) -> Result<PathBuf, super::Fail> {
        let p = super::path_of(self.string()?)?;
        self.end()?;
        Ok(p)
    }
}

/// The u32s packed in a string (users-groups-by-id@openssh.com).
pub fn ids(b: &[u8]) -> Parse<Vec<u32>> {
    let chunks = b.chunks_exact(4);
    if !chunks.remainder().is_empty() {
        return Err(Malformed);
    }
    Ok(chunks
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// One outgoing packet: `begin` its type, add fields, `finish` for the framed bytes.
#[derive(Default)]
pub struct Out {
    buf: Vec<u8>,
}

impl Out {
    pub fn begin(&mut self, kind: u8) {
        self.buf.clear();
        self.buf.extend_from_slice(&[0, 0, 0, 0, kind]);
    }

    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    pub fn string(&mut self, s: &[u8]) {
        self.u32(u32::try_from(s.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(s);
    }

    pub fn attrs(&mut self, a: &Attrs) {
        let mut flags = 0;
        if a.size.is_some() {
            flags |= ATTR_SIZE;
        }
        if a.uid_gid.is_some() {
            flags |= ATTR_UIDGID;
        }
        if a.perms.is_some() {
            flags |= ATTR_PERMISSIONS;
        }
        if a.times.is_some() {
            flags |= ATTR_ACMODTIME;
        }
        self.u32(flags);
        if let Some(s) = a.size {
            self.u64(s);
        }
        if let Some((u, g)) = a.uid_gid {
            self.u32(u);
            self.u32(g);
        }
        if let Some(p) = a.perms {
            self.u32(p);
        }
        if let Some((at, mt)) = a.times {
            self.u32(at);
            self.u32(mt);
        }
    }

    /// A string of `name(id)` strings, empty for unknown ids (users-groups-by-id@openssh.com).
    pub fn u32_list_names(&mut self, ids: &[u32], name: impl Fn(u32) -> Option<String>) {
        let mut inner = Out::default();
        for id in ids {
            inner.string(name(*id).unwrap_or_default().as_bytes());
        }
        self.string(&inner.buf);
    }

    /// A string of at most `max` bytes filled by `fill`, which returns how many it wrote.
    pub fn read_string_from(
        &mut self,
        max: usize,
        fill: impl FnOnce(&mut [u8]) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        let at = self.buf.len();
        self.u32(0);
        self.buf.resize(at + 4 + max, 0);
        let n = fill(&mut self.buf[at + 4..])?.min(max);
        self.buf.truncate(at + 4 + n);
        self.buf[at..at + 4].copy_from_slice(&(n as u32).to_be_bytes());
        Ok(n)
    }

    /// The framed packet (length first).
    pub fn finish(&mut self) -> Vec<u8> {
        let mut b = std::mem::take(&mut self.buf);
        if b.len() >= 4 {
            let n = (b.len() - 4) as u32;
            b[..4].copy_from_slice(&n.to_be_bytes());
        }
        b
    }
}
