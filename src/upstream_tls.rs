//! How one remote's upstream TLS is verified: the system roots (default),
//! the CAs of its `ca_file` instead, or not at all (`tls_insecure`, for
//! lab registries). Applied to pingora's peers and to the HTTP clients
//! that talk to the same upstream (registry tokens, RPM snapshots).

use anyhow::{bail, Context};
use pingora::upstreams::peer::PeerOptions;
use pingora::utils::tls::{parse_x509, WrappedX509};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Default)]
pub struct UpstreamTls {
    ca_file: Option<PathBuf>,
    /// The CA certificates as PEM, for `reqwest`.
    ca_pem: Vec<reqwest::Certificate>,
    /// The same certificates for pingora's connector.
    ca: Option<Arc<[WrappedX509]>>,
    insecure: bool,
    /// Tells pooled connections verified against different CAs apart.
    trust_tag: u64,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("ca_file", &self.ca_file)
            .field("insecure", &self.insecure)
            .finish()
    }
}

impl UpstreamTls {
    /// Reads `ca_file` (every certificate in it must parse).
    pub fn load(ca_file: Option<&Path>, insecure: bool) -> anyhow::Result<UpstreamTls> {
        let Some(path) = ca_file else {
            return Ok(UpstreamTls {
                insecure,
                ..UpstreamTls::default()
            });
        };
        let ders: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("{} is not a PEM certificate file", path.display()))?;
        if ders.is_empty() {
            bail!("{} holds no PEM certificate", path.display());
        }
        let mut ca = Vec::with_capacity(ders.len());
        let mut ca_pem = Vec::with_capacity(ders.len());
        for (i, der) in ders.iter().enumerate() {
            // The same parser pingora's own code uses, which panics on
            // malformed input: check it with webpki first.
            webpki_parses(der).with_context(|| {
                format!("{}: certificate {} is malformed", path.display(), i + 1)
            })?;
            ca.push(WrappedX509::new(der.to_vec(), parse_x509));
            ca_pem.push(reqwest::Certificate::from_der(der)?);
        }
        let trust_tag = {
            use std::hash::{Hash, Hasher};
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            ders.iter().for_each(|der| der.as_ref().hash(&mut hasher));
            hasher.finish()
        };
        Ok(UpstreamTls {
            trust_tag,
            ca_file: Some(path.to_path_buf()),
            ca_pem,
            ca: Some(Arc::from(ca)),
            insecure,
        })
    }

    pub fn is_default(&self) -> bool {
        self.ca.is_none() && !self.insecure
    }

    /// Pingora pools upstream connections by address, SNI and verification
    /// flags, not by the CA that verified them: without this tag in the
    /// peer's group key, a remote trusting the system roots could reuse a
    /// connection that only a remote's private CA accepted.
    pub fn trust_tag(&self) -> u64 {
        self.trust_tag
    }

    pub fn configure_peer(&self, options: &mut PeerOptions) {
        if let Some(ca) = &self.ca {
            options.ca = Some(ca.clone());
        }
        if self.insecure {
            options.verify_cert = false;
            options.verify_hostname = false;
        }
    }

    pub fn configure_client(&self, mut builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        if !self.ca_pem.is_empty() {
            builder = builder.tls_built_in_root_certs(false);
            for cert in &self.ca_pem {
                builder = builder.add_root_certificate(cert.clone());
            }
        }
        builder.danger_accept_invalid_certs(self.insecure)
    }
}

fn webpki_parses(der: &CertificateDer<'_>) -> anyhow::Result<()> {
    let mut store = pingora::tls::RootCertStore::empty();
    store.add(der.clone()).map_err(|e| anyhow::anyhow!("{e}"))
}

/// HTTP clients for upstream requests outside pingora: one shared client,
/// plus one per remote whose TLS verification differs from the default.
pub struct UpstreamClients {
    shared: reqwest::Client,
    per_remote: std::collections::HashMap<String, reqwest::Client>,
}

impl UpstreamClients {
    /// Builds every client from `builder` (timeouts, user agent …).
    pub fn build<'a>(
        remotes: impl IntoIterator<Item = &'a Arc<crate::config::Remote>>,
        builder: impl Fn() -> reqwest::ClientBuilder,
    ) -> anyhow::Result<UpstreamClients> {
        let mut per_remote = std::collections::HashMap::new();
        for remote in remotes {
            if !remote.upstream_tls.is_default() {
                let client = remote.upstream_tls.configure_client(builder()).build()?;
                per_remote.insert(remote.name.clone(), client);
            }
        }
        Ok(UpstreamClients {
            shared: builder().build()?,
            per_remote,
        })
    }

    pub fn of(&self, remote: &str) -> &reqwest::Client {
        self.per_remote.get(remote).unwrap_or(&self.shared)
    }
}
