//! Session affinity by the exact `wtd` query parameter, round-robin for the rest, and the headers
//! the proxy adds or drops on the way (docs/design.md "Routing", "HTTP/1.1").

use std::collections::{BTreeMap, HashMap};

use crate::common::*;
use wtgate::config::Config;

const PREFIXES: [&str; 3] = ["wt1", "wt2", "wt10"];

/// The spec's routing rule, written independently of `src/route.rs`: the first query parameter
/// named exactly `wtd`; its owner is the prefix `p` with `value.starts_with(p)` and
/// `value.len() == p.len() + 16`.
fn expected_owner(target: &str) -> Option<&'static str> {
    let v = query_param(target, "wtd")?;
    PREFIXES
        .iter()
        .copied()
        .find(|p| v.starts_with(p) && v.len() == p.len() + 16)
}

/// One Wt-like request of kind `k`; returns (method, target, body).
fn make_request(rng: &mut Rng, k: u64) -> (&'static str, String, Vec<u8>) {
    let wt1 = session_id(rng, "wt1");
    let wt2 = session_id(rng, "wt2");
    let wt10 = session_id(rng, "wt10");
    let get = |t: String| ("GET", t, Vec::new());
    match k {
        // Owned, wtd first (what Wt sends).
        0 => get(format!("/?wtd={wt1}&request=style&page=1")),
        1 => get(format!(
            "/?wtd={wt2}&sid=464786151&webGL=true&scrW=900&scrH=500&tz=0&tzS=UTC&deployPath=%2F&request=script&rand=4260724486"
        )),
        2 => get(format!("/?wtd={wt10}&request=ws")),
        // A wt1 id whose first id char is '0': it starts with "wt10" but is 19 long → wt1.
        3 => get(format!("/?wtd=wt10{}&request=style&page=1", rng.alnum(15))),
        // No wtd: bootstrap and static files.
        4 => get("/".to_string()),
        5 => get("/resources/themes/default/wt.css".to_string()),
        6 => get("/favicon.ico".to_string()),
        // Unknown prefix.
        7 => get(format!("/?wtd=wt3{}", rng.alnum(16))),
        // wtd not the first parameter.
        8 => get(format!("/?a=1&wtd={wt2}")),
        9 => get(format!(
            "/app/file?request=resource&wtd={wt10}&resource=r1&ver=2"
        )),
        // Names that merely contain "wtd" are not wtd.
        10 => get(format!("/?foo_wtd={wt1}")),
        11 => get(format!("/?foo_wtd={wt1}&wtd={wt2}")),
        12 => get(format!("/?x=wtd={wt1}")),
        13 => get(format!("/?WTD={wt1}")),
        14 => get(format!("/wtd={wt1}/x")),
        // Wrong lengths: no affinity (unless the length fits another prefix, as the rule says).
        15 => get(format!("/?wtd=wt1{}", rng.alnum(15))),
        16 => get(format!("/?wtd=wt2{}", rng.alnum(17))),
        17 => get(format!("/?wtd=wt1{}&request=style", rng.alnum(17))),
        18 => get(format!("/?wtd=wt10{}", rng.alnum(17))),
        19 => get("/?wtd=".to_string()),
        20 => get("/?wtd&x=1".to_string()),
        // First wtd wins.
        21 => get(format!("/?wtd={wt2}&wtd={wt1}")),
        // POST jsupdate: wtd in the URL only.
        22 => (
            "POST",
            format!("/?wtd={wt1}"),
            b"request=jsupdate&ackId=464786152&pageId=1&Wt-params=&signal=load&name=&focus="
                .to_vec(),
        ),
        // POST with wtd only in the body: no affinity.
        23 => (
            "POST",
            "/".to_string(),
            format!("wtd={wt2}&request=jsupdate&ackId=1").into_bytes(),
        ),
        _ => get(format!("/?wtd={wt2}&request=style&page=1")),
    }
}

