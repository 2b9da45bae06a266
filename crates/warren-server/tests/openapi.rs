//! The OpenAPI document: the checked-in `docs/openapi.json` must match what the handlers
//! generate, and the document must describe errors and authentication for every route.
//!
//! After changing routes, regenerate the snapshot with
//! `WARREN_UPDATE_OPENAPI=1 cargo test -p warren-server --test openapi`.

use std::path::PathBuf;

use serde_json::Value;

const UPDATE_VAR: &str = "WARREN_UPDATE_OPENAPI";
const UPDATE_CMD: &str = "WARREN_UPDATE_OPENAPI=1 cargo test -p warren-server --test openapi";
const ERROR_BODY_REF: &str = "#/components/schemas/ErrorBody";
const METHODS: &[&str] = &[
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The routes anyone may call without a token: starting and polling a device login.
const UNAUTHENTICATED: &[(&str, &str)] = &[
    ("post", "/api/v1/auth/device"),
    ("post", "/api/v1/auth/device/token"),
];

/// Paths with no client error to document: starting a device login takes no input and no
/// token, so it can only succeed (or fail with a 500).
const NO_CLIENT_ERRORS: &[&str] = &["/api/v1/auth/device"];

fn snapshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

fn generated() -> Value {
    serde_json::from_str(&warren_server::app::openapi_json())
        .expect("the generated OpenAPI document is JSON")
}

/// Every (method, path, operation) of the document.
fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut out = Vec::new();
    for (path, item) in paths {
        for m in METHODS {
            if let Some(op) = item.get(*m) {
                out.push((m.to_string(), path.clone(), op.clone()));
            }
        }
    }
    out
}

/// Whether `op` documents a 4xx response whose JSON body is an `ErrorBody`.
fn has_client_error(op: &Value) -> bool {
    let Some(responses) = op["responses"].as_object() else {
        return false;
    };
    responses.iter().any(|(status, resp)| {
        status.len() == 3
            && status.starts_with('4')
            && resp["content"]["application/json"]["schema"]["$ref"] == ERROR_BODY_REF
    })
}

#[test]
fn checked_in_document_matches_the_handlers() {
    let doc = generated();
    let path = snapshot_path();
    if std::env::var_os(UPDATE_VAR).is_some_and(|v| v != "0" && !v.is_empty()) {
        // What the server serves at /api/v1/openapi.json, byte for byte.
        let mut text = warren_server::app::openapi_json();
        text.push('\n');
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        eprintln!("wrote {}", path.display());
        return;
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}\nGenerate it with: {UPDATE_CMD}",
            path.display()
        )
    });
    let checked_in: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{} is not valid JSON: {e}\nRegenerate it with: {UPDATE_CMD}",
            path.display()
        )
    });
    if checked_in != doc {
        let differs = describe_drift(&checked_in, &doc);
        panic!(
            "docs/openapi.json is out of date with the API's handlers ({differs}).\n\
             Regenerate it and review the diff: {UPDATE_CMD}"
        );
    }
}

/// A short account of where two documents differ, to point the reader at the change.
fn describe_drift(old: &Value, new: &Value) -> String {
    let keys = |v: &Value, section: &str| -> Vec<String> {
        let mut v: Vec<String> = match section {
            "paths" => v["paths"].as_object(),
            _ => v["components"]["schemas"].as_object(),
        }
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
        v.sort();
        v
    };
    let mut notes = Vec::new();
    for section in ["paths", "schemas"] {
        let (o, n) = (keys(old, section), keys(new, section));
        let added: Vec<&String> = n.iter().filter(|k| !o.contains(k)).collect();
        let removed: Vec<&String> = o.iter().filter(|k| !n.contains(k)).collect();
        if !added.is_empty() {
            notes.push(format!("new {section}: {added:?}"));
        }
        if !removed.is_empty() {
            notes.push(format!("removed {section}: {removed:?}"));
        }
        let changed: Vec<&String> = n
            .iter()
            .filter(|k| o.contains(k))
            .filter(|k| {
                let pick = |d: &Value| match section {
                    "paths" => d["paths"][k.as_str()].clone(),
                    _ => d["components"]["schemas"][k.as_str()].clone(),
                };
                pick(old) != pick(new)
            })
            .collect();
        if !changed.is_empty() {
            notes.push(format!("changed {section}: {changed:?}"));
        }
    }
    if notes.is_empty() {
        "the document's other members differ".to_string()
    } else {
        notes.join("; ")
    }
}

#[test]
fn document_is_openapi_3() {
    let doc = generated();
    let version = doc["openapi"]
        .as_str()
        .expect("an `openapi` version string");
    assert!(version.starts_with("3."), "openapi version {version}");
    assert!(doc["info"]["title"].is_string());
    assert!(
        doc["components"]["schemas"]["ErrorBody"].is_object(),
        "the ErrorBody schema is a component"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["token"]["scheme"], "bearer",
        "the bearer `token` security scheme"
    );
    assert!(!operations(&doc).is_empty());
}

#[test]
fn every_api_path_documents_its_errors() {
    let doc = generated();
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/api/v1/") || NO_CLIENT_ERRORS.contains(&path.as_str()) {
            continue;
        }
        let documented = METHODS
            .iter()
            .filter_map(|m| item.get(*m))
            .any(has_client_error);
        if !documented {
            missing.push(path.clone());
        }
    }
    assert!(
        missing.is_empty(),
        "these paths document no 4xx response with an ErrorBody (add e.g. \
         `(status = 400, body = ErrorBody)` to a handler's #[utoipa::path] responses): {missing:?}"
    );
}

#[test]
fn every_operation_but_device_login_needs_a_token() {
    let doc = generated();
    let mut unsecured = Vec::new();
    for (method, path, op) in operations(&doc) {
        let has_token = op["security"]
            .as_array()
            .is_some_and(|reqs| reqs.iter().any(|r| r.get("token").is_some()));
        let exempt = UNAUTHENTICATED
            .iter()
            .any(|(m, p)| *m == method && *p == path);
        if exempt {
            assert!(
                !has_token,
                "{method} {path} needs no token, so it must not document one"
            );
        } else if !has_token {
            unsecured.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    assert!(
        unsecured.is_empty(),
        "these operations lack the bearer `token` security requirement (add \
         `security((\"token\" = []))` to their #[utoipa::path]): {unsecured:?}"
    );
}
