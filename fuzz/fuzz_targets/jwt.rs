//! JWT verification: arbitrary tokens, and arbitrary claims in correctly signed tokens.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

#[path = "../src/jwt.rs"]
mod jwt;

static VERIFIERS: LazyLock<jwt::Verifiers> = LazyLock::new(jwt::Verifiers::new);

fuzz_target!(|data: &[u8]| jwt::jwt(&VERIFIERS, data));
