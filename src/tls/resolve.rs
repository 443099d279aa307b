//! Which certificate a handshake gets: by the client's SNI name, exact names before `*.`
//! wildcards, and among the certificates for a name the first whose key can sign with a scheme
//! the client offers (an ECDSA and an RSA certificate for one site, as HAProxy serves them).

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::Loaded;

#[derive(Debug)]
pub struct ByName {
    keys: Vec<Arc<CertifiedKey>>,
    /// Exact names (and `*.`-wildcard names, stored with the `*.`) → certificates, in order.
    names: HashMap<String, Vec<usize>>,
    /// Refuse a client whose name nothing covers, or that sends none.
    strict: bool,
}

impl ByName {
    pub fn new(loaded: Vec<Loaded>, strict: bool) -> ByName {
        let mut names: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, c) in loaded.iter().enumerate() {
            for name in &c.info.names {
                names.entry(name.clone()).or_default().push(i);
            }
        }
        ByName {
            keys: loaded.into_iter().map(|c| c.key).collect(),
            names,
            strict,
        }
    }

    /// The certificates for `name`, best match first: the exact name's, else its wildcard's.
    fn candidates(&self, name: &str) -> Option<&[usize]> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(found) = self.names.get(&name) {
            return Some(found);
        }
        let (_, parent) = name.split_once('.')?;
        self.names.get(&format!("*.{parent}")).map(Vec::as_slice)
    }

    /// The certificate for a client that sent `name` (or none) and can verify `schemes`.
    pub fn pick(
        &self,
        name: Option<&str>,
        schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        let signs = |i: &usize| self.keys[*i].key.choose_scheme(schemes).is_some();
        if let Some(found) = name.and_then(|n| self.candidates(n)) {
            let i = found.iter().find(|i| signs(i)).unwrap_or(&found[0]);
            return Some(self.keys[*i].clone());
        }
        if self.strict {
            return None;
        }
        let i = (0..self.keys.len()).find(signs).unwrap_or(0);
        self.keys.get(i).cloned()
    }
}

impl ResolvesServerCert for ByName {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.pick(hello.server_name(), hello.signature_schemes())
    }
}
