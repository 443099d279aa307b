//! Responses the proxy answers itself: small, complete, and never cached.

use std::io::Write;

/// The reason phrase for the statuses the proxy sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
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
