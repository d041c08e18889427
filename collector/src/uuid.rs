//! RFC 4122 UUID text from hash bytes: the one formatter behind every id the collector derives
//! (indicator ids, STIX bundle ids, shared sighting and identity ids, TAXII collection ids).

/// Formats the first 16 bytes of `digest` (which must hold at least 16) as a UUID of `version`
/// (4 for keyed random-looking ids, 5 for name-based ones), with the RFC 4122 variant bits.
pub fn uuid_text(digest: &[u8], version: u8) -> String {
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | (version << 4);
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_and_variant_bits() {
        let u = super::uuid_text(&[0xff; 20], 5);
        assert_eq!(u, "ffffffff-ffff-5fff-bfff-ffffffffffff");
        assert_eq!(
            super::uuid_text(&[0; 16], 4),
            "00000000-0000-4000-8000-000000000000"
        );
    }
}
