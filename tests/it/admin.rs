//! The admin listener (`--admin`): metrics that count exactly what went through, the state and
//! sessions endpoints, drains through the API and `wtgate admin`, tokens, and refusals of bad
//! input that change nothing.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use wtgate::admin::client::{AdminClient, Drained};
use wtgate::config::Config;
use wtgate::engine::{Engine, StartError};
use wtgate::health::Admin;
use wtgate_demo::ws::OP_CLOSE;

use crate::common::*;

fn with_admin(c: &mut Config) {
    c.admin = Some("127.0.0.1:0".parse().unwrap());
}

fn admin_addr(p: &Proxy) -> SocketAddr {
    p.engine().admin_addr().expect("admin listener running")
}

/// One request to the admin listener as a local tool sends it (`Host` its address, the header
/// that says it is no web page); `token`: sent as a bearer token.
fn call(addr: SocketAddr, method: &str, path: &str, body: &str, token: Option<&str>) -> Response {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}X-Wtgate-Admin: 1\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send_request(addr, raw.as_bytes()).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// One request of `head` (without the final empty line) and `body`, its Content-Length added.
fn raw_call(addr: SocketAddr, head: &str, body: &str) -> Response {
    let raw = format!("{head}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    send_request(addr, raw.as_bytes()).unwrap_or_else(|e| panic!("{head}: {e}"))
}

fn json(r: &Response) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body_str()))
}

/// `/metrics` as `name{labels}` → value, after checking every family has HELP and TYPE.
fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let r = call(addr, "GET", "/metrics", "", None);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(
        r.header("Content-Type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.head
    );
    let text = r.body_str();
    let mut samples = HashMap::new();
    let mut typed = Vec::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            typed.push(t.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect(line);
        let family = key.split('{').next().unwrap();
        assert!(
            typed.iter().any(|t| family.starts_with(t.as_str())),
            "{family} has no # TYPE before it"
        );
        samples.insert(key.to_string(), value.parse().expect(line));
    }
    samples
}

fn metric(m: &HashMap<String, f64>, key: &str) -> f64 {
    *m.get(key)
        .unwrap_or_else(|| panic!("no sample {key} among {:?}", m.keys()))
}

/// Sends `target` with `Connection: close` and reads to EOF: the proxy closes after it has
/// counted the request, so the counters are final when this returns. Returns the bytes received
/// and the backend that answered.
fn fetch_closing(proxy: SocketAddr, target: &str) -> (usize, String) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: wt.example\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    let backend = text
        .lines()
        .find_map(|l| l.strip_prefix("X-Backend: "))
        .unwrap_or("<none>")
        .to_string();
    (got.len(), backend)
}

/// Polls `cond` on fresh scrapes until it holds, for what the proxy updates just after a client
/// can see the result (a gauge lowered once a connection's task ends); fails after 10 s.
fn scrape_until(addr: SocketAddr, what: &str, cond: impl Fn(&HashMap<String, f64>) -> bool) {
    eventually(what, || cond(&scrape(addr)).then_some(()));
}

