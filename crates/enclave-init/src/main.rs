//! `enclave-init`: see the library for everything; this only wires it.

use std::process::ExitCode;

fn main() -> ExitCode {
    enclave_init::run::main()
}
