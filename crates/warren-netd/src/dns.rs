//! DNS messages (RFC 1035), just what the resolver needs: a query's header and single question,
//! Warren's own short answers (an rcode and the question echoed back), and an upstream response's
//! question and answer records (A and CNAME). Everything is bounds-checked; compression pointers
//! must point backwards, so following them always ends. Whatever does not parse is `Malformed`.

use std::net::Ipv4Addr;

/// Record type A.
pub const TYPE_A: u16 = 1;
/// Record type CNAME.
pub const TYPE_CNAME: u16 = 5;
/// Record type AAAA.
pub const TYPE_AAAA: u16 = 28;
/// Record type OPT (EDNS).
pub const TYPE_OPT: u16 = 41;
/// Class IN.
pub const CLASS_IN: u16 = 1;

/// No error.
pub const NOERROR: u8 = 0;
/// The query did not parse.
pub const FORMERR: u8 = 1;
/// The upstream failed (or learning its answer did).
pub const SERVFAIL: u8 = 2;
/// The name does not exist (for this workspace: it is not allowed).
pub const NXDOMAIN: u8 = 3;
/// An opcode or class the resolver does not serve.
pub const NOTIMP: u8 = 4;
/// The client is not a workspace.
pub const REFUSED: u8 = 5;

/// Longest name, in wire format.
const MAX_NAME: usize = 255;
/// Most CNAME links followed from the question's name (the names considered are at most this
/// many plus the question's).
pub const MAX_CHAIN: usize = 16;
/// Most addresses taken from one answer (the learned sets and the memory get no more).
pub const MAX_ADDRESSES: usize = 64;

/// A message that does not parse, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed DNS message: {}", self.0)
    }
}

/// A query: its header fields and its one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// The client's id.
    pub id: u16,
    /// The opcode (0 is QUERY).
    pub opcode: u8,
    /// Recursion desired.
    pub rd: bool,
    /// The name's labels as sent (case kept, for the echo: clients may check it).
    pub labels: Vec<Vec<u8>>,
    /// The question type.
    pub qtype: u16,
    /// The question class.
    pub qclass: u16,
    /// The UDP payload size of its EDNS OPT record, when it has one.
    pub edns: Option<u16>,
}

impl Query {
    /// The name for policy decisions: lower case, dot-separated, no trailing dot (`""` for the
    /// root). `None` when a label holds anything but letters, digits, `-` and `_`.
    pub fn name(&self) -> Option<String> {
        let mut out = String::new();
        for (i, l) in self.labels.iter().enumerate() {
            if l.is_empty()
                || !l
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            {
                return None;
            }
            if i > 0 {
                out.push('.');
            }
            out.extend(l.iter().map(|b| b.to_ascii_lowercase() as char));
        }
        Some(out)
    }

    /// The name as text, lossy (for the journal when `name` refuses it).
    pub fn display_name(&self) -> String {
        let joined: Vec<String> = self
            .labels
            .iter()
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .collect();
        joined.join(".")
    }
}

