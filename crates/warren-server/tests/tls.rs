//! HTTPS: with a certificate and key the server speaks TLS only, and clients that trust the
//! certificate get the API.

mod common;

use std::process::Command;

use warren_server::config::ConfigLayer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_the_given_certificate() {
    // A private CA and a server certificate it signs (webpki refuses a CA as the server's own).
    let certs = tempfile::tempdir().unwrap();
    let p = |n: &str| certs.path().join(n);
    let (ca, cert, key) = (p("ca.pem"), p("cert.pem"), p("key.pem"));
    let openssl = |args: &[&str]| {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(certs.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=warren test CA",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "key.pem",
        "-out",
        "req.pem",
    ]);
    std::fs::write(p("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "req.pem",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "cert.pem",
    ]);
    let s = common::TestServer::start_with(ConfigLayer {
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..Default::default()
    })
    .await;
    let https = s.url.replace("http://", "https://");
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .unwrap();
    let me = client
        .get(format!("{https}/api/v1/me"))
        .bearer_auth(&s.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = me.json().await.unwrap();
    assert_eq!(body["user"]["username"], "admin");
    // A client that does not trust the certificate fails, and plain HTTP gets no API.
    assert!(reqwest::get(format!("{https}/healthz")).await.is_err());
    let plain = reqwest::get(format!("{}/healthz", s.url)).await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let cfg = warren_server::config::ServerConfig::resolve(ConfigLayer {
        listen: Some("127.0.0.1:0".into()),
        state_dir: Some(dir.path().join("state")),
        tls_cert: Some(cert),
        tls_key: Some(dir.path().join("missing.pem")),
        ..Default::default()
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind(cfg.listen).await.unwrap();
    let state = warren_server::serve::open(cfg, common::warren_exe())
        .await
        .unwrap();
    let err = warren_server::serve::serve(state, listener, async {})
        .await
        .unwrap_err();
    assert!(err.contains("TLS"), "{err}");
}
