//! Upstream credentials, one provider per remote: basic auth from the
//! remote's `username`/`password`, or Bearer tokens from the registry token
//! flow (seed 001, "Authentication").
//!
//! A remote answers 401 with `WWW-Authenticate: Bearer realm=…,service=…,
//! scope=…`; the provider asks the realm for a token (with basic auth when
//! the remote has credentials, anonymously otherwise), and the request is
//! sent again with it. Tokens are cached by (realm, service, scope,
//! username) until 30 s before they expire. The realm and service are
//! remembered per remote, so later requests for other repositories fetch
//! their token before the first upstream request instead of after a 401.
//!
//! In a cluster, tokens are also kept in the shared state store (Redis,
//! with the token's own expiry as TTL): a token one node fetched serves
//! every node, so N nodes cost the token server what one does.
//!
//! Each remote has its own provider and token cache: a token or credential
//! of one remote is never sent for another. Keeping them off redirect
//! targets on other hosts is the request rewriter's job
//! (`proxy::upstream::rewrite_redirected`).

use crate::config::Remote;
use crate::state::StateStore;
use crate::storage::index::now_ms;
use filters::ecosystem::oci::BearerChallenge;
use sha2::Digest as _;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// `expires_in` when the token server names none (the distribution spec's
/// default).
const DEFAULT_EXPIRES_IN: u64 = 60;
/// A token is not used during its last seconds, so it cannot expire in
/// flight (seed 001).
const EXPIRY_MARGIN: u64 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    realm: String,
    service: Option<String>,
    scope: String,
}

#[derive(Clone)]
struct Token {
    /// The whole `Authorization` value: `Bearer …`.
    header: String,
    valid_until: Instant,
}

/// One token slot; its async mutex is what makes concurrent requests for
/// the same token wait for a single token request.
type Slot = Arc<tokio::sync::Mutex<Option<Token>>>;

/// The realm and service a remote's last Bearer challenge named.
#[derive(Debug, Clone)]
struct TokenService {
    realm: String,
    service: Option<String>,
}

/// The credentials of one remote.
pub struct RemoteCredentials {
    remote: String,
    basic: Option<String>,
    username: Option<String>,
    password: Option<String>,
    token_service: Mutex<Option<TokenService>>,
    tokens: Mutex<HashMap<TokenKey, Slot>>,
    http: reqwest::Client,
    /// The cluster's state store, where nodes share tokens.
    shared: Option<Arc<dyn StateStore>>,
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
#[error("token request to {realm} for remote '{remote}' failed: {reason}")]
pub struct TokenError {
    remote: String,
    realm: String,
    reason: String,
}

#[derive(serde::Deserialize)]
struct TokenResponse {
    token: Option<String>,
    access_token: Option<String>,
    expires_in: Option<u64>,
}

impl RemoteCredentials {
    fn new(remote: &Remote, http: reqwest::Client, shared: Option<Arc<dyn StateStore>>) -> Self {
        RemoteCredentials {
            remote: remote.name.clone(),
            basic: remote.upstream.as_ref().and_then(|u| u.basic_auth.clone()),
            username: remote.username.clone(),
            password: remote.password.clone(),
            token_service: Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            http,
            shared,
        }
    }

    /// The `Authorization` value for a request needing `scope`: a token
    /// once the remote is known to use the token flow, else basic auth
    /// when configured.
    pub async fn authorization(&self, scope: Option<&str>) -> Result<Option<String>, TokenError> {
        let service = self.token_service.lock().map(|s| s.clone()).ok().flatten();
        match (service, scope) {
            (Some(service), Some(scope)) => {
                let key = TokenKey {
                    realm: service.realm,
                    service: service.service,
                    scope: scope.to_string(),
                };
                self.token(key, None).await.map(Some)
            }
            _ => Ok(self.basic.clone()),
        }
    }

    /// Answers an upstream 401: the `Authorization` value to retry with, or
    /// `None` when retrying cannot help (no usable challenge, or basic
    /// credentials that were already sent). `scope` is used when the
    /// challenge names none; `rejected` is what the refused request sent,
    /// so a token the upstream no longer accepts is fetched anew.
    pub async fn answer_challenge(
        &self,
        www_authenticate: &str,
        scope: Option<&str>,
        rejected: Option<&str>,
    ) -> Result<Option<String>, TokenError> {
        let Some(challenge) = filters::ecosystem::oci::parse_bearer_challenge(www_authenticate)
        else {
            let basic_unsent = self.basic.is_some() && rejected != self.basic.as_deref();
            return Ok(basic_unsent.then(|| self.basic.clone()).flatten());
        };
        let BearerChallenge {
            realm,
            service,
            scope: challenge_scope,
        } = challenge;
        if let Ok(mut known) = self.token_service.lock() {
            *known = Some(TokenService {
                realm: realm.clone(),
                service: service.clone(),
            });
        }
        let Some(scope) = challenge_scope.or(scope.map(str::to_string)) else {
            return Ok(None);
        };
        let key = TokenKey {
            realm,
            service,
            scope,
        };
        self.token(key, rejected).await.map(Some)
    }

    /// A valid token for `key`: cached, or fetched by exactly one of the
    /// requests that need it while the others wait. A cached token equal to
    /// `rejected` is not reused.
    async fn token(&self, key: TokenKey, rejected: Option<&str>) -> Result<String, TokenError> {
        let slot = {
            let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            tokens.entry(key.clone()).or_default().clone()
        };
        let mut slot = slot.lock().await;
        if let Some(token) = slot.as_ref() {
            let usable =
                Instant::now() < token.valid_until && Some(token.header.as_str()) != rejected;
            if usable {
                return Ok(token.header.clone());
            }
        }
        *slot = None;
        let token = match self.shared_token(&key, rejected).await {
            Some(token) => token,
            None => {
                let token = self.fetch(&key).await?;
                self.share(&key, &token).await;
                token
            }
        };
        let header = token.header.clone();
        *slot = Some(token);
        Ok(header)
    }

