//! devpriv-pagemap (being implemented).
#![no_std]
