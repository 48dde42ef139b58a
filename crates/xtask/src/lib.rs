//! The VM harness of enclave-init: assets, the Nitro image layout, QEMU.
//! Used by `cargo xtask` and by the end-to-end tests in `tests/`.

pub mod assets;
pub mod bench;
pub mod cpio;
pub mod eif;
pub mod enclave;
pub mod image;
pub mod nitro;
pub mod vm;
