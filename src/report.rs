//! One self-contained HTML page that shows what a run folder holds: its config, its training
//! curve, its figures, its metrics (with their definitions beside them) and its sample files.
//!
//! Everything is inline (figures as base64 `data:image/png` URIs, the style in the page, no
//! scripts, no fonts), so the page can be mailed or archived alone and opened without a network.
//! A file the page cannot show (a PNG that is not one, JSON that does not parse) gets a line saying
//! so instead of breaking the page.

use crate::train::METRICS_LOG;
use anyhow::{bail, Context, Result};
use base64::Engine;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The report's file name inside the run folder when no other is given.
pub const REPORT: &str = "report.html";

/// Keys whose string values explain their neighbours: shown beside the numbers, not as rows.
const NOTE_KEYS: &[&str] = &["definition", "definitions", "criterion"];

/// The page's style: readable on screen and in print, no external fonts.
const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;\
max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.4}\
h1{margin-bottom:0.2em}h2{border-bottom:1px solid #ccc;margin-top:2em}\
.sub{color:#555;margin-top:0}pre{background:#f6f6f6;padding:0.8em;overflow-x:auto;font-size:0.9em}\
pre.config{column-width:16em;column-gap:2em}\
table{border-collapse:collapse;margin:0.5em 0 1.5em;font-size:0.9em}\
td,th{border:1px solid #ddd;padding:0.25em 0.6em;vertical-align:top;text-align:left}\
th{background:#f0f0f0}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}\
td.note{color:#555;font-size:0.85em;max-width:32em}figure{margin:1em 0}\
img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:0.9em}\
.warn{color:#a40}nav a{margin-right:1em}";

/// Writes the report of run folder `dir` to `out` (default `dir/report.html`), atomically, and
/// returns where it went.
pub fn write(dir: &Path, out: Option<&Path>) -> Result<PathBuf> {
    check_run(dir)?;
    let out = out.map_or_else(|| dir.join(REPORT), Path::to_path_buf);
    crate::io::check_parent(&out)?;
    let html = render(dir, &out)?;
    crate::io::write_atomic_bytes(&out, html.as_bytes())?;
    Ok(out)
}

/// The report of run folder `dir` as an HTML string; the file `skip` (the report itself) is left
/// out of the file list.
pub fn render(dir: &Path, skip: &Path) -> Result<String> {
    check_run(dir)?;
    let d = dir.display();
    let (config, log) = (dir.join("config.toml"), dir.join(METRICS_LOG));
    let files = list(dir, skip)?;
    let with_ext = |ext: &str| -> Vec<&PathBuf> {
        files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case(ext)))
            .collect()
    };

    let mut h = String::new();
    let title = format!("tweedie report: {d}");
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
    // writing to a String cannot fail: the results of write! below are ignored
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>tweedie report</h1>\n\
         <p class=\"sub\">run folder <code>{}</code> · written {} by tweedie {}</p>\n\
         <nav><a href=\"#config\">config</a><a href=\"#training\">training</a>\
         <a href=\"#figures\">figures</a><a href=\"#metrics\">metrics</a>\
         <a href=\"#samples\">samples</a><a href=\"#files\">files</a></nav>\n",
        escape(&title),
        escape(&d.to_string()),
        now,
        env!("CARGO_PKG_VERSION")
    );

    h.push_str("<h2 id=\"config\">Config</h2>\n");
    match std::fs::read_to_string(&config) {
        Ok(text) => {
            let _ = writeln!(h, "<pre class=\"config\">{}</pre>", escape(&text));
        }
        Err(e) => warn(&mut h, &format!("config.toml: cannot read ({e})")),
    }

    h.push_str("<h2 id=\"training\">Training</h2>\n");
    let drew_loss = training(&mut h, &log)?;

    h.push_str("<h2 id=\"figures\">Figures</h2>\n");
    let mut pngs = with_ext("png");
    // `tweedie demo` also writes the loss curve as loss.png: shown once, above
    if drew_loss {
        if let Some(i) = pngs.iter().position(|p| name(p) == "loss.png") {
            pngs.remove(i);
            h.push_str("<p>loss.png, the training loss again, is drawn above from the log.</p>\n");
        }
    }
    if pngs.is_empty() {
        h.push_str("<p>No PNG figures in the folder.</p>\n");
    }
    for p in pngs {
        match std::fs::read(p) {
            Ok(bytes) => figure(&mut h, &bytes, &name(p)),
            Err(e) => warn(&mut h, &format!("{}: cannot read ({e})", name(p))),
        }
    }

    h.push_str("<h2 id=\"metrics\">Metrics</h2>\n");
    let jsons = with_ext("json");
    if jsons.is_empty() {
        h.push_str("<p>No JSON metrics in the folder.</p>\n");
    }
    for p in jsons {
        let _ = writeln!(h, "<h3>{}</h3>", escape(&name(p)));
        let parsed = std::fs::read_to_string(p)
            .map_err(anyhow::Error::from)
            .and_then(|t| Ok(serde_json::from_str::<Value>(&t)?));
        match parsed {
            Ok(v) => metrics_table(&mut h, &v),
            Err(e) => warn(&mut h, &format!("cannot read as JSON: {e}")),
        }
    }

    h.push_str("<h2 id=\"samples\">Samples</h2>\n");
    samples_table(&mut h, &with_ext("npy"));

    h.push_str("<h2 id=\"files\">Files</h2>\n<table>\n<tr><th>file</th><th>bytes</th></tr>\n");
    for p in &files {
        let size = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td class=\"num\">{size}</td></tr>",
            escape(&name(p))
        );
    }
    h.push_str("</table>\n</body>\n</html>\n");
    Ok(h)
}

/// Checks that `dir` is a run folder: a folder with config.toml or the metrics log.
fn check_run(dir: &Path) -> Result<()> {
    let d = dir.display();
    if !dir.exists() {
        bail!("{d}: no such run folder");
    }
    if !dir.is_dir() {
        bail!("{d}: not a folder; give a run folder of `tweedie train` or `tweedie demo`");
    }
    if !dir.join("config.toml").is_file() && !dir.join(METRICS_LOG).is_file() {
        bail!("{d}: not a run folder (no config.toml nor {METRICS_LOG})");
    }
    Ok(())
}

/// Regular files of `dir` (not `skip`, not hidden, so not the atomic writers' temporary files),
/// sorted by name.
fn list(dir: &Path, skip: &Path) -> Result<Vec<PathBuf>> {
    let skip = std::fs::canonicalize(skip).ok();
    let mut files = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?;
    for e in entries {
        let p = e
            .with_context(|| format!("{}: cannot list", dir.display()))?
            .path();
        let hidden = p
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if p.is_file() && !hidden && std::fs::canonicalize(&p).ok() != skip {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// A file's name, for captions and headings.
fn name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number as a reader wants it: integers whole, else up to 5 significant digits, scientific
/// notation outside \[10⁻³, 10⁵).
pub fn format_number(x: f64) -> String {
    if !x.is_finite() {
        return x.to_string();
    }
    if x.fract() == 0.0 && x.abs() < 1e15 {
        return format!("{x:.0}");
    }
    let a = x.abs();
    // trailing zeros say nothing: 0.25, not 0.25000
    let trim = |m: &str| m.trim_end_matches('0').trim_end_matches('.').to_string();
    if (1e-3..1e5).contains(&a) {
        let decimals = (4 - a.log10().floor() as i32).max(0) as usize;
        trim(&format!("{x:.decimals$}"))
    } else {
        let s = format!("{x:.4e}");
        match s.split_once('e') {
            Some((m, e)) => format!("{}e{e}", trim(m)),
            None => s,
        }
    }
}

fn warn(h: &mut String, text: &str) {
    let _ = writeln!(h, "<p class=\"warn\">{}</p>", escape(text));
}

/// An embedded PNG with its caption; bytes that are not a PNG get a warning instead of a broken
/// image.
fn figure(h: &mut String, bytes: &[u8], caption: &str) {
    const MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";
    if !bytes.starts_with(MAGIC) {
        warn(h, &format!("{caption}: not a PNG file; left out"));
        return;
    }
    let data = base64::engine::general_purpose::STANDARD.encode(bytes);
    let _ = writeln!(
        h,
        "<figure><img src=\"data:image/png;base64,{data}\" alt=\"{0}\">\
         <figcaption>{0}</figcaption></figure>",
        escape(caption)
    );
}

/// The training summary and loss curve from the metrics log (lines that do not parse are skipped,
/// as a killed run can leave its last line cut short); whether the curve was drawn.
fn training(h: &mut String, log: &Path) -> Result<bool> {
    let Ok(text) = std::fs::read_to_string(log) else {
        h.push_str("<p>No training log (metrics.jsonl) in the folder.</p>\n");
        return Ok(false);
    };
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let loss: Vec<(f64, f64)> = lines
        .iter()
        .filter_map(|v| Some((v["step"].as_f64()?, v["loss"].as_f64()?)))
        .collect();
    let Some(&(last_step, last_loss)) = loss.last() else {
        h.push_str("<p>The training log holds no loss lines.</p>\n");
        return Ok(false);
    };
    let rates: Vec<f64> = lines
        .iter()
        .filter_map(|v| v["steps_per_sec"].as_f64())
        .collect();
    let _ = write!(
        h,
        "<table>\n<tr><td>logged lines</td><td class=\"num\">{}</td></tr>\n\
         <tr><td>last step</td><td class=\"num\">{}</td></tr>\n\
         <tr><td>last loss (mean over its logging window)</td><td class=\"num\">{}</td></tr>\n",
        loss.len(),
        format_number(last_step),
        format_number(last_loss)
    );
    if !rates.is_empty() {
        let mean = rates.iter().sum::<f64>() / rates.len() as f64;
        let _ = writeln!(
            h,
            "<tr><td>steps per second (mean of the windows)</td><td class=\"num\">{}</td></tr>",
            format_number(mean)
        );
    }
    h.push_str("</table>\n");
    // plot renders to a file: draw into a temporary folder and embed the bytes
    let tmp = tempfile::tempdir().context("cannot create a temporary folder for the loss plot")?;
    let png = tmp.path().join("loss.png");
    let drawn = crate::plot::line_plot(
        &png,
        "training loss",
        "step",
        "loss (mean over each logging window)",
        &[("loss", loss)],
        true,
    )
    .and_then(|()| Ok(std::fs::read(&png)?));
    match drawn {
        Ok(bytes) => {
            figure(h, &bytes, "training loss (metrics.jsonl)");
            Ok(true)
        }
        Err(e) => {
            warn(h, &format!("loss curve not drawn: {e:#}"));
            Ok(false)
        }
    }
}

/// One group of a flattened JSON object: its dotted prefix, its scalar rows and its note (the
/// object's definition or criterion string).
struct Group {
    rows: Vec<(String, String, bool)>,
    note: Option<String>,
}

/// Adds a scalar JSON value (number, string, bool, null) as a row; numbers are formatted.
fn push_scalar(group: &mut Group, key: String, v: &Value) {
    let row = match v {
        Value::Number(n) => {
            let text = match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => i.to_string(),
                (_, Some(u), _) => u.to_string(),
                (_, _, Some(f)) => format_number(f),
                _ => n.to_string(),
            };
            (key, text, true)
        }
        Value::String(s) => (key, s.clone(), false),
        Value::Bool(b) => (key, b.to_string(), false),
        Value::Null => (key, "null".into(), false),
        Value::Array(_) | Value::Object(_) => return,
    };
    group.rows.push(row);
}

/// `prefix.key`, or `key` at the top.
fn dotted(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Adds the member `child` of an object (or a bare top-level value) under key `k`: a row, or,
/// for what has members of its own, entries of `nested` to walk into.
fn member<'a>(
    k: String,
    child: &'a Value,
    group: &mut Group,
    nested: &mut Vec<(String, &'a Value)>,
) {
    match child {
        Value::Object(_) => nested.push((k, child)),
        Value::Array(items) if items.iter().all(Value::is_number) => {
            let list: Vec<String> = items
                .iter()
                .map(|i| i.as_f64().map_or_else(|| i.to_string(), format_number))
                .collect();
            group.rows.push((k, format!("[{}]", list.join(", ")), true));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                match item {
                    Value::Object(_) | Value::Array(_) => {
                        nested.push((dotted(&k, &i.to_string()), item))
                    }
                    _ => push_scalar(group, dotted(&k, &i.to_string()), item),
                }
            }
        }
        _ => push_scalar(group, k, child),
    }
}

/// Flattens `v` under `prefix` into groups, one per object, parents before children: scalars and
/// arrays of numbers are rows, objects and arrays of anything else are walked into with dotted
/// keys (array items by index).
fn flatten(prefix: &str, v: &Value, groups: &mut Vec<Group>) {
    let mut group = Group {
        rows: Vec::new(),
        note: None,
    };
    let mut nested: Vec<(String, &Value)> = Vec::new();
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                match child {
                    Value::String(s) if NOTE_KEYS.contains(&k.as_str()) => {
                        group.note = Some(s.clone())
                    }
                    _ => member(dotted(prefix, k), child, &mut group, &mut nested),
                }
            }
        }
        _ => member(prefix.to_string(), v, &mut group, &mut nested),
    }
    if !group.rows.is_empty() || group.note.is_some() {
        groups.push(group);
    }
    for (k, child) in nested {
        flatten(&k, child, groups);
    }
}

