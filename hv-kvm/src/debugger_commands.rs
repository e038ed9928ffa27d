//! The debugger commands on a VM ([`DebuggerCommand`]), answered in HyperDbg's layouts:
//! `g`, `pause`, `r [REG [= EXPR]]`, `~ [N]`, `db/dc/dw/dd/dq` and `!d*` (physical),
//! `eb/ew/ed/eq` and `!e*`, `u ADDR [l LEN]` (iced-x86, with symbols), and `k`, which is
//! refused: the guests here keep no frame pointers or unwind tables the VMM could trust.
//!
//! Addresses are evaluated against the current core's registers when the guest is paused
//! (`dq @rsp`), with the guest's symbols; virtual addresses go through that core's page
//! tables (while the guest runs, through the VM's own: the demo's boot tables, the
//! program's). Every error is located in the command line.

use hv_core::{CommandError, DebuggerCommand, Expr, SymbolMap, Symbols};
use hvscript_abi::{GuestRegs, Register};

use crate::debugger::Debugger;
use crate::memory::GuestMemory;

/// What the debugger commands need from a VM.
pub trait DebugTarget {
    fn debugger(&self) -> &Debugger;
    fn guest_memory(&self) -> &GuestMemory;
    /// Page tables for virtual addresses while the guest runs.
    fn running_cr3(&self) -> u64;
    fn debug_symbols(&self) -> SymbolMap;
    /// Shows the guest's own bytes where the VMM patched its code (hooks), if it does.
    fn unpatch(&self, _at: u64, _bytes: &mut [u8]) {}
}

/// Symbols plus the current core's registers (`@rax`, `rax`) for address expressions.
struct WithRegisters<'a> {
    symbols: &'a SymbolMap,
    regs: Option<GuestRegs>,
}

impl Symbols for WithRegisters<'_> {
    fn lookup(&self, name: &str) -> Option<u64> {
        if let Some(reg) = name.strip_prefix('@') {
            let regs = self.regs?;
            return Register::from_name(&reg.to_ascii_lowercase()).map(|r| regs.read(r));
        }
        self.symbols.lookup(name)
    }
    fn names(&self) -> Vec<String> {
        self.symbols.names()
    }
}

/// Runs one debugger command; `Ok` is its output.
pub fn run(
    target: &dyn DebugTarget,
    line: &str,
    command: DebuggerCommand,
) -> Result<String, CommandError> {
    let debugger = target.debugger();
    let whole = |m: String| CommandError::whole(line, m);
    let regs = debugger.with_current(|_, s| s.regs).ok();
    let symbols = target.debug_symbols();
    let eval = |e: &Expr| -> Result<u64, CommandError> {
        let scope = WithRegisters {
            symbols: &symbols,
            regs,
        };
        hv_core::argument::evaluate(&e.text, &scope).map_err(|err| {
            let mut c = CommandError::new(
                err.message.clone(),
                e.start + err.start,
                e.start + err.end,
                err.help.clone(),
            );
            if regs.is_none() && err.message.contains("has no value") {
                let name = &e.text[err.start..err.end];
                c.message = format!("`{name}` has no value while the guest runs");
                c.help =
                    Some("registers have values while the guest is paused: `pause` first".into());
            }
            c
        })
    };
    match command {
        DebuggerCommand::Go => debugger.go().map_err(whole),
        DebuggerCommand::Pause => debugger.pause().map_err(whole),
        DebuggerCommand::Core(core) => debugger.switch(core).map_err(whole),
        DebuggerCommand::Registers(None) => debugger
            .with_current(|core, s| format!("core {core}\n{}", all_registers(&s.regs)))
            .map_err(whole),
        DebuggerCommand::Registers(Some(name)) => {
            let reg = register(line, &name)?;
            debugger
                .with_current(|_, s| format!("{name}={:016x}", s.regs.read(reg)))
                .map_err(whole)
        }
        DebuggerCommand::SetRegister { name, value, .. } => {
            let reg = register(line, &name)?;
            let v = eval(&value)?;
            debugger
                .with_current(|_, s| {
                    s.regs.write(reg, v);
                    s.dirty = true;
                    format!("{name}={:016x}", s.regs.read(reg))
                })
                .map_err(whole)
        }
        DebuggerCommand::Dump {
            unit,
            chars,
            physical,
            address,
            length,
        } => {
            let at = eval(&address)?;
            let bytes =
                read(target, physical, at, length as usize).map_err(|m| located(&address, m))?;
            Ok(dump(at, &bytes, unit, chars))
        }
        DebuggerCommand::Edit {
            unit,
            physical,
            address,
            values,
        } => {
            let at = eval(&address)?;
            let mut data = Vec::new();
            for v in &values {
                let x = eval(v)?;
                if unit < 8 && x >> (unit * 8) != 0 {
                    return Err(located(v, format!("{x:#x} does not fit in {unit} byte(s)")));
                }
                data.extend_from_slice(&x.to_le_bytes()[..unit as usize]);
            }
            write(target, physical, at, &data).map_err(|m| located(&address, m))?;
            Ok(format!("{} byte(s) written at {at:#x}", data.len()))
        }
        DebuggerCommand::Disassemble { address, length } => {
            let at = eval(&address)?;
            let mut bytes = read(target, false, at, length as usize);
            // Fewer bytes at the end of the mapped code: disassemble what is there.
            let mut n = length as usize;
            while bytes.is_err() && n > 1 {
                n /= 2;
                bytes = read(target, false, at, n);
            }
            let bytes = bytes.map_err(|m| located(&address, m))?;
            Ok(disassemble(at, &bytes, &symbols))
        }
        DebuggerCommand::Stack => Err(whole(
            "`k` is not available: the guests here keep no frame pointers or unwind tables \
             the VMM could walk reliably; `dq @rsp` shows the stack"
                .into(),
        )),
    }
}

