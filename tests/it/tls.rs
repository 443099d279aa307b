//! TLS listeners (issue 16) with real clients: curl and `openssl s_client` against the engine,
//! certificates from a test CA made at test time (tests/common/certs.rs). SNI, ALPN, versions,
//! resumption, bad input on the TLS port, certificate reloads, the redirect listener.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::certs::{KeyKind, Leaf, TestCa};
use crate::common::*;
use wtgate::config::{CertFiles, Config, Listen};

fn files(leaf: &Leaf) -> CertFiles {
    CertFiles {
        chain: leaf.cert.clone(),
        key: leaf.key.clone(),
    }
}

/// One TLS listener serving `leaves`, in front of `backend`.
fn tls_proxy(backend: &TestBackend, leaves: &[&Leaf], tweak: impl FnOnce(&mut Config)) -> Proxy {
    start_proxy(&[backend.spec()], |c| {
        c.listen = vec![Listen {
            tls: true,
            ..Listen::from("127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap())
        }];
        c.tls.certs = leaves.iter().map(|l| files(l)).collect();
        tweak(c);
    })
}

/// `openssl s_client` connecting to `proxy` with `args`, sending `input`; its stdout and stderr.
fn s_client(proxy: &Proxy, ca: &TestCa, args: &[&str], input: &str) -> String {
    let connect = proxy.addr.to_string();
    let mut child = Command::new("timeout")
        .args([
            "10", "openssl", "s_client", "-ign_eof", "-connect", &connect, "-CAfile",
        ])
        .arg(ca.cert())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const GET_CLOSE: &str = "GET /app HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";

/// The one metric line that starts with `name{labels}`.
fn metric(proxy: &Proxy, name_and_labels: &str) -> u64 {
    let report = wtgate::admin::report::Report::gather(&proxy.engine().handle());
    let text = wtgate::admin::prometheus::render(&report);
    let line = text
        .lines()
        .find(|l| l.starts_with(name_and_labels))
        .unwrap_or_else(|| panic!("no {name_and_labels} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn curl_gets_a_page_over_https_and_the_backend_learns_the_scheme() {
    let ca = TestCa::new("curl");
    let leaf = ca.leaf("site", &["localhost"], KeyKind::EcdsaP256, -1, 30);
    let b = TestBackend::start("wt1", Behavior::Normal);
    let proxy = tls_proxy(&b, &[&leaf], |_| {});
    let url = format!("https://localhost:{}/app?x=1", proxy.addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", proxy.addr.port());
    let out = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["--cacert", &ca.cert(), "--resolve", &resolve, &url])
        .output()
        .expect("curl runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{out:?}");
    let seen = b.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
    assert_eq!(
        metric(
            &proxy,
            "wtgate_tls_handshakes_total{version=\"TLSv1.3\",resumed=\"false\"}"
        ),
        1
    );
}

#[test]
fn sni_picks_the_certificate_that_covers_the_name_and_the_first_for_others() {
    let ca = TestCa::new("sni");
    let a = ca.leaf("a", &["a.test"], KeyKind::EcdsaP256, -1, 30);
    let b = ca.leaf("b", &["b.test", "*.wild.test"], KeyKind::Rsa2048, -1, 30);
    let backend = TestBackend::start("wt1", Behavior::Normal);
    let proxy = tls_proxy(&backend, &[&a, &b], |_| {});
    for (name, cn) in [
        ("b.test", "b.test"),
        ("x.wild.test", "b.test"),
        ("a.test", "a.test"),
        ("unknown.test", "a.test"),
    ] {
        let out = s_client(&proxy, &ca, &["-servername", name], GET_CLOSE);
        assert!(out.contains(&format!("subject=CN = {cn}")), "{name}: {out}");
        assert!(out.contains("Verify return code: 0 (ok)"), "{name}: {out}");
    }
    let out = s_client(&proxy, &ca, &["-noservername"], GET_CLOSE);
    assert!(out.contains("subject=CN = a.test"), "{out}");
}

#[test]
fn strict_sni_refuses_a_name_no_certificate_covers() {
    let ca = TestCa::new("strict");
    let a = ca.leaf("a", &["a.test"], KeyKind::EcdsaP256, -1, 30);
    let backend = TestBackend::start("wt1", Behavior::Normal);
    let proxy = tls_proxy(&backend, &[&a], |c| c.tls.strict_sni = true);
    let ok = s_client(&proxy, &ca, &["-servername", "a.test"], GET_CLOSE);
    assert!(ok.contains("HTTP/1.1 200"), "{ok}");
    let refused = s_client(&proxy, &ca, &["-servername", "other.test"], GET_CLOSE);
    assert!(!refused.contains("HTTP/1.1 200"), "{refused}");
    assert!(refused.contains("alert"), "{refused}");
    assert_eq!(backend.request_count(), 1);
    assert_eq!(
        metric(
            &proxy,
            "wtgate_tls_handshake_failures_total{reason=\"no_certificate\"}"
        ),
        1
    );
}

#[test]
fn alpn_offers_http11_and_an_h2_only_client_gets_an_alert_not_a_hang() {
    let ca = TestCa::new("alpn");
    let leaf = ca.leaf("site", &["localhost"], KeyKind::EcdsaP256, -1, 30);
    let backend = TestBackend::start("wt1", Behavior::Normal);
    let proxy = tls_proxy(&backend, &[&leaf], |_| {});
    let both = s_client(&proxy, &ca, &["-alpn", "h2,http/1.1"], GET_CLOSE);
    assert!(both.contains("ALPN protocol: http/1.1"), "{both}");
    assert!(both.contains("HTTP/1.1 200"), "{both}");
    let h2 = s_client(&proxy, &ca, &["-alpn", "h2"], GET_CLOSE);
    assert!(h2.contains("no application protocol"), "{h2}");
    assert_eq!(backend.request_count(), 1);
    assert_eq!(
        metric(
            &proxy,
            "wtgate_tls_handshake_failures_total{reason=\"no_alpn\"}"
        ),
        1
    );
}

#[test]
fn tls_12_and_13_are_spoken_and_older_versions_refused() {
    let ca = TestCa::new("versions");
    let leaf = ca.leaf("site", &["localhost"], KeyKind::Rsa2048, -1, 30);
    let backend = TestBackend::start("wt1", Behavior::Normal);
    let proxy = tls_proxy(&backend, &[&leaf], |_| {});
    let v12 = s_client(&proxy, &ca, &["-tls1_2"], GET_CLOSE);
    assert!(v12.contains("Protocol  : TLSv1.2"), "{v12}");
    assert!(v12.contains("HTTP/1.1 200"), "{v12}");
    let v13 = s_client(&proxy, &ca, &["-tls1_3"], GET_CLOSE);
    assert!(v13.contains("TLSv1.3"), "{v13}");
    assert!(v13.contains("HTTP/1.1 200"), "{v13}");
    // OpenSSL 3 refuses TLS 1.1 at its default security level; level 0 lets it offer it.
    let v11 = s_client(
        &proxy,
        &ca,
        &["-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0"],
        GET_CLOSE,
    );
    assert!(!v11.contains("HTTP/1.1 200"), "{v11}");
    assert_eq!(backend.request_count(), 2);
}

#[test]
fn a_client_resumes_its_session_with_a_ticket() {
    let ca = TestCa::new("resume");
    let leaf = ca.leaf("site", &["localhost"], KeyKind::EcdsaP256, -1, 30);
    let backend = TestBackend::start("wt1", Behavior::Normal);
    // Two shards: a resumed client may land on either, and the ticket keys are shared.
    let proxy = tls_proxy(&backend, &[&leaf], |c| c.threads = 2);
    let session = ca.dir.join("session.pem").display().to_string();
    for tls in ["-tls1_3", "-tls1_2"] {
        let first = s_client(&proxy, &ca, &[tls, "-sess_out", &session], GET_CLOSE);
        assert!(first.contains("HTTP/1.1 200"), "{first}");
        for _ in 0..3 {
            let again = s_client(&proxy, &ca, &[tls, "-sess_in", &session], GET_CLOSE);
            assert!(again.contains("Reused, TLSv1."), "{tls}: {again}");
            assert!(again.contains("HTTP/1.1 200"), "{again}");
        }
    }
    let resumed = metric(
        &proxy,
        "wtgate_tls_handshakes_total{version=\"TLSv1.3\",resumed=\"true\"}",
    ) + metric(
        &proxy,
        "wtgate_tls_handshakes_total{version=\"TLSv1.2\",resumed=\"true\"}",
    );
    assert_eq!(resumed, 6);
}

/// Reads what the proxy sends until it closes (or 5 s pass).
fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    got
}

#[test]
fn plain_http_garbage_and_a_stalled_hello_end_cleanly_and_reach_no_backend() {
    let ca = TestCa::new("bad");
    let leaf = ca.leaf("site", &["localhost"], KeyKind::EcdsaP256, -1, 30);
    let backend = TestBackend::start("wt1", Behavior::Normal);
    let proxy = tls_proxy(&backend, &[&leaf], |c| {
        c.timeouts.tls_handshake = Duration::from_secs(1);
    });
    let mut plain = TcpStream::connect(proxy.addr).unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answer = String::from_utf8(read_to_close(&mut plain)).unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 400 Bad Request\r\n"),
        "{answer}"
    );
    assert!(
        answer.contains("plain HTTP request was sent to the HTTPS port"),
        "{answer}"
    );

    let mut garbage = TcpStream::connect(proxy.addr).unwrap();
    garbage
        .write_all(b"\x00\x01\x02\x03 not tls at all")
        .unwrap();
    assert!(read_to_close(&mut garbage).is_empty());

    // A ClientHello record header that promises 512 bytes, and 10 of them: the TLS slowloris.
    let mut stall = TcpStream::connect(proxy.addr).unwrap();
    stall
        .write_all(&[0x16, 3, 1, 2, 0, 1, 0, 1, 0xfc, 3])
        .unwrap();
    assert!(read_to_close(&mut stall).is_empty());

    // A ClientHello of two bytes, which cannot be one: an alert, then the close.
    let mut bad = TcpStream::connect(proxy.addr).unwrap();
    bad.write_all(&[0x16, 3, 1, 0, 6, 1, 0, 0, 2, 0, 0])
        .unwrap();
    let alert = read_to_close(&mut bad);
    assert_eq!(alert.first(), Some(&0x15), "an alert record: {alert:?}");

    assert_eq!(backend.request_count(), 0);
    let fails = |r: &str| {
        metric(
            &proxy,
            &format!("wtgate_tls_handshake_failures_total{{reason=\"{r}\"}}"),
        )
    };
    assert_eq!(fails("plain_http"), 1);
    assert_eq!(fails("not_tls"), 1);
    assert_eq!(fails("timeout"), 1);
    assert_eq!(fails("protocol"), 1);
    // The listener still serves.
    let ok = s_client(&proxy, &ca, &[], GET_CLOSE);
    assert!(ok.contains("HTTP/1.1 200"), "{ok}");
}

#[test]
fn a_reload_serves_the_new_certificate_and_refuses_a_key_that_does_not_match() {
    let ca = TestCa::new("reload");
    let old = ca.leaf("old", &["localhost"], KeyKind::EcdsaP256, -1, 30);
    let new = ca.leaf(
        "new",
        &["localhost", "new.test"],
        KeyKind::EcdsaP256,
        -1,
        30,
    );
    let backend = TestBackend::start("wt1", Behavior::Normal);
    let proxy = tls_proxy(&backend, &[&old], |_| {});
    let cfg = |leaf: CertFiles| {
        let mut c = (*proxy.engine().handle().config()).clone();
        c.tls.certs = vec![leaf];
        c
    };
    let mismatched = CertFiles {
        chain: new.cert.clone(),
        key: old.key.clone(),
    };
    let refused = proxy.engine().handle().reload_with(cfg(mismatched));
    let why = format!(
        "{:?}",
        refused.expect_err("a key that does not match is refused")
    );
    assert!(why.contains("does not match the private key"), "{why}");
    let still = s_client(&proxy, &ca, &["-servername", "new.test"], GET_CLOSE);
    assert!(
        !still.contains("DNS:new.test") && still.contains("HTTP/1.1 200"),
        "{still}"
    );
    proxy
        .engine()
        .handle()
        .reload_with(cfg(files(&new)))
        .unwrap();
    let now = s_client(
        &proxy,
        &ca,
        &["-servername", "new.test", "-showcerts"],
        GET_CLOSE,
    );
    assert!(now.contains("Verify return code: 0 (ok)"), "{now}");
    assert!(now.contains("subject=CN = localhost"), "{now}");
    let expiry = metric(&proxy, "wtgate_tls_certificate_expiry_seconds{");
    assert!(expiry > 28 * 86_400, "{expiry}");
}

#[test]
fn the_redirect_listener_sends_every_request_to_https() {
    let backend = TestBackend::start("wt1", Behavior::Normal);
    let proxy = start_proxy(&[backend.spec()], |c| {
        c.listen[0].redirect_https = true;
    });
    let mut w = Wire::connect(proxy.addr);
    w.write_all(b"GET /app?wtd=wt1aaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: example.com:80\r\n\r\n")
        .unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.status, 301);
    assert_eq!(
        r.head.header("location"),
        Some("https://example.com/app?wtd=wt1aaaaaaaaaaaaaaaa")
    );
    // Keep-alive: a second request on the connection, a POST, keeps its method (308) and closes.
    w.write_all(b"POST /x HTTP/1.1\r\nHost: example.com\r\nContent-Length: 2\r\n\r\nhi")
        .unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.status, 308);
    w.expect_closed().unwrap();
    assert_eq!(backend.request_count(), 0);
}

