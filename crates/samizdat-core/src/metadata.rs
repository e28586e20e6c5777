//! Photos leave the device without their metadata (security review 3, app review): EXIF
//! (GPS position, time, camera serial number), XMP, IPTC, comments and text chunks are
//! taken out of JPEG, PNG and WebP files before they are encrypted; the pixels are not
//! touched (no re-encoding, no quality loss). A JPEG keeps only its orientation, in a minimal
//! EXIF block of its own, so a photo taken sideways still shows upright.
//!
//! The walkers below read the containers' own structure (segments, chunks) and copy what
//! is kept; anything they do not understand makes [`strip`] fail, and the caller then refuses
//! to send the file as it is unless asked to (`--keep-metadata`). A file of another kind is
//! sent unchanged.

use crate::{Error, Result};

/// What [`strip`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum Stripped {
    /// Not an image format we clean: send the bytes as they are.
    NotAnImage,
    /// The cleaned image.
    Image(zeroize::Zeroizing<Vec<u8>>),
}

/// Take the metadata out of a JPEG, PNG or WebP image.
pub fn strip(bytes: &[u8]) -> Result<Stripped> {
    let cleaned = if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        jpeg(bytes)
    } else if bytes.starts_with(PNG_SIGNATURE) {
        png(bytes)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        webp(bytes)
    } else {
        return Ok(Stripped::NotAnImage);
    };
    cleaned.map(|v| Stripped::Image(zeroize::Zeroizing::new(v))).ok_or_else(|| {
        Error::Usage(
            "this image could not be read to remove its metadata (location, camera, time); send it with --keep-metadata to send it as it is".into(),
        )
    })
}

fn be16(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}

