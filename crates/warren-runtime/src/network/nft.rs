//! nftables through libnftables, loaded at run time (`dlopen("libnftables.so.1")`): Warren has no
//! build-time dependency on it, and a host without it gets a clear error only when a workspace asks
//! for a network of its own.
//!
//! Each [`Nft::run`] is one libnftables command buffer: every command in it is one kernel
//! transaction, applied entirely or not at all.

use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// The library's name (Debian: package `nftables`/`libnftables1`).
const LIBRARY: &str = "libnftables.so.1";

/// `NFT_CTX_DEFAULT`.
const CTX_DEFAULT: c_uint = 0;
/// `NFT_CTX_OUTPUT_JSON`.
const OUTPUT_JSON: c_uint = 1 << 4;

type CtxNew = unsafe extern "C" fn(c_uint) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type CtxInt = unsafe extern "C" fn(*mut c_void) -> c_int;
type CtxGetBuf = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type CtxSetFlags = unsafe extern "C" fn(*mut c_void, c_uint);
type CtxGetFlags = unsafe extern "C" fn(*mut c_void) -> c_uint;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// The entry points Warren uses.
struct Lib {
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    buffer_output: CtxInt,
    buffer_error: CtxInt,
    get_output: CtxGetBuf,
    get_error: CtxGetBuf,
    output_get_flags: CtxGetFlags,
    output_set_flags: CtxSetFlags,
    run_cmd: RunCmd,
}

// SAFETY: `Lib` holds only function pointers into a library that stays loaded for the life of the
// process (it is never dlclose'd); calls are serialized process-wide (`serialized`), so no two threads are ever in
// the library at once.
unsafe impl Send for Lib {}
// SAFETY: as above: the pointers themselves are immutable.
unsafe impl Sync for Lib {}

fn lib() -> Result<&'static Lib, String> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(load).as_ref().map_err(|e| e.clone())
}

fn load() -> Result<Lib, String> {
    let name = CString::new(LIBRARY).expect("no NUL");
    // SAFETY: dlopen takes a NUL-terminated name that outlives the call; the handle is kept forever.
    let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        return Err(format!(
            "network isolation needs nftables ({LIBRARY} not found): apt-get install nftables"
        ));
    }
    let sym = |s: &str| -> Result<*mut c_void, String> {
        let c = CString::new(s).expect("no NUL");
        // SAFETY: `handle` is a live library handle and `c` a NUL-terminated symbol name.
        let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
        if p.is_null() {
            Err(format!(
                "{LIBRARY} has no `{s}`: upgrade nftables (apt-get install nftables)"
            ))
        } else {
            Ok(p)
        }
    };
    // SAFETY: every transmute below turns a symbol that is a function of libnftables' public API
    // (nftables/libnftables.h) into the Rust function pointer type of exactly its C signature, and
    // the library is never unloaded.
    unsafe {
        Ok(Lib {
            ctx_new: std::mem::transmute::<*mut c_void, CtxNew>(sym("nft_ctx_new")?),
            ctx_free: std::mem::transmute::<*mut c_void, CtxFree>(sym("nft_ctx_free")?),
            buffer_output: std::mem::transmute::<*mut c_void, CtxInt>(sym(
                "nft_ctx_buffer_output",
            )?),
            buffer_error: std::mem::transmute::<*mut c_void, CtxInt>(sym("nft_ctx_buffer_error")?),
            get_output: std::mem::transmute::<*mut c_void, CtxGetBuf>(sym(
                "nft_ctx_get_output_buffer",
            )?),
            get_error: std::mem::transmute::<*mut c_void, CtxGetBuf>(sym(
                "nft_ctx_get_error_buffer",
            )?),
            output_get_flags: std::mem::transmute::<*mut c_void, CtxGetFlags>(sym(
                "nft_ctx_output_get_flags",
            )?),
            output_set_flags: std::mem::transmute::<*mut c_void, CtxSetFlags>(sym(
                "nft_ctx_output_set_flags",
            )?),
            run_cmd: std::mem::transmute::<*mut c_void, RunCmd>(sym("nft_run_cmd_from_buffer")?),
        })
    }
}

