//! Command lines as a user or a control-socket client sends them: hv-core's parser of
//! event commands, `events`, `output` and `?`, with expressions over a symbol table in
//! the arguments. Nothing may panic, and every error must point inside the line at
//! character boundaries (a client underlines it).

#![no_main]

use hv_core::{parse_command_with, SymbolMap};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    let mut symbols = SymbolMap::default();
    symbols.0.insert("nt!Kd_DEFAULT_Mask".into(), 0xfffff800_12340000);
    symbols.0.insert("demo!counter".into(), 0x3000);
    symbols.0.insert("libc!counter".into(), 0x4000);
    if let Err(e) = parse_command_with(line, &symbols) {
        assert!(e.start <= e.end && e.end <= line.len(), "{e:?}");
        assert!(line.is_char_boundary(e.start) && line.is_char_boundary(e.end), "{e:?}");
        assert!(!e.message.is_empty());
    }
});
