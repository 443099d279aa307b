//! What the admin listener takes without a token (it runs without one only on loopback): the
//! requests of local tools and of its own status page, never those a web page on another site
//! could make the operator's browser send.
//!
//! - **Host**: every request must be addressed to the listener: its Host (and an absolute-form
//!   target's authority) names `localhost` or an IP address — a loopback one, the listen address's
//!   or the one the client connected to — with any port (an SSH tunnel may change it). A DNS name
//!   that resolves to loopback (DNS rebinding: a page that then reads `/stats` as same-origin)
//!   gets 421. A request without Host (HTTP/1.0) passes: no browser sends one.
//! - **State changes** (every method but GET and HEAD) further need all of:
//!   - no `Sec-Fetch-Site` other than `same-origin` or `none` (a browser says `cross-site` or
//!     `same-site` for another site's page);
//!   - no `Origin` other than `http://` + the request's Host (`null` included);
//!   - the header [`ADMIN_HEADER`] (any value), or a JSON body (`Content-Type:
//!     application/json`): a form or a `text/plain` body — what a page may send to another
//!     site without the browser asking first (CORS preflight) — is refused.
//!
//! Refusals are 403 (421 for the Host), with a body that says why and what to do.

use std::net::{IpAddr, SocketAddr};

use super::{Reply, Request};
use crate::h1;

/// The header a client sends to say it is no web page (a page cannot add it to a request to
/// another site without the browser asking the listener first, which it refuses): `wtgate admin`
/// sends it, `curl -H 'X-Wtgate-Admin: 1'` does.
pub const ADMIN_HEADER: &str = "X-Wtgate-Admin";

/// `Ok` if a request that came without a token may be served; else the refusal.
pub(super) fn check(req: &Request, listen: SocketAddr) -> Result<(), Reply> {
    let host = req.header("host");
    let authority = req.head.authority.clone().map(|r| &req.buf[r]);
    for named in [host, authority].into_iter().flatten() {
        if !names_us(named, listen, req.local) {
            return Err(misdirected(named, listen));
        }
    }
    if matches!(req.method(), b"GET" | b"HEAD") {
        return Ok(());
    }
    for site in h1::header_values(&req.buf, &req.head.headers, "sec-fetch-site") {
        let site = site.trim_ascii();
        if !(site.eq_ignore_ascii_case(b"same-origin") || site.eq_ignore_ascii_case(b"none")) {
            return Err(cross_site(
                &format!("Sec-Fetch-Site: {}", show(site)),
                listen,
            ));
        }
    }
    for origin in h1::header_values(&req.buf, &req.head.headers, "origin") {
        if !same_origin(origin.trim_ascii(), host, listen, req.local) {
            return Err(cross_site(&format!("Origin: {}", show(origin)), listen));
        }
    }
    let json = req.header("content-type").is_some_and(|ct| {
        let media = ct.split(|&b| b == b';').next().unwrap_or_default();
        media.trim_ascii().eq_ignore_ascii_case(b"application/json")
    });
    if !json && req.header(ADMIN_HEADER).is_none() {
        return Err(Reply::error(
            403,
            &format!(
                "without a token, a state change needs the header {ADMIN_HEADER}: 1 or a JSON \
                 body (Content-Type: application/json), which no web page can make a browser \
                 send to another site: wtgate admin sends it; with curl, add -H '{ADMIN_HEADER}: 1'"
            ),
        ));
    }
    Ok(())
}

/// Whether `authority` (`host[:port]`) names this listener: `localhost`, a loopback address,
/// the listen address's IP or `local` (the address the client connected to); any port.
fn names_us(authority: &[u8], listen: SocketAddr, local: Option<IpAddr>) -> bool {
    let Some(host) = host_of(authority.trim_ascii()) else {
        return false;
    };
    if host.eq_ignore_ascii_case(b"localhost") {
        return true;
    }
    let ip = if let Some(v6) = host.strip_prefix(b"[").and_then(|h| h.strip_suffix(b"]")) {
        std::str::from_utf8(v6).ok().and_then(|s| s.parse().ok())
    } else {
        std::str::from_utf8(host).ok().and_then(|s| s.parse().ok())
    };
    let Some(ip) = ip.map(|ip: IpAddr| ip.to_canonical()) else {
        return false;
    };
    ip.is_loopback()
        || ip == listen.ip().to_canonical()
        || local.is_some_and(|l| l.to_canonical() == ip)
}

/// The host of `host[:port]` (an IPv6 address keeps its brackets), if the port is digits.
fn host_of(authority: &[u8]) -> Option<&[u8]> {
    let end_of_host = match authority.first() {
        Some(b'[') => authority.iter().position(|&b| b == b']')? + 1,
        _ => authority
            .iter()
            .position(|&b| b == b':')
            .unwrap_or(authority.len()),
    };
    let (host, port) = authority.split_at(end_of_host);
    let port_ok = match port.strip_prefix(b":") {
        Some(p) => !p.is_empty() && p.len() <= 5 && p.iter().all(u8::is_ascii_digit),
        None => port.is_empty(),
    };
    (port_ok && !host.is_empty()).then_some(host)
}

/// Whether `origin` is this listener's own: `http://` + the request's Host (the default port 80
/// may be left out of either), or, without a Host, `http://` + an authority naming us.
fn same_origin(
    origin: &[u8],
    host: Option<&[u8]>,
    listen: SocketAddr,
    local: Option<IpAddr>,
) -> bool {
    let Some(authority) = origin.strip_prefix(b"http://") else {
        return false;
    };
    match host {
        Some(host) => {
            let plain = |a: &[u8]| {
                let a = a.trim_ascii();
                a.strip_suffix(b":80").unwrap_or(a).to_ascii_lowercase()
            };
            plain(authority) == plain(host)
        }
        None => names_us(authority, listen, local),
    }
}

