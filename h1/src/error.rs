//! One error enum per layer, each variant naming a single cause so logs and tests can tell
//! smuggling attempts from plain garbage. The causes request and response heads share are one
//! [`HeadError`], carried by the side's own error, which words it for that side.

use std::fmt;

/// A cause both kinds of head share: the bytes of the head, its size, and the framing headers
/// every message may carry. It always travels inside a [`RequestError`] or a [`ResponseError`],
/// which says which side it was found on (and words it so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// No end of head within `max_head_bytes`.
    TooLarge,
    TooManyHeaders,
    /// A well-formed `HTTP/x.y` other than 1.0 and 1.1 (e.g. `HTTP/2.0`, the h2 preface).
    UnsupportedVersion,
    BadHeaderName,
    BadHeaderValue,
    /// A `\n` not preceded by `\r`.
    BareLineFeed,
    /// A `\r` not followed by `\n`.
    BareCarriageReturn,
    NulByte,
    /// A header line starting with SP/HTAB (obsolete line folding).
    ObsFold,
    ConflictingContentLength,
    BadContentLength,
    /// Requests: last coding not `chunked`, `chunked` more than once, an empty list element, or
    /// no coding at all. Responses: no coding at all (any other list is read to the close).
    BadTransferEncoding,
}

/// Which head a [`HeadError`] was found in: the same cause reads differently in a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Request,
    Response,
}

impl HeadError {
    fn describe(self, side: Side) -> &'static str {
        let (request, response) = match self {
            HeadError::TooLarge => ("request head too large", "response head too large"),
            HeadError::TooManyHeaders => ("too many request headers", "too many response headers"),
            HeadError::UnsupportedVersion => (
                "unsupported HTTP version",
                "unsupported HTTP version in response",
            ),
            HeadError::BadHeaderName => ("invalid header name", "invalid header name in response"),
            HeadError::BadHeaderValue => {
                ("invalid header value", "invalid header value in response")
            }
            HeadError::BareLineFeed => ("bare LF in request head", "bare LF in response head"),
            HeadError::BareCarriageReturn => {
                ("bare CR in request head", "bare CR in response head")
            }
            HeadError::NulByte => ("NUL byte in request head", "NUL byte in response head"),
            HeadError::ObsFold => (
                "obsolete line folding in request head",
                "obsolete line folding in response head",
            ),
            HeadError::ConflictingContentLength => (
                "conflicting Content-Length values",
                "conflicting Content-Length in response",
            ),
            HeadError::BadContentLength => (
                "invalid Content-Length",
                "invalid Content-Length in response",
            ),
            HeadError::BadTransferEncoding => (
                "invalid Transfer-Encoding",
                "invalid Transfer-Encoding in response",
            ),
        };
        match side {
            Side::Request => request,
            Side::Response => response,
        }
    }
}

/// Why a request head was refused; [`RequestError::status`] is what the client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    Head(HeadError),
    /// The request line is not `method SP target SP HTTP/x.y` (includes HTTP/0.9 lines).
    BadRequestLine,
    /// Allowed in a response (Transfer-Encoding wins), but in a request it is the classic
    /// smuggling shape, so it is refused rather than resolved.
    ContentLengthAndTransferEncoding,
    /// HTTP/1.0 has no Transfer-Encoding; a 1.0 request with one is framed ambiguously.
    TransferEncodingInHttp10,
    MissingHost,
    DuplicateHost,
    /// A request-target that is neither origin-form (`/path?query`), absolute-form
    /// (`http://host/path`, no userinfo), nor `*` for OPTIONS; or one with a fragment (`#`).
    BadTarget,
    /// CONNECT: a reverse proxy does not open tunnels to arbitrary places.
    MethodNotAllowed,
}

impl RequestError {
    /// The status to answer with (the connection is closed after it).
    pub fn status(&self) -> u16 {
        match self {
            RequestError::Head(HeadError::TooLarge | HeadError::TooManyHeaders) => 431,
            RequestError::Head(HeadError::UnsupportedVersion) => 505,
            RequestError::MethodNotAllowed => 405,
            _ => 400,
        }
    }
}

