//! PNG plots of a comparison (plotters, bitmap backend). Text is drawn with DejaVu Sans embedded in the binary
//! (`fonts/DejaVuSans.ttf`, Bitstream Vera licence, see `fonts/DejaVuSans-LICENSE.txt`) through plotters'
//! `ab_glyph` feature, so plots render the same on machines without system fonts.
//!
//! - [`inter_arrival_cdf`]: empirical CDF of log10 inter-arrival (s) of the real set and each synthetic set.
//! - [`port_bars`]: share of flows on the real set's 10 most frequent (protocol, destination port) services,
//!   grouped bars per set.
//! - [`flows_per_second`]: flows per second against seconds since each set's first flow (averaged into at
//!   most 1500 points when the span is longer), on a log scale (empty stretches drawn at 0.001).

use super::temporal::per_second_counts;
use super::{MetricsError, inter_arrivals, log10_time};
use crate::record::{FlowRecord, proto};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Once;

static FONT: &[u8] = include_bytes!("fonts/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

fn register_font() {
    REGISTER.call_once(|| {
        // The bytes are a valid TrueType font checked in with the source: failure would be a build error.
        if plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_err() {
            tracing::error!("embedded DejaVu Sans failed to load; plot text will be missing");
        }
    });
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0, 0, 0),
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
];

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn perr(path: &Path) -> impl Fn(String) -> MetricsError + '_ {
    move |message| MetricsError::Plot {
        file: path.display().to_string(),
        message,
    }
}

/// A set to draw: its legend name and flows. The first set is the real one by convention (drawn in black).
pub type Series<'a> = (&'a str, &'a [FlowRecord]);

fn cdf_points(mut v: Vec<f64>) -> Vec<(f64, f64)> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let step = (n / 600).max(1);
    let mut pts: Vec<(f64, f64)> = (0..n)
        .step_by(step)
        .map(|i| (v[i], (i + 1) as f64 / n as f64))
        .collect();
    if let Some(&last) = v.last() {
        pts.push((last, 1.0));
    }
    pts
}

/// Empirical CDFs of log10 inter-arrival time (see the module docs).
pub fn inter_arrival_cdf(path: &Path, sets: &[Series]) -> Result<(), MetricsError> {
    register_font();
    let e = perr(path);
    let curves: Vec<(String, Vec<(f64, f64)>)> = sets
        .iter()
        .map(|(n, f)| {
            (
                n.to_string(),
                cdf_points(inter_arrivals(f).into_iter().map(log10_time).collect()),
            )
        })
        .collect();
    let xs = curves.iter().flat_map(|c| c.1.iter().map(|p| p.0));
    let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    let (lo, hi) = if lo.is_finite() {
        (lo.floor(), hi.ceil().max(lo.floor() + 1.0))
    } else {
        (-6.0, 0.0)
    };
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(format!("{x:?}")))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Inter-arrival time CDF", ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(lo..hi, 0f64..1f64)
        .map_err(|x| e(format!("{x:?}")))?;
    chart
        .configure_mesh()
        .x_desc("log10 inter-arrival (seconds)")
        .y_desc("fraction of flows")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|x| e(format!("{x:?}")))?;
    for (i, (name, pts)) in curves.into_iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|x| e(format!("{x:?}")))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(format!("{x:?}")))?;
    root.present().map_err(|x| e(format!("{x:?}")))
}

