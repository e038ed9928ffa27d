//! The guest register file and the map from every HyperDbg register name to a bit field
//! of it.
//!
//! HyperDbg's register names include sub-registers (`eax`, `ah`, `r8w`), the RFLAGS bits
//! (`zf`, `iopl`) and system registers. Each name is a [`RegField`]: a 64-bit slot of
//! [`GuestRegs`] plus a shift and a width. Reading extracts the field; writing merges the
//! field into the slot and keeps every other bit. That is HyperDbg's rule for every
//! sub-register, including `@eax = v`, which keeps bits 32..63 of RAX (x86 itself would
//! zero them).

/// The number of 64-bit slots in [`GuestRegs`].
pub const GUEST_REG_SLOTS: usize = 39;

/// The guest register file, as the event engine hands it to a script.
///
/// `#[repr(C)]` and made only of `u64`, so slot `i` is at byte offset `8 * i` and compiled
/// code reaches a register with one load.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestRegs {
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
    pub cs: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
    pub ss: u64,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub dr0: u64,
    pub dr1: u64,
    pub dr2: u64,
    pub dr3: u64,
    pub dr6: u64,
    pub dr7: u64,
    pub gdtr: u64,
    pub idtr: u64,
    pub ldtr: u64,
    pub tr: u64,
}

const _: () = assert!(core::mem::size_of::<GuestRegs>() == GUEST_REG_SLOTS * 8);

impl GuestRegs {
    /// The slots as an array, in declaration order.
    pub fn slots(&self) -> &[u64; GUEST_REG_SLOTS] {
        // SAFETY: GuestRegs is repr(C), made of exactly GUEST_REG_SLOTS u64 fields and no
        // padding (checked by the const assertion above), so it has the layout of the array.
        unsafe { &*(self as *const Self as *const [u64; GUEST_REG_SLOTS]) }
    }

    /// The slots as a mutable array, in declaration order.
    pub fn slots_mut(&mut self) -> &mut [u64; GUEST_REG_SLOTS] {
        // SAFETY: as in `slots`.
        unsafe { &mut *(self as *mut Self as *mut [u64; GUEST_REG_SLOTS]) }
    }

    /// Reads a register by name-id, with HyperDbg's sub-register rules.
    pub fn read(&self, reg: Register) -> u64 {
        reg.field().read(self.slots())
    }

    /// Writes a register by name-id; bits outside the named field are kept.
    pub fn write(&mut self, reg: Register, value: u64) {
        reg.field().write(self.slots_mut(), value)
    }
}

/// A bit field of one slot of [`GuestRegs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegField {
    /// Index of the 64-bit slot.
    pub slot: u8,
    /// Position of the field's lowest bit.
    pub shift: u8,
    /// Width in bits (1..=64).
    pub bits: u8,
}

impl RegField {
    /// The field's mask, before shifting.
    pub const fn mask(self) -> u64 {
        if self.bits >= 64 {
            u64::MAX
        } else {
            (1u64 << self.bits) - 1
        }
    }

    /// Byte offset of the slot inside [`GuestRegs`].
    pub const fn byte_offset(self) -> usize {
        self.slot as usize * 8
    }

    pub fn read(self, slots: &[u64; GUEST_REG_SLOTS]) -> u64 {
        (slots[self.slot as usize] >> self.shift) & self.mask()
    }

    pub fn write(self, slots: &mut [u64; GUEST_REG_SLOTS], value: u64) {
        let mask = self.mask() << self.shift;
        let slot = &mut slots[self.slot as usize];
        *slot = (*slot & !mask) | ((value << self.shift) & mask);
    }
}

