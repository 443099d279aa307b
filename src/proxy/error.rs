//! Why a request did not end with a backend's complete answer, typed until the edge: there it
//! becomes a status for the client ([`ProxyError::status`]), a decision about sending the request
//! again ([`ProxyError::may_resend`]), a log line (`Display`) and a counter ([`ProxyError::index`]).

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// No backend is up and ready for this request.
    NoBackend,
    /// The request body's chunked framing is invalid.
    BadRequestBody,
    /// The client sent nothing of its request body for `--client-timeout`.
    ClientTimeout,
    /// The client closed or reset its connection mid-request, or stopped reading.
    ClientGone,
    /// The backend connection closed (or reset) before a single response byte: on a pooled one
    /// the backend's idle close racing our request, on a fresh one a dying backend.
    UpstreamClosed,
    /// The backend did not take the request (head or body) within `--server-timeout`, or its
    /// connection failed while we sent the body.
    UpstreamStoppedReading,
    /// No response byte within `--server-timeout`.
    UpstreamTimeout,
    /// The response head is not valid HTTP/1.1, or too large.
    BadResponseHead,
    /// The connection ended inside the response head.
    ResponseHeadCut,
    /// `101 Switching Protocols` to a request that asked for no upgrade.
    UnexpectedUpgrade,
    /// The response body's framing is invalid, or the body ended early or stalled.
    BadResponseBody,
    /// wtgate itself had no descriptor, buffer or local port left to connect to the backend: its
    /// own fault, not the backend's (which stays up).
    ProxyResources,
}

impl ProxyError {
    /// Every kind, in the order of [`ProxyError::index`].
    pub const ALL: [ProxyError; 12] = [
        ProxyError::NoBackend,
        ProxyError::BadRequestBody,
        ProxyError::ClientTimeout,
        ProxyError::ClientGone,
        ProxyError::UpstreamClosed,
        ProxyError::UpstreamStoppedReading,
        ProxyError::UpstreamTimeout,
        ProxyError::BadResponseHead,
        ProxyError::ResponseHeadCut,
        ProxyError::UnexpectedUpgrade,
        ProxyError::BadResponseBody,
        ProxyError::ProxyResources,
    ];

    /// The status the client is answered with, if nothing of a response has reached it yet.
    pub fn status(self) -> u16 {
        match self {
            ProxyError::NoBackend | ProxyError::ProxyResources => 503,
            ProxyError::BadRequestBody | ProxyError::ClientGone => 400,
            ProxyError::ClientTimeout => 408,
            ProxyError::UpstreamTimeout => 504,
            _ => 502,
        }
    }

    /// Whether the backend cannot have acted on the request, so that a request that is safe to
    /// replay may be sent again.
    pub fn may_resend(self) -> bool {
        self == ProxyError::UpstreamClosed
    }

    /// The kind's position in [`ProxyError::ALL`], for per-kind counters.
    pub fn index(self) -> usize {
        ProxyError::ALL.iter().position(|&e| e == self).unwrap_or(0)
    }