impl From<HeadError> for RequestError {
    fn from(e: HeadError) -> Self {
        RequestError::Head(e)
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            RequestError::Head(e) => e.describe(Side::Request),
            RequestError::BadRequestLine => "malformed request line",
            RequestError::ContentLengthAndTransferEncoding => {
                "both Content-Length and Transfer-Encoding"
            }
            RequestError::TransferEncodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 request",
            RequestError::MissingHost => "missing Host header",
            RequestError::DuplicateHost => "more than one Host header",
            RequestError::BadTarget => "invalid request-target",
            RequestError::MethodNotAllowed => "method not allowed",
        };
        f.write_str(text)
    }
}

impl std::error::Error for RequestError {}

/// Why a backend's response head was refused (the client gets a 502 for any of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseError {
    Head(HeadError),
    /// Not `HTTP/x.y SP 3DIGIT`, or a status outside 100..=599.
    BadStatusLine,
    /// HTTP/1.0 has no Transfer-Encoding (RFC 9112 §6.1: the framing is faulty).
    TransferEncodingInHttp10,
}

impl From<HeadError> for ResponseError {
    fn from(e: HeadError) -> Self {
        ResponseError::Head(e)
    }
}

impl fmt::Display for ResponseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ResponseError::Head(e) => e.describe(Side::Response),
            ResponseError::BadStatusLine => "malformed status line",
            ResponseError::TransferEncodingInHttp10 => "Transfer-Encoding in an HTTP/1.0 response",
        })
    }
}

impl std::error::Error for ResponseError {}

/// Why a body could not be framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// A chunk-size line without hex digits, or with a byte that has no place there.
    BadChunkSize,
    /// A chunk size that does not fit in a u64.
    ChunkSizeOverflow,
    /// A chunk-size line (size plus extensions) longer than we are willing to scan.
    ChunkLineTooLong,
    /// CR or LF where the other was required, or data not followed by CRLF.
    MissingCrlf,
    /// A trailer field with a bad name, a bare CR/LF/NUL, or obs-fold.
    BadTrailer,
    TrailersTooLarge,
    /// The peer closed before the body ended.
    Truncated,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            BodyError::BadChunkSize => "invalid chunk size",
            BodyError::ChunkSizeOverflow => "chunk size overflows",
            BodyError::ChunkLineTooLong => "chunk size line too long",
            BodyError::MissingCrlf => "missing CRLF in chunked body",
            BodyError::BadTrailer => "invalid trailer field",
            BodyError::TrailersTooLarge => "trailer section too large",
            BodyError::Truncated => "body truncated by connection close",
        };
        f.write_str(text)
    }
}

impl std::error::Error for BodyError {}

/// Why the bytes at the start of a PROXY-protocol connection are not a PROXY header; the
/// connection is closed without a word, as HAProxy does (the peer is a proxy, not a browser).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeaderError {
    /// Neither the v1 `PROXY ` nor the v2 signature: e.g. a client speaking HTTP directly.
    NotProxyProtocol,
    /// No CRLF within the 107 bytes v1 allows.
    V1TooLong,
    /// A byte outside printable ASCII and space in a v1 line, or a CR without its LF.
    V1BadByte,
    /// Not `TCP4`/`TCP6` with exactly four single-space-separated fields, nor `UNKNOWN`.
    V1BadSyntax,
    /// Not an address of the line's family (an IPv6 address in `TCP4`, or the reverse).
    V1BadAddress,
    /// Not a decimal port 0..=65535 without sign or leading zeros.
    V1BadPort,
    /// A v2 signature followed by a version other than 2.
    V2BadVersion,
    /// A command other than LOCAL and PROXY.
    V2BadCommand,
    /// An address family or transport the spec does not define, or an invalid pairing of both.
    V2BadFamily,
    /// DGRAM: an HTTP proxy only carries streams.
    V2Datagram,
    /// A length beyond what we accept (see `MAX_PROXY_HEADER_LEN`).
    V2TooLong,
    /// A length shorter than the address block its family requires.
    V2ShortAddress,
    /// A TLV whose header or value runs past the end of the PROXY header.
    V2BadTlv,
    /// A `PP2_TYPE_SSL` TLV that is too short, holds truncated sub-TLVs, or is not the only one.
    V2BadSslTlv,
}

