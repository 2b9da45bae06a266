//! The servers: DNS over UDP and TCP, the egress proxy and the control socket, sharing one `Netd`.
//!
//! Fairness: each workspace (source address) has its own share: `Limits::dns_per_source` DNS
//! queries in flight (past it SERVFAIL at once), `Limits::dns_tcp_per_source` DNS-over-TCP
//! connections and its plan's `max_connections` (default `Limits::proxy_per_source`) proxied
//! connections (past them closed), under global caps; proxied connections idle for
//! `Limits::proxy_idle` are closed.
//!
//! What the proxy checks: the destination address and port, and the name in the FIRST bytes of the
//! connection only: the TLS ClientHello's SNI, or the `Host` of the first HTTP/1 request head.
//! Later requests on a kept-alive connection are not parsed (there is no HTTP parser here): they
//! go to the same destination address, which the decision already allowed for this workspace, so
//! a different `Host` in them reaches only that address (another site served from it, a shared
//! CDN address say, is reachable that way, as it is with TLS domain fronting). The proxy forwards the client's bytes
//! as they are and adds nothing (no headers, no `Via`). After connecting it refuses a peer that
//! turns out to be the host itself (`Plumbing::reached_host`).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixListener};
use tokio::sync::{mpsc, Semaphore};
use warren_runtime::network::Denial;

use crate::decide;
use crate::dns::{self, Query};
use crate::host::{Learned, Plumbing, Sets};
use crate::journal::Journal;
use crate::sniff::{self, Sniff};
use crate::state::{self, Memory, Snapshot};

/// DNS queries answered at once over UDP, all workspaces together (more are dropped, clients
/// retry).
const DNS_CONCURRENCY: usize = 1024;
/// DNS-over-TCP connections open at once, all workspaces together.
const DNS_TCP_CONNECTIONS: usize = 256;
/// Queries per DNS-over-TCP connection.
const DNS_TCP_QUERIES: usize = 100;
/// Idle time of a DNS-over-TCP connection.
const DNS_TCP_IDLE: Duration = Duration::from_secs(10);
/// Largest query accepted.
const MAX_QUERY: usize = 4096;
/// One upstream's time to answer before the next is tried.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// Upstreams tried per query.
const MAX_UPSTREAMS: usize = 3;
/// Shortest time a learned address stays.
const MIN_LEARN: Duration = Duration::from_secs(30);
/// Longest.
const MAX_LEARN: Duration = Duration::from_secs(24 * 3600);
/// Most set elements learned in one call on `reload`.
const LEARN_BATCH: usize = 4096;
/// Proxied connections open at once, all workspaces together (at most: also bounded by the file
/// descriptors netd may open, two per connection).
const PROXY_CONNECTIONS: usize = 16384;
/// Time for a client to send its ClientHello or request head.
const PEEK_TIMEOUT: Duration = Duration::from_secs(5);
/// Time to connect to the destination.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What one workspace (one source address) may hold at once, so that it cannot starve the others.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// DNS queries in flight (over UDP and TCP); past it a query is answered SERVFAIL.
    pub dns_per_source: usize,
    /// DNS-over-TCP connections; past it a connection is closed.
    pub dns_tcp_per_source: usize,
    /// Proxied connections when the plan's `limits.max_connections` says nothing; past the limit
    /// a connection is closed.
    pub proxy_per_source: usize,
    /// A proxied connection with no byte either way for this long is closed.
    pub proxy_idle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            dns_per_source: 32,
            dns_tcp_per_source: 4,
            proxy_per_source: 256,
            proxy_idle: Duration::from_secs(600),
        }
    }
}

/// Counts of what each source address holds.
#[derive(Default)]
struct PerSource {
    counts: Mutex<HashMap<Ipv4Addr, usize>>,
}

/// One unit `PerSource::take` gave out; given back when dropped.
struct SourcePermit {
    table: Arc<PerSource>,
    ip: Ipv4Addr,
}

impl PerSource {
    /// One unit for `ip` if it holds fewer than `limit`.
    fn take(self: &Arc<Self>, ip: Ipv4Addr, limit: usize) -> Option<SourcePermit> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = c.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(SourcePermit {
            table: self.clone(),
            ip,
        })
    }
}

