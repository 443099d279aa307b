//! Response heads from backends. Backends are ours but not trusted with framing: anything the
//! client could read differently from us is a 502, never forwarded.

use super::error::{HeadError, ResponseError};
use super::fields::{self, Codings, Name};
use super::{Framing, Header, Limits, Version, header_ranges, scan, with_header_slots};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub head_len: usize,
    pub status: u16,
    pub version: Version,
    pub headers: Vec<Header>,
    /// HEAD request, 1xx, 204, 304 → None; Transfer-Encoding whose last coding is chunked →
    /// Chunked; other Transfer-Encoding → CloseDelimited; Content-Length → Length; else
    /// CloseDelimited. An HTTP/1.0 response with Transfer-Encoding is refused
    /// ([`ResponseError::TransferEncodingInHttp10`]).
    pub framing: Framing,
    /// Whether the backend lets us reuse the connection: 1.1 unless `Connection: close`,
    /// 1.0 only with `Connection: keep-alive`; false for CloseDelimited, and false when
    /// Transfer-Encoding and Content-Length came together (RFC 9112 §6.3: likely an attack).
    pub keep_alive: bool,
}

/// An empty head, for [`parse_response_into`] to fill.
impl Default for ResponseHead {
    fn default() -> Self {
        ResponseHead {
            head_len: 0,
            status: 0,
            version: Version::Http11,
            headers: Vec::new(),
            framing: Framing::None,
            keep_alive: false,
        }
    }
}

/// Parses the response head at the start of `buf`; `Ok(None)` = incomplete, read more.
///
/// `request_was_head`: the request was HEAD, so no body follows whatever the headers say.
pub fn parse_response(
    buf: &[u8],
    limits: &Limits,
    request_was_head: bool,
) -> Result<Option<ResponseHead>, ResponseError> {
    let mut head = ResponseHead::default();
    Ok(parse_response_into(buf, limits, request_was_head, &mut head)?.then_some(head))
}

/// [`parse_response`] into `head`, reusing the room its headers took last time, so that a loop
/// keeping one head parses without allocating. `Ok(true)`: `head` is the parsed head;
/// `Ok(false)`: incomplete. After `Ok(false)` or an error, `head` holds nothing of use.
pub fn parse_response_into(
    buf: &[u8],
    limits: &Limits,
    request_was_head: bool,
    head: &mut ResponseHead,
) -> Result<bool, ResponseError> {
    let Some(head_len) = scan::head_len(buf, limits.max_head_bytes)? else {
        return Ok(false);
    };
    let (status, version) = parse_syntax(buf, head_len, limits.max_headers, &mut head.headers)?;
    let headers = &head.headers;

    let te = fields::transfer_codings(buf, headers);
    if te.present && te.codings == 0 {
        return Err(ResponseError::Head(HeadError::BadTransferEncoding));
    }
    // RFC 9112 §6.1: the framing of a 1.0 message with Transfer-Encoding is faulty. Read to the
    // close, the client would get the header with bytes it no longer describes; decoded, a
    // 1.0 peer and we could still disagree on where the message ends.
    if te.present && version == Version::Http10 {
        return Err(ResponseError::TransferEncodingInHttp10);
    }
    // Validated even when TE wins or no body follows: a bad length is a broken backend.
    let length = fields::content_length(buf, headers)?;

    let bodyless =
        request_was_head || (100..200).contains(&status) || status == 204 || status == 304;
    let framing = framing(bodyless, &te, length);
    let smuggle_shaped = te.present && length.is_some();
    let keep_alive =
        reusable(buf, headers, version) && !smuggle_shaped && framing != Framing::CloseDelimited;

    *head = ResponseHead {
        head_len,
        status,
        version,
        headers: std::mem::take(&mut head.headers),
        framing,
        keep_alive,
    };
    Ok(true)
}

/// httparse over the scanned head `buf[..head_len]`: the status code and version, and the
/// headers as ranges into `headers`.
#[inline]
fn parse_syntax(
    buf: &[u8],
    head_len: usize,
    max_headers: usize,
    headers: &mut Vec<Header>,
) -> Result<(u16, Version), ResponseError> {
    let bytes = &buf[..head_len];
    let (parsed, minor, code) = with_header_slots(max_headers, |slots| {
        let mut res = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, bytes, slots);
        header_ranges(buf, res.headers, headers);
        (parsed, res.version, res.code)
    });
    match parsed {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => return Err(ResponseError::BadStatusLine),
        Err(e) => return Err(httparse_error(e, bytes)),
    }
    let (Some(minor), Some(status)) = (minor, code) else {
        return Err(ResponseError::BadStatusLine);
    };
    // httparse takes any three digits; RFC 9110 §15 makes 100..=599 the only valid codes. A
    // `000` or `099` would otherwise go out as a final response that clients read differently.
    if !(100..=599).contains(&status) {
        return Err(ResponseError::BadStatusLine);
    }
    Ok((status, Version::from_httparse(minor)))
}

