//! A TLS listener in a real browser (headless Chromium): a page loaded over `https://` through
//! the proxy, and a `wss://` WebSocket from that page to the Wt-like backend that echoes text and
//! binary messages (up to 64 KiB) byte for byte. Skipped, saying so, where no Chromium is
//! installed (`.ci/run` installs it), as the status-page browser tests in `admin.rs` are.
//!
//! Chromium trusts the test CA made at test time as a user makes it trust one: in the NSS
//! database of its `HOME` (a temporary one, with `certutil` from libnss3-tools, which `.ci/run`
//! installs), so no system CA store is touched. Without certutil it trusts the test leaf by its
//! key instead (`--ignore-certificate-errors-spki-list`, the base64 SHA-256 of the leaf's
//! SubjectPublicKeyInfo).

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use wtgate::config::{CertFiles, Listen, TlsSettings};

use crate::common::certs::{KeyKind, TestCa};
use crate::common::*;
use wtgate_demo::ws::base64;

/// The base64 SHA-256 of the SubjectPublicKeyInfo of the first certificate in `chain_pem`.
/// SHA-256 comes from the aws-lc-rs provider that rustls (a dependency of the proxy) is built
/// with, so the test needs no hashing crate of its own.
fn spki_sha256_base64(chain_pem: &str) -> String {
    let leaf = CertificateDer::pem_file_iter(chain_pem)
        .expect("read the chain")
        .next()
        .expect("a certificate in the chain")
        .expect("a PEM certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("parse the leaf");
    let spki = cert.public_key().raw;
    let sha256 = rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite")
        .common
        .hash_provider;
    assert_eq!(sha256.output_len(), 32, "not SHA-256");
    base64(sha256.hash(spki).as_ref())
}

fn hex(data: &[u8]) -> String {
    data.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes `home/.pki/nssdb`, the NSS database Chromium on Linux reads its user's trusted
/// certificates from, trusting the CA in `ca_pem` for TLS servers; false without `certutil`.
fn trust_in_nss(home: &std::path::Path, ca_pem: &str) -> bool {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).unwrap();
    let db = format!("sql:{}", db.display());
    let certutil = |args: &[&str]| {
        std::process::Command::new("certutil")
            .args(args)
            .output()
            .map(|o| {
                assert!(o.status.success(), "certutil {args:?}: {o:?}");
            })
            .is_ok()
    };
    certutil(&["-d", &db, "-N", "--empty-password"])
        && certutil(&[
            "-d",
            &db,
            "-A",
            "-t",
            "C,,",
            "-n",
            "wtgate test CA",
            "-i",
            ca_pem,
        ])
}

/// A JSON string literal holding `s`, to splice into JavaScript.
fn js_str(s: &str) -> String {
    Value::from(s).to_string()
}

#[test]
fn a_browser_loads_a_page_and_echoes_over_wss_through_a_tls_listener() {
    let Some(browser) = find_chromium() else {
        eprintln!("no Chromium installed: the TLS listener is not tried in a browser");
        return;
    };
    let ca = TestCa::new("tls-browser");
    let leaf = ca.leaf(
        "localhost",
        &["localhost", "127.0.0.1"],
        KeyKind::EcdsaP256,
        -1,
        30,
    );
    let spki = spki_sha256_base64(&leaf.cert);
    let backend = TestBackend::start(
        "wt1",
        Behavior::WsEcho {
            reject: false,
            close_after: None,
            greet: false,
        },
    );
    let proxy = start_proxy(&[backend.spec()], |c| {
        c.listen = vec![Listen {
            tls: true,
            ..Listen::from("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        }];
        c.tls = TlsSettings {
            certs: vec![CertFiles {
                chain: leaf.cert.clone(),
                key: leaf.key.clone(),
            }],
            ..TlsSettings::default()
        };
    });
    let port = proxy.addr.port();
    let origin = format!("https://localhost:{port}");
    let url = format!("{origin}/tls-page?from=chromium");

    // Chromium trusts the test CA as a user would make it trust one: in the NSS database of
    // its HOME (certutil, from libnss3-tools). Without certutil, by the leaf's key instead.
    let home = ca.dir.join("home");
    let mut page = if trust_in_nss(&home, &ca.cert()) {
        let home = home.display().to_string();
        Browser::open_with_env(browser, &url, &[], &[("HOME", &home)])
    } else {
        eprintln!("no certutil (libnss3-tools): Chromium trusts the test leaf by its key instead");
        let spki_flag = format!("--ignore-certificate-errors-spki-list={spki}");
        Browser::open_with(browser, &url, &[&spki_flag])
    };

    // The page, through the proxy, over https. It is about:blank until the navigation commits
    // (or fails: chrome-error:), and meanwhile DevTools may have no execution context to
    // evaluate in (a certificate Chromium refuses leaves it on an interstitial that has none).
    let body = eventually("the page to load over https", || {
        let v = page
            .try_eval(
                "location.protocol !== 'about:' && document.readyState === 'complete' \
                 && document.body ? [location.protocol, document.body.innerText] : null",
            )
            .ok()?;
        v.as_array().map(|a| {
            (
                a[0].as_str().unwrap_or_default().to_string(),
                a[1].as_str().unwrap_or_default().trim().to_string(),
            )
        })
    });
    assert_eq!(
        body,
        (
            "https:".to_string(),
            "wt1 GET /tls-page?from=chromium".to_string()
        ),
        "the page did not come from the backend through the proxy"
    );
    let seen = backend.requests();
    let page_req = seen
        .iter()
        .find(|r| r.target == "/tls-page?from=chromium")
        .unwrap_or_else(|| panic!("the backend did not see the page's request: {seen:?}"));
    assert_eq!(
        page_req.header("X-Forwarded-Proto"),
        Some("https"),
        "{page_req:?}"
    );
    assert_eq!(
        page_req.header("Host"),
        Some(format!("localhost:{port}").as_str()),
        "{page_req:?}"
    );

    // A wss:// WebSocket from the page, to the backend through the proxy.
    let ws_url = format!("wss://localhost:{port}/?request=ws&from=chromium");
    page.eval(&format!(
        "window.wsLog = {{ open: false, msgs: [], error: false, closed: null }};
         window.ws = new WebSocket({});
         ws.binaryType = 'arraybuffer';
         ws.onopen = () => {{ wsLog.open = true; }};
         ws.onerror = () => {{ wsLog.error = true; }};
         ws.onclose = (e) => {{ wsLog.closed = e.code; }};
         ws.onmessage = (e) => {{
           wsLog.msgs.push(typeof e.data === 'string'
             ? {{ text: e.data }}
             : {{ hex: Array.from(new Uint8Array(e.data),
                                  (b) => b.toString(16).padStart(2, '0')).join('') }});
         }};
         true",
        js_str(&ws_url)
    ));
    eventually("the wss:// WebSocket to open", || {
        let log = page.eval("wsLog");
        assert!(
            log["error"] != true && log["closed"].is_null(),
            "the WebSocket failed: {log}"
        );
        (log["open"] == true).then_some(())
    });
    let upgrade = backend
        .requests()
        .into_iter()
        .find(|r| r.target.contains("request=ws"))
        .expect("the backend did not see the upgrade");
    assert_eq!(
        upgrade.header("X-Forwarded-Proto"),
        Some("https"),
        "{upgrade:?}"
    );

    // Text and binary, small and ~64 KiB; the binary ones hold every byte value.
    let mut rng = Rng::new(61);
    let big_text: String = (0..64 * 1024 - 7)
        .map(|i| match i % 97 {
            0 => 'é',
            1 => '✓',
            2 => '🦀',
            _ => char::from(b' ' + (rng.range(0, 95) as u8)),
        })
        .collect();
    let small_bin: Vec<u8> = (0..=255u8).collect();
    let big_bin = rng.bytes(64 * 1024);
    enum Msg {
        Text(String),
        Bin(Vec<u8>),
    }
    let msgs = [
        Msg::Text("hello over wss".to_string()),
        Msg::Bin(small_bin),
        Msg::Text(big_text),
        Msg::Bin(big_bin),
        Msg::Text(String::new()),
    ];
    for m in &msgs {
        let send = match m {
            Msg::Text(t) => format!("ws.send({}); true", js_str(t)),
            Msg::Bin(b) => format!(
                "ws.send(Uint8Array.from(({}).match(/../g) || [], (h) => parseInt(h, 16))); true",
                js_str(&hex(b))
            ),
        };
        page.eval(&send);
    }
    let echoed = eventually("every message to come back", || {
        let log = page.eval("wsLog");
        assert!(
            log["error"] != true && log["closed"].is_null(),
            "the WebSocket failed before every echo came: error {}, closed {}, {} echoed",
            log["error"],
            log["closed"],
            log["msgs"].as_array().map_or(0, Vec::len)
        );
        let got = log["msgs"].as_array()?;
        (got.len() >= msgs.len()).then(|| got.clone())
    });
    assert_eq!(echoed.len(), msgs.len(), "more echoes than messages");
    for (i, (m, e)) in msgs.iter().zip(&echoed).enumerate() {
        match m {
            Msg::Text(t) => {
                let got = e["text"].as_str().unwrap_or_else(|| panic!("#{i}: {e}"));
                assert!(
                    got == t,
                    "text message #{i} ({} bytes) came back as {} bytes, differing",
                    t.len(),
                    got.len()
                );
            }
            Msg::Bin(b) => {
                let got = e["hex"].as_str().unwrap_or_else(|| panic!("#{i}: {e}"));
                assert!(
                    got == hex(b),
                    "binary message #{i} ({} bytes) came back as {} bytes, differing",
                    b.len(),
                    got.len() / 2
                );
            }
        }
    }
    let state = page.eval("[wsLog.error, wsLog.closed, ws.readyState]");
    assert_eq!(
        state,
        serde_json::json!([false, null, 1]),
        "the WebSocket did not stay open after the echoes (error, close code, readyState)"
    );
}
