//! The report in `--out DIR`: `history.jsonl`, `results.json`, `latency.svg` (every operation
//! as a point over time, coloured by outcome, fault periods shaded), `throughput.svg`
//! (successful operations per second), the checker's `timeline.html` when a check failed, the
//! node logs, and `index.html` linking them all. Everything opens from disk with no network.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use super::HarnessError;
use super::nemesis::Applied;
use crate::history::{Event, EventType};

fn io(e: impl std::fmt::Display) -> HarnessError {
    HarnessError::Report(e.to_string())
}

/// (invoke time, completion time, outcome) of every completed operation.
fn spans(events: &[Event]) -> Vec<(u64, u64, EventType)> {
    let mut open = std::collections::HashMap::new();
    let mut out = Vec::new();
    for e in events {
        if e.kind == EventType::Invoke {
            open.insert(e.process, e.time);
        } else if let Some(t0) = open.remove(&e.process) {
            out.push((t0, e.time, e.kind));
        }
    }
    out
}

fn shade<DB: DrawingBackend>(
    chart: &mut ChartContext<
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    faults: &[Applied],
    end_s: f64,
    y: (f64, f64),
) -> Result<(), HarnessError> {
    chart
        .draw_series(faults.iter().map(|f| {
            let s = f.start_ns as f64 / 1e9;
            let e = f.end_ns.map(|t| t as f64 / 1e9).unwrap_or(end_s);
            let colour = match f.kind.name() {
                "kill" => RGBColor(255, 205, 205),
                "pause" => RGBColor(255, 235, 190),
                "partition" => RGBColor(210, 225, 255),
                "power" => RGBColor(200, 200, 200),
                "disk-full" => RGBColor(205, 240, 205),
                _ => RGBColor(225, 210, 255),
            };
            Rectangle::new([(s, y.0), (e, y.1)], colour.filled())
        }))
        .map_err(io)?;
    Ok(())
}

