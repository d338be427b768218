//! SVG charts for batch-sweep reports: grouped bars ([`bars`]), stacked bars ([`stacked`]) and
//! step-line small multiples ([`panels`]). Plain data in, one SVG document out.
//!
//! # Same input, same bytes, on any machine
//!
//! - **No fonts are read.** plotters is built with `svg_backend` only: without its `ttf` feature
//!   it carries no font loader (no font-kit, freetype or fontconfig) and measures text with a
//!   fixed estimate (a width proportional to the string length), and the SVG backend writes
//!   every label as an SVG `<text>` element with `font-family="sans-serif"`, leaving the glyphs
//!   to the viewer. Text never becomes paths or pixels here. Layout decisions (truncating long
//!   labels, turning category labels vertical, sizing the label areas) use this module's own
//!   estimate of `0.6 × font size` per character, deliberately wide for sans-serif faces, so a
//!   label has room in whichever sans-serif font the viewer picks.
//! - **Axes are computed here.** Each axis is this module's own type implementing plotters'
//!   `Ranged`: it maps values to pixels, chooses the ticks and labels them. Tick positions use
//!   `+ − × ÷`, `floor` and `ceil` only (all exactly rounded by IEEE 754); plotters' own tick
//!   search calls `log10`/`powf`, whose last bit may differ between C libraries, and is never
//!   used. Tick labels come from this module's formatter (`250`, `1.5k`, `20M`, `3.25G`; beyond
//!   `10^15` or below `10^-3`, `1.00e18`), which uses Rust's locale-free formatting.
//! - plotters' SVG backend prints coordinates as integers and colours as hex; font sizes are
//!   chosen so that its `font-size` attribute prints exactly (`12.5`, not `12.999…`). There is
//!   no `<?xml …?>` prolog: the document starts with `<svg`.
//! - Series keep the order they are given in; nothing is iterated out of a hashed collection,
//!   and nothing depends on time or on the environment.
//!
//! # Odd input never panics
//!
//! - A value that is NaN, infinite or beyond `±1e300` counts as **0** in [`bars`] and
//!   [`stacked`] (no bar is drawn for it), and a point with such a coordinate is **dropped**
//!   from a [`Lines`] series. A series with fewer values than categories gets 0 for the missing
//!   ones; values past the last category are ignored.
//! - No categories, no series or no points give a chart with its axes and a "no data" note.
//! - Labels of any length are cut to the room they have, with `…`: titles and axis
//!   descriptions at the end, category names, legend entries and panel titles in the middle (so
//!   `policy-a-1` and `policy-a-2` stay apart). Control characters become spaces. Category
//!   labels turn vertical (and, if need be, smaller) when they do not fit side by side; vertical
//!   labels take at most 30% of the chart height. The legend takes at most four rows; what does
//!   not fit is counted as "+N more".
//! - The value axis always includes 0 (the quantities plotted are counts and cycles), with 5%
//!   of room past the extreme values; negative bars grow down from 0, and negative stacked
//!   components stack downwards from 0. The x axis of a line chart spans its samples exactly.
//! - Errors reported by plotters come back as [`PlotError`], never as a panic.
//!
//! # Look
//!
//! One chart is 900×500 px; [`panels`] sizes each panel by the number of columns. Colours are
//! the Okabe–Ito palette (distinguishable with the common colour-vision deficiencies), in a
//! fixed order; past eight series the palette repeats in lighter tints. In [`panels`] a series
//! name has the same colour in every panel and one legend serves them all.

use plotters::coord::Shift;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::collections::BTreeMap;

/// Error from rendering a chart.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlotError {
    /// plotters reported a drawing error (the message is plotters').
    #[error("plot rendering failed: {0}")]
    Draw(String),
}

/// A grouped bar chart: one group of bars per category (x axis), one bar per series in each group.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bars {
    /// Chart title.
    pub title: String,
    /// Value-axis description.
    pub y_label: String,
    /// Category names, left to right.
    pub categories: Vec<String>,
    /// Series name and one value per category.
    pub series: Vec<(String, Vec<f64>)>,
}

/// Stacked bars: one bar per category, stacked by component (e.g. cycle breakdown: base, tlb,
/// walk, rmp_check, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stacked {
    /// Chart title.
    pub title: String,
    /// Value-axis description.
    pub y_label: String,
    /// Category names, left to right.
    pub categories: Vec<String>,
    /// Component name and one value per category; the first component is at the bottom.
    pub components: Vec<(String, Vec<f64>)>,
}

/// One line chart (step lines are right for sampled counters: a value holds until the next
/// sample).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lines {
    /// Chart (panel) title.
    pub title: String,
    /// X-axis description.
    pub x_label: String,
    /// Y-axis description.
    pub y_label: String,
    /// Series name and its `(x, y)` samples; they are drawn in order of `x` (ties keep their
    /// order), each value holding until the next sample and the last one until the largest `x`
    /// of the chart.
    pub series: Vec<(String, Vec<(f64, f64)>)>,
}

/// Renders a grouped bar chart as an SVG document (900×500 px).
pub fn bars(c: &Bars) -> Result<String, PlotError> {
    let n = c.categories.len();
    let m = c.series.len();
    let (mut lo, mut hi) = (0.0_f64, 0.0_f64);
    let mut rects = Vec::new();
    // The group fills 80% of its slot; bars in it touch each other.
    let width = GROUP_WIDTH / count_f64(m.max(1));
    for (j, (_, values)) in c.series.iter().enumerate() {
        for i in 0..n {
            let v = value_at(values, i);
            lo = lo.min(v);
            hi = hi.max(v);
            let x0 = count_f64(i) + (1.0 - GROUP_WIDTH) / 2.0 + width * count_f64(j);
            rects.push(DataRect { x: (x0, x0 + width), y: (v.min(0.0), v.max(0.0)), colour: j });
        }
    }
    category_chart(&CategoryChart {
        title: &c.title,
        y_label: &c.y_label,
        categories: &c.categories,
        legend: c.series.iter().map(|(name, _)| name.as_str()).collect(),
        lo,
        hi,
        rects,
        empty: n == 0 || m == 0,
    })
}

