//! QR codes as SVG (the `qrcode` crate's SVG renderer), served inside JSON answers as `data:`
//! URLs so the page needs no inline markup.

use base64::Engine as _;
use qrcode::QrCode;
use qrcode::render::svg;

/// Longest text encoded (a BOLT 11 invoice with a long memo fits; QR version 40 holds ~2900
/// bytes at the lowest error correction).
pub const MAX_QR_TEXT: usize = 2048;

/// A QR code of `text` as an SVG `data:` URL, or `None` if it is too long to encode.
pub fn svg_data_url(text: &str) -> Option<String> {
    if text.len() > MAX_QR_TEXT {
        return None;
    }
    // Upper case uses QR's compact alphanumeric mode for bech32 (BOLT 11, LNURL): smaller codes.
    let upper = text.to_ascii_uppercase();
    let payload = if text.starts_with("ln") || text.starts_with("LN") {
        upper.as_bytes()
    } else {
        text.as_bytes()
    };
    let code = QrCode::new(payload).ok()?;
    let image = code
        .render::<svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build();
    Some(format!(
        "data:image/svg+xml;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(image)
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn encodes_and_bounds() {
        let url = svg_data_url("lnbcrt1u1pexample").unwrap();
        assert!(url.starts_with("data:image/svg+xml;base64,"));
        assert!(svg_data_url(&"x".repeat(MAX_QR_TEXT + 1)).is_none());
    }
}
