//! RGB images of relevance maps: the heatmap, the input in grey, their overlay, and PNG files.
//!
//! A relevance map has the shape `[C, H, W]` (row-major, like the model's input); a pixel's value
//! is its channel sum `s(y, x) = sum_c R[c, y, x]` (computed in f64), coloured by
//! [`heat_colour`]`(s / bound)`: red positive, blue negative, white zero, saturated at `|s| >=
//! bound`. [`heatmap`] takes `bound = max |s|`; [`heatmap_bounded`] takes a given one (the same
//! bound for several maps makes their colours comparable).

use super::heat_colour;
use crate::error::{Error, Result, check_len, checked_size};

/// An RGB8 image: `width * height` pixels, row-major, 3 bytes (red, green, blue) per pixel.
/// Both sides are at least 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

impl Image {
    /// Wraps `pixels`, which must hold `3 * width * height` bytes (row-major RGB).
    ///
    /// Errors: a zero side ([`Error::InvalidParameter`]), a size that overflows `usize`
    /// ([`Error::SizeOverflow`]), another number of bytes ([`Error::Length`]).
    pub fn new(width: usize, height: usize, pixels: Vec<u8>) -> Result<Image> {
        let len = rgb_len("image", width, height)?;
        check_len(&format!("the RGB buffer of a {width}x{height} image"), len, pixels.len())?;
        Ok(Image { width, height, pixels })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The RGB bytes, row-major: pixel (x, y) starts at `3 * (y * width + x)`.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The RGB bytes, consuming the image.
    pub fn into_pixels(self) -> Vec<u8> {
        self.pixels
    }

    /// The colour of pixel (x, y); `None` outside the image.
    pub fn pixel(&self, x: usize, y: usize) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = 3 * (y * self.width + x);
        Some([self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]])
    }

    /// Nearest-neighbour upscaling: pixel (x, y) of the result is pixel (x / factor, y / factor)
    /// of `self`, so the result is `factor * width` by `factor * height`.
    ///
    /// Errors: `factor == 0` ([`Error::InvalidParameter`]), a size overflow.
    pub fn upscale(&self, factor: usize) -> Result<Image> {
        if factor == 0 {
            return Err(Error::InvalidParameter {
                what: "upscaling factor".to_string(),
                message: "0 would give an empty image; it must be at least 1".to_string(),
            });
        }
        let width = checked_size("the upscaled image", self.width, factor)?;
        let height = checked_size("the upscaled image", self.height, factor)?;
        let mut pixels = rgb_buffer("upscaled image", width, height)?;
        for row in self.pixels.chunks_exact(3 * self.width) {
            let start = pixels.len();
            for px in row.chunks_exact(3) {
                for _ in 0..factor {
                    pixels.extend_from_slice(px);
                }
            }
            for _ in 1..factor {
                pixels.extend_from_within(start..start + 3 * width);
            }
        }
        Ok(Image { width, height, pixels })
    }

    /// `self`, then `gap` white columns, then `right`, side by side (the heights must be equal).
    ///
    /// Errors: different heights ([`Error::InvalidParameter`]), a size overflow.
    pub fn beside(&self, right: &Image, gap: usize) -> Result<Image> {
        if self.height != right.height {
            return Err(Error::InvalidParameter {
                what: "images side by side".to_string(),
                message: format!("the left one is {} pixels high, the right one {}", self.height, right.height),
            });
        }
        let width = (self.width.checked_add(gap).and_then(|w| w.checked_add(right.width)))
            .ok_or_else(|| Error::SizeOverflow { what: "images side by side".to_string() })?;
        let mut pixels = rgb_buffer("images side by side", width, self.height)?;
        let rows = self.pixels.chunks_exact(3 * self.width).zip(right.pixels.chunks_exact(3 * right.width));
        for (left_row, right_row) in rows {
            pixels.extend_from_slice(left_row);
            pixels.resize(pixels.len() + 3 * gap, 255);
            pixels.extend_from_slice(right_row);
        }
        Ok(Image { width, height: self.height, pixels })
    }
}

/// The heatmap of a `[C, H, W]` relevance map: a `W x H` image whose pixel (x, y) is
/// [`heat_colour`]`(s(y, x) / max |s|)`, with `s(y, x) = sum_c R[c, y, x]`; the largest `|s|`
/// is fully saturated and an all-zero map is white.
///
/// Errors (naming `relevance` and its shape): a zero dimension, a size overflow, a length other
/// than `C * H * W`, a NaN or infinite value ([`Error::NonFinite`] with its flat index).
pub fn heatmap(relevance: &[f32], shape: [usize; 3]) -> Result<Image> {
    let sums = channel_sums("relevance", relevance, shape)?;
    let bound = sums.iter().fold(0.0f64, |m, s| m.max(s.abs()));
    colour_sums(&sums, shape, bound)
}

