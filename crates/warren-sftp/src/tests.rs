//! The protocol against a temporary directory, in process (the real clients run in
//! `warren-server`'s `ssh_sftp` tests).

use super::*;
use wire::Reader;

fn pkt(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 1) as u32).to_be_bytes().to_vec();
    v.push(kind);
    v.extend_from_slice(body);
    v
}

struct B(Vec<u8>);

impl B {
    fn new(id: u32) -> B {
        B(id.to_be_bytes().to_vec())
    }
    fn u32(mut self, v: u32) -> B {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn u64(mut self, v: u64) -> B {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }
    fn s(mut self, v: impl AsRef<[u8]>) -> B {
        let v = v.as_ref();
        self = self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        self
    }
}

fn init() -> Vec<u8> {
    pkt(FXP_INIT, &3u32.to_be_bytes())
}

/// Reply packets: (type, body).
type Replies = Vec<(u8, Vec<u8>)>;

/// Runs a session over `input`; returns the reply packets and the result.
fn session(input: Vec<u8>) -> (Replies, Result<(), String>) {
    let mut out = Vec::new();
    let r = serve(std::io::Cursor::new(input), &mut out);
    let mut replies = vec![];
    let mut rest = &out[..];
    while rest.len() >= 5 {
        let n = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        replies.push((rest[4], rest[5..4 + n].to_vec()));
        rest = &rest[4 + n..];
    }
    assert!(rest.is_empty(), "trailing bytes in the output");
    (replies, r)
}

fn status_of(reply: &(u8, Vec<u8>)) -> (u32, u32, String) {
    assert_eq!(reply.0, FXP_STATUS, "{reply:?}");
    let mut r = Reader::new(&reply.1);
    let id = r.u32().unwrap();
    let code = r.u32().unwrap();
    let msg = String::from_utf8_lossy(r.string().unwrap()).into_owned();
    (id, code, msg)
}

fn handle_of(reply: &(u8, Vec<u8>)) -> Vec<u8> {
    assert_eq!(reply.0, FXP_HANDLE, "{reply:?}");
    let mut r = Reader::new(&reply.1);
    r.u32().unwrap();
    r.string().unwrap().to_vec()
}

#[test]
fn version_3_with_openssh_extensions() {
    let (replies, r) = session(init());
    r.unwrap();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].0, FXP_VERSION);
    let mut p = Reader::new(&replies[0].1);
    assert_eq!(p.u32().unwrap(), 3);
    let mut names = vec![];
    while let Ok(n) = p.string() {
        names.push(String::from_utf8_lossy(n).into_owned());
        p.string().unwrap();
    }
    for want in [
        "posix-rename@openssh.com",
        "statvfs@openssh.com",
        "fsync@openssh.com",
        "hardlink@openssh.com",
        "limits@openssh.com",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
}

