//! Building and booting the example kernels (placeholder until the kernels land).

/// `cargo xtask qemu`.
pub fn run(_args: &[String]) -> Result<(), String> {
    Err("the example kernels are not in the tree yet".into())
}

/// The QEMU step of `cargo xtask test`.
pub fn boot_and_check() -> Result<String, String> {
    Err("the example kernels are not in the tree yet".into())
}