/// Like [`heatmap`], but pixel (x, y) is [`heat_colour`]`(s(y, x) / bound)`: channel sums with
/// `|s| >= bound` are saturated. `bound` must be finite and positive ([`Error::InvalidParameter`]).
pub fn heatmap_bounded(relevance: &[f32], shape: [usize; 3], bound: f32) -> Result<Image> {
    if !(bound.is_finite() && bound > 0.0) {
        return Err(Error::InvalidParameter {
            what: "heatmap bound".to_string(),
            message: format!("{bound} is not a finite positive number"),
        });
    }
    let sums = channel_sums("relevance", relevance, shape)?;
    colour_sums(&sums, shape, f64::from(bound))
}

/// The input `[C, H, W]` as a grey `W x H` image: the channel mean `m(y, x)`, min-max normalised
/// over the image, `g = (m - min m) / (max m - min m)`, as the byte `round(255 g)`; an image whose
/// means are all equal shows `clamp(m, 0, 1)`. Errors as for [`heatmap`], naming `input`.
pub fn grey(input: &[f32], shape: [usize; 3]) -> Result<Image> {
    let levels = grey_levels(input, shape)?;
    let pixels = levels.iter().flat_map(|&g| [grey_byte(g); 3]).collect();
    Ok(Image { width: shape[2], height: shape[1], pixels })
}

/// The heatmap drawn over the input, as the LRP papers show it: each byte is
/// `round(alpha * heat + (1 - alpha) * grey)`, with `heat` from [`heatmap`]`(relevance, shape)`
/// and `grey` from [`grey`]`(input, shape)` (so zero relevance lightens the input towards white).
///
/// `alpha` in `[0, 1]` (0: the input alone, 1: the heatmap alone), else
/// [`Error::InvalidParameter`]; the other errors as for [`heatmap`] and [`grey`].
pub fn overlay(input: &[f32], relevance: &[f32], shape: [usize; 3], alpha: f32) -> Result<Image> {
    if !(0.0..=1.0).contains(&alpha) {
        return Err(Error::InvalidParameter {
            what: "overlay alpha".to_string(),
            message: format!("{alpha} is not in [0, 1]"),
        });
    }
    let heat = heatmap(relevance, shape)?;
    let levels = grey_levels(input, shape)?;
    let (alpha, under) = (f64::from(alpha), 1.0 - f64::from(alpha));
    let greys = levels.iter().flat_map(|&g| [f64::from(grey_byte(g)); 3]);
    // A convex combination of two bytes lies in [0, 255].
    let pixels = heat.pixels.iter().zip(greys).map(|(&h, g)| (alpha * f64::from(h) + under * g).round() as u8);
    Ok(Image { pixels: pixels.collect(), ..heat })
}

/// The input in grey, one white column, then the heatmap: [`grey`]`(input, shape)`
/// `.`[`beside`](Image::beside)`(&`[`heatmap`]`(relevance, shape), 1)`.
pub fn side_by_side(input: &[f32], relevance: &[f32], shape: [usize; 3]) -> Result<Image> {
    grey(input, shape)?.beside(&heatmap(relevance, shape)?, 1)
}

/// An empty buffer with room for a `width x height` RGB image: a size that overflows or that the
/// allocator refuses is an error, not a panic or an abort.
fn rgb_buffer(what: &str, width: usize, height: usize) -> Result<Vec<u8>> {
    let len = rgb_len(what, width, height)?;
    let mut pixels = Vec::new();
    pixels.try_reserve_exact(len).map_err(|_| Error::Allocation { what: what.to_string(), bytes: len })?;
    Ok(pixels)
}

/// `3 * width * height`, checked; a zero side is an error.
fn rgb_len(what: &str, width: usize, height: usize) -> Result<usize> {
    if width == 0 || height == 0 {
        return Err(Error::InvalidParameter {
            what: format!("{what} size"),
            message: format!("{width}x{height} has a zero side; both must be at least 1"),
        });
    }
    checked_size(what, checked_size(what, width, height)?, 3)
}

