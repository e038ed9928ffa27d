//! Memory accesses in compiled code: typed loads and stores (`Inst::Load`, `Inst::Store`)
//! and the guest-memory built-ins `poi db dw dd dq eb ed eq`.
//!
//! Each access takes the cheapest path that is exactly what the runtime would do:
//! 1. a typed access inside `stack[..stack_high]` (the part of the local stack this run
//!    has handed out, so already zeroed and cleared again after the run) is a plain
//!    memory access;
//! 2. otherwise, if its page is in the translation cache at [`ExecCtx::tlb`]
//!    (`hvscript_abi::TlbEntry`; for a write, cached as writable) and the access does not
//!    cross the page's end, it is a plain access to the host address `addr + delta`;
//! 3. otherwise it calls the runtime: the context's [`MemoryFn`] for a typed access, the
//!    built-in itself for `dq`, `eq`, ... — which report faults with their own errors
//!    and sites, and fill the cache for the next access to the page.
//!
//! The cache only ever holds guest pages (never the script's own stack or globals), so the
//! order of 1 and 2 does not change what an access reaches. A page-straddling access
//! always takes path 3.
//!
//! [`ExecCtx::tlb`]: hvscript_abi::ExecCtx::tlb
//! [`MemoryFn`]: hvscript_abi::MemoryFn

use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{BlockArg, InstBuilder, Value};

use hvscript_abi::exec::{
    memory_access, TLB_ENTRIES, TLB_ENTRY_SHIFT, TLB_PAGE_SHIFT, TLB_PAGE_SIZE,
};
use hvscript_abi::{Builtin, ExecError};
use hvscript_grammar::ast::Span;
use hvscript_lang::ir::{Operand, ScalarTy};

use super::{imported, mem, mem_const, mem_typed, memory_signature, FunctionTranslator, JitError};
use crate::layout as off;

type Block = cranelift_codegen::ir::Block;

/// Byte offsets of `TlbEntry`'s fields (`#[repr(C)]`, checked by a test below).
const ENTRY_READ_PAGE: i32 = 0;
const ENTRY_WRITE_PAGE: i32 = 8;
const ENTRY_DELTA: i32 = 16;

/// A built-in compiled code serves inline on a cache hit: (bytes, write).
fn inline_access(builtin: Builtin) -> Option<(usize, bool)> {
    Some(match builtin {
        Builtin::Poi | Builtin::Dq => (8, false),
        Builtin::Dd => (4, false),
        Builtin::Dw => (2, false),
        Builtin::Db => (1, false),
        Builtin::Eq => (8, true),
        Builtin::Ed => (4, true),
        Builtin::Eb => (1, true),
        _ => return None,
    })
}

