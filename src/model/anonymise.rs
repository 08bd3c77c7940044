//! Keyed prefix-preserving address permutation (Crypto-PAn, Xu et al. 2002) so no real address leaves the model:
//! two addresses sharing a k-bit prefix map to addresses sharing exactly a k-bit prefix, and without the key the
//! mapping cannot be inverted. Bit i of the output is bit i of the input XOR the first bit of
//! AES-128(key, first i input bits padded with a key-derived pad). The 256-bit key material comes from SHA-256 of
//! the user's passphrase (first half AES key, second half pad seed).

use aes::Aes128;
use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub struct Anonymiser {
    cipher: Aes128,
    pad: [u8; 16],
}

impl Anonymiser {
    pub fn new(passphrase: &str) -> Anonymiser {
        let d = Sha256::digest(passphrase.as_bytes());
        let cipher = Aes128::new(GenericArray::from_slice(&d[..16]));
        let mut pad = GenericArray::clone_from_slice(&d[16..32]);
        cipher.encrypt_block(&mut pad);
        let mut p = [0u8; 16];
        p.copy_from_slice(&pad);
        Anonymiser { cipher, pad: p }
    }

    fn permute_bits(&self, input: &[u8]) -> Vec<u8> {
        let nbits = input.len() * 8;
        let mut out = input.to_vec();
        for i in 0..nbits {
            // Block: the first i bits of the input, the rest from the pad.
            let mut block = self.pad;
            for (j, b) in block.iter_mut().enumerate() {
                let keep_bits = i.saturating_sub(j * 8).min(8);
                if keep_bits == 0 {
                    continue;
                }
                let mask: u8 = if keep_bits == 8 {
                    0xff
                } else {
                    !(0xffu8 >> keep_bits)
                };
                let src = if j < input.len() { input[j] } else { 0 };
                *b = (src & mask) | (*b & !mask);
            }
            let mut g = GenericArray::clone_from_slice(&block);
            self.cipher.encrypt_block(&mut g);
            let flip = g[0] >> 7;
            out[i / 8] ^= flip << (7 - (i % 8));
        }
        out
    }

    pub fn map(&self, a: IpAddr) -> IpAddr {
        match a {
            IpAddr::V4(v) => {
                let o = self.permute_bits(&v.octets());
                IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3]))
            }
            IpAddr::V6(v) => {
                let o = self.permute_bits(&v.octets());
                let mut b = [0u8; 16];
                b.copy_from_slice(&o);
                IpAddr::V6(Ipv6Addr::from(b))
            }
        }
    }

    pub fn map_record(&self, r: &mut crate::FlowRecord) {
        r.src = self.map(r.src);
        r.dst = self.map(r.dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn prefix_preserving_and_keyed() {
        let a = Anonymiser::new("k1");
        let x: IpAddr = "192.168.1.10".parse().unwrap();
        let y: IpAddr = "192.168.1.200".parse().unwrap();
        let z: IpAddr = "10.0.0.1".parse().unwrap();
        let (mx, my) = match (a.map(x), a.map(y)) {
            (IpAddr::V4(p), IpAddr::V4(q)) => (p.octets(), q.octets()),
            _ => unreachable!(),
        };
        assert_eq!(mx[..3], my[..3]);
        assert_ne!(a.map(x), x);
        assert_ne!(a.map(x), a.map(z));
        assert_ne!(Anonymiser::new("k2").map(x), a.map(x));
        assert_eq!(a.map(x), Anonymiser::new("k1").map(x));
    }
}
