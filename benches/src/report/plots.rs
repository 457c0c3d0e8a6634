//! The SVG plots, drawn with plotters.
//!
//! plotters is built without its font and bitmap features: the SVG names a
//! font family and whatever opens the file draws the text, so the report
//! needs no system fonts to run in CI. Colors are the Okabe–Ito palette,
//! which stays distinct for the common forms of color blindness, and each
//! model keeps its color across the three plots.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Result, bail};
use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::coord::combinators::WithKeyPoints;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::criterion::{BenchRow, common_pages};
use super::figures::{
    MODEL_ORDER, batch_bound, little_bound, model_rank, num, short, tighter, trim,
};
use super::measurements::{Share, Table};

const SIZE: (u32, u32) = (960, 600);
const FONT: &str = "sans-serif";

/// Okabe–Ito, one per model in the README's order, then spares.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),   // blue: sequential
    RGBColor(230, 159, 0),   // orange: threads
    RGBColor(0, 158, 115),   // green: rayon
    RGBColor(213, 94, 0),    // vermillion: tokio
    RGBColor(204, 121, 167), // reddish purple: async-std
    RGBColor(86, 180, 233),  // sky blue: smol
    RGBColor(120, 94, 240),  // violet: others
    RGBColor(100, 100, 100), // grey: others
];

/// A model's color; a name that contains a model's name (`fetchlab-tokio`)
/// gets that model's color, others share the spares.
pub fn color(name: &str) -> RGBColor {
    let rank = model_rank(name).0;
    let rank = if rank < MODEL_ORDER.len() {
        rank
    } else {
        MODEL_ORDER
            .iter()
            .position(|m| name.contains(m))
            .unwrap_or_else(|| MODEL_ORDER.len() + name.len() % 2)
    };
    PALETTE[rank]
}

/// A range that shows every value on a log axis with some room around it.
fn log_range(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values
        .into_iter()
        .filter(|v| v.is_finite() && *v > 0.0)
        .fold(None, |acc: Option<(f64, f64)>, v| {
            Some(acc.map_or((v, v), |(lo, hi)| (lo.min(v), hi.max(v))))
        })?;
    Some((lo / 1.5, hi * 1.5))
}

/// Tick marks for a log axis: the measured values themselves when there
/// are few (a reader wants to see C=64, not 50 and 100), else 1-2-5 steps.
fn log_ticks(values: &[f64], lo: f64, hi: f64) -> Vec<f64> {
    let mut distinct: Vec<f64> = values.to_vec();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    if !distinct.is_empty() && distinct.len() <= 10 {
        return distinct;
    }
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for step in [1.0, 2.0, 5.0] {
            let t = decade * step;
            if t >= lo && t <= hi {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// A log axis from `lo` to `hi` ticked at [`log_ticks`] of `values`.
fn log_axis(values: &[f64], lo: f64, hi: f64) -> WithKeyPoints<LogCoord<f64>> {
    (lo..hi)
        .log_scale()
        .with_key_points(log_ticks(values, lo, hi))
}

/// Points spread evenly on a log axis between `lo` and `hi`.
fn geometric(lo: f64, hi: f64, n: usize) -> impl Iterator<Item = f64> + Clone {
    (0..=n).map(move |i| lo * (hi / lo).powf(i as f64 / n as f64))
}

/// ` (a, b)` to follow a title, or nothing when there are no parts.
fn in_brackets(parts: &[String]) -> String {
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// A white canvas that is written to `path` when presented.
fn canvas(path: &Path, size: (u32, u32)) -> Result<DrawingArea<SVGBackend<'_>, Shift>> {
    let root = SVGBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE)?;
    Ok(root)
}

/// A chart with the title on top and room for the axes' labels.
fn chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: String,
    y_label_width: u32,
) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(root);
    builder
        .caption(title, (FONT, 22))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(y_label_width);
    builder
}

/// What every plot's mesh shares: the axis titles' font, faint major
/// lines, no minor ones.
fn mesh<'m, 'a, 'b, X: Ranged, Y: Ranged, DB: DrawingBackend>(
    style: &'m mut MeshStyle<'a, 'b, X, Y, DB>,
) -> &'m mut MeshStyle<'a, 'b, X, Y, DB> {
    style
        .axis_desc_style((FONT, 17))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
}

/// The legend of the series that have a label, top left.
fn legend<'a, 'b: 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
) -> Result<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 15))
        .draw()?;
    Ok(())
}

