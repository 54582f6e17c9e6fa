//! Domain rules as plain functions over plain types: no database, socket or clock inside.

pub mod coordinates;
pub mod lineage;
pub mod mutation;
pub mod nickname;
pub mod node;
pub mod viz_key;
