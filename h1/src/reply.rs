//! Responses the proxy answers itself: small, complete, and never cached.

use std::io::Write;

use crate::RequestHead;

/// The reason phrase for the statuses the proxy sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        301 => "Moved Permanently",
        308 => "Permanent Redirect",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Error",
    }
}

/// A complete response: text/plain body like `"400 Bad Request\n"`, `Connection: close` if
/// `close`, and `Retry-After: 1` on 503 so clients come back once a backend is up again.
pub fn error_response(status: u16, close: bool) -> Vec<u8> {
    let reason = reason_phrase(status);
    let body_len = 3 + 1 + reason.len() + 1;
    let mut out = Vec::with_capacity(160 + 2 * reason.len());
    // Writing into a Vec cannot fail.
    let _ = write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {body_len}\r\nCache-Control: no-cache\r\n"
    );
    if status == 503 {
        out.extend_from_slice(b"Retry-After: 1\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    let _ = write!(out, "\r\n{status} {reason}\n");
    out
}

/// The answer of a listener that sends every client to HTTPS (`--listen ADDR,redirect-https`):
/// the same host, without its port, and the same target over `https://`; `301` for GET and HEAD
/// (what browsers and HAProxy's `redirect scheme https` use), `308` for other methods so that a
/// POST stays a POST. `None` when the request names no usable host (the caller answers 400).
pub fn https_redirect(head: &RequestHead, buf: &[u8]) -> Option<Vec<u8>> {
    let host = match &head.authority {
        Some(a) => &buf[a.clone()],
        None => crate::header_values(buf, &head.headers, "host").next()?,
    };
    let host = without_port(host)?;
    let target = &buf[head.target.clone()];
    let path: &[u8] = match head.authority {
        // Absolute form: the path after the authority.
        Some(ref a) => &buf[a.end..head.target.end],
        None => target,
    };
    let path = if path.first() == Some(&b'/') {
        path
    } else {
        b"/"
    };
    let method = &buf[head.method.clone()];
    let status = if method == b"GET" || method == b"HEAD" {
        301
    } else {
        308
    };
    // A body we would have to read past: close instead.
    let close = !head.keep_alive || head.framing != crate::Framing::None;
    let mut out = Vec::with_capacity(160 + host.len() + path.len());
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nLocation: https://",
        reason_phrase(status)
    );
    out.extend_from_slice(host);
    out.extend_from_slice(path);
    out.extend_from_slice(b"\r\nContent-Length: 0\r\nCache-Control: no-cache\r\n");
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Some(out)
}

/// A Host value's host part, if it is one a redirect may carry: a name or IPv4 address of
/// letters, digits, `.`, `-` (and `_`), or a bracketed IPv6 address.
fn without_port(host: &[u8]) -> Option<&[u8]> {
    let name = if host.first() == Some(&b'[') {
        let end = host.iter().position(|&b| b == b']')?;
        let v6 = &host[..=end];
        let ok = v6[1..end]
            .iter()
            .all(|b| b.is_ascii_hexdigit() || *b == b':' || *b == b'.');
        ok.then_some(v6)?
    } else {
        let end = host.iter().position(|&b| b == b':').unwrap_or(host.len());
        let name = &host[..end];
        let ok = name
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(b));
        ok.then_some(name)?
    };
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::super::{Framing, Limits, parse_response};
    use super::*;

    #[test]
    fn bad_request_with_close() {
        let out = error_response(400, true);
        assert_eq!(
            out,
            b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 16\r\n\
Cache-Control: no-cache\r\nConnection: close\r\n\r\n400 Bad Request\n"
        );
    }

    #[test]
    fn service_unavailable_says_retry() {
        let out = String::from_utf8(error_response(503, false)).unwrap();
        assert!(out.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(out.contains("\r\nRetry-After: 1\r\n"));
        assert!(!out.contains("Connection"));
    }

    #[test]
    fn every_status_parses_with_an_exact_length() {
        for status in [400, 404, 405, 408, 413, 431, 500, 501, 502, 503, 504, 505] {
            for close in [false, true] {
                let out = error_response(status, close);
                let head = parse_response(&out, &Limits::default(), false)
                    .unwrap()
                    .unwrap();
                assert_eq!(head.status, status);
                assert_eq!(head.keep_alive, !close);
                let Framing::Length(n) = head.framing else {
                    panic!("{status}: {:?}", head.framing)
                };
                let body = &out[head.head_len..];
                assert_eq!(body.len() as u64, n);
                assert_eq!(
                    body,
                    format!("{status} {}\n", reason_phrase(status)).as_bytes()
                );
                assert_ne!(reason_phrase(status), "Error", "{status}");
            }
        }
    }
}

#[cfg(test)]
mod redirect_tests {
    use super::*;
    use crate::{Limits, parse_request};

    fn redirect(req: &str) -> Option<String> {
        let head = parse_request(req.as_bytes(), &Limits::default())
            .unwrap()
            .unwrap();
        https_redirect(&head, req.as_bytes()).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn get_is_moved_to_https_without_the_port() {
        let r = redirect("GET /app?wtd=wt1abc HTTP/1.1\r\nHost: example.com:80\r\n\r\n").unwrap();
        assert!(r.starts_with("HTTP/1.1 301 Moved Permanently\r\n"), "{r}");
        assert!(
            r.contains("\r\nLocation: https://example.com/app?wtd=wt1abc\r\n"),
            "{r}"
        );
        assert!(!r.contains("Connection: close"), "{r}");
    }

    #[test]
    fn post_keeps_its_method_and_closes_past_its_body() {
        let req = "POST /x HTTP/1.1\r\nHost: [::1]:8080\r\nContent-Length: 3\r\n\r\nabc";
        let r = redirect(req).unwrap();
        assert!(r.starts_with("HTTP/1.1 308 Permanent Redirect\r\n"), "{r}");
        assert!(r.contains("Location: https://[::1]/x\r\n"), "{r}");
        assert!(r.contains("Connection: close\r\n"), "{r}");
    }

    #[test]
    fn absolute_form_uses_its_authority_and_path() {
        let r = redirect("GET http://a.example/p?q HTTP/1.1\r\nHost: b\r\n\r\n").unwrap();
        assert!(r.contains("Location: https://a.example/p?q\r\n"), "{r}");
    }

    #[test]
    fn a_host_that_could_inject_is_refused() {
        assert_eq!(redirect("GET / HTTP/1.1\r\nHost: a\"b\r\n\r\n"), None);
        assert_eq!(redirect("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), None);
    }
}