/// Renders a stacked bar chart as an SVG document (900×500 px).
pub fn stacked(c: &Stacked) -> Result<String, PlotError> {
    let n = c.categories.len();
    let (mut lo, mut hi) = (0.0_f64, 0.0_f64);
    let mut rects = Vec::new();
    let x0 = (1.0 - STACK_WIDTH) / 2.0;
    for i in 0..n {
        let (mut up, mut down) = (0.0_f64, 0.0_f64);
        let x = (count_f64(i) + x0, count_f64(i) + x0 + STACK_WIDTH);
        for (j, (_, values)) in c.components.iter().enumerate() {
            let v = value_at(values, i);
            let y = if v >= 0.0 {
                up += v;
                (up - v, up)
            } else {
                down += v;
                (down, down - v)
            };
            rects.push(DataRect { x, y, colour: j });
        }
        lo = lo.min(down);
        hi = hi.max(up);
    }
    category_chart(&CategoryChart {
        title: &c.title,
        y_label: &c.y_label,
        categories: &c.categories,
        legend: c.components.iter().map(|(name, _)| name.as_str()).collect(),
        lo,
        hi,
        rects,
        empty: n == 0 || c.components.is_empty(),
    })
}

/// Renders several line charts as small multiples in a grid of `cols` columns (at least 1, at
/// most one per chart), under one title and one legend, as one SVG document.
///
/// Each panel is 900×450 px with one column, 600×360 with two, 400×240 with three, 300×220 with
/// four or more. A series name has the same colour in every panel.
pub fn panels(title: &str, charts: &[Lines], cols: usize) -> Result<String, PlotError> {
    let cols = cols.clamp(1, charts.len().max(1));
    let rows = charts.len().div_ceil(cols).max(1);
    let cell_w: i32 = match cols {
        1 => 900,
        2 => 600,
        3 => 400,
        _ => 300,
    };
    let cell_h = (cell_w * 3 / 5).clamp(220, 450);

    // One colour per distinct series name, in order of first appearance.
    let mut names: Vec<&str> = Vec::new();
    let mut colour_of: BTreeMap<&str, usize> = BTreeMap::new();
    for chart in charts {
        for (name, _) in &chart.series {
            colour_of.entry(name.as_str()).or_insert_with(|| {
                names.push(name.as_str());
                names.len() - 1
            });
        }
    }

    let width = cell_w.saturating_mul(i32::try_from(cols).unwrap_or(i32::MAX)).min(MAX_SIDE);
    let legend = Legend::layout(&names, f64::from(width - 2 * MARGIN), LegendMark::Line);
    let top = MARGIN + TITLE_BAND + legend.height();
    let height = top.saturating_add(cell_h.saturating_mul(i32::try_from(rows).unwrap_or(i32::MAX)));
    let height = height.saturating_add(MARGIN / 2).min(MAX_SIDE);

    render((width, height), |root| {
        draw_title(root, title, width)?;
        legend.draw(root, MARGIN, MARGIN + TITLE_BAND)?;
        if charts.is_empty() {
            let mid = top + (height - top) / 2;
            return draw_text(root, "no data", (width / 2, mid), &font(LABEL_PX), Anchor::MIDDLE);
        }
        for (k, chart) in charts.iter().enumerate() {
            let (row, col) = (k / cols, k % cols);
            let at =
                |i: usize, side: i32| i32::try_from(i).map_or(i32::MAX, |i| i.saturating_mul(side));
            let (x, y) = (at(col, cell_w), at(row, cell_h).saturating_add(top));
            if x > width - cell_w || y > height - cell_h {
                continue;
            }
            line_panel(root, chart, Cell { x, y, w: cell_w, h: cell_h }, &colour_of)?;
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Layout constants (pixels).

/// Size of one [`bars`] / [`stacked`] chart.
const CHART_SIZE: (i32, i32) = (900, 500);
/// Upper bound on either side of a document, far beyond any real grid (it keeps pixel
/// arithmetic inside `i32`); panels that would start past it are left out.
const MAX_SIDE: i32 = 1 << 24;
/// Outer margin.
const MARGIN: i32 = 12;
/// Height of the title line and the space under it.
const TITLE_BAND: i32 = 32;
/// Height of a panel's own title line.
const PANEL_TITLE_BAND: i32 = 22;
/// Space right of the plotting area (half the last x tick label sticks out).
const PLOT_PAD_RIGHT: i32 = 22;
/// Space above the plotting area (half a tick label sticks out over the top grid line).
const PLOT_PAD_TOP: i32 = 8;
/// Tick mark length; plotters puts tick labels at twice this from the axis.
const TICK: i32 = 5;
/// Font sizes, as they appear in the SVG (`font-size`).
const TITLE_PX: f64 = 17.0;
const PANEL_TITLE_PX: f64 = 14.0;
const LABEL_PX: f64 = 12.5;
const TICK_PX: f64 = 11.0;
const LEGEND_PX: f64 = 12.0;
/// Smallest font a category label is shrunk to.
const MIN_CATEGORY_PX: f64 = 6.0;
/// Estimated advance of one character, as a fraction of the font size.
const CHAR_W: f64 = 0.6;
/// Legend: swatch side, gap after the swatch, gap after an entry, row height.
const SWATCH: i32 = 12;
const SWATCH_GAP: i32 = 5;
const ENTRY_GAP: i32 = 18;
const LEGEND_ROW: i32 = 18;
const LEGEND_MAX_ROWS: usize = 4;
/// Fraction of a category slot covered by a bar group / a stacked bar.
const GROUP_WIDTH: f64 = 0.8;
const STACK_WIDTH: f64 = 0.6;
/// Room left beyond the largest value, as a fraction of the value range (none below 0).
const VALUE_PAD: f64 = 0.05;
/// Largest magnitude plotted; anything beyond (or not finite) is treated as missing.
const MAX_ABS: f64 = 1e300;
/// plotters' SVG backend writes `font-size` as the requested size divided by 1.24.
const PLOTTERS_FONT_SCALE: f64 = 1.24;

/// Okabe & Ito (2008), "Color Universal Design": blue, orange, bluish green, vermillion,
/// reddish purple, sky blue, yellow, black.
const PALETTE: [(u8, u8, u8); 8] = [
    (0x00, 0x72, 0xB2),
    (0xE6, 0x9F, 0x00),
    (0x00, 0x9E, 0x73),
    (0xD5, 0x5E, 0x00),
    (0xCC, 0x79, 0xA7),
    (0x56, 0xB4, 0xE9),
    (0xF0, 0xE4, 0x42),
    (0x00, 0x00, 0x00),
];
const TEXT: RGBColor = RGBColor(0x22, 0x22, 0x22);
const GRID: RGBColor = RGBColor(0xDD, 0xDD, 0xDD);
const AXIS: RGBColor = RGBColor(0x55, 0x55, 0x55);

/// Colour of series `i`: the palette, then the palette mixed with white (1/2, 2/3, ...).
fn colour(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    let round = u16::try_from(i / PALETTE.len()).unwrap_or(u16::MAX).min(8);
    // round 0: the colour itself; round k: (c + k·255) / (k + 1).
    let mix = |c: u8| {
        let v = (u16::from(c) + round * 255) / (round + 1);
        u8::try_from(v).unwrap_or(u8::MAX)
    };
    RGBColor(mix(r), mix(g), mix(b))
}

// ---------------------------------------------------------------------------------------------
// Numbers.

/// `n` as `f64` (exact for every count a chart can hold).
#[allow(clippy::cast_precision_loss, reason = "counts here are far below 2^52")]
fn count_f64(n: usize) -> f64 {
    n as f64
}

/// Rounds a pixel measure to `i32`; clamped first, NaN gives 0.
#[allow(clippy::cast_possible_truncation, reason = "clamped to ±1e6 first")]
fn px(v: f64) -> i32 {
    if v.is_nan() { 0 } else { v.clamp(-1e6, 1e6).round() as i32 }
}

/// The whole number of items that fit in `v` (rounded down, at least 0).
#[allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "clamped to [0, 1e6] first"
)]
fn fit_count(v: f64) -> usize {
    if v.is_nan() { 0 } else { v.clamp(0.0, 1e6).floor() as usize }
}

/// A value that can be plotted, or `None`.
fn plottable(v: f64) -> Option<f64> {
    (v.is_finite() && v.abs() <= MAX_ABS).then_some(v)
}

/// Value `i` of a bar series; missing or unplottable values are 0.
fn value_at(values: &[f64], i: usize) -> f64 {
    values.get(i).copied().and_then(plottable).unwrap_or(0.0)
}

/// A linear axis with "nice" ticks: bounds are multiples of `step`, ticks every `step`.
#[derive(Debug, Clone, PartialEq)]
struct Axis {
    lo: f64,
    hi: f64,
    step: f64,
    ticks: Vec<f64>,
}

impl Axis {
    /// An axis over `[lo, hi]`, widened by `pad` × its span on each side that is not at 0,
    /// with about `target` intervals between ticks. A flat range is widened around its value.
    /// Uses only exactly rounded operations, so the ticks are the same on every machine.
    fn nice(lo: f64, hi: f64, target: usize, pad: f64) -> Axis {
        let (mut lo, mut hi) = match (plottable(lo), plottable(hi)) {
            (Some(a), Some(b)) => (a.min(b), a.max(b)),
            _ => (0.0, 1.0),
        };
        // A flat range (or one too thin to resolve) is widened around its value.
        let magnitude = lo.abs().max(hi.abs());
        if hi - lo <= magnitude * 1e-12 {
            let widen = if magnitude > 1e-290 { magnitude * 0.1 } else { 1.0 };
            if lo >= 0.0 && lo - widen < 0.0 {
                lo = 0.0;
            } else {
                lo -= widen;
            }
            hi += widen;
        }
        let span = hi - lo;
        if lo < 0.0 {
            lo -= span * pad;
        }
        if hi > 0.0 {
            hi += span * pad;
        }
        // At least 3 intervals, so that a step (at most 2.5× the raw one) fits in the range.
        let raw = (hi - lo) / count_f64(target.max(3));
        let mut p = 1.0_f64;
        for _ in 0..700 {
            if p * 10.0 > raw {
                break;
            }
            p *= 10.0;
        }
        for _ in 0..700 {
            if p <= raw {
                break;
            }
            p /= 10.0;
        }
        let step =
            [p, 2.0 * p, 5.0 * p, 10.0 * p].into_iter().find(|&s| s >= raw).unwrap_or(10.0 * p);
        let (k0, k1) = ((lo / step).ceil(), (hi / step).floor());
        if !(step > 0.0 && step.is_finite() && k0.is_finite() && k1.is_finite())
            || k1 < k0
            || k1 - k0 > 100.0
        {
            return Axis { lo, hi, step: hi - lo, ticks: vec![lo, hi] };
        }
        let ticks = (0..=fit_count(k1 - k0)).map(|i| (k0 + count_f64(i)) * step).collect();
        Axis { lo, hi, step, ticks }
    }

    /// The labels of [`Axis::ticks`], one formatter for the whole axis: the unit (k, M, G, T)
    /// follows the largest bound and the decimals the step, so labels line up.
    fn label(&self, v: f64) -> String {
        let magnitude = self.ticks.iter().fold(0.0, |m: f64, t| m.max(t.abs()));
        if v == 0.0 {
            return "0".to_string();
        }
        if !(1e-3..1e15).contains(&magnitude) {
            return format!("{v:.2e}");
        }
        let (unit, suffix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")]
            .into_iter()
            .find(|&(u, _)| magnitude >= u && magnitude >= 1e4)
            .unwrap_or((1.0, ""));
        let step = self.step / unit;
        let mut scaled = step;
        let mut decimals = 0;
        while decimals < 6 && (scaled - scaled.round()).abs() > 1e-9 * scaled.abs().max(1.0) {
            scaled *= 10.0;
            decimals += 1;
        }
        let mut s = format!("{:.*}", decimals, v / unit);
        if s.starts_with('-') && s.bytes().all(|b| matches!(b, b'-' | b'0' | b'.')) {
            s.remove(0);
        }
        s.push_str(suffix);
        s
    }
}

/// The axis is plotters' coordinate: our own mapping and our own ticks, labelled by
/// [`Axis::label`], so plotters' tick search and number formatting are never used.
impl Ranged for Axis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let span = self.hi - self.lo;
        if span.is_nan() || span <= 0.0 {
            return limit.0 + (limit.1 - limit.0) / 2;
        }
        limit.0 + px(f64::from(limit.1 - limit.0) * ((v - self.lo) / span))
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        // Light (minor) grid lines: none.
        if hint.weight().allow_light_points() { Vec::new() } else { self.ticks.clone() }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.lo..self.hi
    }
}

impl ValueFormatter<f64> for Axis {
    fn format(value: &f64) -> String {
        // Not called by plotters for a coordinate that has `format_ext`; kept panic-free.
        Axis::nice(*value, *value, 1, 0.0).label(*value)
    }

    fn format_ext(&self, value: &f64) -> String {
        self.label(*value)
    }
}

// ---------------------------------------------------------------------------------------------
// Text.

/// A font of `size` px as it will appear in the SVG (plotters divides by 1.24 on output).
fn font(size: f64) -> TextStyle<'static> {
    TextStyle::from(FontDesc::new(FontFamily::SansSerif, plotters_size(size), FontStyle::Normal))
        .color(&TEXT)
}

