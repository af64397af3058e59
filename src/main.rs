//! The `tidings` binary.

fn main() {
    println!("tidings");
}