/// RFC 9112 §6.3 for responses, once the fields themselves are known to be valid.
#[inline]
fn framing(bodyless: bool, te: &Codings, length: Option<u64>) -> Framing {
    if bodyless {
        Framing::None
    } else if te.present {
        if te.last_is_chunked {
            Framing::Chunked
        } else {
            Framing::CloseDelimited
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::CloseDelimited
    }
}

/// Whether the backend's `Connection` header and version let us send it another request.
#[inline]
fn reusable(buf: &[u8], headers: &[Header], version: Version) -> bool {
    let close = fields::has_token(buf, headers, Name::Connection, b"close");
    match version {
        Version::Http11 => !close,
        Version::Http10 => {
            !close && fields::has_token(buf, headers, Name::Connection, b"keep-alive")
        }
    }
}

fn httparse_error(e: httparse::Error, head: &[u8]) -> ResponseError {
    match e {
        httparse::Error::TooManyHeaders => ResponseError::Head(HeadError::TooManyHeaders),
        httparse::Error::HeaderName => ResponseError::Head(HeadError::BadHeaderName),
        httparse::Error::HeaderValue => ResponseError::Head(HeadError::BadHeaderValue),
        httparse::Error::Version if names_a_version(scan::start_line(head)) => {
            ResponseError::Head(HeadError::UnsupportedVersion)
        }
        _ => ResponseError::BadStatusLine,
    }
}

/// `HTTP/d.d SP ...`: only the version number is wrong.
fn names_a_version(line: &[u8]) -> bool {
    matches!(line, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor, b' ', ..]
        if major.is_ascii_digit() && minor.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8]) -> Result<Option<ResponseHead>, ResponseError> {
        parse_response(buf, &Limits::default(), false)
    }

    fn head(buf: &[u8]) -> ResponseHead {
        parse(buf).unwrap().unwrap()
    }

    fn err(buf: &[u8]) -> ResponseError {
        parse(buf).unwrap_err()
    }

    // From docs/wt-traffic.txt, section A.
    const WT_CHUNKED: &[u8] = b"HTTP/1.1 200 OK\r\n\
Date: Thu, 26 Nov 2026 04:56:32 GMT\r\n\
Content-Type: text/html; charset=UTF-8\r\n\
Cache-Control: no-cache, no-store, must-revalidate\r\n\
Pragma: no-cache\r\n\
Expires: 0\r\n\
X-Frame-Options: SAMEORIGIN\r\n\
Transfer-Encoding: chunked\r\n\r\n";

    const WT_101: &[u8] = b"HTTP/1.1 101 Switching Protocol\r\n\
Connection: Upgrade\r\n\
Upgrade: WebSocket\r\n\
Sec-WebSocket-Accept: 8HY4GeqsiL1h4lqHrC4npTiRHGU=\r\n\r\n";

    const WT_404: &[u8] = b"HTTP/1.1 404 Not Found\r\n\
Date: Thu, 26 Nov 2026 04:56:32 GMT\r\n\
Content-Type: text/html\r\n\
Content-Length: 85\r\n\r\n";

    #[test]
    fn wt_responses() {
        let h = head(WT_CHUNKED);
        assert_eq!(
            (h.status, h.version, h.framing),
            (200, Version::Http11, Framing::Chunked)
        );
        assert!(h.keep_alive);
        assert_eq!(h.head_len, WT_CHUNKED.len());
        assert_eq!(h.headers.len(), 7);

        let h = head(WT_101);
        assert_eq!((h.status, h.framing), (101, Framing::None));

        let h = head(WT_404);
        assert_eq!((h.status, h.framing), (404, Framing::Length(85)));
        assert!(h.keep_alive);
    }

    #[test]
    fn a_reused_head_parses_like_a_fresh_one() {
        let mut reused = ResponseHead::default();
        for (buf, was_head) in [
            (WT_CHUNKED, false),
            (WT_101, false),
            (WT_404, true),
            (WT_404, false),
        ] {
            let limits = Limits::default();
            assert_eq!(
                parse_response_into(buf, &limits, was_head, &mut reused),
                Ok(true)
            );
            assert_eq!(
                Some(&reused),
                parse_response(buf, &limits, was_head).unwrap().as_ref()
            );
        }
        assert_eq!(
            parse_response_into(&WT_404[..10], &Limits::default(), false, &mut reused),
            Ok(false)
        );
    }

    #[test]
    fn incomplete_and_too_large() {
        for cut in 0..WT_404.len() {
            assert_eq!(parse(&WT_404[..cut]), Ok(None));
        }
        let limits = Limits {
            max_head_bytes: 32,
            max_headers: 100,
        };
        assert_eq!(
            parse_response(WT_404, &limits, false),
            Err(ResponseError::Head(HeadError::TooLarge))
        );
        let limits = Limits {
            max_head_bytes: 1024,
            max_headers: 2,
        };
        assert_eq!(
            parse_response(WT_404, &limits, false),
            Err(ResponseError::Head(HeadError::TooManyHeaders))
        );
    }

    #[test]
    fn bodyless_responses() {
        for status in [
            "100 Continue",
            "101 Switching Protocols",
            "103 Early Hints",
            "204 No Content",
            "304 Not Modified",
        ] {
            let buf = format!("HTTP/1.1 {status}\r\nContent-Length: 10\r\n\r\n");
            assert_eq!(head(buf.as_bytes()).framing, Framing::None, "{status}");
        }
        let h = parse_response(WT_CHUNKED, &Limits::default(), true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::None);
        assert!(h.keep_alive);
        let h = parse_response(WT_404, &Limits::default(), true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::None);
    }

    #[test]
    fn transfer_encoding_framing() {
        let f = |te: &str| head(format!("HTTP/1.1 200 OK\r\n{te}\r\n\r\n").as_bytes());
        assert_eq!(
            f("Transfer-Encoding: gzip, chunked").framing,
            Framing::Chunked
        );
        assert_eq!(
            f("Transfer-Encoding: gzip\r\nTransfer-Encoding: Chunked").framing,
            Framing::Chunked
        );
        let h = f("Transfer-Encoding: gzip");
        assert_eq!(h.framing, Framing::CloseDelimited);
        assert!(!h.keep_alive);
        assert_eq!(
            f("Transfer-Encoding: chunked, gzip").framing,
            Framing::CloseDelimited
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n"),
            ResponseError::Head(HeadError::BadTransferEncoding)
        );
    }

    #[test]
    fn transfer_encoding_beats_content_length_but_no_reuse() {
        let h = head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked);
        assert!(!h.keep_alive);
    }

    #[test]
    fn http10_transfer_encoding_is_refused() {
        for te in ["chunked", "gzip, chunked", "gzip"] {
            for status in ["200 OK", "204 No Content"] {
                let raw = format!("HTTP/1.0 {status}\r\nTransfer-Encoding: {te}\r\n\r\n");
                assert_eq!(err(raw.as_bytes()), ResponseError::TransferEncodingInHttp10);
            }
        }
    }

    #[test]
    fn content_length_errors() {
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            ResponseError::Head(HeadError::ConflictingContentLength)
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            ResponseError::Head(HeadError::BadContentLength)
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n"),
            ResponseError::Head(HeadError::ConflictingContentLength)
        );
        assert_eq!(
            head(b"HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\n\r\n").framing,
            Framing::Length(3)
        );
    }

    #[test]
    fn close_delimited_without_length() {
        let h = head(b"HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::CloseDelimited);
        assert!(!h.keep_alive);
    }

    #[test]
    fn keep_alive_rules() {
        assert!(
            !head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n").keep_alive
        );
        assert!(!head(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n").keep_alive);
        assert!(
            head(b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n")
                .keep_alive
        );
        assert!(head(b"HTTP/1.1 204 No Content\r\n\r\n").keep_alive);
    }

    #[test]
    fn syntax_errors() {
        assert_eq!(
            err(b"HTTP/1.1 200 OK\nContent-Length: 0\n\n"),
            ResponseError::Head(HeadError::BareLineFeed)
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n"),
            ResponseError::Head(HeadError::BareCarriageReturn)
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nX: a\0\r\n\r\n"),
            ResponseError::Head(HeadError::NulByte)
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"),
            ResponseError::Head(HeadError::ObsFold)
        );
        assert_eq!(
            err(b"HTTP/1.1 200 OK\r\nX : a\r\n\r\n"),
            ResponseError::Head(HeadError::BadHeaderName)
        );
        assert_eq!(
            err(b"HTTP/2.0 200 OK\r\n\r\n"),
            ResponseError::Head(HeadError::UnsupportedVersion)
        );
        assert_eq!(
            err(b"HTTP/1.1 2000 OK\r\n\r\n"),
            ResponseError::BadStatusLine
        );
        assert_eq!(
            err(b"HTTX/1.1 200 OK\r\n\r\n"),
            ResponseError::BadStatusLine
        );
        assert_eq!(err(b"HTTP/1.1 OK\r\n\r\n"), ResponseError::BadStatusLine);
    }

    /// Found by fuzzing (response_head): `HTTP/1.1 000 OK` parsed as status 0 and would have been
    /// forwarded as a final response.
    #[test]
    fn status_outside_100_to_599_is_bad() {
        for line in ["000 OK", "099 X", "600 X", "999 X"] {
            let buf = format!("HTTP/1.1 {line}\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(err(buf.as_bytes()), ResponseError::BadStatusLine, "{line}");
        }
        for (line, status) in [("100 Continue", 100), ("599 X", 599), ("200 OK", 200)] {
            let buf = format!("HTTP/1.1 {line}\r\nContent-Length: 0\r\n\r\n");
            assert_eq!(head(buf.as_bytes()).status, status);
        }
    }

    #[test]
    fn reason_is_optional() {
        assert_eq!(
            head(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").status,
            200
        );
    }
}