macro_rules! registers {
    ($($variant:ident = $name:literal : $slot:expr, $shift:expr, $bits:expr;)*) => {
        /// Every register name HyperDbg's scripts accept, in HyperDbg's id order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Register { $($variant,)* }

        impl Register {
            /// Every register, in id order.
            pub const ALL: &'static [Register] = &[$(Register::$variant,)*];

            /// The name as written in scripts (without `@`).
            pub const fn name(self) -> &'static str {
                match self { $(Register::$variant => $name,)* }
            }

            /// The bit field of [`GuestRegs`] this name reads and writes.
            pub const fn field(self) -> RegField {
                match self { $(Register::$variant => RegField { slot: $slot, shift: $shift, bits: $bits },)* }
            }

            /// Looks a name up (case-sensitive, without `@`).
            pub fn from_name(name: &str) -> Option<Register> {
                match name { $($name => Some(Register::$variant),)* _ => None }
            }
        }
    };
}

// slot numbers follow the field order of GuestRegs.
registers! {
    Rax = "rax": 0, 0, 64; Eax = "eax": 0, 0, 32; Ax = "ax": 0, 0, 16; Ah = "ah": 0, 8, 8; Al = "al": 0, 0, 8;
    Rcx = "rcx": 1, 0, 64; Ecx = "ecx": 1, 0, 32; Cx = "cx": 1, 0, 16; Ch = "ch": 1, 8, 8; Cl = "cl": 1, 0, 8;
    Rdx = "rdx": 2, 0, 64; Edx = "edx": 2, 0, 32; Dx = "dx": 2, 0, 16; Dh = "dh": 2, 8, 8; Dl = "dl": 2, 0, 8;
    Rbx = "rbx": 3, 0, 64; Ebx = "ebx": 3, 0, 32; Bx = "bx": 3, 0, 16; Bh = "bh": 3, 8, 8; Bl = "bl": 3, 0, 8;
    Rsp = "rsp": 4, 0, 64; Esp = "esp": 4, 0, 32; Sp = "sp": 4, 0, 16; Spl = "spl": 4, 0, 8;
    Rbp = "rbp": 5, 0, 64; Ebp = "ebp": 5, 0, 32; Bp = "bp": 5, 0, 16; Bpl = "bpl": 5, 0, 8;
    Rsi = "rsi": 6, 0, 64; Esi = "esi": 6, 0, 32; Si = "si": 6, 0, 16; Sil = "sil": 6, 0, 8;
    Rdi = "rdi": 7, 0, 64; Edi = "edi": 7, 0, 32; Di = "di": 7, 0, 16; Dil = "dil": 7, 0, 8;
    R8 = "r8": 8, 0, 64; R8d = "r8d": 8, 0, 32; R8w = "r8w": 8, 0, 16; R8h = "r8h": 8, 8, 8; R8l = "r8l": 8, 0, 8;
    R9 = "r9": 9, 0, 64; R9d = "r9d": 9, 0, 32; R9w = "r9w": 9, 0, 16; R9h = "r9h": 9, 8, 8; R9l = "r9l": 9, 0, 8;
    R10 = "r10": 10, 0, 64; R10d = "r10d": 10, 0, 32; R10w = "r10w": 10, 0, 16; R10h = "r10h": 10, 8, 8; R10l = "r10l": 10, 0, 8;
    R11 = "r11": 11, 0, 64; R11d = "r11d": 11, 0, 32; R11w = "r11w": 11, 0, 16; R11h = "r11h": 11, 8, 8; R11l = "r11l": 11, 0, 8;
    R12 = "r12": 12, 0, 64; R12d = "r12d": 12, 0, 32; R12w = "r12w": 12, 0, 16; R12h = "r12h": 12, 8, 8; R12l = "r12l": 12, 0, 8;
    R13 = "r13": 13, 0, 64; R13d = "r13d": 13, 0, 32; R13w = "r13w": 13, 0, 16; R13h = "r13h": 13, 8, 8; R13l = "r13l": 13, 0, 8;
    R14 = "r14": 14, 0, 64; R14d = "r14d": 14, 0, 32; R14w = "r14w": 14, 0, 16; R14h = "r14h": 14, 8, 8; R14l = "r14l": 14, 0, 8;
    R15 = "r15": 15, 0, 64; R15d = "r15d": 15, 0, 32; R15w = "r15w": 15, 0, 16; R15h = "r15h": 15, 8, 8; R15l = "r15l": 15, 0, 8;
    Ds = "ds": 19, 0, 16; Es = "es": 20, 0, 16; Fs = "fs": 21, 0, 16; Gs = "gs": 22, 0, 16; Cs = "cs": 18, 0, 16; Ss = "ss": 23, 0, 16;
    Rflags = "rflags": 17, 0, 64; Eflags = "eflags": 17, 0, 32; Flags = "flags": 17, 0, 16;
    Cf = "cf": 17, 0, 1; Pf = "pf": 17, 2, 1; Af = "af": 17, 4, 1; Zf = "zf": 17, 6, 1; Sf = "sf": 17, 7, 1;
    Tf = "tf": 17, 8, 1; If = "if": 17, 9, 1; Df = "df": 17, 10, 1; Of = "of": 17, 11, 1; Iopl = "iopl": 17, 12, 2;
    Nt = "nt": 17, 14, 1; Rf = "rf": 17, 16, 1; Vm = "vm": 17, 17, 1; Ac = "ac": 17, 18, 1; Vif = "vif": 17, 19, 1;
    Vip = "vip": 17, 20, 1; Id = "id": 17, 21, 1;
    Rip = "rip": 16, 0, 64; Eip = "eip": 16, 0, 32; Ip = "ip": 16, 0, 16;
    Idtr = "idtr": 36, 0, 64; Ldtr = "ldtr": 37, 0, 64; Gdtr = "gdtr": 35, 0, 64; Tr = "tr": 38, 0, 64;
    Cr0 = "cr0": 24, 0, 64; Cr2 = "cr2": 25, 0, 64; Cr3 = "cr3": 26, 0, 64; Cr4 = "cr4": 27, 0, 64; Cr8 = "cr8": 28, 0, 64;
    Dr0 = "dr0": 29, 0, 64; Dr1 = "dr1": 30, 0, 64; Dr2 = "dr2": 31, 0, 64; Dr3 = "dr3": 32, 0, 64; Dr6 = "dr6": 33, 0, 64; Dr7 = "dr7": 34, 0, 64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sub_register_writes_keep_the_other_bits() {
        let mut r = GuestRegs {
            rax: 0x1122_3344_5566_7788,
            ..Default::default()
        };
        r.write(Register::Eax, 0xaabb_ccdd);
        assert_eq!(r.rax, 0x1122_3344_aabb_ccdd);
        r.write(Register::Ah, 0x1ff);
        assert_eq!(r.rax, 0x1122_3344_aabb_ffdd);
        assert_eq!(r.read(Register::Ah), 0xff);
        assert_eq!(r.read(Register::Ax), 0xffdd);
    }

    #[test]
    fn flag_bits_map_onto_rflags() {
        let mut r = GuestRegs::default();
        r.write(Register::Zf, 1);
        r.write(Register::Iopl, 3);
        assert_eq!(r.rflags, (1 << 6) | (3 << 12));
        assert_eq!(r.read(Register::Iopl), 3);
        r.write(Register::Zf, 2); // only bit 0 of the value counts
        assert_eq!(r.read(Register::Zf), 0);
    }

    #[test]
    fn names_round_trip_and_slots_match_fields() {
        for &reg in Register::ALL {
            assert_eq!(Register::from_name(reg.name()), Some(reg));
            assert!((reg.field().slot as usize) < GUEST_REG_SLOTS);
        }
        let mut r = GuestRegs::default();
        for (i, s) in r.slots_mut().iter_mut().enumerate() {
            *s = i as u64;
        }
        assert_eq!(
            (r.rip, r.rflags, r.cs, r.ss, r.cr0, r.dr7, r.tr),
            (16, 17, 18, 23, 24, 34, 38)
        );
        assert_eq!(r.read(Register::Ds), 19);
        assert_eq!(r.read(Register::Gdtr), 35);
    }
}
