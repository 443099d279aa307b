//! Header-field grammar shared by requests, responses and rewriting: which header a name is,
//! comma lists, Content-Length and Transfer-Encoding values.

use super::Header;
use super::error::HeadError;

/// The headers the proxy looks at; everything else is forwarded without a second glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Name {
    Host,
    ContentLength,
    TransferEncoding,
    Connection,
    KeepAlive,
    ProxyConnection,
    Te,
    Trailer,
    Upgrade,
    Expect,
    AcceptEncoding,
    XForwardedFor,
    XForwardedProto,
    Other,
}

impl Name {
    pub(super) fn of(name: &[u8]) -> Name {
        // Dispatch on length first: most names are then settled by a single compare.
        let (candidate, known): (&[u8], Name) = match name.len() {
            2 => (b"te", Name::Te),
            4 => (b"host", Name::Host),
            6 => (b"expect", Name::Expect),
            7 if name[0] | 0x20 == b'u' => (b"upgrade", Name::Upgrade),
            7 => (b"trailer", Name::Trailer),
            10 if name[0] | 0x20 == b'c' => (b"connection", Name::Connection),
            10 => (b"keep-alive", Name::KeepAlive),
            14 => (b"content-length", Name::ContentLength),
            15 if name[0] | 0x20 == b'a' => (b"accept-encoding", Name::AcceptEncoding),
            15 => (b"x-forwarded-for", Name::XForwardedFor),
            16 => (b"proxy-connection", Name::ProxyConnection),
            17 if name[2] | 0x20 == b'f' => (b"x-forwarded-proto", Name::XForwardedProto),
            17 => (b"transfer-encoding", Name::TransferEncoding),
            _ => return Name::Other,
        };
        if name.eq_ignore_ascii_case(candidate) {
            known
        } else {
            Name::Other
        }
    }

    /// Hop-by-hop by definition (RFC 9110 §7.6.1), whatever `Connection` says.
    pub(super) fn is_hop_by_hop(self) -> bool {
        matches!(
            self,
            Name::Connection
                | Name::KeepAlive
                | Name::ProxyConnection
                | Name::Te
                | Name::Trailer
                | Name::Upgrade
        )
    }
}

pub(super) fn name_of<'b>(buf: &'b [u8], h: &Header) -> &'b [u8] {
    &buf[h.name.clone()]
}

pub(super) fn value_of<'b>(buf: &'b [u8], h: &Header) -> &'b [u8] {
    &buf[h.value.clone()]
}

pub(super) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Elements of a comma list with OWS trimmed; empty elements are kept so callers can decide.
pub(super) fn list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(trim_ows)
}

/// Whether any header called `which` has `token` (case-insensitive) in its comma list.
pub(super) fn has_token(buf: &[u8], headers: &[Header], which: Name, token: &[u8]) -> bool {
    headers.iter().any(|h| {
        Name::of(name_of(buf, h)) == which
            && list(value_of(buf, h)).any(|t| t.eq_ignore_ascii_case(token))
    })
}

