//! Rendering relevance for people: heatmap colours, ANSI terminal output, HTML, RGB images and
//! PNG files.
//!
//! Colour scheme (the usual LRP "bwr" map): positive relevance is red, negative is blue and
//! zero is white; the intensity is `|v| / scale` clamped to 1. The map-level helpers
//! ([`ansi_heatmap`], [`ansi_words`], [`html_words`]) scale by the largest
//! finite `|v|` of their input ([`max_abs`]), so the strongest cell is fully saturated.
//! None of these text helpers panics on mismatched lengths or non-finite values.
//!
//! [`heatmap`], [`grey`], [`overlay`] and [`side_by_side`] check their `[C, H, W]` input instead
//! and return an [`Image`] (errors for wrong lengths and non-finite values); with the `png`
//! feature (on by default) [`Image::save_png`] and [`Image::write_png`] encode it.

use std::fmt::Write as _;

mod image;

pub use image::{Image, grey, heatmap, heatmap_bounded, overlay, side_by_side};

/// Colour of a relevance value for heatmaps: red for positive, blue for negative, white at zero,
/// intensity |v| / scale clamped to 1 (scale <= 0 or non-finite → treat as 1).
///
/// At intensity `t` the two "other" channels are `round(255 * (1 - t))`: `+scale` is
/// `[255, 0, 0]`, `-scale` is `[0, 0, 255]`, `0` is `[255, 255, 255]` and `scale / 2` is
/// `[255, 128, 128]`. `NaN` renders as white; `±inf` as full red / blue.
pub fn heat_colour(v: f32, scale: f32) -> [u8; 3] {
    let scale = if scale.is_finite() && scale > 0.0 { scale } else { 1.0 };
    if v.is_nan() || v == 0.0 {
        return [255, 255, 255];
    }
    let t = (v.abs() / scale).min(1.0);
    // t is in (0, 1], so the value is in [0, 255].
    let other = (255.0 * (1.0 - t)).round() as u8;
    if v > 0.0 { [255, other, other] } else { [other, other, 255] }
}

/// The largest |v| (0 for empty / all-zero input), ignoring non-finite values.
pub fn max_abs(values: &[f32]) -> f32 {
    values.iter().filter(|v| v.is_finite()).fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Renders an h x w relevance map (row-major) as ANSI 24-bit background-coloured blocks, two
/// spaces per cell, one line per row, each line ending with a reset `\x1b[0m` and '\n'.
///
/// Colours are scaled by [`max_abs`] of the rendered cells. If `values.len() != h * w`, only the
/// first `min(len, h * w)` cells are rendered (a short last row still ends with reset and
/// newline); an empty map gives an empty string.
pub fn ansi_heatmap(values: &[f32], h: usize, w: usize) -> String {
    let n = values.len().min(h.saturating_mul(w));
    if n == 0 {
        return String::new();
    }
    let cells = &values[..n];
    let scale = max_abs(cells);
    let mut out = String::with_capacity(n * 24 + n.div_ceil(w) * 5);
    for row in cells.chunks(w) {
        for &v in row {
            let [r, g, b] = heat_colour(v, scale);
            let _ = write!(out, "\x1b[48;2;{r};{g};{b}m  ");
        }
        out.push_str("\x1b[0m\n");
    }
    out
}

/// Word relevance as ANSI coloured text: each word on a background of its colour, separated by
/// spaces.
///
/// Each word is written as `\x1b[48;2;R;G;Bm\x1b[30m` + word + `\x1b[0m` (black text, so it
/// stays legible on light backgrounds in dark terminals); no trailing newline. Colours are
/// scaled by [`max_abs`] of `relevance`; words without a relevance value are white, extra
/// relevance values are ignored.
pub fn ansi_words(words: &[&str], relevance: &[f32]) -> String {
    let scale = max_abs(relevance);
    let mut out = String::new();
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let [r, g, b] = word_colour(relevance, i, scale);
        let _ = write!(out, "\x1b[48;2;{r};{g};{b}m\x1b[30m{word}\x1b[0m");
    }
    out
}

/// Standalone HTML snippet: <span style="background-color:rgb(r,g,b)">word</span> per word,
/// words HTML-escaped.
///
/// Spans are separated by single spaces; `&`, `<`, `>`, `"` and `'` are escaped. Colours are
/// scaled by [`max_abs`] of `relevance`; words without a relevance value are white.
pub fn html_words(words: &[&str], relevance: &[f32]) -> String {
    let scale = max_abs(relevance);
    let mut out = String::new();
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let [r, g, b] = word_colour(relevance, i, scale);
        let _ = write!(out, "<span style=\"background-color:rgb({r},{g},{b})\">");
        escape_html_into(&mut out, word);
        out.push_str("</span>");
    }
    out
}

fn word_colour(relevance: &[f32], i: usize, scale: f32) -> [u8; 3] {
    relevance.get(i).map_or([255, 255, 255], |&v| heat_colour(v, scale))
}

