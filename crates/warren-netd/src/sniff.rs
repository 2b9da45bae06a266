//! The first bytes of a proxied connection: a TLS ClientHello's server name (SNI) or an HTTP/1
//! request's Host. `sniff` is called again as more bytes arrive until it stops answering
//! `NeedMore`; the caller bounds the size and the wait. Only a connection's first message is
//! looked at: later HTTP requests on the same connection are not (see `server`).

/// The most bytes read before deciding (a ClientHello may span several TLS records).
pub const MAX_PEEK: usize = 32 * 1024;

/// What the first bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniff {
    /// Not enough bytes yet.
    NeedMore,
    /// A TLS ClientHello, with its server name (lower case, no trailing dot) if it sends one.
    Tls {
        /// The SNI host name.
        sni: Option<String>,
    },
    /// An HTTP/1 request, with its Host (without port; `None` when absent or an IP literal).
    Http {
        /// The host name.
        host: Option<String>,
    },
    /// Neither TLS nor HTTP: decided by address alone.
    Other,
    /// TLS or HTTP that does not parse (or smells of smuggling): refused.
    Bad {
        /// Whether it looked like HTTP (so the refusal is a `403`).
        http: bool,
        /// Why.
        why: &'static str,
    },
}

/// Classifies `buf`, the bytes the client sent so far.
pub fn sniff(buf: &[u8]) -> Sniff {
    match buf.first() {
        None => Sniff::NeedMore,
        Some(0x16) => tls(buf),
        Some(b) if b.is_ascii_uppercase() => http(buf),
        Some(_) => Sniff::Other,
    }
}

/// A host name as policies see it: lower case, no trailing dot, letters, digits, `-`, `_`, `.`
/// (no empty label). `Err` for anything else; `Ok(None)` for an IPv4 literal.
pub fn host_name(raw: &[u8]) -> Result<Option<String>, &'static str> {
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    if raw.is_empty() || raw.len() > 253 {
        return Err("bad host name");
    }
    let s = std::str::from_utf8(raw).map_err(|_| "bad host name")?;
    if s.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(None);
    }
    let ok = s.split('.').all(|l| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !ok {
        return Err("bad host name");
    }
    Ok(Some(s.to_ascii_lowercase()))
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.b.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|s| usize::from(s[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|s| usize::from(s[0]) << 8 | usize::from(s[1]))
    }
    fn rest(&self) -> usize {
        self.b.len() - self.pos
    }
}

const BAD_TLS: Sniff = Sniff::Bad {
    http: false,
    why: "malformed TLS ClientHello",
};

/// Reassembles the handshake from consecutive handshake records, then parses the ClientHello.
fn tls(buf: &[u8]) -> Sniff {
    let mut hs: Vec<u8> = Vec::new();
    let mut pos = 0;
    loop {
        let Some(head) = buf.get(pos..pos + 5) else {
            return Sniff::NeedMore;
        };
        if head[0] != 0x16 || head[1] != 0x03 {
            return BAD_TLS;
        }
        let len = usize::from(head[3]) << 8 | usize::from(head[4]);
        if len == 0 || len > 16384 {
            return BAD_TLS;
        }
        let Some(frag) = buf.get(pos + 5..pos + 5 + len) else {
            return Sniff::NeedMore;
        };
        hs.extend_from_slice(frag);
        pos += 5 + len;
        if hs.len() >= 4 {
            if hs[0] != 1 {
                return Sniff::Bad {
                    http: false,
                    why: "TLS handshake is not a ClientHello",
                };
            }
            let need =
                4 + (usize::from(hs[1]) << 16 | usize::from(hs[2]) << 8 | usize::from(hs[3]));
            if need > MAX_PEEK {
                return Sniff::Bad {
                    http: false,
                    why: "TLS ClientHello too large",
                };
            }
            if hs.len() >= need {
                return match client_hello(&hs[4..need]) {
                    Some(Ok(sni)) => Sniff::Tls { sni },
                    Some(Err(why)) => Sniff::Bad { http: false, why },
                    None => BAD_TLS,
                };
            }
        }
    }
}

/// The server name of a ClientHello body. `None`: it does not parse.
fn client_hello(body: &[u8]) -> Option<Result<Option<String>, &'static str>> {
    let mut r = Reader { b: body, pos: 0 };
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    let sid = r.u8()?;
    if sid > 32 {
        return None;
    }
    r.take(sid)?;
    let suites = r.u16()?;
    if suites == 0 || suites % 2 != 0 {
        return None;
    }
    r.take(suites)?;
    let comp = r.u8()?;
    if comp == 0 {
        return None;
    }
    r.take(comp)?;
    if r.rest() == 0 {
        return Some(Ok(None));
    }
    let ext_len = r.u16()?;
    if ext_len != r.rest() {
        return None;
    }
    let mut sni = None;
    let mut seen = false;
    while r.rest() > 0 {
        let ty = r.u16()?;
        let len = r.u16()?;
        let data = r.take(len)?;
        if ty != 0 {
            continue;
        }
        if seen {
            return Some(Err("two server_name extensions"));
        }
        seen = true;
        let mut e = Reader { b: data, pos: 0 };
        let list = e.u16()?;
        if list != e.rest() || list == 0 {
            return None;
        }
        while e.rest() > 0 {
            let kind = e.u8()?;
            let n = e.u16()?;
            let name = e.take(n)?;
            if kind == 0 {
                if sni.is_some() {
                    return Some(Err("two server names"));
                }
                match host_name(name) {
                    Ok(Some(h)) => sni = Some(h),
                    // An IP literal in SNI is not allowed (RFC 6066): no name.
                    Ok(None) => {}
                    Err(why) => return Some(Err(why)),
                }
            }
        }
    }
    Some(Ok(sni))
}