#[test]
fn a_certificate_that_cannot_be_served_is_refused_in_one_line_naming_the_file() {
    let ca = TestCa::new("start");
    let good = ca.leaf("good", &["localhost"], KeyKind::EcdsaP256, -1, 30);
    let other = ca.leaf("other", &["localhost"], KeyKind::EcdsaP256, -1, 30);
    let expired = ca.leaf("expired", &["localhost"], KeyKind::EcdsaP256, -40, 30);
    let future = ca.leaf("future", &["localhost"], KeyKind::EcdsaP256, 5, 30);
    let nameless = ca.leaf("nameless", &[], KeyKind::EcdsaP256, -1, 30);
    let missing = ca.dir.join("missing.pem").display().to_string();
    let listen = format!("127.0.0.1:{},tls", free_port());
    let cases = [
        (
            format!("{missing},{}", good.key),
            missing.clone(),
            "cannot read the certificate chain",
        ),
        (
            format!("{},{}", good.cert, other.key),
            good.cert.clone(),
            "does not match the private key",
        ),
        (
            format!("{},{}", good.cert, good.cert),
            good.cert.clone(),
            "no private key in it",
        ),
        (expired.flag(), expired.cert.clone(), "--tls-allow-expired"),
        (future.flag(), future.cert.clone(), "valid only from"),
        (nameless.flag(), nameless.cert.clone(), "names no host"),
    ];
    for (cert, file, why) in &cases {
        for command in [&["check"][..], &[][..]] {
            let mut args: Vec<&str> = command.to_vec();
            args.extend([
                "--listen",
                &listen,
                "--tls-cert",
                cert,
                "--backend",
                "wt1=127.0.0.1:9",
            ]);
            let out = run_wtgate(&args, &[], Duration::from_secs(10));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!out.status.success(), "{args:?}: {}", text(&out));
            let line = stderr
                .lines()
                .find(|l| l.contains(why))
                .unwrap_or_else(|| panic!("{args:?}: no '{why}' in {stderr}"));
            assert!(line.contains(file.as_str()), "{line}");
        }
    }
    let allowed = run_wtgate(
        &[
            "check",
            "--listen",
            &listen,
            "--tls-cert",
            &expired.flag(),
            "--tls-allow-expired",
        ],
        &[("WTGATE_UNUSED", "")],
        Duration::from_secs(10),
    );
    // No backend given: check refuses for that reason only, not for the certificate.
    assert!(!text(&allowed).contains("expired"), "{}", text(&allowed));
    let ok = run_wtgate(
        &[
            "check",
            "--listen",
            &listen,
            "--tls-cert",
            &good.flag(),
            "--backend",
            "wt1=127.0.0.1:9",
        ],
        &[],
        Duration::from_secs(10),
    );
    assert!(ok.status.success(), "{}", text(&ok));
    assert!(text(&ok).contains("(HTTPS and WSS)"), "{}", text(&ok));
    assert!(
        text(&ok).contains(&format!("tls: {} for localhost (until ", good.cert)),
        "{}",
        text(&ok)
    );
}