/// A bounds-checked reader over a message.
struct Reader<'a> {
    msg: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, Malformed> {
        let b = *self.msg.get(self.pos).ok_or(Malformed("truncated"))?;
        self.pos += 1;
        Ok(b)
    }
    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from(self.u8()?) << 8 | u16::from(self.u8()?))
    }
    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from(self.u16()?) << 16 | u32::from(self.u16()?))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.pos.checked_add(n).ok_or(Malformed("truncated"))?;
        let s = self.msg.get(self.pos..end).ok_or(Malformed("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    /// A name, following compression pointers (each strictly backwards).
    fn name(&mut self) -> Result<Vec<Vec<u8>>, Malformed> {
        let mut labels = Vec::new();
        let mut wire_len = 1usize;
        let mut pos = self.pos;
        let mut jumped = false;
        // Pointers must go strictly backwards from the label that holds them: the walk ends.
        loop {
            let len = *self.msg.get(pos).ok_or(Malformed("truncated name"))?;
            match len & 0xC0 {
                0x00 => {
                    if len == 0 {
                        if !jumped {
                            self.pos = pos + 1;
                        }
                        return Ok(labels);
                    }
                    let len = usize::from(len);
                    let label = self
                        .msg
                        .get(pos + 1..pos + 1 + len)
                        .ok_or(Malformed("truncated label"))?;
                    wire_len += len + 1;
                    if wire_len > MAX_NAME {
                        return Err(Malformed("name too long"));
                    }
                    labels.push(label.to_vec());
                    pos += 1 + len;
                }
                0xC0 => {
                    let lo = *self
                        .msg
                        .get(pos + 1)
                        .ok_or(Malformed("truncated pointer"))?;
                    let target = usize::from(len & 0x3F) << 8 | usize::from(lo);
                    if target >= pos {
                        return Err(Malformed("compression pointer not backwards"));
                    }
                    if !jumped {
                        self.pos = pos + 2;
                        jumped = true;
                    }
                    pos = target;
                }
                _ => return Err(Malformed("unknown label type")),
            }
        }
    }
}

/// The fixed header.
struct Header {
    id: u16,
    flags: u16,
    qd: u16,
    an: u16,
    ns: u16,
    ar: u16,
}

fn header(r: &mut Reader<'_>) -> Result<Header, Malformed> {
    let id = r.u16()?;
    let flags = r.u16()?;
    let qd = r.u16()?;
    let an = r.u16()?;
    let ns = r.u16()?;
    let ar = r.u16()?;
    Ok(Header {
        id,
        flags,
        qd,
        an,
        ns,
        ar,
    })
}

/// Parses a query. Anything but one question in a message with QR clear is `Malformed`.
pub fn parse_query(msg: &[u8]) -> Result<Query, Malformed> {
    let mut r = Reader { msg, pos: 0 };
    let h = header(&mut r)?;
    if h.flags & 0x8000 != 0 {
        return Err(Malformed("not a query"));
    }
    if h.qd != 1 {
        return Err(Malformed("not exactly one question"));
    }
    let labels = r.name()?;
    let qtype = r.u16()?;
    let qclass = r.u16()?;
    let mut edns = None;
    let records = usize::from(h.an) + usize::from(h.ns) + usize::from(h.ar);
    if records > 16 {
        return Err(Malformed("too many records in a query"));
    }
    for i in 0..records {
        r.name()?;
        let t = r.u16()?;
        let c = r.u16()?;
        let _ttl = r.u32()?;
        let len = usize::from(r.u16()?);
        r.take(len)?;
        if t == TYPE_OPT && i >= usize::from(h.an) + usize::from(h.ns) {
            edns = Some(c);
        }
    }
    Ok(Query {
        id: h.id,
        opcode: ((h.flags >> 11) & 0xF) as u8,
        rd: h.flags & 0x0100 != 0,
        labels,
        qtype,
        qclass,
        edns,
    })
}

/// A FORMERR answer to a message that is not a query we can parse, when its header at least is
/// there and it is not itself a response (never answer answers).
pub fn formerr(msg: &[u8]) -> Option<Vec<u8>> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 {
        return None;
    }
    let mut out = vec![0u8; 12];
    out[0] = msg[0];
    out[1] = msg[1];
    // QR, the opcode as sent, RD as sent; RA; FORMERR.
    out[2] = 0x80 | (msg[2] & 0x78) | (msg[2] & 0x01);
    out[3] = 0x80 | FORMERR;
    Some(out)
}

/// Warren's own answer to `q`: `rcode`, no records, the question echoed.
pub fn answer(q: &Query, rcode: u8) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + MAX_NAME + 4);
    out.extend_from_slice(&q.id.to_be_bytes());
    let mut flags: u16 = 0x8000 | (u16::from(q.opcode & 0xF) << 11) | 0x0080;
    if q.rd {
        flags |= 0x0100;
    }
    flags |= u16::from(rcode & 0xF);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for l in &q.labels {
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
    out.extend_from_slice(&q.qtype.to_be_bytes());
    out.extend_from_slice(&q.qclass.to_be_bytes());
    out
}

/// The query the resolver sends upstream for `q`: a clean message with id `id`, recursion
/// desired, the question (case kept), and an OPT record when the client sent one (its size, at
/// most 1232), so the answer fits what the client accepts.
pub fn upstream_query(q: &Query, id: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + MAX_NAME + 4 + 11);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, u8::from(q.edns.is_some())]);
    for l in &q.labels {
        out.push(l.len() as u8);
        out.extend_from_slice(l);
    }
    out.push(0);
    out.extend_from_slice(&q.qtype.to_be_bytes());
    out.extend_from_slice(&q.qclass.to_be_bytes());
    if let Some(size) = q.edns {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&size.clamp(512, 1232).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    out
}

