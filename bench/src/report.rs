//! `wtgate-bench report`: markdown tables (medians across rounds) and SVG percentile plots from the
//! JSON lines written by `load --json` and `idle --json`, each tagged `scenario`, `target`, `round`
//! (and optionally `title`, `goal`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::stats::{fmt_us, median};

/// One measured run, as read back.
#[derive(Debug, Clone)]
pub struct Run {
    pub scenario: String,
    pub target: String,
    pub round: String,
    pub title: Option<String>,
    pub goal: Option<String>,
    pub mode: String,
    pub v: Value,
}

impl Run {
    fn num(&self, path: &[&str]) -> Option<f64> {
        let mut v = &self.v;
        for p in path {
            v = v.get(p)?;
        }
        v.as_f64()
    }
}

pub fn parse_runs(text: &str) -> Result<Vec<Run>, String> {
    let mut runs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        let tag = |k: &str| {
            v.get("tags")
                .and_then(|t| t.get(k))
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        runs.push(Run {
            scenario: tag("scenario").unwrap_or_else(|| "default".into()),
            target: tag("target")
                .unwrap_or_else(|| v["target"].as_str().unwrap_or("?").to_string()),
            round: tag("round").unwrap_or_else(|| "1".into()),
            title: tag("title"),
            goal: tag("goal"),
            mode: v["mode"].as_str().unwrap_or("").to_string(),
            v,
        });
    }
    Ok(runs)
}

fn ordered<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in items {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    out
}

/// Targets in a fixed order (so colours and rows line up across scenarios), others after.
fn ordered_targets<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    const ORDER: [&str; 4] = ["wtgate", "haproxy", "nginx", "direct"];
    let mut t = ordered(items);
    t.sort_by_key(|x| ORDER.iter().position(|o| o == x).unwrap_or(ORDER.len()));
    t
}

fn med(runs: &[&Run], path: &[&str]) -> Option<f64> {
    let vals: Vec<f64> = runs.iter().filter_map(|r| r.num(path)).collect();
    median(&vals)
}

/// Median over rounds of wtgate's value ÷ HAProxy's value in the same round.
fn ratio(runs: &[Run], scenario: &str, path: &[&str]) -> Option<f64> {
    let mut by_round: BTreeMap<&str, (Option<f64>, Option<f64>)> = BTreeMap::new();
    for r in runs.iter().filter(|r| r.scenario == scenario) {
        let e = by_round.entry(&r.round).or_default();
        match r.target.as_str() {
            "wtgate" => e.0 = r.num(path),
            "haproxy" => e.1 = r.num(path),
            _ => {}
        }
    }
    let ratios: Vec<f64> = by_round
        .values()
        .filter_map(|(w, h)| match (w, h) {
            (Some(w), Some(h)) if *h > 0.0 => Some(w / h),
            _ => None,
        })
        .collect();
    median(&ratios)
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

/// The markdown report for all scenarios.
pub fn markdown(runs: &[Run]) -> String {
    let mut out = String::new();
    for scenario in ordered(runs.iter().map(|r| r.scenario.as_str())) {
        let sruns: Vec<&Run> = runs.iter().filter(|r| r.scenario == scenario).collect();
        let first = sruns[0];
        let title = first.title.clone().unwrap_or_else(|| scenario.clone());
        let rounds = ordered(sruns.iter().map(|r| r.round.as_str())).len();
        let _ = writeln!(out, "### {title}\n");
        if let Some(goal) = &first.goal {
            let _ = writeln!(
                out,
                "Target (docs/design.md, Performance targets): {goal}. Medians of {rounds} round(s).\n"
            );
        } else {
            let _ = writeln!(out, "Medians of {rounds} round(s).\n");
        }
        if first.mode == "idle" {
            idle_table(&mut out, &sruns);
            let r = ratio(runs, &scenario, &["bytes_per_conn"]);
            let _ = writeln!(
                out,
                "\nwtgate/HAProxy: RSS per connection {}\n",
                opt(r, |x| format!("{x:.2}×"))
            );
            continue;
        }
        let unit = if first.mode == "ws" {
            "msgs/s"
        } else {
            "req/s"
        };
        let _ = writeln!(
            out,
            "| target | {unit} | MB/s | p50 | p90 | p99 | p99.9 | max | CPU µs/req | peak RSS MiB | errors |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for target in ordered_targets(sruns.iter().map(|r| r.target.as_str())) {
            let t: Vec<&Run> = sruns
                .iter()
                .copied()
                .filter(|r| r.target == target)
                .collect();
            let lat = |k: &str| opt(med(&t, &["latency_us", k]), |v| fmt_us(v as u64));
            let errors: f64 = t.iter().filter_map(|r| r.num(&["errors_total"])).sum();
            let sent: f64 = t.iter().filter_map(|r| r.num(&["sent"])).sum();
            let kinds = error_kinds(&t);
            let _ = writeln!(
                out,
                "| {target} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}{} |",
                opt(med(&t, &["rps"]), |v| format!("{v:.0}")),
                opt(med(&t, &["mbps"]), |v| format!("{v:.1}")),
                lat("p50"),
                lat("p90"),
                lat("p99"),
                lat("p999"),
                lat("max"),
                opt(med(&t, &["proxy", "cpu_us_per_req"]), |v| format!("{v:.2}")),
                opt(med(&t, &["proxy", "peak_rss_kib"]), |v| format!(
                    "{:.1}",
                    v / 1024.0
                )),
                errors,
                if errors > 0.0 {
                    format!(" of {sent} ({kinds})")
                } else {
                    String::new()
                },
            );
        }
        let r = |p: &[&str]| opt(ratio(runs, &scenario, p), |x| format!("{x:.2}×"));
        let _ = writeln!(
            out,
            "\nwtgate/HAProxy: {unit} {}, MB/s {}, CPU/req {}, p99 {}, p99.9 {}\n",
            r(&["rps"]),
            r(&["mbps"]),
            r(&["proxy", "cpu_us_per_req"]),
            r(&["latency_us", "p99"]),
            r(&["latency_us", "p999"]),
        );
    }
    out
}

fn error_kinds(runs: &[&Run]) -> String {
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    for r in runs {
        if let Some(Value::Object(m)) = r.v.get("errors") {
            for (k, v) in m {
                *sums.entry(k.clone()).or_default() += v.as_f64().unwrap_or(0.0);
            }
        }
    }
    sums.iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn idle_table(out: &mut String, runs: &[&Run]) {
    let _ = writeln!(
        out,
        "| target | connections open | failed | RSS before MiB | RSS with them MiB | KiB per connection |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|");
    for target in ordered_targets(runs.iter().map(|r| r.target.as_str())) {
        let t: Vec<&Run> = runs
            .iter()
            .copied()
            .filter(|r| r.target == target)
            .collect();
        let _ = writeln!(
            out,
            "| {target} | {} | {} | {} | {} | {} |",
            opt(med(&t, &["opened"]), |v| format!("{v:.0}")),
            opt(med(&t, &["failed"]), |v| format!("{v:.0}")),
            opt(med(&t, &["rss_before_kib"]), |v| format!(
                "{:.1}",
                v / 1024.0
            )),
            opt(med(&t, &["rss_after_kib"]), |v| format!(
                "{:.1}",
                v / 1024.0
            )),
            opt(med(&t, &["bytes_per_conn"]), |v| format!(
                "{:.2}",
                v / 1024.0
            )),
        );
    }
}

/// One plot per latency scenario: for each target, the round with the median p99.
pub fn plots(runs: &[Run]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for scenario in ordered(runs.iter().map(|r| r.scenario.as_str())) {
        let sruns: Vec<&Run> = runs.iter().filter(|r| r.scenario == scenario).collect();
        if sruns[0].mode == "idle" {
            continue;
        }
        let mut series = Vec::new();
        for target in ordered_targets(sruns.iter().map(|r| r.target.as_str())) {
            let mut t: Vec<&Run> = sruns
                .iter()
                .copied()
                .filter(|r| r.target == target)
                .collect();
            t.sort_by(|a, b| {
                let p = |r: &Run| r.num(&["latency_us", "p99"]).unwrap_or(0.0);
                p(a).total_cmp(&p(b))
            });
            let pick = t[t.len() / 2];
            let curve: Vec<(f64, u64)> = pick
                .v
                .get("curve")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|pt| Some((pt.get(0)?.as_f64()?, pt.get(1)?.as_u64()?)))
                        .collect()
                })
                .unwrap_or_default();
            series.push((target, curve));
        }
        let title = sruns[0].title.clone().unwrap_or_else(|| scenario.clone());
        out.push((scenario, crate::svg::percentile_plot(&title, &series)));
    }
    out
}

