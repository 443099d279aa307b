//! Hot reload: SIGHUP and `POST /reload` put a re-read config in force on every shard while
//! WebSocket tunnels and keep-alive clients stay open; a broken file changes nothing; a removed
//! backend keeps its open tunnels; address, weight and check changes take effect.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use wtgate::config::Config;
use wtgate::config::reload::ReloadError;
use wtgate::engine::AdminError;
use wtgate::health::Admin;
use wtgate_demo::ws::OP_TEXT;

use crate::common::*;

const WS: Behavior = Behavior::WsEcho {
    reject: false,
    close_after: None,
    greet: false,
};

/// A config file: the listener, the admin listener, two shards, these backends, and `more`.
fn config_file(listen: u16, admin: u16, backends: &[&TestBackend], more: &str) -> String {
    let mut text = format!(
        "threads = 2\npin = false\n[[listen]]\naddress = \"127.0.0.1:{listen}\"\n\
         [admin]\nlisten = \"127.0.0.1:{admin}\"\n"
    );
    for b in backends {
        let (prefix, addr) = (&b.name, b.addr);
        text.push_str(&format!(
            "[[backend]]\nprefix = \"{prefix}\"\naddress = \"{addr}\"\n"
        ));
    }
    text + more
}

/// One request to the admin listener, as JSON with its status.
fn admin(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    // The admin listener serves only requests addressed to it, and state changes that say so.
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nX-Wtgate-Admin: 1\r\n{auth}Content-Length: 0\r\n\r\n"
    );
    let r = send_request(addr, raw.as_bytes()).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let v = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body_str()));
    (r.status, v)
}

/// The body of `GET path` from the admin listener, addressed to it.
fn admin_get(addr: SocketAddr, path: &str) -> String {
    let raw = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    send_request(addr, raw.as_bytes()).unwrap().body_str()
}

/// The prefixes `/stats` lists.
fn listed(stats: &Value) -> Vec<String> {
    let backends = stats["backends"].as_array().unwrap();
    backends
        .iter()
        .map(|b| b["backend"].as_str().unwrap().to_string())
        .collect()
}

/// Sends `n` requests for `target` on one keep-alive connection; how many each backend answered.
fn spread(proxy: SocketAddr, n: usize, target: &str) -> HashMap<String, usize> {
    let mut w = Wire::connect(proxy);
    let mut seen = HashMap::new();
    for i in 0..n {
        w.write_all(&get(&format!("{target}&i={i}"))).unwrap();
        let r = w.read_response(false).unwrap();
        assert_eq!(r.status, 200, "{}", r.body_str());
        *seen.entry(r.backend().to_string()).or_default() += 1;
    }
    seen
}

fn counts(pairs: &[(&str, usize)]) -> HashMap<String, usize> {
    pairs.iter().map(|(p, n)| (p.to_string(), *n)).collect()
}

/// Sends a text frame on an open tunnel and expects it back.
fn echoes(w: &mut Wire, text: &str) {
    w.write_all(&client_frame(OP_TEXT, text.as_bytes(), [1, 2, 3, 4]))
        .unwrap();
    let (_, _, payload) = ws_recv(w).unwrap().expect("an echo");
    assert_eq!(payload, text.as_bytes());
}

/// A keep-alive client's next request on its open connection, answered by `backend`.
fn served(w: &mut Wire, target: &str, backend: &str) {
    w.write_all(&get(target)).unwrap();
    let r = w
        .read_response(false)
        .expect("the keep-alive connection serves on");
    assert_eq!((r.status, r.backend()), (200, backend), "{}", r.body_str());
}

