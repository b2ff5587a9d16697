//! Line charts as standalone SVG documents, written with format strings only.
//!
//! A [`Chart`] is one or more [`Panel`]s stacked vertically over a shared x axis (e.g. availability and
//! staleness against seconds since the start of a run). [`Band`]s (e.g. a partition from 10 s to 30 s) are
//! shaded across every panel and labelled once above the first. Every panel has its own y axis and legend.

use std::fmt::Write as _;

/// One line of a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    /// Any SVG colour, e.g. `"#1f77b4"`.
    pub color: String,
    /// Drawn sorted by x. A point whose x is not finite is dropped; one whose y is not finite breaks the
    /// line there.
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// A stretch of x shaded across every panel, e.g. while a partition was in place.
#[derive(Debug, Clone, PartialEq)]
pub struct Band {
    pub from: f64,
    pub to: f64,
    pub label: String,
    /// Fill colour, drawn translucent.
    pub color: String,
}

/// One plot with its own y axis.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    pub title: String,
    pub y_label: String,
    /// The bottom of the y axis; lower values are clipped.
    pub y_min: f64,
    /// The top of the y axis; `None`: the largest value shown, rounded up to the next tick.
    pub y_max: Option<f64>,
    /// Appended to the tick labels, e.g. `"%"` or `" s"`.
    pub y_unit: String,
    pub series: Vec<Series>,
}

/// A whole figure: panels stacked over one x axis from `x_min` to `x_max`.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub x_min: f64,
    pub x_max: f64,
    pub bands: Vec<Band>,
    pub panels: Vec<Panel>,
}

const WIDTH: f64 = 900.0;
/// Room left of the plots for the y tick labels and the y axis label.
const LEFT: f64 = 76.0;
/// Room right of the plots for the legends.
const RIGHT: f64 = 180.0;
/// Chart title and band labels.
const HEADER: f64 = 60.0;
const PANEL_HEIGHT: f64 = 260.0;
/// x tick labels and the x axis label, under the last panel.
const FOOTER: f64 = 40.0;
const MAX_TICKS: f64 = 8.0;
/// Slack for floating point when rounding to ticks.
const EPS: f64 = 1e-9;

/// An axis range with its tick step, 1, 2 or 5 × 10^k.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Scale {
    lo: f64,
    hi: f64,
    step: f64,
}

impl Scale {
    /// The smallest nice step giving at most [`MAX_TICKS`] ticks in `lo..=hi`. With `round_up`, `hi` is
    /// raised to the next tick. An empty or non-finite range becomes `lo..lo + 1`.
    fn nice(lo: f64, hi: f64, round_up: bool) -> Self {
        let lo = if lo.is_finite() { lo } else { 0.0 };
        let hi = Some(hi)
            .filter(|&hi| hi > lo && (hi - lo).is_finite())
            .unwrap_or(lo + 1.0);
        let top = |step: f64| {
            if round_up {
                (hi / step - EPS).ceil()
            } else {
                (hi / step + EPS).floor()
            }
        };
        let count = |step: f64| top(step) - (lo / step - EPS).ceil() + 1.0;
        let exp = ((hi - lo) / MAX_TICKS).log10().floor() as i32;
        let step = (exp..=exp + 2)
            .flat_map(|k| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(k)))
            .find(|&step| count(step) <= MAX_TICKS)
            .unwrap_or(hi - lo);
        let hi = if round_up { top(step) * step } else { hi };
        Self { lo, hi, step }
    }

    fn ticks(&self) -> Vec<f64> {
        let first = (self.lo / self.step - EPS).ceil() as i64;
        let last = (self.hi / self.step + EPS).floor() as i64;
        (first..=last).map(|i| i as f64 * self.step).collect()
    }

    /// A tick with as many decimals as the step needs (ticks are whole multiples of it: no `-0`).
    fn label(&self, value: f64) -> String {
        let decimals = (-self.step.log10().floor()).max(0.0) as usize;
        format!("{value:.decimals$}")
    }

    /// Maps `value` onto `from..to` (pixels; `to` may be less than `from`).
    fn map(&self, value: f64, from: f64, to: f64) -> f64 {
        from + (value - self.lo) / (self.hi - self.lo) * (to - from)
    }
}

/// Escapes text and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

fn dash(dashed: bool) -> &'static str {
    if dashed {
        r#" stroke-dasharray="7 4""#
    } else {
        ""
    }
}

// Writing to a String cannot fail: the results of write! are ignored.

/// Appends a `<text>` at (x, y) with further attributes and escaped content.
fn text(out: &mut String, (x, y): (f64, f64), attrs: &str, content: &str) {
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" {attrs}>{}</text>"#,
        esc(content)
    );
}