fn bold(size: f64) -> TextStyle<'static> {
    TextStyle::from(FontDesc::new(FontFamily::SansSerif, plotters_size(size), FontStyle::Bold))
        .color(&TEXT)
}

/// The size to ask plotters for so that its SVG says `font-size="{size}"` exactly, where such a
/// number exists (plotters divides by 1.24, and `13.0 * 1.24 / 1.24` is `13.000000000000002`,
/// with no neighbour that gives 13: the sizes used here are chosen to round-trip).
fn plotters_size(size: f64) -> f64 {
    let s = size * PLOTTERS_FONT_SCALE;
    [s, s.next_down(), s.next_up()]
        .into_iter()
        .find(|c| c / PLOTTERS_FONT_SCALE == size)
        .unwrap_or(s)
}

/// Estimated width in pixels of `s` at `size` px.
fn text_width(s: &str, size: f64) -> f64 {
    count_f64(s.chars().count()) * size * CHAR_W
}

/// `s` with control characters replaced by spaces, cut to `max_width` pixels at `size` px
/// (ending in `…` when cut).
fn fit(s: &str, max_width: f64, size: f64) -> String {
    let clean = s.chars().map(|c| if c.is_control() { ' ' } else { c });
    let room = fit_count(max_width / (size * CHAR_W));
    let n = s.chars().count();
    if n <= room {
        clean.collect()
    } else if room == 0 {
        String::new()
    } else {
        clean.take(room - 1).chain(std::iter::once('…')).collect()
    }
}

