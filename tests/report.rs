//! `tweedie report` end to end: a short training run, its samples and metrics, the page built from
//! them, and the page opened in headless Chromium, where every image must decode and nothing may
//! raise an error or write to the console.
//!
//! Without Chromium the browser part is skipped, saying so, unless `TWEEDIE_REQUIRE_BROWSER=1`
//! (set by `.ci/run` once it has installed Chromium), which makes its absence a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn tweedie(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_tweedie"))
        .args(args)
        .output()
        .expect("run tweedie");
    assert!(
        out.status.success(),
        "tweedie {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A run folder as `tweedie train`, `sample` and `eval` leave it: config.toml, metrics.jsonl, a
/// checkpoint, samples (.npy and PNG) and metrics JSON.
fn small_run(root: &Path) -> PathBuf {
    let run = root.join("run");
    let cfg = root.join("small.toml");
    std::fs::write(
        &cfg,
        "[model]\nwidth = 16\ndepth = 2\n[train]\nbatch = 64\nlog_every = 10\nsteps = 200\n",
    )
    .expect("write config");
    let s = |p: &Path| p.to_str().expect("utf-8 path").to_string();
    tweedie(&[
        "train",
        "--config",
        &s(&cfg),
        "--data",
        "ncsn2",
        "--out",
        &s(&run),
        "--quiet",
    ]);
    let samples = run.join("samples.npy");
    tweedie(&[
        "sample",
        "--run",
        &s(&run),
        "--n",
        "300",
        "--steps",
        "50",
        "--out",
        &s(&samples),
        "--png",
        &s(&run.join("samples.png")),
    ]);
    tweedie(&[
        "eval",
        "--samples",
        &s(&samples),
        "--target",
        "ncsn2",
        "--entropy-draws",
        "2000",
        "--json",
        &s(&run.join("eval.json")),
    ]);
    run
}

/// The first Chromium found: `$TWEEDIE_CHROMIUM`, else chromium, chromium-browser, google-chrome.
fn chromium() -> Option<String> {
    let env = std::env::var("TWEEDIE_CHROMIUM").ok();
    let names = env.into_iter().chain(
        [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ]
        .map(String::from),
    );
    names.into_iter().find(|n| {
        Command::new(n)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Runs headless Chromium on `page` with `extra` arguments; returns (stdout, stderr). Killed after
/// 120 s (a hung browser must not hang the suite).
fn run_chromium(bin: &str, page: &Path, extra: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().expect("profile dir");
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let url = format!("file://{}", page.display());
    let out_dir = tempfile::tempdir().expect("output dir");
    let (so, se) = (out_dir.path().join("out"), out_dir.path().join("err"));
    // root (as in CI) needs --no-sandbox; /dev/shm is small in containers
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            &profile_arg,
        ])
        .args(extra)
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&so).expect("stdout file"))
        .stderr(std::fs::File::create(&se).expect("stderr file"))
        .spawn()
        .expect("start chromium");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait for chromium").is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    (read(&so), read(&se))
}

/// Injected first into <head>: records every uncaught error, failed resource load and
/// console.error; on load, sets the title to the image count, the decoded-image count and the
/// errors.
const PROBE: &str = r#"<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  window.__errors.push(e.message || ('failed to load ' + (e.target && e.target.tagName)));
}, true);
var consoleError = console.error;
console.error = function () { window.__errors.push([].join.call(arguments, ' ')); consoleError.apply(console, arguments); };
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.title = 'PROBE images=' + imgs.length + ' loaded=' + ok + ' errors=' + window.__errors.length + ' ' + window.__errors.join(' | ');
});
</script>"#;

/// What the probe saw: (images, decoded images, errors, error text), and the console lines.
struct Seen {
    images: usize,
    loaded: usize,
    errors: usize,
    text: String,
    console: Vec<String>,
}

