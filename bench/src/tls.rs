//! The generator's connections, plain or TLS: a [`Stream`] is a monoio `TcpStream` and, with
//! `--tls`, a rustls client connection driven by hand on it (no adapter crate, no other runtime):
//! the handshake right after the connect, then every read decrypts and every write encrypts.
//!
//! rustls is sans-IO: ciphertext read from the socket goes into a scratch buffer lent to the ring,
//! then to rustls (`read_tls` + `process_new_packets`); plaintext comes out of `reader()` into the
//! caller's buffer. A write hands the plaintext to `writer()` and sends what `write_tls` makes of
//! it. What rustls wants to send unasked (a key update's answer) goes out with the next write.
//!
//! All connections of a run share one [`ClientConfig`]: with `--tls-resume` its resumption store
//! (sessions and TLS 1.3 tickets) lets a new connection resume a session an earlier one got;
//! without it resumption is disabled and every connection is a full handshake.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, WebPkiServerVerifier, verify_server_name};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, HandshakeKind, RootCertStore,
    SignatureScheme,
};

/// Ciphertext read from the socket at a time: a 16 KiB record with its header, twice over.
const CIPHER_BUF: usize = 34 * 1024;
/// Socket reads a handshake may take before it is given up (a handshake is a few flights).
const HANDSHAKE_READS: usize = 256;

/// What every TLS connection of a run is made with.
#[derive(Debug, Clone)]
pub struct TlsClient {
    pub config: Arc<ClientConfig>,
    /// The server name sent (SNI) and verified in its certificate.
    pub name: ServerName<'static>,
}

impl TlsClient {
    /// TLS 1.2 and 1.3 (aws-lc-rs), or only `version` ("1.2" or "1.3"); ALPN `http/1.1`,
    /// trusting the PEM certificates in `ca`; resuming sessions across connections only if
    /// `resume`.
    pub fn new(
        ca: &Path,
        name: &str,
        version: Option<&str>,
        resume: bool,
    ) -> Result<TlsClient, String> {
        let versions: &[&'static rustls::SupportedProtocolVersion] = match version {
            None => rustls::DEFAULT_VERSIONS,
            Some("1.2") => &[&rustls::version::TLS12],
            Some("1.3") => &[&rustls::version::TLS13],
            Some(v) => return Err(format!("TLS version '{v}': use 1.2 or 1.3")),
        };
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            Trusted::load(ca, &provider).map_err(|e| format!("{}: {e}", ca.display()))?;
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        if !resume {
            config.resumption = Resumption::disabled();
        }
        let name = ServerName::try_from(name.to_string()).map_err(|e| format!("'{name}': {e}"))?;
        Ok(TlsClient {
            config: Arc::new(config),
            name,
        })
    }
}

/// The server certificate check: a chain to one of the `--tls-ca` certificates (webpki), or one
/// of those certificates itself. A self-signed certificate made by `openssl req -x509` (as
/// compare-tls.sh makes them) says it is a CA, which webpki refuses as a server's own; trusted as
/// itself, only its name is checked then (and the handshake's signature made with its key, as
/// always).
#[derive(Debug)]
struct Trusted {
    webpki: Arc<WebPkiServerVerifier>,
    certs: Vec<CertificateDer<'static>>,
}

impl Trusted {
    fn load(ca: &Path, provider: &Arc<rustls::crypto::CryptoProvider>) -> Result<Trusted, String> {
        let certs = CertificateDer::pem_file_iter(ca)
            .map_err(|e| e.to_string())?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let mut roots = RootCertStore::empty();
        for c in &certs {
            roots.add(c.clone()).map_err(|e| e.to_string())?;
        }
        if roots.is_empty() {
            return Err("no certificate in it".into());
        }
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Trusted { webpki, certs })
    }
}

impl ServerCertVerifier for Trusted {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chained =
            self.webpki
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now);
        if chained.is_err() && self.certs.iter().any(|c| c == end_entity) {
            verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        chained
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.webpki.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }
}

/// A connection's TLS state.
struct Tls {
    conn: ClientConnection,
    /// Ciphertext read from the socket; `cipher[fed..]` is not yet handed to rustls.
    cipher: Vec<u8>,
    fed: usize,
    /// Records to send, kept between writes.
    out: Vec<u8>,
}

