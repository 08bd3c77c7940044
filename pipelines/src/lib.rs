//! Assembled temponet dataflows and the implementations behind the `temponet` command line.
//! `main.rs` only parses arguments and calls into [`commands`].

pub mod allocator;
pub mod commands;
pub mod dataflow;
pub mod embedded;
pub mod model_stages;
