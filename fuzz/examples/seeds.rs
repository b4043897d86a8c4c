//! Writes the seed corpus of `rpc_reply` (`p11ha_fuzz::seeds`) into the
//! directory given (default `corpus/rpc_reply`), and runs each once, so that
//! a seed that breaks an invariant is seen at once (the crate's tests check
//! that the healthy seeds answer every call).
//!
//! Usage: cargo run --example seeds [-- DIR]

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus/rpc_reply".into());
    std::fs::create_dir_all(&dir)?;
    let seeds = p11ha_fuzz::seeds();
    for (name, input) in &seeds {
        p11ha_fuzz::run(input);
        std::fs::write(std::path::Path::new(&dir).join(name), input)?;
    }
    println!("{} seeds in {dir}", seeds.len());
    Ok(())
}