impl Drop for SourcePermit {
    fn drop(&mut self) {
        let mut c = self.table.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = c.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.remove(&self.ip);
            }
        }
    }
}

/// The resolver and proxy's shared state.
pub struct Netd {
    root: PathBuf,
    snap: RwLock<Arc<Snapshot>>,
    /// Held (shared) by an answer from its last look at the plan until its addresses are learned,
    /// and (exclusively) by `reload` to swap the plan: once `reload` returns, nothing an older
    /// plan allowed is learned any more (`set_egress` rebuilds the rules after it).
    learn_gate: tokio::sync::RwLock<()>,
    memory: Mutex<Memory>,
    journal: Journal,
    sets: Arc<dyn Sets>,
    plumbing: Arc<dyn Plumbing>,
    dns_slots: Arc<Semaphore>,
    dns_tcp_slots: Arc<Semaphore>,
    proxy_slots: Arc<Semaphore>,
    limits: Limits,
    dns_sources: Arc<PerSource>,
    dns_tcp_sources: Arc<PerSource>,
    proxy_sources: Arc<PerSource>,
}

/// The sockets `serve` serves.
pub struct Listeners {
    /// DNS over UDP (gateway:53).
    pub dns_udp: UdpSocket,
    /// DNS over TCP (gateway:53).
    pub dns_tcp: TcpListener,
    /// The egress proxy (gateway:proxy_port).
    pub proxy: TcpListener,
    /// The control socket (`ROOT/.net/netd.sock`).
    pub control: UnixListener,
}

fn denial(ws: &str, kind: &str, why: String) -> Denial {
    Denial {
        time: String::new(),
        workspace: ws.to_string(),
        kind: kind.to_string(),
        address: None,
        port: None,
        protocol: None,
        name: None,
        why,
        count: 1,
    }
}

/// The learned-set elements for these addresses and ports.
fn entries(
    addrs: &[(Ipv4Addr, Duration)],
    ports: &Option<Vec<warren_api::net::PortRange>>,
) -> Vec<Learned> {
    let mut out = Vec::new();
    for (ip, d) in addrs {
        match ports {
            None => out.push((*ip, None, *d)),
            Some(ps) => out.extend(ps.iter().map(|p| (*ip, Some(*p), *d))),
        }
    }
    out
}

impl Netd {
    /// Loads the root's state.
    pub fn new(
        root: PathBuf,
        sets: Arc<dyn Sets>,
        plumbing: Arc<dyn Plumbing>,
    ) -> anyhow::Result<Arc<Netd>> {
        Netd::with_limits(root, sets, plumbing, Limits::default())
    }

    /// Loads the root's state, with these per-workspace limits.
    pub(crate) fn with_limits(
        root: PathBuf,
        sets: Arc<dyn Sets>,
        plumbing: Arc<dyn Plumbing>,
        limits: Limits,
    ) -> anyhow::Result<Arc<Netd>> {
        let snap = state::load(&root)?;
        Ok(Arc::new(Netd {
            journal: Journal::new(root.join(".net/denials.jsonl")),
            root,
            snap: RwLock::new(Arc::new(snap)),
            learn_gate: tokio::sync::RwLock::new(()),
            memory: Mutex::new(Memory::default()),
            sets,
            plumbing,
            dns_slots: Arc::new(Semaphore::new(DNS_CONCURRENCY)),
            dns_tcp_slots: Arc::new(Semaphore::new(DNS_TCP_CONNECTIONS)),
            proxy_slots: Arc::new(Semaphore::new(proxy_connections())),
            limits,
            dns_sources: Arc::default(),
            dns_tcp_sources: Arc::default(),
            proxy_sources: Arc::default(),
        }))
    }