/// Checks `values` (named `what`) against `[C, H, W]` (no zero dimension, no size overflow,
/// `C * H * W` values, all finite) and returns the per-pixel sums `s(y, x) = sum_c v[c, y, x]`.
fn channel_sums(what: &str, values: &[f32], shape: [usize; 3]) -> Result<Vec<f64>> {
    let [c, h, w] = shape;
    let named = format!("{what} of shape {shape:?}");
    if c == 0 || h == 0 || w == 0 {
        return Err(Error::InvalidParameter {
            what: format!("{what} shape"),
            message: format!("{shape:?} has a zero dimension; each must be at least 1"),
        });
    }
    let plane = checked_size(&named, h, w)?;
    rgb_len(&format!("the image of {named}"), w, h)?;
    check_len(&named, checked_size(&named, c, plane)?, values.len())?;
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(Error::NonFinite { name: what.to_string(), index, value: values[index] });
    }
    let mut sums = vec![0.0f64; plane];
    for channel in values.chunks_exact(plane) {
        sums.iter_mut().zip(channel).for_each(|(s, &v)| *s += f64::from(v));
    }
    Ok(sums)
}

/// The image of pixel colours [`heat_colour`]`(s / bound)` (white everywhere when `bound == 0`).
fn colour_sums(sums: &[f64], shape: [usize; 3], bound: f64) -> Result<Image> {
    let colour = |s: f64| if bound > 0.0 { heat_colour((s / bound) as f32, 1.0) } else { [255; 3] };
    let pixels = sums.iter().flat_map(|&s| colour(s)).collect();
    Ok(Image { width: shape[2], height: shape[1], pixels })
}

/// Grey levels in [0, 1]: channel means, min-max normalised (see [`grey`]).
fn grey_levels(input: &[f32], shape: [usize; 3]) -> Result<Vec<f64>> {
    let channels = shape[0] as f64;
    let means: Vec<f64> = channel_sums("input", input, shape)?.iter().map(|s| s / channels).collect();
    let min = means.iter().fold(f64::INFINITY, |m, &v| m.min(v));
    let max = means.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    Ok(means.iter().map(|&m| if max > min { (m - min) / (max - min) } else { m.clamp(0.0, 1.0) }).collect())
}

/// `round(255 g)` for `g` in [0, 1].
fn grey_byte(g: f64) -> u8 {
    (255.0 * g.clamp(0.0, 1.0)).round() as u8
}

#[cfg(feature = "png")]
mod png_file {
    use std::fs::File;
    use std::io::{BufWriter, Write};
    use std::path::Path;

    use super::Image;
    use crate::error::{Error, Result};

    impl Image {
        /// Encodes the image as an 8-bit RGB PNG into `writer`.
        ///
        /// Errors: a side above the PNG limit of `2^31 - 1` ([`Error::InvalidParameter`]), a
        /// failing writer or encoder ([`Error::Write`], naming "the PNG stream").
        pub fn write_png<W: Write>(&self, writer: W) -> Result<()> {
            self.encode(writer, "the PNG stream")
        }

        /// Writes the image as an 8-bit RGB PNG file at `path` (created or truncated).
        ///
        /// Errors: a side above the PNG limit, a file that cannot be created or written
        /// ([`Error::Write`], naming the path).
        pub fn save_png(&self, path: impl AsRef<Path>) -> Result<()> {
            let what = format!("the PNG file `{}`", path.as_ref().display());
            png_side(self.width)?;
            png_side(self.height)?;
            let file = File::create(path.as_ref()).map_err(|e| write_error(&what, e))?;
            let mut out = BufWriter::new(file);
            self.encode(&mut out, &what)?;
            out.flush().map_err(|e| write_error(&what, e))
        }

        fn encode<W: Write>(&self, writer: W, what: &str) -> Result<()> {
            let mut encoder = png::Encoder::new(writer, png_side(self.width)?, png_side(self.height)?);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut png = encoder.write_header().map_err(|e| write_error(what, e))?;
            png.write_image_data(&self.pixels).map_err(|e| write_error(what, e))?;
            png.finish().map_err(|e| write_error(what, e))
        }
    }

    /// A side as PNG stores it: at most `2^31 - 1` pixels.
    pub(super) fn png_side(side: usize) -> Result<u32> {
        match u32::try_from(side) {
            Ok(side) if side <= i32::MAX as u32 => Ok(side),
            _ => Err(Error::InvalidParameter {
                what: "PNG image size".to_string(),
                message: format!("a side of {side} pixels exceeds the PNG limit of {}", i32::MAX),
            }),
        }
    }

