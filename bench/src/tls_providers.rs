//! The crypto provider bake-off behind wtgate's TLS (issue 16: "aws-lc-rs or ring, chosen by
//! measurement"): the server side of full and resumed TLS 1.3 handshakes, and of 16 KiB records
//! sealed and opened, timed in memory (no sockets, one thread) for each provider, with an ECDSA
//! P-256 and an RSA 2048 certificate. Only the server's calls are timed; the client runs on the
//! same provider, outside the clock.
//!
//!   cargo run --release -p wtgate-bench --bin tls-providers [-- ROUNDS]
//!
//! Prints one line per provider, key and measure, as the median of ROUNDS (default 5) rounds,
//! the providers interleaved in each round.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

const HANDSHAKES: u32 = 300;
const RECORDS: u32 = 2000;

struct Cert {
    name: &'static str,
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

fn cert(name: &'static str, alg: &'static rcgen::SignatureAlgorithm) -> Cert {
    let key = rcgen::KeyPair::generate_for(alg).expect("key");
    let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    let c = params.self_signed(&key).unwrap();
    Cert {
        name,
        chain: vec![c.der().clone()],
        key: key.serialize_der(),
    }
}

fn configs(provider: &Arc<CryptoProvider>, cert: &Cert) -> (Arc<ServerConfig>, Arc<ClientConfig>) {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key.clone()));
    let mut server = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(cert.chain.clone(), key)
        .unwrap();
    server.send_tls13_tickets = 1;
    server.ticketer = if is_ring(provider) {
        rustls::crypto::ring::Ticketer::new().unwrap()
    } else {
        rustls::crypto::aws_lc_rs::Ticketer::new().unwrap()
    };
    let mut roots = RootCertStore::empty();
    roots.add(cert.chain[0].clone()).unwrap();
    let client = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    (Arc::new(server), Arc::new(client))
}

fn is_ring(p: &CryptoProvider) -> bool {
    format!("{:?}", p.key_provider).contains("Ring")
}

/// One handshake; returns the server's time in it.
fn handshake(server_cfg: &Arc<ServerConfig>, client_cfg: &Arc<ClientConfig>) -> Duration {
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(client_cfg.clone(), name).unwrap();
    let mut server_time = Duration::ZERO;
    let started = Instant::now();
    let mut server = ServerConnection::new(server_cfg.clone()).unwrap();
    server_time += started.elapsed();
    for _ in 0..10 {
        let mut to_server = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut to_server).unwrap();
        }
        let t = Instant::now();
        let mut rd = &to_server[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets().unwrap();
        }
        let mut to_client = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut to_client).unwrap();
        }
        server_time += t.elapsed();
        let mut rd = &to_client[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
        }
        if !client.is_handshaking() && !server.is_handshaking() && !client.wants_write() {
            break;
        }
    }
    assert!(!server.is_handshaking(), "handshake did not finish");
    server_time
}

/// Server time per 16 KiB record sealed, then per record opened.
fn records(server_cfg: &Arc<ServerConfig>, client_cfg: &Arc<ClientConfig>) -> (Duration, Duration) {
    let name = ServerName::try_from("localhost").unwrap();
    let mut client = ClientConnection::new(client_cfg.clone(), name).unwrap();
    let mut server = ServerConnection::new(server_cfg.clone()).unwrap();
    let pump = |client: &mut ClientConnection, server: &mut ServerConnection| {
        let mut b = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut b).unwrap();
        }
        let mut rd = &b[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets().unwrap();
        }
        let mut b = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut b).unwrap();
        }
        let mut rd = &b[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).unwrap();
            client.process_new_packets().unwrap();
        }
    };
    for _ in 0..4 {
        pump(&mut client, &mut server);
    }
    let plain = vec![7u8; 16 * 1024];
    let mut sealed = Vec::with_capacity(17 * 1024);
    let t = Instant::now();
    for _ in 0..RECORDS {
        use std::io::Write;
        server.writer().write_all(&plain).unwrap();
        sealed.clear();
        while server.wants_write() {
            server.write_tls(&mut sealed).unwrap();
        }
    }
    let seal = t.elapsed() / RECORDS;
    let mut open = Duration::ZERO;
    let mut out = vec![0u8; 16 * 1024];
    for _ in 0..RECORDS {
        use std::io::{Read, Write};
        client.writer().write_all(&plain).unwrap();
        let mut b = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut b).unwrap();
        }
        let t = Instant::now();
        let mut rd = &b[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).unwrap();
            server.process_new_packets().unwrap();
            while server.reader().read(&mut out).is_ok_and(|n| n > 0) {}
        }
        open += t.elapsed();
    }
    (seal, open / RECORDS)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let providers = [
        (
            "aws-lc-rs",
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        ),
        // Deprecated in rustls 0.23 for lacking post-quantum key exchange: which is one more
        // reason for aws-lc-rs, but the classic handshakes still compare.
        #[allow(deprecated)]
        ("ring", Arc::new(rustls::crypto::ring::default_provider())),
    ];
    let certs = [
        cert("ECDSA P-256", &rcgen::PKCS_ECDSA_P256_SHA256),
        cert("RSA 2048", &rcgen::PKCS_RSA_SHA256),
    ];
    println!(
        "| provider | certificate | full handshake, server µs | resumed, server µs | seal 16 KiB, µs | open 16 KiB, µs |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for c in &certs {
        let mut results: Vec<[Vec<f64>; 4]> = vec![Default::default(), Default::default()];
        for _ in 0..rounds {
            for (i, (_, p)) in providers.iter().enumerate() {
                let (server, client) = configs(p, c);
                // Full: a client config without its session store's tickets each time.
                let full: Duration = (0..HANDSHAKES)
                    .map(|_| {
                        let (_, fresh) = configs(p, c);
                        handshake(&server, &fresh)
                    })
                    .sum();
                handshake(&server, &client);
                let resumed: Duration = (0..HANDSHAKES).map(|_| handshake(&server, &client)).sum();
                let (seal, open) = records(&server, &client);
                let us = |d: Duration| d.as_secs_f64() * 1e6;
                results[i][0].push(us(full) / f64::from(HANDSHAKES));
                results[i][1].push(us(resumed) / f64::from(HANDSHAKES));
                results[i][2].push(us(seal));
                results[i][3].push(us(open));
            }
        }
        for (i, (name, _)) in providers.iter().enumerate() {
            let [f, r, s, o] = results[i].clone().map(median);
            println!(
                "| {name} | {} | {f:.0} | {r:.0} | {s:.1} | {o:.1} |",
                c.name
            );
        }
    }
}