#[test]
fn a_renegotiation_attempt_is_refused_and_ends_the_connection() {
    let ca = TestCa::new("reneg");
    let leaf = ca.leaf("site", &["localhost"], KeyKind::EcdsaP256, -1, 30);
    let backend = TestBackend::start("wt1", Behavior::Normal);
    let proxy = tls_proxy(&backend, &[&leaf], |_| {});
    // `R` asks s_client to renegotiate (TLS 1.2); it reads on until the proxy closes.
    let connect = proxy.addr.to_string();
    let out = Command::new("timeout")
        .args([
            "10", "openssl", "s_client", "-connect", &connect, "-tls1_2", "-msg", "-CAfile",
        ])
        .arg(ca.cert())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            // Left open (not dropped) until the proxy has closed: a closed stdin would end it.
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(b"R\n")?;
            let out = child.wait_with_output();
            drop(stdin);
            out
        })
        .unwrap();
    let text = text(&out);
    assert!(text.contains("RENEGOTIATING"), "{text}");
    assert!(text.contains("no_renegotiation"), "{text}");
    // Ended by the proxy's close, not by the 10 s `timeout` (exit status 124).
    assert_ne!(out.status.code(), Some(124), "{text}");
    assert_eq!(metric(&proxy, "wtgate_tls_record_errors_total"), 1);
    assert_eq!(backend.request_count(), 0);
}

