//! MCP against a real server with real workspaces, driven by the official Python `mcp` client
//! library (pinned; `scripts/deps` installs it into `.cache/venv`): over the streamable HTTP
//! transport (`/api/v1/mcp`) and over stdio through `warren mcp` (the real binary, with
//! `WARREN_URL` + `WARREN_TOKEN`). Both list the tools, create a busybox workspace, run commands,
//! write, read and list a file, get a preview URL of a server listening in it and delete it.
//! The git tools (over HTTP) clone from, commit in and push to a real git smart-HTTP server
//! (`common/gitserve.rs`) from a workspace of the git image (`common/gitimg.rs`).
//! Then the attacks and bad input over raw HTTP: no token, a token without the exec scope,
//! another user's workspace, another token's session, malformed JSON-RPC, unknown methods and
//! tools, bad arguments, protocol versions and batches.

mod common;
#[path = "common/gitimg.rs"]
mod gitimg;
#[path = "common/gitserve.rs"]
mod gitserve;

use std::path::PathBuf;
use std::process::Command;

use common::TestServer;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The Python with the `mcp` package: `$WARREN_MCP_PYTHON`, else the venv of `scripts/deps`.
fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WARREN_MCP_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/venv/bin/python");
    let ok = p.is_file()
        && Command::new(&p)
            .args(["-c", "import mcp"])
            .output()
            .is_ok_and(|o| o.status.success());
    ok.then_some(p)
}

/// The Python, or None (and a note) when it is missing outside CI.
fn python_or_skip() -> Option<PathBuf> {
    let p = python();
    if p.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "the Python mcp package is not installed: run scripts/deps"
        );
        println!("SKIPPED: the Python mcp package is not installed (run scripts/deps)");
    }
    p
}

/// The client: one scenario, over `http` (argv: http URL WS) or `stdio` (argv: stdio WARREN WS);
/// prints what it saw as JSON. The token comes in `MCP_TOKEN`.
const CLIENT: &str = r#"
import asyncio, json, os, sys
import httpx
from mcp import ClientSession, StdioServerParameters
from mcp.shared.exceptions import McpError
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

mode, target, ws = sys.argv[1], sys.argv[2], sys.argv[3]
token = os.environ["MCP_TOKEN"]

def text(r):
    return "".join(c.text for c in r.content if c.type == "text")

def res(r):
    return {"error": r.isError, "text": text(r), "structured": r.structuredContent}

async def scenario(s, out, get_sid=None):
    init = await s.initialize()
    out["protocol"] = init.protocolVersion
    out["server"] = init.serverInfo.name
    if get_sid:
        out["session"] = get_sid()
    out["tools"] = sorted(t.name for t in (await s.list_tools()).tools)
    await s.send_ping()
    out["create"] = res(await s.call_tool("create_workspace", {"name": ws, "template": "tiny"}))
    out["list"] = res(await s.call_tool("list_workspaces", {}))
    out["run"] = res(await s.call_tool("run_command", {"workspace": ws,
        "command": "echo hello; echo oops >&2; exit 3"}))
    out["run_argv"] = res(await s.call_tool("run_command", {"workspace": ws,
        "argv": ["cat"], "stdin": "from stdin"}))
    content = "line one\nline two, with ünïcode\n"
    out["content"] = content
    out["write"] = res(await s.call_tool("write_file", {"workspace": ws,
        "path": "notes/a b.txt", "content": content}))
    out["read"] = res(await s.call_tool("read_file", {"workspace": ws, "path": "notes/a b.txt"}))
    out["ls"] = res(await s.call_tool("list_files", {"workspace": ws, "path": "notes"}))
    out["read_missing"] = res(await s.call_tool("read_file", {"workspace": ws, "path": "nope.txt"}))
    out["git"] = res(await s.call_tool("git_status", {"workspace": ws}))
    out["serve"] = res(await s.call_tool("run_command", {"workspace": ws,
        "command": "mkdir -p /tmp/www && echo 'served from the workspace' > /tmp/www/index.html && httpd -p 8080 -h /tmp/www"}))
    for _ in range(100):
        r = await s.call_tool("preview_url", {"workspace": ws, "port": 8080})
        if not r.isError:
            break
        await asyncio.sleep(0.1)
    out["preview"] = res(r)
    out["preview_closed"] = res(await s.call_tool("preview_url", {"workspace": ws, "port": 9999}))
    try:
        await s.call_tool("no_such_tool", {})
        out["unknown_tool"] = None
    except McpError as e:
        out["unknown_tool"] = {"code": e.error.code, "message": e.error.message}
    try:
        await s.call_tool("run_command", {"workspace": 5, "command": "true"})
        out["bad_args"] = None
    except McpError as e:
        out["bad_args"] = {"code": e.error.code, "message": e.error.message}
    out["delete"] = res(await s.call_tool("delete_workspace", {"workspace": ws}))
    out["list_after"] = res(await s.call_tool("list_workspaces", {}))