fn be32(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

fn le32(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

const SOS: u8 = 0xDA;
const EOI: u8 = 0xD9;
const APP1: u8 = 0xE1;
const APP2: u8 = 0xE2;
const COM: u8 = 0xFE;

/// Whether a JPEG segment is metadata: APP1 (EXIF, XMP), APP2 unless it is an ICC colour
/// profile (MPF: more pictures, with their own EXIF), APP3–APP13 and APP15 (vendors', IPTC),
/// comments. Kept: APP0 (JFIF), ICC profiles and APP14 (Adobe: how to read the colours).
fn jpeg_metadata(marker: u8, contents: &[u8]) -> bool {
    match marker {
        APP2 => !contents.starts_with(b"ICC_PROFILE\0"),
        0xE0 | 0xEE => false,
        0xE1..=0xEF | COM => true,
        _ => false,
    }
}

/// A JPEG without its metadata: segments are copied one by one; scan data (where 0xFF is
/// always followed by 0x00 or a restart marker) is copied up to the next marker; the file ends
/// at its EOI (anything appended after it — more pictures, thumbnails — is dropped).
fn jpeg(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(&[0xFF, 0xD8]);
    if let Some(o) = jpeg_orientation(b) {
        out.extend_from_slice(&orientation_segment(o));
    }
    let mut i = 2;
    loop {
        // Fill bytes (0xFF runs) before a marker.
        if *b.get(i)? != 0xFF {
            return None;
        }
        while *b.get(i + 1)? == 0xFF {
            i += 1;
        }
        let marker = *b.get(i + 1)?;
        match marker {
            EOI => {
                out.extend_from_slice(&[0xFF, EOI]);
                return Some(out);
            }
            // Markers without a length.
            0x01 | 0xD0..=0xD7 => {
                out.extend_from_slice(&b[i..i + 2]);
                i += 2;
                continue;
            }
            _ => {}
        }
        let len = be16(b, i + 2)?;
        if len < 2 {
            return None;
        }
        let end = i + 2 + len;
        let contents = b.get(i + 4..end)?;
        if !jpeg_metadata(marker, contents) {
            out.extend_from_slice(&b[i..end]);
        }
        i = end;
        if marker == SOS {
            // Entropy-coded data up to the next real marker.
            let start = i;
            loop {
                let byte = *b.get(i)?;
                if byte == 0xFF {
                    let next = *b.get(i + 1)?;
                    if next != 0x00 && !(0xD0..=0xD7).contains(&next) && next != 0xFF {
                        break;
                    }
                    if next == 0xFF {
                        i += 1;
                        continue;
                    }
                    i += 2;
                } else {
                    i += 1;
                }
            }
            out.extend_from_slice(&b[start..i]);
        }
    }
}

/// The EXIF orientation (1–8) of a JPEG, if it has one.
pub(crate) fn jpeg_orientation(b: &[u8]) -> Option<u16> {
    let mut i = 2;
    while i + 4 <= b.len() && b[i] == 0xFF {
        let marker = b[i + 1];
        if marker == SOS || marker == EOI {
            return None;
        }
        let len = be16(b, i + 2)?;
        let contents = b.get(i + 4..i + 2 + len)?;
        if marker == APP1
            && let Some(tiff) = contents.strip_prefix(b"Exif\0\0")
        {
            return tiff_orientation(tiff);
        }
        i += 2 + len;
    }
    None
}

/// Tag 0x0112 of a TIFF block's first IFD.
fn tiff_orientation(t: &[u8]) -> Option<u16> {
    let little = match t.get(..4)? {
        b"II*\0" => true,
        b"MM\0*" => false,
        _ => return None,
    };
    let u16_at = |at: usize| -> Option<u16> {
        let v: [u8; 2] = t.get(at..at + 2)?.try_into().ok()?;
        Some(if little {
            u16::from_le_bytes(v)
        } else {
            u16::from_be_bytes(v)
        })
    };
    let ifd = if little { le32(t, 4)? } else { be32(t, 4)? };
    let count = u16_at(ifd)? as usize;
    (0..count.min(512)).find_map(|k| {
        let e = ifd + 2 + 12 * k;
        (u16_at(e)? == 0x0112 && u16_at(e + 2)? == 3)
            .then(|| u16_at(e + 8))
            .flatten()
            .filter(|o| (1..=8).contains(o))
    })
}

/// An APP1 segment holding an EXIF block with the orientation alone.
pub(crate) fn orientation_segment(o: u16) -> Vec<u8> {
    let mut tiff = Vec::with_capacity(26);
    tiff.extend_from_slice(b"MM\0*");
    tiff.extend_from_slice(&8u32.to_be_bytes()); // the IFD follows the header
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // one value
    tiff.extend_from_slice(&o.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // padding of the 4-byte value field
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut seg = vec![0xFF, APP1];
    seg.extend_from_slice(&((2 + 6 + tiff.len()) as u16).to_be_bytes());
    seg.extend_from_slice(b"Exif\0\0");
    seg.extend_from_slice(&tiff);
    seg
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

/// A PNG without `eXIf`, text (`tEXt`, `zTXt`, `iTXt`) and `tIME` chunks, ending at `IEND`.
fn png(b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(PNG_SIGNATURE);
    let mut i = PNG_SIGNATURE.len();
    loop {
        let len = be32(b, i)?;
        let kind = b.get(i + 4..i + 8)?;
        let end = (i + 12).checked_add(len)?;
        let chunk = b.get(i..end)?;
        if !matches!(kind, b"eXIf" | b"tEXt" | b"zTXt" | b"iTXt" | b"tIME") {
            out.extend_from_slice(chunk);
        }
        if kind == b"IEND" {
            return Some(out);
        }
        i = end;
    }
}

/// A WebP without `EXIF` and `XMP ` chunks (and their flags in `VP8X`).
fn webp(b: &[u8]) -> Option<Vec<u8>> {
    let size = le32(b, 4)?;
    let body = b.get(12..8usize.checked_add(size)?)?;
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(b"RIFF\0\0\0\0WEBP");
    let mut i = 0;
    while i < body.len() {
        let kind = body.get(i..i + 4)?;
        let len = le32(body, i + 4)?;
        let end = (i + 8)
            .checked_add(len)?
            .checked_add(len % 2)?
            .min(body.len());
        let chunk = body.get(i..end)?;
        match kind {
            b"EXIF" | b"XMP " => {}
            b"VP8X" => {
                let mut c = chunk.to_vec();
                // Flags: bit 3 EXIF, bit 2 XMP.
                *c.get_mut(8)? &= !0b0000_1100;
                out.extend_from_slice(&c);
            }
            _ => out.extend_from_slice(chunk),
        }
        i = end;
    }
    let riff = u32::try_from(out.len() - 8).ok()?;
    out[4..8].copy_from_slice(&riff.to_le_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GPS: &[u8] = b"GPS 55.7558N 37.6173E serial=SN12345";

    /// A small JPEG: APP0, an EXIF APP1 with orientation 6 and a GPS-looking string, a
    /// comment, an XMP APP1, the image segments and scan data, EOI, then a trailing picture.
    fn sample_jpeg() -> Vec<u8> {
        let mut exif =
            b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0".to_vec();
        exif.extend_from_slice(GPS);
        let seg = |marker: u8, contents: &[u8]| {
            let mut s = vec![0xFF, marker];
            s.extend_from_slice(&((contents.len() + 2) as u16).to_be_bytes());
            s.extend_from_slice(contents);
            s
        };
        let mut j = vec![0xFF, 0xD8];
        j.extend(seg(0xE0, b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0"));
        j.extend(seg(APP1, &exif));
        j.extend(seg(COM, GPS));
        j.extend(seg(
            APP1,
            b"http://ns.adobe.com/xap/1.0/\0<x:xmpmeta>GPS</x:xmpmeta>",
        ));
        j.extend(seg(APP2, b"ICC_PROFILE\0\x01\x01colours"));
        j.extend(seg(0xDB, &[0u8; 65]));
        j.extend(seg(0xC0, b"\x08\0\x10\0\x10\x01\x01\x11\0"));
        j.extend(seg(SOS, b"\x01\x01\0\0\x3f\0"));
        j.extend_from_slice(b"\x12\x34\xFF\x00\x56\xFF\xD0\x78");
        j.extend_from_slice(&[0xFF, EOI]);
        j.extend_from_slice(b"\xFF\xD8trailing picture ");
        j.extend_from_slice(GPS);
        j
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn a_jpeg_loses_its_metadata_and_keeps_its_picture_and_orientation() {
        let original = sample_jpeg();
        assert!(contains(&original, b"55.7558N"));
        let Stripped::Image(clean) = strip(&original).expect("strip") else {
            panic!("a JPEG is an image");
        };
        assert!(!contains(&clean, b"55.7558N"), "the GPS text is gone");
        assert!(!contains(&clean, b"xmpmeta"));
        assert!(!contains(&clean, b"trailing picture"));
        assert!(
            contains(&clean, b"ICC_PROFILE\0"),
            "the colour profile stays"
        );
        assert!(
            contains(&clean, b"\x12\x34\xFF\x00\x56\xFF\xD0\x78"),
            "the scan data stays"
        );
        assert!(clean.ends_with(&[0xFF, EOI]));
        assert_eq!(jpeg_orientation(&clean), Some(6), "the orientation stays");
        // Cleaning again changes nothing.
        let Stripped::Image(again) = strip(&clean).expect("strip") else {
            panic!()
        };
        assert_eq!(*again, *clean);
    }

    #[test]
    fn a_png_loses_its_text_exif_and_time() {
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut c = (data.len() as u32).to_be_bytes().to_vec();
            c.extend_from_slice(kind);
            c.extend_from_slice(data);
            c.extend_from_slice(&[0, 0, 0, 0]);
            c
        };
        let mut p = PNG_SIGNATURE.to_vec();
        p.extend(chunk(b"IHDR", &[0, 0, 0, 1, 0, 0, 0, 1, 8, 0, 0, 0, 0]));
        p.extend(chunk(b"tEXt", GPS));
        p.extend(chunk(b"eXIf", GPS));
        p.extend(chunk(b"iTXt", GPS));
        p.extend(chunk(b"tIME", &[7, 234, 12, 6, 9, 0, 0]));
        p.extend(chunk(b"IDAT", b"pixels"));
        p.extend(chunk(b"IEND", b""));
        p.extend_from_slice(GPS);
        let Stripped::Image(clean) = strip(&p).expect("strip") else {
            panic!()
        };
        assert!(!contains(&clean, b"55.7558N"));
        assert!(!contains(&clean, b"tIME"));
        assert!(contains(&clean, b"IDATpixels"));
        assert!(contains(&clean, b"IHDR"));
    }

    #[test]
    fn a_webp_loses_exif_and_xmp_and_their_flags() {
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut c = kind.to_vec();
            c.extend_from_slice(&(data.len() as u32).to_le_bytes());
            c.extend_from_slice(data);
            if data.len() % 2 == 1 {
                c.push(0);
            }
            c
        };
        let mut body = b"WEBP".to_vec();
        body.extend(chunk(b"VP8X", &[0b0000_1100, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        body.extend(chunk(b"VP8L", b"pixels!"));
        body.extend(chunk(b"EXIF", GPS));
        body.extend(chunk(b"XMP ", GPS));
        let mut w = b"RIFF".to_vec();
        w.extend_from_slice(&(body.len() as u32).to_le_bytes());
        w.extend(body);
        let Stripped::Image(clean) = strip(&w).expect("strip") else {
            panic!()
        };
        assert!(!contains(&clean, b"55.7558N"));
        assert!(contains(&clean, b"VP8Lpixels") || contains(&clean, b"pixels!"));
        assert_eq!(clean[8 + 4 + 8], 0, "the EXIF and XMP flags are cleared");
        assert_eq!(le32(&clean, 4), Some(clean.len() - 8));
    }

    #[test]
    fn other_files_pass_and_broken_images_are_refused() {
        assert_eq!(strip(b"%PDF-1.7 ...").expect("pdf"), Stripped::NotAnImage);
        assert_eq!(strip(b"").expect("empty"), Stripped::NotAnImage);
        let mut cut = sample_jpeg();
        cut.truncate(40);
        assert!(
            strip(&cut).is_err(),
            "a cut-off JPEG is refused, not sent half-cleaned"
        );
        assert!(strip(b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR").is_err());
    }
}