    /// A stable snake_case name for metrics.
    pub fn name(self) -> &'static str {
        match self {
            ProxyError::NoBackend => "no_backend",
            ProxyError::BadRequestBody => "bad_request_body",
            ProxyError::ClientTimeout => "client_timeout",
            ProxyError::ClientGone => "client_gone",
            ProxyError::UpstreamClosed => "upstream_closed",
            ProxyError::UpstreamStoppedReading => "upstream_stopped_reading",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::BadResponseHead => "bad_response_head",
            ProxyError::ResponseHeadCut => "response_head_cut",
            ProxyError::UnexpectedUpgrade => "unexpected_upgrade",
            ProxyError::BadResponseBody => "bad_response_body",
            ProxyError::ProxyResources => "proxy_resources",
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyError::NoBackend => "no backend is up and ready",
            ProxyError::BadRequestBody => "the request body framing is invalid",
            ProxyError::ClientTimeout => "the client stopped sending the request body",
            ProxyError::ClientGone => "the client went away",
            ProxyError::UpstreamClosed => "the backend closed the connection before answering",
            ProxyError::UpstreamStoppedReading => "the backend stopped reading the request",
            ProxyError::UpstreamTimeout => "no response within --server-timeout",
            ProxyError::BadResponseHead => "the response head is invalid or too large",
            ProxyError::ResponseHeadCut => "the connection ended inside the response head",
            ProxyError::UnexpectedUpgrade => {
                "the backend switched protocols (101) for a request that asked for no upgrade, or \
                 before it had read the whole request body"
            }
            ProxyError::BadResponseBody => "the response body is invalid, cut short or stalled",
            ProxyError::ProxyResources => {
                "wtgate ran out of its own descriptors, buffers or local ports to connect to the \
                 backend (its limit, not the backend's fault)"
            }
        })
    }
}

impl std::error::Error for ProxyError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_index_and_name() {
        let mut names: Vec<_> = ProxyError::ALL.iter().map(|e| e.name()).collect();
        for (i, e) in ProxyError::ALL.iter().enumerate() {
            assert_eq!(e.index(), i);
        }
        names.dedup();
        assert_eq!(names.len(), ProxyError::ALL.len());
    }

    #[test]
    fn only_a_connection_closed_before_any_byte_may_be_resent() {
        let resendable: Vec<_> = ProxyError::ALL
            .into_iter()
            .filter(|e| e.may_resend())
            .collect();
        assert_eq!(resendable, [ProxyError::UpstreamClosed]);
        assert_eq!(ProxyError::UpstreamTimeout.status(), 504);
        assert_eq!(ProxyError::NoBackend.status(), 503);
        assert_eq!(ProxyError::ClientTimeout.status(), 408);
        assert_eq!(ProxyError::ResponseHeadCut.status(), 502);
    }
}

/// Why a client connection was refused before its request reached routing; counted by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// A malformed or ambiguous request head (400).
    Malformed,
    /// CONNECT (405).
    MethodNotAllowed,
    /// The head did not arrive within `--request-head-timeout` (408).
    HeadTimeout,
    /// The head is larger than `--max-head-bytes` or has too many fields (431).
    HeadTooLarge,
    /// An HTTP version other than 1.0 and 1.1 (505).
    Version,
    /// A `proxy-protocol` listener got no valid PROXY header (closed without an answer).
    ProxyProtocol,
}

impl Rejection {
    pub const ALL: [Rejection; 6] = [
        Rejection::Malformed,
        Rejection::MethodNotAllowed,
        Rejection::HeadTimeout,
        Rejection::HeadTooLarge,
        Rejection::Version,
        Rejection::ProxyProtocol,
    ];

    /// The kind of a request-head error, from the status the h1 core gives it.
    pub fn from_status(status: u16) -> Rejection {
        match status {
            405 => Rejection::MethodNotAllowed,
            408 => Rejection::HeadTimeout,
            431 => Rejection::HeadTooLarge,
            505 => Rejection::Version,
            _ => Rejection::Malformed,
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Rejection::Malformed | Rejection::ProxyProtocol => 400,
            Rejection::MethodNotAllowed => 405,
            Rejection::HeadTimeout => 408,
            Rejection::HeadTooLarge => 431,
            Rejection::Version => 505,
        }
    }

    pub fn index(self) -> usize {
        Rejection::ALL.iter().position(|&r| r == self).unwrap_or(0)
    }

    /// A stable snake_case name for metrics.
    pub fn name(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::MethodNotAllowed => "method_not_allowed",
            Rejection::HeadTimeout => "head_timeout",
            Rejection::HeadTooLarge => "head_too_large",
            Rejection::Version => "version",
            Rejection::ProxyProtocol => "proxy_protocol",
        }
    }
}