#[test]
fn metrics_count_exactly_what_went_through() {
    let s = start_pair(with_admin);
    let admin = admin_addr(&s.proxy);
    let mut rng = Rng::new(31);
    let sid = session_id(&mut rng, "wt1");
    let mut to_client = HashMap::<String, usize>::new();
    for i in 0..7 {
        let (n, backend) = fetch_closing(s.proxy.addr, &format!("/app?wtd={sid}&i={i}"));
        assert_eq!(backend, "wt1");
        *to_client.entry(backend).or_default() += n;
    }
    // Without a session: round-robin, two each.
    for i in 0..4 {
        let (n, backend) = fetch_closing(s.proxy.addr, &format!("/new?i={i}"));
        *to_client.entry(backend).or_default() += n;
    }
    let m = scrape(admin);
    let b = |name: &str, backend: &str| metric(&m, &format!("{name}{{backend=\"{backend}\"}}"));
    assert_eq!(b("wtgate_backend_requests_total", "wt1"), 9.0);
    assert_eq!(b("wtgate_backend_requests_total", "wt2"), 2.0);
    assert_eq!(
        metric(
            &m,
            "wtgate_backend_responses_total{backend=\"wt1\",code=\"2xx\"}"
        ),
        9.0
    );
    assert_eq!(
        metric(
            &m,
            "wtgate_backend_responses_total{backend=\"wt1\",code=\"5xx\"}"
        ),
        0.0
    );
    assert_eq!(b("wtgate_backend_affinity_hits_total", "wt1"), 7.0);
    assert_eq!(b("wtgate_backend_affinity_misses_total", "wt1"), 0.0);
    assert_eq!(b("wtgate_backend_failed_requests_total", "wt1"), 0.0);
    for (backend, seen) in [("wt1", &s.b1), ("wt2", &s.b2)] {
        assert_eq!(
            b("wtgate_backend_request_bytes_total", backend),
            seen.bytes_received() as f64,
            "{backend}: bytes the backend received"
        );
        assert_eq!(
            b("wtgate_backend_response_bytes_total", backend),
            to_client[backend] as f64,
            "{backend}: bytes the clients received"
        );
    }
    assert_eq!(b("wtgate_backend_sessions", "wt1"), 1.0);
    assert_eq!(b("wtgate_backend_sessions", "wt2"), 0.0);
    // One shard, one request at a time: each backend's connection is back in the pool.
    assert_eq!(b("wtgate_backend_pooled_connections", "wt1"), 1.0);
    assert_eq!(b("wtgate_backend_open_connections", "wt1"), 1.0);
    assert_eq!(b("wtgate_backend_tunnels", "wt1"), 0.0);
    assert_eq!(b("wtgate_backend_up", "wt1"), 1.0);
    assert_eq!(
        metric(
            &m,
            "wtgate_backend_admin_state{backend=\"wt1\",state=\"ready\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "wtgate_backend_admin_state{backend=\"wt1\",state=\"drain\"}"
        ),
        0.0
    );
    assert_eq!(b("wtgate_backend_response_seconds_count", "wt1"), 9.0);
    assert_eq!(b("wtgate_backend_first_byte_seconds_count", "wt2"), 2.0);
    let p99 = metric(
        &m,
        "wtgate_backend_response_seconds{backend=\"wt1\",quantile=\"0.99\"}",
    );
    let first = metric(
        &m,
        "wtgate_backend_first_byte_seconds{backend=\"wt1\",quantile=\"0.5\"}",
    );
    assert!(p99 > 0.0 && p99 < 10.0 && first <= p99, "{first} {p99}");
    assert!(
        metric(
            &m,
            "wtgate_backend_response_seconds{backend=\"wt2\",quantile=\"0.999\"}"
        ) > 0.0
    );
    assert_eq!(metric(&m, "wtgate_requests_total"), 11.0);
    let listener = format!("{{listener=\"{}\"}}", s.proxy.addr);
    assert_eq!(
        metric(
            &m,
            &format!("wtgate_listener_accepted_connections_total{listener}")
        ),
        11.0
    );
    assert_eq!(
        metric(&m, "wtgate_failures_total{kind=\"upstream_closed\"}"),
        0.0
    );
    assert_eq!(
        metric(&m, "wtgate_rejections_total{reason=\"head_too_large\"}"),
        0.0
    );
    scrape_until(admin, "the client connections to close", |m| {
        metric(m, &format!("wtgate_listener_open_connections{listener}")) == 0.0
    });

    // /stats says the same, as JSON.
    let st = json(&call(admin, "GET", "/stats", "", None));
    assert_eq!(st["requests"], 11);
    let wt1 = &st["backends"][0];
    assert_eq!(wt1["backend"], "wt1");
    assert_eq!(wt1["requests"], 9);
    assert_eq!(wt1["responses"]["2xx"], 9);
    assert_eq!(wt1["admin"], "ready");
    assert_eq!(wt1["up"], true);
    assert_eq!(wt1["sessions"]["live"], 1);
    assert_eq!(wt1["affinity_hits"], 7);
    assert_eq!(wt1["request_bytes"], s.b1.bytes_received());
    assert_eq!(wt1["latency"]["total"]["count"], 9);
    assert!(wt1["latency"]["total"]["p99"].as_f64().unwrap() > 0.0);
    assert_eq!(st["listeners"][0]["accepted"], 11);
    assert_eq!(st["failures"]["no_backend"], 0);
}

#[test]
fn a_real_prometheus_parser_reads_the_metrics() {
    let have = Command::new("python3")
        .args(["-c", "import prometheus_client"])
        .stderr(Stdio::null())
        .status();
    if !have.is_ok_and(|s| s.success()) {
        println!(
            "SKIPPED: python3 with prometheus_client is not installed \
             (python3 -m pip install prometheus_client)"
        );
        return;
    }
    let s = start_pair(with_admin);
    let mut rng = Rng::new(32);
    let sid = session_id(&mut rng, "wt2");
    for i in 0..3 {
        fetch_closing(s.proxy.addr, &format!("/?wtd={sid}&i={i}"));
    }
    let text = call(admin_addr(&s.proxy), "GET", "/metrics", "", None).body_str();
    // Prints `sample-name{labels as JSON} value` per sample, so the check below sees what the
    // parser understood, not what we wrote.
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        print(family.type, s.name, json.dumps(s.labels, sort_keys=True), float(s.value))
"#;
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let parsed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the parser refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        r#"counter wtgate_backend_requests_total {"backend": "wt2"} 3.0"#,
        r#"counter wtgate_backend_affinity_hits_total {"backend": "wt2"} 3.0"#,
        r#"gauge wtgate_backend_admin_state {"backend": "wt2", "state": "ready"} 1.0"#,
        r#"gauge wtgate_backend_sessions {"backend": "wt2"} 1.0"#,
        r#"summary wtgate_backend_response_seconds_count {"backend": "wt2"} 3.0"#,
        r#"counter wtgate_requests_total {} 3.0"#,
    ] {
        assert!(
            parsed.lines().any(|l| l == want),
            "no '{want}' in:\n{parsed}"
        );
    }
    let quantiles = parsed
        .lines()
        .filter(|l| l.starts_with("summary wtgate_backend_first_byte_seconds {"))
        .count();
    assert_eq!(
        quantiles, 8,
        "4 quantiles for each of 2 backends:\n{parsed}"
    );
}

