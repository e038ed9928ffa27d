//! HyperDbg numbers on command lines: the ABI's one parser ([`hvscript_abi::number`]).

pub use hvscript_abi::number::{parse_digits, parse_number, parse_signed_number};