/// An upstream response: what the resolver checks and learns from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Its id.
    pub id: u16,
    /// Its rcode.
    pub rcode: u8,
    /// Truncated (TC).
    pub truncated: bool,
    /// The question it answers: lower-cased name, type, class.
    pub question: Option<(String, u16, u16)>,
    /// A records of the answer section: owner (lower case), address, TTL.
    pub a: Vec<(String, Ipv4Addr, u32)>,
    /// CNAME records of the answer section: owner, target (lower case).
    pub cname: Vec<(String, String)>,
}

fn lower(labels: &[Vec<u8>]) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    parts.join(".")
}

/// Parses an upstream response's header, question and answer section.
pub fn parse_response(msg: &[u8]) -> Result<Response, Malformed> {
    let mut r = Reader { msg, pos: 0 };
    let h = header(&mut r)?;
    if h.flags & 0x8000 == 0 {
        return Err(Malformed("not a response"));
    }
    if h.qd > 1 {
        return Err(Malformed("more than one question"));
    }
    let question = if h.qd == 1 {
        let name = r.name()?;
        let t = r.u16()?;
        let c = r.u16()?;
        Some((lower(&name), t, c))
    } else {
        None
    };
    let mut a = Vec::new();
    let mut cname = Vec::new();
    for _ in 0..h.an {
        let owner = r.name()?;
        let t = r.u16()?;
        let c = r.u16()?;
        let ttl = r.u32()?;
        let len = usize::from(r.u16()?);
        let start = r.pos;
        let data = r.take(len)?;
        if c != CLASS_IN {
            continue;
        }
        match t {
            TYPE_A => {
                if data.len() != 4 {
                    return Err(Malformed("A record of the wrong size"));
                }
                // TTLs with the top bit set are 0 (RFC 2181).
                let ttl = if ttl > i32::MAX as u32 { 0 } else { ttl };
                a.push((
                    lower(&owner),
                    Ipv4Addr::new(data[0], data[1], data[2], data[3]),
                    ttl,
                ));
            }
            TYPE_CNAME => {
                let mut inner = Reader { msg, pos: start };
                let target = inner.name()?;
                if inner.pos != start + len {
                    return Err(Malformed("CNAME of the wrong size"));
                }
                cname.push((lower(&owner), lower(&target)));
            }
            _ => {}
        }
    }
    Ok(Response {
        id: h.id,
        rcode: (h.flags & 0xF) as u8,
        truncated: h.flags & 0x0200 != 0,
        question,
        a,
        cname,
    })
}

/// The addresses `name` resolves to in `resp`: its A records and those of the names its CNAME
/// chain (within the answer) leads to, with their TTLs.
pub fn chain_addresses(name: &str, resp: &Response) -> Vec<(Ipv4Addr, u32)> {
    let mut names = vec![name.to_string()];
    'hops: for _ in 0..MAX_CHAIN {
        let before = names.len();
        for (owner, target) in &resp.cname {
            if names.len() > MAX_CHAIN {
                break 'hops;
            }
            if names.contains(owner) && !names.contains(target) {
                names.push(target.clone());
            }
        }
        if names.len() == before {
            break;
        }
    }
    let mut out: Vec<(Ipv4Addr, u32)> = Vec::new();
    for (owner, ip, ttl) in &resp.a {
        if names.contains(owner) {
            let full = out.len() >= MAX_ADDRESSES;
            match out.iter_mut().find(|(a, _)| a == ip) {
                Some(e) => e.1 = e.1.max(*ttl),
                None if !full => out.push((*ip, *ttl)),
                None => {}
            }
        }
    }
    out
}