#[test]
fn tunnels_and_their_connections_are_gauges() {
    let ws = Behavior::WsEcho {
        reject: false,
        close_after: None,
        greet: false,
    };
    let b1 = TestBackend::start("wt1", ws);
    let proxy = start_proxy(&[b1.spec()], with_admin);
    let admin = admin_addr(&proxy);
    let mut rng = Rng::new(33);
    let sid = session_id(&mut rng, "wt1");
    let (mut w, _) = ws_connect(proxy.addr, &format!("/?wtd={sid}&request=ws"));
    let gauge = |m: &HashMap<String, f64>, name: &str| {
        metric(m, &format!("wtgate_backend_{name}{{backend=\"wt1\"}}"))
    };
    scrape_until(admin, "the tunnel", |m| {
        gauge(m, "tunnels") == 1.0 && gauge(m, "open_connections") == 1.0
    });
    let m = scrape(admin);
    assert_eq!(
        metric(
            &m,
            "wtgate_backend_responses_total{backend=\"wt1\",code=\"1xx\"}"
        ),
        1.0
    );
    assert_eq!(gauge(&m, "sessions"), 1.0);
    let payload = b"hello through the tunnel";
    w.write_all(&client_frame(
        wtgate_demo::ws::OP_TEXT,
        payload,
        [9, 8, 7, 6],
    ))
    .unwrap();
    let echoed = ws_recv(&mut w).unwrap().expect("the echo");
    assert_eq!(echoed.2, payload);
    w.write_all(&client_frame(OP_CLOSE, &[], [1, 2, 3, 4]))
        .unwrap();
    drop(w);
    scrape_until(admin, "the tunnel to close", |m| {
        gauge(m, "tunnels") == 0.0 && gauge(m, "open_connections") == 0.0
    });
    let m = scrape(admin);
    assert_eq!(
        gauge(&m, "request_bytes_total"),
        b1.bytes_received() as f64,
        "the upgrade request and the frames"
    );
    assert_eq!(gauge(&m, "first_byte_seconds_count"), 1.0);
    assert_eq!(
        gauge(&m, "response_seconds_count"),
        0.0,
        "a tunnel has no end"
    );
}

