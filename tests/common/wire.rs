//! The blocking HTTP/1.1 wire client: a buffered reader over a `TcpStream` that reads heads and
//! bodies (the test backends use it too, on their side of the connection).
//!
//! HTTP is parsed by the crate's own sans-IO core (`wtgate::h1`: `parse_request`,
//! `parse_response`, `BodyFramer`, `ChunkedDecoder`), so the repository has one HTTP/1.1 parser.
//! The tests' independent witness of what went over the wire is the raw bytes: a backend records
//! every byte it reads ([`ConnRecord`]) before any parsing, so a malformed request that reaches it
//! is seen even though its parser refuses it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wtgate::h1::{self, BodyFramer, ChunkedDecoder, Framing, Limits};

use super::util::find;

/// Read/write timeout of every test socket: long enough for a loaded CI box, short enough that a
/// stuck proxy fails the test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits of the test side's parser: far above the proxy's own (16 KiB, 100 fields), since the
/// backends see heads the proxy has grown (`X-Forwarded-*`) and a test must read whatever the
/// proxy sends in order to judge it.
const LIMITS: Limits = Limits {
    max_head_bytes: 1 << 20,
    max_headers: 10_000,
};

/// How many bytes of each backend connection are kept verbatim (the total is always counted).
const RECORD_CAP: usize = 64 * 1024;

/// Counts (and keeps the first [`RECORD_CAP`] bytes of) everything read on one connection.
#[derive(Debug, Default, Clone)]
pub struct ConnRecord {
    pub id: usize,
    pub total: usize,
    pub bytes: Vec<u8>,
}

