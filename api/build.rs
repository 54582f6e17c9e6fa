//! `sqlx::migrate!` embeds `migrations/` at compile time, but on stable Rust a macro cannot tell
//! cargo which files it read: a migration added without a change to any Rust file left an
//! incremental build with the old set, so `mutr-api migrate` silently skipped the new one (seen
//! with `20261202000001_drop_nodes_xyz.sql`). This makes cargo rebuild when the folder changes
//! (sqlx's own advice, `sqlx migrate build-script`).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
