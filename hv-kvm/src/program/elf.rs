//! A static x86-64 Linux executable, read from its ELF file as Linux's `execve` reads it
//! (`fs/binfmt_elf.c`): the loadable segments with their permissions, the entry point, where
//! the program headers are in memory (for `AT_PHDR`), and the symbol table (names for event
//! commands and scripts). Both kinds of static executable are taken: `ET_EXEC` at its
//! link addresses, and static-PIE (`ET_DYN` without an interpreter) moved by a load bias.
//! A program that needs a dynamic loader, or is not x86-64 ELF64, is refused saying so.

use std::collections::BTreeMap;

use object::elf;
use object::read::elf::{FileHeader, ProgramHeader, Sym};
use object::LittleEndian;

/// Where a static-PIE program is placed: Linux's `ELF_ET_DYN_BASE` on x86-64 (2/3 of the
/// 47-bit user space, page aligned), so addresses look as they do natively.
pub const PIE_LOAD_BIAS: u64 = 0x5555_5555_4000;

const PAGE: u64 = 0x1000;

/// One `PT_LOAD` segment, its addresses already moved by the load bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub mem_size: u64,
    /// The bytes at `file_offset .. file_offset + file_size` of the file go to `vaddr`;
    /// the rest up to `mem_size` is zero (`.bss`).
    pub file_offset: u64,
    pub file_size: u64,
    pub read: bool,
    pub write: bool,
    pub execute: bool,
}

impl Segment {
    /// The page-aligned range the segment occupies.
    pub fn pages(&self) -> (u64, u64) {
        (
            self.vaddr & !(PAGE - 1),
            (self.vaddr + self.mem_size + PAGE - 1) & !(PAGE - 1),
        )
    }
}

/// A parsed executable, ready to be mapped.
#[derive(Clone, Debug)]
pub struct Executable {
    /// `ET_DYN` (static-PIE): the segments were moved by [`PIE_LOAD_BIAS`].
    pub position_independent: bool,
    pub load_bias: u64,
    pub entry: u64,
    pub segments: Vec<Segment>,
    /// `AT_PHDR`, `AT_PHENT`, `AT_PHNUM`.
    pub phdr: u64,
    pub phent: u64,
    pub phnum: u64,
    /// `PT_GNU_STACK` asks for an executable stack.
    pub executable_stack: bool,
    /// Function and object symbols by name, at their loaded addresses.
    pub symbols: BTreeMap<String, u64>,
}

impl Executable {
    /// The lowest page after every segment: where the program break starts.
    pub fn end_of_image(&self) -> u64 {
        self.segments.iter().map(|s| s.pages().1).max().unwrap_or(0)
    }
}

/// Why a file cannot run as a guest program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElfError(pub String);

impl std::fmt::Display for ElfError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ElfError {}

fn bad(message: impl Into<String>) -> ElfError {
    ElfError(message.into())
}

