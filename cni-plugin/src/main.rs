// SPDX-License-Identifier: Apache-2.0
//! The `weir` CNI plugin binary; everything lives in the `weir_cni` library.

fn main() -> std::process::ExitCode {
    weir_cni::main_entry()
}
