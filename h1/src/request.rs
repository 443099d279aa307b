//! Request heads: httparse for the grammar, then the RFC 9112 rules a proxy must enforce
//! before it forwards anything (framing, Host, versions).

use super::error::{HeadError, RequestError};
use super::fields::{self, Codings, Name};
use super::{Framing, Header, Limits, Version, header_ranges, range_in, scan, with_header_slots};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Bytes of the head including the final CRLF CRLF (and any empty lines before it).
    pub head_len: usize,
    pub method: std::ops::Range<usize>,
    /// Request-target bytes, exactly as received.
    pub target: std::ops::Range<usize>,
    /// The authority (`host[:port]`) of an absolute-form target; the backend is sent it as the
    /// Host (RFC 9112 §3.2.2), whatever Host the client sent.
    pub authority: Option<std::ops::Range<usize>>,
    pub version: Version,
    pub headers: Vec<Header>,
    /// `None`, `Length(n)` or `Chunked`: requests are never close-delimited.
    pub framing: Framing,
    /// 1.1: unless `Connection: close`; 1.0: only with `Connection: keep-alive`.
    pub keep_alive: bool,
    /// HTTP/1.1, a `Connection: upgrade` token and an `Upgrade` header (RFC 9110 §7.8 has 1.0
    /// servers ignore Upgrade, so we do too).
    pub upgrade: bool,
    /// `Expect: 100-continue` on HTTP/1.1 (ignored on 1.0, RFC 9110 §10.1.1).
    pub expect_continue: bool,
    /// Method HEAD: the response has no body whatever its headers say.
    pub is_head: bool,
    /// GET/HEAD/OPTIONS/TRACE without a body: resending it cannot repeat a side effect.
    pub safe_to_replay: bool,
}

/// An empty head, for [`parse_request_into`] to fill.
impl Default for RequestHead {
    fn default() -> Self {
        RequestHead {
            head_len: 0,
            method: 0..0,
            target: 0..0,
            authority: None,
            version: Version::Http11,
            headers: Vec::new(),
            framing: Framing::None,
            keep_alive: false,
            upgrade: false,
            expect_continue: false,
            is_head: false,
            safe_to_replay: false,
        }
    }
}

/// Parses the request head at the start of `buf`.
///
/// `Ok(None)` means the head is incomplete (and still under the limits): read more and call
/// again with the grown buffer. Errors map to a status with [`RequestError::status`].
///
/// Versions: a well-formed `HTTP/d.d` other than 1.0/1.1 (including the `PRI * HTTP/2.0` h2
/// preface) is a version we do not speak, so 505. Anything else that does not end in such a
/// token, including HTTP/0.9's `GET /path` without a version, is a malformed line: 400.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<RequestHead>, RequestError> {
    let mut head = RequestHead::default();
    Ok(parse_request_into(buf, limits, &mut head)?.then_some(head))
}

/// [`parse_request`] into `head`, reusing the room its headers took last time, so that a loop
/// keeping one head parses without allocating. `Ok(true)`: `head` is the parsed head;
/// `Ok(false)`: incomplete. After `Ok(false)` or an error, `head` holds nothing of use.
pub fn parse_request_into(
    buf: &[u8],
    limits: &Limits,
    head: &mut RequestHead,
) -> Result<bool, RequestError> {
    let Some(head_len) = scan::head_len(buf, limits.max_head_bytes)? else {
        return Ok(false);
    };
    let RequestLine {
        method,
        target,
        version,
    } = parse_syntax(buf, head_len, limits.max_headers, &mut head.headers)?;
    if method == "CONNECT" {
        return Err(RequestError::MethodNotAllowed);
    }
    let authority = target_authority(method, target)?;
    let facts = Facts::gather(buf, &head.headers);
    check_host(&facts, version)?;
    let framing = framing(buf, &head.headers, version, &facts)?;

    let keep_alive = !facts.close
        && match version {
            Version::Http11 => true,
            Version::Http10 => facts.keep_alive,
        };
    let no_body = matches!(framing, Framing::None | Framing::Length(0));
    let target = range_in(buf, target.as_bytes());
    *head = RequestHead {
        head_len,
        method: range_in(buf, method.as_bytes()),
        authority: authority.map(|a| target.start + a.start..target.start + a.end),
        target,
        version,
        framing,
        keep_alive,
        upgrade: version == Version::Http11 && facts.upgrade_token && facts.has_upgrade,
        expect_continue: version == Version::Http11 && facts.expect_continue,
        is_head: method == "HEAD",
        safe_to_replay: no_body && matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE"),
        headers: std::mem::take(&mut head.headers),
    };
    Ok(true)
}