    /// Where the cluster keeps the token for `key` (the scope may hold
    /// any character, so the key names a digest of it).
    fn shared_key(&self, key: &TokenKey) -> String {
        let service = key.service.as_deref().unwrap_or_default();
        let digest = sha2::Sha256::digest(format!("{}\n{service}\n{}", key.realm, key.scope));
        format!("tokens/{}/{}", self.remote, hex::encode(digest))
    }

    /// A token another node fetched, still usable and not the one refused.
    async fn shared_token(&self, key: &TokenKey, rejected: Option<&str>) -> Option<Token> {
        let store = self.shared.as_ref()?;
        let value = store.get(&self.shared_key(key)).await.ok()??;
        let (until_ms, header) = std::str::from_utf8(&value).ok()?.split_once(' ')?;
        let left_ms = until_ms.parse::<u64>().ok()?.checked_sub(now_ms())?;
        (Some(header) != rejected).then(|| Token {
            header: header.to_string(),
            valid_until: Instant::now() + Duration::from_millis(left_ms),
        })
    }

    /// Offers a fetched token to the other nodes for as long as it is
    /// usable (`{usable until, unix ms} {Authorization value}`).
    async fn share(&self, key: &TokenKey, token: &Token) {
        let Some(store) = &self.shared else {
            return;
        };
        let left = token.valid_until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        let value = format!("{} {}", now_ms() + left.as_millis() as u64, token.header);
        // Unreachable Redis: the link has logged it; this node keeps its copy.
        let _ = store
            .put_expiring(&self.shared_key(key), value.into(), left)
            .await;
    }

    async fn fetch(&self, key: &TokenKey) -> Result<Token, TokenError> {
        let error = |reason: String| TokenError {
            remote: self.remote.clone(),
            realm: key.realm.clone(),
            reason,
        };
        let mut query = vec![("scope", key.scope.as_str())];
        if let Some(service) = &key.service {
            query.push(("service", service.as_str()));
        }
        let mut request = self.http.get(&key.realm).query(&query);
        if let Some(username) = &self.username {
            request = request.basic_auth(username, self.password.as_deref());
        }
        let started = Instant::now();
        let response = request.send().await.map_err(|e| error(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(error(format!("status {status}")));
        }
        let body: TokenResponse = response
            .json()
            .await
            .map_err(|e| error(format!("unreadable answer: {e}")))?;
        let token = body
            .token
            .or(body.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| error("answer has no token".into()))?;
        let expires_in = body.expires_in.unwrap_or(DEFAULT_EXPIRES_IN);
        log::debug!(
            "remote '{}': token for {} valid {expires_in} s",
            self.remote,
            key.scope
        );
        Ok(Token {
            header: format!("Bearer {token}"),
            valid_until: started + usable_for(expires_in),
        })
    }
}

/// How long a token is used: until [`EXPIRY_MARGIN`] before it expires,
/// but at least half its life, so a short-lived token is not fetched anew
/// for every request.
fn usable_for(expires_in: u64) -> Duration {
    Duration::from_secs(expires_in.saturating_sub(EXPIRY_MARGIN).max(expires_in / 2))
}

/// Every remote's provider.
pub struct Credentials {
    remotes: BTreeMap<String, Arc<RemoteCredentials>>,
    connect_timeout: Duration,
    read_timeout: Duration,
    shared: Option<Arc<dyn StateStore>>,
}

impl Credentials {
    pub fn new<'a>(
        remotes: impl IntoIterator<Item = &'a Arc<Remote>>,
        connect_timeout: Duration,
        read_timeout: Duration,
        shared: Option<Arc<dyn StateStore>>,
    ) -> anyhow::Result<Self> {
        let remotes: Vec<&Arc<Remote>> = remotes.into_iter().collect();
        let clients = crate::upstream_tls::UpstreamClients::build(remotes.iter().copied(), || {
            reqwest::Client::builder()
                .connect_timeout(connect_timeout)
                .read_timeout(read_timeout)
                .timeout(connect_timeout + read_timeout * 2)
                .user_agent(concat!("artifactd/", env!("CARGO_PKG_VERSION")))
                .no_proxy()
        })?;
        Ok(Credentials {
            remotes: remotes
                .into_iter()
                .map(|r| {
                    let http = clients.of(&r.name).clone();
                    let credentials = RemoteCredentials::new(r, http, shared.clone());
                    (r.name.clone(), Arc::new(credentials))
                })
                .collect(),
            connect_timeout,
            read_timeout,
            shared,
        })
    }

    /// The providers of a reloaded configuration's remotes, with fresh
    /// token caches (a changed password must not keep an old token).
    pub fn reconfigured<'a>(
        &self,
        remotes: impl IntoIterator<Item = &'a Arc<Remote>>,
    ) -> anyhow::Result<Self> {
        Self::new(
            remotes,
            self.connect_timeout,
            self.read_timeout,
            self.shared.clone(),
        )
    }

    pub fn of(&self, remote: &str) -> Option<&Arc<RemoteCredentials>> {
        self.remotes.get(remote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_used_until_thirty_seconds_before_expiry() {
        assert_eq!(usable_for(300), Duration::from_secs(270));
        assert_eq!(usable_for(60), Duration::from_secs(30));
        assert_eq!(usable_for(40), Duration::from_secs(20));
        assert_eq!(usable_for(0), Duration::ZERO);
    }
}
