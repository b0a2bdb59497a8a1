//! Random identifiers and secrets from the OS's random source.

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `len` characters of letters and digits, uniformly: bytes of 248 and above (the part of the
/// byte range 62 does not divide) are drawn again rather than folded in, which would bias the
/// first characters of the alphabet. Each character carries 5.95 bits.
pub fn random_text(len: usize) -> String {
    let mut text = String::with_capacity(len);
    let mut bytes = [0u8; 64];
    while text.len() < len {
        getrandom::fill(&mut bytes).expect("the OS's random source works");
        for &byte in &bytes {
            if byte < 248 && text.len() < len {
                text.push(char::from(ALPHABET[usize::from(byte % 62)]));
            }
        }
    }
    text
}

/// `N` random bytes.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS's random source works");
    bytes
}