/// The request line's parts, borrowed from the buffer.
struct RequestLine<'b> {
    method: &'b str,
    target: &'b str,
    version: Version,
}

/// httparse over the scanned head `buf[..head_len]`: the request line, and the headers as
/// ranges into `headers`.
#[inline]
fn parse_syntax<'b>(
    buf: &'b [u8],
    head_len: usize,
    max_headers: usize,
    headers: &mut Vec<Header>,
) -> Result<RequestLine<'b>, RequestError> {
    let bytes = &buf[..head_len];
    let (parsed, method, target, minor) = with_header_slots(max_headers, |slots| {
        let mut req = httparse::Request::new(&mut []);
        let parsed = req.parse_with_uninit_headers(bytes, slots);
        header_ranges(buf, req.headers, headers);
        (parsed, req.method, req.path, req.version)
    });
    match parsed {
        Ok(httparse::Status::Complete(_)) => {}
        // The scan saw CRLF CRLF, so httparse cannot want more; if it does, the line is odd.
        Ok(httparse::Status::Partial) => return Err(RequestError::BadRequestLine),
        Err(e) => return Err(httparse_error(e, bytes)),
    }
    let (Some(method), Some(target), Some(minor)) = (method, target, minor) else {
        return Err(RequestError::BadRequestLine);
    };
    Ok(RequestLine {
        method,
        target,
        version: Version::from_httparse(minor),
    })
}

/// RFC 9112 §3.2: which forms a request-target may take, and, for the absolute form, where its
/// authority is within `target`. Anything else — `c?x` without a leading `/`, a fragment, which
/// a client never sends and whose `wtd` nobody must route by, userinfo — is a 400.
fn target_authority(
    method: &str,
    target: &str,
) -> Result<Option<std::ops::Range<usize>>, RequestError> {
    if target.contains('#') {
        return Err(RequestError::BadTarget);
    }
    if target.starts_with('/') || (target == "*" && method == "OPTIONS") {
        return Ok(None);
    }
    let scheme_len = ["http://", "https://"]
        .iter()
        .find(|s| {
            target
                .get(..s.len())
                .is_some_and(|t| t.eq_ignore_ascii_case(s))
        })
        .map(|s| s.len())
        .ok_or(RequestError::BadTarget)?;
    let rest = &target[scheme_len..];
    let len = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..len];
    if authority.is_empty() || authority.contains('@') {
        return Err(RequestError::BadTarget);
    }
    Ok(Some(scheme_len..scheme_len + len))
}

/// HTTP/1.1 needs exactly one Host; 1.0 at most one.
#[inline]
fn check_host(facts: &Facts, version: Version) -> Result<(), RequestError> {
    match (facts.hosts, version) {
        (0, Version::Http11) => Err(RequestError::MissingHost),
        (2.., _) => Err(RequestError::DuplicateHost),
        _ => Ok(()),
    }
}