#[test]
fn drain_and_maint_through_the_api() {
    let s = start_pair(|c| {
        with_admin(c);
        c.threads = 2;
    });
    let admin = admin_addr(&s.proxy);
    let mut rng = Rng::new(34);
    let s1 = session_id(&mut rng, "wt1");
    let r = call(admin, "POST", "/backends/wt1/state", "drain", None);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(
        json(&r),
        serde_json::json!({"backend": "wt1", "old": "ready", "new": "drain"})
    );
    for i in 0..10 {
        assert_eq!(fetch_closing(s.proxy.addr, &format!("/new?i={i}")).1, "wt2");
        assert_eq!(
            fetch_closing(s.proxy.addr, &format!("/?wtd={s1}&i={i}")).1,
            "wt1",
            "a draining backend keeps its sessions"
        );
    }
    let m = scrape(admin);
    assert_eq!(
        metric(
            &m,
            "wtgate_backend_admin_state{backend=\"wt1\",state=\"drain\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "wtgate_backend_admin_state{backend=\"wt1\",state=\"ready\"}"
        ),
        0.0
    );
    // The form spelling, as `curl -H 'X-Wtgate-Admin: 1' -d state=maint` sends it.
    let r = call(admin, "POST", "/backends/wt1/state", "state=maint", None);
    assert_eq!(json(&r)["old"], "drain");
    assert_eq!(json(&r)["new"], "maint");
    for i in 0..5 {
        assert_eq!(
            fetch_closing(s.proxy.addr, &format!("/?wtd={s1}&m={i}")).1,
            "wt2",
            "maint redispatches"
        );
    }
    let m = scrape(admin);
    assert_eq!(
        metric(&m, "wtgate_backend_affinity_misses_total{backend=\"wt1\"}"),
        5.0
    );
    assert_eq!(
        metric(&m, "wtgate_backend_affinity_hits_total{backend=\"wt1\"}"),
        10.0
    );
    let r = call(admin, "POST", "/backends/wt1/state", "ready\n", None);
    assert_eq!(json(&r)["new"], "ready");
    assert_eq!(s.proxy.engine().handle().admin_states(), [Admin::Ready; 2]);
}

#[test]
fn the_sessions_endpoint_counts_live_sessions() {
    let s = start_pair(with_admin);
    let admin = admin_addr(&s.proxy);
    let r = json(&call(admin, "GET", "/backends/wt2/sessions", "", None));
    assert_eq!(
        r,
        serde_json::json!({"backend": "wt2", "live": 0, "since_last_request_s": null})
    );
    let mut rng = Rng::new(35);
    for _ in 0..3 {
        let sid = session_id(&mut rng, "wt2");
        fetch_closing(s.proxy.addr, &format!("/?wtd={sid}"));
    }
    let r = json(&call(admin, "GET", "/backends/wt2/sessions", "", None));
    assert_eq!(r["live"], 3);
    let since = r["since_last_request_s"].as_f64().unwrap();
    assert!((0.0..5.0).contains(&since), "{r}");
    assert_eq!(
        json(&call(admin, "GET", "/backends/wt1/sessions", "", None))["live"],
        0
    );
    let r = call(admin, "GET", "/backends/wt9/sessions", "", None);
    assert_eq!(r.status, 404);
    assert!(json(&r)["error"].as_str().unwrap().contains("wt9"), "{r:?}");
}

#[test]
fn drain_wait_returns_once_the_sessions_have_expired() {
    let s = start_pair(|c| {
        with_admin(c);
        c.session_idle = Duration::from_secs(3);
    });
    let url = format!("http://{}", admin_addr(&s.proxy));
    let client = AdminClient::new(&url, None).unwrap();
    let mut rng = Rng::new(36);
    for _ in 0..2 {
        let sid = session_id(&mut rng, "wt1");
        fetch_closing(s.proxy.addr, &format!("/?wtd={sid}"));
    }
    let change = client.set_state("wt1", Admin::Drain).unwrap();
    assert_eq!((&*change.old, &*change.new), ("ready", "drain"));
    let mut seen = Vec::new();
    let start = Instant::now();
    let end = client
        .wait_drained(
            "wt1",
            Duration::from_secs(20),
            Duration::from_millis(200),
            &mut |s| seen.push(s.live),
        )
        .unwrap();
    assert_eq!(end, Drained::Empty);
    assert_eq!(seen.first(), Some(&2), "{seen:?}");
    assert_eq!(seen.last(), Some(&0), "{seen:?}");
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(s.proxy.engine().sessions()[0].live, 0);
}

#[test]
fn drain_wait_times_out_while_a_websocket_keeps_its_session() {
    let ws = Behavior::WsEcho {
        reject: false,
        close_after: None,
        greet: false,
    };
    let b1 = TestBackend::start("wt1", ws);
    let b2 = TestBackend::start("wt2", Behavior::Normal);
    let proxy = start_proxy(&[b1.spec(), b2.spec()], |c| {
        with_admin(c);
        c.session_idle = Duration::from_secs(3);
    });
    let client = AdminClient::new(&format!("http://{}", admin_addr(&proxy)), None).unwrap();
    let mut rng = Rng::new(37);
    let sid = session_id(&mut rng, "wt1");
    let (_ws, _) = ws_connect(proxy.addr, &format!("/?wtd={sid}&request=ws"));
    // The shard records the open tunnel just after the 101 has gone out to the client.
    eventually("the WebSocket's session counted", || {
        (proxy.engine().sessions()[0].live == 1).then_some(())
    });
    client.set_state("wt1", Admin::Drain).unwrap();
    let end = client
        .wait_drained(
            "wt1",
            Duration::from_millis(1500),
            Duration::from_millis(200),
            &mut |_| {},
        )
        .unwrap();
    match end {
        Drained::TimedOut(s) => assert_eq!(s.live, 1),
        other => panic!("{other:?}"),
    }
}

/// Runs the `wtgate` binary, killing it after 30 s.
fn wtgate(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_wtgate(args, env, Duration::from_secs(30))
}

#[test]
fn the_admin_command_drains_waits_and_sets_ready() {
    let s = start_pair(|c| {
        with_admin(c);
        c.session_idle = Duration::from_secs(3);
        c.admin_token = Some("t0ken".into());
    });
    let url = format!("http://{}", admin_addr(&s.proxy));
    let mut rng = Rng::new(38);
    let sid = session_id(&mut rng, "wt1");
    fetch_closing(s.proxy.addr, &format!("/?wtd={sid}"));

    let out = wtgate(&["admin", "--url", &url, "sessions", "wt1"], &[]);
    assert!(!out.status.success());
    assert!(text(&out).contains("--token"), "{}", text(&out));

    let token = [("WTGATE_ADMIN_TOKEN", "t0ken")];
    let out = wtgate(&["admin", "--url", &url, "sessions", "wt1"], &token);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("wt1: 1 live session"), "{}", text(&out));

    let args = [
        "admin",
        "--url",
        &url,
        "--token",
        "t0ken",
        "drain",
        "wt1",
        "--wait",
        "--timeout",
        "20s",
    ];
    let out = wtgate(&args, &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("wt1: ready -> drain"), "{t}");
    assert!(t.contains("wt1: 1 live session"), "{t}");
    assert!(t.contains("no live session left"), "{t}");
    assert_eq!(s.proxy.engine().sessions()[0].live, 0);

    let out = wtgate(&["admin", "--url", &url, "ready", "wt1"], &token);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("wt1: drain -> ready"), "{}", text(&out));
    assert_eq!(s.proxy.engine().handle().admin_states()[0], Admin::Ready);

    let out = wtgate(&["admin", "--url", &url, "maint", "wt9"], &token);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no backend has prefix 'wt9'"),
        "{}",
        text(&out)
    );
}