/// A table of a JSON document: dotted keys, formatted values, and each object's definition or
/// criterion beside its rows.
fn metrics_table(h: &mut String, v: &Value) {
    let mut groups = Vec::new();
    flatten("", v, &mut groups);
    h.push_str("<table>\n<tr><th>key</th><th>value</th><th>definition</th></tr>\n");
    for g in groups {
        let note = g.note.as_deref().map(escape).unwrap_or_default();
        if g.rows.is_empty() {
            let _ = writeln!(
                h,
                "<tr><td></td><td></td><td class=\"note\">{note}</td></tr>"
            );
            continue;
        }
        for (i, (k, val, num)) in g.rows.iter().enumerate() {
            let class = if *num { " class=\"num\"" } else { "" };
            let _ = write!(
                h,
                "<tr><td>{}</td><td{class}>{}</td>",
                escape(k),
                escape(val)
            );
            if i == 0 {
                let _ = write!(
                    h,
                    "<td class=\"note\" rowspan=\"{}\">{note}</td>",
                    g.rows.len()
                );
            }
            h.push_str("</tr>\n");
        }
    }
    h.push_str("</table>\n");
}

/// Per-coordinate mean and sample standard deviation of n ≥ 2 points.
fn column_stats(x: &crate::data::Points) -> (Vec<f64>, Vec<f64>) {
    let n = x.n as f64;
    let mut mean = vec![0.0; x.d];
    for i in 0..x.n {
        mean.iter_mut().zip(x.row(i)).for_each(|(m, v)| *m += v / n);
    }
    let mut var = vec![0.0; x.d];
    for i in 0..x.n {
        for (j, v) in x.row(i).iter().enumerate() {
            var[j] += (v - mean[j]).powi(2) / (n - 1.0);
        }
    }
    (mean, var.into_iter().map(f64::sqrt).collect())
}