/// The single length all Content-Length headers agree on; `None` if there is none.
///
/// Every element of every header must be 1*DIGIT: `+5`, `5 5`, `0x5`, an empty value or an empty
/// list element all fail, because some other parser would read them as something else.
pub(super) fn content_length(buf: &[u8], headers: &[Header]) -> Result<Option<u64>, HeadError> {
    let mut found = None;
    for h in headers {
        if Name::of(name_of(buf, h)) != Name::ContentLength {
            continue;
        }
        for item in list(value_of(buf, h)) {
            let n = parse_digits(item).ok_or(HeadError::BadContentLength)?;
            match found {
                Some(prev) if prev != n => return Err(HeadError::ConflictingContentLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

fn parse_digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// What all Transfer-Encoding headers say together, read as one comma list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Codings {
    pub(super) present: bool,
    pub(super) codings: usize,
    pub(super) empty_elements: usize,
    pub(super) chunked: usize,
    pub(super) last_is_chunked: bool,
}

pub(super) fn transfer_codings(buf: &[u8], headers: &[Header]) -> Codings {
    let mut c = Codings::default();
    for h in headers {
        if Name::of(name_of(buf, h)) != Name::TransferEncoding {
            continue;
        }
        c.present = true;
        for item in list(value_of(buf, h)) {
            if item.is_empty() {
                c.empty_elements += 1;
                continue;
            }
            c.codings += 1;
            c.last_is_chunked = item.eq_ignore_ascii_case(b"chunked");
            if c.last_is_chunked {
                c.chunked += 1;
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds headers over `buf` from `name: value` lines (test helper, no validation).
    fn headers(buf: &[u8]) -> Vec<Header> {
        let mut out = Vec::new();
        let mut pos = 0;
        for line in buf.split(|&b| b == b'\n') {
            let colon = line.iter().position(|&b| b == b':').unwrap();
            let vstart = pos + colon + 1;
            out.push(Header {
                name: pos..pos + colon,
                value: vstart..pos + line.len(),
            });
            pos += line.len() + 1;
        }
        out
    }

    #[test]
    fn names_are_case_insensitive_and_exact() {
        assert_eq!(Name::of(b"Content-Length"), Name::ContentLength);
        assert_eq!(Name::of(b"TRANSFER-ENCODING"), Name::TransferEncoding);
        assert_eq!(Name::of(b"x-forwarded-proto"), Name::XForwardedProto);
        assert_eq!(Name::of(b"X-Forwarded-For"), Name::XForwardedFor);
        assert_eq!(Name::of(b"Accept-Encoding"), Name::AcceptEncoding);
        assert_eq!(Name::of(b"Keep-Alive"), Name::KeepAlive);
        assert_eq!(Name::of(b"Connection"), Name::Connection);
        assert_eq!(Name::of(b"Upgrade"), Name::Upgrade);
        assert_eq!(Name::of(b"Trailer"), Name::Trailer);
        assert_eq!(Name::of(b"TE"), Name::Te);
        assert_eq!(Name::of(b"Proxy-Connection"), Name::ProxyConnection);
        assert_eq!(Name::of(b"Content-Lengthx"), Name::Other);
        assert_eq!(Name::of(b"Transfer-Encodin"), Name::Other);
        assert_eq!(Name::of(b"Cookie"), Name::Other);
        assert_eq!(Name::of(b""), Name::Other);
    }

    #[test]
    fn hop_by_hop_set() {
        assert!(Name::Connection.is_hop_by_hop());
        assert!(Name::Upgrade.is_hop_by_hop());
        assert!(!Name::TransferEncoding.is_hop_by_hop());
        assert!(!Name::ContentLength.is_hop_by_hop());
    }

    #[test]
    fn ows_trim_and_lists() {
        assert_eq!(trim_ows(b" \t a b\t "), b"a b");
        let items: Vec<&[u8]> = list(b"a, b ,,c").collect();
        assert_eq!(items, [&b"a"[..], b"b", b"", b"c"]);
    }

    #[test]
    fn connection_tokens() {
        let buf = b"Connection: keep-alive, Upgrade\nUpgrade: websocket";
        let hs = headers(buf);
        assert!(has_token(buf, &hs, Name::Connection, b"upgrade"));
        assert!(has_token(buf, &hs, Name::Connection, b"KEEP-ALIVE"));
        assert!(!has_token(buf, &hs, Name::Connection, b"close"));
        assert!(!has_token(buf, &hs, Name::Upgrade, b"upgrade"));
    }

    #[test]
    fn content_length_values() {
        let ok = |s: &[u8]| content_length(s, &headers(s));
        assert_eq!(ok(b"Content-Length: 42"), Ok(Some(42)));
        assert_eq!(ok(b"Content-Length: 42\nContent-Length: 42"), Ok(Some(42)));
        assert_eq!(ok(b"Content-Length: 42, 42"), Ok(Some(42)));
        assert_eq!(ok(b"Content-Length: 007"), Ok(Some(7)));
        assert_eq!(
            ok(b"Content-Length: 18446744073709551615"),
            Ok(Some(u64::MAX))
        );
        assert_eq!(ok(b"X: 1"), Ok(None));
        assert_eq!(
            ok(b"Content-Length: 42\nContent-Length: 43"),
            Err(HeadError::ConflictingContentLength)
        );
        assert_eq!(
            ok(b"Content-Length: 42, 43"),
            Err(HeadError::ConflictingContentLength)
        );
        for bad in [
            &b"Content-Length: "[..],
            b"Content-Length: +5",
            b"Content-Length: -5",
            b"Content-Length: 5 5",
            b"Content-Length: 0x5",
            b"Content-Length: 5,",
            b"Content-Length: 18446744073709551616",
            b"Content-Length: 99999999999999999999999",
        ] {
            assert_eq!(
                ok(bad),
                Err(HeadError::BadContentLength),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn transfer_codings_join_all_fields() {
        let tc = |s: &[u8]| transfer_codings(s, &headers(s));
        let c = tc(b"Transfer-Encoding: gzip\nTransfer-Encoding: CHUNKED");
        assert!(c.present && c.last_is_chunked);
        assert_eq!((c.codings, c.chunked, c.empty_elements), (2, 1, 0));
        let c = tc(b"Transfer-Encoding: chunked, gzip");
        assert!(!c.last_is_chunked);
        let c = tc(b"Transfer-Encoding: chunked,, ");
        assert_eq!((c.codings, c.empty_elements), (1, 2));
        assert!(c.last_is_chunked);
        assert!(!tc(b"X: chunked").present);
    }
}