/// A connection of the generator: plain TCP, or TLS on it.
pub struct Stream {
    tcp: TcpStream,
    tls: Option<Box<Tls>>,
}

/// How a connection attempt failed.
#[derive(Debug)]
pub enum ConnectError {
    /// The TCP connect failed.
    Tcp,
    /// The TLS handshake failed (or could not start).
    Handshake(io::Error),
}

impl Stream {
    pub fn plain(tcp: TcpStream) -> Stream {
        Stream { tcp, tls: None }
    }

    /// Connects to `addr` (no delay on the socket), with the TLS handshake done if `tls`.
    pub async fn connect(
        addr: SocketAddr,
        tls: Option<&TlsClient>,
    ) -> Result<Stream, ConnectError> {
        let tcp = TcpStream::connect_addr(addr)
            .await
            .map_err(|_| ConnectError::Tcp)?;
        let _ = tcp.set_nodelay(true);
        let mut s = Stream::plain(tcp);
        if let Some(c) = tls {
            let conn = ClientConnection::new(c.config.clone(), c.name.clone())
                .map_err(|e| ConnectError::Handshake(invalid(e)))?;
            let tls = s.tls.insert(Box::new(Tls {
                conn,
                cipher: Vec::with_capacity(CIPHER_BUF),
                fed: 0,
                out: Vec::new(),
            }));
            handshake(&mut s.tcp, tls)
                .await
                .map_err(ConnectError::Handshake)?;
        }
        Ok(s)
    }

    /// Whether this TLS connection resumed a session (false for plain TCP).
    pub fn resumed(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.conn.handshake_kind() == Some(HandshakeKind::Resumed))
    }

    /// Reads once into the spare capacity of `data` (after `data.len()`, which grows by what was
    /// read); 0 at the end of the stream. `data` must have spare capacity. If the read is dropped
    /// in flight, `data` is left empty with no capacity.
    pub async fn read_into(&mut self, data: &mut Vec<u8>) -> io::Result<usize> {
        if data.len() == data.capacity() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no room to read into",
            ));
        }
        match self.tls.as_deref_mut() {
            None => sock_read(&mut self.tcp, data).await,
            Some(tls) => tls_read(&mut self.tcp, tls, data).await,
        }
    }

    /// Writes all of `bytes` (encrypted, with TLS).
    pub async fn write_all(&mut self, bytes: Rc<Vec<u8>>) -> io::Result<()> {
        let Some(tls) = self.tls.as_deref_mut() else {
            return self.tcp.write_all(bytes).await.0.map(drop);
        };
        tls.conn.writer().write_all(&bytes)?;
        flush(&mut self.tcp, tls).await
    }

    /// A TLS connection's `close_notify` (nothing for plain TCP); the caller bounds the wait.
    pub async fn close_notify(&mut self) {
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.conn.send_close_notify();
            let _ = flush(&mut self.tcp, tls).await;
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.tcp.as_raw_fd()
    }
}

fn invalid(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// One socket read into the spare capacity of `data`.
async fn sock_read(tcp: &mut TcpStream, data: &mut Vec<u8>) -> io::Result<usize> {
    let buf = std::mem::take(data);
    let (end, cap) = (buf.len(), buf.capacity());
    let (r, slice) = tcp.read(buf.slice_mut(end..cap)).await;
    *data = slice.into_inner();
    r
}

/// Sends all the records rustls has for the peer.
async fn flush(tcp: &mut TcpStream, tls: &mut Tls) -> io::Result<()> {
    if !tls.conn.wants_write() {
        return Ok(());
    }
    let mut out = std::mem::take(&mut tls.out);
    out.clear();
    while tls.conn.wants_write() {
        tls.conn.write_tls(&mut out)?;
    }
    let (r, out) = tcp.write_all(out).await;
    tls.out = out;
    r.map(drop)
}

/// The client side of the handshake: flights out, the server's in, until it is done and sent.
async fn handshake(tcp: &mut TcpStream, tls: &mut Tls) -> io::Result<()> {
    for _ in 0..HANDSHAKE_READS {
        let fed = tls.feed();
        // An alert for a failed handshake goes out too, before the error is returned.
        flush(tcp, tls).await?;
        fed?;
        if !tls.conn.is_handshaking() {
            return Ok(());
        }
        if tls.fed == tls.cipher.len() && tls.read_socket(tcp).await? == 0 {
            let why = "the server closed during the TLS handshake";
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, why));
        }
    }
    Err(io::Error::other("the TLS handshake did not finish"))
}

