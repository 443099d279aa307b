//! Sans-IO HTTP/1.1 (RFC 9112): heads, body framing, chunked decoding and head rewriting.
//!
//! Nothing here touches a socket. Parsers take the bytes read so far and answer "incomplete",
//! a parsed head, or a typed error; the body framers only say where a body ends, because the
//! proxy forwards body bytes untouched. Strictness is deliberate: anything two parsers could
//! read differently (bare CR/LF, obs-fold, CL+TE, odd chunk sizes) is refused rather than
//! repaired, since a proxy that repairs is a proxy that can be used for request smuggling.
//!
//! Map:
//! - `scan`: finds the end of a head and rejects bytes httparse would tolerate.
//! - `fields`: header-value grammar shared by requests and responses.
//! - `request` / `response`: head parsing and framing rules.
//! - `chunked` / `body`: body framing state machines.
//! - `proxy_protocol`: the PROXY v1/v2 header a load balancer sends before the first request.
//! - `rewrite`: the heads we send on (hop-by-hop removal, X-Forwarded-*).
//! - `reply`: responses the proxy answers itself.
//! - `error`: one error enum per layer; head causes both sides share are one `HeadError`.

mod body;
mod chunked;
mod error;
mod fields;
#[cfg(test)]
mod fixtures;
mod proxy_protocol;
mod reply;
mod request;
mod response;
mod rewrite;
mod scan;

use std::ops::Range;

pub use body::{Advance, BodyFramer};
pub use chunked::ChunkedDecoder;
pub use error::{BodyError, HeadError, ProxyHeaderError, RequestError, ResponseError};
pub use proxy_protocol::{MAX_HEADER_LEN as MAX_PROXY_HEADER_LEN, ProxyHeader, parse_proxy_header};
pub use reply::{error_response, https_redirect, reason_phrase};
pub use request::{RequestHead, parse_request, parse_request_into};
pub use response::{ResponseHead, parse_response, parse_response_into};
pub use rewrite::{ForwardOptions, write_forward_request, write_forward_response};

/// Bounds on a head, checked before anything is allocated for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_head_bytes: usize,
    pub max_headers: usize,
}

/// The defaults of `--max-head-bytes` and `--max-headers`: `Config::default()` takes them from here.
impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 16 * 1024,
            max_headers: 100,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Http10,
    Http11,
}

impl Version {
    /// The version as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }

    fn from_httparse(minor: u8) -> Self {
        if minor == 0 {
            Version::Http10
        } else {
            Version::Http11
        }
    }
}

/// Byte range of a header name/value inside the buffer the head was parsed from.
///
/// Ranges instead of slices keep heads free of lifetimes, so the shell can keep a parsed head
/// next to the buffer it owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

/// The values of the headers called `name` (ASCII case-insensitive) in a parsed head, in order;
/// `buf` is the buffer the head was parsed from. For the fields this crate leaves to its callers
/// (`Sec-WebSocket-Key`, `X-Backend`, …); framing and connection fields are already in the head.
pub fn header_values<'a>(
    buf: &'a [u8],
    headers: &'a [Header],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> {
    headers
        .iter()
        .filter(move |h| buf[h.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
        .map(move |h| &buf[h.value.clone()])
}

/// The elements of a comma-separated field value (RFC 9110 §5.6.1), OWS trimmed; empty elements
/// are kept, so a caller can tell `a,,b` from `a, b`.
pub fn comma_list(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    fields::list(value)
}

/// How the end of a body is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (no CL/TE on a request; HEAD, 1xx, 204, 304 responses).
    None,
    /// `Content-Length: n`; `Length(0)` is kept as such (it was on the wire) and is done at once.
    Length(u64),
    Chunked,
    /// Responses only: the body ends when the server closes.
    CloseDelimited,
}

/// Offset of `part` inside `buf`; `part` must be a subslice of `buf` (httparse hands those out).
fn range_in(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    debug_assert!(start + part.len() <= buf.len());
    start..start + part.len()
}

/// Stack room for this many headers; heads with more (when the limit allows) use the heap.
const STACK_HEADERS: usize = 100;

/// Runs `f` with `max` uninitialised httparse header slots: on the stack in the common case, so a
/// parse costs neither a memset of 100 headers nor an allocation.
fn with_header_slots<'b, R>(
    max: usize,
    f: impl FnOnce(&mut [std::mem::MaybeUninit<httparse::Header<'b>>]) -> R,
) -> R {
    let mut stack =
        [const { std::mem::MaybeUninit::<httparse::Header<'b>>::uninit() }; STACK_HEADERS];
    if max <= STACK_HEADERS {
        return f(&mut stack[..max]);
    }
    let mut heap = Vec::with_capacity(max);
    heap.resize_with(max, std::mem::MaybeUninit::uninit);
    f(&mut heap)
}

/// The parsed headers as ranges into `buf`, so heads outlive httparse's borrowed slots; `out`
/// keeps its allocation, so a caller that reuses a head does not allocate per parse.
fn header_ranges(buf: &[u8], headers: &[httparse::Header<'_>], out: &mut Vec<Header>) {
    out.clear();
    out.extend(headers.iter().map(|h| Header {
        name: range_in(buf, h.name.as_bytes()),
        value: range_in(buf, h.value),
    }));
}