/// The test: two backends, WebSocket tunnels and keep-alive clients open to both, then
/// the file gains wt3 and wtgate gets SIGHUP. Once every shard applied it (`reloads` in
/// /stats), the tunnels still echo, the keep-alive connections still serve their sessions, and
/// new sessions are round-robined over all three.
#[test]
fn sighup_adds_a_backend_while_tunnels_and_keepalive_clients_stay_open() {
    let (b1, b2, b3) = (
        TestBackend::start("wt1", WS),
        TestBackend::start("wt2", WS),
        TestBackend::start("wt3", WS),
    );
    let (listen, admin_port) = (free_port(), free_port());
    let file = TempConfig::new(
        "reload-sighup",
        &config_file(listen, admin_port, &[&b1, &b2], ""),
    );
    let wtgate = Serving::start(&["--config".to_string(), file.path().to_string()]);
    let proxy: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let (s1, s2) = ("wt1AAAAAAAAAAAAAAAA", "wt2BBBBBBBBBBBBBBBB");
    let (mut t1, _) = ws_connect(proxy, &format!("/app?wtd={s1}&request=ws"));
    let (mut t2, _) = ws_connect(proxy, &format!("/app?wtd={s2}&request=ws"));
    echoes(&mut t1, "before 1");
    echoes(&mut t2, "before 2");
    let (mut k1, mut k2) = (Wire::connect(proxy), Wire::connect(proxy));
    served(&mut k1, &format!("/app?wtd={s1}&n=1"), "wt1");
    served(&mut k2, &format!("/app?wtd={s2}&n=1"), "wt2");

    file.write(&config_file(listen, admin_port, &[&b1, &b2, &b3], ""));
    wtgate.signal("-HUP");
    let line = wtgate.wait_for_line("wtgate: reloaded:");
    assert!(line.ends_with("reloaded: added wt3"), "{line}");
    let stats = eventually("the reload in force on every shard", || {
        let (_, stats) = admin(admin_addr, "GET", "/stats", None);
        (stats["reloads"] == 1).then_some(stats)
    });
    assert_eq!(listed(&stats), ["wt1", "wt2", "wt3"]);

    echoes(&mut t1, "after 1");
    echoes(&mut t2, "after 2");
    served(&mut k1, &format!("/app?wtd={s1}&n=2"), "wt1");
    served(&mut k2, &format!("/app?wtd={s2}&n=2"), "wt2");
    // One connection is one shard, whose round-robin now takes turns over three.
    let seen = spread(proxy, 6, "/new?x=1");
    assert_eq!(seen, counts(&[("wt1", 2), ("wt2", 2), ("wt3", 2)]));
    let (mut t3, _) = ws_connect(proxy, "/app?wtd=wt3CCCCCCCCCCCCCCCC&request=ws");
    echoes(&mut t3, "to the new one");

    // A broken file: refused, and everything goes on as it was.
    file.write("[[backend]]\nprefix = \"wt4\"\n");
    wtgate.signal("-HUP");
    let line = wtgate.wait_for_line("reload refused");
    assert!(line.contains("backend[0]: a backend needs"), "{line}");
    echoes(&mut t1, "still 1");
    echoes(&mut t3, "still 3");
    served(&mut k2, &format!("/app?wtd={s2}&n=3"), "wt2");
    let seen = spread(proxy, 3, "/new?x=2");
    assert_eq!(seen, counts(&[("wt1", 1), ("wt2", 1), ("wt3", 1)]));
    let (_, stats) = admin(admin_addr, "GET", "/stats", None);
    assert_eq!(listed(&stats), ["wt1", "wt2", "wt3"]);
    let reloads = (stats["reloads"].as_u64(), stats["reloads_refused"].as_u64());
    assert_eq!(reloads, (Some(1), Some(1)));
    let failures = stats["failures"].as_object().unwrap();
    assert!(failures.values().all(|n| n == 0), "{stats}");
}

/// A file that does not validate, by SIGHUP and by `POST /reload`: refused with its line and key,
/// nothing changes. Then a good one: the flags given at start still win over the file.
#[test]
fn a_broken_file_changes_nothing_and_flags_still_win_over_the_file() {
    let (b1, b2, b3) = (
        TestBackend::start("wt1", Behavior::Normal),
        TestBackend::start("wt2", Behavior::Normal),
        TestBackend::start("wt3", Behavior::Normal),
    );
    let (listen, admin_port) = (free_port(), free_port());
    let health = "[health]\ninterval = \"2s\"\n";
    let good = config_file(listen, admin_port, &[&b1, &b2], health);
    let file = TempConfig::new("reload-broken", &good);
    let args = [
        "--config",
        file.path(),
        "--check-interval",
        "1s",
        "--threads",
        "1",
    ];
    let wtgate = Serving::start(&args.map(String::from));
    let proxy: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();

    let broken = format!("{good}[[backend]]\nprefix = \"wt3\"\naddress = \"127.0.0.1\"\n");
    let line = broken.lines().count();
    file.write(&broken);
    wtgate.signal("-HUP");
    let logged = wtgate.wait_for_line("reload refused");
    let want = format!(":{line}: backend[2].address: '127.0.0.1' has no port");
    assert!(
        logged.contains("the running config stays") && logged.contains(&want),
        "{logged}"
    );
    let (status, answer) = admin(admin_addr, "POST", "/reload", None);
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains(&want),
        "{answer}"
    );
    let (_, stats) = admin(admin_addr, "GET", "/stats", None);
    assert_eq!(
        (stats["reloads"].as_u64(), stats["reloads_refused"].as_u64()),
        (Some(0), Some(2))
    );
    assert_eq!(listed(&stats), ["wt1", "wt2"]);
    let seen = spread(proxy, 4, "/new?x=1");
    assert_eq!(seen, counts(&[("wt1", 2), ("wt2", 2)]));

    // The file's interval changes, but --check-interval wins, as at start; its rise applies.
    let health = "[health]\ninterval = \"3s\"\nrise = 3\n";
    file.write(&config_file(listen, admin_port, &[&b1, &b2, &b3], health));
    let (status, answer) = admin(admin_addr, "POST", "/reload", None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["added"], serde_json::json!(["wt3"]), "{answer}");
    assert_eq!(
        answer["settings"],
        serde_json::json!(["health.rise"]),
        "{answer}"
    );
    assert_eq!(answer["generation"], 1, "{answer}");
    wtgate.wait_for_line("reloaded: added wt3; applied health.rise");
    let seen = spread(proxy, 3, "/new?x=2");
    assert_eq!(seen, counts(&[("wt1", 1), ("wt2", 1), ("wt3", 1)]));
}