    /// The state in use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snap.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Re-reads the root, then re-learns the remembered addresses of names still allowed (their
    /// sets may have been rebuilt) and forgets the others.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let root = self.root.clone();
        let snap = Arc::new(tokio::task::spawn_blocking(move || state::load(&root)).await??);
        {
            let _gate = self.learn_gate.write().await;
            *self.snap.write().unwrap_or_else(|e| e.into_inner()) = snap.clone();
        }
        let by_id: std::collections::HashMap<&str, &Arc<state::Workspace>> =
            snap.by_addr.values().map(|w| (w.id.as_str(), w)).collect();
        // At most `state::NAMES_PER_WORKSPACE` names per workspace, learned in one batch per
        // workspace and stage (a few thousand elements at most per call).
        let live = self.memory().live(Instant::now());
        let mut batches: HashMap<(String, usize), Vec<Learned>> = HashMap::new();
        for (id, name, addrs) in live {
            let verdict = by_id
                .get(id.as_str())
                .map(|w| decide::dns(w.plan.as_ref(), &name));
            let Some(Ok(learn)) = verdict else {
                self.memory().forget(&id, &name);
                continue;
            };
            let addrs: Vec<_> = addrs
                .into_iter()
                .filter(|(ip, _)| !snap.host.any_protected(*ip))
                .collect();
            for l in learn {
                let e = entries(&addrs, &l.ports);
                if !e.is_empty() {
                    batches.entry((id.clone(), l.stage)).or_default().extend(e);
                }
            }
        }
        let jobs: Vec<(String, usize, Vec<Learned>)> = batches
            .into_iter()
            .flat_map(|((id, stage), e)| {
                e.chunks(LEARN_BATCH)
                    .map(|c| (id.clone(), stage, c.to_vec()))
                    .collect::<Vec<_>>()
            })
            .collect();
        if jobs.is_empty() {
            return Ok(());
        }
        let sets = self.sets.clone();
        let cfg = snap.cfg.clone();
        tokio::task::spawn_blocking(move || {
            let mut first = Ok(());
            for (id, stage, e) in jobs {
                if let Err(err) = sets.learn(&cfg, &id, stage, &e) {
                    if first.is_ok() {
                        first = Err(err.context(format!("re-learning {id}'s names")));
                    }
                }
            }
            first
        })
        .await?
    }

    fn journal_now(&self, d: Denial) {
        self.journal.note(d, SystemTime::now());
    }

    /// Answers one DNS message from `src` (`None`: no answer at all).
    pub async fn answer(&self, src: Ipv4Addr, msg: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let q = match dns::parse_query(msg) {
            Ok(q) => q,
            Err(_) => return dns::formerr(msg),
        };
        let snap = self.snapshot();
        let Some(ws) = snap.by_addr.get(&src).cloned() else {
            return Some(dns::answer(&q, dns::REFUSED));
        };
        if q.opcode != 0 || q.qclass != dns::CLASS_IN {
            return Some(dns::answer(&q, dns::NOTIMP));
        }
        let Some(name) = q.name() else {
            let mut d = denial(&ws.id, "dns", "invalid name".into());
            d.name = Some(q.display_name());
            self.journal_now(d);
            return Some(dns::answer(&q, dns::NXDOMAIN));
        };
        // (Decided again before its addresses are learned.)
        if let Err(why) = decide::dns(ws.plan.as_ref(), &name) {
            let mut d = denial(&ws.id, "dns", why);
            d.name = Some(name);
            self.journal_now(d);
            return Some(dns::answer(&q, dns::NXDOMAIN));
        }
        if q.qtype == dns::TYPE_AAAA {
            return Some(dns::answer(&q, dns::NOERROR));
        }
        let Some((mut resp, parsed)) = self.forward(&snap.upstreams, &name, &q, tcp).await else {
            return Some(dns::answer(&q, dns::SERVFAIL));
        };
        let addrs: Vec<(Ipv4Addr, Duration)> = dns::chain_addresses(&name, &parsed)
            .into_iter()
            .filter(|(ip, _)| !snap.host.any_protected(*ip))
            .map(|(ip, ttl)| {
                (
                    ip,
                    Duration::from_secs(u64::from(ttl)).clamp(MIN_LEARN, MAX_LEARN),
                )
            })
            .collect();
        if !addrs.is_empty() {
            // The plan may have changed while upstream answered: decided again, under the gate.
            let _gate = self.learn_gate.read().await;
            let now = self.snapshot();
            let learn = match now.by_addr.get(&src).filter(|w| w.id == ws.id) {
                Some(w) => match decide::dns(w.plan.as_ref(), &name) {
                    Ok(l) => l,
                    Err(why) => {
                        let mut d = denial(&ws.id, "dns", why);
                        d.name = Some(name);
                        self.journal_now(d);
                        return Some(dns::answer(&q, dns::NXDOMAIN));
                    }
                },
                None => return Some(dns::answer(&q, dns::REFUSED)),
            };
            // Learned elements live twice the answer's TTL, so a client can use the answer for
            // its whole TTL whenever it got it; an element is replaced (a transaction that waits
            // for the kernel, ~15 ms) only once it has less than that TTL left, else adding it is
            // cheap (and recreates it if its set was rebuilt meanwhile).
            let at = Instant::now();
            let (stale, fresh): (Vec<_>, Vec<_>) = {
                let memory = self.memory();
                addrs
                    .iter()
                    .map(|&(ip, d)| (ip, d, (d * 2).min(MAX_LEARN).max(d)))
                    .partition(|&(ip, d, _)| {
                        memory
                            .until(&ws.id, &name, ip)
                            .is_some_and(|u| u.saturating_duration_since(at) < d)
                    })
            };
            let lives = |v: &[(Ipv4Addr, Duration, Duration)]| -> Vec<(Ipv4Addr, Duration)> {
                v.iter().map(|&(ip, _, life)| (ip, life)).collect()
            };
            let (stale, fresh) = (lives(&stale), lives(&fresh));
            let jobs: Vec<(usize, Vec<Learned>, bool)> = learn
                .iter()
                .flat_map(|l| {
                    [
                        (l.stage, entries(&fresh, &l.ports), false),
                        (l.stage, entries(&stale, &l.ports), true),
                    ]
                })
                .filter(|(_, e, _)| !e.is_empty())
                .collect();
            let addrs: Vec<(Ipv4Addr, Duration)> = fresh.iter().chain(&stale).copied().collect();
            if !jobs.is_empty() {
                let sets = self.sets.clone();
                let cfg = snap.cfg.clone();
                let id = ws.id.clone();
                let learned = tokio::task::spawn_blocking(move || {
                    jobs.iter().try_for_each(|(stage, e, replace)| {
                        if *replace {
                            sets.relearn(&cfg, &id, *stage, e)
                        } else {
                            sets.learn(&cfg, &id, *stage, e)
                        }
                    })
                })
                .await;
                match learned {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        eprintln!("warren netd: cannot learn {name} for {}: {e:#}", ws.id);
                        return Some(dns::answer(&q, dns::SERVFAIL));
                    }
                    Err(e) => {
                        eprintln!("warren netd: cannot learn {name} for {}: {e}", ws.id);
                        return Some(dns::answer(&q, dns::SERVFAIL));
                    }
                }
            }
            self.memory()
                .remember(&ws.id, &name, &addrs, Instant::now());
        }
        dns::set_id(&mut resp, q.id);
        Some(resp)
    }

    /// Asks the upstreams in turn; a SERVFAIL or REFUSED answer is kept only if none answers
    /// better.
    async fn forward(
        &self,
        upstreams: &[SocketAddr],
        name: &str,
        q: &Query,
        tcp: bool,
    ) -> Option<(Vec<u8>, dns::Response)> {
        let mut fallback = None;
        for up in upstreams.iter().take(MAX_UPSTREAMS) {
            let id: u16 = rand::random();
            let out = dns::upstream_query(q, id);
            let got = tokio::time::timeout(UPSTREAM_TIMEOUT, exchange(*up, &out, id, tcp)).await;
            let Ok(Ok(resp)) = got else { continue };
            let Ok(parsed) = dns::parse_response(&resp) else {
                continue;
            };
            if parsed.id != id || parsed.question != Some((name.to_string(), q.qtype, q.qclass)) {
                continue;
            }
            if parsed.rcode == dns::SERVFAIL || parsed.rcode == dns::REFUSED {
                fallback = Some((resp, parsed));
                continue;
            }
            return Some((resp, parsed));
        }
        fallback
    }

    /// Serves DNS over UDP.
    pub async fn serve_dns_udp(self: Arc<Self>, sock: UdpSocket) {
        let sock = Arc::new(sock);
        let mut buf = vec![0u8; MAX_QUERY];
        loop {
            let (n, peer) = match sock.recv_from(&mut buf).await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("warren netd: dns: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let SocketAddr::V4(peer4) = peer else {
                continue;
            };
            // A workspace past its share: SERVFAIL at once, the others are not held up.
            let Some(mine) = self
                .dns_sources
                .take(*peer4.ip(), self.limits.dns_per_source)
            else {
                if let Ok(q) = dns::parse_query(&buf[..n]) {
                    let _ = sock.try_send_to(&dns::answer(&q, dns::SERVFAIL), peer);
                }
                continue;
            };
            // Past the global limit queries are dropped: clients retry.
            let Ok(permit) = self.dns_slots.clone().try_acquire_owned() else {
                continue;
            };
            let msg = buf[..n].to_vec();
            let me = self.clone();
            let sock = sock.clone();
            tokio::spawn(async move {
                let _permit = (permit, mine);
                if let Some(r) = me.answer(*peer4.ip(), &msg, false).await {
                    let _ = sock.send_to(&r, peer).await;
                }
            });
        }
    }

    /// Serves DNS over TCP (RFC 7766 framing: a two-byte length before each message).
    pub async fn serve_dns_tcp(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (s, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let SocketAddr::V4(peer) = peer else { continue };
            // Past the workspace's share or the global limit: closed.
            let Some(mine) = self
                .dns_tcp_sources
                .take(*peer.ip(), self.limits.dns_tcp_per_source)
            else {
                continue;
            };
            let Ok(permit) = self.dns_tcp_slots.clone().try_acquire_owned() else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _permit = (permit, mine);
                me.dns_tcp_conn(s, *peer.ip()).await;
            });
        }
    }

    async fn dns_tcp_conn(&self, mut s: TcpStream, src: Ipv4Addr) {
        for _ in 0..DNS_TCP_QUERIES {
            let mut len = [0u8; 2];
            if !matches!(
                tokio::time::timeout(DNS_TCP_IDLE, s.read_exact(&mut len)).await,
                Ok(Ok(_))
            ) {
                return;
            }
            let n = usize::from(u16::from_be_bytes(len));
            if !(12..=MAX_QUERY).contains(&n) {
                return;
            }
            let mut msg = vec![0u8; n];
            if !matches!(
                tokio::time::timeout(DNS_TCP_IDLE, s.read_exact(&mut msg)).await,
                Ok(Ok(_))
            ) {
                return;
            }
            // Queries over TCP count against the same share as over UDP.
            let r = match self.dns_sources.take(src, self.limits.dns_per_source) {
                Some(_mine) => self.answer(src, &msg, true).await,
                None => dns::parse_query(&msg)
                    .ok()
                    .map(|q| dns::answer(&q, dns::SERVFAIL)),
            };
            let Some(r) = r else {
                return;
            };
            let Ok(rlen) = u16::try_from(r.len()) else {
                return;
            };
            let mut out = rlen.to_be_bytes().to_vec();
            out.extend_from_slice(&r);
            if s.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    /// Serves the egress proxy.
    pub async fn serve_proxy(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (s, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let SocketAddr::V4(peer4) = peer else {
                continue;
            };
            // Only workspaces, each within its plan's connection limit (or the default).
            let limit = {
                let snap = self.snapshot();
                let Some(ws) = snap.by_addr.get(peer4.ip()) else {
                    continue;
                };
                ws.plan
                    .as_ref()
                    .and_then(|p| p.limits.max_connections)
                    .map_or(self.limits.proxy_per_source, |m| m as usize)
            };
            let Some(mine) = self.proxy_sources.take(*peer4.ip(), limit) else {
                continue;
            };
            let Ok(permit) = self.proxy_slots.clone().try_acquire_owned() else {
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let _permit = (permit, mine);
                me.proxy_conn(s, peer).await;
            });
        }
    }

    async fn proxy_conn(&self, mut s: TcpStream, peer: SocketAddr) {
        let SocketAddr::V4(peer) = peer else { return };
        let snap = self.snapshot();
        let Some(ws) = snap.by_addr.get(peer.ip()).cloned() else {
            return;
        };
        let Ok(dst) = self.plumbing.original_dst(&s) else {
            return;
        };
        // A connection made to the proxy itself, not redirected: nowhere to go.
        if s.local_addr().ok() == Some(SocketAddr::V4(dst)) {
            return;
        }
        let (buf, sniffed) = peek(&mut s).await;
        let (name, http) = match sniffed {
            Sniff::Tls { sni } => (sni, false),
            Sniff::Http { host } => (host, true),
            Sniff::Other | Sniff::NeedMore => (None, false),
            Sniff::Bad { http, why } => {
                self.refuse(&mut s, &ws.id, dst, None, why.to_string(), http)
                    .await;
                return;
            }
        };
        let verdict = {
            let now = Instant::now();
            let mem = self.memory();
            decide::proxy(
                ws.plan.as_ref(),
                &snap.host,
                name.as_deref(),
                *dst.ip(),
                dst.port(),
                &|n, ip| mem.resolved(&ws.id, n, ip, now),
            )
        };
        if let Err(why) = verdict {
            self.refuse(&mut s, &ws.id, dst, name, why, http).await;
            return;
        }
        let target = self.plumbing.dial(dst);
        let Ok(Ok(mut up)) =
            tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await
        else {
            if http {
                let _ = s
                    .write_all(&response(
                        502,
                        "Bad Gateway",
                        &format!("warren: cannot connect to {dst}\n"),
                    ))
                    .await;
            }
            return;
        };
        // The destination may be the host after all: an address it gained after netd read its
        // list, or one the kernel answers itself.
        if self.plumbing.reached_host(&up) {
            drop(up);
            self.refuse(&mut s, &ws.id, dst, name, "protected:host".into(), http)
                .await;
            return;
        }
        if up.write_all(&buf).await.is_err() {
            return;
        }
        splice(&mut s, &mut up, self.limits.proxy_idle).await;
    }

    async fn refuse(
        &self,
        s: &mut TcpStream,
        id: &str,
        dst: SocketAddrV4,
        name: Option<String>,
        why: String,
        http: bool,
    ) {
        let what = name.clone().unwrap_or_else(|| dst.ip().to_string());
        let body = format!("warren: egress to {what} refused: {why}\n");
        let mut d = denial(id, "proxy", why);
        d.address = Some(*dst.ip());
        d.port = Some(dst.port());
        d.protocol = Some("tcp".into());
        d.name = name;
        self.journal_now(d);
        if http {
            let _ = s.write_all(&response(403, "Forbidden", &body)).await;
            let _ = s.shutdown().await;
        }
    }

    /// Serves the control socket: `reload` → re-read everything, answer `ok`.
    pub async fn serve_control(self: Arc<Self>, listener: UnixListener) {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                let (r, mut w) = s.into_split();
                let mut line = String::new();
                let mut r = tokio::io::BufReader::new(r.take(256));
                let read =
                    tokio::time::timeout(Duration::from_secs(5), r.read_line(&mut line)).await;
                if !matches!(read, Ok(Ok(_))) {
                    return;
                }
                let reply = match line.trim() {
                    "reload" => match me.reload().await {
                        Ok(()) => "ok\n".to_string(),
                        Err(e) => format!("error: {}\n", format!("{e:#}").replace('\n', " ")),
                    },
                    "ping" => "ok\n".to_string(),
                    other => format!("error: unknown command `{}`\n", other.escape_debug()),
                };
                let _ = w.write_all(reply.as_bytes()).await;
            });
        }
    }
}

