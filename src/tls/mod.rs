//! TLS at the edge (issue 16): what a `tls` listener serves, built from [`TlsSettings`] when the
//! engine starts and at each reload, and shared by every shard.
//!
//! - [`certs`]: a certificate's PEM files read and checked (key matches, dates, names), each
//!   failure one line naming the file and the fix;
//! - [`resolve`]: the certificate a handshake gets, by the client's SNI name;
//! - here: the rustls [`ServerConfig`] (TLS 1.2 and 1.3, ALPN `http/1.1`, tickets whose keys
//!   rotate and are shared by all shards and kept across reloads), and [`first_bytes`], the
//!   sans-IO look at a connection's first bytes that tells a TLS client from a plain HTTP one.
//!
//! The handshake and the record layer run on the shard's own sockets (`net::tls`): rustls is
//! driven by hand, with no second runtime. Nothing here rules out kernel TLS: rustls can hand a
//! connection's secrets over once its handshake is done, and `net::tls` is the one place that
//! would then give the socket to the kernel.

pub mod certs;
pub mod resolve;

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use rustls::ServerConfig;
use rustls::server::ProducesTickets;

use crate::config::TlsSettings;
pub use certs::CertInfo;

/// The ALPN protocols offered: HTTP/1.1 only. A client that offers ALPN without it (`h2` only)
/// gets a `no_application_protocol` alert from rustls, not a hang.
const ALPN: &[&[u8]] = &[b"http/1.1"];

/// What the `tls` listeners serve under one generation of the config.
#[derive(Debug)]
pub struct Tls {
    pub server: Arc<ServerConfig>,
    /// Each certificate, in the order given, for `/metrics` and the status page.
    pub certs: Vec<CertInfo>,
}

/// Reads and checks every certificate of `settings` and builds what handshakes use; every
/// problem at once, one line each. `None` without certificates.
pub fn build(settings: &TlsSettings) -> Result<Option<Arc<Tls>>, Vec<String>> {
    if settings.certs.is_empty() {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let now = SystemTime::now();
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    for files in &settings.certs {
        match certs::load(files, &provider, now, settings.allow_expired) {
            Ok(c) => loaded.push(c),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let infos = loaded.iter().map(|c| c.info.clone()).collect();
    let resolver = resolve::ByName::new(loaded, settings.strict_sni);
    let versions = [&rustls::version::TLS13, &rustls::version::TLS12];
    let builder = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .map_err(|e| vec![format!("TLS: {e}")])?;
    let mut server = builder
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    server.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    server.ticketer = ticketer().map_err(|e| vec![e])?;
    // rustls' default, two tickets per handshake (OpenSSL's too): a client that opens
    // connections in parallel uses a ticket per resumption, and with one per handshake its store
    // ran dry (7-14 % full handshakes with 16 parallel clients, against 0.4 % for HAProxy).
    server.send_tls13_tickets = 2;
    Ok(Some(Arc::new(Tls {
        server: Arc::new(server),
        certs: infos,
    })))
}

/// The process's ticket keys: made once, rotated by rustls (a new key every few hours, the old
/// one still accepted for a while), shared by every shard, so a resumed client may land on any,
/// and kept across reloads, so a reload does not cost every client a full handshake.
fn ticketer() -> Result<Arc<dyn ProducesTickets>, String> {
    static TICKETER: OnceLock<Result<Arc<dyn ProducesTickets>, String>> = OnceLock::new();
    TICKETER
        .get_or_init(|| {
            rustls::crypto::aws_lc_rs::Ticketer::new()
                .map_err(|e| format!("TLS session tickets: {e}"))
        })
        .clone()
}

/// Hands rustls the handshake bytes of `input` and processes them (it takes a few KiB at a
/// time, so this loops); returns how many it took, which is fewer than given only once the
/// handshake is done (what follows is application data, for the record layer). Sans-IO: the
/// handshake of `net::tls` and the fuzzer (`fuzz/fuzz_targets/tls_handshake.rs`) run it.
pub fn feed_handshake(
    conn: &mut rustls::ServerConnection,
    input: &[u8],
) -> Result<usize, rustls::Error> {
    let mut rest = input;
    while !rest.is_empty() && conn.is_handshaking() {
        let n = conn
            .read_tls(&mut rest)
            .map_err(|e| rustls::Error::General(format!("handshake: {e}")))?;
        conn.process_new_packets()?;
        if n == 0 {
            break;
        }
    }
    Ok(input.len() - rest.len())
}

/// What a connection's first bytes on a TLS port say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// Too few bytes to tell.
    Unknown,
    /// A TLS handshake record: go on with the handshake.
    Tls,
    /// An HTTP request line (`GET /…`): a client that spoke plain HTTP to the TLS port, to be
    /// told so in a readable answer.
    PlainHttp,
    /// Anything else: closed.
    Garbage,
}

/// Looks at the first bytes of a connection on a TLS port. A TLS client's first record is a
/// handshake record (type 22) of version 3.x; an HTTP client's first byte is a method's letter.
pub fn first_bytes(data: &[u8]) -> FirstBytes {
    match data {
        [] => FirstBytes::Unknown,
        [0x16] => FirstBytes::Tls,
        [0x16, 3, ..] => FirstBytes::Tls,
        [b'A'..=b'Z', rest @ ..] => {
            let method = rest.iter().take(15).take_while(|b| b.is_ascii_uppercase());
            match rest.get(method.count()) {
                Some(b' ') => FirstBytes::PlainHttp,
                None => FirstBytes::Unknown,
                Some(_) => FirstBytes::Garbage,
            }
        }
        _ => FirstBytes::Garbage,
    }
}

/// The answer to a plain HTTP request on a TLS port (nginx says the same): readable in a
/// browser, and the connection closes after it.
pub const PLAIN_HTTP_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: text/plain\r\n\
content-length: 54\r\n\
connection: close\r\n\
\r\n\
The plain HTTP request was sent to the HTTPS port.\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_tls_from_http() {
        assert_eq!(first_bytes(b""), FirstBytes::Unknown);
        assert_eq!(first_bytes(&[0x16]), FirstBytes::Tls);
        assert_eq!(first_bytes(&[0x16, 3, 1, 2, 0]), FirstBytes::Tls);
        assert_eq!(first_bytes(&[0x16, 2]), FirstBytes::Garbage);
        assert_eq!(first_bytes(b"GET / HTTP/1.1\r\n"), FirstBytes::PlainHttp);
        assert_eq!(first_bytes(b"OPTIONS * HTTP/1.1"), FirstBytes::PlainHttp);
        assert_eq!(first_bytes(b"GE"), FirstBytes::Unknown);
        assert_eq!(first_bytes(b"Get / HTTP/1.1"), FirstBytes::Garbage);
        assert_eq!(first_bytes(b"\x00\x01"), FirstBytes::Garbage);
        assert_eq!(first_bytes(b"SSH-2.0-OpenSSH"), FirstBytes::Garbage);
    }

    #[test]
    fn plain_http_answer_is_one_whole_response() {
        let text = std::str::from_utf8(PLAIN_HTTP_ANSWER).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
    }
}
