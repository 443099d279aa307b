//! Certificates made at test time with rcgen: a CA, and leaf certificates it signs for the
//! names, key kind and dates a test asks for, written as PEM into a temporary directory that is
//! removed on drop.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

/// Which key a certificate gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    EcdsaP256,
    Rsa2048,
}

/// A test CA and the directory its files go to.
pub struct TestCa {
    pub dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate's files.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Leaf {
    /// `CHAIN,KEY`, as `--tls-cert` takes it.
    pub fn flag(&self) -> String {
        format!("{},{}", self.cert, self.key)
    }
}

fn key(kind: KeyKind) -> KeyPair {
    let alg = match kind {
        KeyKind::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
        KeyKind::Rsa2048 => &rcgen::PKCS_RSA_SHA256,
    };
    KeyPair::generate_for(alg).expect("key generation")
}

fn days_from_now(days: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc() + time::Duration::days(days)
}

impl TestCa {
    /// A new CA (ECDSA P-256), valid from yesterday for 30 days; its files go into a new
    /// directory named after `name`.
    pub fn new(name: &str) -> TestCa {
        let dir = std::env::temp_dir().join(format!(
            "wtgate-ca-{name}-{}-{}",
            std::process::id(),
            super::ports::free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "wtgate test CA");
        (params.not_before, params.not_after) = (days_from_now(-1), days_from_now(30));
        let ca_key = key(KeyKind::EcdsaP256);
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        TestCa {
            dir,
            issuer: Issuer::new(params, ca_key),
        }
    }

    /// The CA certificate's file, for a client to trust.
    pub fn cert(&self) -> String {
        self.dir.join("ca.pem").display().to_string()
    }

    /// A leaf for `names` (DNS names or IP addresses), signed by this CA, valid from `from_days`
    /// days from now (negative: in the past) for `days` days; written as `FILE.pem` (the leaf,
    /// then the CA: a chain) and `FILE.key`.
    pub fn leaf(
        &self,
        file: &str,
        names: &[&str],
        kind: KeyKind,
        from_days: i64,
        days: i64,
    ) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(first) = names.first() {
            (params.distinguished_name).push(rcgen::DnType::CommonName, first.as_str());
        }
        (params.not_before, params.not_after) =
            (days_from_now(from_days), days_from_now(from_days + days));
        let leaf_key = key(kind);
        let leaf = params.signed_by(&leaf_key, &self.issuer).unwrap();
        let ca = std::fs::read_to_string(self.dir.join("ca.pem")).unwrap();
        let (cert, key_file) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&cert, format!("{}{ca}", leaf.pem())).unwrap();
        std::fs::write(&key_file, leaf_key.serialize_pem()).unwrap();
        Leaf {
            cert: cert.display().to_string(),
            key: key_file.display().to_string(),
        }
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl TestCa {
    /// A rustls client config that trusts this CA (and offers ALPN http/1.1).
    pub fn client_config(&self) -> std::sync::Arc<rustls::ClientConfig> {
        use rustls_pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(self.cert()).unwrap();
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.unwrap()).unwrap();
        }
        let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        std::sync::Arc::new(config)
    }
}

/// A blocking TLS client connection to `addr` for `name`, after `preface` (a PROXY header)
/// written in the clear.
pub fn tls_connect(
    config: &std::sync::Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    name: &str,
    preface: &[u8],
) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use std::io::Write;
    let name = rustls_pki_types::ServerName::try_from(name.to_string()).unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    tcp.write_all(preface).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}
