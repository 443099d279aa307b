//! A certificate's files read and checked before it is served: each failure is one line that
//! names the file and says what to do.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::CertFiles;

/// What `/metrics` and the status page show of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// Its chain's file, as given.
    pub file: String,
    /// The host names it covers (its subjectAltName DNS entries, lowercase; `*.` wildcards kept).
    pub names: Vec<String>,
    /// Validity, in seconds since the Unix epoch.
    pub not_before: i64,
    pub not_after: i64,
}

impl CertInfo {
    /// Seconds until it expires (negative once expired).
    pub fn seconds_left(&self, now: SystemTime) -> i64 {
        self.not_after - unix(now)
    }
}

/// A certificate ready to serve.
pub struct Loaded {
    pub key: Arc<CertifiedKey>,
    pub info: CertInfo,
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// Reads `files`, checks that the key matches the leaf certificate, that the leaf is valid
/// `now` (unless `allow_expired`) and names at least one host.
pub fn load(
    files: &CertFiles,
    provider: &CryptoProvider,
    now: SystemTime,
    allow_expired: bool,
) -> Result<Loaded, String> {
    let chain = read_chain(&files.chain)?;
    let key = read_key(&files.key)?;
    let info = describe(&files.chain, &chain[0])?;
    check_dates(&info, now, allow_expired)?;
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        format!(
            "{}: the private key cannot be used ({e}): give an RSA (2048 bits or more), ECDSA \
             P-256/P-384 or Ed25519 key in PEM",
            files.key
        )
    })?;
    let certified = CertifiedKey::new(chain, signing);
    if certified.keys_match().is_err() {
        return Err(format!(
            "{}: the certificate does not match the private key in {}: give the key this \
             certificate was issued for (or the certificate of this key)",
            files.chain, files.key
        ));
    }
    Ok(Loaded {
        key: Arc::new(certified),
        info,
    })
}

fn read_file(path: &str, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!("{path}: cannot read the {what}: {e}: check the path, and that wtgate's user may read it")
    })
}

fn read_chain(path: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read_file(path, "certificate chain")?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!("{path}: not a valid PEM certificate chain ({e}): give PEM, not DER")
        })?;
    if chain.is_empty() {
        return Err(format!(
            "{path}: no certificate in it (no BEGIN CERTIFICATE block): give the PEM chain, \
             leaf certificate first"
        ));
    }
    Ok(chain)
}

fn read_key(path: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read_file(path, "private key")?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => format!(
            "{path}: no private key in it (no BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE \
             KEY block): give the key's file after a comma, --tls-cert CHAIN.pem,KEY.pem"
        ),
        e => format!("{path}: not a valid PEM private key ({e})"),
    })
}

/// The leaf's names and dates; a certificate that names no host is refused.
fn describe(path: &str, leaf: &CertificateDer<'_>) -> Result<CertInfo, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("{path}: the first certificate is not valid X.509 ({e})"))?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(n) => {
                    names.push(n.to_ascii_lowercase())
                }
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    if let Some(ip) = ip_text(ip) {
                        names.push(ip);
                    }
                }
                _ => {}
            }
        }
    }
    if names.is_empty() {
        return Err(format!(
            "{path}: the certificate names no host (no DNS name or IP address in its \
             subjectAltName; browsers ignore the subject's CN): issue it with the site's names"
        ));
    }
    let v = cert.validity();
    Ok(CertInfo {
        file: path.to_string(),
        names,
        not_before: v.not_before.timestamp(),
        not_after: v.not_after.timestamp(),
    })
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    let ip: std::net::IpAddr = match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok()?.into(),
        16 => <[u8; 16]>::try_from(bytes).ok()?.into(),
        _ => return None,
    };
    Some(ip.to_string())
}

fn check_dates(info: &CertInfo, now: SystemTime, allow_expired: bool) -> Result<(), String> {
    let now = unix(now);
    if allow_expired {
        return Ok(());
    }
    let fix = "renew it, or start with --tls-allow-expired ([tls] allow_expired = true) to \
               serve it anyway";
    if now > info.not_after {
        let days = (now - info.not_after) / 86_400;
        return Err(format!(
            "{}: the certificate expired at {} ({days} day(s) ago): {fix}",
            info.file,
            utc(info.not_after)
        ));
    }
    if now < info.not_before {
        return Err(format!(
            "{}: the certificate is valid only from {}: check this machine's clock, or {fix}",
            info.file,
            utc(info.not_before)
        ));
    }
    Ok(())
}

/// `2026-12-07 16:00:00 UTC`, from seconds since the epoch (civil-from-days, proleptic
/// Gregorian).
pub fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_796_601_600 + 3661), "2026-12-07 01:01:01 UTC");
    }
}
