//! Thumbnails of photos, made on the sender's device (issue 30, item 3).
//!
//! A photo's thumbnail travels inside the MLS message with the file's key (in
//! [`crate::payload::Attachment`]), so a receiver shows the picture at once without fetching
//! the file, and no relay ever sees a preview. It is a fresh JPEG of at most [`SIDE`] pixels a
//! side and [`MAX_BYTES`] bytes — re-encoded from pixels, so nothing of the original's metadata
//! is in it — upright (the EXIF orientation applied). It lives in the message's row and goes
//! with it.
//!
//! JPEG photos are decoded at a reduced scale (jpeg-decoder's scaled IDCT: a 12-megapixel
//! photo is decoded at 1/8 size, never in full); PNG, WebP and GIF (first frame) through the
//! `image` crate, within limits on size and memory.

use image::{DynamicImage, ImageDecoder, RgbImage};

/// Longest side of a thumbnail, in pixels.
pub const SIDE: u32 = 320;

/// Largest thumbnail (it rides in a message of at most 64 KiB, beside up to 16 KiB of text).
pub const MAX_BYTES: usize = 16 * 1024;

/// Images larger than this many pixels are not read (a decompression bomb).
const MAX_PIXELS: u64 = 100_000_000;

/// A photo's thumbnail and the photo's own size (as shown: upright).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thumbnail {
    pub jpeg: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// The thumbnail of an image (JPEG, PNG, WebP, GIF), or `None` for anything else or an image
/// that cannot be read.
pub fn make(bytes: &[u8]) -> Option<Thumbnail> {
    let (img, orientation) = if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        let o = crate::metadata::jpeg_orientation(bytes).unwrap_or(1);
        (jpeg_scaled(bytes).or_else(|| other(bytes))?, o)
    } else {
        (other(bytes)?, 1)
    };
    let (full_w, full_h, img) = img;
    let mut img = img;
    img.apply_orientation(image::metadata::Orientation::from_exif(orientation as u8)?);
    let (width, height) = if orientation >= 5 {
        (full_h, full_w)
    } else {
        (full_w, full_h)
    };
    for (side, quality) in [(SIDE, 72), (SIDE, 50), (SIDE * 3 / 4, 45), (SIDE / 2, 40)] {
        // Never enlarged (`thumbnail` would scale a small picture up to fit).
        let small = if img.width() <= side && img.height() <= side {
            img.to_rgb8()
        } else {
            img.thumbnail(side, side).to_rgb8()
        };
        let jpeg = encode(&small, quality)?;
        if jpeg.len() <= MAX_BYTES {
            return Some(Thumbnail {
                jpeg,
                width,
                height,
            });
        }
    }
    None
}

/// A decoded image (possibly smaller than the original) with the original's size.
type Decoded = (u32, u32, DynamicImage);

/// A JPEG decoded at the smallest scale (1/1, 1/2, 1/4, 1/8) that still covers a thumbnail.
fn jpeg_scaled(bytes: &[u8]) -> Option<Decoded> {
    let mut d = jpeg_decoder::Decoder::new(bytes);
    d.read_info().ok()?;
    let info = d.info()?;
    let (w, h) = (u32::from(info.width), u32::from(info.height));
    if w == 0 || h == 0 || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return None;
    }
    let (tw, th) = fit(w, h, SIDE);
    let (sw, sh) = d.scale(tw as u16, th as u16).ok()?;
    let pixels = d.decode().ok()?;
    let (sw, sh) = (u32::from(sw), u32::from(sh));
    let rgb: Vec<u8> = match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => pixels,
        jpeg_decoder::PixelFormat::L8 => pixels.iter().flat_map(|&l| [l, l, l]).collect(),
        jpeg_decoder::PixelFormat::L16 => pixels
            .chunks_exact(2)
            .flat_map(|c| [c[0], c[0], c[0]])
            .collect(),
        // CMYK (Adobe): left to the other decoder, which converts it.
        jpeg_decoder::PixelFormat::CMYK32 => return None,
    };
    let img = RgbImage::from_raw(sw, sh, rgb)?;
    Some((w, h, DynamicImage::ImageRgb8(img)))
}

