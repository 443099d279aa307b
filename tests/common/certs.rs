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