/// A read of plaintext into the spare capacity of `data`.
async fn tls_read(tcp: &mut TcpStream, tls: &mut Tls, data: &mut Vec<u8>) -> io::Result<usize> {
    loop {
        if let Some(r) = tls.take_plain(data) {
            return r;
        }
        if tls.fed < tls.cipher.len() {
            tls.feed()?;
            continue;
        }
        if tls.read_socket(tcp).await? == 0 {
            // The server closed without close_notify: an end like any other for HTTP.
            return Ok(0);
        }
    }
}

impl Tls {
    /// Reads ciphertext from the socket into `cipher` (emptied first: all of it was fed).
    async fn read_socket(&mut self, tcp: &mut TcpStream) -> io::Result<usize> {
        let mut buf = std::mem::take(&mut self.cipher);
        if buf.capacity() == 0 {
            // A read dropped in flight took the buffer with it.
            buf = Vec::with_capacity(CIPHER_BUF);
        }
        buf.clear();
        self.fed = 0;
        let r = sock_read(tcp, &mut buf).await;
        self.cipher = buf;
        r
    }

    /// Hands rustls the ciphertext not fed yet and processes it: as much as it takes now.
    fn feed(&mut self) -> io::Result<()> {
        let mut rest = &self.cipher[self.fed..];
        let len = rest.len();
        while !rest.is_empty() {
            match self.conn.read_tls(&mut rest) {
                Ok(0) => break,
                Ok(_) => {}
                // Its plaintext buffer is full: the rest waits for the next read.
                Err(e) if e.kind() == io::ErrorKind::Other => break,
                Err(e) => return Err(e),
            }
            self.conn.process_new_packets().map_err(invalid)?;
        }
        let took = len - rest.len();
        if took == 0 && len > 0 && self.plain_waiting()? == 0 {
            return Err(io::Error::other("rustls takes no more ciphertext"));
        }
        self.fed += took;
        Ok(())
    }

    /// Plaintext bytes rustls holds.
    fn plain_waiting(&mut self) -> io::Result<usize> {
        let state = self.conn.process_new_packets().map_err(invalid)?;
        Ok(state.plaintext_bytes_to_read())
    }

    /// Plaintext rustls holds, appended to `data` (up to its capacity); `None` if it holds none
    /// and the stream goes on.
    fn take_plain(&mut self, data: &mut Vec<u8>) -> Option<io::Result<usize>> {
        let state = match self.conn.process_new_packets() {
            Ok(state) => state,
            Err(e) => return Some(Err(invalid(e))),
        };
        let waiting = state.plaintext_bytes_to_read();
        if waiting == 0 {
            // close_notify: the end of the stream.
            return state.peer_has_closed().then_some(Ok(0));
        }
        let len = data.len();
        let take = waiting.min(data.capacity() - len);
        data.resize(len + take, 0);
        let r = self.conn.reader().read(&mut data[len..]);
        data.truncate(len + *r.as_ref().unwrap_or(&0));
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::time::Duration;

    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ServerConfig, ServerConnection, StreamOwned};

    use super::*;

    /// A self-signed certificate for localhost that says it is a CA (as `openssl req -x509`
    /// makes them), in a PEM file, and a server config with it.
    fn server(tag: &str) -> (std::path::PathBuf, Arc<ServerConfig>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let path = pem_file(tag, &cert.pem());
        (path, server_config(vec![cert.der().clone()], &key))
    }