/// A removed backend's open tunnel runs on until it ends; its sessions' requests and every new
/// session go to the others; it is shown as removed while the tunnel is open, then not at all.
#[test]
fn a_removed_backend_keeps_its_tunnel_and_its_sessions_go_elsewhere() {
    let (b1, b2) = (TestBackend::start("wt1", WS), TestBackend::start("wt2", WS));
    let admin_on = |c: &mut Config| c.admin = Some("127.0.0.1:0".parse().unwrap());
    let proxy = start_proxy(&[b1.spec(), b2.spec()], admin_on);
    let handle = proxy.engine().handle();
    let admin_addr = proxy.engine().admin_addr().unwrap();
    let sid = "wt2BBBBBBBBBBBBBBBB";
    let (mut tunnel, _) = ws_connect(proxy.addr, &format!("/app?wtd={sid}&request=ws"));
    echoes(&mut tunnel, "before");
    let requests_before = b2.request_count();

    let only_wt1 = proxy_config(&[b1.spec()], admin_on);
    let done = handle.reload_with(only_wt1).unwrap();
    assert_eq!(done.changes.removed, ["wt2"]);
    assert_eq!(done.pending_shards, 0);
    echoes(&mut tunnel, "after");
    let owner = format!("/app?wtd={sid}");
    assert_eq!(spread(proxy.addr, 3, &owner), counts(&[("wt1", 3)]));
    assert_eq!(spread(proxy.addr, 3, "/new?x=1"), counts(&[("wt1", 3)]));
    assert_eq!(
        b2.request_count(),
        requests_before,
        "nothing new reached wt2"
    );
    assert_eq!(
        proxy.engine().set_admin("wt2", Admin::Drain),
        Err(AdminError::UnknownPrefix("wt2".into()))
    );
    let (_, stats) = admin(admin_addr, "GET", "/stats", None);
    let wt2 = &stats["backends"][1];
    assert_eq!(
        (&wt2["backend"], &wt2["removed"], &wt2["tunnels"]),
        (&"wt2".into(), &true.into(), &1.into())
    );
    assert_eq!(
        wt2["affinity_misses"], 3,
        "its sessions were redispatched: {wt2}"
    );
    let metrics = admin_get(admin_addr, "/metrics");
    assert!(
        metrics.contains("wtgate_backend_removed{backend=\"wt2\"} 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("wtgate_reloads_total 1\n"), "{metrics}");

    drop(tunnel);
    eventually("the removed backend gone from /stats once idle", || {
        let (_, stats) = admin(admin_addr, "GET", "/stats", None);
        (listed(&stats) == ["wt1"]).then_some(())
    });
}

/// A backend moved to another address gets the new sessions there, none at the old one — not
/// even over the connection of a request that was under way at the old address during the
/// reload, which completes there; a new weight shapes the round-robin at once.
#[test]
fn an_address_change_and_a_new_weight_take_effect() {
    // Long enough for the reload to be in force on the shard while the request is under way.
    let slow = Behavior::Slow(std::time::Duration::from_secs(1));
    let (b1, old, new) = (
        TestBackend::start("wt1", Behavior::Normal),
        TestBackend::start("wt2-old", slow),
        TestBackend::start("wt2-new", Behavior::Normal),
    );
    let proxy = start_proxy(&[b1.spec(), ("wt2", old.addr)], |_| {});
    assert_eq!(
        spread(proxy.addr, 4, "/new?x=1"),
        counts(&[("wt1", 2), ("wt2-old", 2)])
    );
    let sid = "wt2CCCCCCCCCCCCCCCC";
    let addr = proxy.addr;
    let under_way = std::thread::spawn(move || spread(addr, 1, &format!("/app?wtd={sid}")));
    eventually("a request under way at the old address", || {
        (old.request_count() == 3).then_some(())
    });
    let mut moved = proxy_config(&[b1.spec(), ("wt2", new.addr)], |_| {});
    moved.backends[0].weight = 3;
    let done = proxy.engine().handle().reload_with(moved).unwrap();
    assert_eq!(
        done.changes.changed,
        [
            ("wt1".to_string(), vec!["weight 1 -> 3".to_string()]),
            (
                "wt2".to_string(),
                vec![format!("address {} -> {}", old.addr, new.addr)]
            ),
        ]
    );
    assert_eq!(under_way.join().unwrap(), counts(&[("wt2-old", 1)]));
    assert_eq!(
        spread(proxy.addr, 8, "/new?x=2"),
        counts(&[("wt1", 6), ("wt2-new", 2)])
    );
    assert_eq!(
        spread(proxy.addr, 2, &format!("/app?wtd={sid}")),
        counts(&[("wt2-new", 2)])
    );
    assert_eq!(
        old.request_count(),
        3,
        "nothing more went to the old address"
    );
    // Counted as each exchange ends, just after its client has the answer.
    eventually("wt2's counters carried on: 7 requests", || {
        let requests = proxy.engine().stats().backend("wt2")?.requests;
        (requests == 7).then_some(())
    });
}

/// A backend added by a reload is checked from then on (here: it is down, so it gets nothing);
/// a reload moving it to a live address restarts its checks, which bring it up.
#[test]
fn a_new_backends_checks_start_and_follow_its_address() {
    let (b1, b3) = (
        TestBackend::start("wt1", Behavior::Normal),
        TestBackend::start("wt3", Behavior::Normal),
    );
    let fast = |c: &mut Config| {
        c.threads = 2;
        c.pin = false;
        c.check_interval = std::time::Duration::from_millis(20);
        (c.rise, c.fall) = (1, 1);
    };
    let proxy = start_proxy(&[b1.spec()], fast);
    let handle = proxy.engine().handle();
    let down = closed_port();
    handle
        .reload_with(proxy_config(&[b1.spec(), ("wt3", down)], fast))
        .unwrap();
    eventually("wt3 down on every shard", || {
        let up = proxy.engine().stats().backend("wt3")?.up_on_shards;
        (up == 0).then_some(())
    });
    assert_eq!(spread(proxy.addr, 4, "/new?x=1"), counts(&[("wt1", 4)]));
    handle
        .reload_with(proxy_config(&[b1.spec(), b3.spec()], fast))
        .unwrap();
    eventually("wt3 serving at its new address", || {
        let seen = spread(proxy.addr, 2, "/new?x=2");
        (seen == counts(&[("wt1", 1), ("wt3", 1)])).then_some(())
    });
    assert_eq!(
        proxy.engine().stats().backend("wt3").unwrap().up_on_shards,
        2
    );
}

/// `POST /reload` needs the token and a POST; an engine started without a config file has
/// nothing to reload. None of these changes anything.
#[test]
fn reload_through_the_api_needs_the_token_a_post_and_a_config_file() {
    let s = start_pair(|c| {
        c.admin = Some("127.0.0.1:0".parse().unwrap());
        c.admin_token = Some("s3cret".into());
    });
    let admin_addr = s.proxy.engine().admin_addr().unwrap();
    for token in [None, Some("wrong")] {
        let (status, answer) = admin(admin_addr, "POST", "/reload", token);
        assert_eq!(status, 401, "{answer}");
    }
    let (status, answer) = admin(admin_addr, "GET", "/reload", Some("s3cret"));
    assert_eq!((status, &answer["error"]), (405, &"use POST here".into()));
    let (status, answer) = admin(admin_addr, "POST", "/reload", Some("s3cret"));
    assert_eq!(status, 409, "{answer}");
    let why = answer["error"].as_str().unwrap();
    assert!(why.contains("started without --config"), "{why}");
    let handle = s.proxy.engine().handle();
    assert_eq!(handle.reload(), Err(ReloadError::NoSource));
    assert_eq!(handle.reloads(), (0, 2));
    assert_eq!(handle.generation().number, 0);
    // An invalid config given to the engine directly is refused as a file's would be.
    let mut bad = handle.config().as_ref().clone();
    bad.backends.clear();
    match handle.reload_with(bad) {
        Err(ReloadError::Invalid(e)) => assert!(e[0].contains("no backends"), "{e:?}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(handle.generation().number, 0);
    assert_eq!(handle.config().backends.len(), 2);
}

/// Without --config, SIGHUP is refused with a line saying why, and wtgate serves on (SIGHUP's
/// default would have killed it).
#[test]
fn sighup_without_a_config_file_is_refused_and_wtgate_serves_on() {
    let b1 = TestBackend::start("wt1", Behavior::Normal);
    let listen = free_port();
    let wtgate = Serving::start(&[
        "--threads".into(),
        "1".into(),
        "--no-pin".into(),
        "--listen".into(),
        format!("127.0.0.1:{listen}"),
        "--backend".into(),
        format!("wt1={}", b1.addr),
    ]);
    wtgate.signal("-HUP");
    let line = wtgate.wait_for_line("reload refused");
    assert!(
        line.ends_with("nothing to reload: wtgate was started without --config"),
        "{line}"
    );
    let proxy: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    assert_eq!(spread(proxy, 1, "/new?x=1"), counts(&[("wt1", 1)]));
}

/// `wtgate admin reload`: says what changed (exit 0), or every error of a broken file (exit 1,
/// nothing changes).
#[test]
fn the_admin_command_reloads_and_reports_a_broken_file() {
    let (b1, b2) = (
        TestBackend::start("wt1", Behavior::Normal),
        TestBackend::start("wt2", Behavior::Normal),
    );
    let (listen, admin_port) = (free_port(), free_port());
    let good = config_file(listen, admin_port, &[&b1], "");
    let file = TempConfig::new("reload-admin-command", &good);
    let _wtgate = Serving::start(&["--config", file.path(), "--threads", "1"]);
    let url = format!("http://127.0.0.1:{admin_port}");
    let reload = || {
        run_wtgate(
            &["admin", "--url", &url, "reload"],
            &[],
            Duration::from_secs(20),
        )
    };

    let broken = format!("{good}[[backend]]\nprefix = \"wt2\"\naddress = \"127.0.0.1\"\n");
    file.write(&broken);
    let out = reload();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let want = format!(
        ":{}: backend[1].address: '127.0.0.1' has no port",
        broken.lines().count()
    );
    assert!(
        text(&out).contains("reload refused, the running config stays")
            && text(&out).contains(&want),
        "{}",
        text(&out)
    );

    file.write(&config_file(listen, admin_port, &[&b1, &b2], ""));
    let out = reload();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        text(&out).contains("reloaded (generation 1): added wt2"),
        "{}",
        text(&out)
    );
    let proxy: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    assert_eq!(
        spread(proxy, 2, "/new?x=1"),
        counts(&[("wt1", 1), ("wt2", 1)])
    );
}

/// A GET for `target` that says it was forwarded for `ip` already.
fn get_forwarded_for(target: &str, ip: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: {ip}\r\n\r\n").into_bytes()
}

/// The proxy-side settings are live: after a reload that shortens the server timeout, stops
/// reusing backend connections and trusts the client's address as a proxy, the next requests of a
/// keep-alive connection opened before it get a 504 from a backend slower than the new timeout
/// (200 before), a backend connection of their own each (pooled before), and their
/// X-Forwarded-For kept and appended to (replaced before).
#[test]
fn a_reload_applies_timeouts_reuse_and_trust_to_the_next_requests() {
    let slow = Behavior::Slow(Duration::from_millis(800));
    let (b1, b2) = (
        TestBackend::start("wt1", Behavior::Normal),
        TestBackend::start("wt2", slow),
    );
    let proxy = start_proxy(&[b1.spec(), b2.spec()], |_| {});
    let (to_wt1, to_wt2) = (
        "/app?wtd=wt1AAAAAAAAAAAAAAAA",
        "/app?wtd=wt2BBBBBBBBBBBBBBBB",
    );
    let mut w = Wire::connect(proxy.addr);
    let mut ask = |raw: &[u8]| {
        w.write_all(raw).unwrap();
        w.read_response(false).unwrap()
    };
    for _ in 0..2 {
        let r = ask(&get_forwarded_for(to_wt1, "192.0.2.9"));
        assert_eq!((r.status, r.backend()), (200, "wt1"), "{}", r.body_str());
    }
    assert_eq!(ask(&get(to_wt2)).status, 200, "slower than 60 s? no");
    let seen = b1.requests();
    let before: Vec<_> = seen.iter().map(|r| r.header("X-Forwarded-For")).collect();
    assert_eq!(
        before,
        [Some("127.0.0.1"); 2],
        "an untrusted client's is replaced"
    );
    assert_eq!(
        seen[0].conn, seen[1].conn,
        "the second went on the pooled connection"
    );

    let live = |c: &mut Config| {
        c.timeouts.server = Duration::from_millis(100);
        c.reuse = wtgate::config::Reuse::Never;
        c.trusted_proxies = vec![wtgate::config::parse_cidr("127.0.0.0/8").unwrap()];
    };
    let done = proxy
        .engine()
        .handle()
        .reload_with(proxy_config(&[b1.spec(), b2.spec()], live))
        .unwrap();
    let applied = ["pool.reuse", "timeouts.server", "forwarded.trusted"];
    assert_eq!(done.changes.settings, applied, "{:?}", done.changes);
    assert!(done.changes.need_restart.is_empty(), "{:?}", done.changes);
    assert_eq!(done.pending_shards, 0);

    for _ in 0..2 {
        let r = ask(&get_forwarded_for(to_wt1, "192.0.2.9"));
        assert_eq!((r.status, r.backend()), (200, "wt1"), "{}", r.body_str());
    }
    let seen = b1.requests();
    let after: Vec<_> = seen[2..]
        .iter()
        .map(|r| r.header("X-Forwarded-For"))
        .collect();
    assert_eq!(
        after,
        [Some("192.0.2.9, 127.0.0.1"); 2],
        "a trusted proxy's is kept"
    );
    let conns: Vec<_> = seen.iter().map(|r| r.conn).collect();
    assert!(
        conns[2] != conns[1] && conns[3] != conns[2],
        "no reuse after the reload: {conns:?}"
    );
    let r = ask(&get(to_wt2));
    assert_eq!(r.status, 504, "{}", r.body_str());
}

/// Through the file and `POST /reload`: the proxy-side settings are listed as applied, a
/// restart-only one (maxconn) as kept. A tunnel opened after the reload takes the new
/// `timeouts.tunnel` and is closed once quiet that long; one opened before keeps its own.
#[test]
fn post_reload_applies_the_proxy_side_settings_and_new_tunnels_take_them() {
    let b1 = TestBackend::start("wt1", WS);
    let (listen, admin_port) = (free_port(), free_port());
    let file = TempConfig::new(
        "reload-proxy-side",
        &config_file(listen, admin_port, &[&b1], ""),
    );
    let _wtgate = Serving::start(&["--config", file.path()]);
    let proxy: SocketAddr = format!("127.0.0.1:{listen}").parse().unwrap();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
    let target = "/app?wtd=wt1AAAAAAAAAAAAAAAA&request=ws";
    let (mut before, _) = ws_connect(proxy, target);
    echoes(&mut before, "before");

    let more = "[timeouts]\ntunnel = \"1s\"\nconnect = \"2s\"\n[limits]\nretries = 2\n\
                maxconn = 100\n[pool]\nreuse = \"always\"\n[forwarded]\n\
                trusted = [\"127.0.0.1\"]\n";
    file.write(&config_file(listen, admin_port, &[&b1], more));
    let (status, answer) = admin(admin_addr, "POST", "/reload", None);
    assert_eq!(status, 200, "{answer}");
    let applied = [
        "pool.reuse",
        "timeouts.connect",
        "timeouts.tunnel",
        "limits.retries",
        "forwarded.trusted",
    ];
    assert_eq!(answer["settings"], serde_json::json!(applied), "{answer}");
    let kept = serde_json::json!(["limits.maxconn"]);
    assert_eq!(answer["need_restart"], kept, "{answer}");
    assert_eq!(answer["pending_shards"], 0, "{answer}");

    let (mut after, _) = ws_connect(proxy, target);
    echoes(&mut after, "after");
    after
        .expect_closed()
        .expect("a tunnel quiet for its new timeout is closed");
    echoes(&mut before, "still open");
}
