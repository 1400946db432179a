//! Architecture-neutral demo logic for the example kernels (being implemented).
#![no_std]
