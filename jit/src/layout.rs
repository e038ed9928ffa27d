//! The byte offsets of [`hvscript_abi::ExecCtx`] fields that generated code loads and
//! stores, written out as the code generator's own numbers. A unit test holds each one to
//! `core::mem::offset_of!` of the shared `#[repr(C)]` definition, so the two cannot drift.

pub const REGS: i32 = 0;
pub const PSEUDO: i32 = 8;
pub const GLOBALS: i32 = 16;
pub const STACK: i32 = 32;
pub const STACK_SLOTS: i32 = 40;
pub const SP: i32 = 48;
pub const STACK_HIGH: i32 = 56;
pub const BUILTINS: i32 = 80;
pub const FUNCTIONS: i32 = 88;
pub const FUEL_LEFT: i32 = 104;
pub const DEPTH: i32 = 112;
pub const DEPTH_LIMIT: i32 = 116;
pub const ERROR_KIND: i32 = 120;
pub const ERROR_SITE: i32 = 124;
pub const ERROR_VALUE: i32 = 128;
pub const MEMORY: i32 = 136;
pub const TLB: i32 = 144;

#[cfg(test)]
mod tests {
    use core::mem::offset_of;
    use hvscript_abi::ExecCtx;

    #[test]
    fn offsets_match_the_abi_definition() {
        let table: [(i32, usize, &str); 17] = [
            (super::REGS, offset_of!(ExecCtx, regs), "regs"),
            (super::PSEUDO, offset_of!(ExecCtx, pseudo), "pseudo"),
            (super::GLOBALS, offset_of!(ExecCtx, globals), "globals"),
            (super::STACK, offset_of!(ExecCtx, stack), "stack"),
            (
                super::STACK_SLOTS,
                offset_of!(ExecCtx, stack_slots),
                "stack_slots",
            ),
            (super::SP, offset_of!(ExecCtx, sp), "sp"),
            (
                super::STACK_HIGH,
                offset_of!(ExecCtx, stack_high),
                "stack_high",
            ),
            (super::BUILTINS, offset_of!(ExecCtx, builtins), "builtins"),
            (
                super::FUNCTIONS,
                offset_of!(ExecCtx, functions),
                "functions",
            ),
            (
                super::FUEL_LEFT,
                offset_of!(ExecCtx, fuel_left),
                "fuel_left",
            ),
            (super::DEPTH, offset_of!(ExecCtx, depth), "depth"),
            (
                super::DEPTH_LIMIT,
                offset_of!(ExecCtx, depth_limit),
                "depth_limit",
            ),
            (
                super::ERROR_KIND,
                offset_of!(ExecCtx, error_kind),
                "error_kind",
            ),
            (
                super::ERROR_SITE,
                offset_of!(ExecCtx, error_site),
                "error_site",
            ),
            (
                super::ERROR_VALUE,
                offset_of!(ExecCtx, error_value),
                "error_value",
            ),
            (super::MEMORY, offset_of!(ExecCtx, memory), "memory"),
            (super::TLB, offset_of!(ExecCtx, tlb), "tlb"),
        ];
        for (ours, abi, name) in table {
            assert_eq!(ours as usize, abi, "offset of ExecCtx::{name}");
        }
        // The widths the code generator assumes.
        assert_eq!(core::mem::size_of::<*mut u64>(), 8);
        let c = ExecCtx::empty();
        assert_eq!(core::mem::size_of_val(&c.depth), 4);
        assert_eq!(core::mem::size_of_val(&c.error_kind), 4);
        assert_eq!(core::mem::size_of_val(&c.error_site), 4);
        // `None` must be the null pointer compiled code tests for.
        assert_eq!(core::mem::size_of_val(&c.memory), 8);
        assert_eq!(
            // SAFETY: `Option<MemoryFn>` has the size of a pointer (checked above) and
            // `None` is its null value, so its bits are a valid `usize`.
            unsafe { core::mem::transmute::<Option<hvscript_abi::MemoryFn>, usize>(c.memory) },
            0
        );
    }
}
