//! BOLT 4 hop payloads for `createonion`: the TLV streams a keysend onion carries.
//!
//! `createonion` takes, per hop, the payload *with* its BigSize length prefix (CLN refuses
//! payloads that are not length-prefixed). A non-final hop gets `amt_to_forward` (2),
//! `outgoing_cltv_value` (4) and `short_channel_id` (6); the final hop gets the amount, the
//! CLTV, the keysend preimage (5482373484) and the sender's custom records, all in ascending
//! type order.
//!
//! Public so that the fake `lightningd` of Satchel's tests (`satchel-fakes`) reads the payloads
//! this module writes with this module's own parsers.

use std::collections::BTreeMap;

use satchel_domain::{CustomRecords, KEYSEND_PREIMAGE_TLV, Preimage};

/// `amt_to_forward`.
pub const TLV_AMT_TO_FORWARD: u64 = 2;
/// `outgoing_cltv_value`.
pub const TLV_OUTGOING_CLTV: u64 = 4;
/// `short_channel_id`.
pub const TLV_SHORT_CHANNEL_ID: u64 = 6;

/// Appends `n` as a BOLT 1 BigSize.
pub fn write_bigsize(out: &mut Vec<u8>, n: u64) {
    match n {
        0..=0xfc => out.push(n as u8),
        0xfd..=0xffff => {
            out.push(0xfd);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xfe);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        _ => {
            out.push(0xff);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }
}

/// Reads a BigSize from the front of `data`; returns it and the rest. Non-minimal encodings
/// are refused, as BOLT 1 requires.
pub fn read_bigsize(data: &[u8]) -> Option<(u64, &[u8])> {
    let (&first, rest) = data.split_first()?;
    let (n, rest, min) = match first {
        0xfd => {
            let (b, rest) = rest.split_first_chunk::<2>()?;
            (u64::from(u16::from_be_bytes(*b)), rest, 0xfd)
        }
        0xfe => {
            let (b, rest) = rest.split_first_chunk::<4>()?;
            (u64::from(u32::from_be_bytes(*b)), rest, 0x1_0000)
        }
        0xff => {
            let (b, rest) = rest.split_first_chunk::<8>()?;
            (u64::from_be_bytes(*b), rest, 0x1_0000_0000)
        }
        n => (u64::from(n), rest, 0),
    };
    (n >= min).then_some((n, rest))
}

/// A truncated unsigned integer (`tu64`/`tu32`): big-endian without leading zero bytes.
pub fn truncated(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    bytes[skip..].to_vec()
}

/// Decodes a truncated unsigned integer.
pub fn read_truncated(v: &[u8]) -> Option<u64> {
    if v.len() > 8 || v.first() == Some(&0) {
        return None;
    }
    Some(v.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// Serialises a TLV stream (types ascending, as a `BTreeMap` iterates) with its length prefix.
pub fn payload(records: &BTreeMap<u64, Vec<u8>>) -> Vec<u8> {
    let mut stream = Vec::new();
    for (t, v) in records {
        write_bigsize(&mut stream, *t);
        write_bigsize(&mut stream, v.len() as u64);
        stream.extend_from_slice(v);
    }
    let mut out = Vec::with_capacity(stream.len() + 3);
    write_bigsize(&mut out, stream.len() as u64);
    out.extend_from_slice(&stream);
    out
}

/// Parses a length-prefixed TLV payload; `None` if malformed (bad prefix, types not strictly
/// ascending, truncated record).
pub fn parse_payload(data: &[u8]) -> Option<BTreeMap<u64, Vec<u8>>> {
    let (len, mut rest) = read_bigsize(data)?;
    if usize::try_from(len).ok()? != rest.len() {
        return None;
    }
    let mut out = BTreeMap::new();
    let mut last: Option<u64> = None;
    while !rest.is_empty() {
        let (t, r) = read_bigsize(rest)?;
        let (l, r) = read_bigsize(r)?;
        let l = usize::try_from(l).ok()?;
        if r.len() < l || last.is_some_and(|p| p >= t) {
            return None;
        }
        out.insert(t, r[..l].to_vec());
        last = Some(t);
        rest = &r[l..];
    }
    Some(out)
}

/// Payload of a hop that forwards `amount_msat` with absolute CLTV `cltv` over channel `scid`.
pub fn forward_payload(amount_msat: u64, cltv: u32, scid: u64) -> Vec<u8> {
    let mut tlvs = BTreeMap::new();
    tlvs.insert(TLV_AMT_TO_FORWARD, truncated(amount_msat));
    tlvs.insert(TLV_OUTGOING_CLTV, truncated(u64::from(cltv)));
    tlvs.insert(TLV_SHORT_CHANNEL_ID, scid.to_be_bytes().to_vec());
    payload(&tlvs)
}

/// Payload of the keysend recipient.
pub fn keysend_payload(
    amount_msat: u64,
    cltv: u32,
    preimage: &Preimage,
    records: &CustomRecords,
) -> Vec<u8> {
    let mut tlvs: BTreeMap<u64, Vec<u8>> = records.0.clone();
    tlvs.insert(TLV_AMT_TO_FORWARD, truncated(amount_msat));
    tlvs.insert(TLV_OUTGOING_CLTV, truncated(u64::from(cltv)));
    tlvs.insert(KEYSEND_PREIMAGE_TLV, preimage.0.to_vec());
    payload(&tlvs)
}

/// Parses CLN's `BLOCKxTXxOUT` short channel id.
pub fn parse_scid(s: &str) -> Option<u64> {
    let mut parts = s.split('x');
    let block: u64 = parts.next()?.parse().ok()?;
    let tx: u64 = parts.next()?.parse().ok()?;
    let out: u64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || block >= 1 << 24 || tx >= 1 << 24 || out >= 1 << 16 {
        return None;
    }
    Some((block << 40) | (tx << 16) | out)
}

/// Formats a short channel id as `BLOCKxTXxOUT`.
pub fn format_scid(scid: u64) -> String {
    format!(
        "{}x{}x{}",
        scid >> 40,
        (scid >> 16) & 0xff_ffff,
        scid & 0xffff
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bigsize_matches_bolt1_vectors() {
        let cases: [(u64, &str); 7] = [
            (0, "00"),
            (252, "fc"),
            (253, "fd00fd"),
            (65535, "fdffff"),
            (65536, "fe00010000"),
            (4294967295, "feffffffff"),
            (4294967296, "ff0000000100000000"),
        ];
        for (n, hex_str) in cases {
            let mut out = Vec::new();
            write_bigsize(&mut out, n);
            assert_eq!(hex::encode(&out), hex_str);
            assert_eq!(read_bigsize(&out), Some((n, &[][..])));
        }
        // Non-minimal encodings are refused.
        assert_eq!(read_bigsize(&hex::decode("fd00fc").unwrap()), None);
        assert_eq!(read_bigsize(&hex::decode("fe0000ffff").unwrap()), None);
        assert_eq!(read_bigsize(&hex::decode("fd00").unwrap()), None);
    }

    #[test]
    fn truncated_ints() {
        assert_eq!(truncated(0), Vec::<u8>::new());
        assert_eq!(truncated(1), vec![1]);
        assert_eq!(truncated(0x0100), vec![1, 0]);
        assert_eq!(read_truncated(&[1, 0]), Some(256));
        assert_eq!(read_truncated(&[0, 1]), None);
        assert_eq!(read_truncated(&[]), Some(0));
    }

    #[test]
    fn keysend_payload_is_sorted_and_length_prefixed() {
        let preimage = Preimage([7u8; 32]);
        let mut records = CustomRecords::default();
        records.0.insert(112_111_100_102, b"wal_x".to_vec());
        records.0.insert(7_629_169, b"{}".to_vec());
        let p = keysend_payload(100_000, 140, &preimage, &records);
        let parsed = parse_payload(&p).unwrap();
        let types: Vec<u64> = parsed.keys().copied().collect();
        assert_eq!(
            types,
            vec![2, 4, 7_629_169, KEYSEND_PREIMAGE_TLV, 112_111_100_102]
        );
        assert_eq!(read_truncated(&parsed[&2]), Some(100_000));
        assert_eq!(read_truncated(&parsed[&4]), Some(140));
        assert_eq!(parsed[&KEYSEND_PREIMAGE_TLV], vec![7u8; 32]);
        // amt 100000 = 0x0186a0 (3 bytes), cltv 140 = 0x8c (1 byte).
        assert_eq!(usize::from(p[0]), p.len() - 1);
        assert_eq!(hex::encode(&p[1..9]), "02030186a004018c");
    }

    #[test]
    fn forward_payload_bytes() {
        let p = forward_payload(1_000, 500, parse_scid("103x1x0").unwrap());
        // len 0x12: 02 02 03e8 | 04 02 01f4 | 06 08 0000670000010000
        assert_eq!(hex::encode(p), "12020203e8040201f406080000670000010000");
    }

    #[test]
    fn scid_round_trip() {
        let scid = parse_scid("103x1x0").unwrap();
        assert_eq!(scid, (103 << 40) | (1 << 16));
        assert_eq!(format_scid(scid), "103x1x0");
        assert_eq!(parse_scid("1x2"), None);
        assert_eq!(parse_scid("16777216x0x0"), None);
    }
}
