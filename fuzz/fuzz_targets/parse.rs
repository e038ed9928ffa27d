//! The whole syntax front end on arbitrary input: lexer, LALRPOP parser, call-shape pass,
//! diagnostic rendering (ariadne), the AST printer and the portability pass. None of them
//! may panic, whatever the text.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match hvscript_grammar::parse_checked(src) {
        Ok(script) => {
            let _ = hvscript_grammar::print::script(&script);
            for warning in hvscript_grammar::portability::check(&script, src) {
                let _ = warning.render("fuzz.ds", src);
            }
        }
        Err(diagnostics) => {
            assert!(!diagnostics.is_empty(), "an error without a diagnostic");
            for d in diagnostics {
                let _ = d.render("fuzz.ds", src);
            }
        }
    }
});
