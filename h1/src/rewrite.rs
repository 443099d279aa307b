//! The heads we send on: the received head minus hop-by-hop fields, plus what a proxy owes
//! the next hop (X-Forwarded-*, our own Connection header).
//!
//! Fields are copied as `name: value` from the parsed ranges, so what the backend sees is
//! exactly what we validated: a field we did not parse cannot slip through.

use super::fields::{self, Name};
use super::{Framing, Header, RequestHead, ResponseHead, Version, scan};

pub struct ForwardOptions<'a> {
    /// Client IP text; `None` = add no X-Forwarded-For/-Proto and pass incoming ones through
    /// untouched, whatever `trusted` says.
    pub forwarded_for: Option<&'a str>,
    /// Scheme the client used, e.g. "http".
    pub proto: &'a str,
    /// The direct peer is a proxy we trust (a `--trust-forwarded-from` address, or a listener
    /// that speaks the PROXY protocol). Its X-Forwarded-For is kept with the client appended,
    /// and its (last) X-Forwarded-Proto wins over `proto`: behind a TLS terminator that is the
    /// only place "https" can come from. Anyone else's are forgeries: removed, and ours written.
    pub trusted: bool,
}

/// Writes the head to send to the backend.
pub fn write_forward_request(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    opts: &ForwardOptions,
) {
    write_request_line(out, buf, head);
    if let Some(authority) = head.authority.clone() {
        write_field(out, b"Host", &buf[authority]);
    }
    let named = connection_named(buf, &head.headers);
    write_end_to_end_fields(out, buf, head, opts, &named);
    if head.upgrade {
        for h in &head.headers {
            if Name::of(fields::name_of(buf, h)) == Name::Upgrade {
                write_field(out, b"Upgrade", fields::value_of(buf, h));
            }
        }
        out.extend_from_slice(b"Connection: Upgrade\r\n");
    } else if head.version == Version::Http10 && head.keep_alive {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    if let Some(ip) = opts.forwarded_for {
        out.extend_from_slice(b"X-Forwarded-For: ");
        let mut proto = opts.proto.as_bytes();
        if opts.trusted {
            for (kind, value) in forwarded_values(buf, &head.headers, &named) {
                if kind == Name::XForwardedFor {
                    out.extend_from_slice(value);
                    out.extend_from_slice(b", ");
                } else {
                    // One copy goes on, the last: a proxy that adds its own field appends it, so
                    // an earlier copy may be the client's own forgery passed along.
                    proto = value;
                }
            }
        }
        out.extend_from_slice(ip.as_bytes());
        out.extend_from_slice(b"\r\nX-Forwarded-Proto: ");
        out.extend_from_slice(proto);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

#[inline]
fn write_request_line(out: &mut Vec<u8>, buf: &[u8], head: &RequestHead) {
    out.extend_from_slice(&buf[head.method.clone()]);
    out.push(b' ');
    out.extend_from_slice(&buf[head.target.clone()]);
    out.push(b' ');
    out.extend_from_slice(head.version.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// The received fields minus hop-by-hop ones, and minus the ones we write ourselves.
#[inline]
fn write_end_to_end_fields(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &RequestHead,
    opts: &ForwardOptions,
    named: &ConnectionNamed,
) {
    let adding_forwarded = opts.forwarded_for.is_some();
    let mut wrote_length = false;
    for h in &head.headers {
        let name = fields::name_of(buf, h);
        let kind = Name::of(name);
        if drop_as_hop_by_hop(kind, name, named) {
            continue;
        }
        match kind {
            Name::ContentLength => write_length_once(out, buf, h, &mut wrote_length),
            // Wt gzips the whole WebSocket stream when asked to; see docs/design.md "Upgrades".
            Name::AcceptEncoding if head.upgrade => {}
            Name::XForwardedFor | Name::XForwardedProto if adding_forwarded => {}
            // RFC 9112 §3.2.2: an absolute-form target's authority is the Host, written above.
            Name::Host if head.authority.is_some() => {}
            _ => write_field(out, name, fields::value_of(buf, h)),
        }
    }
}

/// Writes the head to send to the client.
///
/// `Connection: close` is sent when the client connection will not be reused
/// (`!client_keep_alive`) and also whenever the body is close-delimited, since then closing is
/// the only way the client can tell where it ends. Interim (1xx) responses get no
/// Connection header: the final response decides.
pub fn write_forward_response(
    out: &mut Vec<u8>,
    buf: &[u8],
    head: &ResponseHead,
    client_keep_alive: bool,
    client_version: Version,
) {
    out.extend_from_slice(scan::start_line(&buf[..head.head_len]));
    out.extend_from_slice(b"\r\n");

    let switching = head.status == 101;
    let named = connection_named(buf, &head.headers);
    // RFC 9112 §6.3: with both, an intermediary forwards Transfer-Encoding and drops the length.
    let has_te = head
        .headers
        .iter()
        .any(|h| Name::of(fields::name_of(buf, h)) == Name::TransferEncoding);
    let mut wrote_length = false;
    for h in &head.headers {
        let name = fields::name_of(buf, h);
        let kind = Name::of(name);
        if switching && kind == Name::Upgrade {
            write_field(out, name, fields::value_of(buf, h));
            continue;
        }
        if drop_as_hop_by_hop(kind, name, &named) {
            continue;
        }
        match kind {
            Name::ContentLength if has_te => {}
            Name::ContentLength => write_length_once(out, buf, h, &mut wrote_length),
            _ => write_field(out, name, fields::value_of(buf, h)),
        }
    }

    if switching {
        out.extend_from_slice(b"Connection: Upgrade\r\n");
    } else if head.status >= 200 {
        if !client_keep_alive || head.framing == Framing::CloseDelimited {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if client_version == Version::Http10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Non-empty X-Forwarded-For/-Proto values in order, minus copies the sender made hop-by-hop
/// by naming them in `Connection`.
fn forwarded_values<'b>(
    buf: &'b [u8],
    headers: &[Header],
    named: &ConnectionNamed,
) -> impl Iterator<Item = (Name, &'b [u8])> {
    headers.iter().filter_map(move |h| {
        let name = fields::name_of(buf, h);
        let kind = Name::of(name);
        let value = fields::trim_ows(fields::value_of(buf, h));
        let wanted = matches!(kind, Name::XForwardedFor | Name::XForwardedProto);
        (wanted && !value.is_empty() && !named.names(name)).then_some((kind, value))
    })
}

/// Field names listed in `Connection` beyond the ones that are hop-by-hop anyway.
struct ConnectionNamed<'b> {
    extra: Vec<&'b [u8]>,
}

impl ConnectionNamed<'_> {
    fn names(&self, name: &[u8]) -> bool {
        self.extra.iter().any(|t| t.eq_ignore_ascii_case(name))
    }
}

fn connection_named<'b>(buf: &'b [u8], headers: &[Header]) -> ConnectionNamed<'b> {
    // The usual tokens name nothing extra, so the common head allocates nothing here.
    let extra = headers
        .iter()
        .filter(|h| Name::of(fields::name_of(buf, h)) == Name::Connection)
        .flat_map(|h| fields::list(fields::value_of(buf, h)))
        .filter(|t| {
            !t.is_empty()
                && !t.eq_ignore_ascii_case(b"close")
                && !t.eq_ignore_ascii_case(b"keep-alive")
                && !t.eq_ignore_ascii_case(b"upgrade")
        })
        .collect();
    ConnectionNamed { extra }
}

/// Hop-by-hop fields, and fields the sender listed in `Connection`, except the ones that
/// frame the message or route it: `Connection: Content-Length` must not make us forward a
/// body the backend cannot delimit.
fn drop_as_hop_by_hop(kind: Name, name: &[u8], named: &ConnectionNamed) -> bool {
    if kind.is_hop_by_hop() {
        return true;
    }
    let protected = matches!(
        kind,
        Name::Host | Name::ContentLength | Name::TransferEncoding
    );
    !protected && named.names(name)
}

/// Equal duplicate lengths were accepted by the parser; the next hop gets exactly one.
fn write_length_once(out: &mut Vec<u8>, buf: &[u8], h: &Header, wrote: &mut bool) {
    if *wrote {
        return;
    }
    *wrote = true;
    let first = fields::list(fields::value_of(buf, h))
        .next()
        .unwrap_or_default();
    write_field(out, fields::name_of(buf, h), first);
}

fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{WT_GET, WT_POST, WT_WS};
    use super::super::{Limits, parse_request, parse_response};
    use super::*;

    const NO_XFF: ForwardOptions = ForwardOptions {
        forwarded_for: None,
        proto: "http",
        trusted: false,
    };

    const TRUSTED: ForwardOptions = ForwardOptions {
        forwarded_for: Some("10.0.0.9"),
        proto: "http",
        trusted: true,
    };

    const UNTRUSTED: ForwardOptions = ForwardOptions {
        trusted: false,
        ..TRUSTED
    };

    /// Incoming X-Forwarded-* of every kind: several copies, odd case, padding, an empty one.
    const FORWARDED: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.1.1.1, 2.2.2.2\r\n\
X-Forwarded-Proto: https\r\nx-forwarded-for:  3.3.3.3 \r\nX-Forwarded-For:\r\nX-Kept: 1\r\n\r\n";

    fn forward_request(raw: &[u8], opts: &ForwardOptions) -> String {
        let head = parse_request(raw, &Limits::default()).unwrap().unwrap();
        let mut out = Vec::new();
        write_forward_request(&mut out, raw, &head, opts);
        // What we send must itself parse, with the same framing.
        let again = parse_request(&out, &Limits::default()).unwrap().unwrap();
        assert_eq!(again.framing, head.framing);
        assert_eq!(again.head_len, out.len());
        String::from_utf8(out).unwrap()
    }

    fn forward_response(raw: &[u8], keep_alive: bool, version: Version) -> String {
        let head = parse_response(raw, &Limits::default(), false)
            .unwrap()
            .unwrap();
        let mut out = Vec::new();
        write_forward_response(&mut out, raw, &head, keep_alive, version);
        let again = parse_response(&out, &Limits::default(), false)
            .unwrap()
            .unwrap();
        assert_eq!(again.head_len, out.len());
        assert_eq!(again.status, head.status);
        String::from_utf8(out).unwrap()
    }

    fn lines(s: &str) -> Vec<&str> {
        s.split("\r\n").collect()
    }

    /// RFC 9112 §3.2.2: the backend gets the target as sent and one Host, the target's authority.
    #[test]
    fn absolute_form_sets_host_from_its_authority() {
        for raw in [
            &b"GET http://a.example:81/c?wtd=x HTTP/1.1\r\nHost: b.example\r\nX-K: 1\r\n\r\n"[..],
            b"GET http://a.example:81 HTTP/1.0\r\nX-K: 1\r\n\r\n",
        ] {
            let out = forward_request(raw, &NO_XFF);
            let l = lines(&out);
            assert!(l[0].starts_with("GET http://a.example:81"), "{out}");
            assert_eq!(l[1], "Host: a.example:81", "{out}");
            assert_eq!(out.matches("Host:").count(), 1, "{out}");
            assert!(out.contains("X-K: 1\r\n"), "{out}");
        }
    }

    #[test]
    fn wt_get_passes_through_minus_connection() {
        let raw = WT_GET;
        let out = forward_request(raw, &NO_XFF);
        let expected = String::from_utf8(raw.to_vec())
            .unwrap()
            .replace("Connection: keep-alive\r\n", "");
        assert_eq!(out, expected);
    }

    #[test]
    fn wt_post_keeps_one_content_length() {
        let raw = WT_POST;
        let out = forward_request(raw, &NO_XFF);
        assert!(out.starts_with("POST /?wtd=wt13kcFKBb8y0I2SsdS HTTP/1.1\r\n"));
        assert_eq!(out.matches("Content-Length: 274\r\n").count(), 1);
        assert!(
            out.ends_with("Cookie: WtTestCookie=ok\r\n\r\n"),
            "body is not part of the head"
        );
    }

    #[test]
    fn wt_websocket_upgrade_drops_accept_encoding() {
        let raw = WT_WS;
        let out = forward_request(raw, &NO_XFF);
        assert!(!out.to_ascii_lowercase().contains("accept-encoding"));
        assert!(out.contains("\r\nUpgrade: websocket\r\n"));
        assert!(out.contains("\r\nConnection: Upgrade\r\n"));
        assert_eq!(out.matches("Connection:").count(), 1);
        assert!(
            out.contains(
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            )
        );
        assert!(out.contains("Sec-WebSocket-Key: QCUVFQhbuTMi1xe8BM4rpQ==\r\n"));
        let head = parse_request(out.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        assert!(head.upgrade);
    }

    #[test]
    fn accept_encoding_kept_without_upgrade() {
        let out = forward_request(
            b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nAccept-Encoding: gzip\r\n\r\n",
            &NO_XFF,
        );
        assert_eq!(
            lines(&out),
            ["GET / HTTP/1.1", "Host: a", "Accept-Encoding: gzip", "", ""]
        );
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let raw =
            b"GET /x?y HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nKeep-Alive: 5\r\n\
Proxy-Connection: keep-alive\r\nTE: trailers\r\nTrailer: X\r\nx-secret: 1\r\nX-Kept: 2\r\n\r\n";
        let out = forward_request(raw, &NO_XFF);
        assert_eq!(
            lines(&out),
            ["GET /x?y HTTP/1.1", "Host: a", "X-Kept: 2", "", ""]
        );
    }

    #[test]
    fn connection_cannot_strip_framing_or_host() {
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, Host, Transfer-Encoding\r\nContent-Length: 3\r\n\r\n";
        let out = forward_request(raw, &NO_XFF);
        assert_eq!(
            lines(&out),
            ["POST / HTTP/1.1", "Host: a", "Content-Length: 3", "", ""]
        );
    }

    #[test]
    fn transfer_encoding_is_kept() {
        let raw = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        let out = forward_request(raw, &NO_XFF);
        assert!(out.contains("\r\nTransfer-Encoding: gzip, chunked\r\n"));
    }

    #[test]
    fn duplicate_lengths_collapse() {
        let raw =
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n";
        let out = forward_request(raw, &NO_XFF);
        assert_eq!(
            lines(&out),
            ["POST / HTTP/1.1", "Host: a", "Content-Length: 5", "", ""]
        );
    }

    #[test]
    fn http10_keep_alive_is_restated() {
        let out = forward_request(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &NO_XFF);
        assert_eq!(
            lines(&out),
            ["GET / HTTP/1.0", "Connection: keep-alive", "", ""]
        );
        let out = forward_request(b"GET / HTTP/1.0\r\n\r\n", &NO_XFF);
        assert_eq!(lines(&out), ["GET / HTTP/1.0", "", ""]);
        let out = forward_request(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            &NO_XFF,
        );
        assert_eq!(lines(&out), ["GET / HTTP/1.1", "Host: a", "", ""]);
    }

    #[test]
    fn forwarded_headers_without_incoming_ones() {
        for opts in [&TRUSTED, &UNTRUSTED] {
            let out = forward_request(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", opts);
            assert_eq!(
                lines(&out),
                [
                    "GET / HTTP/1.1",
                    "Host: a",
                    "X-Forwarded-For: 10.0.0.9",
                    "X-Forwarded-Proto: http",
                    "",
                    ""
                ]
            );
        }
    }

    #[test]
    fn trusted_peer_forwarded_for_appends_and_proto_is_kept() {
        let out = forward_request(FORWARDED, &TRUSTED);
        assert_eq!(
            lines(&out),
            [
                "GET / HTTP/1.1",
                "Host: a",
                "X-Kept: 1",
                "X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9",
                "X-Forwarded-Proto: https",
                "",
                ""
            ]
        );
    }

    #[test]
    fn untrusted_peer_forwarded_headers_are_replaced() {
        let out = forward_request(FORWARDED, &UNTRUSTED);
        assert_eq!(
            lines(&out),
            [
                "GET / HTTP/1.1",
                "Host: a",
                "X-Kept: 1",
                "X-Forwarded-For: 10.0.0.9",
                "X-Forwarded-Proto: http",
                "",
                ""
            ]
        );
        let raw = b"GET / HTTP/1.1\r\nx-FORWARDED-proto: https\r\nHost: a\r\n\
X-FORWARDED-FOR: 6.6.6.6\r\nX-Forwarded-Proto: https\r\n\r\n";
        let out = forward_request(raw, &UNTRUSTED);
        assert_eq!(
            lines(&out),
            [
                "GET / HTTP/1.1",
                "Host: a",
                "X-Forwarded-For: 10.0.0.9",
                "X-Forwarded-Proto: http",
                "",
                ""
            ]
        );
    }

    #[test]
    fn without_our_address_forwarded_headers_pass_untouched() {
        for trusted in [false, true] {
            let opts = ForwardOptions { trusted, ..NO_XFF };
            let out = forward_request(FORWARDED, &opts);
            assert_eq!(
                lines(&out),
                [
                    "GET / HTTP/1.1",
                    "Host: a",
                    "X-Forwarded-For: 1.1.1.1, 2.2.2.2",
                    "X-Forwarded-Proto: https",
                    "x-forwarded-for: 3.3.3.3",
                    "X-Forwarded-For: ",
                    "X-Kept: 1",
                    "",
                    ""
                ]
            );
        }
    }

    #[test]
    fn trusted_peer_proto_last_nonempty_copy_wins() {
        let proto_of = |raw: &[u8]| {
            let out = forward_request(raw, &TRUSTED);
            assert_eq!(
                out.to_ascii_lowercase()
                    .matches("x-forwarded-proto")
                    .count(),
                1
            );
            let line = lines(&out)
                .into_iter()
                .find(|l| l.starts_with("X-Forwarded-Proto: "))
                .unwrap()
                .to_string();
            line["X-Forwarded-Proto: ".len()..].to_string()
        };
        // A terminator that adds its field after a forged one.
        assert_eq!(
            proto_of(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n\r\n"),
            "http"
        );
        assert_eq!(
            proto_of(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Proto: \r\n\r\n"),
            "https"
        );
        assert_eq!(
            proto_of(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto:  \r\n\r\n"),
            "http"
        );
        // Kept as sent, list and all.
        assert_eq!(
            proto_of(b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-Proto: https, http \r\n\r\n"),
            "https, http"
        );
        // Named in Connection: hop-by-hop, gone before we look.
        assert_eq!(
            proto_of(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Forwarded-Proto\r\nX-Forwarded-Proto: https\r\n\r\n"),
            "http"
        );
        let out = forward_request(
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: x-forwarded-for\r\nX-Forwarded-For: 1.1.1.1\r\n\r\n",
            &TRUSTED,
        );
        assert!(out.contains("\r\nX-Forwarded-For: 10.0.0.9\r\n"), "{out}");
    }

    #[test]
    fn wt_chunked_response_to_keep_alive_client() {
        let raw = b"HTTP/1.1 200 OK\r\nDate: Thu, 26 Nov 2026 04:56:32 GMT\r\nContent-Type: text/css\r\nTransfer-Encoding: chunked\r\n\r\n";
        let out = forward_response(raw, true, Version::Http11);
        assert_eq!(out.as_bytes(), raw);
    }

    #[test]
    fn response_connection_header_follows_the_client() {
        let raw = b"HTTP/1.1 404 Not Found\r\nConnection: keep-alive\r\nKeep-Alive: timeout=10\r\nContent-Length: 85\r\n\r\n";
        let out = forward_response(raw, false, Version::Http11);
        assert_eq!(
            lines(&out),
            [
                "HTTP/1.1 404 Not Found",
                "Content-Length: 85",
                "Connection: close",
                "",
                ""
            ]
        );
        let out = forward_response(raw, true, Version::Http10);
        assert_eq!(
            lines(&out),
            [
                "HTTP/1.1 404 Not Found",
                "Content-Length: 85",
                "Connection: keep-alive",
                "",
                ""
            ]
        );
        let out = forward_response(raw, true, Version::Http11);
        assert_eq!(
            lines(&out),
            ["HTTP/1.1 404 Not Found", "Content-Length: 85", "", ""]
        );
    }

    #[test]
    fn close_delimited_response_always_closes() {
        let out = forward_response(b"HTTP/1.1 200 OK\r\nX: y\r\n\r\n", true, Version::Http11);
        assert_eq!(
            lines(&out),
            ["HTTP/1.1 200 OK", "X: y", "Connection: close", "", ""]
        );
    }

    #[test]
    fn wt_101_keeps_upgrade() {
        let raw = b"HTTP/1.1 101 Switching Protocol\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\nSec-WebSocket-Accept: 8HY4GeqsiL1h4lqHrC4npTiRHGU=\r\n\r\n";
        let out = forward_response(raw, true, Version::Http11);
        assert_eq!(
            lines(&out),
            [
                "HTTP/1.1 101 Switching Protocol",
                "Upgrade: WebSocket",
                "Sec-WebSocket-Accept: 8HY4GeqsiL1h4lqHrC4npTiRHGU=",
                "Connection: Upgrade",
                "",
                ""
            ]
        );
    }

    #[test]
    fn non_101_drops_upgrade() {
        let raw = b"HTTP/1.1 403 Forbidden\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\nContent-Length: 0\r\n\r\n";
        let out = forward_response(raw, true, Version::Http11);
        assert_eq!(
            lines(&out),
            ["HTTP/1.1 403 Forbidden", "Content-Length: 0", "", ""]
        );
    }

    #[test]
    fn interim_responses_get_no_connection_header() {
        let out = forward_response(b"HTTP/1.1 100 Continue\r\n\r\n", false, Version::Http11);
        assert_eq!(out, "HTTP/1.1 100 Continue\r\n\r\n");
    }

    #[test]
    fn response_te_beats_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let out = forward_response(raw, true, Version::Http11);
        assert_eq!(
            lines(&out),
            ["HTTP/1.1 200 OK", "Transfer-Encoding: chunked", "", ""]
        );
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        let out = forward_response(raw, true, Version::Http11);
        assert_eq!(
            lines(&out),
            ["HTTP/1.1 200 OK", "Content-Length: 5", "", ""]
        );
    }

    #[test]
    fn status_line_is_copied_as_is() {
        let out = forward_response(
            b"HTTP/1.0 200 Fine Thanks\r\nContent-Length: 0\r\n\r\n",
            true,
            Version::Http11,
        );
        assert!(out.starts_with("HTTP/1.0 200 Fine Thanks\r\n"));
    }
}