/// Latency of every operation over time, log scale, faults shaded.
pub fn latency_plot(
    path: &Path,
    events: &[Event],
    faults: &[Applied],
    end_ns: u64,
) -> Result<(), HarnessError> {
    let end_s = (end_ns as f64 / 1e9).max(1.0);
    let spans = spans(events);
    let max_ms = spans
        .iter()
        .map(|(a, b, _)| (b - a) as f64 / 1e6)
        .fold(1.0, f64::max)
        * 1.5;
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(io)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Operation latency (shaded: faults; red kill, orange pause, blue partition, violet one-way, grey power, green disk full)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end_s, 0.1f64..max_ms)
        .map_err(io)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("latency (ms)")
        .draw()
        .map_err(io)?;
    shade(&mut chart, faults, end_s, (0.1, max_ms))?;
    // Failures first so successful operations draw on top of them.
    for (kind, colour, label) in [
        (EventType::Fail, RGBColor(207, 34, 46), "fail"),
        (EventType::Ok, RGBColor(26, 127, 55), "ok"),
        (EventType::Info, RGBColor(191, 135, 0), "info (unknown)"),
    ] {
        chart
            .draw_series(spans.iter().filter(|s| s.2 == kind).map(|(a, b, _)| {
                Circle::new(
                    (*b as f64 / 1e9, ((b - a) as f64 / 1e6).max(0.1)),
                    2,
                    colour.filled(),
                )
            }))
            .map_err(io)?
            .label(label)
            .legend(move |(x, y)| Circle::new((x, y), 4, colour.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(io)?;
    root.present().map_err(io)?;
    Ok(())
}

/// Successful operations per second, faults shaded.
pub fn throughput_plot(
    path: &Path,
    events: &[Event],
    faults: &[Applied],
    end_ns: u64,
) -> Result<(), HarnessError> {
    let end_s = (end_ns as f64 / 1e9).max(1.0);
    let buckets = end_s.ceil() as usize + 1;
    let mut per_s = vec![0u64; buckets];
    for e in events.iter().filter(|e| e.kind == EventType::Ok) {
        let b = (e.time / 1_000_000_000) as usize;
        if b < buckets {
            per_s[b] += 1;
        }
    }
    let max = (*per_s.iter().max().unwrap_or(&1)).max(1) as f64 * 1.2;
    let root = SVGBackend::new(path, (1200, 400)).into_drawing_area();
    root.fill(&WHITE).map_err(io)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Throughput: successful operations per second (shaded: faults)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..end_s, 0f64..max)
        .map_err(io)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("ok operations / s")
        .draw()
        .map_err(io)?;
    shade(&mut chart, faults, end_s, (0.0, max))?;
    chart
        .draw_series(LineSeries::new(
            per_s
                .iter()
                .enumerate()
                .map(|(i, n)| (i as f64 + 0.5, *n as f64)),
            RGBColor(9, 105, 218).stroke_width(2),
        ))
        .map_err(io)?;
    root.present().map_err(io)?;
    Ok(())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Writes `index.html`.
pub fn index(
    out: &Path,
    results: &serde_json::Value,
    faults: &[Applied],
    nodes: usize,
    has_timeline: bool,
    repeat: &str,
) -> Result<(), HarnessError> {
    let valid = &results["valid"];
    let (word, colour) = match valid {
        serde_json::Value::Bool(true) => ("VALID", "#1a7f37"),
        serde_json::Value::Bool(false) => ("INVALID", "#cf222e"),
        _ => ("UNKNOWN", "#9a6700"),
    };
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>RingKV fault test: {word}</title>
<style>body{{font:14px system-ui,sans-serif;margin:20px;color:#1f2328;max-width:1260px}}
h1{{color:{colour}}} table{{border-collapse:collapse}} td,th{{border:1px solid #d0d7de;padding:3px 8px;text-align:left}}
code,pre{{background:#f6f8fa;padding:2px 4px}} img{{max-width:100%;border:1px solid #d0d7de}}</style></head><body>
<h1 id="verdict">{word}</h1>
<p>Repeat this run: <code>{}</code></p>
"#,
        esc(repeat)
    );
    let _ = write!(
        h,
        "<h2>Checkers</h2><table><tr><th>checker</th><th>valid</th><th>details</th></tr>"
    );
    if let Some(checks) = results["checkers"].as_object() {
        for (name, c) in checks {
            let detail = c
                .get("reason")
                .and_then(|r| r.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| c.to_string());
            let _ = write!(
                h,
                "<tr><td>{name}</td><td>{}</td><td>{}</td></tr>",
                c["valid"],
                esc(&detail)
            );
        }
    }
    h.push_str("</table>");
    if has_timeline {
        h.push_str("<p><b><a href=\"timeline.html\">Timeline of the failing operations</a></b> (checker's view)</p>");
    }
    let _ = write!(
        h,
        "<h2>Operations</h2><pre>{}</pre>",
        esc(&serde_json::to_string_pretty(&results["stats"]).unwrap_or_default())
    );
    let _ = write!(
        h,
        "<h2>Availability</h2><pre>{}</pre>",
        esc(&serde_json::to_string_pretty(&results["availability"]).unwrap_or_default())
    );
    h.push_str("<h2>Latency</h2><img src=\"latency.svg\" alt=\"latency plot\"><h2>Throughput</h2><img src=\"throughput.svg\" alt=\"throughput plot\">");
    h.push_str("<h2>Faults applied</h2><table><tr><th>kind</th><th>what</th><th>from (s)</th><th>to (s)</th></tr>");
    for f in faults {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{}</td></tr>",
            f.kind.name(),
            esc(&f.detail),
            f.start_ns as f64 / 1e9,
            f.end_ns
                .map(|e| format!("{:.2}", e as f64 / 1e9))
                .unwrap_or_else(|| "end".into())
        );
    }
    h.push_str("</table><h2>Files</h2><ul><li><a href=\"history.jsonl\">history.jsonl</a></li><li><a href=\"results.json\">results.json</a></li>");
    for id in 1..=nodes {
        let _ = write!(h, "<li><a href=\"node-{id}.log\">node-{id}.log</a></li>");
    }
    h.push_str("</ul></body></html>\n");
    std::fs::write(out.join("index.html"), h).map_err(io)
}
