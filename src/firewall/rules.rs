//! The rules in force, swapped whole, and the files they were read from
//! (a leaf: the application state holds it, the judging reads it).

use crate::config::firewall::{self as settings, FeedFetch, Fingerprint};
use crate::config::{Config, ConfigError};
use arc_swap::{ArcSwap, Guard};
use filters::firewall::Policy;
use parking_lot::Mutex;
use std::sync::Arc;

/// The rules in force and what they were read from.
pub struct Firewall {
    policy: ArcSwap<Policy>,
    pub(super) fingerprint: Mutex<Fingerprint>,
    /// The feeds fetched through a remote, as the rules in force say.
    fetches: Mutex<Vec<FeedFetch>>,
}

impl Firewall {
    /// Compiles the rules of `config`.
    pub fn new(config: &Config) -> Result<Firewall, ConfigError> {
        let compiled = settings::compile(&config.server.firewall, &config.remotes)?;
        log_policy(&compiled.policy);
        Ok(Firewall {
            policy: ArcSwap::from_pointee(compiled.policy),
            fingerprint: Mutex::new(compiled.fingerprint),
            fetches: Mutex::new(compiled.fetches),
        })
    }

    pub fn policy(&self) -> Guard<Arc<Policy>> {
        self.policy.load()
    }

    /// Whether a minimum-age rule applies to `remote` (its index
    /// documents are then asked for in the form with publish times).
    pub fn has_min_age(&self, remote: &str) -> bool {
        self.policy.load().has_min_age(remote)
    }

    /// The feeds to fetch through a remote.
    pub fn fetches(&self) -> Vec<FeedFetch> {
        self.fetches.lock().clone()
    }

    /// The files the rules were read from as they are now, when they
    /// changed since.
    pub(super) fn files_changed(&self) -> Option<Fingerprint> {
        let fingerprint = self.fingerprint.lock();
        let now = settings::current_fingerprint(&fingerprint);
        (now != *fingerprint).then_some(now)
    }

    /// Compiles the rules of `config` again and puts them in force.
    pub fn reload(&self, config: &Config) -> Result<(), ConfigError> {
        let compiled = settings::compile(&config.server.firewall, &config.remotes)?;
        log_policy(&compiled.policy);
        *self.fingerprint.lock() = compiled.fingerprint;
        *self.fetches.lock() = compiled.fetches;
        self.policy.store(Arc::new(compiled.policy));
        Ok(())
    }
}

fn log_policy(policy: &Policy) {
    if !policy.is_empty() {
        log::info!(
            "firewall: {} rules, {} package entries",
            policy.rules().len(),
            policy.entry_count()
        );
    }
}