/// Grouped bars of the real set's top services (see the module docs).
pub fn port_bars(path: &Path, sets: &[Series]) -> Result<(), MetricsError> {
    register_font();
    let e = perr(path);
    let Some((_, real)) = sets.first() else {
        return Err(e("no set to draw".into()));
    };
    let count = |f: &[FlowRecord]| {
        let mut m: HashMap<(u8, u16), u64> = HashMap::new();
        for r in f {
            *m.entry((r.proto, r.dst_port)).or_default() += 1;
        }
        m
    };
    let real_counts = count(real);
    let mut top: Vec<((u8, u16), u64)> = real_counts.into_iter().collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(10);
    let labels: Vec<String> = top
        .iter()
        .map(|((p, port), _)| format!("{}/{}", proto::name(*p), port))
        .collect();
    let shares: Vec<Vec<f64>> = sets
        .iter()
        .map(|(_, f)| {
            let c = count(f);
            top.iter()
                .map(|(k, _)| 100.0 * *c.get(k).unwrap_or(&0) as f64 / f.len().max(1) as f64)
                .collect()
        })
        .collect();
    let ymax = shares.iter().flatten().fold(1.0f64, |a, &b| a.max(b)) * 1.1;
    let n = labels.len().max(1);
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(format!("{x:?}")))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Share of flows on the real set's top services",
            ("sans-serif", 24),
        )
        .margin(15)
        .x_label_area_size(60)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
        .map_err(|x| e(format!("{x:?}")))?;
    let lab = labels.clone();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n * 2 + 1)
        .x_label_formatter(&move |x| {
            let i = x.floor() as usize;
            if (x - i as f64 - 0.5).abs() < 0.01 {
                lab.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("% of the set's flows")
        .x_desc("protocol/destination port")
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|x| e(format!("{x:?}")))?;
    let w = 0.8 / sets.len() as f64;
    for (j, ((name, _), s)) in sets.iter().zip(&shares).enumerate() {
        let c = color(j);
        chart
            .draw_series(s.iter().enumerate().map(|(i, &v)| {
                let x0 = i as f64 + 0.1 + j as f64 * w;
                Rectangle::new([(x0, 0.0), (x0 + w * 0.95, v)], c.filled())
            }))
            .map_err(|x| e(format!("{x:?}")))?
            .label(name.to_string())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(format!("{x:?}")))?;
    root.present().map_err(|x| e(format!("{x:?}")))
}

/// Flows-per-second series (see the module docs).
pub fn flows_per_second(path: &Path, sets: &[Series]) -> Result<(), MetricsError> {
    register_font();
    let e = perr(path);
    const POINTS: usize = 1500;
    const Y_FLOOR: f64 = 1e-3;
    let series: Vec<(String, Vec<(f64, f64)>)> = sets
        .iter()
        .map(|(name, f)| {
            let x = per_second_counts(f);
            let b = x.len().div_ceil(POINTS).max(1);
            let pts = x
                .chunks(b)
                .enumerate()
                .map(|(i, c)| ((i * b) as f64, c.iter().sum::<f64>() / c.len() as f64))
                .collect();
            (name.to_string(), pts)
        })
        .collect();
    let xmax = series
        .iter()
        .flat_map(|s| s.1.last().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(1.0f64, f64::max)
        * 1.1;
    let unit = if sets
        .iter()
        .any(|(_, f)| per_second_counts(f).len() > POINTS)
    {
        " (mean per bucket of seconds)"
    } else {
        ""
    };
    let root = BitMapBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(format!("{x:?}")))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("Flows per second{unit}"), ("sans-serif", 24))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..xmax, (Y_FLOOR..ymax).log_scale())
        .map_err(|x| e(format!("{x:?}")))?;
    chart
        .configure_mesh()
        .x_desc("seconds since the set's first flow")
        .y_desc("flows per second (log; 0 drawn at 0.001)")
        .label_style(("sans-serif", 15))
        .draw()
        .map_err(|x| e(format!("{x:?}")))?;
    for (i, (name, pts)) in series.into_iter().enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                pts.into_iter().map(|(x, y)| (x, y.max(Y_FLOOR))),
                c.stroke_width(1),
            ))
            .map_err(|x| e(format!("{x:?}")))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font(("sans-serif", 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(format!("{x:?}")))?;
    root.present().map_err(|x| e(format!("{x:?}")))
}

/// Writes the three plots into `dir` and returns their file names.
pub fn write_all(dir: &Path, sets: &[Series]) -> Result<Vec<String>, MetricsError> {
    let names = [
        "inter_arrival_cdf.png",
        "port_bars.png",
        "flows_per_second.png",
    ];
    inter_arrival_cdf(&dir.join(names[0]), sets)?;
    port_bars(&dir.join(names[1]), sets)?;
    flows_per_second(&dir.join(names[2]), sets)?;
    Ok(names.iter().map(|s| s.to_string()).collect())
}
