//! Built-in function ids and their call shapes.
//!
//! HyperDbg sorts its built-ins into arity classes (the `.ZeroOpFunc1 ...` lines at the top
//! of its `Grammar.txt`): the class fixes the number of arguments, whether a call yields a
//! value (and so may stand inside an expression) or is a statement only, and which
//! arguments may be string literals. The id ([`Builtin`] as `u16`) is what compiled code
//! uses to index the runtime's table of built-in functions.

/// What one argument position accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgKind {
    /// An expression (a 64-bit value).
    Value,
    /// A narrow string literal `"..."` or an expression giving the address of one.
    NarrowStrOrValue,
    /// A wide string literal `L"..."` or an expression giving the address of one.
    WideStrOrValue,
    /// A narrow string literal only (printf's format).
    Format,
}

/// The call shape of a built-in, as HyperDbg's arity classes define it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CallShape {
    /// The fixed arguments.
    pub args: &'static [ArgKind],
    /// Further `Value` arguments may follow (printf).
    pub variadic: bool,
    /// The call yields a value; otherwise it may only stand as a statement.
    pub returns_value: bool,
}

const V: ArgKind = ArgKind::Value;
const S: ArgKind = ArgKind::NarrowStrOrValue;
const W: ArgKind = ArgKind::WideStrOrValue;

const STMT0: CallShape = CallShape {
    args: &[],
    variadic: false,
    returns_value: false,
};
const VAL0: CallShape = CallShape {
    args: &[],
    variadic: false,
    returns_value: true,
};
const VAL1: CallShape = CallShape {
    args: &[V],
    variadic: false,
    returns_value: true,
};
const STMT1: CallShape = CallShape {
    args: &[V],
    variadic: false,
    returns_value: false,
};
const VAL2: CallShape = CallShape {
    args: &[V, V],
    variadic: false,
    returns_value: true,
};
const STMT2: CallShape = CallShape {
    args: &[V, V],
    variadic: false,
    returns_value: false,
};
const VAL3: CallShape = CallShape {
    args: &[V, V, V],
    variadic: false,
    returns_value: true,
};
const STMT3: CallShape = CallShape {
    args: &[V, V, V],
    variadic: false,
    returns_value: false,
};
const STR1: CallShape = CallShape {
    args: &[S],
    variadic: false,
    returns_value: true,
};
const STR2: CallShape = CallShape {
    args: &[S, S],
    variadic: false,
    returns_value: true,
};
const STR3: CallShape = CallShape {
    args: &[S, S, V],
    variadic: false,
    returns_value: true,
};
const WSTR1: CallShape = CallShape {
    args: &[W],
    variadic: false,
    returns_value: true,
};
const WSTR2: CallShape = CallShape {
    args: &[W, W],
    variadic: false,
    returns_value: true,
};
const WSTR3: CallShape = CallShape {
    args: &[W, W, V],
    variadic: false,
    returns_value: true,
};
const VARARG: CallShape = CallShape {
    args: &[ArgKind::Format],
    variadic: true,
    returns_value: false,
};

/// Static facts about one built-in.
#[derive(Clone, Copy, Debug)]
pub struct BuiltinInfo {
    pub name: &'static str,
    pub shape: CallShape,
    /// One line for diagnostics and `--help` listings.
    pub summary: &'static str,
}

macro_rules! builtins {
    ($($variant:ident = $name:literal, $shape:expr, $summary:literal;)*) => {
        /// Every built-in function. The discriminant is the id compiled code passes to the
        /// runtime's built-in table.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum Builtin { $($variant,)* }

        impl Builtin {
            pub const ALL: &'static [Builtin] = &[$(Builtin::$variant,)*];

            /// What a call looks like: one load from a table (every run-time call checks its
            /// arguments against it, so it is not [`Builtin::info`]'s match).
            #[inline]
            pub fn shape(self) -> &'static CallShape {
                static SHAPES: [CallShape; Builtin::ALL.len()] = [$($shape,)*];
                &SHAPES[self as usize]
            }

            pub const fn info(self) -> BuiltinInfo {
                match self {
                    $(Builtin::$variant => BuiltinInfo { name: $name, shape: $shape, summary: $summary },)*
                }
            }

            pub const fn name(self) -> &'static str {
                self.info().name
            }

            pub fn from_name(name: &str) -> Option<Builtin> {
                match name { $($name => Some(Builtin::$variant),)* _ => None }
            }

            pub fn from_id(id: u16) -> Option<Builtin> {
                Self::ALL.get(id as usize).copied()
            }

            pub const fn id(self) -> u16 {
                self as u16
            }
        }
    };
}

