//! The task shim as a binary of its own, for this crate's tests (Hearth itself runs the same
//! code as `hearth internal shim DIR`).

fn main() {
    let Some(dir) = std::env::args_os().nth(1) else {
        eprintln!("usage: hearth-agent-shim DIR");
        std::process::exit(2);
    };
    std::process::exit(hearth_agent::shim::run(std::path::Path::new(&dir)));
}
