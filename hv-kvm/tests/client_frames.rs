//! The control socket's client frames (`control` module doc): a compiled command's
//! encoding comes back as sent, any cut or garbled one is a malformed-frame error (never a
//! panic), a text line is never taken for a binary frame, and located error frames carry
//! their byte range.

use hv_core::CommandError;
use hv_kvm::control::{
    decode_client_frame, decode_error, encode_compiled, encode_error, encode_session_request,
    parse_session, ClientFrame,
};
use proptest::prelude::*;

#[test]
fn a_compiled_command_comes_back_as_sent() {
    let globals = vec![("a".to_string(), 0), ("count".to_string(), 3)];
    let frame = encode_compiled("!ioin 510 script { .a = 1; }", Some(b"OBJECT"), &globals);
    match decode_client_frame(&frame).unwrap() {
        ClientFrame::Command(line, p) => {
            assert_eq!(line, "!ioin 510 script { .a = 1; }");
            assert_eq!(p.code.as_deref(), Some(&b"OBJECT"[..]));
            assert_eq!(p.globals, globals);
            assert!(p.script.is_none());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        decode_client_frame(&encode_session_request()),
        Ok(ClientFrame::Session)
    ));
    match decode_client_frame(b"events d 1").unwrap() {
        ClientFrame::Command(line, p) => assert!(line == "events d 1" && !p.has_script()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_cut_of_a_compiled_frame_is_a_malformed_frame() {
    let frame = encode_compiled("? .x = 1;", Some(&[7; 40]), &[("x".into(), 0)]);
    for cut in 1..frame.len() {
        let e = decode_client_frame(&frame[..cut]).unwrap_err();
        assert!(e.starts_with("malformed"), "cut {cut}: {e}");
    }
    let mut longer = frame.clone();
    longer.push(0);
    assert!(decode_client_frame(&longer)
        .unwrap_err()
        .contains("after its last field"));
    assert!(decode_client_frame(&[0, b'z'])
        .unwrap_err()
        .contains("unknown"));
}

#[test]
fn error_frames_carry_the_range_and_help() {
    let e = CommandError {
        message: "unknown stage `pst`".into(),
        start: 16,
        end: 19,
        help: Some("stage pre|post|all".into()),
    };
    let text = encode_error(&e);
    assert!(text.starts_with("@16:19\n"), "{text}");
    assert_eq!(decode_error(&text), Some(e));
    assert_eq!(decode_error("malformed frame: not UTF-8"), None);
}

#[test]
fn a_session_reply_lists_globals_and_symbols() {
    let (globals, symbols) = parse_session("global a 0\nglobal b 4\nsymbol demo!f fffff000\n");
    assert_eq!(globals, [("a".to_string(), 0), ("b".to_string(), 4)]);
    assert_eq!(symbols.0.get("demo!f"), Some(&0xfffff000));
}

proptest! {
    #[test]
    fn arbitrary_payloads_decode_or_fail_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode_client_frame(&bytes);
        let mut binary = vec![0, b'c'];
        binary.extend(&bytes);
        let _ = decode_client_frame(&binary);
    }

    #[test]
    fn text_lines_are_commands(line in "[!-~][ -~]{0,60}") {
        match decode_client_frame(line.as_bytes()) {
            Ok(ClientFrame::Command(l, p)) => prop_assert!(l == line && !p.has_script()),
            Ok(other) => prop_assert!(false, "{other:?}"),
            Err(e) => prop_assert!(line.trim().is_empty(), "{e}"),
        }
    }
}