/// A model's points, joined by a line in its color and named in the legend.
fn model_line<'a, 'b: 'a, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, CT>,
    model: &str,
    points: &[(f64, f64)],
) -> Result<()> {
    let c = color(model);
    chart
        .draw_series(LineSeries::new(points.iter().copied(), c.stroke_width(3)))?
        .label(model)
        .legend(move |(x, y)| {
            EmptyElement::at((x, y))
                + PathElement::new([(0, 0), (24, 0)], c.stroke_width(3))
                + Circle::new((12, 0), 4, c.filled())
        });
    chart.draw_series(points.iter().map(|p| Circle::new(*p, 5, c.filled())))?;
    Ok(())
}

/// A dashed line's mark in a legend.
fn dashes<'a, DB: DrawingBackend + 'a>(
    at: (i32, i32),
    style: ShapeStyle,
) -> impl IntoDynElement<'a, DB, (i32, i32)> {
    EmptyElement::at(at)
        + PathElement::new([(0, 0), (7, 0)], style)
        + PathElement::new([(11, 0), (18, 0)], style)
        + PathElement::new([(22, 0), (26, 0)], style)
}

/// (a) pages/s against concurrency per model, from a criterion group whose
/// parameter is the concurrency, with the bound Little's law sets: at most
/// C requests in flight, each taking the latency, is C ÷ latency pages/s.
/// When every run fetched the same number of pages, the batch's own bound
/// (⌈pages ÷ C⌉ rounds of one latency each) is drawn too: a run of 50 pages
/// cannot beat one round however high C goes.
pub fn latency_bound(path: &Path, group: &str, rows: &[BenchRow], latency_s: f64) -> Result<()> {
    let rows: Vec<&BenchRow> = rows.iter().filter(|r| r.group == group).collect();
    // Per model (in the README's order): (C, pages/s, low, high).
    type Points = Vec<(f64, f64, f64, f64)>;
    let mut series: BTreeMap<(usize, String), Points> = BTreeMap::new();
    for r in &rows {
        if let (Some(c), Some((rate, low, high))) = (r.parameter_value(), r.pages_per_s()) {
            series
                .entry(model_rank(&r.model))
                .or_default()
                .push((c, rate, low, high));
        }
    }
    if series.is_empty() {
        bail!("group {group} has no numeric parameter with a pages throughput");
    }
    let points = || series.values().flatten();
    let cs: Vec<f64> = points().map(|p| p.0).collect();
    let Some((x0, x1)) = log_range(cs.iter().copied()) else {
        bail!("group {group} has no positive concurrency");
    };
    let little = |c: f64| little_bound(c, latency_s);
    let batch = common_pages(rows.iter().copied()).map(|n| n as f64);
    // When the pages per run vary with C, the bound of each measured run.
    let mut run_bounds: Vec<(f64, f64)> = Vec::new();
    if batch.is_none() {
        run_bounds = rows
            .iter()
            .filter_map(|r| {
                let c = r.parameter_value().filter(|c| *c >= 1.0)?;
                Some((c, batch_bound(r.pages? as f64, c, latency_s)))
            })
            .filter(|(c, b)| tighter(*b, little(*c)))
            .collect();
        run_bounds.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.total_cmp(&y.1)));
        run_bounds.dedup();
    }
    let Some((y0, y1)) = log_range(
        points()
            .flat_map(|p| [p.1, p.2, p.3])
            .chain([little(x0), little(x1)])
            .chain(run_bounds.iter().map(|b| b.1)),
    ) else {
        bail!("group {group} has no positive pages/s");
    };

    let root = canvas(path, SIZE)?;
    let latency_ms = short(latency_s * 1e3);
    let mut chart = chart(
        &root,
        format!("Latency-bound: pages/s against concurrency ({group}, {latency_ms} ms per page)"),
        80,
    )
    .build_cartesian_2d(log_axis(&cs, x0, x1), log_axis(&[], y0, y1))?;
    mesh(&mut chart.configure_mesh())
        .x_desc("concurrency C (requests in flight, log scale)")
        .y_desc("pages per second (log scale)")
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .label_style((FONT, 14))
        .draw()?;

    chart
        .draw_series(DashedLineSeries::new(
            geometric(x0, x1, 60).map(|c| (c, little(c))),
            8,
            5,
            BLACK.stroke_width(2),
        ))?
        .label(format!("Little's law: C ÷ {latency_ms} ms"))
        .legend(|(x, y)| dashes((x, y), BLACK.stroke_width(2)));
    if let Some(n) = batch {
        // The bound is a staircase in C; integer points draw it exactly
        // when there are few of them.
        let cs: Vec<f64> = if x1 - x0 < 2000.0 {
            (x0.ceil() as u64..=x1.floor() as u64)
                .map(|c| c as f64)
                .collect()
        } else {
            geometric(x0, x1, 400).collect()
        };
        chart
            .draw_series(DashedLineSeries::new(
                cs.into_iter().map(|c| (c, batch_bound(n, c, latency_s))),
                3,
                4,
                BLACK.mix(0.5).stroke_width(2),
            ))?
            .label(format!(
                "{n} pages per run: {n} ÷ (⌈{n} ÷ C⌉ × {latency_ms} ms)"
            ))
            .legend(|(x, y)| dashes((x, y), BLACK.mix(0.5).stroke_width(2)));
    }
    if !run_bounds.is_empty() {
        let grey = BLACK.mix(0.5).stroke_width(2);
        chart
            .draw_series(run_bounds.iter().map(|p| Cross::new(*p, 7, grey)))?
            .label(format!(
                "one run's bound: pages ÷ (⌈pages ÷ C⌉ × {latency_ms} ms)"
            ))
            .legend(move |(x, y)| Cross::new((x + 12, y), 5, grey));
    }

    for ((_, model), pts) in &mut series {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let line: Vec<(f64, f64)> = pts.iter().map(|p| (p.0, p.1)).collect();
        model_line(&mut chart, model, &line)?;
        let c = color(model).stroke_width(2);
        chart.draw_series(
            pts.iter()
                .map(|p| ErrorBar::new_vertical(p.0, p.2, p.1, p.3, c, 10)),
        )?;
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(())
}

