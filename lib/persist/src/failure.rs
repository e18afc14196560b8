//! Why an operation failed on one record: a stable code from
//! [`crate::codes`] and a message. The ground floor's error: the device
//! modules ([`crate::blockdev`], [`crate::mount`], [`crate::fstab`],
//! [`crate::lock`], [`crate::loopdev`]) convert their own errors into it
//! without knowing the step vocabulary ([`crate::step`], which re-exports it
//! as `step::Failure`).

use crate::codes::Code;

/// Why a step failed on one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable code for the record's `error.code`.
    pub code: Code,
    /// What went wrong.
    pub message: String,
    /// A deliberate refusal to touch data (exit 3), not a malfunction.
    pub refused: bool,
}

impl Failure {
    /// A failure with a code and message.
    pub fn new(code: Code, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            refused: false,
        }
    }
    /// A refusal: the device holds data.
    pub fn refused(code: Code, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            refused: true,
        }
    }
    /// A failure with a cloud API's own error code, passed through
    /// ([`Code::from_api`]).
    pub fn api(code: impl Into<String>, message: impl Into<String>) -> Failure {
        Failure::new(Code::from_api(code), message)
    }
}