/// Longest method token.
const MAX_METHOD: usize = 16;

/// An HTTP/1 request head: the method, the request target and the Host header.
fn http(buf: &[u8]) -> Sniff {
    let bad = |why| Sniff::Bad { http: true, why };
    let method_len = buf.iter().position(|b| *b == b' ');
    let Some(method_len) = method_len else {
        if buf.len() < MAX_METHOD && buf.iter().all(|b| b.is_ascii_uppercase()) {
            return Sniff::NeedMore;
        }
        return Sniff::Other;
    };
    if method_len > MAX_METHOD || !buf[..method_len].iter().all(|b| b.is_ascii_uppercase()) {
        return Sniff::Other;
    }
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Sniff::NeedMore;
    };
    let head = &buf[..end];
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request = lines.next().unwrap_or_default();
    let mut parts = request.split(|b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let version = parts.next().unwrap_or_default();
    if parts.next().is_some() || !version.starts_with(b"HTTP/1.") || target.is_empty() {
        return bad("malformed HTTP request line");
    }
    if method == b"CONNECT" {
        return bad("CONNECT is not supported");
    }
    // An absolute-form target names the host the server will use.
    let mut target_host: Option<&[u8]> = None;
    if target.len() > 7 && target[..7].eq_ignore_ascii_case(b"http://") {
        let rest = &target[7..];
        let end = rest
            .iter()
            .position(|b| *b == b'/' || *b == b'?')
            .unwrap_or(rest.len());
        target_host = Some(&rest[..end]);
    } else if target.len() > 8 && target[..8].eq_ignore_ascii_case(b"https://") {
        let rest = &target[8..];
        let end = rest
            .iter()
            .position(|b| *b == b'/' || *b == b'?')
            .unwrap_or(rest.len());
        target_host = Some(&rest[..end]);
    }
    let mut host: Option<&[u8]> = None;
    for line in lines {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return bad("folded HTTP header");
        }
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return bad("malformed HTTP header");
        };
        let name = &line[..colon];
        if name.is_empty() || name.iter().any(|b| b.is_ascii_whitespace()) {
            return bad("malformed HTTP header");
        }
        if name.eq_ignore_ascii_case(b"host") {
            if host.is_some() {
                return bad("more than one Host header");
            }
            host = Some(line[colon + 1..].trim_ascii());
        }
    }
    let authority = match (target_host, host) {
        (Some(t), Some(h)) if !strip_port(t).eq_ignore_ascii_case(strip_port(h)) => {
            return bad("Host header and request target disagree");
        }
        (Some(t), _) => Some(t),
        (None, h) => h,
    };
    let Some(authority) = authority else {
        return Sniff::Http { host: None };
    };
    if authority.contains(&b'@') {
        return bad("user info in the request's host");
    }
    if authority.first() == Some(&b'[') {
        // An IPv6 literal: no name.
        return Sniff::Http { host: None };
    }
    match host_name(strip_port(authority)) {
        Ok(host) => Sniff::Http { host },
        Err(why) => bad(why),
    }
}

