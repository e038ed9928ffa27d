//! Typed loads and stores (`Inst::Load` / `Inst::Store`, what arrays, struct members and
//! typed pointers lower to) on the JIT against the interpreter, on every path compiled
//! code has: the inline path (the part of the local stack handed out this run), and the
//! memory function (globals, the rest of the local stack, guest memory, faults). Each
//! script runs on both back ends from identical inputs and everything observable must be
//! equal: output, registers, globals, and the error with its span.

mod common;

use common::{assert_same, Setup};
use hvscript_jit::Jit;
use hvscript_lang::RunErrorKind;

/// Every scalar type a typed access can have, with values that test its truncation and
/// sign- or zero-extension when read back (written as HyperDbg numbers: hex by default).
/// The third string is what `local_arrays_of_every_scalar_type_round_trip_inline` prints.
const TYPES: [(&str, &str, &str); 11] = [
    (
        "char",
        "-0n128, 0n127, 0x1ff, -1",
        "ffffff80 7f ffffffff ffffffff | ffffff80 ffffff80 ffffff80 ffffffff 4",
    ),
    (
        "unsigned char",
        "0xff, 0x80, 0x1ff, -1",
        "ff 80 ff ff | ff ff ff ff 4",
    ),
    (
        "short",
        "-0n32768, 0x7fff, 0x1ffff, -1",
        "ffff8000 7fff ffffffff ffffffff | ffff8000 ffff8000 ffff8000 ffffffff 8",
    ),
    (
        "unsigned short",
        "0xffff, 0x8000, 0x1ffff, -1",
        "ffff 8000 ffff ffff | ffff ffff ffff ffff 8",
    ),
    (
        "int",
        "-0n2147483648, 0x7fffffff, 0x1ffffffff, -1",
        "80000000 7fffffff ffffffff ffffffff | 80000000 80000000 80000000 ffffffff 16",
    ),
    (
        "unsigned int",
        "0xffffffff, 0x80000000, 0x1ffffffff, -1",
        "ffffffff 80000000 ffffffff ffffffff | ffffffff ffffffff ffffffff ffffffff 16",
    ),
    (
        "long long",
        "0x8000000000000000, 0x7fffffffffffffff, 0xffffffffffffffff, -1",
        "8000000000000000 7fffffffffffffff ffffffffffffffff ffffffffffffffff | 8000000000000000 8000000000000000 8000000000000000 ffffffffffffffff 32",
    ),
    (
        "unsigned long long",
        "0xffffffffffffffff, 0x8000000000000000, 0x123456789abcdef0, 0",
        "ffffffffffffffff 8000000000000000 123456789abcdef0 0 | ffffffffffffffff 0 ffffffffffffffff 0 32",
    ),
    (
        "bool",
        "0, 1, 5, -1",
        "0 1 1 1 | 0 1 0 1 4",
    ),
    (
        "float",
        "1.5, -0.0, 0.1, -3.25",
        "1.500000 -0.000000 0.100000 -3.250000 | 1.500000 -0.750000 1.500000 -3.250000 16",
    ),
    (
        "double",
        "1.5, -0.0, 0.1, -3.25",
        "1.500000 -0.000000 0.100000 -3.250000 | 1.500000 -0.750000 1.500000 -3.250000 32",
    ),
];

fn format_of(ty: &str) -> &'static str {
    match ty {
        "float" | "double" => "%f",
        "long long" | "unsigned long long" => "%llx",
        _ => "%x",
    }
}

fn guest_setup() -> Setup {
    let mut setup = Setup::default();
    // Two pages, so an access may straddle them; the page after them is unmapped.
    setup.env.memory.map(0x10000, 0x2000);
    let bytes: Vec<u8> = (0..0x2000u32).map(|i| (i * 7 + 3) as u8).collect();
    setup.env.memory.load(0x10000, &bytes);
    setup
}