impl fmt::Display for ProxyHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            ProxyHeaderError::NotProxyProtocol => "not a PROXY protocol header",
            ProxyHeaderError::V1TooLong => "PROXY v1 line too long",
            ProxyHeaderError::V1BadByte => "invalid byte in PROXY v1 line",
            ProxyHeaderError::V1BadSyntax => "malformed PROXY v1 line",
            ProxyHeaderError::V1BadAddress => "invalid address in PROXY v1 line",
            ProxyHeaderError::V1BadPort => "invalid port in PROXY v1 line",
            ProxyHeaderError::V2BadVersion => "unsupported PROXY v2 version",
            ProxyHeaderError::V2BadCommand => "unknown PROXY v2 command",
            ProxyHeaderError::V2BadFamily => "invalid PROXY v2 address family",
            ProxyHeaderError::V2Datagram => "PROXY v2 datagram transport",
            ProxyHeaderError::V2TooLong => "PROXY v2 header too long",
            ProxyHeaderError::V2ShortAddress => "PROXY v2 header shorter than its addresses",
            ProxyHeaderError::V2BadTlv => "truncated PROXY v2 TLV",
            ProxyHeaderError::V2BadSslTlv => "invalid PROXY v2 SSL TLV",
        };
        f.write_str(text)
    }
}

impl std::error::Error for ProxyHeaderError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_statuses() {
        assert_eq!(RequestError::Head(HeadError::TooLarge).status(), 431);
        assert_eq!(RequestError::Head(HeadError::TooManyHeaders).status(), 431);
        assert_eq!(
            RequestError::Head(HeadError::UnsupportedVersion).status(),
            505
        );
        assert_eq!(RequestError::MethodNotAllowed.status(), 405);
        for e in [
            RequestError::BadRequestLine,
            RequestError::Head(HeadError::BareLineFeed),
            RequestError::Head(HeadError::ObsFold),
            RequestError::ContentLengthAndTransferEncoding,
            RequestError::Head(HeadError::ConflictingContentLength),
            RequestError::Head(HeadError::BadTransferEncoding),
            RequestError::MissingHost,
            RequestError::DuplicateHost,
        ] {
            assert_eq!(e.status(), 400, "{e}");
        }
    }

    /// Log lines (and whoever reads them) know these texts: one shared cause, two wordings.
    #[test]
    fn head_causes_read_as_their_side() {
        for (cause, request, response) in [
            (
                HeadError::TooLarge,
                "request head too large",
                "response head too large",
            ),
            (
                HeadError::TooManyHeaders,
                "too many request headers",
                "too many response headers",
            ),
            (
                HeadError::UnsupportedVersion,
                "unsupported HTTP version",
                "unsupported HTTP version in response",
            ),
            (
                HeadError::BadHeaderName,
                "invalid header name",
                "invalid header name in response",
            ),
            (
                HeadError::BadHeaderValue,
                "invalid header value",
                "invalid header value in response",
            ),
            (
                HeadError::BareLineFeed,
                "bare LF in request head",
                "bare LF in response head",
            ),
            (
                HeadError::BareCarriageReturn,
                "bare CR in request head",
                "bare CR in response head",
            ),
            (
                HeadError::NulByte,
                "NUL byte in request head",
                "NUL byte in response head",
            ),
            (
                HeadError::ObsFold,
                "obsolete line folding in request head",
                "obsolete line folding in response head",
            ),
            (
                HeadError::ConflictingContentLength,
                "conflicting Content-Length values",
                "conflicting Content-Length in response",
            ),
            (
                HeadError::BadContentLength,
                "invalid Content-Length",
                "invalid Content-Length in response",
            ),
            (
                HeadError::BadTransferEncoding,
                "invalid Transfer-Encoding",
                "invalid Transfer-Encoding in response",
            ),
        ] {
            assert_eq!(RequestError::from(cause).to_string(), request);
            assert_eq!(ResponseError::from(cause).to_string(), response);
        }
    }

    #[test]
    fn display_is_lowercase_prose() {
        assert_eq!(RequestError::MissingHost.to_string(), "missing Host header");
        assert_eq!(
            ResponseError::BadStatusLine.to_string(),
            "malformed status line"
        );
        assert_eq!(
            BodyError::Truncated.to_string(),
            "body truncated by connection close"
        );
        assert_eq!(
            ProxyHeaderError::NotProxyProtocol.to_string(),
            "not a PROXY protocol header"
        );
    }
}