pub fn run(results: &Path, svg_dir: Option<&Path>) -> Result<(), String> {
    let text =
        std::fs::read_to_string(results).map_err(|e| format!("{}: {e}", results.display()))?;
    let runs = parse_runs(&text)?;
    print!("{}", markdown(&runs));
    if let Some(dir) = svg_dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for (scenario, svg) in plots(&runs) {
            let path = dir.join(format!("{scenario}.svg"));
            std::fs::write(&path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(target: &str, round: u32, rps: f64, cpu: f64, p99: u64) -> String {
        format!(
            r#"{{"mode":"keepalive","rps":{rps},"mbps":1.0,"sent":100,"errors_total":0,"errors":{{"io":0}},"latency_us":{{"p50":100,"p90":200,"p99":{p99},"p999":900,"max":1000}},"curve":[[50.0,100],[99.0,{p99}]],"proxy":{{"cpu_us_per_req":{cpu},"peak_rss_kib":2048}},"tags":{{"scenario":"ka","target":"{target}","round":"{round}","goal":"g"}}}}"#
        )
    }

    #[test]
    fn tables_use_medians_and_per_round_ratios() {
        let text = [
            line("wtgate", 1, 120.0, 10.0, 500),
            line("haproxy", 1, 100.0, 20.0, 600),
            line("wtgate", 2, 90.0, 12.0, 700),
            line("haproxy", 2, 100.0, 20.0, 600),
            line("wtgate", 3, 200.0, 8.0, 600),
            line("haproxy", 3, 100.0, 16.0, 600),
        ]
        .join("\n");
        let runs = parse_runs(&text).unwrap();
        let md = markdown(&runs);
        // Median req/s of wtgate: 120; CPU 10.00; p99 600us.
        assert!(
            md.contains(
                "| wtgate | 120 | 1.0 | 100us | 200us | 600us | 900us | 1.00ms | 10.00 | 2.0 | 0 |"
            ),
            "{md}"
        );
        // Per-round ratios 1.2, 0.9, 2.0 → median 1.2; CPU 0.5, 0.6, 0.5 → 0.5.
        assert!(md.contains("req/s 1.20×"), "{md}");
        assert!(md.contains("CPU/req 0.50×"), "{md}");
        let plots = plots(&runs);
        assert_eq!(plots.len(), 1);
        assert_eq!(plots[0].1.matches("<polyline").count(), 2);
    }
}
