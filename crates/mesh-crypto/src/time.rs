//! Wall-clock timestamps as they appear in signed records.

use core::fmt;

/// Milliseconds since the Unix epoch (UTC), as carried by signed records and invites.
///
/// This crate never reads a clock: callers pass the current time in, so every check is
/// deterministic and testable (and the same code runs in a simulator with virtual time).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// The latest representable time; used as "never expires".
    pub const NEVER: Self = Self(u64::MAX);

    /// This time plus `millis`, saturating at [`UnixMillis::NEVER`].
    #[must_use]
    pub const fn saturating_add(self, millis: u64) -> Self {
        Self(self.0.saturating_add(millis))
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::NEVER {
            f.write_str("never")
        } else {
            write!(f, "{}ms", self.0)
        }
    }
}