/// (b) peak RSS against concurrency per model, from footprint.csv. When the
/// file holds several latencies, the one with the most rows is drawn and
/// named in the title, so that no line mixes two. The pages may grow with
/// the concurrency (scripts/footprint runs 10 × C pages); the title says so.
/// Returns false, drawing nothing, when there are no rows to draw.
pub fn footprint_rss(path: &Path, table: &Table) -> Result<bool> {
    struct Row<'a> {
        model: &'a str,
        c: f64,
        mib: f64,
        pages: Option<f64>,
        latency: Option<&'a str>,
    }
    let rows: Vec<Row> = table
        .records()
        .filter_map(|r| {
            Some(Row {
                model: r.text("model")?,
                c: r.num("concurrency").filter(|c| *c > 0.0)?,
                mib: r.num("peak_rss_kb")? / 1024.0,
                pages: r.num("pages"),
                latency: r.text("latency_ms"),
            })
        })
        .collect();
    let mut latencies: BTreeMap<Option<&str>, usize> = BTreeMap::new();
    for r in &rows {
        *latencies.entry(r.latency).or_default() += 1;
    }
    let Some((&latency, _)) = latencies.iter().max_by_key(|(_, n)| **n) else {
        return Ok(false);
    };
    let rows: Vec<&Row> = rows.iter().filter(|r| r.latency == latency).collect();
    let mut series: BTreeMap<(usize, String), Vec<(f64, f64)>> = BTreeMap::new();
    for r in &rows {
        series
            .entry(model_rank(r.model))
            .or_default()
            .push((r.c, r.mib));
    }
    let points = || series.values().flatten();
    let cs: Vec<f64> = points().map(|p| p.0).collect();
    let Some((x0, x1)) = log_range(cs.iter().copied()) else {
        return Ok(false);
    };
    let y1 = points().map(|p| p.1).fold(0.0, f64::max) * 1.15;
    let y1 = if y1 > 0.0 { y1 } else { 1.0 };
    // "1000 pages" when every run had the same list, "10 × C pages" when
    // the list grew with the concurrency.
    let pages: Vec<f64> = rows.iter().filter_map(|r| r.pages).collect();
    let ratios: Vec<f64> = rows.iter().filter_map(|r| Some(r.pages? / r.c)).collect();
    let all_equal = |v: &[f64]| !v.is_empty() && v.iter().all(|x| (x - v[0]).abs() < 1e-9);
    let pages = if pages.len() == rows.len() && all_equal(&pages) {
        Some(format!("{} pages", short(pages[0])))
    } else if ratios.len() == rows.len() && all_equal(&ratios) {
        Some(format!("{} × C pages", short(ratios[0])))
    } else {
        None
    };
    let workload: Vec<String> = [pages, latency.map(|l| format!("{l} ms latency"))]
        .into_iter()
        .flatten()
        .collect();

    let root = canvas(path, SIZE)?;
    let mut chart = chart(
        &root,
        format!(
            "Memory: peak RSS against concurrency{}",
            in_brackets(&workload)
        ),
        80,
    )
    .build_cartesian_2d(log_axis(&cs, x0, x1), 0.0..y1)?;
    mesh(&mut chart.configure_mesh())
        .x_desc("concurrency C (requests in flight, log scale)")
        .y_desc("peak resident set size (MiB)")
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .label_style((FONT, 14))
        .draw()?;
    for ((_, model), pts) in &mut series {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        model_line(&mut chart, model, pts)?;
    }
    legend(&mut chart)?;
    root.present()?;
    Ok(true)
}