impl FunctionTranslator<'_, '_, '_> {
    /// Whether `[addr, addr + width)` lies inside `stack[..stack_high]`. `stack_high` is
    /// read at every access: calls and the memory function raise it.
    fn in_handed_out_stack(&mut self, addr: Value, width: usize) -> Value {
        let offset = self.b.ins().isub(addr, self.stack);
        let high = self.b.ins().load(I64, mem(), self.ctx, off::STACK_HIGH);
        let high_bytes = self.b.ins().ishl_imm_s(high, 3);
        // `offset < high_bytes` bounds the offset, so adding the width cannot wrap; it also
        // rejects everything when nothing is handed out (`stack_high == 0`).
        let starts_inside = self
            .b
            .ins()
            .icmp(IntCC::UnsignedLessThan, offset, high_bytes);
        let end = self.b.ins().iadd_imm_s(offset, width as i64);
        let ends_inside = self
            .b
            .ins()
            .icmp(IntCC::UnsignedLessThanOrEqual, end, high_bytes);
        self.b.ins().band(starts_inside, ends_inside)
    }

    /// Ends the current block with a branch on the translation cache: to `hit` when the
    /// page of `addr` is cached (as writable for a write) and `[addr, addr + width)` stays
    /// inside it, else to `miss`. `known` is `addr`'s value when it is a compile-time
    /// constant: the page, the entry and the in-page test are then decided here. Returns
    /// where the entry is (a base and a byte offset), for [`Self::host_address`] in `hit`.
    fn branch_on_tlb(
        &mut self,
        addr: Value,
        known: Option<u64>,
        width: usize,
        write: bool,
        hit: Block,
        miss: Block,
    ) -> (Value, i32) {
        let tag_at = if write {
            ENTRY_WRITE_PAGE
        } else {
            ENTRY_READ_PAGE
        };
        let last = TLB_PAGE_SIZE - width as u64;
        let tlb = self.b.ins().load(I64, mem_const(), self.ctx, off::TLB);
        if let Some(a) = known {
            let page = a >> TLB_PAGE_SHIFT;
            let at = ((page as usize % TLB_ENTRIES) << TLB_ENTRY_SHIFT) as i32;
            if a & (TLB_PAGE_SIZE - 1) > last {
                // Straddles a page end: never served inline.
                self.b.ins().jump(miss, &[]);
            } else {
                // Not read-only: the runtime refills entries during calls.
                let tag = self.b.ins().load(I64, mem(), tlb, at + tag_at);
                let cached = self.b.ins().icmp_imm_u(IntCC::Equal, tag, page as i64);
                self.b.ins().brif(cached, hit, &[], miss, &[]);
            }
            return (tlb, at);
        }
        let page = self.b.ins().ushr_imm_u(addr, TLB_PAGE_SHIFT as i64);
        let index = self.b.ins().band_imm_u(page, (TLB_ENTRIES - 1) as i64);
        let offset = self.b.ins().ishl_imm_u(index, TLB_ENTRY_SHIFT as i64);
        let entry = self.b.ins().iadd(tlb, offset);
        let tag = self.b.ins().load(I64, mem(), entry, tag_at);
        let mut cached = self.b.ins().icmp(IntCC::Equal, tag, page);
        if width > 1 {
            let in_page = self.b.ins().band_imm_u(addr, (TLB_PAGE_SIZE - 1) as i64);
            let fits =
                self.b
                    .ins()
                    .icmp_imm_u(IntCC::UnsignedLessThanOrEqual, in_page, last as i64);
            cached = self.b.ins().band(cached, fits);
        }
        self.b.ins().brif(cached, hit, &[], miss, &[]);
        (entry, 0)
    }

    /// In the `hit` block of [`Self::branch_on_tlb`]: the host address of `addr`.
    fn host_address(&mut self, (entry, at): (Value, i32), addr: Value) -> Value {
        let delta = self.b.ins().load(I64, mem(), entry, at + ENTRY_DELTA);
        self.b.ins().iadd(addr, delta)
    }

    /// The `width` bytes at host address `at`, zero-extended.
    fn load_bytes(&mut self, width: usize, at: Value) -> Value {
        match width {
            1 => self.b.ins().uload8(I64, mem_typed(), at, 0),
            2 => self.b.ins().uload16(I64, mem_typed(), at, 0),
            4 => self.b.ins().uload32(mem_typed(), at, 0),
            _ => self.b.ins().load(I64, mem_typed(), at, 0),
        }
    }

    /// Stores the low `width` bytes of `value` at host address `at`.
    fn store_bytes(&mut self, width: usize, value: Value, at: Value) {
        match width {
            1 => self.b.ins().istore8(mem_typed(), value, at, 0),
            2 => self.b.ins().istore16(mem_typed(), value, at, 0),
            4 => self.b.ins().istore32(mem_typed(), value, at, 0),
            _ => self.b.ins().store(mem_typed(), value, at, 0),
        };
    }

    /// Calls the context's memory function (see [`hvscript_abi::MemoryFn`]) and returns
    /// at once if it recorded an error. Without a memory function there is no memory
    /// beyond the inline paths: the access fails here, with the address as the value.
    fn call_memory(&mut self, access: u64, site: u32, addr: Value, value: Value) -> Value {
        let f = self.b.ins().load(I64, mem_const(), self.ctx, off::MEMORY);
        let missing = self.b.ins().icmp_imm_s(IntCC::Equal, f, 0);
        self.raise_if(missing, ExecError::Memory, site, addr);
        let call_conv = self.shared.call_conv;
        let sig = imported(&mut self.b, &mut self.memory_sig, || {
            memory_signature(call_conv)
        });
        let access = self.b.ins().iconst(I64, access as i64);
        let call = self
            .b
            .ins()
            .call_indirect(sig, f, &[self.ctx, access, addr, value]);
        let v = self.b.inst_results(call)[0];
        self.unwind_on_error();
        v
    }

    /// Ends the current block with a branch on whether a `width`-byte access at `addr` lies
    /// in the handed-out stack; returns the (stack, elsewhere) blocks. The stack block is
    /// laid out first, so array and struct accesses in loops fall through.
    fn branch_on_stack(&mut self, addr: Value, width: usize) -> (Block, Block) {
        let inside = self.in_handed_out_stack(addr, width);
        let (stack, elsewhere) = (self.b.create_block(), self.b.create_block());
        self.b.ins().brif(inside, stack, &[], elsewhere, &[]);
        (stack, elsewhere)
    }

    /// In the block for accesses outside the stack: ends it with the cache lookup and
    /// returns the (cached, runtime call) blocks and the host address for the cached one,
    /// whose block is left current.
    fn branch_on_guest(
        &mut self,
        addr: Value,
        known: Option<u64>,
        width: usize,
        write: bool,
    ) -> (Block, Block, Value) {
        let (cached, call) = (self.b.create_block(), self.b.create_block());
        let entry = self.branch_on_tlb(addr, known, width, write, cached, call);
        self.b.set_cold_block(call);
        self.b.switch_to_block(cached);
        let host = self.host_address(entry, addr);
        (cached, call, host)
    }

    /// `Inst::Load`: the `ty`-wide bytes at `addr` (`known` when constant), normalised to
    /// `ty`.
    pub(super) fn typed_load(
        &mut self,
        ty: ScalarTy,
        addr: Value,
        known: Option<u64>,
        span: Span,
    ) -> Value {
        let width = ty.bytes();
        let site = self.shared.site(span);
        let join = self.b.create_block();
        // Every path delivers the bytes zero-extended, so one normalisation after the join
        // serves them all.
        self.b.append_block_param(join, I64);
        let (stack, elsewhere) = self.branch_on_stack(addr, width);

        self.b.switch_to_block(stack);
        let raw = self.load_bytes(width, addr);
        self.b.ins().jump(join, &[BlockArg::Value(raw)]);

        self.b.switch_to_block(elsewhere);
        let (_, call, host) = self.branch_on_guest(addr, known, width, false);
        let raw = self.load_bytes(width, host);
        self.b.ins().jump(join, &[BlockArg::Value(raw)]);

        self.b.switch_to_block(call);
        let zero = self.b.ins().iconst(I64, 0);
        let raw = self.call_memory(memory_access(site, width as u8, false), site, addr, zero);
        self.b.ins().jump(join, &[BlockArg::Value(raw)]);

        self.b.switch_to_block(join);
        let raw = self.b.block_params(join)[0];
        self.normalize_scalar(ty, raw)
    }

    /// `Inst::Store`: the low `ty`-wide bytes of `value` at `addr` (`known` when constant).
    pub(super) fn typed_store(
        &mut self,
        ty: ScalarTy,
        addr: Value,
        known: Option<u64>,
        value: Value,
        span: Span,
    ) {
        let width = ty.bytes();
        let site = self.shared.site(span);
        let join = self.b.create_block();
        let (stack, elsewhere) = self.branch_on_stack(addr, width);

        self.b.switch_to_block(stack);
        self.store_bytes(width, value, addr);
        self.b.ins().jump(join, &[]);

        self.b.switch_to_block(elsewhere);
        let (_, call, host) = self.branch_on_guest(addr, known, width, true);
        self.store_bytes(width, value, host);
        self.b.ins().jump(join, &[]);

        self.b.switch_to_block(call);
        self.call_memory(memory_access(site, width as u8, true), site, addr, value);
        self.b.ins().jump(join, &[]);

        self.b.switch_to_block(join);
    }

    /// A built-in call, with `poi db dw dd dq eb ed eq` served inline on a cache hit (the
    /// call itself is then the miss path: it reports faults as the built-in does and
    /// fills the cache). `eb ed eq` return 1 on a hit, as after a successful write.
    pub(super) fn builtin(
        &mut self,
        builtin: Builtin,
        args: &[Operand],
        span: Span,
    ) -> Result<Value, JitError> {
        let Some((width, write)) = inline_access(builtin) else {
            return self.call_builtin(builtin.id(), args, span);
        };
        let expected = if write { 2 } else { 1 };
        let temps: Vec<u32> = args
            .iter()
            .filter_map(|a| match a {
                Operand::Temp(t) => Some(*t),
                Operand::Str(_) => None,
            })
            .collect();
        if args.len() != expected || temps.len() != expected {
            // Leave the argument errors to the built-in.
            return self.call_builtin(builtin.id(), args, span);
        }
        let known = self.known(temps[0]);
        let addr = self.get(temps[0]);
        let (cached, call, join) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        self.b.append_block_param(join, I64);
        let entry = self.branch_on_tlb(addr, known, width, write, cached, call);
        self.b.set_cold_block(call);

        self.b.switch_to_block(cached);
        let host = self.host_address(entry, addr);
        let result = if write {
            let value = self.get(temps[1]);
            self.store_bytes(width, value, host);
            self.b.ins().iconst(I64, 1)
        } else {
            self.load_bytes(width, host)
        };
        self.b.ins().jump(join, &[BlockArg::Value(result)]);

        self.b.switch_to_block(call);
        let result = self.call_builtin(builtin.id(), args, span)?;
        self.b.ins().jump(join, &[BlockArg::Value(result)]);

        self.b.switch_to_block(join);
        Ok(self.b.block_params(join)[0])
    }
}

#[cfg(test)]
mod tests {
    use core::mem::{offset_of, size_of};
    use hvscript_abi::exec::{TLB_ENTRIES, TLB_ENTRY_SHIFT, TLB_PAGE_SHIFT, TLB_PAGE_SIZE};
    use hvscript_abi::TlbEntry;

    #[test]
    fn entry_layout_matches_the_abi() {
        assert_eq!(
            super::ENTRY_READ_PAGE as usize,
            offset_of!(TlbEntry, read_page)
        );
        assert_eq!(
            super::ENTRY_WRITE_PAGE as usize,
            offset_of!(TlbEntry, write_page)
        );
        assert_eq!(super::ENTRY_DELTA as usize, offset_of!(TlbEntry, delta));
        assert_eq!(size_of::<TlbEntry>(), 1 << TLB_ENTRY_SHIFT);
        assert!(TLB_ENTRIES.is_power_of_two());
        assert_eq!(TLB_PAGE_SIZE, 1 << TLB_PAGE_SHIFT);
    }
}