    fn write_error(what: &str, e: impl std::fmt::Display) -> Error {
        Error::Write { what: what.to_string(), message: e.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WHITE: [u8; 3] = [255, 255, 255];

    fn pixels(image: &Image) -> Vec<[u8; 3]> {
        image.pixels().chunks_exact(3).map(|p| [p[0], p[1], p[2]]).collect()
    }

    #[test]
    fn heatmap_colours_a_known_map() {
        // [1, 2, 2]: max |R| = 2 saturates; -1 and 0.5 are a half and a quarter of it.
        let image = heatmap(&[2.0, -1.0, 0.0, 0.5], [1, 2, 2]).unwrap();
        assert_eq!((image.width(), image.height()), (2, 2));
        // 255 * (1 - 1/2) = 127.5 -> 128; 255 * (1 - 1/4) = 191.25 -> 191
        assert_eq!(pixels(&image), [[255, 0, 0], [128, 128, 255], WHITE, [255, 191, 191]]);
        assert_eq!(image.pixel(1, 0), Some([128, 128, 255]));
        assert_eq!(image.pixel(0, 1), Some(WHITE));
        assert_eq!(image.pixel(2, 0), None);
        assert_eq!(image.pixel(0, 2), None);
    }

    #[test]
    fn heatmap_sums_channels_and_saturates_the_largest() {
        // [2, 1, 3]: channel sums 1 + 1 = 2, -1 + 0.5 = -0.5, 0.25 - 0.25 = 0
        let relevance = [1.0, -1.0, 0.25, 1.0, 0.5, -0.25];
        let image = heatmap(&relevance, [2, 1, 3]).unwrap();
        assert_eq!((image.width(), image.height()), (3, 1));
        assert_eq!(pixels(&image), [[255, 0, 0], [191, 191, 255], WHITE]);
        // The largest |s| is negative: it is full blue.
        let image = heatmap(&[-4.0, 1.0], [1, 1, 2]).unwrap();
        assert_eq!(pixels(&image), [[0, 0, 255], [255, 191, 191]]);
        // All zero: white, not NaN colours.
        assert_eq!(pixels(&heatmap(&[0.0; 6], [3, 2, 1]).unwrap()), [WHITE; 2]);
    }

    #[test]
    fn heatmap_channel_sums_do_not_overflow_f32() {
        // f32::MAX + f32::MAX overflows in f32, not in f64: the sum saturates, the other is half.
        let relevance = [f32::MAX, f32::MAX, f32::MAX, 0.0];
        assert_eq!(pixels(&heatmap(&relevance, [2, 1, 2]).unwrap()), [[255, 0, 0], [255, 128, 128]]);
    }

    #[test]
    fn heatmap_bounded_saturates_beyond_the_bound() {
        let image = heatmap_bounded(&[2.0, -4.0, 8.0, -0.0], [1, 1, 4], 4.0).unwrap();
        assert_eq!(pixels(&image), [[255, 128, 128], [0, 0, 255], [255, 0, 0], WHITE]);
        for bound in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            let err = heatmap_bounded(&[1.0], [1, 1, 1], bound).unwrap_err();
            assert!(matches!(&err, Error::InvalidParameter { what, .. } if what == "heatmap bound"), "{err}");
        }
    }

    #[test]
    fn shapes_and_lengths_are_checked() {
        let err = heatmap(&[1.0; 3], [1, 2, 2]).unwrap_err();
        assert_eq!(err, Error::Length { what: "relevance of shape [1, 2, 2]".into(), expected: 4, found: 3 });
        for shape in [[0, 2, 2], [1, 0, 2], [1, 2, 0]] {
            let err = heatmap(&[], shape).unwrap_err();
            assert!(matches!(&err, Error::InvalidParameter { what, .. } if what == "relevance shape"), "{err}");
            assert!(err.to_string().contains(&format!("{shape:?}")), "{err}");
        }
        let err = heatmap(&[1.0], [2, usize::MAX, 1]).unwrap_err();
        assert!(matches!(err, Error::SizeOverflow { .. }), "{err}");
        // H * W fits, but 3 bytes per pixel do not.
        let err = heatmap(&[1.0], [1, usize::MAX / 2, 1]).unwrap_err();
        assert!(matches!(err, Error::SizeOverflow { .. }), "{err}");
        let err = grey(&[0.5; 5], [1, 2, 2]).unwrap_err();
        assert_eq!(err, Error::Length { what: "input of shape [1, 2, 2]".into(), expected: 4, found: 5 });
    }

    #[test]
    fn non_finite_values_are_errors() {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let err = heatmap(&[1.0, 2.0, bad, 0.0], [1, 2, 2]).unwrap_err();
            assert!(matches!(&err, Error::NonFinite { name, index: 2, .. } if name == "relevance"), "{err}");
            let err = overlay(&[0.0, bad], &[1.0, 1.0], [1, 1, 2], 0.5).unwrap_err();
            assert!(matches!(&err, Error::NonFinite { name, index: 1, .. } if name == "input"), "{err}");
        }
    }

