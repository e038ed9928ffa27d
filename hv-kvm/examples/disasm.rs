//! Prints the demo guest's code, disassembled (a debugging aid).
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};

fn main() {
    let img = hv_kvm::demo::demo_image().expect("assemble");
    let mut d = Decoder::with_ip(64, &img.code, img.load_addr, DecoderOptions::NONE);
    let mut f = IntelFormatter::new();
    let mut s = String::new();
    println!("entry {:#x} user {:#x}", img.entry, img.user_entry);
    for ins in &mut d {
        s.clear();
        f.format(&ins, &mut s);
        println!("{:#x}  {s}", ins.ip());
    }
}