/// Serializes every use of libnftables in the process: its documentation does not say that contexts
/// may be used from several threads at once (netd learns from several), so Warren does not.
fn serialized() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether libnftables can be loaded on this host.
pub fn available() -> Result<(), String> {
    lib().map(|_| ())
}

/// One libnftables context. Not shared between threads.
pub struct Nft {
    lib: &'static Lib,
    ctx: *mut c_void,
}

impl Nft {
    /// A new context with buffered output and errors; plain text output unless `json`.
    pub fn new(json: bool) -> Result<Nft, String> {
        let lib = lib()?;
        let one = serialized();
        // SAFETY: nft_ctx_new takes flags and returns a new context or NULL.
        let ctx = unsafe { (lib.ctx_new)(CTX_DEFAULT) };
        if ctx.is_null() {
            return Err("nft_ctx_new failed".into());
        }
        // SAFETY: `ctx` is a live context, owned by the `Nft` made below.
        let ok = unsafe { (lib.buffer_output)(ctx) == 0 && (lib.buffer_error)(ctx) == 0 };
        if ok && json {
            // SAFETY: `ctx` is a live context; flags are plain integers.
            unsafe {
                let f = (lib.output_get_flags)(ctx);
                (lib.output_set_flags)(ctx, f | OUTPUT_JSON);
            }
        }
        // Released before `nft` may be dropped (its drop takes the lock).
        drop(one);
        let nft = Nft { lib, ctx };
        if !ok {
            return Err("nft_ctx_buffer_output failed".into());
        }
        Ok(nft)
    }

    /// Runs `script` (nft syntax, or JSON in JSON mode) as one transaction; its output, or the error
    /// text libnftables printed.
    pub fn run(&mut self, script: &str) -> Result<String, String> {
        let c = CString::new(script).map_err(|_| "nft script contains a NUL byte".to_string())?;
        let _one = serialized();
        // SAFETY: `ctx` is live and used by this thread only (`&mut self`); `c` outlives the call.
        let rc = unsafe { (self.lib.run_cmd)(self.ctx, c.as_ptr()) };
        // SAFETY: with buffering on, these return NUL-terminated buffers owned by the context, valid
        // until the next command on it; they are copied out at once.
        let (out, err) = unsafe {
            let o = (self.lib.get_output)(self.ctx);
            let e = (self.lib.get_error)(self.ctx);
            let copy = |p: *const c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            (copy(o), copy(e))
        };
        if rc == 0 {
            Ok(out)
        } else {
            let err = err.trim();
            Err(if err.is_empty() {
                format!("nft failed ({rc})")
            } else {
                format!("nft: {err}")
            })
        }
    }

    /// Runs `script` in a fresh context: the common case.
    pub fn once(script: &str) -> Result<String, String> {
        Nft::new(false)?.run(script)
    }

    /// Runs a listing command with JSON output and parses it.
    pub fn json(cmd: &str) -> Result<serde_json::Value, String> {
        let out = Nft::new(true)?.run(cmd)?;
        if out.trim().is_empty() {
            return Ok(serde_json::json!({ "nftables": [] }));
        }
        serde_json::from_str(&out).map_err(|e| format!("parse nft JSON output: {e}"))
    }
}

impl Drop for Nft {
    fn drop(&mut self) {
        let _one = serialized();
        // SAFETY: `ctx` came from nft_ctx_new and is freed once, here.
        unsafe { (self.lib.ctx_free)(self.ctx) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_a_listing_and_reports_errors_with_nfts_own_text() {
        if available().is_err() || !nix::unistd::geteuid().is_root() {
            return;
        }
        let v = Nft::json("list tables").unwrap();
        assert!(v["nftables"].is_array(), "{v}");
        let e = Nft::once("list table inet warren_no_such_table_x").unwrap_err();
        assert!(e.starts_with("nft: "), "{e}");
        assert!(
            e.contains("No such file") || e.contains("does not exist"),
            "{e}"
        );
    }
}
