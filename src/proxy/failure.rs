//! The failures the proxy tells apart, as one type: each is carried as the
//! cause of a pingora error and read back by downcast ([`Failure::of`]),
//! so stale serving, the breakers, retries and logging never recognise an
//! error by its text. (A leaf: whoever raises one and whoever reads it
//! need nothing of each other.)

use pingora::{Error, ErrorSource, ErrorType, ImmutStr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The upstream redirected: the request goes to the next hop.
    #[error("redirect-hop")]
    RedirectHop,
    /// The upstream challenged: the request is sent again with a token.
    #[error("auth-retry")]
    AuthRetry,
    /// The node leading the fill no longer has it: fetch here.
    #[error("peer-gone")]
    PeerGone,
    #[error("too-many-redirects")]
    TooManyRedirects,
    /// The remote's circuit breaker is open.
    #[error("remote-down")]
    RemoteDown,
    /// A repository's new snapshot index waits for its files; the
    /// previous one stays served.
    #[error("snapshot-pending")]
    SnapshotPending,
    /// A body did not match the digest its URL names.
    #[error("digest-mismatch")]
    DigestMismatch,
    /// A file did not match the checksum its index published.
    #[error("checksum-mismatch")]
    ChecksumMismatch,
    /// The upstream's token service did not give a token.
    #[error("token-failed")]
    TokenFailed,
    /// An index document was not well-formed, or came compressed unasked.
    #[error("invalid-document")]
    InvalidDocument,
}

impl Failure {
    /// What an error of this kind says (its pingora error type).
    pub fn text(self) -> &'static str {
        match self {
            Failure::RedirectHop => "following upstream redirect",
            Failure::AuthRetry => "retrying with upstream credentials",
            Failure::PeerGone => "the node leading the fill no longer has it",
            Failure::TooManyRedirects => "too many upstream redirects",
            Failure::RemoteDown => "remote marked down",
            Failure::SnapshotPending => "new repository snapshot not cached yet",
            Failure::DigestMismatch => "upstream body does not match its digest",
            Failure::ChecksumMismatch => {
                "upstream file does not match the checksum its index published"
            }
            Failure::TokenFailed => "upstream token request failed",
            Failure::InvalidDocument => "upstream index document is not well-formed",
        }
    }

    /// An upstream error of this kind (so a cached copy may be served).
    pub fn error(self) -> Box<Error> {
        Error::create(
            ErrorType::Custom(self.text()),
            ErrorSource::Upstream,
            None,
            Some(Box::new(self)),
        )
    }

    /// An upstream error of this kind with what it is about.
    pub fn explain(self, context: impl Into<ImmutStr>) -> Box<Error> {
        Error::create(
            ErrorType::Custom(self.text()),
            ErrorSource::Upstream,
            Some(context.into()),
            Some(Box::new(self)),
        )
    }

    /// An error that makes pingora run the upstream phases again; nothing
    /// has reached the client or the cache yet.
    pub fn retry(self) -> Box<Error> {
        let mut error = self.error();
        error.set_retry(true);
        error
    }

    /// The failure an error carries, however much context was added.
    pub fn of(error: &Error) -> Option<Failure> {
        error.root_cause().downcast_ref::<Failure>().copied()
    }

    /// Whether the error only asked pingora to send the request again.
    pub fn is_retry(self) -> bool {
        matches!(
            self,
            Failure::RedirectHop | Failure::AuthRetry | Failure::PeerGone
        )
    }

    /// Whether an answering upstream's response was refused for its
    /// content (or, for a snapshot, for what is not cached yet): not a
    /// sign of an upstream that is away.
    pub fn refused_content(self) -> bool {
        matches!(
            self,
            Failure::DigestMismatch
                | Failure::ChecksumMismatch
                | Failure::SnapshotPending
                | Failure::InvalidDocument
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_survives_added_context_and_retries() {
        let error = Failure::SnapshotPending
            .explain("3 files still being fetched")
            .more_context("gate");
        assert_eq!(Failure::of(&error), Some(Failure::SnapshotPending));
        assert_eq!(error.esource(), &ErrorSource::Upstream);
        let retry = Failure::PeerGone.retry();
        assert!(retry.retry());
        assert!(Failure::of(&retry).is_some_and(Failure::is_retry));
        assert_eq!(Failure::of(&Error::new_up(ErrorType::ConnectRefused)), None);
        assert_eq!(
            Failure::of(&Error::new_up(ErrorType::Custom("remote marked down"))),
            None,
            "the text alone is not the failure"
        );
    }
}
