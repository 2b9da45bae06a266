//! Client side of `warren exec` and `warren shell`: hands the process our stdio (through pipes when
//! they are terminals, so a workspace never holds the user's terminal), or a PTY in raw mode with
//! window-size changes; forwards signals; returns the process's exit code.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;

use anyhow::{Context, Result};
use nix::sys::termios::{self, SetArg, Termios};
use tokio::signal::unix::{signal, SignalKind};
use warren_engine::Engine;
use warren_runtime::{ExecProcess, Stdio};

/// Signals forwarded to the process (SIGINT etc. arrive through the PTY in terminal mode).
type SignalCtor = fn() -> SignalKind;

const FORWARDED: &[(i32, SignalCtor)] = &[
    (libc::SIGINT, SignalKind::interrupt),
    (libc::SIGTERM, SignalKind::terminate),
    (libc::SIGHUP, SignalKind::hangup),
    (libc::SIGQUIT, SignalKind::quit),
    (libc::SIGUSR1, SignalKind::user_defined1),
    (libc::SIGUSR2, SignalKind::user_defined2),
];

fn copy_thread(
    mut from: impl Read + Send + 'static,
    mut to: impl Write + Send + 'static,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 32 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() || to.flush().is_err() {
                        break;
                    }
                }
            }
        }
    })
}

/// One of our standard streams, for the process: passed as it is unless it is a terminal, which the
/// workspace gets a pipe to instead (copied by a thread; output copiers are added to `waits`).
fn stream(fd: i32, waits: &mut Vec<JoinHandle<()>>) -> Result<OwnedFd> {
    let (is_tty, dup) = match fd {
        0 => (
            std::io::stdin().is_terminal(),
            std::io::stdin().as_fd().try_clone_to_owned(),
        ),
        1 => (
            std::io::stdout().is_terminal(),
            std::io::stdout().as_fd().try_clone_to_owned(),
        ),
        _ => (
            std::io::stderr().is_terminal(),
            std::io::stderr().as_fd().try_clone_to_owned(),
        ),
    };
    let dup = dup.context("duplicate stdio")?;
    if !is_tty {
        return Ok(dup);
    }
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).context("pipe")?;
    if fd == 0 {
        // Never joined: it ends with this process, whatever the workspace does with its stdin.
        copy_thread(std::fs::File::from(dup), std::fs::File::from(w));
        Ok(r)
    } else {
        waits.push(copy_thread(
            std::fs::File::from(r),
            std::fs::File::from(dup),
        ));
        Ok(w)
    }
}

/// Runs `process` in workspace `name` with our stdio; returns its exit code.
pub async fn run(engine: &Engine, name: &str, mut process: ExecProcess) -> Result<u8> {
    if process.tty.is_some() {
        return run_tty(engine, name, process).await;
    }
    let mut waits = Vec::new();
    let stdio = Stdio {
        stdin: stream(0, &mut waits)?,
        stdout: stream(1, &mut waits)?,
        stderr: stream(2, &mut waits)?,
    };
    process.tty = None;
    let signals = Signals::install()?;
    let session = interruptible(engine.exec(name, process, Some(stdio))).await?;
    let sig = session.signaller()?;
    let forward = forward_signals(signals, move |s| {
        let _ = sig.signal(s);
    });
    let code = tokio::task::spawn_blocking(move || session.wait()).await??;
    forward.abort();
    for w in waits {
        let _ = w.join();
    }
    Ok(code.clamp(0, 255) as u8)
}

/// Handlers for the forwarded signals, installed before the process starts so that a signal arriving
/// early is delivered to it rather than killing this client.
pub(crate) struct Signals(Vec<(i32, tokio::signal::unix::Signal)>);

impl Signals {
    pub(crate) fn install() -> Result<Signals> {
        let mut streams = Vec::new();
        for (num, kind) in FORWARDED {
            streams.push((*num, signal(kind()).context("install signal handler")?));
        }
        Ok(Signals(streams))
    }
}

/// Runs `f` (starting the process). A first SIGINT or SIGTERM meanwhile is not lost: the
/// forwarding handlers, installed before, hold it and deliver it once the process exists (it may
/// already be running while `f` waits for the answer). A second one gives up with the conventional
/// exit status, for a start that hangs.
async fn interruptible<T>(
    f: impl std::future::Future<Output = Result<T, warren_engine::EngineError>>,
) -> Result<T> {
    let mut int = signal(SignalKind::interrupt()).context("install signal handler")?;
    let mut term = signal(SignalKind::terminate()).context("install signal handler")?;
    tokio::pin!(f);
    let mut seen = 0;
    loop {
        tokio::select! {
            r = &mut f => return Ok(r?),
            _ = int.recv() => {
                seen += 1;
                if seen > 1 {
                    std::process::exit(128 + libc::SIGINT);
                }
            }
            _ = term.recv() => {
                seen += 1;
                if seen > 1 {
                    std::process::exit(128 + libc::SIGTERM);
                }
            }
        }
    }
}

pub(crate) fn forward_signals(
    signals: Signals,
    f: impl Fn(i32) + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    let f = std::sync::Arc::new(f);
    let streams = signals.0;
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for (num, mut s) in streams {
            let f = f.clone();
            tasks.push(tokio::spawn(async move {
                while s.recv().await.is_some() {
                    f(num);
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
    })
}

pub(crate) struct RawMode {
    saved: Option<Termios>,
}

impl RawMode {
    pub(crate) fn enter() -> RawMode {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            termios::cfmakeraw(&mut raw);
            let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw);
        }
        RawMode { saved }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, t);
        }
    }
}

async fn run_tty(engine: &Engine, name: &str, mut process: ExecProcess) -> Result<u8> {
    let size = warren_runtime::tty::window_size(std::io::stdin().as_fd())
        .or_else(|| warren_runtime::tty::window_size(std::io::stdout().as_fd()))
        .unwrap_or((24, 80));
    process.tty = Some(size);
    if let Ok(term) = std::env::var("TERM") {
        process.env.push(format!("TERM={term}"));
    } else {
        process.env.push("TERM=xterm-256color".into());
    }
    let signals = Signals::install()?;
    let session = interruptible(engine.exec(name, process, None)).await?;
    let master = session
        .pty
        .as_ref()
        .context("the workspace sent no terminal")?
        .try_clone()?;
    let raw = RawMode::enter();
    let m_in = std::fs::File::from(master.try_clone()?);
    let m_out = std::fs::File::from(master.try_clone()?);
    let _stdin = copy_thread(std::io::stdin(), m_in);
    let out = copy_thread(m_out, std::io::stdout());
    let mut winch = signal(SignalKind::window_change()).context("install SIGWINCH handler")?;
    let resize_master = master.try_clone()?;
    let resizer = tokio::spawn(async move {
        while winch.recv().await.is_some() {
            if let Some((r, c)) = warren_runtime::tty::window_size(std::io::stdin().as_fd()) {
                let _ = warren_runtime::tty::set_window_size(resize_master.as_fd(), r, c);
            }
        }
    });
    let sig = session.signaller()?;
    let forward = forward_signals(signals, move |s| {
        if s != libc::SIGINT && s != libc::SIGQUIT {
            let _ = sig.signal(s);
        }
    });
    let code = tokio::task::spawn_blocking(move || session.wait()).await??;
    resizer.abort();
    forward.abort();
    drop(master);
    // The output copier ends when the PTY's last writer is gone; don't hang on background jobs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(500);
    while !out.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    drop(raw);
    Ok(code.clamp(0, 255) as u8)
}