/// Opens `html` (with the probe injected) in Chromium and reads back the probe's title.
fn probe(bin: &str, html: &str, dir: &Path) -> Seen {
    let page = dir.join("probe.html");
    let injected = html.replacen("<head>", &format!("<head>\n{PROBE}"), 1);
    assert_ne!(injected, html, "no <head> to inject the probe into");
    std::fs::write(&page, injected).expect("write probe page");
    // virtual time lets the load event and image decoding finish before the DOM is dumped
    let (dom, err) = run_chromium(
        bin,
        &page,
        &[
            "--virtual-time-budget=10000",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ],
    );
    let title = dom
        .split("<title>")
        .nth(1)
        .and_then(|t| t.split("</title>").next())
        .unwrap_or("")
        .to_string();
    assert!(
        title.starts_with("PROBE "),
        "the probe did not run; title {title:?}; stderr:\n{err}"
    );
    let field = |name: &str| -> usize {
        title
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {title:?}"))
    };
    Seen {
        images: field("images"),
        loaded: field("loaded"),
        errors: field("errors"),
        text: title.clone(),
        // every console message (log, warning, error) is logged as "...:CONSOLE..."
        console: err
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .map(String::from)
            .collect(),
    }
}

#[test]
fn report_of_a_run_opens_cleanly_in_a_browser() {
    let root = tempfile::tempdir().expect("tempdir");
    let run = small_run(root.path());
    let out = root.path().join("page.html");
    let printed = tweedie(&[
        "report",
        "--run",
        run.to_str().expect("utf-8"),
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(String::from_utf8_lossy(&printed.stdout).contains("page.html"));
    let html = std::fs::read_to_string(&out).expect("report written");

    // self-contained: every image inline, nothing fetched, no scripts of its own
    let srcs: Vec<&str> = html.split("src=\"").skip(1).collect();
    assert_eq!(srcs.len(), 2, "loss curve and samples.png expected");
    assert!(srcs.iter().all(|s| s.starts_with("data:image/png;base64,")));
    for banned in ["<script", "<link", "http://", "https://", "@import", "url("] {
        assert!(!html.contains(banned), "report contains {banned}");
    }
    // what the page must show: the config, the metrics with their definitions, the samples' shape
    for needle in [
        "[model]",
        "eval.json",
        "metrics.ksd2.value",
        "ksd2: kernel Stein discrepancy",
        "samples.npy",
        "[300, 2]",
        "samples.png",
    ] {
        assert!(html.contains(needle), "report lacks {needle}");
    }

    // the default output is RUN/report.html, and it leaves itself out of the file list
    tweedie(&["report", "--run", run.to_str().expect("utf-8")]);
    tweedie(&["report", "--run", run.to_str().expect("utf-8")]);
    let again = std::fs::read_to_string(run.join("report.html")).expect("default report");
    assert!(!again.contains(">report.html<"));

    let Some(bin) = chromium() else {
        assert!(
            std::env::var("TWEEDIE_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "TWEEDIE_REQUIRE_BROWSER=1 but no chromium found (install it: apt-get install chromium)"
        );
        eprintln!(
            "report browser check skipped: chromium not installed (apt-get install chromium)"
        );
        return;
    };
    let seen = probe(&bin, &html, root.path());
    assert_eq!(seen.images, 2, "{}", seen.text);
    assert_eq!(
        seen.loaded, seen.images,
        "an image did not decode: {}",
        seen.text
    );
    assert_eq!(seen.errors, 0, "page errors: {}", seen.text);
    assert!(
        seen.console.is_empty(),
        "console output: {:?}",
        seen.console
    );

    // the probe is not blind: a broken image, a thrown error and a console message are all seen
    let broken = "<!DOCTYPE html><html><head><title>t</title></head><body>\
        <img src=\"data:image/png;base64,AAAA\"><script>console.log('x'); missing();</script>\
        </body></html>";
    let seen = probe(&bin, broken, root.path());
    assert_eq!((seen.images, seen.loaded), (1, 0), "{}", seen.text);
    assert!(seen.errors >= 2, "{}", seen.text);
    assert!(!seen.console.is_empty());
}

#[test]
fn report_refuses_what_is_not_a_run_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |args: &[&str], needle: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_tweedie"))
            .args(args)
            .output()
            .expect("run tweedie");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(
            lines[0].starts_with("error: ") && lines[0].contains(needle),
            "{stderr}"
        );
    };
    let d = dir.path().to_str().expect("utf-8");
    check(&["report", "--run", d], "not a run folder");
    let missing = dir.path().join("nope");
    check(
        &["report", "--run", missing.to_str().expect("utf-8")],
        "no such run folder",
    );
    std::fs::write(dir.path().join("config.toml"), "").expect("write");
    let bad_out = dir.path().join("no/such/folder/r.html");
    check(
        &[
            "report",
            "--run",
            d,
            "--out",
            bad_out.to_str().expect("utf-8"),
        ],
        "not an existing folder",
    );
}