/// Numbers joined by commas, each formatted by [`format_number`].
fn joined(v: &[f64]) -> String {
    let s: Vec<String> = v.iter().map(|&x| format_number(x)).collect();
    s.join(", ")
}

/// Shape, and per-coordinate mean and standard deviation (up to 8 coordinates), of each `.npy`.
fn samples_table(h: &mut String, files: &[&PathBuf]) {
    if files.is_empty() {
        h.push_str("<p>No .npy sample files in the folder.</p>\n");
        return;
    }
    h.push_str(
        "<table>\n<tr><th>file</th><th>shape</th><th>mean per coordinate</th>\
         <th>std per coordinate</th></tr>\n",
    );
    for p in files {
        let row = match crate::data::read_npy(p) {
            Ok(x) => {
                let mut shape = vec![x.n];
                shape.extend(if x.event.is_empty() {
                    vec![x.d]
                } else {
                    x.event.clone()
                });
                let shape: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
                let (mean, std) = if x.d <= 8 && x.n > 1 {
                    let (m, s) = column_stats(&x);
                    (joined(&m), joined(&s))
                } else {
                    (String::from("—"), String::from("—"))
                };
                format!(
                    "<td>[{}]</td><td class=\"num\">{}</td><td class=\"num\">{}</td>",
                    shape.join(", "),
                    escape(&mean),
                    escape(&std)
                )
            }
            Err(e) => format!(
                "<td colspan=\"3\" class=\"warn\">{}</td>",
                escape(&format!("{e:#}"))
            ),
        };
        let _ = writeln!(h, "<tr><td>{}</td>{row}</tr>", escape(&name(p)));
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_numbers() {
        assert_eq!(
            escape("<a href=\"x\">'&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(format_number(3.0), "3");
        assert_eq!(format_number(0.123456), "0.12346");
        assert_eq!(format_number(1234.5678), "1234.6");
        assert_eq!(format_number(-2.5e-7), "-2.5e-7");
        assert_eq!(format_number(0.25), "0.25");
        assert_eq!(format_number(1.0e7 + 0.5), "1e7");
        assert_eq!(format_number(0.1000004), "0.1");
        assert_eq!(format_number(f64::NAN), "NaN");
    }

    /// Nested objects become dotted keys, grouped by object, with each object's definition or
    /// criterion as the group's note, not as a row.
    #[test]
    fn json_flattens_to_dotted_groups() {
        let v: Value = serde_json::from_str(
            r#"{"verdict": "PASS", "criterion": "W2 within 1.5x",
                "samplers": {"em": {"nfe": 1000, "metrics": {"w2": 0.5, "definitions": "w2: ..."}}},
                "fractions": [0.25, 0.75], "runs": [{"a": 1}, [2, {"b": 3}]]}"#,
        )
        .unwrap();
        let mut groups = Vec::new();
        flatten("", &v, &mut groups);
        let keys: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.rows.iter().map(|r| r.0.as_str()).collect())
            .collect();
        assert_eq!(
            keys,
            vec![
                vec!["fractions", "verdict"],
                vec!["runs.0.a"],
                vec!["runs.1.0"],
                vec!["runs.1.1.b"],
                vec!["samplers.em.nfe"],
                vec!["samplers.em.metrics.w2"],
            ]
        );
        assert_eq!(groups[0].note.as_deref(), Some("W2 within 1.5x"));
        assert_eq!(groups[0].rows[0].1, "[0.25, 0.75]");
        assert_eq!(groups[5].note.as_deref(), Some("w2: ..."));
        // a document that is a bare array or number still flattens
        let mut groups = Vec::new();
        flatten("", &serde_json::json!([1, {"x": 2}]), &mut groups);
        assert_eq!(
            (groups[0].rows[0].0.as_str(), groups[1].rows[0].0.as_str()),
            ("0", "1.x")
        );
        let mut groups = Vec::new();
        flatten("", &serde_json::json!([{"x": 2}]), &mut groups);
        assert_eq!(groups[0].rows[0].0, "0.x");
    }

    #[test]
    fn not_a_run_folder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = render(dir.path(), &dir.path().join(REPORT)).unwrap_err();
        assert!(err.to_string().contains("not a run folder"), "{err}");
        let err = render(&dir.path().join("nope"), Path::new("x")).unwrap_err();
        assert!(err.to_string().contains("no such run folder"), "{err}");
    }

    /// What cannot be shown gets a line instead of a broken page, and every piece of text from
    /// the folder (config, file names, JSON strings) is escaped.
    #[test]
    fn bad_files_are_named_and_text_is_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(
            p("config.toml"),
            "[data]\nsource = \"<script>x</script>\"\n",
        )
        .unwrap();
        std::fs::write(
            p(METRICS_LOG),
            "{\"step\": 10, \"loss\": 1.5}\n{\"step\": 20, \"loss\": 0.75}\n{\"step\": 3",
        )
        .unwrap();
        std::fs::write(p("fake.png"), b"not a png").unwrap();
        std::fs::write(p("a&<b>.json"), b"{ nope").unwrap();
        std::fs::write(p("m.json"), r#"{"note": "<i>", "x": 1e-9}"#).unwrap();
        let html = render(dir.path(), &p(REPORT)).unwrap();
        assert!(!html.contains("<script>") && !html.contains("<i>"));
        assert!(html.contains("&lt;script&gt;") && html.contains("a&amp;&lt;b&gt;.json"));
        assert!(html.contains("fake.png: not a PNG file"));
        assert!(html.contains("cannot read as JSON"));
        assert!(html.contains("1e-9"));
        // the two good log lines drawn, the cut-off third skipped
        assert!(html.contains("<td>logged lines</td><td class=\"num\">2</td>"));
        assert_eq!(html.matches("data:image/png;base64,").count(), 1);
    }
}