/// Proxied connections allowed at once: `PROXY_CONNECTIONS`, or fewer when the file descriptor
/// limit would not allow two per connection (with some to spare).
fn proxy_connections() -> usize {
    use nix::sys::resource::{getrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, _)) => {
            let fit = soft.saturating_sub(512) / 2;
            usize::try_from(fit)
                .unwrap_or(usize::MAX)
                .clamp(64, PROXY_CONNECTIONS)
        }
        Err(_) => 1024,
    }
}

/// A read half that notes when it last read a byte.
struct Noting<'a, R> {
    inner: R,
    last: &'a AtomicU64,
    start: tokio::time::Instant,
}

impl<R: AsyncRead + Unpin> AsyncRead for Noting<'_, R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
            self.last.store(ms, Ordering::Relaxed);
        }
        r
    }
}

/// Copies both ways until both sides are done (each end's EOF is passed on as a half-close), one
/// fails, or no byte went either way for `idle`.
async fn splice(a: &mut TcpStream, b: &mut TcpStream, idle: Duration) {
    let start = tokio::time::Instant::now();
    let last = AtomicU64::new(0);
    let (ar, mut aw) = a.split();
    let (br, mut bw) = b.split();
    let mut ar = Noting {
        inner: ar,
        last: &last,
        start,
    };
    let mut br = Noting {
        inner: br,
        last: &last,
        start,
    };
    // An error either way (a reset, say) ends both, as `copy_bidirectional` does.
    let a_to_b = async {
        tokio::io::copy(&mut ar, &mut bw).await?;
        bw.shutdown().await
    };
    let b_to_a = async {
        tokio::io::copy(&mut br, &mut aw).await?;
        aw.shutdown().await
    };
    let watchdog = async {
        loop {
            let at = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            if tokio::time::Instant::now() >= at {
                return;
            }
            tokio::time::sleep_until(at).await;
        }
    };
    tokio::select! {
        _ = async { tokio::try_join!(a_to_b, b_to_a) } => {}
        _ = watchdog => {}
    }
}