#[test]
fn a_proxy_protocol_listener_reads_the_header_then_the_handshake() {
    use std::io::Read;
    let ca = TestCa::new("pp");
    let leaf = ca.leaf("site", &["localhost"], KeyKind::EcdsaP256, -1, 30);
    let backend = TestBackend::start("wt1", Behavior::Normal);
    let proxy = tls_proxy(&backend, &[&leaf], |c| c.listen[0].proxy_protocol = true);
    let config = ca.client_config();
    let header = b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 443\r\n";
    let mut tls = crate::common::certs::tls_connect(&config, proxy.addr, "localhost", header);
    tls.write_all(GET_CLOSE.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = backend.requests();
    assert_eq!(seen[0].header("x-forwarded-for"), Some("203.0.113.7"));
    assert_eq!(seen[0].header("x-forwarded-proto"), Some("https"));
    assert_eq!(tls.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[test]
fn a_client_that_does_not_trust_the_certificate_is_counted_as_its_alert() {
    let ca = TestCa::new("trusted");
    let other = TestCa::new("other");
    let leaf = ca.leaf("site", &["localhost"], KeyKind::EcdsaP256, -1, 30);
    let backend = TestBackend::start("wt1", Behavior::Normal);
    let proxy = tls_proxy(&backend, &[&leaf], |_| {});
    // Trusting another CA, and failing on a verification error: it ends with an alert.
    let out = s_client(&proxy, &other, &["-verify_return_error"], GET_CLOSE);
    assert!(!out.contains("HTTP/1.1 200"), "{out}");
    assert_eq!(
        metric(
            &proxy,
            "wtgate_tls_handshake_failures_total{reason=\"client_alert\"}"
        ),
        1
    );
    assert_eq!(backend.request_count(), 0);
}