/// Appends a `<line>` with further attributes.
fn line(out: &mut String, (x1, y1): (f64, f64), (x2, y2): (f64, f64), attrs: &str) {
    let _ = writeln!(
        out,
        r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" {attrs}/>"#
    );
}

/// The chart as a complete SVG document.
pub fn render(chart: &Chart) -> String {
    let x = Scale::nice(chart.x_min, chart.x_max, false);
    let height = HEADER + chart.panels.len() as f64 * PANEL_HEIGHT + FOOTER;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12" fill="#222">
<title>{}</title>
<rect width="100%" height="100%" fill="#fff"/>"##,
        esc(&chart.title)
    );
    let title = r#"text-anchor="middle" font-size="16" font-weight="bold""#;
    text(&mut out, (WIDTH / 2.0, 26.0), title, &chart.title);
    for band in &chart.bands {
        if let Some((from, to)) = band_span(band, &x) {
            let color = format!(
                r#"stroke="{}" stroke-width="3" stroke-opacity="0.6""#,
                esc(&band.color)
            );
            line(&mut out, (from, HEADER - 6.0), (to, HEADER - 6.0), &color);
            let label = r##"class="band-label" text-anchor="middle" fill="#555""##;
            text(
                &mut out,
                ((from + to) / 2.0, HEADER - 12.0),
                label,
                &band.label,
            );
        }
    }
    for i in 0..chart.panels.len() {
        render_panel(&mut out, chart, &x, i, i + 1 == chart.panels.len());
    }
    let at = (LEFT + (WIDTH - LEFT - RIGHT) / 2.0, height - 8.0);
    text(
        &mut out,
        at,
        r#"text-anchor="middle" font-size="13""#,
        &chart.x_label,
    );
    out.push_str("</svg>\n");
    out
}

/// The band's pixel span, clamped to the plot; `None` when it lies outside.
fn band_span(band: &Band, x: &Scale) -> Option<(f64, f64)> {
    let from = x.map(band.from.max(x.lo), LEFT, WIDTH - RIGHT);
    let to = x.map(band.to.min(x.hi), LEFT, WIDTH - RIGHT);
    (from < to).then_some((from, to))
}