#[test]
fn local_arrays_of_every_scalar_type_round_trip_inline() {
    let mut jit = Jit::new().unwrap();
    for (ty, values, expected) in TYPES {
        let f = format_of(ty);
        let src = format!(
            "{ty} arr[4] = {{{values}}};
             for (i = 0; i < 4; i++) {{ printf(\"{f} \", arr[i]); }}
             arr[1] = arr[0] + arr[3];
             arr[2] = arr[2] * 2;
             {ty} *p = &arr[1];
             *p = *p + 1;
             p[1] = p[-1];
             printf(\"| {f} {f} {f} {f} %d\\n\", arr[0], arr[1], arr[2], arr[3], sizeof(arr));"
        );
        let seen = assert_same(&mut jit, &src, &Setup::default());
        assert!(seen.result.is_ok(), "{ty}: {:?}", seen.result);
        assert_eq!(seen.output, format!("{expected}\n"), "{ty}");
    }
}

#[test]
fn guest_memory_reads_and_writes_at_every_width_and_alignment() {
    let mut jit = Jit::new().unwrap();
    for (ty, _, _) in TYPES {
        let f = format_of(ty);
        // Aligned, unaligned, and straddling the two pages (0x10ffe..).
        let src = format!(
            "{ty} *p = ({ty} *) 0x10008;
             {ty} *q = ({ty} *) 0x10013;
             {ty} *r = ({ty} *) 0x10fff;
             printf(\"{f} {f} {f}\\n\", *p, *q, *r);
             *p = *q + 1;
             *q = -2;
             *r = *p;
             printf(\"{f} {f} {f} %llx %llx\\n\", *p, *q, *r, dq(0x10008), dq(0x10ff8));
             printf(\"%llx\\n\", dq(0x11000));"
        );
        let seen = assert_same(&mut jit, &src, &guest_setup());
        assert!(seen.result.is_ok(), "{ty}: {:?}", seen.result);
        // The last line is the first word of the second page: a write at 0x10fff wider than
        // one byte must have reached it.
        let second_page = seen.output.lines().last().unwrap();
        assert_eq!(
            second_page == "342d261f18110a03",
            ty.ends_with("char") || ty == "bool",
            "{ty}: {}",
            seen.output
        );
        if ty == "unsigned char" {
            assert!(
                seen.output.starts_with("3b 88 fc\n89 fe 89 "),
                "{}",
                seen.output
            );
        }
    }
}

#[test]
fn struct_members_over_guest_memory_and_locals_agree() {
    let mut jit = Jit::new().unwrap();
    let src =
        "struct Node { struct Node *next; unsigned int key; short tag; char flag; double w; };
        struct Node local = {0, 0n7, -3, 1, 2.5};
        struct Node *n = (struct Node *) 0x10100;
        n->next = (struct Node *) 0x10200;
        n->key = 0n11;
        n->next->key = 0n12;
        n->next->next = &local;
        n->w = 0.25;
        sum = 0;
        for (struct Node *it = n; it != 0; it = it->next) {
            printf(\"%x %d %d %f\\n\", it->key, it->tag, it->flag, it->w);
            sum = sum + it->key;
            if (it->key == 0n7) { break; }
        }
        local.next = 0;
        printf(\"%d %d %d\\n\", sum, sizeof(struct Node), sizeof(local));";
    let seen = assert_same(&mut jit, src, &guest_setup());
    assert!(seen.result.is_ok(), "{:?}", seen.result);
    // The guest node's `tag` and `flag` are the bytes guest_setup put there.
    assert_eq!(
        seen.output,
        "b 24151 101 0.250000\nc 24151 101 -0.000000\n7 -3 1 2.500000\n30 24 24\n"
    );
}

#[test]
fn faults_stop_both_back_ends_at_the_same_access() {
    let mut jit = Jit::new().unwrap();
    let cases = [
        // A read of unmapped memory.
        ("int *p = (int *) 0x20000; x = *p;", 0x20000, 4, false),
        // A write that straddles the last mapped page and the unmapped one.
        (
            "unsigned long long *p = (unsigned long long *) 0x11ffc; *p = 1;",
            0x11ffc,
            8,
            true,
        ),
        // A member of a struct through a null pointer.
        (
            "struct S { int m0; short m1; }; struct S *s = 0; printf(\"before\\n\"); y = s->m1;",
            4,
            2,
            false,
        ),
    ];
    for (src, want_addr, want_len, want_write) in cases {
        let seen = assert_same(&mut jit, src, &guest_setup());
        match seen.result {
            Err(e) => match e.kind {
                RunErrorKind::Memory {
                    addr, len, write, ..
                } => assert_eq!(
                    (addr, len, write),
                    (want_addr, want_len, want_write),
                    "{src}"
                ),
                other => panic!("{src}: {other:?}"),
            },
            Ok(_) => panic!("{src}: no error"),
        }
    }
}

#[test]
fn stack_beyond_the_handed_out_frames_is_zero_on_every_run() {
    // `arr[0x100]` lies past every frame handed out this run: compiled code routes it to the
    // memory function, which must make the runtime clear it before the next run as the
    // interpreter does. Three runs: each must read 0, then write.
    let mut jit = Jit::new().unwrap();
    let setup = Setup {
        runs: 3,
        ..Setup::default()
    };
    let src = "int arr[2] = {1, 2};
        printf(\"%x \", arr[0x100]);
        arr[0x100] = arr[0x100] + 5;
        printf(\"%x\\n\", arr[0x100]);";
    let seen = assert_same(&mut jit, src, &setup);
    assert!(seen.result.is_ok(), "{:?}", seen.result);
    assert_eq!(seen.output, "0 5\n0 5\n0 5\n");
}

#[test]
fn typed_pointers_into_globals_agree() {
    let mut jit = Jit::new().unwrap();
    let setup = Setup {
        runs: 2,
        ..Setup::default()
    };
    let src = ".g = 0x1122334455667788;
        unsigned char *bytes = (unsigned char *) &.g;
        short *s = (short *) &.g;
        printf(\"%x %x %x\\n\", bytes[0], bytes[7], s[1]);
        bytes[0] = 0xff;
        s[3] = -1;
        printf(\"%llx\\n\", .g);";
    let seen = assert_same(&mut jit, src, &setup);
    assert!(seen.result.is_ok(), "{:?}", seen.result);
    assert_eq!(seen.output, "88 11 5566\nffff3344556677ff\n".repeat(2));
}