/// Like [`fit`], but a cut name keeps its start and its end (`split-on-f…-kernel-12`): names
/// that differ only in a suffix stay apart.
fn fit_middle(s: &str, max_width: f64, size: f64) -> String {
    let room = fit_count(max_width / (size * CHAR_W));
    let n = s.chars().count();
    if n <= room || room < 5 {
        return fit(s, max_width, size);
    }
    let clean: Vec<char> = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    let tail = (room - 1) / 2;
    let head = room - 1 - tail;
    clean[..head].iter().chain(std::iter::once(&'…')).chain(&clean[n - tail..]).collect()
}

/// Where a text's anchor point is on the text.
#[derive(Clone, Copy)]
struct Anchor {
    h: HPos,
    v: VPos,
    vertical: bool,
}

impl Anchor {
    const MIDDLE: Anchor = Anchor { h: HPos::Center, v: VPos::Center, vertical: false };
    const TOP: Anchor = Anchor { h: HPos::Center, v: VPos::Top, vertical: false };
    const LEFT: Anchor = Anchor { h: HPos::Left, v: VPos::Center, vertical: false };
    /// Vertical text reading upwards, ending at the anchor.
    const UP_END: Anchor = Anchor { h: HPos::Right, v: VPos::Center, vertical: true };
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

fn draw_text(
    area: &Area<'_>,
    s: &str,
    at: (i32, i32),
    style: &TextStyle<'_>,
    anchor: Anchor,
) -> Result<(), PlotError> {
    if s.is_empty() {
        return Ok(());
    }
    let mut style = style.pos(Pos::new(anchor.h, anchor.v));
    if anchor.vertical {
        style = style.transform(FontTransform::Rotate270);
    }
    area.draw_text(s, &style, at).map_err(draw_err)
}

fn draw_title(root: &Area<'_>, title: &str, width: i32) -> Result<(), PlotError> {
    let text = fit(title, f64::from(width - 2 * MARGIN), TITLE_PX);
    draw_text(root, &text, (width / 2, MARGIN), &bold(TITLE_PX), Anchor::TOP)
}

/// Draws into a fresh SVG document of `size` px and returns the document.
fn render<F>(size: (i32, i32), draw: F) -> Result<String, PlotError>
where
    F: FnOnce(&Area<'_>) -> Result<(), PlotError>,
{
    let size =
        (u32::try_from(size.0.max(1)).unwrap_or(1), u32::try_from(size.1.max(1)).unwrap_or(1));
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Legend.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LegendMark {
    Box,
    Line,
}

/// A legend laid out in rows across the chart's width.
#[derive(Debug)]
struct Legend {
    mark: LegendMark,
    /// Colour index (`None` for the "+N more" note), text, x offset, row.
    entries: Vec<(Option<usize>, String, i32, i32)>,
    rows: i32,
}

impl Legend {
    /// Lays out `names` in at most [`LEGEND_MAX_ROWS`] rows of `width` px; what does not fit
    /// is summarised as "+N more".
    fn layout(names: &[&str], width: f64, mark: LegendMark) -> Legend {
        let item_w = |text: &str| f64::from(SWATCH + SWATCH_GAP) + text_width(text, LEGEND_PX);
        let max_text = width - f64::from(SWATCH + SWATCH_GAP);
        let texts: Vec<String> = names.iter().map(|n| fit_middle(n, max_text, LEGEND_PX)).collect();
        // Place the first `k` names, then the note for the rest if any; None if too many rows.
        let place = |k: usize| -> Option<Legend> {
            let mut entries = Vec::new();
            let (mut x, mut row) = (0.0_f64, 0_usize);
            let rest = texts.len() - k;
            let note = (rest > 0).then(|| format!("+{rest} more"));
            let items = texts[..k]
                .iter()
                .enumerate()
                .map(|(i, t)| (Some(i), t.clone(), item_w(t)))
                .chain(note.map(|t| (None, t.clone(), text_width(&t, LEGEND_PX))));
            for (colour, text, w) in items {
                if x > 0.0 && x + w > width {
                    x = 0.0;
                    row += 1;
                }
                entries.push((colour, text, px(x), i32::try_from(row).unwrap_or(0)));
                x += w + f64::from(ENTRY_GAP);
            }
            let rows = if entries.is_empty() { 0 } else { row + 1 };
            (rows <= LEGEND_MAX_ROWS).then(|| Legend {
                mark,
                entries,
                rows: i32::try_from(rows).unwrap_or(0),
            })
        };
        (0..=texts.len()).rev().find_map(place).unwrap_or(Legend {
            mark,
            entries: Vec::new(),
            rows: 0,
        })
    }

    /// Height taken, including the space under it.
    fn height(&self) -> i32 {
        if self.rows == 0 { 0 } else { self.rows * LEGEND_ROW + 8 }
    }

    fn draw(&self, root: &Area<'_>, x: i32, y: i32) -> Result<(), PlotError> {
        let style = font(LEGEND_PX);
        for (colour_index, text, dx, row) in &self.entries {
            let (x0, mid) = (x + dx, y + row * LEGEND_ROW + LEGEND_ROW / 2);
            let text_x = match colour_index {
                Some(i) => {
                    let c = colour(*i);
                    match self.mark {
                        LegendMark::Box => root.draw(&Rectangle::new(
                            [(x0, mid - SWATCH / 2), (x0 + SWATCH, mid + SWATCH / 2)],
                            c.filled(),
                        )),
                        LegendMark::Line => root.draw(&Rectangle::new(
                            [(x0, mid - 2), (x0 + SWATCH, mid + 1)],
                            c.filled(),
                        )),
                    }
                    .map_err(draw_err)?;
                    x0 + SWATCH + SWATCH_GAP
                }
                None => x0,
            };
            draw_text(root, text, (text_x, mid), &style, Anchor::LEFT)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Category charts (bars, stacked).

/// A bar in data coordinates: x in category slots (slot `i` is `[i, i + 1]`), y in values.
#[derive(Debug, Clone, Copy)]
struct DataRect {
    x: (f64, f64),
    y: (f64, f64),
    colour: usize,
}

struct CategoryChart<'a> {
    title: &'a str,
    y_label: &'a str,
    categories: &'a [String],
    legend: Vec<&'a str>,
    lo: f64,
    hi: f64,
    rects: Vec<DataRect>,
    empty: bool,
}

/// Width of the value-axis label area: description, tick labels, ticks.
fn y_label_area(axis: &Axis, y_label: &str) -> i32 {
    let widest =
        axis.ticks.iter().map(|&t| text_width(&axis.label(t), TICK_PX)).fold(0.0, f64::max);
    let desc = if y_label.is_empty() { 0 } else { px(LABEL_PX * 1.4) };
    desc + px(widest) + 2 * TICK + 6
}

fn category_chart(c: &CategoryChart<'_>) -> Result<String, PlotError> {
    let (width, height) = CHART_SIZE;
    let legend = Legend::layout(&c.legend, f64::from(width - 2 * MARGIN), LegendMark::Box);
    let plot_top = MARGIN + TITLE_BAND + legend.height();
    let plot_h = height - MARGIN - plot_top;
    let axis = Axis::nice(c.lo, c.hi, fit_count(f64::from(plot_h) / 35.0).clamp(3, 10), VALUE_PAD);
    let y_area = y_label_area(&axis, c.y_label);
    let plot_w = width - 2 * MARGIN - y_area - PLOT_PAD_RIGHT;
    let n = c.categories.len();
    let slot = f64::from(plot_w) / count_f64(n.max(1));

    // Category labels: side by side when they fit, else vertical, shrunk to the slot width and
    // cut to at most 30% of the chart height.
    let widest = c.categories.iter().map(|s| text_width(s, TICK_PX)).fold(0.0, f64::max);
    let vertical = widest > slot - 6.0;
    let (cat_px, cat_max) = if vertical {
        let size = (slot * 0.8).floor().clamp(MIN_CATEGORY_PX, TICK_PX);
        let longest = c.categories.iter().map(|s| text_width(s, size)).fold(0.0, f64::max);
        (size, longest.min(f64::from(height) * 0.3))
    } else {
        (TICK_PX, slot - 6.0)
    };
    let x_area = 2 * TICK + if vertical { px(cat_max) } else { px(TICK_PX * 1.3) } + 4;

    render(CHART_SIZE, |root| {
        draw_title(root, c.title, width)?;
        legend.draw(root, MARGIN, MARGIN + TITLE_BAND)?;
        let area = root.clone().shrink((MARGIN, plot_top), (width - 2 * MARGIN, plot_h));
        let mut chart = ChartBuilder::on(&area)
            .margin_top(PLOT_PAD_TOP)
            .margin_right(PLOT_PAD_RIGHT)
            .x_label_area_size(x_area)
            .y_label_area_size(y_area)
            .build_cartesian_2d(
                Axis { lo: 0.0, hi: count_f64(n.max(1)), step: 1.0, ticks: Vec::new() },
                axis.clone(),
            )
            .map_err(draw_err)?;
        let y_desc = fit(c.y_label, f64::from(plot_h - x_area), LABEL_PX);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .set_all_tick_mark_size(TICK)
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .axis_style(AXIS)
            .label_style(font(TICK_PX))
            .axis_desc_style(font(LABEL_PX))
            .y_desc(y_desc)
            .draw()
            .map_err(draw_err)?;

        for r in c.rects.iter().filter(|r| r.y.0 != r.y.1) {
            chart
                .plotting_area()
                .draw(&Rectangle::new([(r.x.0, r.y.1), (r.x.1, r.y.0)], colour(r.colour).filled()))
                .map_err(draw_err)?;
        }
        if axis.lo < 0.0 {
            let zero = [(0.0, 0.0), (count_f64(n.max(1)), 0.0)];
            chart.plotting_area().draw(&PathElement::new(zero, AXIS)).map_err(draw_err)?;
        }

        let style = font(cat_px);
        for (i, name) in c.categories.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(count_f64(i) + 0.5, axis.lo));
            let text = fit_middle(name, cat_max, cat_px);
            if vertical {
                draw_text(root, &text, (x, y + 2 * TICK), &style, Anchor::UP_END)?;
            } else {
                draw_text(root, &text, (x, y + 2 * TICK), &style, Anchor::TOP)?;
            }
        }
        if c.empty {
            no_data(root, &chart.plotting_area().strip_coord_spec())?;
        }
        Ok(())
    })
}

/// Writes "no data" in the middle of `area`.
fn no_data(root: &Area<'_>, area: &Area<'_>) -> Result<(), PlotError> {
    let (x, y) = (area.get_base_pixel(), area.dim_in_pixel());
    let w = i32::try_from(y.0).unwrap_or(0);
    let h = i32::try_from(y.1).unwrap_or(0);
    draw_text(root, "no data", (x.0 + w / 2, x.1 + h / 2), &font(LABEL_PX), Anchor::MIDDLE)
}

// ---------------------------------------------------------------------------------------------
// Line panels.

/// A panel's place in the document.
#[derive(Debug, Clone, Copy)]
struct Cell {
    x: i32,
    y: i32,
    w: i32,
    h: i32,
}

/// The plottable points of a series, in order of x (stable, so ties keep their order).
fn clean_points(points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    let mut out: Vec<(f64, f64)> =
        points.iter().filter_map(|&(x, y)| Some((plottable(x)?, plottable(y)?))).collect();
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

fn line_panel(
    root: &Area<'_>,
    chart: &Lines,
    cell: Cell,
    colour_of: &BTreeMap<&str, usize>,
) -> Result<(), PlotError> {
    let series: Vec<(usize, Vec<(f64, f64)>)> = chart
        .series
        .iter()
        .map(|(name, pts)| (colour_of.get(name.as_str()).copied().unwrap_or(0), clean_points(pts)))
        .collect();
    let all = || series.iter().flat_map(|(_, p)| p.iter());
    let empty = all().next().is_none();
    let x_min = all().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let x_max = all().map(|p| p.0).fold(f64::NEG_INFINITY, f64::max);
    let y_min = all().map(|p| p.1).fold(0.0, f64::min);
    let y_max = all().map(|p| p.1).fold(0.0, f64::max);
    let (x_min, x_max) = if empty { (0.0, 1.0) } else { (x_min, x_max) };

    let plot_top = cell.y + PANEL_TITLE_BAND;
    let plot_h = cell.h - PANEL_TITLE_BAND - 12;
    let y_axis =
        Axis::nice(y_min, y_max, fit_count(f64::from(plot_h) / 35.0).clamp(3, 10), VALUE_PAD);
    let y_area = y_label_area(&y_axis, &chart.y_label);
    let plot_w = cell.w - MARGIN - y_area - PLOT_PAD_RIGHT;
    let x_axis = Axis::nice(x_min, x_max, fit_count(f64::from(plot_w) / 70.0).clamp(3, 10), 0.0);
    let x_desc_h = if chart.x_label.is_empty() { 0 } else { px(LABEL_PX * 1.5) };
    let x_area = 2 * TICK + px(TICK_PX * 1.3) + 4 + x_desc_h;

    let title = fit_middle(&chart.title, f64::from(cell.w - 2 * MARGIN), PANEL_TITLE_PX);
    draw_text(root, &title, (cell.x + cell.w / 2, cell.y + 2), &bold(PANEL_TITLE_PX), Anchor::TOP)?;

    let area = root.clone().shrink((cell.x + MARGIN, plot_top), (cell.w - MARGIN, plot_h));
    let mut plot = ChartBuilder::on(&area)
        .margin_top(PLOT_PAD_TOP)
        .margin_right(PLOT_PAD_RIGHT)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area)
        .build_cartesian_2d(x_axis.clone(), y_axis.clone())
        .map_err(draw_err)?;
    plot.configure_mesh()
        .set_all_tick_mark_size(TICK)
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(AXIS)
        .label_style(font(TICK_PX))
        .axis_desc_style(font(LABEL_PX))
        .x_desc(fit(&chart.x_label, f64::from(plot_w), LABEL_PX))
        .y_desc(fit(&chart.y_label, f64::from(plot_h - x_area), LABEL_PX))
        .draw()
        .map_err(draw_err)?;

    for (c, points) in &series {
        let style = colour(*c).stroke_width(2);
        // Step line: each value holds until the next sample, the last until the chart's end.
        let mut path: Vec<(i32, i32)> = Vec::with_capacity(points.len() * 2 + 1);
        let mut push = |p: (f64, f64)| {
            let q = plot.backend_coord(&p);
            // Skip repeated pixels and merge straight runs (keeps long traces small).
            if path.last() == Some(&q) {
                return;
            }
            // x never decreases along the path; a vertical run is merged only when it keeps
            // going the same way (a spike at one x must stay visible).
            if let [.., a, b] = path.as_slice()
                && ((a.1 == b.1 && b.1 == q.1)
                    || (a.0 == b.0
                        && b.0 == q.0
                        && (b.1 - a.1).signum() * (q.1 - b.1).signum() >= 0))
            {
                path.pop();
            }
            path.push(q);
        };
        for (k, &(x, y)) in points.iter().enumerate() {
            push((x, y));
            let next_x = points.get(k + 1).map_or(x_max, |p| p.0);
            push((next_x, y));
        }
        match path.as_slice() {
            [] => {}
            [single] => {
                root.draw(&Circle::new(*single, 3, colour(*c).filled())).map_err(draw_err)?;
            }
            _ => root.draw(&PathElement::new(path, style)).map_err(draw_err)?,
        }
    }
    if empty {
        no_data(root, &plot.plotting_area().strip_coord_spec())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policies() -> Vec<String> {
        [
            "baseline",
            "split-on-fault-kernel",
            "gmem-no-direct-map",
            "unmap-on-convert",
            "split-eager",
            "huge-only",
            "lazy-restore",
            "batch-restore-1G",
            "no-restore",
        ]
        .map(String::from)
        .to_vec()
    }

    fn sample_bars() -> Bars {
        let cats = policies();
        let n = cats.len();
        let v = |k: f64| (0..n).map(|i| k * (1.0 + count_f64(i)) * 1.37e6).collect::<Vec<_>>();
        Bars {
            title: "TLB misses by policy".into(),
            y_label: "misses".into(),
            categories: cats,
            series: vec![
                ("snp-churn".into(), v(1.0)),
                ("multi-tenant".into(), v(0.6)),
                ("kernel-build".into(), v(0.3)),
            ],
        }
    }

    fn sample_stacked() -> Stacked {
        let cats = policies();
        let n = cats.len();
        let comp = |k: f64| (0..n).map(|i| k * (2.0 + count_f64(i % 4))).collect::<Vec<_>>();
        Stacked {
            title: "Cycle breakdown".into(),
            y_label: "cycles per access".into(),
            categories: cats,
            components: vec![
                ("base".into(), comp(10.0)),
                ("tlb".into(), comp(3.0)),
                ("walk".into(), comp(5.0)),
                ("rmp_check".into(), comp(1.5)),
            ],
        }
    }

    fn sample_lines() -> Vec<Lines> {
        ["baseline", "split-on-fault-kernel", "gmem-no-direct-map", "huge-only"]
            .iter()
            .enumerate()
            .map(|(p, policy)| {
                let step = |base: f64, slope: f64| {
                    (0..20)
                        .map(|t| {
                            let t = count_f64(t);
                            (t * 5e5, base + slope * count_f64(p) * t)
                        })
                        .collect::<Vec<_>>()
                };
                Lines {
                    title: (*policy).into(),
                    x_label: "cycles".into(),
                    y_label: "kB".into(),
                    series: vec![
                        ("DirectMap4k".into(), step(2e5, 4e4)),
                        ("DirectMap2M".into(), step(8e6, -2e4)),
                        ("DirectMap1G".into(), step(4e6, 0.0)),
                    ],
                }
            })
            .collect()
    }

    /// `(tag, attributes)` of every element of the document, in order.
    fn elements(svg: &str) -> Vec<(String, BTreeMap<String, String>)> {
        svg.split('<')
            .skip(1)
            .filter(|s| !s.starts_with('/'))
            .map(|s| {
                let s = s.split('>').next().unwrap_or("");
                let tag = s.split_whitespace().next().unwrap_or("").trim_end_matches('/');
                let mut attrs = BTreeMap::new();
                for part in s.split('"').collect::<Vec<_>>().chunks(2) {
                    if let [k, v] = part {
                        let key = k.split_whitespace().last().unwrap_or("").trim_end_matches('=');
                        attrs.insert(key.to_string(), v.to_string());
                    }
                }
                (tag.to_string(), attrs)
            })
            .collect()
    }

    /// The contents of every `<text>` element.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|s| {
                let body = s.split_once('>')?.1;
                Some(body.split("</text>").next()?.trim().to_string())
            })
            .collect()
    }

    fn check_document(svg: &str) {
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        for (tag, attrs) in elements(svg) {
            if let Some(f) = attrs.get("font-family") {
                assert!(matches!(f.as_str(), "sans-serif" | "serif" | "monospace"), "{tag}: {f}");
            }
            if let Some(size) = attrs.get("font-size") {
                assert!(size.len() <= 4 && size.parse::<f64>().is_ok(), "font-size {size}");
            }
        }
    }

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    #[test]
    fn same_input_same_bytes() {
        assert_eq!(bars(&sample_bars()), bars(&sample_bars()));
        assert_eq!(stacked(&sample_stacked()), stacked(&sample_stacked()));
        let charts = sample_lines();
        assert_eq!(panels("DirectMap", &charts, 2), panels("DirectMap", &charts, 2));
    }

    #[test]
    fn documents_name_everything() {
        let b = sample_bars();
        let svg = bars(&b).unwrap();
        check_document(&svg);
        let t = texts(&svg);
        assert!(t.contains(&b.title) && t.contains(&b.y_label));
        for name in b.categories.iter().chain(b.series.iter().map(|(n, _)| n)) {
            assert!(t.contains(name), "{name} missing");
        }

        let s = sample_stacked();
        let svg = stacked(&s).unwrap();
        check_document(&svg);
        let t = texts(&svg);
        assert!(t.contains(&s.title) && t.contains(&s.y_label));
        for name in s.categories.iter().chain(s.components.iter().map(|(n, _)| n)) {
            assert!(t.contains(name), "{name} missing");
        }

        let charts = sample_lines();
        let svg = panels("DirectMap over time", &charts, 2).unwrap();
        check_document(&svg);
        let t = texts(&svg);
        assert!(t.contains(&"DirectMap over time".to_string()));
        for c in &charts {
            assert!(t.contains(&c.title) && t.contains(&c.x_label) && t.contains(&c.y_label));
        }
        for name in ["DirectMap4k", "DirectMap2M", "DirectMap1G"] {
            assert_eq!(t.iter().filter(|s| s.as_str() == name).count(), 1, "one legend");
        }
    }

    #[test]
    fn bar_heights_follow_values() {
        let c = Bars {
            title: "ratio".into(),
            y_label: "v".into(),
            categories: vec!["a".into(), "b".into()],
            series: vec![("s".into(), vec![37.0, 100.0])],
        };
        let svg = bars(&c).unwrap();
        let fill = hex(colour(0));
        let num = |a: &BTreeMap<String, String>, k: &str| a[k].parse::<i32>().unwrap();
        // Bars are the series-coloured rects that are not the legend swatch.
        let bars: Vec<_> = elements(&svg)
            .into_iter()
            .filter(|(tag, a)| tag == "rect" && a.get("fill") == Some(&fill))
            .filter(|(_, a)| !(num(a, "width") == SWATCH && num(a, "height") == SWATCH))
            .map(|(_, a)| (num(&a, "x"), num(&a, "y"), num(&a, "height")))
            .collect();
        assert_eq!(bars.len(), 2, "{bars:?}");
        let (a, b) = (bars[0], bars[1]);
        assert!(a.0 < b.0, "left to right");
        assert_eq!(a.1 + a.2, b.1 + b.2, "same baseline");
        let ratio = f64::from(a.2) / f64::from(b.2);
        // One pixel of rounding on a bar of ~300 px.
        assert!((ratio - 0.37).abs() < 2.0 / f64::from(b.2), "ratio {ratio}, bars {bars:?}");

        // Stacked: the segments of one bar touch, and the totals follow the sums.
        let s = Stacked {
            title: "stack".into(),
            y_label: "v".into(),
            categories: vec!["a".into(), "b".into()],
            components: vec![("x".into(), vec![10.0, 40.0]), ("y".into(), vec![30.0, 40.0])],
        };
        let svg = stacked(&s).unwrap();
        let segs = |c: usize| -> Vec<(i32, i32, i32)> {
            let fill = hex(colour(c));
            elements(&svg)
                .into_iter()
                .filter(|(tag, a)| tag == "rect" && a.get("fill") == Some(&fill))
                .filter(|(_, a)| !(num(a, "width") == SWATCH && num(a, "height") == SWATCH))
                .map(|(_, a)| (num(&a, "x"), num(&a, "y"), num(&a, "height")))
                .collect()
        };
        let (x, y) = (segs(0), segs(1));
        assert_eq!((x.len(), y.len()), (2, 2));
        for k in 0..2 {
            assert_eq!(y[k].1 + y[k].2, x[k].1, "segment {k} sits on the one below");
        }
        let total = |k: usize| f64::from(x[k].2 + y[k].2);
        assert!((total(0) / total(1) - 0.5).abs() < 0.02);
    }

    #[test]
    fn lines_are_steps() {
        let c = Lines {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            // Out of order, with two samples at x = 1 (2 then 9: a visible jump at one x).
            series: vec![(
                "s".into(),
                vec![(3.0, 1.0), (0.0, 5.0), (1.0, 2.0), (2.0, 4.0), (1.0, 9.0)],
            )],
        };
        let svg = panels("steps", &[c], 1).unwrap();
        let lines: Vec<_> = elements(&svg)
            .into_iter()
            .filter(|(tag, a)| tag == "polyline" && a.get("stroke") == Some(&hex(colour(0))))
            .collect();
        assert_eq!(lines.len(), 1);
        let pts: Vec<(i32, i32)> = lines[0].1["points"]
            .split_whitespace()
            .map(|p| {
                let (x, y) = p.split_once(',').unwrap();
                (x.parse().unwrap(), y.parse().unwrap())
            })
            .collect();
        assert!(pts.len() >= 7, "{pts:?}");
        for w in pts.windows(2) {
            assert!(w[0].0 == w[1].0 || w[0].1 == w[1].1, "not a step: {w:?}");
            assert!(w[0].0 <= w[1].0, "x goes right: {w:?}");
        }
        let levels: std::collections::BTreeSet<i32> = pts.iter().map(|p| p.1).collect();
        assert_eq!(levels.len(), 5, "every value is drawn: {pts:?}");
    }

    #[test]
    fn odd_input_does_not_panic() {
        let long = "x".repeat(500);
        let many: Vec<String> = (0..30).map(|i| format!("split-on-fault-kernel-{i}")).collect();
        let bad = vec![f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 1e308, -0.0];
        let bar_cases = vec![
            Bars::default(),
            Bars { categories: vec!["only".into()], ..Bars::default() },
            Bars { series: vec![("s".into(), vec![])], ..Bars::default() },
            Bars {
                title: long.clone(),
                y_label: long.clone(),
                categories: vec![long.clone()],
                series: vec![(long.clone(), vec![1.0])],
            },
            Bars {
                categories: vec!["a".into(), "b".into()],
                series: vec![("zero".into(), vec![0.0, 0.0])],
                ..Bars::default()
            },
            Bars {
                categories: (0..5).map(|i| i.to_string()).collect(),
                series: vec![("bad".into(), bad.clone()), ("short".into(), vec![1.0])],
                ..Bars::default()
            },
            Bars {
                categories: vec!["neg".into(), "pos".into()],
                series: vec![("s".into(), vec![-3.0, 2.0]), ("tiny".into(), vec![1e-9, 2e-9])],
                ..Bars::default()
            },
            Bars {
                categories: many.clone(),
                series: (0..20).map(|j| (format!("s{j}\u{0}<&>"), vec![1e12; 30])).collect(),
                ..Bars::default()
            },
            Bars {
                categories: vec!["huge".into(), "ünïcödé ⚙".into()],
                series: vec![("s".into(), vec![9e299, 1e-300])],
                ..Bars::default()
            },
        ];
        for c in &bar_cases {
            check_document(&bars(c).unwrap());
            let s = Stacked {
                title: c.title.clone(),
                y_label: c.y_label.clone(),
                categories: c.categories.clone(),
                components: c.series.clone(),
            };
            check_document(&stacked(&s).unwrap());
        }

        let pts = |v: Vec<(f64, f64)>| Lines {
            title: long.clone(),
            x_label: long.clone(),
            y_label: String::new(),
            series: vec![("s".into(), v), ("empty".into(), vec![])],
        };
        let line_cases = vec![
            pts(vec![]),
            pts(vec![(1.0, 1.0)]),
            pts(vec![(0.0, 0.0), (0.0, 0.0)]),
            pts(vec![(f64::NAN, 1.0), (2.0, f64::INFINITY), (3.0, -1.0), (1e308, 2.0)]),
            pts(vec![(1e20, 5.0), (1e20 + 1e5, 6.0)]),
            pts((0..10_000).map(|i| (count_f64(i), count_f64(i % 7))).collect()),
        ];
        let many = vec![Lines::default(); 100];
        check_document(&panels("many", &many, 30).unwrap());
        for cols in [0, 1, 3, 30] {
            check_document(&panels("", &line_cases, cols).unwrap());
            check_document(&panels(&long, &[], cols).unwrap());
        }
    }

    #[test]
    fn tick_labels() {
        let labels = |a: &Axis| a.ticks.iter().map(|&t| a.label(t)).collect::<Vec<_>>();
        let a = Axis::nice(0.0, 1.37e7, 8, 0.0);
        assert_eq!((a.lo, a.hi), (0.0, 1.37e7));
        assert_eq!(labels(&a), ["0", "2M", "4M", "6M", "8M", "10M", "12M"]);
        let a = Axis::nice(0.0, 1.37e7, 8, 0.05);
        assert_eq!((a.lo, a.hi), (0.0, 1.37e7 * 1.05));
        assert_eq!(labels(&Axis::nice(0.0, 0.75, 5, 0.0)), ["0", "0.2", "0.4", "0.6"]);
        assert_eq!(labels(&Axis::nice(-3.0, 2.0, 5, 0.0)), ["-3", "-2", "-1", "0", "1", "2"]);
        assert_eq!(Axis::nice(0.0, 2500.0, 5, 0.0).label(1500.0), "1500");
        let a = Axis::nice(0.0, 12_000.0, 24, 0.0);
        assert_eq!(
            (a.step, a.label(1500.0), a.label(12_000.0)),
            (500.0, "1.5k".into(), "12.0k".into())
        );
        assert_eq!(Axis::nice(0.0, 3e18, 5, 0.0).label(1e18), "1.00e18");
        // Flat ranges are widened; all-zero data gets 0..1.
        let a = Axis::nice(0.0, 0.0, 5, 0.0);
        assert_eq!((a.lo, a.hi), (0.0, 1.0));
        let a = Axis::nice(7.0, 7.0, 5, 0.0);
        assert!(a.lo < 7.0 && a.hi > 7.0 && !a.ticks.is_empty());
        assert_eq!(fit_middle("split-on-fault-kernel-12", 90.0, 10.0), "split-o…rnel-12");
        assert_eq!(fit("a\u{7}b", 100.0, 10.0), "a b");
    }

    /// Writes one example of each chart to `$PLOT_EXAMPLES` (default /tmp/plot-examples).
    /// `cargo test -p ccsim --lib plot::tests::write_examples -- --ignored`
    #[test]
    #[ignore = "writes files; run by hand to look at the charts"]
    fn write_examples() {
        let dir = std::env::var("PLOT_EXAMPLES").unwrap_or_else(|_| "/tmp/plot-examples".into());
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, svg: String| std::fs::write(format!("{dir}/{name}"), svg).unwrap();
        write("bars.svg", bars(&sample_bars()).unwrap());
        write("stacked.svg", stacked(&sample_stacked()).unwrap());
        write("panels.svg", panels("DirectMap over time", &sample_lines(), 2).unwrap());
        let many = Bars {
            title: "30 categories".into(),
            y_label: "walk cycles".into(),
            categories: (0..30).map(|i| format!("split-on-fault-kernel-{i}")).collect(),
            series: vec![("a".into(), (0..30).map(count_f64).collect())],
        };
        write("bars-30.svg", bars(&many).unwrap());
        write("lines-1.svg", panels("one chart", &sample_lines()[1..2], 1).unwrap());
        write("edge-empty.svg", bars(&Bars::default()).unwrap());
        let long = "a-very-long-policy-name-that-goes-on-and-on-".repeat(4);
        let odd = Bars {
            title: long.clone(),
            y_label: long.clone(),
            categories: vec!["neg".into(), long.clone(), "nan".into()],
            series: (0..12)
                .map(|j| (format!("{long}{j}"), vec![-3.0, 2.0 + count_f64(j), f64::NAN]))
                .collect(),
        };
        write("edge-odd.svg", bars(&odd).unwrap());
        let mut empty_panel = sample_lines();
        empty_panel[1].series.clear();
        empty_panel[2].series[0].1 = vec![(5.0, 1.0)];
        write("edge-panels.svg", panels("odd panels", &empty_panel, 3).unwrap());
    }

    /// Render time of a 9-category × 3-series bar chart.
    /// `cargo test --release -p ccsim --lib plot::tests::render_time -- --ignored --nocapture`
    #[test]
    #[ignore = "a measurement, not a check"]
    fn render_time() {
        let c = sample_bars();
        let n = 1000_u32;
        let t = std::time::Instant::now();
        let mut bytes = 0;
        for _ in 0..n {
            bytes += bars(&c).unwrap().len();
        }
        let per = t.elapsed() / n;
        println!("bars 9x3: {per:?} per chart, {} bytes", bytes / 1000);
    }
}