#[test]
fn the_admin_command_exits_1_when_sessions_outlast_the_timeout() {
    let s = start_pair(with_admin);
    let url = format!("http://{}", admin_addr(&s.proxy));
    let mut rng = Rng::new(39);
    let sid = session_id(&mut rng, "wt1");
    fetch_closing(s.proxy.addr, &format!("/?wtd={sid}"));
    let args = [
        "admin",
        "--url",
        &url,
        "drain",
        "wt1",
        "--wait",
        "--timeout",
        "1s",
    ];
    let out = wtgate(&args, &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("1 live session(s) remain after 1s"), "{t}");
    assert_eq!(
        s.proxy.engine().handle().admin_states()[0],
        Admin::Drain,
        "the drain itself stays"
    );
}

#[test]
fn the_admin_command_says_where_it_looked_when_nothing_listens() {
    let addr = closed_port();
    let url = format!("http://{addr}");
    let out = wtgate(&["admin", "--url", &url, "drain", "wt1"], &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains(&format!("is wtgate running with --admin {addr}?")),
        "{t}"
    );
    assert!(!t.contains("panicked"), "{t}");
}

#[test]
fn a_token_is_required_when_set() {
    let s = start_pair(|c| {
        with_admin(c);
        c.admin_token = Some("s3cret".into());
    });
    let admin = admin_addr(&s.proxy);
    for token in [None, Some("wrong"), Some("s3cre"), Some("s3cret2")] {
        for (method, path, body) in [
            ("GET", "/metrics", ""),
            ("GET", "/stats", ""),
            ("GET", "/backends/wt1/sessions", ""),
            ("POST", "/backends/wt1/state", "maint"),
            ("POST", "/", ""),
        ] {
            let r = call(admin, method, path, body, token);
            assert_eq!(r.status, 401, "{method} {path} with {token:?}");
            assert_eq!(
                r.header("WWW-Authenticate"),
                Some("Bearer realm=\"wtgate\"")
            );
        }
    }
    assert_eq!(s.proxy.engine().handle().admin_states()[0], Admin::Ready);
    let r = call(
        admin,
        "POST",
        "/backends/wt1/state",
        "maint",
        Some("s3cret"),
    );
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(s.proxy.engine().handle().admin_states()[0], Admin::Maint);
    assert_eq!(
        call(admin, "GET", "/metrics", "", Some("s3cret")).status,
        200
    );
    // The status page holds no data, and a browser cannot add the header to a page it opens:
    // it loads, then asks for the token its /stats polls need.
    let page = call(admin, "GET", "/", "", None);
    assert_eq!(page.status, 200);
    assert!(
        page.body_str().contains("Bearer"),
        "the page sends the token"
    );
}

