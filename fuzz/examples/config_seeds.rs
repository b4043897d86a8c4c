//! Writes the seed corpus of `config` (`p11ha_fuzz::config::seeds`) into the
//! directory given (default `corpus/config`), and runs each once, so that a
//! seed that breaks an invariant is seen at once.
//!
//! Usage: cargo run --example config_seeds [-- DIR]

fn main() -> std::io::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "corpus/config".into());
    std::fs::create_dir_all(&dir)?;
    let seeds = p11ha_fuzz::config::seeds();
    for (name, input) in &seeds {
        p11ha_fuzz::config::run(input);
        std::fs::write(std::path::Path::new(&dir).join(name), input)?;
    }
    println!("{} seeds in {dir}", seeds.len());
    Ok(())
}