/// A header value, as shown in a refusal: at most 80 characters.
fn show(value: &[u8]) -> String {
    String::from_utf8_lossy(&value[..value.len().min(80)]).into_owned()
}

fn misdirected(named: &[u8], listen: SocketAddr) -> Reply {
    Reply::error(
        421,
        &format!(
            "this admin listener answers only requests addressed to it (Host: {listen} or \
             localhost:{port}), not to '{}': a page under another name could be a DNS-rebinding \
             attack. Open http://{listen}/, or start wtgate with --admin-token TOKEN and send \
             Authorization: Bearer TOKEN to reach it under any name",
            show(named),
            port = listen.port()
        ),
    )
}

fn cross_site(what: &str, listen: SocketAddr) -> Reply {
    Reply::error(
        403,
        &format!(
            "refused a state change sent by a web page of another site ({what}): without a token, \
             only local tools (wtgate admin, curl) and the status page at http://{listen}/ may \
             change wtgate's state"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTEN: &str = "127.0.0.1:8404";

    fn request(raw: &str) -> Request {
        let buf = raw.as_bytes().to_vec();
        let head = h1::parse_request(&buf, &h1::Limits::default())
            .unwrap()
            .unwrap();
        let body = buf[head.head_len..].to_vec();
        Request {
            buf,
            head,
            body,
            local: Some("127.0.0.1".parse().unwrap()),
        }
    }

    fn status(raw: &str) -> u16 {
        match check(&request(raw), LISTEN.parse().unwrap()) {
            Ok(()) => 200,
            Err(reply) => reply.status,
        }
    }

    #[test]
    fn reads_need_a_host_that_names_the_listener() {
        for host in [
            "127.0.0.1:8404",
            "localhost:8404",
            "LocalHost:8404",
            "localhost",
            "127.0.0.1",
            "127.0.0.1:9000",
            "[::1]:8404",
            "[::ffff:127.0.0.1]:8404",
        ] {
            let raw = format!("GET /stats HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(status(&raw), 200, "{host}");
        }
        for host in [
            "attacker.example",
            "attacker.example:8404",
            "localhost.attacker.example:8404",
            "127.0.0.1.nip.io:8404",
            "10.0.0.1:8404",
            "127.0.0.1:",
            "127.0.0.1:x",
            "[::1",
            "2130706433:8404",
        ] {
            let raw = format!("GET /stats HTTP/1.1\r\nHost: {host}\r\n\r\n");
            assert_eq!(status(&raw), 421, "{host}");
        }
        // The absolute form's authority is the target's host, whatever Host says.
        let raw = "GET http://attacker.example/stats HTTP/1.1\r\nHost: 127.0.0.1:8404\r\n\r\n";
        assert_eq!(status(raw), 421);
        // No browser sends a request without Host.
        assert_eq!(status("GET /stats HTTP/1.0\r\n\r\n"), 200);
    }

    #[test]
    fn state_changes_need_a_non_browser_header_or_json_and_no_other_site() {
        let post = |headers: &str| {
            status(&format!(
                "POST /backends/wt1/state HTTP/1.1\r\nHost: 127.0.0.1:8404\r\n{headers}\
                 Content-Length: 5\r\n\r\nmaint"
            ))
        };
        assert_eq!(post("X-Wtgate-Admin: 1\r\n"), 200);
        assert_eq!(
            post("Content-Type: application/json; charset=utf-8\r\n"),
            200
        );
        assert_eq!(
            post("X-Wtgate-Admin: 1\r\nOrigin: http://127.0.0.1:8404\r\n"),
            200
        );
        assert_eq!(
            post("Content-Type: application/json\r\nSec-Fetch-Site: same-origin\r\n"),
            200
        );
        // What a form or a fetch without preflight can send.
        for ct in [
            "",
            "Content-Type: text/plain\r\n",
            "Content-Type: application/x-www-form-urlencoded\r\n",
            "Content-Type: multipart/form-data; boundary=x\r\n",
        ] {
            assert_eq!(post(ct), 403, "{ct:?}");
        }
        for other in [
            "Origin: http://attacker.example\r\n",
            "Origin: null\r\n",
            "Origin: https://127.0.0.1:8404\r\n",
            "Origin: http://localhost:8404\r\n",
            "Sec-Fetch-Site: cross-site\r\n",
            "Sec-Fetch-Site: same-site\r\n",
        ] {
            assert_eq!(
                post(&format!("X-Wtgate-Admin: 1\r\n{other}")),
                403,
                "{other}"
            );
        }
    }

    #[test]
    fn port_80_may_be_left_out_of_origin_and_host() {
        let listen: SocketAddr = "127.0.0.1:80".parse().unwrap();
        for (host, origin) in [
            ("127.0.0.1", "http://127.0.0.1"),
            ("127.0.0.1:80", "http://127.0.0.1"),
            ("localhost", "http://localhost:80"),
        ] {
            let raw = format!(
                "POST /reload HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\n\
                 Content-Type: application/json\r\nContent-Length: 0\r\n\r\n"
            );
            assert!(check(&request(&raw), listen).is_ok(), "{host} {origin}");
        }
    }
}
