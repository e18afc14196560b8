//! Values made on first use and kept for the rest of the run.

use appscale_persist::step::Failure;

/// A value made on first use and kept: the API client (nothing is contacted
/// until a record needs it), this machine's identity from the metadata
/// service. A failure to make it is not kept: the next use tries again.
#[derive(Debug)]
pub struct Lazy<T>(Option<T>);

impl<T> Default for Lazy<T> {
    fn default() -> Self {
        Lazy(None)
    }
}

impl<T: Clone> Lazy<T> {
    /// Nothing made yet.
    pub const fn new() -> Lazy<T> {
        Lazy(None)
    }

    /// The value, made by `make` if this is the first use (or every earlier
    /// one failed).
    pub fn get_or_try(&mut self, make: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
        if let Some(v) = &self.0 {
            return Ok(v.clone());
        }
        let v = make()?;
        self.0 = Some(v.clone());
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appscale_persist::codes;

    #[test]
    fn made_once_and_a_failure_is_tried_again() {
        let mut lazy: Lazy<u32> = Lazy::new();
        let mut calls = 0;
        let failed = lazy.get_or_try(|| {
            calls += 1;
            Err(Failure::new(codes::METADATA, "not yet"))
        });
        assert!(failed.is_err());
        for _ in 0..3 {
            let v = lazy.get_or_try(|| {
                calls += 1;
                Ok(7)
            });
            assert_eq!(v, Ok(7));
        }
        assert_eq!(calls, 2, "one failure, then made once");
    }
}