/// What one pass over the headers tells us.
#[derive(Default)]
struct Facts {
    hosts: usize,
    has_content_length: bool,
    has_transfer_encoding: bool,
    has_upgrade: bool,
    upgrade_token: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl Facts {
    fn gather(buf: &[u8], headers: &[Header]) -> Facts {
        let mut f = Facts::default();
        for h in headers {
            let value = fields::value_of(buf, h);
            match Name::of(fields::name_of(buf, h)) {
                Name::Host => f.hosts += 1,
                Name::ContentLength => f.has_content_length = true,
                Name::TransferEncoding => f.has_transfer_encoding = true,
                Name::Upgrade => f.has_upgrade = true,
                Name::Expect => {
                    f.expect_continue |=
                        fields::list(value).any(|e| e.eq_ignore_ascii_case(b"100-continue"));
                }
                Name::Connection => {
                    for token in fields::list(value) {
                        f.close |= token.eq_ignore_ascii_case(b"close");
                        f.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                        f.upgrade_token |= token.eq_ignore_ascii_case(b"upgrade");
                    }
                }
                _ => {}
            }
        }
        f
    }
}

/// RFC 9112 §6.3 for requests, refusing every case where two parsers could disagree.
fn framing(
    buf: &[u8],
    headers: &[Header],
    version: Version,
    facts: &Facts,
) -> Result<Framing, RequestError> {
    if facts.has_transfer_encoding {
        if facts.has_content_length {
            return Err(RequestError::ContentLengthAndTransferEncoding);
        }
        if version == Version::Http10 {
            return Err(RequestError::TransferEncodingInHttp10);
        }
        // Empty list elements are legal but we forward the field as-is, and a backend that
        // compares the raw value to "chunked" would then read no body: refuse them.
        let Codings {
            chunked,
            last_is_chunked,
            empty_elements,
            ..
        } = fields::transfer_codings(buf, headers);
        if !last_is_chunked || chunked != 1 || empty_elements != 0 {
            return Err(RequestError::Head(HeadError::BadTransferEncoding));
        }
        return Ok(Framing::Chunked);
    }
    if !facts.has_content_length {
        // The common GET: no second pass over the headers.
        return Ok(Framing::None);
    }
    Ok(match fields::content_length(buf, headers)? {
        Some(n) => Framing::Length(n),
        None => Framing::None,
    })
}

fn httparse_error(e: httparse::Error, head: &[u8]) -> RequestError {
    match e {
        httparse::Error::TooManyHeaders => RequestError::Head(HeadError::TooManyHeaders),
        httparse::Error::HeaderName => RequestError::Head(HeadError::BadHeaderName),
        httparse::Error::HeaderValue => RequestError::Head(HeadError::BadHeaderValue),
        httparse::Error::Version if names_a_version(scan::start_line(head)) => {
            RequestError::Head(HeadError::UnsupportedVersion)
        }
        _ => RequestError::BadRequestLine,
    }
}

/// `method SP target SP HTTP/d.d`: a line that is fine except for the version number.
fn names_a_version(line: &[u8]) -> bool {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    !method.is_empty()
        && !target.is_empty()
        && matches!(version, [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{WT_GET, WT_POST, WT_WS};
    use super::*;

    fn parse(buf: &[u8]) -> Result<Option<RequestHead>, RequestError> {
        parse_request(buf, &Limits::default())
    }

    fn head(buf: &[u8]) -> RequestHead {
        parse(buf).unwrap().unwrap()
    }

    fn err(buf: &[u8]) -> RequestError {
        parse(buf).unwrap_err()
    }

    #[test]
    fn request_targets_by_their_forms() {
        for ok in [
            "/",
            "/c?wtd=wt1x",
            "http://a.example/c",
            "HTTPS://a:8080?x=1",
            "http://[::1]",
        ] {
            let raw = format!("GET {ok} HTTP/1.1\r\nHost: h\r\n\r\n");
            let h = head(raw.as_bytes());
            assert_eq!(&raw[h.target.clone()], ok);
            let authority = h.authority.map(|a| &raw[a]);
            let want = ok
                .split_once("://")
                .map(|(_, r)| r.split(['/', '?']).next().unwrap());
            assert_eq!(authority, want, "{ok}");
        }
        assert!(
            head(b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n")
                .authority
                .is_none()
        );
        for bad in [
            "c?wtd=wt1x",
            "/c#f?wtd=wt1x",
            "/c?x#f",
            "http://a/c#f",
            "*",
            "http://",
            "http:///c",
            "http://u@a/c",
            "ftp://a/c",
            "a.example:80",
        ] {
            let raw = format!("GET {bad} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(err(raw.as_bytes()), RequestError::BadTarget, "{bad}");
            assert_eq!(RequestError::BadTarget.status(), 400);
        }
    }

    #[test]
    fn wt_get_with_many_headers() {
        let h = head(WT_GET);
        assert_eq!(h.head_len, WT_GET.len());
        assert_eq!(&WT_GET[h.method.clone()], b"GET");
        assert!(WT_GET[h.target.clone()].starts_with(b"/?wtd=wt13kcFKBb8y0I2SsdS&sid="));
        assert_eq!(h.version, Version::Http11);
        assert_eq!(h.headers.len(), 14);
        assert_eq!(&WT_GET[h.headers[0].name.clone()], b"Host");
        assert_eq!(&WT_GET[h.headers[0].value.clone()], b"127.0.0.1:9090");
        assert_eq!(h.framing, Framing::None);
        assert!(h.keep_alive && !h.upgrade && !h.expect_continue && !h.is_head);
        assert!(h.safe_to_replay);
    }

    #[test]
    fn wt_post_jsupdate_with_content_length() {
        let h = head(WT_POST);
        assert_eq!(
            &WT_POST[h.head_len..],
            b"request=jsupdate&ackId=464786152&pageId=1"
        );
        assert_eq!(&WT_POST[h.method.clone()], b"POST");
        assert_eq!(&WT_POST[h.target.clone()], b"/?wtd=wt13kcFKBb8y0I2SsdS");
        assert_eq!(h.framing, Framing::Length(274));
        assert!(h.keep_alive && !h.safe_to_replay);
    }

    #[test]
    fn wt_websocket_upgrade() {
        let h = head(WT_WS);
        assert!(h.upgrade);
        assert_eq!(h.framing, Framing::None);
        assert!(h.safe_to_replay);
    }

    #[test]
    fn a_reused_head_parses_like_a_fresh_one() {
        let mut reused = RequestHead::default();
        for buf in [WT_GET, WT_POST, b"GET / HTTP/1.0\r\n\r\n", WT_WS, WT_GET] {
            assert_eq!(
                parse_request_into(buf, &Limits::default(), &mut reused),
                Ok(true)
            );
            assert_eq!(Some(&reused), parse(buf).unwrap().as_ref());
        }
        let room = reused.headers.capacity();
        assert_eq!(
            parse_request_into(WT_POST, &Limits::default(), &mut reused),
            Ok(true)
        );
        assert_eq!(reused.headers.capacity(), room, "no new allocation");
        assert_eq!(
            parse_request_into(&WT_GET[..10], &Limits::default(), &mut reused),
            Ok(false)
        );
        assert_eq!(
            parse_request_into(b"GET / HTTP/1.1\r\n\r\n", &Limits::default(), &mut reused),
            Err(RequestError::MissingHost)
        );
    }

    #[test]
    fn fields_left_to_callers() {
        let h = head(WT_WS);
        let values = |name| crate::header_values(WT_WS, &h.headers, name).collect::<Vec<_>>();
        assert_eq!(
            values("sec-websocket-key"),
            [&b"QCUVFQhbuTMi1xe8BM4rpQ=="[..]]
        );
        assert!(values("x-nothing").is_empty());
        let conn = values("CONNECTION")[0];
        assert!(crate::comma_list(conn).any(|t| t.eq_ignore_ascii_case(b"upgrade")));
        let buf = b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\nx-a: 2\r\n\r\n";
        let h = head(buf);
        let all: Vec<&[u8]> = crate::header_values(buf, &h.headers, "X-A").collect();
        assert_eq!(all, [b"1", b"2"]);
        let items: Vec<&[u8]> = crate::comma_list(b" a ,,b\t").collect();
        assert_eq!(items, [&b"a"[..], b"", b"b"]);
    }

    #[test]
    fn incomplete_at_every_cut() {
        for cut in 0..WT_GET.len() {
            assert_eq!(parse(&WT_GET[..cut]), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn head_too_large_is_431() {
        let limits = Limits {
            max_head_bytes: 64,
            max_headers: 100,
        };
        let e = parse_request(&WT_GET[..100], &limits).unwrap_err();
        assert_eq!(e, RequestError::Head(HeadError::TooLarge));
        assert_eq!(e.status(), 431);
        // Under the limit without an end is simply incomplete.
        assert_eq!(parse_request(&WT_GET[..63], &limits), Ok(None));
    }

    #[test]
    fn too_many_headers_is_431() {
        let limits = Limits {
            max_head_bytes: 16 * 1024,
            max_headers: 13,
        };
        let e = parse_request(WT_GET, &limits).unwrap_err();
        assert_eq!(e, RequestError::Head(HeadError::TooManyHeaders));
        assert_eq!(e.status(), 431);
        let limits = Limits {
            max_headers: 14,
            ..limits
        };
        assert!(parse_request(WT_GET, &limits).unwrap().is_some());
    }

    #[test]
    fn limits_above_the_stack_array_work() {
        let mut buf = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..150 {
            buf.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        buf.extend_from_slice(b"\r\n");
        assert_eq!(err(&buf), RequestError::Head(HeadError::TooManyHeaders));
        let limits = Limits {
            max_head_bytes: 16 * 1024,
            max_headers: 200,
        };
        let h = parse_request(&buf, &limits).unwrap().unwrap();
        assert_eq!(h.headers.len(), 151);
    }

    #[test]
    fn pipelined_bytes_are_left_alone() {
        let buf = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n";
        let h = head(buf);
        assert_eq!(&buf[h.target.clone()], b"/a");
        let h2 = head(&buf[h.head_len..]);
        assert_eq!(&buf[h.head_len..][h2.target.clone()], b"/b");
    }

    #[test]
    fn empty_line_before_request_is_skipped() {
        let buf = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let h = head(buf);
        assert_eq!(h.head_len, buf.len());
        assert_eq!(&buf[h.method.clone()], b"GET");
    }

    #[test]
    fn bare_lf_cr_and_nul_are_400() {
        for (buf, want) in [
            (
                &b"GET / HTTP/1.1\nHost: a\n\n"[..],
                RequestError::Head(HeadError::BareLineFeed),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\n\r\n",
                RequestError::Head(HeadError::BareLineFeed),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
                RequestError::Head(HeadError::BareCarriageReturn),
            ),
            (
                b"GET / HTTP/1.1\r\nHost: a\0\r\n\r\n",
                RequestError::Head(HeadError::NulByte),
            ),
            (
                b"GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n",
                RequestError::Head(HeadError::NulByte),
            ),
        ] {
            let e = err(buf);
            assert_eq!(e, want);
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn obs_fold_is_400() {
        let e = err(b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  c\r\n\r\n");
        assert_eq!(e, RequestError::Head(HeadError::ObsFold));
        assert_eq!(e.status(), 400);
        // httparse refuses it on its own too; the scan just names the cause.
        let mut hs = [httparse::EMPTY_HEADER; 4];
        assert!(
            httparse::Request::new(&mut hs)
                .parse(b"GET / HTTP/1.1\r\nX: b\r\n c\r\n\r\n")
                .is_err()
        );
    }

    #[test]
    fn space_in_header_name_is_400() {
        assert_eq!(
            err(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n"),
            RequestError::Head(HeadError::BadHeaderName)
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nX Y: z\r\n\r\n"),
            RequestError::Head(HeadError::BadHeaderName)
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\n: z\r\n\r\n"),
            RequestError::Head(HeadError::BadHeaderName)
        );
    }

    #[test]
    fn control_byte_in_value_is_400() {
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\x01b\r\n\r\n"),
            RequestError::Head(HeadError::BadHeaderValue)
        );
    }

    #[test]
    fn versions() {
        let h = head(b"GET / HTTP/1.0\r\n\r\n");
        assert_eq!(h.version, Version::Http10);
        for buf in [
            &b"GET / HTTP/2.0\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/1.2\r\nHost: a\r\n\r\n",
            b"GET / HTTP/0.9\r\nHost: a\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            let e = err(buf);
            assert_eq!(
                e,
                RequestError::Head(HeadError::UnsupportedVersion),
                "{}",
                String::from_utf8_lossy(buf)
            );
            assert_eq!(e.status(), 505);
        }
        for buf in [
            // HTTP/0.9: no version at all.
            &b"GET /\r\n\r\n"[..],
            b"GET / HTTP/2\r\nHost: a\r\n\r\n",
            b"GET / http/1.1\r\nHost: a\r\n\r\n",
            b"GET / FOO/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1 \r\nHost: a\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.10\r\nHost: a\r\n\r\n",
        ] {
            let e = err(buf);
            assert_eq!(e.status(), 400, "{}: {e:?}", String::from_utf8_lossy(buf));
        }
    }

    #[test]
    fn connect_is_405() {
        let e = err(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
        assert_eq!(e, RequestError::MethodNotAllowed);
        assert_eq!(e.status(), 405);
    }

    #[test]
    fn host_rules() {
        assert_eq!(err(b"GET / HTTP/1.1\r\n\r\n"), RequestError::MissingHost);
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
            RequestError::DuplicateHost
        );
        assert_eq!(
            err(b"GET / HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n"),
            RequestError::DuplicateHost
        );
        // HTTP/1.0 predates Host.
        assert!(parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().is_some());
    }

    #[test]
    fn content_length_and_transfer_encoding_is_400() {
        let e = err(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(e, RequestError::ContentLengthAndTransferEncoding);
        assert_eq!(e.status(), 400);
        let e = err(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(e, RequestError::ContentLengthAndTransferEncoding);
    }

    #[test]
    fn content_length_rules() {
        let req = |cl: &str| format!("POST / HTTP/1.1\r\nHost: a\r\n{cl}\r\n\r\n");
        let ok = |cl: &str| head(req(cl).as_bytes()).framing;
        let bad = |cl: &str| err(req(cl).as_bytes());
        assert_eq!(ok("Content-Length: 5"), Framing::Length(5));
        assert_eq!(
            ok("Content-Length: 5\r\nContent-Length: 5"),
            Framing::Length(5)
        );
        assert_eq!(ok("Content-Length: 5, 5"), Framing::Length(5));
        assert_eq!(ok("Content-Length: 0"), Framing::Length(0));
        assert_eq!(
            bad("Content-Length: 5\r\nContent-Length: 6"),
            RequestError::Head(HeadError::ConflictingContentLength)
        );
        assert_eq!(
            bad("Content-Length: 5, 6"),
            RequestError::Head(HeadError::ConflictingContentLength)
        );
        for v in [
            "+5",
            "-5",
            "5 5",
            "",
            "abc",
            "5,",
            "18446744073709551616",
            "0x10",
        ] {
            let e = bad(&format!("Content-Length: {v}"));
            assert_eq!(e, RequestError::Head(HeadError::BadContentLength), "{v:?}");
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn transfer_encoding_rules() {
        let req = |te: &str| format!("POST / HTTP/1.1\r\nHost: a\r\n{te}\r\n\r\n");
        let ok = |te: &str| head(req(te).as_bytes()).framing;
        let bad = |te: &str| err(req(te).as_bytes());
        assert_eq!(ok("Transfer-Encoding: chunked"), Framing::Chunked);
        assert_eq!(ok("Transfer-Encoding: CHUNKED"), Framing::Chunked);
        assert_eq!(ok("Transfer-Encoding: gzip, chunked"), Framing::Chunked);
        assert_eq!(
            ok("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked"),
            Framing::Chunked
        );
        assert_eq!(ok("Transfer-Encoding:\tchunked\t"), Framing::Chunked);
        for te in [
            "Transfer-Encoding: gzip",
            "Transfer-Encoding: chunked, gzip",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip",
            "Transfer-Encoding: chunked, chunked",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked,",
            "Transfer-Encoding: ",
            "Transfer-Encoding: xchunked",
            "Transfer-Encoding: chunked;x=1",
        ] {
            let e = bad(te);
            assert_eq!(
                e,
                RequestError::Head(HeadError::BadTransferEncoding),
                "{te:?}"
            );
            assert_eq!(e.status(), 400);
        }
    }

    #[test]
    fn transfer_encoding_in_http10_is_400() {
        let e = err(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(e, RequestError::TransferEncodingInHttp10);
        assert_eq!(e.status(), 400);
    }

    #[test]
    fn keep_alive_rules() {
        assert!(head(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(!head(b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n").keep_alive);
    }

    #[test]
    fn upgrade_needs_token_and_header() {
        let with = |hs: &str| {
            head(format!("GET / HTTP/1.1\r\nHost: a\r\n{hs}\r\n\r\n").as_bytes()).upgrade
        };
        assert!(with(
            "Connection: keep-alive, Upgrade\r\nUpgrade: websocket"
        ));
        assert!(!with("Connection: keep-alive\r\nUpgrade: websocket"));
        assert!(!with("Connection: upgrade"));
        assert!(
            !head(b"GET / HTTP/1.0\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n").upgrade
        );
    }

    #[test]
    fn expect_continue() {
        let h = head(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n",
        );
        assert!(h.expect_continue);
        assert!(!head(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n").expect_continue);
        assert!(
            !head(b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
                .expect_continue
        );
    }

    #[test]
    fn head_and_replay_safety() {
        let h = head(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(h.is_head && h.safe_to_replay);
        for m in ["GET", "HEAD", "OPTIONS", "TRACE"] {
            assert!(head(format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).safe_to_replay);
            assert!(
                head(format!("{m} / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .safe_to_replay
            );
            assert!(
                !head(format!("{m} / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\n").as_bytes())
                    .safe_to_replay
            );
            assert!(
                !head(
                    format!("{m} / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
                        .as_bytes()
                )
                .safe_to_replay
            );
        }
        for m in ["POST", "PUT", "DELETE", "PATCH", "get"] {
            assert!(
                !head(format!("{m} / HTTP/1.1\r\nHost: a\r\n\r\n").as_bytes()).safe_to_replay,
                "{m}"
            );
        }
    }
}
