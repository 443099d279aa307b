//! The TLS handshake's entry point on arbitrary bytes: `first_bytes` (TLS, plain HTTP or
//! garbage), then `feed_handshake` driving a rustls server connection with wtgate's own
//! `ServerConfig` (SNI resolver, ALPN, tickets), the bytes split into reads the way the input's
//! first byte says, and whatever the server answers taken out after each read.
//!
//! Invariants: no panic; `first_bytes` of a prefix is `Unknown` or the whole input's answer;
//! `feed_handshake` never claims more bytes than it was given; once it fails, the connection
//! stays failed.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use wtgate::config::{CertFiles, TlsSettings};
use wtgate::tls::{FirstBytes, feed_handshake, first_bytes};

fn config() -> Arc<rustls::ServerConfig> {
    static CONFIG: OnceLock<Arc<rustls::ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let key = rcgen::KeyPair::generate().unwrap();
            let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
            let cert = params.self_signed(&key).unwrap();
            let dir = std::env::temp_dir().join(format!("wtgate-fuzz-tls-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let pem = dir.join("site.pem");
            std::fs::write(&pem, format!("{}{}", cert.pem(), key.serialize_pem())).unwrap();
            let path = pem.display().to_string();
            let settings = TlsSettings {
                certs: vec![CertFiles {
                    chain: path.clone(),
                    key: path,
                }],
                ..TlsSettings::default()
            };
            let tls = wtgate::tls::build(&settings).unwrap().unwrap();
            tls.server.clone()
        })
        .clone()
}

fuzz_target!(|data: &[u8]| {
    let whole = first_bytes(data);
    for end in 0..data.len().min(16) {
        let part = first_bytes(&data[..end]);
        assert!(part == FirstBytes::Unknown || part == whole, "{end}: {part:?} vs {whole:?}");
    }
    if whole != FirstBytes::Tls {
        return;
    }
    let mut conn = rustls::ServerConnection::new(config()).unwrap();
    let step = usize::from(data.first().copied().unwrap_or(1) % 61) + 1;
    let mut failed = false;
    for chunk in data.chunks(step) {
        match feed_handshake(&mut conn, chunk) {
            Ok(took) => {
                assert!(!failed, "a failed handshake went on");
                assert!(took <= chunk.len());
            }
            Err(_) => failed = true,
        }
        let mut out = Vec::new();
        while conn.wants_write() {
            if conn.write_tls(&mut out).is_err() {
                break;
            }
        }
        if failed {
            break;
        }
    }
});
