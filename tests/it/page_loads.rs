//! Browser-like page loads of a Wt app through wtgate, with the backend pool warm: every page's
//! WebSocket must open on the first try.
//!
//! Real wthttpd answers an upgrade that arrives on a keep-alive connection which already served a
//! request with a 101 and closes it at once; the browser then backs off (~1.4 s) and re-opens the
//! WebSocket (docs/design.md "Upgrades"). The in-test backends do the same, so a proxy that sends an
//! upgrade over a pooled connection makes page loads here lose their WebSocket.

use std::collections::BTreeMap;
use std::net::{Shutdown, SocketAddr};
use std::thread;

use crate::common::*;
use wtgate_demo::ws::{OP_CLOSE, OP_TEXT};

const PAGE_LOADS: usize = 200;
/// Page loads in flight at once, so that each one finds connections parked in the pool by others.
const BROWSERS: usize = 4;
/// HTTP requests of a page load that carry `wtd`, plus the upgrade.
const SESSION_REQUESTS: usize = 4;

/// A Chromium-like keep-alive request (header set from wt-traffic.txt).
fn browser_request(method: &str, target: &str, body: &str) -> Vec<u8> {
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\n\
         Host: 127.0.0.1:9090\r\n\
         Connection: keep-alive\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/156.0.0.0\r\n\
         Accept: */*\r\n\
         Referer: http://127.0.0.1:9090/app\r\n\
         Accept-Encoding: gzip, deflate, br, zstd\r\n\
         Accept-Language: en-US,en;q=0.9\r\n"
    );
    if method == "POST" {
        head.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    head.push_str("\r\n");
    head.push_str(body);
    head.into_bytes()
}

/// Sends one request on the page's connection and checks that `owner` answered it. Returns the
/// answering backend.
fn exchange(w: &mut Wire, page: usize, method: &str, target: &str, body: &str) -> String {
    w.write_all(&browser_request(method, target, body))
        .unwrap_or_else(|e| panic!("page {page}: sending {method} {target}: {e}"));
    let r = w
        .read_response(false)
        .unwrap_or_else(|e| panic!("page {page}: answer to {method} {target}: {e}"));
    assert_eq!(
        r.status, 200,
        "page {page}: {method} {target}: {:?}",
        r.head
    );
    assert_eq!(
        r.body_str(),
        format!("{} {method} {target}", r.backend()),
        "page {page}: the answer is not the one to this request"
    );
    assert_eq!(
        r.header("X-Req-Len"),
        Some(body.len().to_string().as_str()),
        "page {page}: {method} {target}: the body did not reach the backend whole"
    );
    r.backend().to_string()
}

/// Opens the page's WebSocket on a new connection as a browser does, reads Wt's first frame and
/// has one message echoed. `Err` says how the WebSocket failed (a browser would re-open it).
fn open_websocket(proxy: SocketAddr, target: &str, owner: &str) -> Result<(), String> {
    let mut w = Wire::connect(proxy);
    w.write_all(&ws_upgrade_request(target))
        .map_err(|e| format!("sending the upgrade: {e}"))?;
    let r = w
        .read_response(false)
        .map_err(|e| format!("no answer to the upgrade: {e}"))?;
    if r.status != 101 || r.backend() != owner {
        return Err(format!(
            "upgrade answered {} by {} (owner {owner})",
            r.status,
            r.backend()
        ));
    }
    match ws_recv(&mut w) {
        Ok(Some((_, OP_TEXT, p))) if p == b"connect" => {}
        Ok(Some((_, op, p))) => {
            return Err(format!(
                "first frame opcode {op} {:?}, not the backend's greeting",
                String::from_utf8_lossy(&p)
            ));
        }
        Ok(None) => return Err("closed right after the 101, before any frame".into()),
        Err(e) => return Err(format!("error right after the 101, before any frame: {e}")),
    }
    let msg = b"&signal=none&connected=464786153";
    w.write_all(&client_frame(OP_TEXT, msg, [4, 6, 4, 7]))
        .map_err(|e| format!("sending a frame: {e}"))?;
    match ws_recv(&mut w) {
        Ok(Some((_, OP_TEXT, p))) if p == msg => {}
        other => return Err(format!("no echo of the first message: {other:?}")),
    }
    // Leaving the page: a clean close, so backend threads end with the test.
    let _ = w.write_all(&client_frame(OP_CLOSE, &1001u16.to_be_bytes(), [0; 4]));
    let _ = w.stream.shutdown(Shutdown::Write);
    for _ in 0..4 {
        if !matches!(ws_recv(&mut w), Ok(Some(_))) {
            break;
        }
    }
    Ok(())
}

/// One page load: bootstrap, style, script and the `load` signal on one keep-alive connection,
/// then the WebSocket on a new one while the first stays open. Returns the session's owner and
/// how its WebSocket failed, if it did.
fn page_load(proxy: SocketAddr, page: usize) -> (String, Option<String>) {
    let mut rng = Rng::new(7_000 + page as u64);
    let mut w = Wire::connect(proxy);
    // The bootstrap has no wtd: whichever backend the proxy picks creates the session. The test
    // backends hand out no ids, so the session gets one with the answering backend's prefix.
    let owner = exchange(&mut w, page, "GET", "/app", "");
    let sid = session_id(&mut rng, &owner);
    let session_requests = [
        ("GET", format!("/app?wtd={sid}&request=style&page=0"), ""),
        (
            "GET",
            format!(
                "/app?wtd={sid}&sid={}&scrW=900&scrH=500&tz=0&deployPath=%2Fapp&request=script&rand={}",
                rng.range(1, 1 << 31),
                rng.range(1, 1 << 31)
            ),
            "",
        ),
        (
            "POST",
            format!("/app?wtd={sid}"),
            "request=jsupdate&ackId=0",
        ),
    ];
    for (method, target, body) in &session_requests {
        let by = exchange(&mut w, page, method, target, body);
        assert_eq!(by, owner, "page {page}: {method} {target} missed the owner");
    }
    let ws = open_websocket(proxy, &format!("/app?wtd={sid}&request=ws"), &owner).err();
    drop(w);
    (owner, ws)
}

/// 200 page loads, 4 in flight at once, two backends, default pool settings: every WebSocket gets
/// its first frame on the first try, and every request of a session reaches its owner.
#[test]
fn every_page_load_opens_its_websocket_first_try() {
    page_loads_with(|_| {});
}

/// The same with `--reuse always`: the policy lets any request reuse, never an upgrade.
#[test]
fn upgrades_never_reuse_even_with_reuse_always() {
    page_loads_with(|c| c.reuse = wtgate::config::Reuse::Always);
}

fn page_loads_with(tweak: impl FnOnce(&mut wtgate::config::Config)) {
    let behavior = Behavior::WsEcho {
        reject: false,
        close_after: None,
        greet: true,
    };
    let b1 = TestBackend::start("wt1", behavior);
    let b2 = TestBackend::start("wt2", behavior);
    let proxy = start_proxy(&[b1.spec(), b2.spec()], tweak);
    let addr = proxy.addr;

    let browsers: Vec<_> = (0..BROWSERS)
        .map(|b| {
            thread::spawn(move || {
                (b..PAGE_LOADS)
                    .step_by(BROWSERS)
                    .map(|page| (page, page_load(addr, page)))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut loads: Vec<_> = browsers
        .into_iter()
        .flat_map(|h| h.join().expect("a page load failed"))
        .collect();
    loads.sort_by_key(|(page, _)| *page);
    assert_eq!(loads.len(), PAGE_LOADS);

    let failed: Vec<_> = loads
        .iter()
        .filter_map(|(page, (owner, ws))| ws.as_ref().map(|e| (page, owner, e)))
        .collect();
    if !failed.is_empty() {
        let mut by_reason = BTreeMap::<&str, usize>::new();
        for (_, _, e) in &failed {
            *by_reason.entry(e.as_str()).or_default() += 1;
        }
        let first: Vec<_> = failed
            .iter()
            .take(5)
            .map(|(page, owner, e)| format!("  page {page} ({owner}): {e}"))
            .collect();
        panic!(
            "{} of {PAGE_LOADS} page loads lost their WebSocket and would re-open it; \
             the backends closed {} (wt1) + {} (wt2) upgrades for arriving on a connection that \
             had already served a request (an upgrade must go on a fresh backend connection, \
             never a pooled one).\nfailures by reason: {by_reason:#?}\nfirst ones:\n{}",
            failed.len(),
            b1.ws_upgrades_on_reused_conns(),
            b2.ws_upgrades_on_reused_conns(),
            first.join("\n")
        );
    }

    // Backend side: nothing lost, duplicated or sent to a backend that does not own the session.
    for b in [&b1, &b2] {
        let owned = loads.iter().filter(|(_, (o, _))| *o == b.name).count();
        let seen = b.requests();
        let bootstraps = seen
            .iter()
            .filter(|r| query_param(&r.target, "wtd").is_none())
            .count();
        let strays: Vec<_> = seen
            .iter()
            .filter_map(|r| query_param(&r.target, "wtd"))
            .filter(|wtd| !wtd.starts_with(&b.name))
            .collect();
        assert!(
            strays.is_empty(),
            "{} got requests of sessions it does not own: {strays:?}",
            b.name
        );
        assert_eq!(
            (bootstraps, seen.len() - bootstraps),
            (owned, owned * SESSION_REQUESTS),
            "{}: (bootstraps, session requests) for its {owned} sessions",
            b.name
        );
        assert!(owned > 0, "{} got no bootstrap", b.name);
    }
}