    #[test]
    fn grey_normalises_the_channel_mean() {
        // Values in [0, 1] with min 0 and max 1 stay as they are: 0.5 -> 127.5 -> 128.
        let image = grey(&[0.0, 0.5, 1.0, 0.25], [1, 2, 2]).unwrap();
        assert_eq!(pixels(&image), [[0; 3], [128; 3], [255; 3], [64; 3]]);
        // Other ranges are stretched: channel means 2, 3, 6 -> 0, 1/4, 1.
        let image = grey(&[1.0, 2.0, 8.0, 3.0, 4.0, 4.0], [2, 1, 3]).unwrap();
        assert_eq!(pixels(&image), [[0; 3], [64; 3], [255; 3]]);
        // A constant image shows its value clamped to [0, 1].
        assert_eq!(pixels(&grey(&[0.2; 2], [1, 1, 2]).unwrap()), [[51; 3]; 2]);
        assert_eq!(pixels(&grey(&[-3.0], [1, 1, 1]).unwrap()), [[0; 3]]);
        assert_eq!(pixels(&grey(&[7.0], [1, 1, 1]).unwrap()), [[255; 3]]);
    }

    #[test]
    fn overlay_blends_heatmap_over_grey() {
        let (input, relevance, shape) = ([0.0, 1.0, 0.0, 1.0], [4.0, 0.0, -2.0, -4.0], [1, 2, 2]);
        assert_eq!(overlay(&input, &relevance, shape, 0.0).unwrap(), grey(&input, shape).unwrap());
        assert_eq!(overlay(&input, &relevance, shape, 1.0).unwrap(), heatmap(&relevance, shape).unwrap());
        let image = overlay(&input, &relevance, shape, 0.5).unwrap();
        // red over black: 127.5 -> 128; white over white; light blue (128, 128, 255) over black;
        // blue over white.
        assert_eq!(pixels(&image), [[128, 0, 0], WHITE, [64, 64, 128], [128, 128, 255]]);
        for alpha in [-0.1, 1.5, f32::NAN] {
            let err = overlay(&input, &relevance, shape, alpha).unwrap_err();
            assert!(matches!(&err, Error::InvalidParameter { what, .. } if what == "overlay alpha"), "{err}");
        }
        let err = overlay(&input, &relevance[..3], shape, 0.5).unwrap_err();
        assert!(matches!(err, Error::Length { expected: 4, found: 3, .. }), "{err}");
    }

    #[test]
    fn upscale_repeats_each_pixel() {
        let image = Image::new(2, 1, vec![1, 2, 3, 4, 5, 6]).unwrap();
        let big = image.upscale(3).unwrap();
        assert_eq!((big.width(), big.height()), (6, 3));
        for y in 0..3 {
            for x in 0..6 {
                assert_eq!(big.pixel(x, y), Some(if x < 3 { [1, 2, 3] } else { [4, 5, 6] }), "({x}, {y})");
            }
        }
        assert_eq!(image.upscale(1).unwrap(), image);
        assert!(matches!(image.upscale(0), Err(Error::InvalidParameter { .. })));
        assert!(matches!(image.upscale(usize::MAX), Err(Error::SizeOverflow { .. })));
        // Sizes that fit usize but no memory: refused, not a panic or an abort.
        let dot = Image::new(1, 1, vec![1, 2, 3]).unwrap();
        assert!(matches!(dot.upscale(1 << 32), Err(Error::SizeOverflow { .. })));
        assert!(matches!(dot.upscale(1 << 31), Err(Error::Allocation { .. })));
        assert!(matches!(dot.upscale(1 << 29), Err(Error::Allocation { .. })));
    }