#[test]
fn a_listener_off_loopback_needs_a_token() {
    let b = TestBackend::start("wt1", Behavior::Normal);
    let cfg = proxy_config(&[b.spec()], |c| {
        c.admin = Some("0.0.0.0:0".parse().unwrap());
    });
    match Engine::start(cfg) {
        Err(StartError::Config(e)) => {
            let e = e.to_string();
            assert!(
                e.contains("--admin-token") && e.contains("--admin 0.0.0.0:0"),
                "{e}"
            );
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("started an unauthenticated admin listener on every interface"),
    }
    let out = wtgate(
        &[
            "check",
            "--listen",
            "127.0.0.1:8080",
            "--backend",
            "wt1=127.0.0.1:9090",
            "--admin",
            "0.0.0.0:8404",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--admin-token TOKEN"), "{}", text(&out));
    let out = wtgate(
        &[
            "check",
            "--listen",
            "127.0.0.1:8080",
            "--backend",
            "wt1=127.0.0.1:9090",
            "--admin",
            "8404",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "a bare port is loopback: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("admin: http://127.0.0.1:8404/"),
        "{}",
        text(&out)
    );
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let s = start_pair(with_admin);
    let admin = admin_addr(&s.proxy);
    let unchanged = || assert_eq!(s.proxy.engine().handle().admin_states(), [Admin::Ready; 2]);
    for (method, path, body, status, says) in [
        (
            "POST",
            "/backends/wt9/state",
            "drain",
            404,
            "no backend has prefix 'wt9'",
        ),
        (
            "POST",
            "/backends/wt1/state",
            "drained",
            400,
            "send ready, drain or maint",
        ),
        (
            "POST",
            "/backends/wt1/state",
            "",
            400,
            "send ready, drain or maint",
        ),
        (
            "POST",
            "/backends/wt1/state",
            "state=",
            400,
            "send ready, drain or maint",
        ),
        (
            "POST",
            "/backends/wt1/state",
            "DRAIN",
            400,
            "send ready, drain or maint",
        ),
        ("PUT", "/backends/wt1/state", "drain", 405, "use POST"),
        ("GET", "/backends/wt1/state", "", 405, "use POST"),
        ("POST", "/metrics", "", 405, "use GET"),
        ("POST", "/backends/wt1/sessions", "", 405, "use GET"),
        ("GET", "/backends/wt1", "", 404, "no such endpoint"),
        ("GET", "/backends//state", "", 405, "use POST"),
        (
            "POST",
            "/backends//state",
            "drain",
            404,
            "no backend has prefix ''",
        ),
        ("GET", "/nope", "", 404, "no such endpoint"),
    ] {
        let r = call(admin, method, path, body, None);
        assert_eq!(
            r.status,
            status,
            "{method} {path} {body:?}: {}",
            r.body_str()
        );
        let why = json(&r)["error"].as_str().unwrap().to_string();
        assert!(why.contains(says), "{method} {path} {body:?}: {why}");
        if status == 405 {
            assert!(r.header("Allow").is_some(), "{:?}", r.head);
        }
        unchanged();
    }
    let big = "x".repeat(5000);
    let r = call(admin, "POST", "/backends/wt1/state", &big, None);
    assert_eq!(r.status, 413);
    unchanged();
    // Not HTTP at all, or HTTP the h1 core refuses: a 4xx, and the listener serves on.
    let x = format!("Host: {admin}\r\nX-Wtgate-Admin: 1");
    for raw in [
        "garbage\r\n\r\n".to_string(),
        "GET / HTTP/1.1\r\n\r\n".into(),
        format!(
            "POST /backends/wt1/state HTTP/1.1\r\n{x}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\ndrain"
        ),
        format!(
            "POST /backends/wt1/state HTTP/1.1\r\n{x}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\ndrain\r\n0\r\n\r\n"
        ),
        format!("GET / HTTP/2.0\r\n{x}\r\n\r\n"),
    ] {
        let r = send_request(admin, raw.as_bytes()).unwrap();
        assert!(
            (400..500).contains(&r.status) || r.status == 505,
            "{raw:?}: {}",
            r.status
        );
        unchanged();
    }
    let huge_head = format!("GET /{} HTTP/1.1\r\n{x}\r\n\r\n", "a".repeat(20_000));
    assert_eq!(
        send_request(admin, huge_head.as_bytes()).unwrap().status,
        431
    );
    // A chunked body is a body like any other.
    let chunked = format!(
        "POST /backends/wt2/state HTTP/1.1\r\n{x}\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ndra\r\n2\r\nin\r\n0\r\n\r\n"
    );
    let r = send_request(admin, chunked.as_bytes()).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(s.proxy.engine().handle().admin_states()[1], Admin::Drain);
    // A client that connects and goes away costs nothing.
    drop(TcpStream::connect(admin).unwrap());
    assert_eq!(call(admin, "GET", "/stats", "", None).status, 200);
}

/// Connections that send nothing, or half a head, hold no slot: 200 of them from the operator's
/// own address (loopback), all still open, and the operator's requests are answered at once —
/// the longest-waiting ones are closed to make room, saying why.
#[test]
fn silent_and_half_sent_connections_keep_no_operator_out() {
    let s = start_pair(with_admin);
    let admin = admin_addr(&s.proxy);
    let held: Vec<TcpStream> = (0..200)
        .map(|i| {
            let mut c = TcpStream::connect(admin).unwrap();
            if i % 2 == 1 {
                // An attacker minds no error (a listener that closed it resets it).
                let _ = write!(c, "GET /stats HTTP/1.1\r\nHost: {admin}\r\n");
            }
            c
        })
        .collect();
    let r = call(admin, "GET", "/stats", "", None);
    assert_eq!(r.status, 200, "{}", r.body_str());
    let client = AdminClient::new(&format!("http://{admin}"), None).unwrap();
    assert_eq!(client.set_state("wt1", Admin::Drain).unwrap().new, "drain");
    assert_eq!(client.sessions("wt1").unwrap().live, 0);
    assert_eq!(s.proxy.engine().handle().admin_states()[0], Admin::Drain);
    // The first ones, silent and half-sent, made room for the later ones, and were told why.
    for mut oldest in &held[..2] {
        oldest.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut answer = String::new();
        oldest.read_to_string(&mut answer).unwrap();
        assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
        assert!(answer.contains("waited longest"), "{answer}");
    }
    drop(held);
}

/// Without a token the listener is loopback's, and a web page the operator opens is not: a
/// form posted from another site, a fetch without the header only local tools send, and a page
/// under a rebound DNS name are refused, and change nothing. Local tools and a same-origin
/// script keep working.
#[test]
fn web_pages_of_other_sites_cannot_use_a_listener_without_token() {
    let s = start_pair(with_admin);
    let admin = admin_addr(&s.proxy);
    let unchanged = || assert_eq!(s.proxy.engine().handle().admin_states(), [Admin::Ready; 2]);
    let post = format!("POST /backends/wt1/state HTTP/1.1\r\nHost: {admin}");
    for (headers, body, says) in [
        // An HTML form on attacker.example, as a browser posts it.
        (
            "Origin: http://attacker.example\r\nSec-Fetch-Site: cross-site\r\n\
             Content-Type: application/x-www-form-urlencoded",
            "state=maint",
            "another site (Sec-Fetch-Site: cross-site)",
        ),
        (
            "Origin: http://attacker.example\r\nContent-Type: application/x-www-form-urlencoded",
            "state=maint",
            "another site (Origin: http://attacker.example)",
        ),
        (
            "Origin: http://localhost:3000\r\nSec-Fetch-Site: same-site\r\n\
             Content-Type: text/plain",
            "maint",
            "another site",
        ),
        (
            "Origin: null\r\nX-Wtgate-Admin: 1\r\nContent-Type: application/json",
            "{\"state\":\"maint\"}",
            "another site (Origin: null)",
        ),
        // A browser that says nothing of where it comes from still cannot add the header.
        ("Content-Type: text/plain", "maint", "X-Wtgate-Admin: 1"),
        (
            "Content-Type: multipart/form-data; boundary=b",
            "--b\r\nContent-Disposition: form-data; name=state\r\n\r\nmaint\r\n--b--",
            "X-Wtgate-Admin: 1",
        ),
    ] {
        let r = raw_call(admin, &format!("{post}\r\n{headers}"), body);
        assert_eq!(r.status, 403, "{headers}: {}", r.body_str());
        let why = json(&r)["error"].as_str().unwrap().to_string();
        assert!(why.contains(says), "{headers}: {why}");
        unchanged();
    }
    let r = raw_call(
        admin,
        &format!("POST /reload HTTP/1.1\r\nHost: {admin}"),
        "",
    );
    assert_eq!(r.status, 403, "{}", r.body_str());
    // DNS rebinding: attacker.example now resolves to 127.0.0.1, and its page is same-origin
    // with the listener; the Host still names attacker.example.
    let rebound = format!("attacker.example:{}", admin.port());
    for (method, path, headers, body) in [
        ("GET", "/stats", String::new(), ""),
        ("GET", "/", String::new(), ""),
        ("GET", "/metrics", String::new(), ""),
        (
            "POST",
            "/backends/wt1/state",
            format!(
                "\r\nOrigin: http://{rebound}\r\nSec-Fetch-Site: same-origin\r\n\
                 Content-Type: application/json"
            ),
            "{\"state\":\"maint\"}",
        ),
    ] {
        let head = format!("{method} {path} HTTP/1.1\r\nHost: {rebound}{headers}");
        let r = raw_call(admin, &head, body);
        assert_eq!(r.status, 421, "{method} {path}: {}", r.body_str());
        let why = json(&r)["error"].as_str().unwrap().to_string();
        assert!(
            why.contains("'attacker.example:") && why.contains(&format!("http://{admin}/")),
            "{why}"
        );
        unchanged();
    }
    // The listener under its own names, as the status page's script and local tools reach it.
    for host in [admin.to_string(), format!("localhost:{}", admin.port())] {
        let r = raw_call(admin, &format!("GET /stats HTTP/1.1\r\nHost: {host}"), "");
        assert_eq!(r.status, 200, "{host}: {}", r.body_str());
    }
    let same_origin = format!(
        "{post}\r\nOrigin: http://{admin}\r\nSec-Fetch-Site: same-origin\r\n\
         Content-Type: application/json"
    );
    let r = raw_call(admin, &same_origin, "{\"state\":\"drain\"}");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(json(&r)["new"], "drain");
    let client = AdminClient::new(&format!("http://{admin}"), None).unwrap();
    assert_eq!(client.set_state("wt1", Admin::Ready).unwrap().new, "ready");
    unchanged();
}

/// The token holder is served from anywhere, under any name: the checks that keep web pages out
/// of a listener without a token are not needed where a page cannot know the token.
#[test]
fn a_token_holder_is_served_from_any_site_under_any_name() {
    let s = start_pair(|c| {
        with_admin(c);
        c.admin_token = Some("s3cret".into());
    });
    let admin = admin_addr(&s.proxy);
    let foreign = "POST /backends/wt1/state HTTP/1.1\r\nHost: admin.example\r\n\
                   Origin: http://attacker.example\r\nSec-Fetch-Site: cross-site\r\n\
                   Content-Type: application/x-www-form-urlencoded";
    let r = raw_call(admin, foreign, "state=maint");
    assert_eq!(r.status, 401, "{}", r.body_str());
    assert_eq!(s.proxy.engine().handle().admin_states()[0], Admin::Ready);
    let with_token = format!("{foreign}\r\nAuthorization: Bearer s3cret");
    let r = raw_call(admin, &with_token, "state=maint");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(s.proxy.engine().handle().admin_states()[0], Admin::Maint);
    // The page holds no data: served under any name, it asks for the token.
    let r = raw_call(admin, "GET / HTTP/1.1\r\nHost: admin.example", "");
    assert_eq!(r.status, 200);
    let r = raw_call(admin, "GET /stats HTTP/1.1\r\nHost: admin.example", "");
    assert_eq!(r.status, 401);
    let client = AdminClient::new(&format!("http://{admin}"), Some("s3cret".into())).unwrap();
    assert_eq!(client.set_state("wt1", Admin::Ready).unwrap().old, "maint");
}

#[test]
fn the_status_page_is_served_whole_by_wtgate() {
    let s = start_pair(with_admin);
    let admin = admin_addr(&s.proxy);
    let r = call(admin, "GET", "/", "", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("text/html; charset=utf-8"));
    let page = r.body_str();
    assert!(page.starts_with("<!doctype html>"), "{page}");
    assert!(
        page.contains("fetch(") && page.contains("stats"),
        "polls /stats"
    );
    assert!(
        page.contains("<svg") || page.contains("createElementNS"),
        "sparklines"
    );
    for external in [
        "src=\"http",
        "href=\"http",
        "@import",
        "url(http",
        "src=\"//",
    ] {
        assert!(!page.contains(external), "external asset: {external}");
    }
    // The query string is no part of the path.
    assert_eq!(call(admin, "GET", "/?refresh=1", "", None).status, 200);
    let r = call(admin, "HEAD", "/", "", None);
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
}

#[test]
fn a_busy_admin_address_is_a_bind_error_and_dropping_the_engine_closes_the_listener() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let at = taken.local_addr().unwrap();
    let b = TestBackend::start("wt1", Behavior::Normal);
    let cfg = proxy_config(&[b.spec()], |c| c.admin = Some(at));
    match Engine::start(cfg) {
        Err(e @ StartError::Bind { .. }) => {
            assert!(e.to_string().contains(&at.to_string()), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("started on a taken address"),
    }
    drop(taken);
    // A port no parallel test's bind(:0) or connect can take once it is closed.
    let proxy = start_proxy(&[b.spec()], |c| c.admin = Some(crate::common::free_addr()));
    let admin = admin_addr(&proxy);
    assert_eq!(call(admin, "GET", "/stats", "", None).status, 200);
    drop(proxy);
    let refused = TcpStream::connect(admin);
    assert!(refused.is_err(), "still listening after the engine stopped");
}

/// The status page in a real browser (headless Chromium): every backend with its state, admin
/// state and live sessions, drawn by the page's own script from /stats. Skipped, saying so, where
/// no Chromium is installed (`.ci/run` installs it).
#[test]
fn the_status_page_shows_every_backend_in_a_browser() {
    let Some(browser) = find_chromium() else {
        eprintln!("no Chromium installed: the status page is not rendered in a browser");
        return;
    };
    let s = start_pair(with_admin);
    let sid = session_id(&mut Rng::new(31), "wt2");
    let r = send_request(s.proxy.addr, &get(&format!("/app?wtd={sid}"))).unwrap();
    assert_eq!(r.status, 200);
    s.proxy.engine().set_admin("wt1", Admin::Drain).unwrap();
    let url = format!("http://{}/", admin_addr(&s.proxy));
    let out = Command::new(browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
            "--dump-dom",
            &url,
        ])
        .stderr(Stdio::null())
        .output()
        .expect("run Chromium");
    let dom = String::from_utf8_lossy(&out.stdout);
    let (wt1, wt2) = (row(&dom, "wt1").unwrap(), row(&dom, "wt2").unwrap());
    assert!(wt1.contains(">up<") && wt1.contains(">drain<"), "{wt1}");
    assert!(wt2.contains(">up<") && wt2.contains(">ready<"), "{wt2}");
    assert!(wt2.contains(">1</td>"), "one live session on wt2: {wt2}");
}

/// The part of the status page's DOM that draws `prefix`'s row, if there is one.
fn row(dom: &str, prefix: &str) -> Option<String> {
    let start = dom.find(&format!(r#"<div class="name">{prefix}</div>"#))?;
    let end = dom[start..].find("</tr>").map_or(dom.len(), |e| start + e);
    Some(dom[start..end].to_string())
}

/// The status page left open in a browser redraws itself from /stats: a state change and a new
/// session made after it loaded show up in place, without the page being reloaded (a mark set
/// in the page's JavaScript state survives).
#[test]
fn the_open_status_page_updates_in_place_after_a_state_change() {
    let Some(browser) = find_chromium() else {
        eprintln!("no Chromium installed: the status page is not rendered in a browser");
        return;
    };
    let s = start_pair(with_admin);
    let mut rng = Rng::new(37);
    let live_session = |rng: &mut Rng| {
        let sid = session_id(rng, "wt2");
        let r = send_request(s.proxy.addr, &get(&format!("/app?wtd={sid}"))).unwrap();
        assert_eq!(r.status, 200);
    };
    live_session(&mut rng);
    let url = format!("http://{}/", admin_addr(&s.proxy));
    let mut page = Browser::open(browser, &url);
    let dom = |page: &mut Browser| {
        page.eval("document.body.innerHTML")
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    eventually("the page to draw both backends", || {
        let dom = dom(&mut page);
        let (wt1, wt2) = (row(&dom, "wt1")?, row(&dom, "wt2")?);
        (wt1.contains(">ready<") && wt2.contains(">1</td>")).then_some(())
    });
    page.eval("window.wtgateTestMark = 'loaded once'");

    s.proxy.engine().set_admin("wt1", Admin::Drain).unwrap();
    live_session(&mut rng);
    let (wt1, wt2) = eventually(
        "the open page to show the drain and the second session",
        || {
            let dom = dom(&mut page);
            let (wt1, wt2) = (row(&dom, "wt1")?, row(&dom, "wt2")?);
            (wt1.contains(">drain<") && wt2.contains(">2</td>")).then_some((wt1, wt2))
        },
    );
    assert!(wt1.contains(">up<"), "{wt1}");
    assert!(wt2.contains(">ready<"), "{wt2}");
    assert_eq!(
        page.eval("window.wtgateTestMark"),
        Value::from("loaded once"),
        "the page was reloaded instead of updated in place"
    );
}