fn located(e: &Expr, message: String) -> CommandError {
    CommandError::new(message, e.start, e.start + e.text.len(), None)
}

fn register(line: &str, name: &str) -> Result<Register, CommandError> {
    Register::from_name(name).ok_or_else(|| {
        let at = line.find(name).unwrap_or(0);
        CommandError::new(
            format!("`{name}` is not a register"),
            at,
            at + name.len(),
            Some("rax..r15, eax.., ax.., al.., rip, rflags, cs..gs, cr0..cr8, dr0..dr7".into()),
        )
    })
}

fn read(target: &dyn DebugTarget, physical: bool, at: u64, len: usize) -> Result<Vec<u8>, String> {
    let mem = target.guest_memory();
    let mut out = vec![0u8; len];
    if physical {
        mem.read(at, &mut out)
            .map_err(|_| format!("physical memory at {at:#x} (+{len:#x}) is not guest RAM"))?;
        return Ok(out);
    }
    let cr3 = target
        .debugger()
        .current_cr3()
        .unwrap_or_else(|| target.running_cr3());
    let mut view = crate::memory::GuestView::new(mem, cr3);
    hv_core::GuestAccess::read(&mut view, at, &mut out).map_err(|_| {
        format!("virtual address {at:#x} (+{len:#x}) is not mapped in the page tables at {cr3:#x}")
    })?;
    target.unpatch(at, &mut out);
    Ok(out)
}

fn write(target: &dyn DebugTarget, physical: bool, at: u64, data: &[u8]) -> Result<(), String> {
    let mem = target.guest_memory();
    if physical {
        return mem
            .write(at, data)
            .map_err(|_| format!("physical memory at {at:#x} is not guest RAM"));
    }
    let cr3 = target
        .debugger()
        .current_cr3()
        .unwrap_or_else(|| target.running_cr3());
    let mut view = crate::memory::GuestView::new(mem, cr3);
    hv_core::GuestAccess::write(&mut view, at, data).map_err(|_| {
        format!("virtual address {at:#x} is not mapped in the page tables at {cr3:#x}")
    })
}

/// An address as HyperDbg shows it: `00000000`00401000`.
fn address(a: u64) -> String {
    format!("{:08x}`{:08x}", a >> 32, a & 0xffff_ffff)
}

/// HyperDbg's `d*` layout: 16 bytes a line, values of `unit` bytes, characters for `db`
/// and `dc`.
pub fn dump(at: u64, bytes: &[u8], unit: u8, chars: bool) -> String {
    let unit = unit as usize;
    let mut out = String::new();
    for (i, line) in bytes.chunks(16).enumerate() {
        out.push_str(&address(at + 16 * i as u64));
        out.push_str("  ");
        let mut values = Vec::new();
        for v in line.chunks(unit) {
            let mut b = [0u8; 8];
            b[..v.len()].copy_from_slice(v);
            let x = u64::from_le_bytes(b);
            values.push(match unit {
                1 => format!("{x:02x}"),
                2 => format!("{x:04x}"),
                4 => format!("{x:08x}"),
                _ => format!("{:08x}`{:08x}", x >> 32, x & 0xffff_ffff),
            });
        }
        let mut text = values.join(" ");
        if unit == 1 && values.len() > 8 {
            // WinDbg's and HyperDbg's `db`: a dash between the two halves.
            text.replace_range(23..24, "-");
        }
        out.push_str(&text);
        if chars {
            let width: usize = match unit {
                1 => 16 * 3 - 1,
                _ => 4 * 9 - 1,
            };
            out.push_str(&" ".repeat(width.saturating_sub(text.len()) + 2));
            out.extend(line.iter().map(|&c| {
                if (0x20..0x7f).contains(&c) {
                    c as char
                } else {
                    '.'
                }
            }));
        }
        out.push('\n');
    }
    out
}