/// An HTTP response closing the connection.
fn response(code: u16, reason: &str, body: &str) -> Vec<u8> {
    let body: String = body
        .chars()
        .map(|c| if c.is_control() && c != '\n' { ' ' } else { c })
        .collect();
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads the client's first bytes until `sniff` decides, the size bound or the time bound.
async fn peek(s: &mut TcpStream) -> (Vec<u8>, Sniff) {
    let mut buf = Vec::with_capacity(4096);
    let deadline = tokio::time::Instant::now() + PEEK_TIMEOUT;
    loop {
        let r = sniff::sniff(&buf);
        if r != Sniff::NeedMore {
            return (buf, r);
        }
        let http = buf.first().is_some_and(u8::is_ascii_uppercase);
        if buf.len() >= sniff::MAX_PEEK {
            return (
                buf,
                Sniff::Bad {
                    http,
                    why: "request head too large",
                },
            );
        }
        let mut chunk = vec![0u8; (sniff::MAX_PEEK - buf.len()).min(8192)];
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            // Nothing sent in time: a protocol where the server speaks first.
            Err(_) if buf.is_empty() => return (buf, Sniff::Other),
            _ => {
                return (
                    buf,
                    Sniff::Bad {
                        http,
                        why: "incomplete request",
                    },
                )
            }
        }
    }
}

