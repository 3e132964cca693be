//! `time-to-ready.png`: seconds against N for the baseline, the ideal
//! operator, keymint's time to Ready and the restart.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::Result;
use crate::results::Run;

/// TrueType fonts tried for the labels (Debian's fonts-dejavu-core first).
const FONTS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

fn load_font() -> Result<()> {
    static LOADED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let loaded = LOADED.get_or_init(|| {
        FONTS.iter().any(|path| {
            std::fs::read(path).ok().is_some_and(|bytes| {
                // The font table wants 'static bytes; one font, once per process.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
            })
        })
    });
    if *loaded {
        Ok(())
    } else {
        Err(format!("no TrueType font found (tried {})", FONTS.join(", ")).into())
    }
}

/// A line: its legend, colour and (N, seconds) points.
type Series = (&'static str, RGBColor, Vec<(f64, f64)>);

pub fn time_to_ready(path: &Path, run: &Run) -> Result<PathBuf> {
    load_font()?;
    let mut rounds: Vec<_> = run.rounds.iter().collect();
    rounds.sort_by_key(|r| r.keys);
    let series: [Series; 4] = [
        (
            "bare client: create N Secrets (baseline)",
            RGBColor(120, 120, 120),
            rounds
                .iter()
                .map(|r| (r.keys as f64, r.baseline.seconds))
                .collect(),
        ),
        (
            "keymint: apply N APIKeys -> all Ready",
            RGBColor(31, 119, 180),
            rounds
                .iter()
                .map(|r| (r.keys as f64, r.ready.seconds))
                .collect(),
        ),
        (
            "bare client: keymint's writes for N keys (ideal operator)",
            RGBColor(214, 39, 40),
            rounds
                .iter()
                .map(|r| (r.keys as f64, r.ideal.seconds))
                .collect(),
        ),
        (
            "keymint: restart -> all N confirmed",
            RGBColor(44, 160, 44),
            rounds
                .iter()
                .map(|r| (r.keys as f64, r.restart.seconds))
                .collect(),
        ),
    ];
    let max_n = rounds.iter().map(|r| r.keys).max().unwrap_or(1) as f64;
    let max_y = series
        .iter()
        .flat_map(|(_, _, points)| points.iter().map(|(_, y)| *y))
        .filter(|y| y.is_finite())
        .fold(1.0_f64, f64::max);

    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = format!(
        "keymint vs the API server ({} CPUs, Kubernetes {})",
        run.machine.cpus, run.kubernetes_version
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..max_n * 1.05, 0.0..max_y * 1.15)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("N (keys)")
        .y_desc("seconds")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| {
            if max_y < 10.0 {
                format!("{y:.1}")
            } else {
                format!("{y:.0}")
            }
        })
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    for (label, color, points) in series {
        let mut points: Vec<(f64, f64)> =
            points.into_iter().filter(|(_, y)| y.is_finite()).collect();
        points.insert(0, (0.0, 0.0));
        let style = ShapeStyle::from(color).stroke_width(2);
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        chart
            .draw_series(
                points
                    .into_iter()
                    .skip(1)
                    .map(|p| Circle::new(p, 4, color.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())?;
    Ok(path.to_path_buf())
}
