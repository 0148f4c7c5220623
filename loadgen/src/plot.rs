//! PNG plots (plotters' bitmap backend with a font read from the system at run time, so no
//! font library is linked): latency CDFs and deliveries over time.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

/// TrueType fonts tried in order (Debian's fonts-dejavu-core provides the first).
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
];

const COLORS: &[RGBColor] = &[
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
    RGBColor(0, 0, 0),
    RGBColor(120, 120, 120),
];

/// Registers a font once; false when none is installed (plots are then skipped).
pub fn font_available() -> bool {
    static LOADED: OnceLock<bool> = OnceLock::new();
    *LOADED.get_or_init(|| {
        for path in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(path) {
                // Fonts live for the whole process; plotters requires 'static bytes.
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

pub type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// One line per server: (name, points of (latency ms, fraction)).
pub fn latency_cdf(path: &Path, title: &str, series: &[(String, Vec<(f64, f64)>)]) -> PlotResult {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let max_ms = points.clone().map(|p| p.0).fold(1.0_f64, f64::max) * 1.5;
    let min_ms = points
        .map(|p| p.0)
        .filter(|&ms| ms > 0.0)
        .fold(max_ms, f64::min)
        .max(0.001)
        / 1.5;
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d((min_ms..max_ms).log_scale(), 0.0..1.0)?;
    chart
        .configure_mesh()
        .x_desc("publish-to-receive latency (ms, log scale)")
        .y_desc("fraction of deliveries")
        .x_label_formatter(&|v| format_ms(*v))
        .draw()?;
    let lines = series
        .iter()
        .map(|(name, points)| (name, points.iter().map(|&(ms, q)| (ms.max(min_ms), q)).collect()));
    draw_lines(&mut chart, lines, SeriesLabelPosition::LowerRight)?;
    root.present()?;
    Ok(())
}

/// One line per server: (name, bucket width in ms, deliveries per second per bucket).
pub fn timeline(path: &Path, title: &str, series: &[(String, u64, Vec<f64>)]) -> PlotResult {
    let max_s = series
        .iter()
        .map(|(_, bucket_ms, values)| values.len() as f64 * *bucket_ms as f64 / 1000.0)
        .fold(1.0_f64, f64::max);
    let max_rate = series
        .iter()
        .flat_map(|(_, _, v)| v.iter().copied())
        .fold(1.0_f64, f64::max)
        * 1.1;
    let root = BitMapBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..max_s, 0.0..max_rate)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the first publish")
        .y_desc("deliveries per second")
        .y_label_formatter(&|v| format_count(*v))
        .draw()?;
    let lines = series.iter().map(|(name, bucket_ms, values)| {
        let step = *bucket_ms as f64 / 1000.0;
        (
            name,
            values.iter().enumerate().map(|(i, &v)| (i as f64 * step, v)).collect(),
        )
    });
    draw_lines(&mut chart, lines, SeriesLabelPosition::UpperRight)?;
    root.present()?;
    Ok(())
}

/// Draws one coloured, labelled line per series and the legend.
fn draw_lines<'a, X, Y>(
    chart: &mut ChartContext<'a, BitMapBackend<'a>, Cartesian2d<X, Y>>,
    lines: impl Iterator<Item = (&'a String, Vec<(f64, f64)>)>,
    legend_at: SeriesLabelPosition,
) -> PlotResult
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    for (index, (name, points)) in lines.enumerate() {
        let color = COLORS[index % COLORS.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(legend_at)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn format_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.3}s", ms / 1000.0)
    } else if ms >= 1.0 {
        format!("{ms:.0}ms")
    } else {
        format!("{:.0}µs", ms * 1000.0)
    }
}

fn format_count(value: f64) -> String {
    if value >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value >= 1e3 {
        format!("{:.0}k", value / 1e3)
    } else {
        format!("{value:.0}")
    }
}