builtins! {
    // ZeroOpFunc1: statements without arguments.
    Pause = "pause", STMT0, "break into the debugger";
    Flush = "flush", STMT0, "discard the pending output of every event";
    EventTraceStep = "event_trace_step", STMT0, "single-step the guest (step in)";
    EventTraceStepIn = "event_trace_step_in", STMT0, "single-step the guest (step in)";
    EventTraceStepOut = "event_trace_step_out", STMT0, "step out of the current function";
    EventTraceInstrumentationStep = "event_trace_instrumentation_step", STMT0, "instrumentation step";
    EventTraceInstrumentationStepIn = "event_trace_instrumentation_step_in", STMT0, "instrumentation step in";
    // ZeroOpFunc2: values without arguments.
    Rdtsc = "rdtsc", VAL0, "the time-stamp counter";
    Rdtscp = "rdtscp", VAL0, "the time-stamp counter (serialising)";
    LbrSave = "lbr_save", VAL0, "save the last-branch records";
    LbrDump = "lbr_dump", VAL0, "print the last-branch records";
    LbrPrint = "lbr_print", VAL0, "print the last-branch records";
    LbrRestore = "lbr_restore", VAL0, "restore the last-branch records";
    LbrCheck = "lbr_check", VAL0, "whether last-branch records are available";
    // OneOpFunc1: one value in, one value out.
    Poi = "poi", VAL1, "read 8 bytes of guest memory";
    Db = "db", VAL1, "read 1 byte of guest memory";
    Dw = "dw", VAL1, "read 2 bytes of guest memory";
    Dd = "dd", VAL1, "read 4 bytes of guest memory";
    Dq = "dq", VAL1, "read 8 bytes of guest memory";
    Hi = "hi", VAL1, "bits 16..31 of the 8 bytes at an address";
    Low = "low", VAL1, "bits 0..15 of the 8 bytes at an address";
    Neg = "neg", VAL1, "two's complement negation";
    Not = "not", VAL1, "bitwise complement";
    Reference = "reference", VAL1, "the address of a variable (same as &x)";
    CheckAddress = "check_address", VAL1, "1 if the address can be read, else 0";
    DisassembleLen = "disassemble_len", VAL1, "length of the x86-64 instruction at an address";
    DisassembleLen32 = "disassemble_len32", VAL1, "length of the 32-bit x86 instruction at an address";
    DisassembleLen64 = "disassemble_len64", VAL1, "length of the x86-64 instruction at an address";
    InterlockedIncrement = "interlocked_increment", VAL1, "atomically add 1, return the new value";
    InterlockedDecrement = "interlocked_decrement", VAL1, "atomically subtract 1, return the new value";
    PhysicalToVirtual = "physical_to_virtual", VAL1, "translate a physical address (0 if unmapped)";
    VirtualToPhysical = "virtual_to_physical", VAL1, "translate a virtual address (0 if unmapped)";
    PoiPa = "poi_pa", VAL1, "read 8 bytes of physical memory";
    HiPa = "hi_pa", VAL1, "bits 16..31 of the 8 bytes at a physical address";
    LowPa = "low_pa", VAL1, "bits 0..15 of the 8 bytes at a physical address";
    DbPa = "db_pa", VAL1, "read 1 byte of physical memory";
    DwPa = "dw_pa", VAL1, "read 2 bytes of physical memory";
    DdPa = "dd_pa", VAL1, "read 4 bytes of physical memory";
    DqPa = "dq_pa", VAL1, "read 8 bytes of physical memory";
    LbrRestoreByFilter = "lbr_restore_by_filter", VAL1, "restore the last-branch records selected by a mask";
    // OneOpFunc2: one value in, statement only.
    Print = "print", STMT1, "print a value in hex";
    Formats = "formats", STMT1, "print a value in every format";
    EventEnable = "event_enable", STMT1, "enable an event by id";
    EventDisable = "event_disable", STMT1, "disable an event by id";
    EventClear = "event_clear", STMT1, "remove an event by id";
    TestStatement = "test_statement", STMT1, "record a value for the conformance harness";
    SpinlockLock = "spinlock_lock", STMT1, "acquire a spinlock at an address";
    SpinlockUnlock = "spinlock_unlock", STMT1, "release a spinlock at an address";
    EventSc = "event_sc", STMT1, "short-circuit this execution of the event (pre stage only)";
    Microsleep = "microsleep", STMT1, "busy-wait a number of microseconds";
    // TwoOpFunc1: two values in, one value out.
    Eb = "eb", VAL2, "write 1 byte of guest memory; 1 on success, 0 on failure";
    Ed = "ed", VAL2, "write 4 bytes of guest memory; 1 on success, 0 on failure";
    Eq = "eq", VAL2, "write 8 bytes of guest memory; 1 on success, 0 on failure";
    EbPa = "eb_pa", VAL2, "write 1 byte of physical memory";
    EdPa = "ed_pa", VAL2, "write 4 bytes of physical memory";
    EqPa = "eq_pa", VAL2, "write 8 bytes of physical memory";
    InterlockedExchange = "interlocked_exchange", VAL2, "atomically store, return the old value";
    InterlockedExchangeAdd = "interlocked_exchange_add", VAL2, "atomically add, return the old value";
    // TwoOpFunc2: two values in, statement only.
    SpinlockLockCustomWait = "spinlock_lock_custom_wait", STMT2, "acquire a spinlock, spinning at most N times per round";
    EventInject = "event_inject", STMT2, "inject an interruption (type, vector)";
    // ThreeOpFunc1.
    InterlockedCompareExchange = "interlocked_compare_exchange", VAL3, "atomic compare-exchange, return the old value";
    // ThreeOpFunc2.
    Memcpy = "memcpy", STMT3, "copy bytes between addresses";
    MemcpyPa = "memcpy_pa", STMT3, "copy bytes between physical addresses";
    EventInjectErrorCode = "event_inject_error_code", STMT3, "inject an interruption with an error code";
    // Strings.
    Strlen = "strlen", STR1, "length of a narrow string";
    Strcmp = "strcmp", STR2, "compare two narrow strings";
    Strncmp = "strncmp", STR3, "compare at most N bytes of two narrow strings";
    Memcmp = "memcmp", STR3, "compare N bytes";
    Wcslen = "wcslen", WSTR1, "length of a wide string, in UTF-16 units";
    Wcscmp = "wcscmp", WSTR2, "compare two wide strings";
    Wcsncmp = "wcsncmp", WSTR3, "compare at most N units of two wide strings";
    // VarArgFunc1.
    Printf = "printf", VARARG, "formatted output";
}