/// Sets a message's id (its first two bytes).
pub fn set_id(msg: &mut [u8], id: u16) {
    if msg.len() >= 2 {
        msg[..2].copy_from_slice(&id.to_be_bytes());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query for `name` of type `qtype` with id `id`, RD set.
    pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for l in name.split('.').filter(|l| !l.is_empty()) {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&CLASS_IN.to_be_bytes());
        m
    }

    /// A response to `q` (a query from `query`) with CNAMEs then A records, using compression.
    pub fn response(q: &[u8], cnames: &[(&str, &str)], a: &[(&str, Ipv4Addr, u32)]) -> Vec<u8> {
        let mut m = q.to_vec();
        m[2] |= 0x80;
        m[3] |= 0x80;
        let an = (cnames.len() + a.len()) as u16;
        m[6..8].copy_from_slice(&an.to_be_bytes());
        let enc = |m: &mut Vec<u8>, name: &str| {
            for l in name.split('.').filter(|l| !l.is_empty()) {
                m.push(l.len() as u8);
                m.extend_from_slice(l.as_bytes());
            }
            m.push(0);
        };
        for (owner, target) in cnames {
            enc(&mut m, owner);
            m.extend_from_slice(&TYPE_CNAME.to_be_bytes());
            m.extend_from_slice(&CLASS_IN.to_be_bytes());
            m.extend_from_slice(&300u32.to_be_bytes());
            let mut t = Vec::new();
            enc(&mut t, target);
            m.extend_from_slice(&(t.len() as u16).to_be_bytes());
            m.extend_from_slice(&t);
        }
        for (owner, ip, ttl) in a {
            // The question's name by pointer when it is the owner.
            if Some(*owner) == q_name(q).as_deref() {
                m.extend_from_slice(&[0xC0, 12]);
            } else {
                enc(&mut m, owner);
            }
            m.extend_from_slice(&TYPE_A.to_be_bytes());
            m.extend_from_slice(&CLASS_IN.to_be_bytes());
            m.extend_from_slice(&ttl.to_be_bytes());
            m.extend_from_slice(&4u16.to_be_bytes());
            m.extend_from_slice(&ip.octets());
        }
        m
    }

    fn q_name(q: &[u8]) -> Option<String> {
        parse_query(q).ok()?.name()
    }

    #[test]
    fn parses_a_query_and_answers_it() {
        let q = query(0x1234, "WWW.Example.com", TYPE_A);
        let p = parse_query(&q).unwrap();
        assert_eq!(p.id, 0x1234);
        assert_eq!(p.qtype, TYPE_A);
        assert_eq!(p.name().as_deref(), Some("www.example.com"));
        let a = answer(&p, NXDOMAIN);
        assert_eq!(&a[..2], &[0x12, 0x34]);
        assert_eq!(a[2] & 0x80, 0x80, "QR");
        assert_eq!(a[2] & 0x01, 0x01, "RD echoed");
        assert_eq!(a[3] & 0x0F, NXDOMAIN);
        // The question comes back byte for byte (case kept).
        assert_eq!(&a[12..], &q[12..]);
        let back = parse_response(&a).unwrap();
        assert_eq!(
            back.question,
            Some(("www.example.com".into(), TYPE_A, CLASS_IN))
        );
        assert_eq!(back.rcode, NXDOMAIN);
    }

    #[test]
    fn refuses_bad_queries() {
        assert!(parse_query(&[]).is_err());
        assert!(parse_query(&[0; 11]).is_err());
        // No question.
        let mut q = query(1, "a.com", TYPE_A);
        q[5] = 0;
        assert!(parse_query(&q).is_err());
        // Two questions.
        q[5] = 2;
        assert!(parse_query(&q).is_err());
        // A response is not a query.
        let mut q = query(1, "a.com", TYPE_A);
        q[2] |= 0x80;
        assert!(parse_query(&q).is_err());
        assert!(formerr(&q).is_none(), "never answer a response");
        // A pointer to itself (a loop) or forwards.
        let mut q = query(1, "", TYPE_A);
        q.truncate(12);
        q.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert!(parse_query(&q).is_err());
        // A label running past the end.
        let mut q = query(1, "", TYPE_A);
        q.truncate(12);
        q.extend_from_slice(&[40, b'a', b'b']);
        assert!(parse_query(&q).is_err());
        // Names longer than 255 bytes.
        let long = vec!["a".repeat(63); 5].join(".");
        assert!(parse_query(&query(1, &long, TYPE_A)).is_err());
        // A FORMERR keeps the id.
        let e = formerr(&[9, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
        assert_eq!(&e[..2], &[9, 9]);
        assert_eq!(e[3] & 0xF, FORMERR);
    }

    #[test]
    fn names_with_odd_labels_have_no_policy_name() {
        let mut q = query(1, "", TYPE_A);
        q.truncate(12);
        q.extend_from_slice(&[3, b'a', b'.', b'b', 3, b'c', b'o', b'm', 0, 0, 1, 0, 1]);
        let p = parse_query(&q).unwrap();
        assert_eq!(p.name(), None);
        assert_eq!(p.display_name(), "a.b.com");
    }

    #[test]
    fn follows_cname_chains_in_the_answer() {
        let q = query(7, "api.example.com", TYPE_A);
        let r = response(
            &q,
            &[
                ("api.example.com", "edge.cdn.net"),
                ("edge.cdn.net", "pop1.cdn.net"),
                ("unrelated.org", "x.org"),
            ],
            &[
                ("pop1.cdn.net", Ipv4Addr::new(203, 0, 113, 7), 20),
                ("x.org", Ipv4Addr::new(198, 51, 100, 1), 300),
                ("api.example.com", Ipv4Addr::new(203, 0, 113, 8), 600),
            ],
        );
        let p = parse_response(&r).unwrap();
        assert_eq!(p.id, 7);
        assert_eq!(p.a.len(), 3);
        let got = chain_addresses("api.example.com", &p);
        assert_eq!(
            got,
            vec![
                (Ipv4Addr::new(203, 0, 113, 7), 20),
                (Ipv4Addr::new(203, 0, 113, 8), 600)
            ]
        );
    }

    #[test]
    fn long_chains_and_many_records_are_cut_short() {
        // A chain of 30 CNAMEs, each name with an address of its own.
        let names: Vec<String> = (0..=30).map(|i| format!("n{i}.chain.test")).collect();
        let cnames: Vec<(&str, &str)> = names
            .windows(2)
            .map(|w| (w[0].as_str(), w[1].as_str()))
            .collect();
        let a: Vec<(&str, Ipv4Addr, u32)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), Ipv4Addr::new(203, 0, 113, i as u8), 60))
            .collect();
        let q = query(1, &names[0], TYPE_A);
        let p = parse_response(&response(&q, &cnames, &a)).unwrap();
        let got = chain_addresses(&names[0], &p);
        assert_eq!(got.len(), MAX_CHAIN + 1, "the question's name and 16 hops");
        assert!(got.iter().all(|(ip, _)| ip.octets()[3] <= MAX_CHAIN as u8));
        // 200 A records for the name: 64 are taken.
        let a: Vec<(&str, Ipv4Addr, u32)> = (0..200u32)
            .map(|i| ("many.test", Ipv4Addr::from(0xCB00_7100 + i), 60))
            .collect();
        let q = query(2, "many.test", TYPE_A);
        let p = parse_response(&response(&q, &[], &a)).unwrap();
        assert_eq!(chain_addresses("many.test", &p).len(), MAX_ADDRESSES);
    }

    /// A tiny deterministic PRNG (xorshift64*), for the fuzz-ish loops.
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_and_mutated_messages_never_panic() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let q = query(1, "www.example.com", TYPE_A);
        let good = response(
            &q,
            &[("www.example.com", "a.example.net")],
            &[("a.example.net", Ipv4Addr::new(203, 0, 113, 1), 60)],
        );
        for i in 0..20_000 {
            let msg: Vec<u8> = if i % 2 == 0 {
                let len = rng.below(80);
                (0..len).map(|_| rng.next() as u8).collect()
            } else {
                let mut m = if i % 4 == 1 { q.clone() } else { good.clone() };
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(m.len());
                    m[at] = rng.next() as u8;
                }
                m.truncate(rng.below(m.len() + 1).max(m.len() / 2));
                m
            };
            if let Ok(p) = parse_query(&msg) {
                let a = answer(&p, NOERROR);
                let _ = p.name();
                assert!(parse_response(&a).is_ok(), "our answers parse");
            } else {
                let _ = formerr(&msg);
            }
            if let Ok(r) = parse_response(&msg) {
                let _ = chain_addresses("www.example.com", &r);
            }
        }
    }
}