/// Panel `i`: title, band shading, grid, axes, lines (clipped to the plot) and legend. Only the `last`
/// panel labels the x ticks.
fn render_panel(out: &mut String, chart: &Chart, x: &Scale, i: usize, last: bool) {
    let panel = &chart.panels[i];
    let top = HEADER + i as f64 * PANEL_HEIGHT;
    let (plot_top, bottom, right) = (top + 30.0, top + PANEL_HEIGHT - 16.0, WIDTH - RIGHT);
    let data_max = (panel.series.iter().flat_map(|s| &s.points))
        .filter(|&&(px, py)| px >= x.lo && px <= x.hi && py.is_finite())
        .fold(f64::NEG_INFINITY, |max, &(_, py)| max.max(py));
    let y = match panel.y_max {
        Some(max) => Scale::nice(panel.y_min, max, false),
        None => Scale::nice(panel.y_min, data_max, true),
    };
    let sx = |v: f64| x.map(v, LEFT, right);
    let sy = |v: f64| y.map(v, bottom, plot_top);

    out.push_str("<g class=\"panel\">\n");
    let title = r#"font-size="14" font-weight="bold""#;
    text(out, (LEFT, top + 20.0), title, &panel.title);
    let mid = (plot_top + bottom) / 2.0;
    let y_label =
        format!(r#"transform="rotate(-90 18 {mid:.1})" text-anchor="middle" font-size="13""#);
    text(out, (18.0, mid), &y_label, &panel.y_label);
    let _ = writeln!(
        out,
        r#"<clipPath id="plot-{i}"><rect x="{LEFT}" y="{:.1}" width="{:.1}" height="{:.1}"/></clipPath>"#,
        plot_top - 2.0,
        right - LEFT,
        bottom - plot_top + 4.0
    );
    for band in &chart.bands {
        if let Some((from, to)) = band_span(band, x) {
            let _ = writeln!(
                out,
                r#"<rect class="band" x="{from:.1}" y="{plot_top:.1}" width="{:.1}" height="{:.1}" fill="{}" fill-opacity="0.15"/>"#,
                to - from,
                bottom - plot_top,
                esc(&band.color)
            );
        }
    }
    let grid = r##"stroke="#e4e4e4""##;
    for t in y.ticks() {
        line(out, (LEFT, sy(t)), (right, sy(t)), grid);
        let label = format!("{}{}", y.label(t), panel.y_unit);
        text(
            out,
            (LEFT - 8.0, sy(t) + 4.0),
            r##"text-anchor="end" fill="#444""##,
            &label,
        );
    }
    for t in x.ticks() {
        line(out, (sx(t), plot_top), (sx(t), bottom + 4.0), grid);
        if last {
            let attrs = r##"text-anchor="middle" fill="#444""##;
            text(out, (sx(t), bottom + 18.0), attrs, &x.label(t));
        }
    }
    let _ = writeln!(
        out,
        r##"<path d="M{LEFT} {plot_top:.1}V{bottom:.1}H{right}" fill="none" stroke="#888"/>"##
    );
    if data_max == f64::NEG_INFINITY {
        text(
            out,
            ((LEFT + right) / 2.0, mid),
            r##"text-anchor="middle" fill="#999""##,
            "no data",
        );
    }

    let _ = writeln!(out, r#"<g clip-path="url(#plot-{i})">"#);
    for series in &panel.series {
        let color = esc(&series.color);
        for segment in segments(&series.points) {
            let _ = match segment[..] {
                [(px, py)] => writeln!(
                    out,
                    r#"<circle class="series" cx="{:.1}" cy="{:.1}" r="2.5" fill="{color}"/>"#,
                    sx(px),
                    sy(py)
                ),
                _ => {
                    let pixels: Vec<String> = segment
                        .iter()
                        .map(|&(px, py)| format!("{:.1},{:.1}", sx(px), sy(py)))
                        .collect();
                    writeln!(
                        out,
                        r#"<polyline class="series" points="{}" fill="none" stroke="{color}" stroke-width="2" stroke-linejoin="round"{}/>"#,
                        pixels.join(" "),
                        dash(series.dashed)
                    )
                }
            };
        }
    }
    out.push_str("</g>\n<g class=\"legend\">\n");
    for (j, series) in panel.series.iter().enumerate() {
        let (lx, ly) = (right + 16.0, plot_top + 10.0 + j as f64 * 20.0);
        let stroke = format!(
            r#"stroke="{}" stroke-width="2"{}"#,
            esc(&series.color),
            dash(series.dashed)
        );
        line(out, (lx, ly), (lx + 26.0, ly), &stroke);
        text(out, (lx + 32.0, ly + 4.0), "", &series.name);
    }
    out.push_str("</g>\n</g>\n");
}

/// The points sorted by x, split into runs of finite values; points with a non-finite x are dropped.
fn segments(points: &[(f64, f64)]) -> Vec<Vec<(f64, f64)>> {
    let mut sorted: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.0.is_finite()).collect();
    sorted.sort_by(|a, b| a.0.total_cmp(&b.0));
    sorted
        .split(|p| !p.1.is_finite())
        .filter(|run| !run.is_empty())
        .map(<[_]>::to_vec)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks what this writer can get wrong: balanced tags under one root, quoted attributes, and no
    /// `<` or `&` that is not markup or an entity.
    fn well_formed(svg: &str) -> Result<(), String> {
        let body = svg
            .strip_prefix(r#"<?xml version="1.0" encoding="UTF-8"?>"#)
            .ok_or("no XML declaration")?;
        let (mut stack, mut roots, mut rest) = (Vec::<&str>::new(), 0, body);
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open])?;
            let close = rest[open..].find('>').ok_or("unclosed tag")? + open;
            let tag = &rest[open + 1..close];
            if tag.contains('<') || tag.matches('"').count() % 2 == 1 {
                return Err(format!("bad tag <{tag}>"));
            }
            check_text(tag)?;
            let name = tag
                .trim_start_matches('/')
                .split([' ', '\n', '/'])
                .next()
                .unwrap_or("");
            if tag.starts_with('/') {
                if stack.pop() != Some(name) {
                    return Err(format!("unbalanced </{name}>"));
                }
            } else {
                if stack.is_empty() {
                    roots += 1;
                }
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            rest = &rest[close + 1..];
        }
        check_text(rest)?;
        match (stack.is_empty(), roots) {
            (true, 1) => Ok(()),
            _ => Err(format!("open: {stack:?}, roots: {roots}")),
        }
    }

    fn check_text(text: &str) -> Result<(), String> {
        for (i, _) in text.match_indices('&') {
            let entity = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"];
            if !entity.iter().any(|e| text[i..].starts_with(e)) {
                return Err(format!("bare & in {text:?}"));
            }
        }
        Ok(())
    }

    fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            color: "#1f77b4".into(),
            points,
            dashed: false,
        }
    }

    fn panel(title: &str, series: Vec<Series>) -> Panel {
        Panel {
            title: title.into(),
            y_label: "availability %".into(),
            y_min: 0.0,
            y_max: None,
            y_unit: "%".into(),
            series,
        }
    }

    fn chart(panels: Vec<Panel>) -> Chart {
        Chart {
            title: "partition".into(),
            x_label: "seconds since start".into(),
            x_min: 0.0,
            x_max: 40.0,
            bands: vec![Band {
                from: 10.0,
                to: 30.0,
                label: "partition".into(),
                color: "#d62728".into(),
            }],
            panels,
        }
    }

    #[test]
    fn nice_ticks() {
        assert_eq!(
            Scale::nice(0.0, 100.0, false).ticks(),
            [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        );
        let small = Scale::nice(0.0, 0.37, false);
        assert!([0.05, 0.1].contains(&small.step), "{small:?}");
        assert_eq!(small.label(0.15000000000000002), "0.15");
        let rounded = Scale::nice(0.0, 37.0, true);
        assert_eq!((rounded.hi, rounded.step), (40.0, 10.0));
        for (lo, hi) in [
            (0.0, 1.0),
            (3.0, 1234.5),
            (-7.0, 7.0),
            (99.0, 100.0),
            (0.0, 1e-6),
        ] {
            let n = Scale::nice(lo, hi, true).ticks().len();
            assert!((4..=8).contains(&n), "{lo}..{hi}: {n} ticks");
        }
    }

    #[test]
    fn degenerate_ranges_do_not_panic() {
        for (lo, hi) in [
            (5.0, 5.0),
            (0.0, 0.0),
            (3.0, -1.0),
            (f64::NAN, 2.0),
            (0.0, f64::INFINITY),
        ] {
            let scale = Scale::nice(lo, hi, true);
            assert!(
                scale.hi > scale.lo && scale.step > 0.0,
                "{lo}..{hi}: {scale:?}"
            );
            assert!(scale.ticks().iter().all(|t| t.is_finite()));
        }
    }

    #[test]
    fn renders_well_formed_escaped_svg() {
        let mut c = chart(vec![panel(
            "a<b & \"c\" 'd'",
            vec![series("x>y", vec![(0.0, 1.0), (5.0, 2.0)])],
        )]);
        c.bands[0].label = "R&D".into();
        let svg = render(&c);
        well_formed(&svg).expect("well-formed");
        assert!(svg.contains("a&lt;b &amp; &quot;c&quot; &apos;d&apos;"));
        assert!(svg.contains("x&gt;y") && svg.contains("R&amp;D"));
        assert!(svg.contains(r#"xmlns="http://www.w3.org/2000/svg""#) && svg.contains("viewBox="));
    }

    #[test]
    fn bands_shade_every_panel_and_are_labelled_once() {
        let svg = render(&chart(vec![
            panel("a", vec![]),
            panel("b", vec![]),
            panel("c", vec![]),
        ]));
        assert_eq!(svg.matches(r#"class="band""#).count(), 3);
        assert_eq!(svg.matches(r#"class="band-label""#).count(), 1);
    }

    #[test]
    fn nan_splits_a_line_and_lone_points_are_dots() {
        let points = vec![
            (3.0, 4.0),
            (0.0, 1.0),
            (1.0, 2.0),
            (2.0, f64::NAN),
            (f64::NAN, 5.0),
            (4.0, 5.0),
            (6.0, f64::INFINITY),
            (7.0, 1.0),
        ];
        let svg = render(&chart(vec![panel("a", vec![series("s", points)])]));
        well_formed(&svg).expect("well-formed");
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 1);
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    #[test]
    fn legend_lists_every_series() {
        let mut dashed = series("quorum", vec![(0.0, 100.0)]);
        dashed.dashed = true;
        let svg = render(&chart(vec![panel(
            "a",
            vec![series("primary", vec![]), dashed],
        )]));
        let legend = svg.split(r#"<g class="legend">"#).nth(1).expect("a legend");
        let legend = &legend[..legend.find("</g>").expect("closed")];
        assert!(legend.contains(">primary</text>") && legend.contains(">quorum</text>"));
        assert_eq!(legend.matches("stroke-dasharray").count(), 1);
    }

    #[test]
    fn empty_charts_still_have_axes() {
        for c in [
            chart(vec![panel("empty", vec![series("s", vec![])])]),
            chart(vec![]),
        ] {
            let svg = render(&c);
            well_formed(&svg).expect("well-formed");
            assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
        }
        let svg = render(&chart(vec![panel("empty", vec![])]));
        assert!(svg.contains("no data") && svg.contains(r#"<path d="M"#));
    }
}