#[test]
fn files_are_written_read_renamed_linked_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let f = d.join("a.txt");
    let fs_ = f.to_str().unwrap();
    // Open for writing (create, truncate, mode 0640), write at two offsets, close.
    let mut input = init();
    input.extend(pkt(
        FXP_OPEN,
        &B::new(1)
            .s(fs_)
            .u32(FXF_WRITE | FXF_CREAT | FXF_TRUNC)
            .u32(0x4)
            .u32(0o640)
            .0,
    ));
    let (replies, r) = session(input.clone());
    r.unwrap();
    let h = handle_of(&replies[1]);
    input.extend(pkt(FXP_WRITE, &B::new(2).s(&h).u64(0).s(b"hello ").0));
    input.extend(pkt(FXP_WRITE, &B::new(3).s(&h).u64(6).s(b"world").0));
    input.extend(pkt(FXP_CLOSE, &B::new(4).s(&h).0));
    // Read it back: data, then EOF.
    input.extend(pkt(FXP_OPEN, &B::new(5).s(fs_).u32(FXF_READ).u32(0).0));
    let (replies, r) = session(input.clone());
    r.unwrap();
    let h2 = handle_of(&replies[5]);
    input.extend(pkt(FXP_READ, &B::new(6).s(&h2).u64(0).u32(1 << 30).0));
    input.extend(pkt(FXP_READ, &B::new(7).s(&h2).u64(11).u32(10).0));
    input.extend(pkt(FXP_CLOSE, &B::new(8).s(&h2).0));
    // A stale handle after close.
    input.extend(pkt(FXP_READ, &B::new(9).s(&h2).u64(0).u32(10).0));
    // RENAME refuses to replace; posix-rename replaces.
    let g = d.join("b.txt");
    std::fs::write(&g, "old").unwrap();
    input.extend(pkt(FXP_RENAME, &B::new(10).s(fs_).s(g.to_str().unwrap()).0));
    input.extend(pkt(
        FXP_EXTENDED,
        &B::new(11)
            .s("posix-rename@openssh.com")
            .s(fs_)
            .s(g.to_str().unwrap())
            .0,
    ));
    // Symlink (OpenSSH order: target, then link) and readlink.
    let l = d.join("link");
    input.extend(pkt(
        FXP_SYMLINK,
        &B::new(12).s("b.txt").s(l.to_str().unwrap()).0,
    ));
    input.extend(pkt(FXP_READLINK, &B::new(13).s(l.to_str().unwrap()).0));
    input.extend(pkt(FXP_STAT, &B::new(14).s(l.to_str().unwrap()).0));
    input.extend(pkt(FXP_REMOVE, &B::new(15).s(l.to_str().unwrap()).0));
    input.extend(pkt(FXP_REMOVE, &B::new(16).s(l.to_str().unwrap()).0));
    let (replies, r) = session(input);
    r.unwrap();
    assert_eq!(status_of(&replies[2]).1, FX_OK);
    assert_eq!(status_of(&replies[3]).1, FX_OK);
    assert_eq!(status_of(&replies[4]).1, FX_OK);
    assert_eq!(replies[6].0, FXP_DATA);
    let mut p = Reader::new(&replies[6].1);
    assert_eq!(p.u32().unwrap(), 6);
    assert_eq!(p.string().unwrap(), b"hello world");
    assert_eq!(status_of(&replies[7]).1, FX_EOF);
    assert_eq!(status_of(&replies[9]).1, FX_FAILURE);
    assert_eq!(status_of(&replies[10]).1, FX_FAILURE, "no replace");
    assert_eq!(status_of(&replies[11]).1, FX_OK);
    assert_eq!(std::fs::read_to_string(&g).unwrap(), "hello world");
    assert!(!f.exists());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&g).unwrap().permissions().mode() & 0o777,
        0o640 & !current_umask()
    );
    assert_eq!(status_of(&replies[12]).1, FX_OK);
    let mut p = Reader::new(&replies[13].1);
    assert_eq!(replies[13].0, FXP_NAME);
    p.u32().unwrap();
    assert_eq!(p.u32().unwrap(), 1);
    assert_eq!(p.string().unwrap(), b"b.txt");
    assert_eq!(replies[14].0, FXP_ATTRS);
    let mut p = Reader::new(&replies[14].1);
    p.u32().unwrap();
    assert_eq!(p.attrs().unwrap().size, Some(11), "STAT follows the link");
    assert_eq!(status_of(&replies[15]).1, FX_OK);
    assert_eq!(status_of(&replies[16]).1, FX_NO_SUCH_FILE);
}

fn current_umask() -> u32 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        .unwrap_or(0o022)
}

#[test]
fn directories_list_with_long_names_and_realpath_stays_under_root() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ds = d.to_str().unwrap();
    let sub = d.join("sub");
    let mut input = init();
    input.extend(pkt(
        FXP_MKDIR,
        &B::new(1).s(sub.to_str().unwrap()).u32(0x4).u32(0o750).0,
    ));
    std::fs::write(sub.join("x"), "12345").unwrap_or(());
    input.extend(pkt(FXP_OPENDIR, &B::new(2).s(ds).0));
    input.extend(pkt(
        FXP_REALPATH,
        &B::new(3).s(format!("{ds}/sub/../sub/./new-file")).0,
    ));
    input.extend(pkt(FXP_REALPATH, &B::new(4).s("/../../..").0));
    input.extend(pkt(FXP_RMDIR, &B::new(5).s(ds).0));
    let (replies, r) = session(input.clone());
    r.unwrap();
    assert_eq!(status_of(&replies[1]).1, FX_OK);
    let h = handle_of(&replies[2]);
    let name = |i: usize| {
        let mut p = Reader::new(&replies[i].1);
        p.u32().unwrap();
        p.u32().unwrap();
        String::from_utf8(p.string().unwrap().to_vec()).unwrap()
    };
    let real = std::fs::canonicalize(d).unwrap();
    assert_eq!(name(3), format!("{}/sub/new-file", real.display()));
    assert_eq!(name(4), "/");
    assert_eq!(status_of(&replies[5]).1, FX_FAILURE, "not empty");
    input.extend(pkt(FXP_READDIR, &B::new(6).s(&h).0));
    input.extend(pkt(FXP_READDIR, &B::new(7).s(&h).0));
    let (replies, r) = session(input);
    r.unwrap();
    assert_eq!(replies[6].0, FXP_NAME);
    let mut p = Reader::new(&replies[6].1);
    p.u32().unwrap();
    let n = p.u32().unwrap();
    let mut seen = vec![];
    for _ in 0..n {
        let name = String::from_utf8(p.string().unwrap().to_vec()).unwrap();
        let long = String::from_utf8(p.string().unwrap().to_vec()).unwrap();
        let a = p.attrs().unwrap();
        if name == "sub" {
            assert!(long.starts_with("drwxr-x---"), "{long}");
            assert!(long.ends_with(" sub"), "{long}");
            assert_eq!(a.perms.unwrap() & 0o7777, 0o750 & !current_umask());
        }
        seen.push(name);
    }
    seen.sort();
    assert_eq!(seen, [".", "..", "sub"]);
    assert_eq!(status_of(&replies[7]).1, FX_EOF);
}

