//! Writes the seed corpus: `cargo run --example seeds -- <corpus dir>` creates
//! `<corpus dir>/<target>/seed-<name>` for every fuzz target. `smoke.sh` runs it before fuzzing.

use std::path::PathBuf;
use std::{env, fs, io};

fn main() -> io::Result<()> {
    let dir = PathBuf::from(env::args_os().nth(1).unwrap_or_else(|| "corpus".into()));
    for (target, name, bytes) in picket_fuzz::seeds() {
        let target_dir = dir.join(target);
        fs::create_dir_all(&target_dir)?;
        fs::write(target_dir.join(format!("seed-{name}")), bytes)?;
    }
    Ok(())
}
