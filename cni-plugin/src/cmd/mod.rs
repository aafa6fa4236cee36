// SPDX-License-Identifier: Apache-2.0
//! One module per CNI verb. Each takes the validated configuration and its verb's arguments from
//! [`crate::skel`] and returns what the runtime should see.

pub mod add;
pub mod check;
pub mod del;
pub mod gc;
pub mod status;
pub mod version;
