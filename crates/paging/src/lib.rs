//! devpriv-paging (being implemented).
#![no_std]
