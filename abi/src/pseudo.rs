//! Pseudo-registers: the per-invocation values a script reads as `$name`.

macro_rules! pseudo_regs {
    ($($variant:ident = $name:literal,)*) => {
        /// Every pseudo-register, in HyperDbg's order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum PseudoReg { $($variant,)* }

        impl PseudoReg {
            pub const ALL: &'static [PseudoReg] = &[$(PseudoReg::$variant,)*];

            /// The canonical name (without `$`).
            pub const fn name(self) -> &'static str {
                match self { $(PseudoReg::$variant => $name,)* }
            }

            /// Looks a name up (without `$`). `stage` is hvscript's name for
            /// `event_stage` (HyperDbg's v0.5 spelling), and both are accepted.
            pub fn from_name(name: &str) -> Option<PseudoReg> {
                match name {
                    $($name => Some(PseudoReg::$variant),)*
                    "stage" => Some(PseudoReg::EventStage),
                    _ => None,
                }
            }

            /// Index into [`PseudoValues::values`].
            pub const fn index(self) -> usize {
                self as usize
            }
        }
    };
}

pseudo_regs! {
    Pid = "pid",
    Tid = "tid",
    Pname = "pname",
    Core = "core",
    Proc = "proc",
    Thread = "thread",
    Peb = "peb",
    Teb = "teb",
    Ip = "ip",
    Buffer = "buffer",
    Context = "context",
    EventTag = "event_tag",
    EventId = "event_id",
    EventStage = "event_stage",
    Date = "date",
    Time = "time",
}

/// The number of pseudo-registers.
pub const PSEUDO_REG_COUNT: usize = 16;

/// The values of every pseudo-register for one script invocation, indexed by
/// [`PseudoReg::index`]. `$stage` is 0 in the pre stage and outside events, 1 in post.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PseudoValues {
    pub values: [u64; PSEUDO_REG_COUNT],
}

impl PseudoValues {
    pub fn get(&self, reg: PseudoReg) -> u64 {
        self.values[reg.index()]
    }
    pub fn set(&mut self, reg: PseudoReg, value: u64) {
        self.values[reg.index()] = value;
    }
}

const _: () = assert!(PseudoReg::Time as usize + 1 == PSEUDO_REG_COUNT);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_is_event_stage() {
        assert_eq!(PseudoReg::from_name("stage"), Some(PseudoReg::EventStage));
        assert_eq!(
            PseudoReg::from_name("event_stage"),
            Some(PseudoReg::EventStage)
        );
        assert_eq!(PseudoReg::from_name("Stage"), None);
        for &p in PseudoReg::ALL {
            assert_eq!(PseudoReg::from_name(p.name()), Some(p));
        }
    }
}