    /// A CA in a PEM file, and a server config with a leaf for localhost it signed.
    fn chained_server(tag: &str) -> (std::path::PathBuf, Arc<ServerConfig>) {
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate_for(alg).unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(ca, ca_key).unwrap();
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let path = pem_file(tag, &ca.pem());
        (
            path,
            server_config(vec![leaf.der().clone(), ca.der().clone()], &key),
        )
    }

    fn pem_file(tag: &str, pem: &str) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("wtgate-bench-{tag}-{}.pem", std::process::id()));
        std::fs::write(&path, pem).unwrap();
        path
    }

    fn server_config(
        chain: Vec<CertificateDer<'static>>,
        key: &rcgen::KeyPair,
    ) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }

    /// Answers `conns` connections, one after another: reads "ping", writes "pong", closes
    /// with close_notify.
    fn pong_server(
        config: Arc<ServerConfig>,
        conns: usize,
    ) -> (SocketAddr, std::thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            for _ in 0..conns {
                let Ok((tcp, _)) = listener.accept() else {
                    return;
                };
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let conn = ServerConnection::new(config.clone()).unwrap();
                let mut s = StreamOwned::new(conn, tcp);
                let mut ping = [0u8; 4];
                if s.read_exact(&mut ping).is_ok() && &ping == b"ping" {
                    let _ = s.write_all(b"pong");
                    s.conn.send_close_notify();
                    let _ = s.flush();
                }
            }
        });
        (addr, t)
    }

    /// One exchange over TLS: whether it resumed, and what came back before the end.
    async fn ping(addr: SocketAddr, client: &TlsClient) -> (bool, Vec<u8>) {
        let mut s = match Stream::connect(addr, Some(client)).await {
            Ok(s) => s,
            Err(e) => panic!("connect: {e:?}"),
        };
        s.write_all(Rc::new(b"ping".to_vec())).await.unwrap();
        let mut got = Vec::with_capacity(64);
        for _ in 0..16 {
            if s.read_into(&mut got).await.unwrap() == 0 {
                break;
            }
        }
        (s.resumed(), got)
    }

    fn exchanges(tag: &str, version: Option<&str>, resume: bool) -> Vec<(bool, Vec<u8>)> {
        let (ca, config) = if tag == "chain" {
            chained_server(tag)
        } else {
            server(tag)
        };
        let client = TlsClient::new(&ca, "localhost", version, resume).unwrap();
        let (addr, server) = pong_server(config, 3);
        let mut rt = crate::rt::runtime().unwrap();
        let got = rt.block_on(async {
            let mut got = Vec::new();
            for _ in 0..3 {
                got.push(ping(addr, &client).await);
            }
            got
        });
        server.join().unwrap();
        let _ = std::fs::remove_file(ca);
        got
    }

    #[test]
    fn full_handshakes_without_resume() {
        let got = exchanges("full", None, false);
        assert!(
            got.iter()
                .all(|(resumed, data)| !resumed && data == b"pong"),
            "{got:?}"
        );
    }

    #[test]
    fn resumes_with_resume() {
        for version in ["1.2", "1.3"] {
            let got = exchanges(&format!("resume{version}"), Some(version), true);
            let resumed: Vec<bool> = got.iter().map(|g| g.0).collect();
            assert_eq!(resumed, [false, true, true], "TLS {version}");
            assert!(got.iter().all(|(_, data)| data == b"pong"), "{got:?}");
        }
    }

    #[test]
    fn trusts_a_chain_to_the_ca() {
        let got = exchanges("chain", None, true);
        let resumed: Vec<bool> = got.iter().map(|g| g.0).collect();
        assert_eq!(resumed, [false, true, true]);
        assert!(got.iter().all(|(_, data)| data == b"pong"), "{got:?}");
    }

    #[test]
    fn wrong_name_fails_the_handshake() {
        let (ca, config) = server("name");
        let client = TlsClient::new(&ca, "example.com", Some("1.2"), false).unwrap();
        let (addr, server) = pong_server(config, 1);
        let mut rt = crate::rt::runtime().unwrap();
        let r = rt.block_on(Stream::connect(addr, Some(&client)));
        assert!(matches!(r, Err(ConnectError::Handshake(_))));
        drop(r);
        server.join().unwrap();
        let _ = std::fs::remove_file(ca);
    }
}
