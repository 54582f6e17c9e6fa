//! Placeholder entry point: this crate is filled by its own issue.

fn main() {
    eprintln!("not built yet: see the crate README");
    std::process::exit(2);
}