fn raw_request(method: &str, target: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nConnection: keep-alive\r\n\
         User-Agent: Mozilla/5.0 HeadlessChrome/156.0.0.0\r\nAccept: */*\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\nCookie: WtTestCookie=ok\r\n"
    )
    .into_bytes();
    if method == "POST" {
        out.extend_from_slice(
            format!(
                "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
                body.len()
            )
            .as_bytes(),
        );
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

fn with_seq(target: &str, seq: usize) -> String {
    if target.contains('?') {
        format!("{target}&seq={seq}")
    } else {
        format!("{target}?seq={seq}")
    }
}

/// 1 000 requests over 4 keep-alive connections (one after another, one request at a time, one
/// shard): every owned request lands on its owner; the rest is spread evenly.
///
/// Why ±1: with a single shard and a single client waiting for each answer, the one round-robin
/// state sees exactly the session-less requests, in order (docs/design.md "Routing" rule 4: only requests without an
/// owner take part; all backends stay up). Weighted round-robin over three equal weights is a
/// strict rotation, so the per-backend counts differ by at most one, whatever the starting point.
#[test]
fn thousand_requests_land_on_their_owner_and_the_rest_is_spread_evenly() {
    let backends: Vec<TestBackend> = PREFIXES
        .iter()
        .map(|p| TestBackend::start(p, Behavior::Normal))
        .collect();
    let specs: Vec<_> = backends.iter().map(|b| b.spec()).collect();
    let proxy = start_proxy(&specs, |_| {});

    let mut rng = Rng::new(1);
    let mut expected: Vec<(String, String, Option<&str>)> = Vec::new(); // method, target, owner
    let mut rr_counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut answered_by: Vec<String> = Vec::new();
    let mut seq = 0usize;
    let mut kinds_seen = [0usize; 25];
    for _conn in 0..4 {
        let mut w = Wire::connect(proxy.addr);
        for _ in 0..250 {
            // Cycle through every kind, then random ones.
            let k = if seq < 25 {
                seq as u64
            } else {
                rng.range(0, 24)
            };
            kinds_seen[k as usize] += 1;
            let (method, target, body) = make_request(&mut rng, k);
            let target = with_seq(&target, seq);
            let owner = expected_owner(&target);
            w.write_all(&raw_request(method, &target, &body)).unwrap();
            let r = w
                .read_response(false)
                .unwrap_or_else(|e| panic!("request #{seq} {method} {target}: {e}"));
            assert_eq!(
                r.status,
                200,
                "#{seq} {target}: {:?} {}",
                r.head,
                r.body_str()
            );
            let got = r.backend().to_string();
            assert_eq!(
                r.body_str(),
                format!("{got} {method} {target}"),
                "#{seq}: the backend must see the request-target unchanged"
            );
            match owner {
                Some(o) => assert_eq!(got, o, "#{seq} {method} {target} went to the wrong backend"),
                None => *rr_counts.entry(got.clone()).or_default() += 1,
            }
            answered_by.push(got);
            expected.push((method.to_string(), target, owner));
            seq += 1;
        }
    }
    assert_eq!(seq, 1000);

    // The backends' own records agree: each request reached exactly one backend, the one that
    // answered it, exactly once.
    let mut seen_at: HashMap<String, Vec<&str>> = HashMap::new();
    let recs: Vec<(&str, Vec<SeenRequest>)> = backends
        .iter()
        .map(|b| (b.name.as_str(), b.requests()))
        .collect();
    for (name, reqs) in &recs {
        for r in reqs {
            seen_at.entry(r.target.clone()).or_default().push(name);
        }
    }
    for (i, (method, target, _)) in expected.iter().enumerate() {
        let at = seen_at.get(target).cloned().unwrap_or_default();
        assert_eq!(
            at,
            vec![answered_by[i].as_str()],
            "#{i} {method} {target}: seen by backends {at:?}, answered by {}",
            answered_by[i]
        );
    }
    let total: usize = recs.iter().map(|(_, r)| r.len()).sum();
    assert_eq!(total, 1000, "backends saw {total} requests for 1000 sent");
    // POST bodies arrived whole.
    for (_, reqs) in &recs {
        for r in reqs.iter().filter(|r| r.method == "POST") {
            let cl: usize = r.header("Content-Length").unwrap().parse().unwrap();
            assert_eq!(r.body_len, cl, "{}", r.target);
        }
    }

    // Round-robin spread.
    let rr_total: usize = rr_counts.values().sum();
    assert!(
        rr_total > 200,
        "test mix has too few session-less requests: {rr_total}"
    );
    let counts: Vec<usize> = PREFIXES
        .iter()
        .map(|p| rr_counts.get(*p).copied().unwrap_or(0))
        .collect();
    let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
    assert!(
        max - min <= 1,
        "round-robin uneven over equal weights: {rr_counts:?} ({rr_total} session-less requests)"
    );
}

/// The reference rule itself, on the cases the issue names (guards the test, not the proxy).
#[test]
fn reference_rule_sanity() {
    let id = "AbCdEfGhIjKlMnOp";
    assert_eq!(expected_owner(&format!("/?wtd=wt1{id}")), Some("wt1"));
    assert_eq!(expected_owner(&format!("/?wtd=wt10{id}")), Some("wt10"));
    assert_eq!(expected_owner("/?wtd=wt10bCdEfGhIjKlMnOp"), Some("wt1"));
    assert_eq!(expected_owner(&format!("/?foo_wtd=wt1{id}")), None);
    assert_eq!(expected_owner(&format!("/?a=1&wtd=wt2{id}")), Some("wt2"));
    assert_eq!(expected_owner(&format!("/?wtd=wt1{id}X")), None);
    assert_eq!(expected_owner(&format!("/?wtd=wt3{id}")), None);
    assert_eq!(expected_owner("/"), None);
}

/// Weighted round-robin: weights 3 and 1 over 400 session-less requests → 300 / 100 (±1).
#[test]
fn weights_shape_the_round_robin() {
    let a = TestBackend::start("wt1", Behavior::Normal);
    let b = TestBackend::start("wt2", Behavior::Normal);
    let mut cfg_backends = Vec::new();
    cfg_backends
        .push(wtgate::config::BackendConfig::parse(&format!("wt1={},weight=3", a.addr)).unwrap());
    cfg_backends
        .push(wtgate::config::BackendConfig::parse(&format!("wt2={},weight=1", b.addr)).unwrap());
    let proxy = start_proxy(&[], move |c| c.backends = cfg_backends);
    let mut w = Wire::connect(proxy.addr);
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..400 {
        w.write_all(&get(&format!("/?seq={i}"))).unwrap();
        let r = w.read_response(false).unwrap();
        assert_eq!(r.status, 200);
        *counts.entry(r.backend().to_string()).or_default() += 1;
    }
    let n1 = counts.get("wt1").copied().unwrap_or(0);
    let n2 = counts.get("wt2").copied().unwrap_or(0);
    assert!(
        n1.abs_diff(300) <= 1 && n2.abs_diff(100) <= 1,
        "weights 3:1 gave {counts:?}"
    );
    assert_eq!(a.request_count() + b.request_count(), 400);
}

/// `X-Forwarded-For` is appended, `X-Forwarded-Proto` set; hop-by-hop headers are not forwarded,
/// end-to-end ones are.
#[test]
fn forwarded_headers_added_and_hop_by_hop_dropped() {
    let b = TestBackend::start("wt1", Behavior::Normal);
    // The test client is a trusted proxy here: its X-Forwarded-For is appended to.
    let proxy = start_proxy(&[b.spec()], |c| {
        c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()]
    });
    let mut w = Wire::connect(proxy.addr);

    w.write_all(b"GET /?n=1 HTTP/1.1\r\nHost: wt.example\r\n\r\n")
        .unwrap();
    assert_eq!(w.read_response(false).unwrap().status, 200);
    w.write_all(
        b"GET /?n=2 HTTP/1.1\r\nHost: wt.example\r\nX-Forwarded-For: 10.0.0.1\r\n\
          Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\nKeep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\nX-End: kept\r\n\r\n",
    )
    .unwrap();
    assert_eq!(w.read_response(false).unwrap().status, 200);

    let reqs = b.requests();
    assert_eq!(reqs.len(), 2);
    let xff = |r: &SeenRequest| {
        r.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("X-Forwarded-For"))
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let xfp = |r: &SeenRequest| {
        r.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("X-Forwarded-Proto"))
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(xff(&reqs[0]), "127.0.0.1", "{:?}", reqs[0].headers);
    assert_eq!(
        xfp(&reqs[0]),
        vec!["http".to_string()],
        "{:?}",
        reqs[0].headers
    );
    assert_eq!(
        xff(&reqs[1]),
        "10.0.0.1, 127.0.0.1",
        "{:?}",
        reqs[1].headers
    );
    assert_eq!(reqs[1].header("Host"), Some("wt.example"));
    assert_eq!(reqs[1].header("X-End"), Some("kept"));
    for hop in ["X-Hop", "Keep-Alive", "Proxy-Connection"] {
        assert_eq!(
            reqs[1].header(hop),
            None,
            "hop-by-hop {hop} forwarded: {:?}",
            reqs[1].headers
        );
    }
}

/// Fetches `raw` through a proxy set up by `tweak` and returns the X-Forwarded-For and
/// X-Forwarded-Proto values the backend saw (each copy, in order).
fn forwarded_seen(tweak: impl FnOnce(&mut Config), raw: &[u8]) -> (Vec<String>, Vec<String>) {
    let b = TestBackend::start("wt1", Behavior::Normal);
    let proxy = start_proxy(&[b.spec()], tweak);
    let mut w = Wire::connect(proxy.addr);
    w.write_all(raw).unwrap();
    assert_eq!(w.read_response(false).unwrap().status, 200);
    let reqs = b.requests();
    let values = |name: &str| -> Vec<String> {
        reqs[0]
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .collect()
    };
    (values("X-Forwarded-For"), values("X-Forwarded-Proto"))
}

const FORGED: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\n\
x-forwarded-proto: https\r\nX-FORWARDED-FOR: 7.7.7.7\r\n\r\n";

/// From a client that is not trusted, X-Forwarded-* are the proxy's own: a forged client address
/// or scheme never reaches the Wt server.
#[test]
fn an_untrusted_clients_forwarded_headers_are_replaced() {
    let (xff, xfp) = forwarded_seen(|_| {}, FORGED);
    assert_eq!((xff, xfp), (vec!["127.0.0.1".into()], vec!["http".into()]));
    // Trusting another network changes nothing for this client.
    let (xff, xfp) = forwarded_seen(
        |c| c.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap()],
        FORGED,
    );
    assert_eq!((xff, xfp), (vec!["127.0.0.1".into()], vec!["http".into()]));
}

/// Behind a trusted TLS terminator the scheme it reports (https) survives, and its client list is
/// appended to.
#[test]
fn a_trusted_proxys_forwarded_headers_are_kept_and_appended_to() {
    let (xff, xfp) = forwarded_seen(
        |c| c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()],
        FORGED,
    );
    assert_eq!(xff, vec!["6.6.6.6, 7.7.7.7, 127.0.0.1".to_string()]);
    assert_eq!(xfp, vec!["https".to_string()]);
}

/// A `proxy-protocol` listener takes the client's address (and, from a v2 SSL TLV, its scheme)
/// from the PROXY header that opens the connection; the rest is HTTP as usual.
#[test]
fn a_proxy_protocol_listener_takes_the_client_from_the_header() {
    let pp = |c: &mut Config| c.listen[0].proxy_protocol = true;
    let mut v1 = b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n".to_vec();
    v1.extend_from_slice(&get("/?pp=1"));
    let (xff, xfp) = forwarded_seen(pp, &v1);
    assert_eq!(
        (xff, xfp),
        (vec!["203.0.113.7".into()], vec!["http".into()])
    );

    // v2, PROXY over TCP/IPv6, with a PP2_TYPE_SSL TLV whose client bit says TLS.
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    v2.extend_from_slice(&[0x21, 0x21]);
    let ssl_tlv = [0x20, 0x00, 0x05, 0x01, 0, 0, 0, 0];
    v2.extend_from_slice(&((36 + ssl_tlv.len()) as u16).to_be_bytes());
    v2.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    v2.extend_from_slice(&51000u16.to_be_bytes());
    v2.extend_from_slice(&443u16.to_be_bytes());
    v2.extend_from_slice(&ssl_tlv);
    v2.extend_from_slice(&get("/?pp=2"));
    let (xff, xfp) = forwarded_seen(pp, &v2);
    assert_eq!(
        (xff, xfp),
        (vec!["2001:db8::7".into()], vec!["https".into()])
    );
}

/// A `proxy-protocol` listener closes a connection that does not open with a valid header, and
/// nothing reaches a backend.
#[test]
fn a_proxy_protocol_listener_refuses_a_connection_without_the_header() {
    let b = TestBackend::start("wt1", Behavior::Normal);
    let proxy = start_proxy(&[b.spec()], |c| c.listen[0].proxy_protocol = true);
    for raw in [
        get("/?plain=1"),
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n".to_vec(),
        b"PROXY TCP9 x\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
    ] {
        let mut w = Wire::connect(proxy.addr);
        w.write_all(&raw).unwrap();
        w.expect_closed()
            .unwrap_or_else(|e| panic!("{:?}: {e}", String::from_utf8_lossy(&raw)));
    }
    assert_eq!(b.bytes_received(), 0, "{}", b.received_preview());
}

/// `forwarded_headers = false` adds nothing.
#[test]
fn forwarded_headers_can_be_turned_off() {
    let b = TestBackend::start("wt1", Behavior::Normal);
    let proxy = start_proxy(&[b.spec()], |c| c.forwarded_headers = false);
    let r = send_request(proxy.addr, &get("/")).unwrap();
    assert_eq!(r.status, 200);
    let reqs = b.requests();
    assert_eq!(
        reqs[0].header("X-Forwarded-For"),
        None,
        "{:?}",
        reqs[0].headers
    );
    assert_eq!(
        reqs[0].header("X-Forwarded-Proto"),
        None,
        "{:?}",
        reqs[0].headers
    );
}

/// `session_id_length` is honoured: with 8, `wt1` + 8 chars is owned, `wt1` + 16 is not.
#[test]
fn session_id_length_is_configurable() {
    let a = TestBackend::start("wt1", Behavior::Normal);
    let b = TestBackend::start("wt2", Behavior::Normal);
    let proxy = start_proxy(&[a.spec(), b.spec()], |c| c.session_id_length = 8);
    let mut w = Wire::connect(proxy.addr);
    for i in 0..20 {
        w.write_all(&get(&format!("/?wtd=wt2abcdefgh&i={i}")))
            .unwrap();
        let r = w.read_response(false).unwrap();
        assert_eq!(r.backend(), "wt2", "wt2 + 8 chars must be owned by wt2");
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..20 {
        w.write_all(&get(&format!("/?wtd=wt2abcdefghijklmnop&i={i}")))
            .unwrap();
        let r = w.read_response(false).unwrap();
        *counts.entry(r.backend().to_string()).or_default() += 1;
    }
    let n1 = counts.get("wt1").copied().unwrap_or(0);
    assert!(
        n1.abs_diff(10) <= 1,
        "wt2 + 16 chars has no owner when ids are 8 long: {counts:?}"
    );
}

/// HTTP/1.0 without Host is fine (Host is only required on 1.1), and HEAD has no body.
#[test]
fn http10_without_host_and_head_requests() {
    let b = TestBackend::start("wt1", Behavior::Normal);
    let proxy = start_proxy(&[b.spec()], |_| {});
    let r = send_request(proxy.addr, b"GET /?v=10 HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(r.status, 200, "{:?} {}", r.head, r.body_str());
    assert_eq!(r.body_str(), "wt1 GET /?v=10");

    let mut w = Wire::connect(proxy.addr);
    w.write_all(b"HEAD /?h=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let r = w.read_response(true).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.body.is_empty());
    // If the proxy wrongly waited for (or sent) a body, this next exchange breaks.
    w.write_all(&get("/?after=head")).unwrap();
    let r = w.read_response(false).unwrap();
    assert_eq!(r.body_str(), "wt1 GET /?after=head");
}

/// A request written one byte per write (TCP_NODELAY, so mostly one byte per segment) is
/// reassembled and routed like any other; the body too.
#[test]
fn request_trickled_byte_by_byte() {
    let a = TestBackend::start("wt1", Behavior::Normal);
    let b = TestBackend::start("wt2", Behavior::Normal);
    let proxy = start_proxy(&[a.spec(), b.spec()], |_| {});
    let mut w = Wire::connect(proxy.addr);
    w.stream.set_nodelay(true).unwrap();
    let raw = b"POST /?wtd=wt2AbCdEfGhIjKlMnOp HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world";
    for byte in raw.iter() {
        w.write_all(std::slice::from_ref(byte)).unwrap();
    }
    let r = w.read_response(false).unwrap();
    assert_eq!(r.status, 200, "{:?}", r.head);
    assert_eq!(r.backend(), "wt2");
    assert_eq!(r.header("X-Req-Len"), Some("11"));
    assert_eq!(
        r.header("X-Req-Fnv"),
        Some(format!("{:016x}", fnv(b"hello world")).as_str())
    );
}

/// Two listen addresses: both serve.
#[test]
fn two_listen_addresses_both_serve() {
    let a = TestBackend::start("wt1", Behavior::Normal);
    let proxy_cfg = proxy_config(&[a.spec()], |c| {
        c.listen = vec![
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        ];
    });
    let engine = wtgate::engine::Engine::start(proxy_cfg).unwrap();
    let addrs = engine.local_addrs().to_vec();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0], addrs[1]);
    for addr in addrs {
        let r = send_request(addr, &get("/?l=1")).unwrap();
        assert_eq!(r.status, 200, "listener {addr}");
    }
    drop(engine);
}

/// With two shards, fresh connections (spread over both shards' listeners) still land on the
/// session's owner every time.
#[test]
fn affinity_holds_across_shards() {
    let backends: Vec<TestBackend> = PREFIXES
        .iter()
        .map(|p| TestBackend::start(p, Behavior::Normal))
        .collect();
    let specs: Vec<_> = backends.iter().map(|b| b.spec()).collect();
    let proxy = start_proxy(&specs, |c| c.threads = 2);
    let mut rng = Rng::new(99);
    for i in 0..90 {
        let p = PREFIXES[i % 3];
        let target = format!("/?wtd={}&i={i}", session_id(&mut rng, p));
        let r = send_request(proxy.addr, &get(&target)).unwrap();
        assert_eq!(r.backend(), p, "{target}");
    }
}

/// An absolute-form request-target (`GET http://host/?wtd=… HTTP/1.1`, RFC 9112 §3.2.2) is routed
/// by its query like any other.
#[test]
fn absolute_form_target_is_routed_by_its_query() {
    let a = TestBackend::start("wt1", Behavior::Normal);
    let b = TestBackend::start("wt2", Behavior::Normal);
    let proxy = start_proxy(&[a.spec(), b.spec()], |_| {});
    for i in 0..6 {
        let r = send_request(
            proxy.addr,
            format!("GET http://wt.example/app?wtd=wt2AbCdEfGhIjKlMnOp&i={i} HTTP/1.1\r\nHost: wt.example\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(r.status, 200, "{:?}", r.head);
        assert_eq!(r.backend(), "wt2");
    }
}