fn escape_html_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_at_key_points() {
        assert_eq!(heat_colour(2.0, 2.0), [255, 0, 0]);
        assert_eq!(heat_colour(-2.0, 2.0), [0, 0, 255]);
        assert_eq!(heat_colour(0.0, 2.0), [255, 255, 255]);
        assert_eq!(heat_colour(-0.0, 2.0), [255, 255, 255]);
        // half: 255 * 0.5 = 127.5 rounds to 128
        assert_eq!(heat_colour(1.0, 2.0), [255, 128, 128]);
        assert_eq!(heat_colour(-1.0, 2.0), [128, 128, 255]);
    }

    #[test]
    fn colour_clamps_and_bad_scales() {
        assert_eq!(heat_colour(10.0, 2.0), [255, 0, 0]);
        assert_eq!(heat_colour(-10.0, 2.0), [0, 0, 255]);
        // scale <= 0 or non-finite: treated as 1
        assert_eq!(heat_colour(0.5, 0.0), [255, 128, 128]);
        assert_eq!(heat_colour(0.5, -3.0), [255, 128, 128]);
        assert_eq!(heat_colour(0.5, f32::NAN), [255, 128, 128]);
        assert_eq!(heat_colour(0.5, f32::INFINITY), [255, 128, 128]);
        // non-finite values
        assert_eq!(heat_colour(f32::NAN, 1.0), [255, 255, 255]);
        assert_eq!(heat_colour(f32::INFINITY, 1.0), [255, 0, 0]);
        assert_eq!(heat_colour(f32::NEG_INFINITY, 1.0), [0, 0, 255]);
    }

    #[test]
    fn max_abs_ignores_non_finite() {
        assert_eq!(max_abs(&[]), 0.0);
        assert_eq!(max_abs(&[0.0, -0.0]), 0.0);
        assert_eq!(max_abs(&[1.0, -3.0, 2.0]), 3.0);
        assert_eq!(max_abs(&[f32::NAN, f32::INFINITY, -0.5, f32::NEG_INFINITY]), 0.5);
    }

    #[test]
    fn ansi_heatmap_2x2() {
        let s = ansi_heatmap(&[1.0, -1.0, 0.0, 0.5], 2, 2);
        let expected = "\x1b[48;2;255;0;0m  \x1b[48;2;0;0;255m  \x1b[0m\n\
                        \x1b[48;2;255;255;255m  \x1b[48;2;255;128;128m  \x1b[0m\n";
        assert_eq!(s, expected);
        assert!(s.contains("\x1b[48;2;255;0;0m  "));
        assert!(s.contains("\x1b[48;2;0;0;255m  "));
        assert_eq!(s.matches('\n').count(), 2);
        assert!(s.lines().all(|l| l.ends_with("\x1b[0m")));
    }

    #[test]
    fn ansi_heatmap_mismatched_lengths_do_not_panic() {
        // fewer values than cells: 3 cells, the short second row still ends properly
        let s = ansi_heatmap(&[1.0, 2.0, 3.0], 2, 2);
        assert_eq!(s.matches("\x1b[48;2;").count(), 3);
        assert_eq!(s.matches('\n').count(), 2);
        assert!(s.ends_with("\x1b[0m\n"));
        // more values than cells: extra ignored
        let s = ansi_heatmap(&[1.0, 2.0, 3.0, 4.0, 5.0], 1, 2);
        assert_eq!(s.matches("\x1b[48;2;").count(), 2);
        assert_eq!(s.matches('\n').count(), 1);
        // degenerate shapes
        assert_eq!(ansi_heatmap(&[], 2, 2), "");
        assert_eq!(ansi_heatmap(&[1.0], 0, 3), "");
        assert_eq!(ansi_heatmap(&[1.0], 3, 0), "");
        assert_eq!(ansi_heatmap(&[1.0], usize::MAX, usize::MAX).matches('\n').count(), 1);
    }

    #[test]
    fn ansi_words_colours_and_spacing() {
        let s = ansi_words(&["good", "bad", "meh"], &[2.0, -2.0]);
        assert_eq!(
            s,
            "\x1b[48;2;255;0;0m\x1b[30mgood\x1b[0m \
             \x1b[48;2;0;0;255m\x1b[30mbad\x1b[0m \
             \x1b[48;2;255;255;255m\x1b[30mmeh\x1b[0m"
        );
        assert_eq!(ansi_words(&[], &[1.0]), "");
    }

    #[test]
    fn html_words_escapes() {
        let s = html_words(&["a<&>b", "ok"], &[1.0, -0.5]);
        assert_eq!(
            s,
            "<span style=\"background-color:rgb(255,0,0)\">a&lt;&amp;&gt;b</span> \
             <span style=\"background-color:rgb(128,128,255)\">ok</span>"
        );
        assert!(!s.contains("a<&>b"));
        assert_eq!(
            html_words(&["\"q'"], &[0.0]),
            "<span style=\"background-color:rgb(255,255,255)\">&quot;q&#39;</span>"
        );
    }
}
