//! The generator against wtgate (in-process `Engine`) and two `wtgate-bench serve` backends (child
//! processes), all on 127.0.0.1 with ports chosen by the kernel. Short, bounded runs: every child is
//! killed on drop and every wait has a deadline.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use wtgate::config::{BackendConfig, CertFiles, Config, Listen, TlsSettings};
use wtgate::engine::Engine;

const BIN: &str = env!("CARGO_BIN_EXE_wtgate-bench");

/// A child process killed when dropped.
struct Kid(Child);

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` on port 0 and returns it with the address it printed.
fn serve(prefix: &str) -> (Kid, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--prefix", prefix])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn serve");
    let stdout = child.stdout.take().unwrap();
    let kid = Kid(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("serve did not say where it listens");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected serve output: {line:?}"))
        .parse()
        .unwrap();
    (kid, addr)
}

/// Runs `load` with `args` to completion (at most 30 s) and returns its JSON.
fn load(target: SocketAddr, args: &[&str]) -> Value {
    let t = target.to_string();
    let mut cmd = Command::new(BIN);
    cmd.args(["load", "--json", "--quiet", "--target", &t])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut kid = Kid(cmd.spawn().expect("spawn load"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = kid.0.try_wait().unwrap() {
            assert!(status.success(), "load {args:?} failed: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "load {args:?} did not finish");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    std::io::Read::read_to_string(kid.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("bad JSON {out:?}: {e}"))
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

fn assert_adds_up(v: &Value) {
    let errors: u64 = v["errors"]
        .as_object()
        .unwrap()
        .values()
        .map(|x| x.as_u64().unwrap())
        .sum();
    assert_eq!(errors, n(v, "errors_total"), "{v}");
    assert_eq!(
        n(v, "sent"),
        n(v, "ok") + errors,
        "sent != ok + errors: {v}"
    );
}

struct Rig {
    proxy: Engine,
    _b1: Kid,
    _b2: Kid,
    b1: SocketAddr,
}

fn rig() -> Rig {
    rig_on(false, TlsSettings::default())
}

/// wtgate with its listener plain or `tls` (with the certificates of `tls`).
fn rig_on(tls_listener: bool, tls: TlsSettings) -> Rig {
    let (k1, a1) = serve("wt1");
    let (k2, a2) = serve("wt2");
    let mut listen = Listen::from("127.0.0.1:0".parse::<SocketAddr>().unwrap());
    listen.tls = tls_listener;
    let cfg = Config {
        listen: vec![listen],
        tls,
        backends: vec![
            BackendConfig::parse(&format!("wt1={a1}")).unwrap(),
            BackendConfig::parse(&format!("wt2={a2}")).unwrap(),
        ],
        threads: 1,
        pin: false,
        ..Config::default()
    };
    let proxy = Engine::start(cfg).expect("start wtgate");
    Rig {
        proxy,
        _b1: k1,
        _b2: k2,
        b1: a1,
    }
}

#[test]
fn counts_add_up_and_nothing_is_misrouted_through_wtgate() {
    let rig = rig();
    let proxy = rig.proxy.local_addrs()[0];

    // Keep-alive GETs, a mix of wt1, wt2 and session-less URLs, stopped by request count.
    let v = load(
        proxy,
        &["-n", "3000", "-c", "8", "--warmup", "0s", "-d", "20s"],
    );
    assert_adds_up(&v);
    assert_eq!(n(&v, "sent"), 3000, "{v}");
    assert_eq!(n(&v, "ok"), 3000, "{v}");
    assert_eq!(v["errors"]["misrouted"], 0, "{v}");
    assert!(v["latency_us"]["p50"].as_u64().unwrap() > 0);
    assert!(v["rps"].as_f64().unwrap() > 0.0);

    // A connection per request, POST bodies, large responses, WebSocket echo.
    for args in [
        &["--mode", "connect", "-n", "300", "-c", "4"][..],
        &["--mode", "post", "--body", "5000", "-n", "500", "-c", "4"][..],
        &["--resp-size", "300000", "-n", "40", "-c", "2"][..],
        &[
            "--mode",
            "ws",
            "--msg-size",
            "1024",
            "-n",
            "1000",
            "-c",
            "4",
        ][..],
    ] {
        let mut a = args.to_vec();
        a.extend(["--warmup", "0s", "-d", "20s"]);
        let v = load(proxy, &a);
        assert_adds_up(&v);
        assert_eq!(n(&v, "errors_total"), 0, "{args:?}: {v}");
        assert!(n(&v, "ok") > 0, "{args:?}: {v}");
    }
}

#[test]
fn open_loop_sends_exactly_the_scheduled_requests() {
    let rig = rig();
    let proxy = rig.proxy.local_addrs()[0];
    // 8 connections at 250/s each over 1 s: every one has 250 due times in the window. A
    // connection that falls behind sends late (and its latency shows it), so on a loaded machine
    // the debug build may need more than the default 2 s grace to get through its schedule.
    let v = load(
        proxy,
        &[
            "--rate", "2000", "-c", "8", "--warmup", "0s", "-d", "1s", "--grace", "10s",
        ],
    );
    assert_adds_up(&v);
    assert_eq!(n(&v, "sent"), 2000, "{v}");
    assert_eq!(n(&v, "errors_total"), 0, "{v}");
}

#[test]
fn a_backend_alone_cannot_answer_for_the_other_prefix() {
    // The routing check itself: straight to wt1, every wtd=wt2… request is misrouted. One
    // connection alternates wt1, wt2, wt1, … so exactly half are.
    let rig = rig();
    let v = load(
        rig.b1,
        &["-n", "600", "-c", "1", "--warmup", "0s", "--no-plain"],
    );
    assert_adds_up(&v);
    assert_eq!(n(&v, "ok"), 300, "{v}");
    assert_eq!(v["errors"]["misrouted"], 300, "{v}");
}

/// Reads from `s` until the peer closes (bounded by a read timeout).
fn read_to_close(s: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut all = Vec::new();
    let _ = s.read_to_end(&mut all);
    all
}

#[test]
fn serve_answers_pipelined_requests_in_order_and_refuses_a_huge_head() {
    use std::io::Write;
    let (_kid, addr) = serve("wt1");
    // Four requests in one write: a small body, a POST whose body must be skipped, a HEAD, and a
    // body larger than the pattern buffer (written straight from it), the last closing.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(
        b"GET /a?size=5 HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc\
          HEAD /c HTTP/1.1\r\nHost: x\r\n\r\n\
          GET /d?size=300000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let all = read_to_close(&mut s);
    let text = String::from_utf8_lossy(&all);
    let lengths: Vec<&str> = text
        .match_indices("Content-Length: ")
        .map(|(i, _)| text[i + 16..].split("\r\n").next().unwrap())
        .collect();
    assert_eq!(lengths, ["5", "64", "64", "300000"], "{}", &text[..400]);
    assert!(
        text.contains("\r\n\r\nabcdeHTTP/1.1 200"),
        "{}",
        &text[..400]
    );
    // The 256 KiB pattern, then its start again.
    let last_body = &all[all.len() - 300000..];
    let pattern = |i: usize| b'a' + (i % (256 * 1024) % 26) as u8;
    assert!(last_body.iter().enumerate().all(|(i, &b)| b == pattern(i)));

    // A head that fills 64 KiB without ending: 431, then the close.
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut head = b"GET /".to_vec();
    head.resize(64 * 1024, b'a');
    s.write_all(&head).unwrap();
    let all = read_to_close(&mut s);
    assert!(
        all.starts_with(b"HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&all)
    );
}

/// A self-signed ECDSA certificate for localhost that says it is a CA, as `openssl req -x509`
/// (compare-tls.sh) makes them: its PEM files in `dir`.
fn self_signed(dir: &std::path::Path) -> CertFiles {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let files = CertFiles {
        chain: dir.join("cert.pem").display().to_string(),
        key: dir.join("key.pem").display().to_string(),
    };
    std::fs::write(&files.chain, cert.pem()).unwrap();
    std::fs::write(&files.key, key.serialize_pem()).unwrap();
    files
}

#[test]
fn tls_loads_through_wtgate_resume_only_with_tls_resume() {
    let dir = std::env::temp_dir().join(format!("wtgate-bench-e2e-tls-{}", std::process::id()));
    let cert = self_signed(&dir);
    let rig = rig_on(
        true,
        TlsSettings {
            certs: vec![cert.clone()],
            ..TlsSettings::default()
        },
    );
    let proxy = rig.proxy.local_addrs()[0];
    let tls = ["--tls", "--tls-ca", cert.chain.as_str()];
    for (args, resume) in [
        (&["-n", "2000", "-c", "4"][..], false),
        (&["--mode", "connect", "-n", "200", "-c", "4"][..], false),
        (
            &["--mode", "connect", "-n", "200", "-c", "4", "--tls-resume"][..],
            true,
        ),
        (&["--resp-size", "300000", "-n", "40", "-c", "2"][..], false),
        (&["--mode", "ws", "-n", "1000", "-c", "4"][..], false),
    ] {
        let mut a = tls.to_vec();
        a.extend(args);
        a.extend(["--warmup", "0s", "-d", "20s"]);
        let v = load(proxy, &a);
        assert_adds_up(&v);
        assert_eq!(n(&v, "errors_total"), 0, "{args:?}: {v}");
        assert!(n(&v, "ok") > 0, "{args:?}: {v}");
        let resumed = n(&v, "tls_resumed");
        if resume {
            // The first connections make full handshakes; later ones resume their tickets.
            assert!(resumed > n(&v, "connects") / 2, "{args:?}: {v}");
        } else {
            assert_eq!(resumed, 0, "{args:?}: {v}");
        }
    }
    // A name the certificate does not cover: every connection fails its handshake.
    let mut a = tls.to_vec();
    a.extend([
        "--tls-name",
        "example.com",
        "-n",
        "20",
        "-c",
        "1",
        "--warmup",
        "0s",
        "-d",
        "1s",
    ]);
    let v = load(proxy, &a);
    assert_eq!(n(&v, "ok"), 0, "{v}");
    assert!(v["errors"]["connect"].as_u64().unwrap() > 0, "{v}");
    let _ = std::fs::remove_dir_all(dir);
}