/// Reads a static x86-64 executable.
pub fn parse(data: &[u8]) -> Result<Executable, ElfError> {
    if data.len() < 4 || &data[..4] != b"\x7fELF" {
        return Err(bad("not an ELF file"));
    }
    let header = elf::FileHeader64::<LittleEndian>::parse(data)
        .map_err(|e| bad(format!("not a 64-bit little-endian ELF file: {e}")))?;
    let endian = header
        .endian()
        .map_err(|e| bad(format!("unreadable ELF header: {e}")))?;
    if header.e_machine(endian).0 != elf::EM_X86_64.0 {
        return Err(bad(format!(
            "built for machine {:#x}, not x86-64",
            header.e_machine(endian).0
        )));
    }
    let kind = header.e_type(endian).0;
    let position_independent = match kind {
        k if k == elf::ET_EXEC.0 => false,
        k if k == elf::ET_DYN.0 => true,
        other => {
            return Err(bad(format!(
                "ELF type {other:#x} is not an executable (ET_EXEC or static-PIE ET_DYN)"
            )))
        }
    };
    let phdrs = header
        .program_headers(endian, data)
        .map_err(|e| bad(format!("unreadable program headers: {e}")))?;
    let load_bias = if position_independent {
        PIE_LOAD_BIAS
    } else {
        0
    };
    let mut segments = Vec::new();
    let mut executable_stack = false;
    let mut phdr_in_memory = None;
    let phoff = header.e_phoff(endian);
    for ph in phdrs {
        let p_type = ph.p_type(endian).0;
        if p_type == elf::PT_INTERP.0 {
            return Err(bad(
                "the program is dynamically linked (it names an interpreter, PT_INTERP); \
                 hvscript runs static executables: build with `gcc -static` or \
                 `-C target-feature=+crt-static`",
            ));
        }
        if p_type == elf::PT_GNU_STACK.0 {
            executable_stack = ph.p_flags(endian).0 & elf::PF_X.0 != 0;
        }
        if p_type == elf::PT_PHDR.0 {
            phdr_in_memory = Some(ph.p_vaddr(endian) + load_bias);
        }
        if p_type != elf::PT_LOAD.0 {
            continue;
        }
        let (vaddr, mem_size) = (ph.p_vaddr(endian), ph.p_memsz(endian));
        let (file_offset, file_size) = (ph.p_offset(endian), ph.p_filesz(endian));
        if file_size > mem_size {
            return Err(bad(format!(
                "segment at {vaddr:#x}: file size {file_size:#x} over memory size {mem_size:#x}"
            )));
        }
        if file_offset
            .checked_add(file_size)
            .is_none_or(|end| end > data.len() as u64)
        {
            return Err(bad(format!(
                "segment at {vaddr:#x} reaches past the end of the file"
            )));
        }
        let vaddr = vaddr
            .checked_add(load_bias)
            .filter(|v| v.checked_add(mem_size).is_some_and(|end| end <= 1 << 47))
            .ok_or_else(|| bad(format!("segment at {vaddr:#x} is outside user space")))?;
        let flags = ph.p_flags(endian).0;
        // Linux's rule for AT_PHDR without PT_PHDR: the loaded segment holding e_phoff.
        if phdr_in_memory.is_none() && file_offset <= phoff && phoff < file_offset + file_size {
            phdr_in_memory = Some(vaddr + (phoff - file_offset));
        }
        segments.push(Segment {
            vaddr,
            mem_size,
            file_offset,
            file_size,
            read: flags & elf::PF_R.0 != 0,
            write: flags & elf::PF_W.0 != 0,
            execute: flags & elf::PF_X.0 != 0,
        });
    }
    if segments.is_empty() {
        return Err(bad("no loadable segment (PT_LOAD)"));
    }
    segments.sort_by_key(|s| s.vaddr);
    for pair in segments.windows(2) {
        if pair[0].vaddr + pair[0].mem_size > pair[1].vaddr {
            return Err(bad(format!(
                "segments at {:#x} and {:#x} overlap",
                pair[0].vaddr, pair[1].vaddr
            )));
        }
    }
    let entry = header.e_entry(endian) + load_bias;
    if !segments
        .iter()
        .any(|s| s.execute && s.vaddr <= entry && entry < s.vaddr + s.mem_size)
    {
        return Err(bad(format!(
            "the entry point {entry:#x} is not in an executable segment"
        )));
    }
    let symbols = symbols(header, endian, data, load_bias)?;
    Ok(Executable {
        position_independent,
        load_bias,
        entry,
        segments,
        phdr: phdr_in_memory.unwrap_or(0),
        phent: u64::from(header.e_phentsize(endian)),
        phnum: phdrs.len() as u64,
        executable_stack,
        symbols,
    })
}

/// The defined function and object symbols of `.symtab` (a stripped program has none).
fn symbols(
    header: &elf::FileHeader64<LittleEndian>,
    endian: LittleEndian,
    data: &[u8],
    load_bias: u64,
) -> Result<BTreeMap<String, u64>, ElfError> {
    let mut out = BTreeMap::new();
    let Ok(sections) = header.sections(endian, data) else {
        return Ok(out);
    };
    let table = sections
        .symbols(endian, data, elf::SHT_SYMTAB)
        .map_err(|e| bad(format!("unreadable symbol table: {e}")))?;
    for sym in table.iter() {
        let kind = sym.st_type();
        // Functions, data, and global assembly labels (untyped, but named by the user).
        let label = kind == elf::STT_NOTYPE && sym.st_bind() == elf::STB_GLOBAL;
        let section = sym.st_shndx(endian).0;
        if (kind != elf::STT_FUNC && kind != elf::STT_OBJECT && !label)
            || section == elf::SHN_UNDEF.0
            || section == elf::SHN_ABS.0
        {
            continue;
        }
        let Ok(name) = table.symbol_name(endian, sym) else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if !name.is_empty() {
            out.entry(name.to_string())
                .or_insert(sym.st_value(endian) + load_bias);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_static_x86_64_executable_is_refused_with_the_reason() {
        assert_eq!(parse(b"#!/bin/sh\n").unwrap_err().0, "not an ELF file");
        assert!(parse(b"\x7fELF\x01\x01\x01")
            .unwrap_err()
            .0
            .contains("64-bit"));
        let mut header = vec![0u8; 64];
        header[..4].copy_from_slice(b"\x7fELF");
        header[4] = 2; // ELFCLASS64
        header[5] = 1; // little-endian
        header[6] = 1;
        header[16] = 2; // ET_EXEC
        header[18] = 0x28; // EM_ARM
        assert!(parse(&header).unwrap_err().0.contains("not x86-64"));
        header[18] = 62;
        header[16] = 1; // ET_REL
        assert!(parse(&header).unwrap_err().0.contains("not an executable"));
        header[16] = 2;
        assert!(parse(&header)
            .unwrap_err()
            .0
            .contains("no loadable segment"));
    }
}