/// HyperDbg's `r` layout.
pub fn all_registers(r: &GuestRegs) -> String {
    let f = |bit: u32| (r.rflags >> bit) & 1;
    format!(
        "RAX={:016x} RBX={:016x} RCX={:016x}\n\
         RDX={:016x} RSI={:016x} RDI={:016x}\n\
         RIP={:016x} RSP={:016x} RBP={:016x}\n\
         R8={:016x}  R9={:016x}  R10={:016x}\n\
         R11={:016x} R12={:016x} R13={:016x}\n\
         R14={:016x} R15={:016x} IOPL={:02x}\n\
         OF {}  DF {}  IF {}  SF {}\n\
         ZF {}  PF {}  CF {}  AXF {}\n\
         CS={:04x} SS={:04x} DS={:04x} ES={:04x} FS={:04x} GS={:04x}\n\
         RFLAGS={:016x}",
        r.rax,
        r.rbx,
        r.rcx,
        r.rdx,
        r.rsi,
        r.rdi,
        r.rip,
        r.rsp,
        r.rbp,
        r.r8,
        r.r9,
        r.r10,
        r.r11,
        r.r12,
        r.r13,
        r.r14,
        r.r15,
        (r.rflags >> 12) & 3,
        f(11),
        f(10),
        f(9),
        f(7),
        f(6),
        f(2),
        f(0),
        f(4),
        r.cs,
        r.ss,
        r.ds,
        r.es,
        r.fs,
        r.gs,
        r.rflags
    )
}

/// `u`: one instruction a line, `address  bytes  instruction`, with `name+off:` lines
/// where a symbol starts and symbolic branch targets.
pub fn disassemble(at: u64, bytes: &[u8], symbols: &SymbolMap) -> String {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter, SymbolResolver};
    struct Names(SymbolMap);
    impl SymbolResolver for Names {
        fn symbol(
            &mut self,
            _instruction: &iced_x86::Instruction,
            _operand: u32,
            _instruction_operand: Option<u32>,
            address: u64,
            _address_size: u32,
        ) -> Option<iced_x86::SymbolResult<'_>> {
            self.0
                 .0
                .iter()
                .find(|(_, &a)| a == address)
                .map(|(name, &a)| iced_x86::SymbolResult::with_string(a, name.clone()))
        }
    }
    let mut formatter = IntelFormatter::with_options(Some(Box::new(Names(symbols.clone()))), None);
    let mut decoder = Decoder::with_ip(64, bytes, at, DecoderOptions::NONE);
    let mut out = String::new();
    let mut text = String::new();
    while decoder.can_decode() {
        let i = decoder.decode();
        if let Some((name, _)) = symbols.0.iter().find(|(_, &a)| a == i.ip()) {
            out.push_str(&format!("{name}:\n"));
        }
        text.clear();
        if i.is_invalid() {
            text.push_str("(bad)");
        } else {
            formatter.format(&i, &mut text);
        }
        let start = (i.ip() - at) as usize;
        let raw: String = bytes[start..start + i.len()]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        out.push_str(&format!("{}  {raw:<20} {text}\n", address(i.ip())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn db_has_the_dash_and_the_characters() {
        let bytes: Vec<u8> = (0x41..0x51).collect();
        assert_eq!(
            dump(0x1000, &bytes, 1, true),
            "00000000`00001000  41 42 43 44 45 46 47 48-49 4a 4b 4c 4d 4e 4f 50  ABCDEFGHIJKLMNOP\n"
        );
        assert_eq!(
            dump(0x1000, &1u64.to_le_bytes(), 8, false),
            "00000000`00001000  00000000`00000001\n"
        );
    }

    #[test]
    fn u_names_symbols() {
        let mut symbols = SymbolMap::default();
        symbols.0.insert("demo!f".into(), 0x1000);
        // call 0x1000 from 0x1005? here: at 0x1000, `nop; ret`.
        let text = disassemble(0x1000, &[0x90, 0xc3], &symbols);
        assert!(text.starts_with("demo!f:\n00000000`00001000  90"), "{text}");
        assert!(text.contains("ret"), "{text}");
    }
}