#[test]
fn malformed_requests_get_errors_and_the_session_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().to_str().unwrap();
    let mut input = init();
    // OPEN cut short after the path.
    input.extend(pkt(FXP_OPEN, &B::new(1).s(ds).0));
    // A string longer than the packet.
    input.extend(pkt(FXP_STAT, &B::new(2).u32(1000).0));
    // An unknown type and an unknown extension.
    input.extend(pkt(77, &B::new(3).0));
    input.extend(pkt(FXP_EXTENDED, &B::new(4).s("nope@example.com").0));
    // No id at all.
    input.extend(pkt(FXP_STAT, &[1, 2]));
    // A handle that is not one; a path with NUL; trailing bytes.
    input.extend(pkt(FXP_CLOSE, &B::new(5).s("xyzzy").0));
    input.extend(pkt(FXP_STAT, &B::new(6).s(b"/tmp\0/x").0));
    input.extend(pkt(FXP_RMDIR, &B::new(7).s("/nonexistent").u32(9).0));
    // A second INIT.
    input.extend(pkt(FXP_INIT, &B::new(3).0));
    // Attributes claiming 2^32-1 extended pairs.
    input.extend(pkt(
        FXP_SETSTAT,
        &B::new(8).s(ds).u32(0x8000_0000).u32(u32::MAX).0,
    ));
    // Then a good request still works.
    input.extend(pkt(FXP_STAT, &B::new(9).s(ds).0));
    let (replies, r) = session(input);
    r.unwrap();
    let codes: Vec<(u32, u32)> = replies[1..replies.len() - 1]
        .iter()
        .map(|r| {
            let (id, code, _) = status_of(r);
            (id, code)
        })
        .collect();
    assert_eq!(
        codes,
        [
            (1, FX_BAD_MESSAGE),
            (2, FX_BAD_MESSAGE),
            (3, FX_OP_UNSUPPORTED),
            (4, FX_OP_UNSUPPORTED),
            (0, FX_BAD_MESSAGE),
            (5, FX_FAILURE),
            (6, FX_BAD_MESSAGE),
            (7, FX_BAD_MESSAGE),
            (3, FX_BAD_MESSAGE),
            (8, FX_BAD_MESSAGE),
        ]
    );
    assert_eq!(replies.last().unwrap().0, FXP_ATTRS);
}

#[test]
fn unframeable_input_ends_the_session_with_an_error() {
    for bad in [
        vec![0xff, 0xff, 0xff, 0xff, 1],
        vec![0, 0, 0, 0],
        [0u32.to_be_bytes(), ((MAX_PACKET + 1) as u32).to_be_bytes()].concat(),
    ] {
        let mut input = init();
        input.extend(bad);
        let (replies, r) = session(input);
        assert_eq!(replies.len(), 1);
        assert!(r.is_err());
    }
    // Not starting with INIT.
    let (replies, r) = session(pkt(FXP_STAT, &B::new(1).s("/").0));
    assert!(replies.is_empty());
    assert!(r.unwrap_err().contains("SSH_FXP_INIT"));
    // A packet cut by the end of input.
    let mut input = init();
    input.extend(&pkt(FXP_STAT, &B::new(1).s("/").0)[..7]);
    assert!(session(input).1.is_err());
}

#[test]
fn random_bytes_never_panic() {
    // A small deterministic generator: the same cases every run.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2000 {
        let kind = match next() % 4 {
            0 => (next() % 25) as u8,
            1 => FXP_EXTENDED,
            _ => [FXP_OPEN, FXP_READ, FXP_WRITE, FXP_SETSTAT, FXP_READDIR][(next() % 5) as usize],
        };
        let n = (next() % 64) as usize;
        let mut body: Vec<u8> = (0..n).map(|_| next() as u8).collect();
        if kind == FXP_EXTENDED && next() % 2 == 0 {
            let ext = EXTENSIONS[(next() as usize) % EXTENSIONS.len()].0;
            body = B::new(1).s(ext).0;
            body.extend((0..n).map(|_| next() as u8));
        }
        // Paths made of random bytes stay inside the temporary directory or fail.
        let mut input = init();
        input.extend(pkt(
            FXP_OPENDIR,
            &B::new(0).s(dir.path().to_str().unwrap()).0,
        ));
        input.extend(pkt(kind, &body));
        let _ = session(input);
    }
}
