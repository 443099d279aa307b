//! The blocking HTTP/1.1 wire client: a buffered reader over a `TcpStream` that reads heads and
//! bodies (the test backends use it too, on their side of the connection).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::util::find;

/// Read/write timeout of every test socket: long enough for a loaded CI box, short enough that a
/// stuck proxy fails the test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How many bytes of each backend connection are kept verbatim (the total is always counted).
const RECORD_CAP: usize = 64 * 1024;

/// Counts (and keeps the first [`RECORD_CAP`] bytes of) everything read on one connection.
#[derive(Debug, Default, Clone)]
pub struct ConnRecord {
    pub id: usize,
    pub total: usize,
    pub bytes: Vec<u8>,
}

/// A parsed head (request or response).
#[derive(Debug, Clone)]
pub struct Head {
    /// Request: method / target / version. Response: version / status / reason.
    pub parts: [String; 3],
    pub headers: Vec<(String, String)>,
}

impl Head {
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

/// Parses a head (start line + fields, CRLF line ends only, without the final empty line).
pub fn parse_head(raw: &[u8]) -> io::Result<Head> {
    let bad = |why: &str| io::Error::new(io::ErrorKind::InvalidData, why.to_string());
    // Field values may carry obs-text (bytes 0x80..=0xFF); keep them visible, lossily.
    let text = String::from_utf8_lossy(raw);
    let mut lines = text.split("\r\n");
    let start = lines.next().ok_or_else(|| bad("empty head"))?;
    let mut it = start.splitn(3, ' ');
    let p0 = it.next().unwrap_or("").to_string();
    let p1 = it.next().unwrap_or("").to_string();
    let p2 = it.next().unwrap_or("").to_string();
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if line.contains('\n') || line.contains('\r') {
            return Err(bad("bare CR/LF in head"));
        }
        let (n, v) = line
            .split_once(':')
            .ok_or_else(|| bad("header without ':'"))?;
        headers.push((n.to_string(), v.trim().to_string()));
    }
    Ok(Head {
        parts: [p0, p1, p2],
        headers,
    })
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

    /// Reads a head up to and including the empty line. Ok(None) on EOF before any byte.
    /// Lines must end in CRLF; a head bigger than `limit` is an error.
    pub fn read_head_raw(&mut self, limit: usize) -> io::Result<Option<Vec<u8>>> {
        let mut scanned: usize = 0;
        loop {
            let avail = &self.buf[self.start..];
            if let Some(i) = find(&avail[scanned.saturating_sub(3)..], b"\r\n\r\n") {
                let end = scanned.saturating_sub(3) + i + 4;
                let head = avail[..end].to_vec();
                self.consume(end);
                return Ok(Some(head));
            }
            scanned = avail.len();
            if scanned > limit {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "head too big"));
            }
            if self.fill()? == 0 {
                if self.buffered().is_empty() {
                    return Ok(None);
                }
                return Err(Self::eof_err("inside a head"));
            }
        }
    }

    pub fn read_head(&mut self) -> io::Result<Option<Head>> {
        match self.read_head_raw(1 << 20)? {
            None => Ok(None),
            Some(raw) => parse_head(&raw[..raw.len() - 4]).map(Some),
        }
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

    /// One CRLF-terminated line, without the CRLF.
    pub fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(i) = find(self.buffered(), b"\r\n") {
                let line = self.buffered()[..i].to_vec();
                self.consume(i + 2);
                return Ok(line);
            }
            if self.buffered().len() > 64 * 1024 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
            }
            if self.fill()? == 0 {
                return Err(Self::eof_err("inside a line"));
            }
        }
    }

    /// A chunked body (extensions ignored, trailers read and dropped), fed to `sink`.
    pub fn read_chunked_with(&mut self, mut sink: impl FnMut(&[u8])) -> io::Result<()> {
        let bad = |why: String| io::Error::new(io::ErrorKind::InvalidData, why);
        for _ in 0..10_000_000 {
            let line = self.read_line()?;
            let line = String::from_utf8(line).map_err(|_| bad("chunk size not UTF-8".into()))?;
            let size_txt = line.split(';').next().unwrap().trim();
            if size_txt.is_empty() || !size_txt.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad(format!("bad chunk size line {line:?}")));
            }
            let size = usize::from_str_radix(size_txt, 16)
                .map_err(|_| bad(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers until the empty line.
                for _ in 0..1000 {
                    if self.read_line()?.is_empty() {
                        return Ok(());
                    }
                }
                return Err(bad("too many trailers".into()));
            }
            self.read_n_with(size, &mut sink)?;
            let crlf = self.read_line()?;
            if !crlf.is_empty() {
                return Err(bad("chunk data not followed by CRLF".into()));
            }
        }
        Err(bad("too many chunks".into()))
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
        let head = self
            .read_head()?
            .ok_or_else(|| Self::eof_err("before any response byte"))?;
        let status: u16 = head.parts[1].parse().map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad status line {:?}", head.parts),
            )
        })?;
        let mut body = Vec::new();
        let no_body =
            head_request || (100..200).contains(&status) || status == 204 || status == 304;
        if !no_body {
            if head.has_token("Transfer-Encoding", "chunked") {
                self.read_chunked_with(|d| body.extend_from_slice(d))?;
            } else if let Some(cl) = head.header("Content-Length") {
                let n: usize = cl.parse().map_err(|_| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("bad Content-Length {cl}"),
                    )
                })?;
                self.read_n_with(n, |d| body.extend_from_slice(d))?;
            } else {
                self.read_to_eof_with(|d| body.extend_from_slice(d))?;
            }
        }
        Ok(Response { status, head, body })
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