/// One exchange with an upstream resolver.
async fn exchange(up: SocketAddr, query: &[u8], id: u16, tcp: bool) -> std::io::Result<Vec<u8>> {
    if tcp {
        let mut s = TcpStream::connect(up).await?;
        let mut out = (query.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(query);
        s.write_all(&out).await?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await?;
        let mut resp = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut resp).await?;
        return Ok(resp);
    }
    let bind: SocketAddr = if up.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(up).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock.recv(&mut buf).await?;
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// Serves everything until `shutdown` completes; then writes the journal's pending records.
pub async fn serve(
    netd: Arc<Netd>,
    l: Listeners,
    mut nflog: mpsc::Receiver<Denial>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(netd.clone().serve_dns_udp(l.dns_udp));
    tasks.spawn(netd.clone().serve_dns_tcp(l.dns_tcp));
    tasks.spawn(netd.clone().serve_proxy(l.proxy));
    tasks.spawn(netd.clone().serve_control(l.control));
    let n = netd.clone();
    tasks.spawn(async move {
        while let Some(d) = nflog.recv().await {
            n.journal_now(d);
        }
        std::future::pending::<()>().await
    });
    let n = netd.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            n.journal.flush(SystemTime::now());
            n.memory().prune(Instant::now());
        }
    });
    shutdown.await;
    tasks.abort_all();
    netd.journal.close();
}
