//! Binary keys and values on the command line: `--hex` and `--base64` decode arguments (and
//! stdin) and encode what `get` prints, so keys and values need not be UTF-8 text. Hand-written
//! (a few lines each) rather than a dependency: standard base64 alphabet with padding (RFC 4648
//! §4), lowercase hex on output, either case on input.

use clap::ValueEnum;

/// How the CLI reads keys and values from its arguments and prints values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Encoding {
    /// The bytes as given (arguments are UTF-8 text; stdin and output are raw bytes).
    #[default]
    Raw,
    /// Hexadecimal, two digits a byte.
    Hex,
    /// Standard base64 with padding.
    Base64,
}

/// Why an argument could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("not hex: {0}")]
    Hex(&'static str),
    #[error("not base64: {0}")]
    Base64(&'static str),
}

const BASE64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

impl Encoding {
    /// Decodes `input` (an argument, or stdin); surrounding whitespace is ignored for hex and
    /// base64 so `echo 00ff | ringleader put --hex k -` works.
    pub fn decode(self, input: &[u8]) -> Result<Vec<u8>, DecodeError> {
        match self {
            Encoding::Raw => Ok(input.to_vec()),
            Encoding::Hex => decode_hex(input.trim_ascii()),
            Encoding::Base64 => decode_base64(input.trim_ascii()),
        }
    }

    /// Encodes bytes for output.
    pub fn encode(self, bytes: &[u8]) -> Vec<u8> {
        match self {
            Encoding::Raw => bytes.to_vec(),
            Encoding::Hex => bytes
                .iter()
                .flat_map(|b| {
                    let digits = b"0123456789abcdef";
                    [digits[(b >> 4) as usize], digits[(b & 15) as usize]]
                })
                .collect(),
            Encoding::Base64 => encode_base64(bytes).into_bytes(),
        }
    }
}

fn decode_hex(input: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if !input.len().is_multiple_of(2) {
        return Err(DecodeError::Hex("an odd number of digits"));
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(DecodeError::Hex("a character other than 0-9, a-f")),
    };
    input
        .chunks_exact(2)
        .map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect()
}

/// Standard base64 with padding.
pub fn encode_base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(BASE64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn decode_base64(input: &[u8]) -> Result<Vec<u8>, DecodeError> {
    if !input.len().is_multiple_of(4) {
        return Err(DecodeError::Base64("the length is not a multiple of 4"));
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let quads = input.len() / 4;
    for (q, quad) in input.chunks_exact(4).enumerate() {
        let padding = quad.iter().rev().take_while(|c| **c == b'=').count();
        if padding > 2 || (padding > 0 && q + 1 != quads) {
            return Err(DecodeError::Base64("misplaced padding"));
        }
        let mut n = 0u32;
        for &c in &quad[..4 - padding] {
            let value = BASE64
                .iter()
                .position(|b| *b == c)
                .ok_or(DecodeError::Base64(
                    "a character outside the base64 alphabet",
                ))?;
            n = n << 6 | value as u32;
        }
        n <<= 6 * padding as u32;
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - padding]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length_and_matches_rfc_4648_vectors() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(encode_base64(plain.as_bytes()), encoded);
            assert_eq!(
                Encoding::Base64.decode(encoded.as_bytes()).unwrap(),
                plain.as_bytes()
            );
        }
        let all: Vec<u8> = (0..=255).collect();
        for len in 0..all.len() {
            for encoding in [Encoding::Hex, Encoding::Base64] {
                let encoded = encoding.encode(&all[..len]);
                assert_eq!(encoding.decode(&encoded).unwrap(), &all[..len]);
            }
        }
        assert!(Encoding::Hex.decode(b"0g").is_err());
        assert!(Encoding::Hex.decode(b"abc").is_err());
        assert!(Encoding::Base64.decode(b"Zg=a").is_err());
        assert!(Encoding::Base64.decode(b"Zg==Zg==").is_err());
    }
}