/// `name:port` → `name` (only when what follows the last colon is a port).
fn strip_port(a: &[u8]) -> &[u8] {
    match a.iter().rposition(|b| *b == b':') {
        Some(i) if a[i + 1..].iter().all(u8::is_ascii_digit) && a.first() != Some(&b'[') => &a[..i],
        _ => a,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::dns::tests::Rng;

    /// A ClientHello handshake message (type, length, body) naming `sni`.
    pub fn client_hello(sni: Option<&str>) -> Vec<u8> {
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[7u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 4, 0x13, 0x01, 0x13, 0x02]);
        body.extend_from_slice(&[1, 0]);
        let mut exts = Vec::new();
        // Some other extension first (supported_versions).
        exts.extend_from_slice(&[0x00, 0x2b, 0, 3, 2, 3, 4]);
        if let Some(name) = sni {
            let n = name.as_bytes();
            let mut list = vec![0u8];
            list.extend_from_slice(&(n.len() as u16).to_be_bytes());
            list.extend_from_slice(n);
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend_from_slice(&list);
            exts.extend_from_slice(&[0, 0]);
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend_from_slice(&data);
        }
        // Padding to make it big.
        exts.extend_from_slice(&[0x00, 0x15, 0x01, 0x00]);
        exts.extend_from_slice(&[0u8; 256]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend_from_slice(&exts);
        let mut hs = vec![1];
        hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        hs.extend_from_slice(&body);
        hs
    }

    /// `hs` in TLS records of at most `max` bytes of fragment each.
    pub fn records(hs: &[u8], max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in hs.chunks(max) {
            out.extend_from_slice(&[0x16, 0x03, 0x01]);
            out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
            out.extend_from_slice(chunk);
        }
        out
    }

    #[test]
    fn finds_the_server_name() {
        let rec = records(&client_hello(Some("Api.GitHub.com.")), 16384);
        assert_eq!(
            sniff(&rec),
            Sniff::Tls {
                sni: Some("api.github.com".into())
            }
        );
        // Every prefix short of the whole asks for more.
        for n in 0..rec.len() {
            assert_eq!(sniff(&rec[..n]), Sniff::NeedMore, "prefix {n}");
        }
    }

    #[test]
    fn a_client_hello_split_over_records_and_segments() {
        let hs = client_hello(Some("example.org"));
        let rec = records(&hs, 50);
        assert!(rec.len() > 5 * 55, "several records");
        for n in 0..rec.len() {
            assert_eq!(sniff(&rec[..n]), Sniff::NeedMore, "prefix {n}");
        }
        assert_eq!(
            sniff(&rec),
            Sniff::Tls {
                sni: Some("example.org".into())
            }
        );
    }

    #[test]
    fn no_sni_and_bad_sni() {
        let rec = records(&client_hello(None), 16384);
        assert_eq!(sniff(&rec), Sniff::Tls { sni: None });
        let rec = records(&client_hello(Some("203.0.113.9")), 16384);
        assert_eq!(sniff(&rec), Sniff::Tls { sni: None });
        let rec = records(&client_hello(Some("evil.com\0.allowed.com")), 16384);
        assert!(matches!(sniff(&rec), Sniff::Bad { http: false, .. }));
        // Not a ClientHello (a ServerHello type).
        let mut hs = client_hello(Some("a.com"));
        hs[0] = 2;
        assert!(matches!(
            sniff(&records(&hs, 16384)),
            Sniff::Bad { http: false, .. }
        ));
        // An alert record.
        assert!(matches!(
            sniff(&[0x16, 0x03, 0x01, 0, 0]),
            Sniff::Bad { .. }
        ));
    }

    #[test]
    fn finds_the_host_header() {
        let req = b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nhOST: Example.COM:8080\r\n\r\n";
        assert_eq!(
            sniff(req),
            Sniff::Http {
                host: Some("example.com".into())
            }
        );
        for n in 0..req.len() {
            assert_eq!(sniff(&req[..n]), Sniff::NeedMore, "prefix {n}");
        }
        assert_eq!(sniff(b"GET / HTTP/1.0\r\n\r\n"), Sniff::Http { host: None });
        assert_eq!(
            sniff(b"GET / HTTP/1.1\r\nHost: 203.0.113.5\r\n\r\n"),
            Sniff::Http { host: None }
        );
        assert_eq!(
            sniff(b"GET http://a.example.com/p HTTP/1.1\r\nHost: a.example.com\r\n\r\n"),
            Sniff::Http {
                host: Some("a.example.com".into())
            }
        );
    }

    #[test]
    fn refuses_smuggling_host_headers() {
        for req in [
            &b"GET / HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n"[..],
            b"GET http://evil.com/ HTTP/1.1\r\nHost: good.com\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: good.com\r\n folded\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            b"GET / HTTP/1.1\r\nnocolon\r\n\r\n",
            b"GET http://u@evil.com/ HTTP/1.1\r\n\r\n",
            b"CONNECT good.com:443 HTTP/1.1\r\nHost: good.com\r\n\r\n",
            b"GET /\r\n\r\n",
        ] {
            assert!(
                matches!(sniff(req), Sniff::Bad { http: true, .. }),
                "{}",
                String::from_utf8_lossy(req)
            );
        }
    }

    #[test]
    fn garbage_is_other_or_bad_never_a_panic() {
        assert_eq!(sniff(b"\x00\x01binary"), Sniff::Other);
        assert_eq!(sniff(b"SSH-2.0-OpenSSH\r\n"), Sniff::Other);
        assert_eq!(sniff(b"lowercase get"), Sniff::Other);
        let mut rng = Rng(42);
        let hello = records(&client_hello(Some("example.org")), 100);
        let req = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n".to_vec();
        for i in 0..20_000 {
            let mut m: Vec<u8> = match i % 3 {
                0 => (0..rng.below(200)).map(|_| rng.next() as u8).collect(),
                1 => hello.clone(),
                _ => req.clone(),
            };
            if !m.is_empty() {
                for _ in 0..1 + rng.below(3) {
                    let at = rng.below(m.len());
                    m[at] = rng.next() as u8;
                }
            }
            let _ = sniff(&m);
        }
    }
}