/// The fields of a parsed head (request or response), as text.
#[derive(Debug, Clone)]
pub struct Head {
    /// The start line as received, for messages.
    pub start_line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// Copies out the start line and fields that `wtgate::h1` found in `buf`. Field values may
    /// carry obs-text (bytes 0x80..=0xFF); they are kept visible, lossily.
    fn from_parsed(buf: &[u8], head_len: usize, headers: &[h1::Header]) -> Head {
        let head = &buf[..head_len];
        let start = head
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(0);
        let line = &head[start..];
        let line = &line[..find(line, b"\r\n").unwrap_or(line.len())];
        let text =
            |r: &std::ops::Range<usize>| String::from_utf8_lossy(&buf[r.clone()]).into_owned();
        Head {
            start_line: String::from_utf8_lossy(line).into_owned(),
            headers: headers
                .iter()
                .map(|h| (text(&h.name), text(&h.value).trim().to_string()))
                .collect(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    /// Whether a comma-separated header (e.g. `Connection`) holds `token` (case-insensitive).
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.header_all(name)
            .iter()
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }
}

/// A request head as a backend read it (`wtgate::h1::parse_request`).
#[derive(Debug, Clone)]
pub struct RequestStart {
    pub method: String,
    pub target: String,
    pub version: &'static str,
    pub head: Head,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
}

/// A response head as the client read it (`wtgate::h1::parse_response`).
#[derive(Debug, Clone)]
pub struct ResponseStart {
    pub status: u16,
    pub head: Head,
    pub framing: Framing,
}

impl ResponseStart {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
}

pub struct Wire {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    record: Option<Arc<Mutex<ConnRecord>>>,
}

impl Wire {
    pub fn new(stream: TcpStream) -> Wire {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        Wire {
            stream,
            buf: Vec::with_capacity(64 * 1024),
            start: 0,
            record: None,
        }
    }

    pub fn connect(addr: SocketAddr) -> Wire {
        let s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Wire::new(s)
    }

    pub(crate) fn recorded(stream: TcpStream, record: Arc<Mutex<ConnRecord>>) -> Wire {
        let mut w = Wire::new(stream);
        w.record = Some(record);
        w
    }

    /// Bytes received but not consumed yet.
    pub fn buffered(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    pub fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads once more from the socket; Ok(0) on EOF.
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 && self.start * 2 >= self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut tmp = [0u8; 64 * 1024];
        let n = loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        if let Some(rec) = &self.record {
            let mut r = rec.lock().unwrap();
            r.total += n;
            let room = RECORD_CAP.saturating_sub(r.bytes.len()).min(n);
            r.bytes.extend_from_slice(&tmp[..room]);
        }
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    pub fn eof_err(what: &str) -> io::Error {
        io::Error::new(io::ErrorKind::UnexpectedEof, format!("EOF {what}"))
    }

    /// Reads until `parse` (one of `wtgate::h1`'s head parsers, applied to the unread bytes)
    /// finds a complete head, and consumes it. Ok(None) on EOF before any byte; a parse error or
    /// EOF inside a head is an error.
    fn read_parsed<T, E: std::fmt::Display>(
        &mut self,
        parse: impl Fn(&[u8]) -> Result<Option<(T, usize)>, E>,
    ) -> io::Result<Option<T>> {
        loop {
            if !self.buffered().is_empty() {
                match parse(self.buffered()) {
                    Ok(Some((parsed, head_len))) => {
                        self.consume(head_len);
                        return Ok(Some(parsed));
                    }
                    Ok(None) => {}
                    Err(e) => {
                        let b = self.buffered();
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{e}: {:?}", String::from_utf8_lossy(&b[..b.len().min(300)])),
                        ));
                    }
                }
            }
            if self.fill()? == 0 {
                if self.buffered().is_empty() {
                    return Ok(None);
                }
                return Err(Self::eof_err("inside a head"));
            }
        }
    }

    /// Reads a request head (a backend's side). Ok(None) on EOF before any byte.
    pub fn read_request_head(&mut self) -> io::Result<Option<RequestStart>> {
        self.read_parsed(|buf| {
            Ok::<_, h1::RequestError>(h1::parse_request(buf, &LIMITS)?.map(|h| {
                let text = |r: &std::ops::Range<usize>| {
                    String::from_utf8_lossy(&buf[r.clone()]).into_owned()
                };
                let start = RequestStart {
                    method: text(&h.method),
                    target: text(&h.target),
                    version: h.version.as_str(),
                    head: Head::from_parsed(buf, h.head_len, &h.headers),
                    framing: h.framing,
                    keep_alive: h.keep_alive,
                    expect_continue: h.expect_continue,
                };
                (start, h.head_len)
            }))
        })
    }

    /// Reads a response head (the client's side); `head_request`: the request was HEAD, so no
    /// body follows. Ok(None) on EOF before any byte.
    pub fn read_response_head(&mut self, head_request: bool) -> io::Result<Option<ResponseStart>> {
        self.read_parsed(|buf| {
            Ok::<_, h1::ResponseError>(h1::parse_response(buf, &LIMITS, head_request)?.map(|h| {
                let start = ResponseStart {
                    status: h.status,
                    head: Head::from_parsed(buf, h.head_len, &h.headers),
                    framing: h.framing,
                };
                (start, h.head_len)
            }))
        })
    }

    /// Reads exactly `n` bytes, feeding them to `sink` piece by piece.
    pub fn read_n_with(&mut self, mut n: usize, mut sink: impl FnMut(&[u8])) -> io::Result<()> {
        while n > 0 {
            if self.buffered().is_empty() && self.fill()? == 0 {
                return Err(Self::eof_err(&format!("with {n} body bytes missing")));
            }
            let take = self.buffered().len().min(n);
            sink(&self.buf[self.start..self.start + take]);
            self.consume(take);
            n -= take;
        }
        Ok(())
    }

    pub fn read_n(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut v = Vec::with_capacity(n.min(16 << 20));
        self.read_n_with(n, |d| v.extend_from_slice(d))?;
        Ok(v)
    }

    /// A body framed as `framing` says (`wtgate::h1::BodyFramer`; chunked bodies are decoded by
    /// `wtgate::h1::ChunkedDecoder`), fed to `sink` piece by piece. EOF before the end of a body
    /// that is not close-delimited is an `UnexpectedEof` error.
    pub fn read_body_with(
        &mut self,
        framing: Framing,
        mut sink: impl FnMut(&[u8]),
    ) -> io::Result<()> {
        if framing == Framing::Chunked {
            return self.read_chunked_with(sink);
        }
        let mut body = BodyFramer::new(framing);
        loop {
            if !self.buffered().is_empty() {
                let adv = body
                    .advance(self.buffered())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                sink(&self.buf[self.start..self.start + adv.consumed]);
                self.consume(adv.consumed);
            }
            if body.is_done() {
                return Ok(());
            }
            if self.fill()? == 0 {
                return body
                    .on_eof()
                    .map_err(|e| Self::eof_err(&format!("inside a body: {e}")));
            }
        }
    }

    /// A chunked body (`wtgate::h1::ChunkedDecoder`: extensions skipped, trailers read and
    /// dropped), its payload fed to `sink`.
    pub fn read_chunked_with(&mut self, mut sink: impl FnMut(&[u8])) -> io::Result<()> {
        let mut decoder = ChunkedDecoder::new();
        loop {
            if !self.buffered().is_empty() {
                let adv = decoder
                    .advance(&self.buf[self.start..], &mut sink)
                    .map_err(|e| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("chunked body: {e}"))
                    })?;
                self.consume(adv.consumed);
                if adv.done {
                    return Ok(());
                }
            }
            if self.fill()? == 0 {
                return Err(Self::eof_err("inside a chunked body"));
            }
        }
    }

    /// Everything until EOF.
    pub fn read_to_eof_with(&mut self, mut sink: impl FnMut(&[u8])) -> io::Result<()> {
        loop {
            if !self.buffered().is_empty() {
                sink(self.buffered());
                let n = self.buffered().len();
                self.consume(n);
            }
            if self.fill()? == 0 {
                return Ok(());
            }
        }
    }

    /// Reads one response. `head_request`: the request was HEAD (no body). 1xx responses (incl.
    /// 101) are returned as they are, without a body.
    pub fn read_response(&mut self, head_request: bool) -> io::Result<Response> {
        let start = self
            .read_response_head(head_request)?
            .ok_or_else(|| Self::eof_err("before any response byte"))?;
        let mut body = Vec::new();
        self.read_body_with(start.framing, |d| body.extend_from_slice(d))?;
        Ok(Response {
            status: start.status,
            head: start.head,
            body,
        })
    }

    /// Reads a response, skipping interim (1xx other than 101) answers.
    pub fn read_final_response(&mut self) -> io::Result<Response> {
        for _ in 0..10 {
            let r = self.read_response(false)?;
            if !(100..200).contains(&r.status) || r.status == 101 {
                return Ok(r);
            }
        }
        Err(io::Error::other("too many interim responses"))
    }

    /// Whether the peer has closed: EOF (or a reset) with no further byte. Returns the stray bytes
    /// otherwise. Waits at most [`IO_TIMEOUT`].
    pub fn expect_closed(&mut self) -> Result<(), String> {
        if !self.buffered().is_empty() {
            return Err(format!(
                "unexpected bytes after the response: {:?}",
                String::from_utf8_lossy(self.buffered())
            ));
        }
        match self.fill() {
            Ok(0) => Ok(()),
            Ok(_) => Err(format!(
                "unexpected bytes after the response: {:?}",
                String::from_utf8_lossy(self.buffered())
            )),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(format!("connection still open after {IO_TIMEOUT:?}"))
            }
            Err(e) => Err(format!("error instead of EOF: {e}")),
        }
    }

    pub fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        self.stream.write_all(data)
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub head: Head,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    /// The `X-Backend` header the test backends put on every answer.
    pub fn backend(&self) -> &str {
        self.header("X-Backend").unwrap_or("<none>")
    }
}

/// Opens a connection, writes `raw`, reads one response.
pub fn send_request(addr: SocketAddr, raw: &[u8]) -> io::Result<Response> {
    let mut w = Wire::connect(addr);
    w.write_all(raw)?;
    w.read_response(raw.starts_with(b"HEAD "))
}

/// A simple GET with a Host header, keep-alive.
pub fn get(target: &str) -> Vec<u8> {
    format!("GET {target} HTTP/1.1\r\nHost: wt.example\r\nUser-Agent: wtgate-tests\r\n\r\n")
        .into_bytes()
}

/// A GET of `target` when `body` is empty, else a POST of `body` with its Content-Length.
pub fn get_or_post(target: &str, body: &[u8]) -> Vec<u8> {
    if body.is_empty() {
        return get(target);
    }
    let mut raw = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}
