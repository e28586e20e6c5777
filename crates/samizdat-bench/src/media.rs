//! `bench thumbnail`: a 12-megapixel JPEG to the thumbnail its sender's device makes (issue
//! 30's goal: < 300 ms), through `samizdat_core::thumbnail::make` — the call `send --file`
//! makes — next to the obvious way (decode the whole picture with the `image` crate, then
//! shrink it), measured in the same run on the same picture.
//!
//! The picture is made here: 4000×3000 pixels of gradients with per-pixel noise, saved as a
//! JPEG at quality 90 with 4:2:0 chroma (what phone cameras write). Noise makes it about as
//! costly to decode as a real photo of that size (entropy decoding dominates).

use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::json;

use crate::Report;
use crate::util::pct;

#[derive(Debug, clap::Args)]
pub struct ThumbnailArgs {
    /// Width of the photo, pixels.
    #[arg(long, default_value_t = 4000)]
    pub width: u32,
    /// Height of the photo, pixels.
    #[arg(long, default_value_t = 3000)]
    pub height: u32,
    /// Thumbnails made (each timed).
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
}

/// A photo-like JPEG: gradients and noise.
fn photo(w: u32, h: u32) -> Result<Vec<u8>> {
    let mut seed = 0x9e37_79b9_u32;
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        let n = (seed & 0x3f) as u8;
        image::Rgb([
            ((x * 200 / w) as u8).wrapping_add(n),
            ((y * 200 / h) as u8).wrapping_add(n),
            (((x + y) * 100 / (w + h)) as u8).wrapping_add(n),
        ])
    });
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .context("encoding the photo")?;
    Ok(out)
}

pub async fn thumbnail(args: ThumbnailArgs) -> Result<Report> {
    eprintln!(
        "making a {}×{} JPEG ({:.1} megapixels)…",
        args.width,
        args.height,
        f64::from(args.width) * f64::from(args.height) / 1e6
    );
    let jpeg = photo(args.width, args.height)?;
    let mut ours = Vec::with_capacity(args.runs);
    let mut whole = Vec::with_capacity(args.runs);
    let mut thumb_bytes = 0;
    for _ in 0..args.runs {
        let t = Instant::now();
        let made = samizdat_core::thumbnail::make(&jpeg).context("no thumbnail")?;
        ours.push(t.elapsed().as_secs_f64() * 1000.0);
        thumb_bytes = made.jpeg.len();
        // The obvious way: every pixel decoded, then shrunk to the same size.
        let t = Instant::now();
        let img = image::load_from_memory(&jpeg).context("decoding")?;
        let small = img.thumbnail(320, 320).to_rgb8();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 72)
            .encode_image(&small)
            .context("encoding")?;
        whole.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (p50, p99) = (pct(&mut ours, 50.0), pct(&mut ours, 99.0));
    let (w50, w99) = (pct(&mut whole, 50.0), pct(&mut whole, 99.0));
    let text = format!(
        "thumbnail of a {}×{} JPEG ({} bytes), {} runs\n\
         {:<44} {:>9} {:>9}\n\
         {:<44} {:>9.1} {:>9.1}\n\
         {:<44} {:>9.1} {:>9.1}\n\
         thumbnail: {} bytes (at most {}); goal p99 < 300 ms: {}",
        args.width,
        args.height,
        jpeg.len(),
        args.runs,
        "",
        "p50 ms",
        "p99 ms",
        "samizdat (scaled JPEG decode, then shrink)",
        p50,
        p99,
        "whole decode with `image`, then shrink",
        w50,
        w99,
        thumb_bytes,
        samizdat_core::thumbnail::MAX_BYTES,
        if p99 < 300.0 { "met" } else { "NOT met" },
    );
    Ok(Report {
        text,
        json: json!({
            "width": args.width, "height": args.height, "jpeg_bytes": jpeg.len(), "runs": args.runs,
            "p50_ms": p50, "p99_ms": p99, "whole_decode_p50_ms": w50, "whole_decode_p99_ms": w99,
            "thumbnail_bytes": thumb_bytes,
        }),
    })
}
