//! A self-contained HTML timeline of a checked history: one row per process, one bar per
//! operation from invocation to completion (to the end for unknown outcomes), the anomaly's
//! operations highlighted, details on hover. No scripts or assets are fetched; it opens from
//! disk.
//!
//! Large histories are cut to what matters: the anomaly's key (when there is one), at most
//! [`OPS_SHOWN_MAX`] operations around the failing operation.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

use super::{Validity, Verdict};
use crate::history::{History, Operation};

/// Bars drawn at most.
pub const OPS_SHOWN_MAX: usize = 2_000;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn label(op: &Operation) -> String {
    match op.f.as_str() {
        "read" | "get" => format!("{} → {}", op.f, op.output),
        _ => format!("{} {}", op.f, op.input),
    }
}

/// Renders the page.
pub fn render(history: &History, verdict: &Verdict) -> String {
    let anomaly = verdict.anomaly.as_ref();
    let failing: Option<usize> = anomaly.and_then(|a| a.op.as_ref().map(|o| o.id));
    let window: HashSet<usize> = anomaly
        .map(|a| a.window.iter().map(|o| o.id).collect())
        .unwrap_or_default();
    let prefix: HashSet<usize> = anomaly
        .map(|a| a.prefix_tail.iter().map(|o| o.id).collect())
        .unwrap_or_default();

    let mut ops: Vec<&Operation> = match anomaly {
        Some(a) => history.ops.iter().filter(|o| o.key == a.key).collect(),
        None => history.ops.iter().collect(),
    };
    if ops.len() > OPS_SHOWN_MAX {
        let center = failing
            .and_then(|f| ops.iter().position(|o| o.id == f))
            .unwrap_or(0);
        let start = center
            .saturating_sub(OPS_SHOWN_MAX / 2)
            .min(ops.len() - OPS_SHOWN_MAX);
        ops = ops[start..start + OPS_SHOWN_MAX].to_vec();
    }
    let t0 = ops.iter().map(|o| o.call).min().unwrap_or(0);
    let t1 = ops
        .iter()
        .map(|o| o.ret.unwrap_or(o.call))
        .chain(ops.iter().map(|o| o.call))
        .max()
        .unwrap_or(1)
        .max(t0 + 1);
    let span = (t1 - t0) as f64 * 1.05;
    let pct = |t: u64| ((t.saturating_sub(t0)) as f64 / span * 100.0).clamp(0.0, 100.0);
    let mut rows: BTreeMap<u64, Vec<&Operation>> = BTreeMap::new();
    for op in &ops {
        rows.entry(op.process).or_default().push(op);
    }

    let (title, colour) = match verdict.valid {
        Validity::Valid => ("linearizable", "#1a7f37"),
        Validity::Invalid => ("NOT linearizable", "#cf222e"),
        Validity::Unknown => ("unknown", "#9a6700"),
    };
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html><head><meta charset="utf-8"><title>RingKV checker: {title}</title>
<style>
body{{font:13px system-ui,sans-serif;margin:16px;color:#1f2328}}
h1{{font-size:18px;color:{colour}}}
.legend span{{display:inline-block;padding:2px 8px;margin-right:8px;border-radius:3px;color:#fff}}
.tl{{position:relative;border-top:1px solid #d0d7de}}
.row{{position:relative;height:22px;border-bottom:1px solid #eaeef2}}
.pname{{position:absolute;left:0;width:90px;top:3px;color:#57606a}}
.lane{{position:absolute;left:100px;right:0;top:0;bottom:0}}
.op{{position:absolute;top:3px;height:16px;border-radius:3px;background:#8c959f;color:#fff;font-size:11px;
overflow:hidden;white-space:nowrap;min-width:3px;box-sizing:border-box;padding:0 3px}}
.op.info{{background:repeating-linear-gradient(45deg,#8c959f,#8c959f 4px,#afb8c1 4px,#afb8c1 8px)}}
.op.prefix{{background:#1a7f37}} .op.window{{background:#bf8700}} .op.failing{{background:#cf222e;outline:2px solid #82071e}}
pre{{background:#f6f8fa;padding:8px;overflow:auto}}
</style></head><body>
<h1>{title}</h1><p>{reason}</p>
<p class="legend"><span style="background:#cf222e">cannot be linearized</span><span style="background:#bf8700">concurrent window</span><span style="background:#1a7f37">end of longest linearizable prefix</span><span style="background:#8c959f">other (striped: unknown outcome)</span></p>
"#,
        reason = esc(&verdict.reason),
    );
    if let Some(a) = anomaly {
        let _ = write!(
            h,
            "<p>Key <b>{}</b>: longest linearizable prefix has {} operations and leaves the value <b>{}</b>.</p>",
            esc(&a.key),
            a.prefix_len,
            esc(&a.state_after_prefix)
        );
    }
    let _ = write!(
        h,
        "<p>{} operations shown; time runs left to right ({t0} … {t1}).</p><div class=\"tl\" id=\"timeline\">",
        ops.len()
    );
    for (process, ops) in &rows {
        let _ = write!(
            h,
            "<div class=\"row\"><div class=\"pname\">process {process}</div><div class=\"lane\">"
        );
        for op in ops {
            let left = pct(op.call);
            let right = op.ret.map(pct).unwrap_or(100.0);
            let mut class = String::from("op");
            if op.is_unknown() {
                class.push_str(" info");
            }
            if Some(op.id) == failing {
                class.push_str(" failing");
            } else if window.contains(&op.id) {
                class.push_str(" window");
            } else if prefix.contains(&op.id) {
                class.push_str(" prefix");
            }
            let tip = format!(
                "op {} · process {} · key {:?} · {} · input {} · output {} · {} · lines {}–{} · time {}–{}",
                op.id,
                op.process,
                op.key,
                op.f,
                op.input,
                op.output,
                if op.is_unknown() {
                    "unknown outcome"
                } else {
                    "ok"
                },
                op.call_line,
                op.ret_line
                    .map(|l| l.to_string())
                    .unwrap_or_else(|| "end".into()),
                op.call,
                op.ret.map(|t| t.to_string()).unwrap_or_else(|| "∞".into()),
            );
            let _ = write!(
                h,
                "<div class=\"{class}\" data-op=\"{}\" style=\"left:{left:.3}%;width:{:.3}%\" title=\"{}\">{}</div>",
                op.id,
                (right - left).max(0.2),
                esc(&tip),
                esc(&label(op))
            );
        }
        h.push_str("</div></div>");
    }
    h.push_str("</div>");
    if let Ok(json) = serde_json::to_string_pretty(verdict) {
        let _ = write!(h, "<h2>Verdict</h2><pre>{}</pre>", esc(&json));
    }
    h.push_str("</body></html>\n");
    h
}
