//! The calling stage of one execution: what `$stage` (HyperDbg's `$event_stage`) reads.

/// `Pre` runs before the hypervisor emulates the instruction, `Post` after it; outside
/// any event (a `?` evaluation) a script runs as `Pre`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Stage {
    #[default]
    Pre = 0,
    Post = 1,
}

impl Stage {
    /// The value of `$stage`.
    pub const fn value(self) -> u64 {
        self as u64
    }

    pub const fn name(self) -> &'static str {
        match self {
            Stage::Pre => "pre",
            Stage::Post => "post",
        }
    }
}
