//! The concrete formats, one module per architecture. All of them compile on every host.

pub mod aarch64;
pub mod x86_64;
