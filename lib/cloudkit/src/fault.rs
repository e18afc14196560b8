//! A failed API call, classified: may trying again succeed?
//!
//! Each provider turns its SDK's error into an [`ApiError`]: the record's
//! [`Failure`] (the API's own error code when it gave one) and the
//! [`Fault`] that says whether the call may succeed later. The SDKs retry a
//! single call themselves; the fault decides what happens after that: the
//! poll loop ([`crate::poll_until`]) keeps polling through transient faults
//! until its deadline, and fails at once on the others.

use std::fmt;

use appscale_persist::step::Failure;

/// Why an API call failed, as far as trying it again is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Too many requests (HTTP 429, a throttling error code).
    Throttled,
    /// The service failed (HTTP 5xx, an internal-error code, a garbled
    /// answer).
    ServerError,
    /// No answer: a timeout, a refused or dropped connection.
    NoAnswer,
    /// No usable credentials: nothing was sent, or the service refused who
    /// we are.
    NoCredentials,
    /// A definite answer (a 4xx, an error code about the request): the same
    /// request gets the same answer.
    Answered,
}

impl Fault {
    /// The fault an HTTP status means: 429 throttled, 5xx a server error,
    /// anything else an answer.
    pub fn from_http_status(status: u16) -> Fault {
        match status {
            429 => Fault::Throttled,
            500..=599 => Fault::ServerError,
            _ => Fault::Answered,
        }
    }

    /// Whether the call may succeed when tried again later: throttling, a
    /// server error, no answer.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Fault::Throttled | Fault::ServerError | Fault::NoAnswer
        )
    }
}

/// A failed API call: the failure it becomes for the record, and its fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// What the record's `error` says.
    pub failure: Failure,
    /// Whether trying again may help.
    pub fault: Fault,
}

impl ApiError {
    /// An error of `fault` that becomes `failure`.
    pub fn new(fault: Fault, failure: Failure) -> ApiError {
        ApiError { failure, fault }
    }

    /// Whether the call may succeed when tried again later.
    pub fn is_transient(&self) -> bool {
        self.fault.is_transient()
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Failure {
        e.failure
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.failure.message, self.failure.code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_server_errors_and_silence_are_transient_answers_are_not() {
        assert_eq!(Fault::from_http_status(429), Fault::Throttled);
        assert_eq!(Fault::from_http_status(503), Fault::ServerError);
        assert_eq!(Fault::from_http_status(404), Fault::Answered);
        for f in [Fault::Throttled, Fault::ServerError, Fault::NoAnswer] {
            assert!(f.is_transient(), "{f:?}");
        }
        for f in [Fault::Answered, Fault::NoCredentials] {
            assert!(!f.is_transient(), "{f:?}");
        }
    }
}