impl CallShape {
    /// The fewest arguments a call takes.
    pub const fn min_args(&self) -> usize {
        self.args.len()
    }

    /// The most arguments a call takes, if bounded.
    pub const fn max_args(&self) -> Option<usize> {
        if self.variadic {
            None
        } else {
            Some(self.args.len())
        }
    }

    /// What argument `i` accepts.
    pub fn arg_kind(&self, i: usize) -> ArgKind {
        self.args.get(i).copied().unwrap_or(ArgKind::Value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_dense_and_names_round_trip() {
        for (i, &b) in Builtin::ALL.iter().enumerate() {
            assert_eq!(b.id() as usize, i);
            assert_eq!(Builtin::from_id(b.id()), Some(b));
            assert_eq!(Builtin::from_name(b.name()), Some(b));
        }
        assert_eq!(Builtin::from_name("ref"), None);
    }

    #[test]
    fn shapes_follow_hyperdbg_classes() {
        assert!(!Builtin::Printf.info().shape.returns_value);
        assert!(Builtin::Printf.info().shape.variadic);
        assert!(Builtin::Poi.info().shape.returns_value);
        assert!(!Builtin::EventSc.info().shape.returns_value);
        assert_eq!(
            Builtin::Memcmp.info().shape.args,
            &[
                ArgKind::NarrowStrOrValue,
                ArgKind::NarrowStrOrValue,
                ArgKind::Value
            ]
        );
    }
}