/// (c) each model's throughput as a share of the ceiling (what the server
/// and client can do at all on this machine), one horizontal bar per model
/// row of ceiling.csv. Returns false when no row has a share.
pub fn ceiling_share(path: &Path, shares: &[Share]) -> Result<bool> {
    let bars: Vec<&Share> = shares.iter().filter(|s| s.share.is_some()).collect();
    if bars.is_empty() {
        return Ok(false);
    }
    // The workload goes in the title where all bars share it, else in each
    // bar's label: `workload(s, true)` is the shared part, `false` the rest.
    let all_same = |f: fn(&Share) -> Option<f64>| bars.iter().all(|b| f(b) == f(bars[0]));
    let same_c = all_same(|s| s.concurrency);
    let same_l = all_same(|s| s.latency_ms);
    let workload = |s: &Share, shared: bool| {
        let mut parts = Vec::new();
        if let (true, Some(c)) = (same_c == shared, s.concurrency) {
            parts.push(format!("C={}", short(c)));
        }
        if let (true, Some(l)) = (same_l == shared, s.latency_ms) {
            parts.push(format!(
                "{} ms{}",
                short(l),
                if shared { " latency" } else { "" }
            ));
        }
        parts
    };
    let labels: Vec<String> = bars
        .iter()
        .map(|s| format!("{}{}", s.name, in_brackets(&workload(s, false))))
        .collect();
    let n = bars.len() as i32;
    let max_share = bars.iter().filter_map(|s| s.share).fold(0.0, f64::max);
    let x1 = (max_share.max(1.0) * 100.0 * 1.15).ceil();
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u32;

    let height = (140 + 48 * n as u32).max(360);
    let root = canvas(path, (SIZE.0, height))?;
    let mut chart = chart(
        &root,
        format!(
            "Throughput as a share of the ceiling{}",
            in_brackets(&workload(bars[0], true))
        ),
        (longest * 9 + 20).clamp(90, 360),
    )
    .build_cartesian_2d(0.0..x1, (0..n).into_segmented())?;
    mesh(&mut chart.configure_mesh())
        .x_desc("share of the ceiling (%)")
        .y_desc("")
        .y_labels(bars.len())
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => usize::try_from(n - 1 - *i)
                .ok()
                .and_then(|k| labels.get(k).cloned())
                .unwrap_or_default(),
            SegmentValue::Last => String::new(),
        })
        .x_label_formatter(&|v| format!("{}%", short(*v)))
        .disable_y_mesh()
        .label_style((FONT, 15))
        .draw()?;

    let value_style =
        TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (k, s) in bars.iter().enumerate() {
        // The first row at the top; the top slot (index n) stays empty for
        // the ceiling's label.
        let i = n - 1 - k as i32;
        let pct = s.share.unwrap_or_default() * 100.0;
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (pct, SegmentValue::Exact(i + 1)),
            ],
            color(&s.name).filled(),
        );
        bar.set_margin(8, 8, 0, 0);
        chart.draw_series([bar])?;
        let value = format!("{}%", trim(pct, if pct < 10.0 { 1 } else { 0 }));
        // A value just short of 100% would be crossed by the ceiling's line:
        // it goes just past the line instead.
        let at = if (91.0..100.0).contains(&pct) {
            100.0
        } else {
            pct
        };
        chart.draw_series([EmptyElement::at((at, SegmentValue::CenterOf(i)))
            + Text::new(value, (6, 0), value_style.clone())])?;
    }
    chart.draw_series(DashedLineSeries::new(
        [
            (100.0, SegmentValue::Exact(0)),
            (100.0, SegmentValue::Exact(n)),
        ],
        8,
        5,
        BLACK.stroke_width(2),
    ))?;
    let ceiling = bars.iter().find_map(|s| s.ceiling_per_s);
    let note = match ceiling {
        Some(c) if bars.iter().all(|s| s.ceiling_per_s == Some(c)) => {
            format!("ceiling = 100% ({}/s)", num(c))
        }
        _ => "ceiling = 100%".to_string(),
    };
    chart.draw_series([Text::new(
        note,
        (100.0, SegmentValue::CenterOf(n)),
        TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Center, VPos::Center)),
    )])?;
    root.present()?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_the_measured_values_or_1_2_5() {
        assert_eq!(
            log_ticks(&[64.0, 1.0, 16.0, 1.0], 0.5, 100.0),
            [1.0, 16.0, 64.0]
        );
        assert_eq!(log_ticks(&[], 30.0, 600.0), [50.0, 100.0, 200.0, 500.0]);
    }

    #[test]
    fn models_keep_their_colors() {
        assert_eq!(color("tokio"), PALETTE[3]);
        assert_eq!(color("fetchlab-tokio"), PALETTE[3]);
        assert_ne!(color("sequential"), color("threads"));
    }
}