    #[test]
    fn beside_and_side_by_side() {
        let left = Image::new(1, 2, vec![0, 0, 0, 9, 9, 9]).unwrap();
        let right = Image::new(2, 2, vec![1; 12]).unwrap();
        let both = left.beside(&right, 2).unwrap();
        assert_eq!((both.width(), both.height()), (5, 2));
        let row: Vec<_> = (0..5).map(|x| both.pixel(x, 1).unwrap()).collect();
        assert_eq!(row, [[9; 3], WHITE, WHITE, [1; 3], [1; 3]]);
        let err = left.beside(&Image::new(1, 1, vec![0; 3]).unwrap(), 0).unwrap_err();
        assert!(matches!(err, Error::InvalidParameter { .. }), "{err}");
        let image = side_by_side(&[0.0, 1.0], &[1.0, -1.0], [1, 1, 2]).unwrap();
        assert_eq!(pixels(&image), [[0; 3], [255; 3], WHITE, [255, 0, 0], [0, 0, 255]]);
    }

    #[test]
    fn image_new_checks_its_buffer() {
        let err = Image::new(2, 2, vec![0; 11]).unwrap_err();
        assert_eq!(err, Error::Length { what: "the RGB buffer of a 2x2 image".into(), expected: 12, found: 11 });
        assert!(matches!(Image::new(0, 2, vec![]), Err(Error::InvalidParameter { .. })));
        assert!(matches!(Image::new(usize::MAX, 2, vec![]), Err(Error::SizeOverflow { .. })));
        assert_eq!(Image::new(1, 1, vec![7, 8, 9]).unwrap().into_pixels(), [7, 8, 9]);
    }

    #[cfg(feature = "png")]
    mod png_files {
        use super::super::png_file::png_side;
        use super::*;

        /// Decodes a PNG: (width, height, colour type, bit depth, bytes).
        fn decode(bytes: &[u8]) -> (u32, u32, png::ColorType, png::BitDepth, Vec<u8>) {
            let mut reader = png::Decoder::new(bytes).read_info().unwrap();
            let mut buf = vec![0; reader.output_buffer_size()];
            let info = reader.next_frame(&mut buf).unwrap();
            buf.truncate(info.buffer_size());
            (info.width, info.height, info.color_type, info.bit_depth, buf)
        }

        #[test]
        fn png_round_trip() {
            let image = overlay(&[0.0, 0.5, 1.0, 0.2, 0.7, 0.1], &[3.0, -1.0, 0.0, 2.0, -3.0, 1.0], [1, 2, 3], 0.6)
                .unwrap()
                .upscale(2)
                .unwrap();
            let mut bytes = Vec::new();
            image.write_png(&mut bytes).unwrap();
            assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
            let (width, height, colour, depth, decoded) = decode(&bytes);
            assert_eq!((width, height), (6, 4));
            assert_eq!((colour, depth), (png::ColorType::Rgb, png::BitDepth::Eight));
            assert_eq!(decoded, image.pixels());
        }

        #[test]
        fn save_png_writes_a_file() {
            let dir = std::env::temp_dir().join(format!("lrp-render-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("heat.png");
            let image = heatmap(&[1.0, -1.0, 0.0], [1, 3, 1]).unwrap();
            image.save_png(&path).unwrap();
            let (width, height, _, _, decoded) = decode(&std::fs::read(&path).unwrap());
            std::fs::remove_dir_all(&dir).unwrap();
            assert_eq!((width, height), (1, 3));
            assert_eq!(decoded, [255, 0, 0, 0, 0, 255, 255, 255, 255]);
        }

        #[test]
        fn write_errors_name_the_file_or_stream() {
            let image = Image::new(1, 1, vec![0; 3]).unwrap();
            let path = std::env::temp_dir().join("lrp-no-such-dir").join("x.png");
            let err = image.save_png(&path).unwrap_err();
            assert!(matches!(&err, Error::Write { what, .. } if what.contains(&*path.to_string_lossy())), "{err}");
            assert!(err.to_string().starts_with("cannot write the PNG file `"), "{err}");

            struct Broken;
            impl std::io::Write for Broken {
                fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                    Err(std::io::Error::other("disk full"))
                }
                fn flush(&mut self) -> std::io::Result<()> {
                    Ok(())
                }
            }
            let err = image.write_png(Broken).unwrap_err();
            assert!(
                matches!(&err, Error::Write { what, message } if what == "the PNG stream" && message.contains("disk full")),
                "{err}"
            );
        }

        #[test]
        fn png_sides_are_limited() {
            assert_eq!(png_side(1).unwrap(), 1);
            assert_eq!(png_side(i32::MAX as usize).unwrap(), i32::MAX as u32);
            for side in [i32::MAX as usize + 1, usize::MAX] {
                assert!(matches!(png_side(side), Err(Error::InvalidParameter { .. })));
            }
        }
    }
}
