//! The scripts the JIT benches run (the rows of issue 17's table and a few more), shared by
//! `jit_vs_interp` (criterion, JIT and interpreter side by side) and `jit_pairs` (JIT ops
//! as alternating pair ratios to the arithmetic script).
#![allow(dead_code)]

pub const ARITH: &str = "@rax = (@rbx + @rcx * 3 - @rdx) ^ (@rsi << 2) | (@rdi & 0xff) + @r8 * @r9 - (@r10 >> 3) + @r11 + (@r12 ^ @r13) + @r14 * 7 - @r15 + (@rbx | @rcx) - (@rdx & @rsi) + @rdi * @r8;";
pub const FOR_LOOP: &str = "s = 0; for (i = 1; i <= 0n1000; i++) { s = s + i; } @rax = s;";
pub const IF_CHAIN: &str = "x = @rax & 0xf;
if (x == 0) { @rbx = 1; } elsif (x == 1) { @rbx = 2; } elsif (x == 2) { @rbx = 3; }
elsif (x == 3) { @rbx = 4; } elsif (x == 4) { @rbx = 5; } elsif (x == 5) { @rbx = 6; }
elsif (x == 6) { @rbx = 7; } elsif (x == 7) { @rbx = 8; } elsif (x == 8) { @rbx = 9; }
elsif (x == 9) { @rbx = 0xa; } elsif (x == 0xa) { @rbx = 0xb; } else { @rbx = 0; }";
pub const PRINTF: &str = "printf(\"rax=%d rbx=%x rcx=%llx\\n\", @rax, @rbx, @rcx);";
pub const MEMORY: &str =
    "x = dq(0x1000); y = eq(0x1008, x + 1); z = dq(0x1008) + dq(0x1010); @rax = z + y;";

/// A local array filled and summed: typed stores and loads on the inline (stack) path.
pub const ARRAY: &str = "int ar[40] = {0};
for (i = 0; i < 40; i++) { ar[i] = i * 3; }
s = 0; for (i = 0; i < 40; i++) { s = s + ar[i]; } @rax = s;";
/// Four struct records in guest memory read member by member and one member written: typed
/// accesses through the translation cache (the runtime's memory function on a miss).
pub const STRUCT_GUEST: &str = "struct Rec { unsigned int kind; unsigned short len; unsigned char attrs; unsigned long long next; };
struct Rec *r = (struct Rec *) 0x1000;
s = 0; for (i = 0; i < 4; i++) { s = s + r[i].kind + r[i].len + r[i].attrs + r[i].next; }
r[3].len = 5; @rax = s;";