async def main():
    out = {}
    if mode == "http":
        headers = {"Authorization": "Bearer " + token, "User-Agent": "mcp-test"}
        async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=300)) as http:
            async with streamable_http_client(target, http_client=http) as (r, w, get_sid):
                async with ClientSession(r, w) as s:
                    await scenario(s, out, get_sid)
    else:
        env = {"WARREN_URL": os.environ["WARREN_URL"], "WARREN_TOKEN": token,
               "WARREN_CONFIG_DIR": os.environ["WARREN_CONFIG_DIR"],
               "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        params = StdioServerParameters(command=target, args=["mcp"], env=env)
        async with stdio_client(params) as (r, w):
            async with ClientSession(r, w) as s:
                await scenario(s, out)
    print(json.dumps(out))

asyncio.run(main())
"#;

/// A server with a busybox image and a template `tiny` of it.
async fn server() -> TestServer {
    let s = TestServer::start().await;
    s.import_busybox();
    s.push_template("tiny", json!({"image": "busybox", "overrideCommand": true}))
        .await;
    s
}

/// Runs the client script; its JSON.
async fn run_client(py: &PathBuf, args: &[&str], env: &[(&str, &str)]) -> Value {
    run_script(py, CLIENT, args, env).await
}

/// Runs a client script `code`; its JSON.
async fn run_script(py: &PathBuf, code: &str, args: &[&str], env: &[(&str, &str)]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("client.py");
    std::fs::write(&script, code).unwrap();
    let mut cmd = Command::new(py);
    cmd.arg(&script).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = tokio::task::spawn_blocking(move || {
        let o = cmd.output().unwrap();
        drop(dir);
        o
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "the MCP client failed: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// What both transports must have seen.
fn check_scenario(out: &Value, ws: &str) {
    assert_eq!(out["server"], "warren", "{out}");
    let tools: Vec<&str> = out["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for t in [
        "create_workspace",
        "delete_workspace",
        "git_clone",
        "git_commit",
        "git_diff",
        "git_push",
        "git_status",
        "list_files",
        "list_workspaces",
        "preview_url",
        "read_file",
        "run_command",
        "write_file",
    ] {
        assert!(tools.contains(&t), "{t} missing from {tools:?}");
    }
    assert_eq!(out["create"]["error"], false, "{}", out["create"]);
    assert_eq!(
        out["create"]["structured"]["workspace"]["state"], "running",
        "{}",
        out["create"]
    );
    assert!(
        out["list"]["structured"]["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == ws),
        "{}",
        out["list"]
    );
    let run = &out["run"];
    assert_eq!(run["error"], false, "{run}");
    assert_eq!(run["structured"]["exit_code"], 3, "{run}");
    assert_eq!(run["structured"]["stdout"], "hello\n", "{run}");
    assert_eq!(run["structured"]["stderr"], "oops\n", "{run}");
    assert!(
        run["text"].as_str().unwrap().contains("exit code 3"),
        "{run}"
    );
    assert_eq!(out["run_argv"]["structured"]["stdout"], "from stdin");
    assert_eq!(out["write"]["error"], false, "{}", out["write"]);
    assert_eq!(out["read"]["error"], false, "{}", out["read"]);
    assert_eq!(out["read"]["text"], out["content"], "{}", out["read"]);
    assert!(
        out["ls"]["text"].as_str().unwrap().contains("a b.txt"),
        "{}",
        out["ls"]
    );
    let missing = &out["read_missing"];
    assert_eq!(missing["error"], true, "{missing}");
    assert!(
        missing["text"].as_str().unwrap().contains("nope.txt"),
        "{missing}"
    );
    let git = &out["git"];
    assert_eq!(git["error"], true, "{git}");
    assert!(
        git["text"]
            .as_str()
            .unwrap()
            .contains("git is not installed"),
        "{git}"
    );
    let preview = &out["preview"];
    assert_eq!(preview["error"], false, "{preview}");
    let url = preview["structured"]["url"].as_str().unwrap();
    assert!(url.ends_with(&format!("/p/{ws}.admin/8080/")), "{url}");
    let closed = &out["preview_closed"];
    assert_eq!(closed["error"], true, "{closed}");
    assert!(
        closed["text"].as_str().unwrap().contains("9999"),
        "{closed}"
    );
    assert_eq!(
        out["unknown_tool"]["code"], -32602,
        "{}",
        out["unknown_tool"]
    );
    assert_eq!(out["bad_args"]["code"], -32602, "{}", out["bad_args"]);
    assert!(
        out["bad_args"]["message"]
            .as_str()
            .unwrap()
            .contains("workspace"),
        "{}",
        out["bad_args"]
    );
    assert_eq!(out["delete"]["error"], false, "{}", out["delete"]);
    assert!(
        !out["list_after"]["structured"]["workspaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == ws),
        "{}",
        out["list_after"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_over_streamable_http() {
    let Some(py) = python_or_skip() else { return };
    let s = server().await;
    let url = format!("{}/api/v1/mcp", s.url);
    let out = run_client(
        &py,
        &["http", &url, "mcp-http"],
        &[("MCP_TOKEN", s.admin.as_str())],
    )
    .await;
    check_scenario(&out, "mcp-http");
    // The client asked for its latest version; the server answered with its own.
    assert_eq!(out["protocol"], "2025-06-18");
    assert!(out["session"].as_str().is_some_and(|s| s.len() >= 32));
    // The client ended its session (DELETE) when it closed.
    assert!(s.state.mcp.is_empty(), "the session outlived its client");

    // What the tools did is in the audit log as the API's own requests, marked as MCP's.
    let (st, page) = s
        .get(&s.admin, "/api/v1/audit?action=workspace.*&limit=1000")
        .await;
    assert_eq!(st, StatusCode::OK, "{page}");
    let recs = page["records"].as_array().unwrap();
    for action in ["workspace.create", "workspace.delete"] {
        assert!(
            recs.iter().any(|r| r["action"] == action
                && r["user_agent"]
                    .as_str()
                    .is_some_and(|u| u.contains("mcp-test") && u.contains("via mcp"))
                && r["source_ip"] == "127.0.0.1"),
            "no {action} record from MCP: {page}"
        );
    }
    // run_command went through the toolbox's process/run: its request is recorded as the
    // session audit's process end (exit code included), from MCP.
    let (_, page) = s
        .get(
            &s.admin,
            "/api/v1/audit?action=session.process_end&limit=100",
        )
        .await;
    assert!(
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["user_agent"]
                .as_str()
                .is_some_and(|u| u.contains("via mcp"))
                && r["details_json"]
                    .as_str()
                    .is_some_and(|d| d.contains("exit 3") && d.contains("\"exit_code\":3"))),
        "no process_end record of run_command: {page}"
    );
    // write_file went through the toolbox, which records the write in the session audit.
    let (_, page) = s
        .get(&s.admin, "/api/v1/audit?action=session.file_write")
        .await;
    assert!(
        page["records"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["details_json"]
                .as_str()
                .is_some_and(|d| d.contains("a b.txt"))),
        "{page}"
    );
    let (_, page) = s.get(&s.admin, "/api/v1/audit?action=mcp.*").await;
    let actions: Vec<&str> = page["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["action"].as_str())
        .collect();
    assert!(
        actions.contains(&"mcp.session.create") && actions.contains(&"mcp.session.delete"),
        "{page}"
    );
    s.stop().await;
}

/// The git tools' client (argv: URL WS REPO_URL): clone, edit, status, diff, add, branch,
/// commit, push, status again.
const GIT_CLIENT: &str = r#"
import json, os, sys
import asyncio
import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

target, ws, repo = sys.argv[1], sys.argv[2], sys.argv[3]
token = os.environ["MCP_TOKEN"]

def res(r):
    return {"error": r.isError, "text": "".join(c.text for c in r.content if c.type == "text"),
            "structured": r.structuredContent}

async def scenario(s, out):
    await s.initialize()
    call = lambda name, args: s.call_tool(name, dict(args, workspace=ws))
    out["create"] = res(await s.call_tool("create_workspace", {"name": ws, "template": "git"}))
    out["clone"] = res(await call("git_clone", {"url": repo, "path": "proj"}))
    out["write"] = res(await call("write_file", {"path": "proj/README.md",
        "content": "hello\nedited through MCP\n"}))
    out["write_new"] = res(await call("write_file", {"path": "proj/docs/new.txt",
        "content": "a new file\n"}))
    out["status"] = res(await call("git_status", {"path": "proj"}))
    out["diff"] = res(await call("git_diff", {"path": "proj"}))
    out["add"] = res(await call("git_add", {"path": "proj", "files": ["docs/new.txt"]}))
    out["staged"] = res(await call("git_diff", {"path": "proj", "staged": True}))
    out["checkout"] = res(await call("git_checkout", {"path": "proj", "branch": "feature",
        "create": True}))
    out["commit"] = res(await call("git_commit", {"path": "proj",
        "message": "Edit the README through MCP"}))
    out["push"] = res(await call("git_push", {"path": "proj", "set_upstream": True}))
    out["status_after"] = res(await call("git_status", {"path": "proj"}))
    out["branch"] = res(await call("git_branch", {"path": "proj", "name": "later"}))
    out["push_bad"] = res(await call("git_push", {"path": "proj", "remote": "nowhere"}))
    out["delete"] = res(await s.call_tool("delete_workspace", {"workspace": ws}))

async def main():
    out = {}
    headers = {"Authorization": "Bearer " + token, "User-Agent": "mcp-git-test"}
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(30, read=300)) as http:
        async with streamable_http_client(target, http_client=http) as (r, w, _):
            async with ClientSession(r, w) as s:
                await scenario(s, out)
    print(json.dumps(out))

asyncio.run(main())
"#;

/// The git tools go through the toolbox's git routes: a clone, edits through `write_file`, the
/// status and diff of them, a commit on a new branch and its push land on the git server, and
/// the push is in the session audit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_tools_clone_commit_and_push_through_the_toolbox() {
    let Some(py) = python_or_skip() else { return };
    let s = TestServer::start().await;
    gitimg::import_gitbox(&s);
    s.push_template(
        "git",
        json!({"image": gitimg::GITBOX, "overrideCommand": true, "remoteUser": "dev"}),
    )
    .await;
    let alice = s.user_token("alice", "member", None).await;
    let repo = gitserve::server().create_repo(
        "mcp-proj",
        gitserve::Access::open(),
        &[("README.md", "hello\n"), ("src/main.txt", "one\n")],
    );
    let url = format!("{}/api/v1/mcp", s.url);
    let out = run_script(
        &py,
        GIT_CLIENT,
        &[&url, "mcp-git", &repo.url()],
        &[("MCP_TOKEN", alice.as_str())],
    )
    .await;
    for step in [
        "create",
        "clone",
        "write",
        "write_new",
        "status",
        "diff",
        "add",
        "staged",
        "checkout",
        "commit",
        "push",
        "status_after",
        "branch",
        "delete",
    ] {
        assert_eq!(out[step]["error"], false, "{step}: {}", out[step]);
    }
    let clone = &out["clone"]["structured"];
    assert_eq!(clone["branch"], "main", "{clone}");
    assert_eq!(clone["commit"].as_str(), repo.commit("main").as_deref());

    // The status names both edits: the README modified, the new file untracked.
    let status = &out["status"]["structured"];
    assert_eq!(status["branch"], "main", "{status}");
    assert_eq!(status["clean"], false, "{status}");
    let files = status["files"].as_array().unwrap();
    let readme = files.iter().find(|f| f["path"] == "README.md");
    assert_eq!(
        readme.map(|f| (&f["index"], &f["worktree"])),
        Some((&json!("unmodified"), &json!("modified"))),
        "{status}"
    );
    assert!(
        files
            .iter()
            .any(|f| f["worktree"] == "untracked"
                && f["path"].as_str().unwrap().starts_with("docs/")),
        "{status}"
    );
    let text = out["status"]["text"].as_str().unwrap();
    assert!(
        text.contains("README.md") && text.contains("modified"),
        "{text}"
    );
    let diff = out["diff"]["text"].as_str().unwrap();
    assert!(diff.contains("+edited through MCP"), "{diff}");
    assert!(
        !diff.contains("new.txt"),
        "untracked files are not in the diff: {diff}"
    );
    // git_add staged the new file only.
    let staged = out["staged"]["text"].as_str().unwrap();
    assert!(
        staged.contains("docs/new.txt") && !staged.contains("README"),
        "{staged}"
    );
    assert_eq!(out["checkout"]["structured"]["branch"], "feature");

    // The commit (every change, by default) was pushed to the new branch on the server.
    let commit = out["commit"]["structured"]["commit"].as_str().unwrap();
    assert_eq!(out["commit"]["structured"]["branch"], "feature");
    assert_eq!(
        out["commit"]["structured"]["author"],
        "alice <alice@users.warren.invalid>"
    );
    let push = &out["push"]["structured"];
    assert_eq!(push["branch"], "feature", "{push}");
    assert_eq!(push["commit"], commit, "{push}");
    assert_eq!(push["url"], repo.url(), "{push}");
    assert_eq!(repo.commit("feature").as_deref(), Some(commit));
    assert_eq!(
        repo.message("feature").as_deref(),
        Some("Edit the README through MCP")
    );
    assert_eq!(
        repo.file("feature", "README.md").as_deref(),
        Some("hello\nedited through MCP\n")
    );
    assert_eq!(
        repo.file("feature", "docs/new.txt").as_deref(),
        Some("a new file\n")
    );
    assert_eq!(repo.file("main", "README.md").as_deref(), Some("hello\n"));
    let after = &out["status_after"]["structured"];
    assert_eq!(after["clean"], true, "{after}");
    assert_eq!(after["upstream"], "origin/feature", "{after}");
    assert_eq!(after["ahead"], 0, "{after}");
    assert_eq!(out["branch"]["structured"]["commit"], commit);
    // A failed push (no such remote) is a tool error with the API's message, not a protocol
    // error, and nothing more lands.
    let bad = &out["push_bad"];
    assert_eq!(bad["error"], true, "{bad}");
    assert!(
        bad["text"].as_str().unwrap().contains("git push failed"),
        "{bad}"
    );
    assert_eq!(
        bad["structured"]["error"]["code"], "invalid_request",
        "{bad}"
    );

    // The push is in the session audit (the toolbox's record), and the git routes' own records
    // are marked as coming through MCP.
    let (st, page) = s
        .get(&s.admin, "/api/v1/audit?action=session.git_push&limit=100")
        .await;
    assert_eq!(st, StatusCode::OK, "{page}");
    let pushes = page["records"].as_array().unwrap();
    assert!(
        pushes.iter().any(|r| r["details_json"]
            .as_str()
            .is_some_and(|d| d.contains(commit) && d.contains("feature"))),
        "{page}"
    );
    let (_, page) = s
        .get(&s.admin, "/api/v1/audit?action=workspace.git.*&limit=100")
        .await;
    let recs = page["records"].as_array().unwrap();
    for action in [
        "workspace.git.clone",
        "workspace.git.commit",
        "workspace.git.push",
    ] {
        assert!(
            recs.iter().any(|r| r["action"] == action
                && r["user_agent"]
                    .as_str()
                    .is_some_and(|u| u.contains("via mcp"))),
            "no {action} record from MCP: {page}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_over_warren_mcp_stdio() {
    let Some(py) = python_or_skip() else { return };
    let s = server().await;
    let config = tempfile::tempdir().unwrap();
    let exe = common::warren_exe();
    let out = run_client(
        &py,
        &["stdio", exe.to_str().unwrap(), "mcp-stdio"],
        &[
            ("MCP_TOKEN", s.admin.as_str()),
            ("WARREN_URL", s.url.as_str()),
            ("WARREN_CONFIG_DIR", config.path().to_str().unwrap()),
        ],
    )
    .await;
    check_scenario(&out, "mcp-stdio");
    assert_eq!(out["protocol"], "2025-06-18");
    s.stop().await;
}

/// `warren mcp` by hand: only JSON-RPC on stdout, a line that is not JSON answered with a parse
/// error, a session the server lost (it restarted) opened again transparently, and the process
/// ends when stdin closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warren_mcp_speaks_only_json_rpc_and_survives_a_server_restart() {
    use std::io::{BufRead, Write};
    let s = TestServer::start().await;
    let addr = s.url.trim_start_matches("http://").to_string();
    let config = tempfile::tempdir().unwrap();
    let mut child = Command::new(common::warren_exe())
        .arg("mcp")
        .env("WARREN_URL", &s.url)
        .env("WARREN_TOKEN", &s.admin)
        .env("WARREN_CONFIG_DIR", config.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut send_recv = move |line: &str| -> Value {
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut answer = String::new();
        stdout.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}"))
    };
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"by-hand","version":"0"}}}"#;
    let v = tokio::task::block_in_place(|| send_recv(init));
    assert_eq!(v["result"]["protocolVersion"], "2025-03-26", "{v}");
    let v = tokio::task::block_in_place(|| send_recv("{not json"));
    assert_eq!(v["error"]["code"], -32700, "{v}");
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let v = tokio::task::block_in_place(|| send_recv(list));
    assert!(v["result"]["tools"].as_array().unwrap().len() >= 13, "{v}");
    // The server restarts (same address): it knows no session any more.
    let s = s
        .restart_with(warren_server::config::ConfigLayer {
            listen: Some(addr),
            ..Default::default()
        })
        .await;
    assert!(s.state.mcp.is_empty());
    let v = tokio::task::block_in_place(|| send_recv(list));
    assert!(v["result"]["tools"].as_array().unwrap().len() >= 13, "{v}");
    assert_eq!(s.state.mcp.len(), 1, "the bridge opened a new session");
    let v =
        tokio::task::block_in_place(|| send_recv(r#"{"jsonrpc":"2.0","id":3,"method":"ping"}"#));
    assert_eq!(v["result"], json!({}), "{v}");
    // stdin closes: the bridge ends its session and exits, having printed nothing else.
    drop(send_recv);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout.is_empty(),
        "nothing after the answers: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("opened a new one"), "{stderr}");
    assert!(s.state.mcp.is_empty(), "the bridge ended its session");
    s.stop().await;
}

/// Raw HTTP: one POST with headers; (status, headers, JSON body or Null).
async fn post(
    s: &TestServer,
    token: Option<&str>,
    session: Option<&str>,
    extra: &[(&str, &str)],
    body: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Value) {
    let mut rb = s
        .http
        .post(format!("{}/api/v1/mcp", s.url))
        .header("content-type", "application/json")
        .body(body.to_string());
    if !extra.iter().any(|(k, _)| k.eq_ignore_ascii_case("accept")) {
        rb = rb.header("accept", "application/json, text/event-stream");
    }
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    if let Some(sid) = session {
        rb = rb.header("mcp-session-id", sid);
    }
    for (k, v) in extra {
        rb = rb.header(*k, *v);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let v = if headers
        .get("content-type")
        .is_some_and(|c| c.to_str().unwrap().starts_with("text/event-stream"))
    {
        // The last `data:` line of the stream is the answer.
        text.lines()
            .rev()
            .find_map(|l| l.strip_prefix("data: "))
            .map(|d| serde_json::from_str(d).unwrap())
            .unwrap_or(Value::Null)
    } else {
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    (status, headers, v)
}

/// Opens a session with `version`; its id.
async fn open(s: &TestServer, token: &str, version: &str) -> String {
    let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}});
    let (st, h, v) = post(s, Some(token), None, &[], &init.to_string()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["protocolVersion"], version, "{v}");
    let sid = h["mcp-session-id"].to_str().unwrap().to_string();
    let (st, _, _) = post(
        s,
        Some(token),
        Some(&sid),
        &[],
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    sid
}

fn call(id: i64, tool: &str, args: Value) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
        "params": {"name": tool, "arguments": args}})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_scopes_and_sessions_are_the_apis() {
    let s = server().await;
    s.create_workspace(&s.admin, "adminws", "tiny").await;
    let alice = s.user_token("alice", "member", None).await;
    s.create_workspace(&alice, "alicews", "tiny").await;
    let reader = s
        .token_for("alice", Some(&["workspace:read", "workspace:write"]))
        .await;

    // No token, or a bad one: the API's 401.
    let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18"}}"#;
    let (st, _, v) = post(&s, None, None, &[], init).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{v}");
    assert_eq!(v["code"], "unauthenticated", "{v}");
    let (st, _, _) = post(&s, Some("wrn_nope"), None, &[], init).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // Another user's workspace does not exist for alice, through every tool.
    let sid = open(&s, &alice, "2025-06-18").await;
    for (tool, args) in [
        (
            "run_command",
            json!({"workspace": "adminws", "command": "id"}),
        ),
        (
            "read_file",
            json!({"workspace": "adminws", "path": "/etc/passwd"}),
        ),
        ("delete_workspace", json!({"workspace": "adminws"})),
        ("preview_url", json!({"workspace": "adminws", "port": 80})),
        (
            "run_command",
            json!({"workspace": "adminws.admin", "command": "id"}),
        ),
    ] {
        let (st, _, v) = post(&s, Some(&alice), Some(&sid), &[], &call(1, tool, args)).await;
        assert_eq!(st, StatusCode::OK, "{v}");
        assert_eq!(v["result"]["isError"], true, "{tool}: {v}");
        assert_eq!(
            v["result"]["structuredContent"]["error"]["code"], "not_found",
            "{tool}: {v}"
        );
    }
    // The admin's workspace is still there.
    let (st, _) = s.get(&s.admin, "/api/v1/workspaces/adminws").await;
    assert_eq!(st, StatusCode::OK);
    // Her own works.
    let (_, _, v) = post(
        &s,
        Some(&alice),
        Some(&sid),
        &[],
        &call(
            2,
            "run_command",
            json!({"workspace": "alicews", "command": "echo mine"}),
        ),
    )
    .await;
    assert_eq!(v["result"]["structuredContent"]["stdout"], "mine\n", "{v}");

    // Files bigger than a command's output bound read whole (up to read_file's own limit).
    let (_, _, v) = post(
        &s,
        Some(&alice),
        Some(&sid),
        &[],
        &call(
            40,
            "run_command",
            json!({"workspace": "alicews", "command": "head -c 2097152 /dev/zero | tr '\\0' a > big.txt"}),
        ),
    )
    .await;
    assert_eq!(v["result"]["structuredContent"]["exit_code"], 0, "{v}");
    let (_, _, v) = post(
        &s,
        Some(&alice),
        Some(&sid),
        &[],
        &call(
            41,
            "read_file",
            json!({"workspace": "alicews", "path": "big.txt"}),
        ),
    )
    .await;
    assert_eq!(
        v["result"]["structuredContent"]["size"], 2097152,
        "{}",
        v["result"]["structuredContent"]
    );
    assert_eq!(v["result"]["structuredContent"]["truncated"], false);
    assert_eq!(
        v["result"]["content"][0]["text"].as_str().unwrap().len(),
        2097152
    );
    // A command's output is bounded, with a marker.
    let (_, _, v) = post(
        &s,
        Some(&alice),
        Some(&sid),
        &[],
        &call(
            42,
            "run_command",
            json!({"workspace": "alicews", "command": "cat big.txt"}),
        ),
    )
    .await;
    let out = v["result"]["structuredContent"]["stdout"].as_str().unwrap();
    assert!(
        out.ends_with("[warren: output truncated: 1048576 bytes dropped]\n"),
        "{}",
        &out[out.len() - 80..]
    );
    assert_eq!(v["result"]["structuredContent"]["stdout_truncated"], true);

    // A token without the exec scope: the API's refusal, as a tool error with its hint.
    let rsid = open(&s, &reader, "2025-06-18").await;
    let (_, _, v) = post(
        &s,
        Some(&reader),
        Some(&rsid),
        &[],
        &call(
            3,
            "run_command",
            json!({"workspace": "alicews", "command": "true"}),
        ),
    )
    .await;
    assert_eq!(v["result"]["isError"], true, "{v}");
    let text = v["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("workspace:exec") && text.contains("hint:"),
        "{v}"
    );
    // Reading is allowed to it.
    let (_, _, v) = post(
        &s,
        Some(&reader),
        Some(&rsid),
        &[],
        &call(4, "list_workspaces", json!({})),
    )
    .await;
    assert_eq!(v["result"]["isError"], false, "{v}");

    // A session belongs to its token: another token (even the same user's) cannot use it.
    let (st, _, v) = post(
        &s,
        Some(&reader),
        Some(&sid),
        &[],
        &call(5, "list_workspaces", json!({})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    let (st, _, _) = post(
        &s,
        Some(&s.admin),
        Some(&sid),
        &[],
        &call(5, "list_workspaces", json!({})),
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let r = s
        .http
        .delete(format!("{}/api/v1/mcp", s.url))
        .bearer_auth(&s.admin)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NOT_FOUND,
        "another token cannot end it"
    );

    // A revoked token's session is dead with it.
    let (_, tokens) = s.get(&s.admin, "/api/v1/tokens?user=alice").await;
    let reader_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["scopes"].as_array().is_some_and(|a| a.len() == 2))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, _) = s
        .call(
            Some(&s.admin),
            reqwest::Method::DELETE,
            &format!("/api/v1/tokens/{reader_id}"),
            None,
        )
        .await;
    assert!(st.is_success(), "{st}");
    let (st, _, _) = post(
        &s,
        Some(&reader),
        Some(&rsid),
        &[],
        &call(6, "list_workspaces", json!({})),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);

    // notifications/cancelled drops a tool call in flight, and the command it ran is hung up.
    let slow = {
        let url = format!("{}/api/v1/mcp", s.url);
        let http = s.http.clone();
        let (alice, sid) = (alice.clone(), sid.clone());
        tokio::spawn(async move {
            let r = http
                .post(url)
                .bearer_auth(alice)
                .header("mcp-session-id", sid)
                .header("accept", "application/json, text/event-stream")
                .header("content-type", "application/json")
                .body(call(
                    50,
                    "run_command",
                    // `exec`: the API's exec hangs up its process, not the process group
                    // (a shell's children outlive it; toolbox processes will fix that).
                    json!({"workspace": "alicews", "command": "exec sleep 300"}),
                ))
                .send()
                .await
                .unwrap();
            r.text().await.unwrap()
        })
    };
    let running = |v: &Value| {
        v["result"]["structuredContent"]["stdout"]
            .as_str()
            .unwrap_or("")
            .contains("sleep 300")
    };
    let ps = call(
        51,
        "run_command",
        json!({"workspace": "alicews", "command": "ps"}),
    );
    let mut seen = false;
    for _ in 0..100 {
        let (_, _, v) = post(&s, Some(&alice), Some(&sid), &[], &ps).await;
        if running(&v) {
            seen = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(seen, "the slow command never ran");
    let (st, _, _) = post(
        &s,
        Some(&alice),
        Some(&sid),
        &[],
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":50}}"#,
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let answer = tokio::time::timeout(std::time::Duration::from_secs(60), slow)
        .await
        .expect("the cancelled call answers")
        .unwrap();
    assert!(answer.contains("cancelled"), "{answer}");
    let mut gone = false;
    for _ in 0..200 {
        let (_, _, v) = post(&s, Some(&alice), Some(&sid), &[], &ps).await;
        if !running(&v) {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "the cancelled command still runs");

    // DELETE ends a session; it is then unknown.
    let r = s
        .http
        .delete(format!("{}/api/v1/mcp", s.url))
        .bearer_auth(&alice)
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let (st, _, v) = post(
        &s,
        Some(&alice),
        Some(&sid),
        &[],
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{v}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_rpc_gets_json_rpc_errors() {
    let s = TestServer::start().await;
    let a = s.admin.clone();
    let sid = open(&s, &a, "2025-06-18").await;
    let ping = r#"{"jsonrpc":"2.0","id":7,"method":"ping"}"#;

    // Not JSON: 400 with a parse error.
    let (st, _, v) = post(&s, Some(&a), Some(&sid), &[], "{not json").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(v["error"]["code"], -32700, "{v}");
    assert_eq!(v["id"], Value::Null);
    // Not JSON-RPC.
    for bad in [
        r#"{"id":1,"method":"ping"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":7}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
        r#""ping""#,
    ] {
        let (st, _, v) = post(&s, Some(&a), Some(&sid), &[], bad).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {v}");
        assert_eq!(v["error"]["code"], -32600, "{bad}: {v}");
    }
    // Unknown method: -32601 with the request's id.
    let (st, _, v) = post(
        &s,
        Some(&a),
        Some(&sid),
        &[],
        r#"{"jsonrpc":"2.0","id":"x","method":"resources/frob"}"#,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["error"]["code"], -32601, "{v}");
    assert_eq!(v["id"], "x");
    // Bad params: no tool name, an unknown tool, arguments that are not an object, an unknown
    // argument, a wrong type, neither command nor argv, a port out of range.
    for (params, needle) in [
        (json!({}), "name"),
        (json!({"name": "frob"}), "frob"),
        (
            json!({"name": "list_workspaces", "arguments": [1]}),
            "arguments",
        ),
        (
            json!({"name": "list_workspaces", "arguments": {"x": 1}}),
            "x",
        ),
        (
            json!({"name": "read_file", "arguments": {"workspace": "w", "path": 5}}),
            "path",
        ),
        (
            json!({"name": "run_command", "arguments": {"workspace": "w"}}),
            "command",
        ),
        (
            json!({"name": "preview_url", "arguments": {"workspace": "w", "port": 0}}),
            "port",
        ),
        (
            json!({"name": "read_file", "arguments": {"workspace": "w", "path": ""}}),
            "path",
        ),
    ] {
        let body = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": params});
        // Both answer forms: JSON (no SSE accepted) and SSE.
        for accept in ["application/json", "application/json, text/event-stream"] {
            let (st, _, v) = post(
                &s,
                Some(&a),
                Some(&sid),
                &[("accept", accept)],
                &body.to_string(),
            )
            .await;
            assert_eq!(st, StatusCode::OK, "{body}: {v}");
            assert_eq!(v["error"]["code"], -32602, "{body}: {v}");
            assert_eq!(v["id"], 9, "{body}: {v}");
            assert!(
                v["error"]["message"].as_str().unwrap().contains(needle),
                "{body}: {v}"
            );
        }
    }
    // initialize without a protocol version.
    let (st, h, v) = post(
        &s,
        Some(&a),
        None,
        &[],
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], -32602, "{v}");
    assert!(h.get("mcp-session-id").is_none());
    // An unknown version asked for: the server's latest.
    let (_, _, v) = post(&s, Some(&a), None, &[], r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05"}}"#).await;
    assert_eq!(v["result"]["protocolVersion"], "2025-06-18", "{v}");
    assert!(v["result"]["capabilities"]["tools"].is_object(), "{v}");

    // No session, an unknown one, an unsupported version header.
    let (st, _, v) = post(&s, Some(&a), None, &[], ping).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("Mcp-Session-Id"));
    let (st, _, _) = post(&s, Some(&a), Some("no-such-session"), &[], ping).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let (st, _, v) = post(
        &s,
        Some(&a),
        Some(&sid),
        &[("mcp-protocol-version", "1999-01-01")],
        ping,
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    let (st, _, v) = post(
        &s,
        Some(&a),
        Some(&sid),
        &[("mcp-protocol-version", "2025-06-18")],
        ping,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["result"], json!({}), "{v}");
    // An Accept that takes neither form.
    let (st, _, _) = post(&s, Some(&a), Some(&sid), &[("accept", "text/html")], ping).await;
    assert_eq!(st, StatusCode::NOT_ACCEPTABLE);
    // GET has no stream to offer.
    let r = s
        .http
        .get(format!("{}/api/v1/mcp", s.url))
        .bearer_auth(&a)
        .header("accept", "text/event-stream")
        .header("mcp-session-id", &sid)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    // DELETE without a session.
    let r = s
        .http
        .delete(format!("{}/api/v1/mcp", s.url))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // Batches: not in 2025-06-18; in 2025-03-26 every request answered, notifications not.
    let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"ping"},{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":2,"method":"tools/list"},{"jsonrpc":"2.0","id":3,"method":"nope"},{"jsonrpc":"2.0","id":4,"method":"initialize","params":{"protocolVersion":"2025-03-26"}}]"#;
    let (st, _, v) = post(&s, Some(&a), Some(&sid), &[], batch).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], -32600, "{v}");
    let old = open(&s, &a, "2025-03-26").await;
    let (st, _, v) = post(&s, Some(&a), Some(&old), &[], batch).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let answers = v.as_array().unwrap();
    assert_eq!(answers.len(), 4, "{v}");
    assert_eq!(answers[0]["id"], 1);
    assert_eq!(answers[0]["result"], json!({}));
    assert!(answers[1]["result"]["tools"].as_array().unwrap().len() >= 13);
    assert_eq!(answers[2]["error"]["code"], -32601);
    assert_eq!(answers[3]["error"]["code"], -32600);
    let (st, _, _) = post(
        &s,
        Some(&a),
        Some(&old),
        &[],
        r#"[{"jsonrpc":"2.0","method":"notifications/initialized"}]"#,
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (st, _, v) = post(&s, Some(&a), Some(&old), &[], "[]").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{v}");
    // 2025-03-26 results carry no structuredContent.
    let (_, _, v) = post(
        &s,
        Some(&a),
        Some(&old),
        &[],
        &call(1, "list_workspaces", json!({})),
    )
    .await;
    assert!(v["result"].get("structuredContent").is_none(), "{v}");
    assert_eq!(v["result"]["content"][0]["text"], "no workspaces", "{v}");
    // A response from the client (the server asked nothing): accepted and ignored.
    let (st, _, _) = post(
        &s,
        Some(&a),
        Some(&sid),
        &[],
        r#"{"jsonrpc":"2.0","id":99,"result":{}}"#,
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    s.stop().await;
}
