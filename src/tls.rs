//! TLS listeners: certificates read from PEM files and replaced in place on
//! SIGHUP ([`crate::reload`]).
//!
//! Each TLS listener gets a [`ReloadableCert`] as its rustls certificate
//! resolver. A handshake asks it for the current certificate, so a reload
//! changes what *new* connections see, while connections already set up
//! keep their session and finish their transfers. A reload that fails (a
//! half-written file, a key that does not match) keeps the old certificate
//! and says why, so a renewal script cannot take the listener down.

use crate::config::TlsFiles;
use anyhow::{anyhow, bail, Context};
use parking_lot::RwLock;
use pingora::tls::sign::CertifiedKey;
use pingora::tls::{ClientHello, CryptoProvider, ResolvesServerCert};
use std::sync::Arc;

/// The certificate of one TLS listener.
#[derive(Debug)]
pub struct ReloadableCert {
    files: TlsFiles,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Reads the chain and key; errors name the files.
    pub fn load(files: &TlsFiles) -> anyhow::Result<Arc<ReloadableCert>> {
        Ok(Arc::new(ReloadableCert {
            current: RwLock::new(Arc::new(read(files)?)),
            files: files.clone(),
        }))
    }

    /// Reads the files again; on success new handshakes use them.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = read(&self.files)?;
        *self.current.write() = Arc::new(fresh);
        Ok(())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

fn read(files: &TlsFiles) -> anyhow::Result<CertifiedKey> {
    pingora::tls::install_default_crypto_provider();
    let (cert, key) = (files.cert.display(), files.key.display());
    let (chain, private_key) = pingora::tls::load_certs_and_key_files(
        &files.cert.to_string_lossy(),
        &files.key.to_string_lossy(),
    )
    .map_err(|e| anyhow!("{e}"))
    .with_context(|| format!("reading TLS files {cert} and {key}"))?
    .ok_or_else(|| {
        anyhow!(
            "{cert} holds no PEM certificate or {key} no PEM private key (PKCS#1, PKCS#8 or SEC1)"
        )
    })?;
    let provider = CryptoProvider::get_default().context("no TLS crypto provider installed")?;
    let signing_key = provider
        .key_provider
        .load_private_key(private_key)
        .with_context(|| format!("{key}: unusable private key"))?;
    let certified = CertifiedKey::new(chain, signing_key);
    if let Err(e) = certified.keys_match() {
        bail!("{key} is not the key of the certificate in {cert}: {e}");
    }
    Ok(certified)
}