/// PNG, WebP, GIF (first frame), or a JPEG the scaled decoder could not read.
fn other(bytes: &[u8]) -> Option<Decoded> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(50_000);
    limits.max_image_height = Some(50_000);
    limits.max_alloc = Some(512 << 20);
    reader.limits(limits);
    let decoder = reader.into_decoder().ok()?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 || u64::from(w) * u64::from(h) > MAX_PIXELS {
        return None;
    }
    let img = DynamicImage::from_decoder(decoder).ok()?;
    Some((w, h, img))
}

/// The size of `w`×`h` fitted within `side`×`side` (never enlarged, never zero).
fn fit(w: u32, h: u32, side: u32) -> (u32, u32) {
    if w <= side && h <= side {
        return (w, h);
    }
    let scale = f64::from(side) / f64::from(w.max(h));
    (
        ((f64::from(w) * scale).round() as u32).max(1),
        ((f64::from(h) * scale).round() as u32).max(1),
    )
}

fn encode(img: &RgbImage, quality: u8) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(MAX_BYTES);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A photo-like picture (gradients and noise, which JPEG does not compress to nothing).
    fn photo(w: u32, h: u32) -> RgbImage {
        let mut seed = 0x2545_f491_u32;
        RgbImage::from_fn(w, h, |x, y| {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            let n = (seed & 0x1f) as u8;
            image::Rgb([
                ((x * 255 / w) as u8).wrapping_add(n),
                ((y * 255 / h) as u8).wrapping_add(n),
                (((x + y) * 127 / (w + h)) as u8).wrapping_add(n),
            ])
        })
    }

    fn jpeg_of(img: &RgbImage) -> Vec<u8> {
        encode(img, 90).unwrap()
    }

    #[test]
    fn a_large_photo_gets_a_small_upright_thumbnail() {
        let big = jpeg_of(&photo(2400, 1600));
        let t = make(&big).expect("a thumbnail");
        assert_eq!((t.width, t.height), (2400, 1600));
        assert!(t.jpeg.len() <= MAX_BYTES, "{}", t.jpeg.len());
        let small = image::load_from_memory(&t.jpeg).unwrap();
        assert_eq!(small.width().max(small.height()), SIDE);
        assert!(small.width() > small.height());

        // Taken sideways (orientation 6): the thumbnail and the size are upright.
        let clean = match crate::metadata::strip(&big).unwrap() {
            crate::metadata::Stripped::Image(c) => c.to_vec(),
            _ => unreachable!(),
        };
        let mut turned = clean[..2].to_vec();
        turned.extend_from_slice(&crate::metadata::orientation_segment(6));
        turned.extend_from_slice(&clean[2..]);
        let t = make(&turned).expect("a thumbnail");
        assert_eq!((t.width, t.height), (1600, 2400));
        let small = image::load_from_memory(&t.jpeg).unwrap();
        assert!(small.height() > small.width());
    }

    #[test]
    fn png_webp_and_gif_too_and_nothing_else() {
        let img = DynamicImage::ImageRgb8(photo(900, 300));
        for format in [
            image::ImageFormat::Png,
            image::ImageFormat::WebP,
            image::ImageFormat::Gif,
        ] {
            let mut bytes = Vec::new();
            img.write_to(&mut std::io::Cursor::new(&mut bytes), format)
                .unwrap();
            let t = make(&bytes).unwrap_or_else(|| panic!("{format:?}"));
            assert_eq!((t.width, t.height), (900, 300), "{format:?}");
        }
        assert_eq!(make(b"%PDF-1.7 not a picture"), None);
        assert_eq!(make(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J']), None);
        // A small picture is not enlarged.
        let t = make(&jpeg_of(&photo(40, 30))).unwrap();
        let small = image::load_from_memory(&t.jpeg).unwrap();
        assert_eq!((small.width(), small.height()), (40, 30));
    }
}
