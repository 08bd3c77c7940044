//! The evaluation report: one serialisable struct per synthetic set ([`EvalReport`]), gathered with the real
//! set's description into a [`ComparisonReport`], which renders as a side-by-side Markdown table (the table
//! users quote) followed by the detail sections. NaN figures (undefined, e.g. a rule that applies to no flow)
//! serialise as JSON `null` and print as `n/a`.

use super::coverage::Coverage;
use super::distances::{Categorical, Continuous, Distances};
use super::dkc::RuleResult;
use super::hosts::Hosts;
use super::privacy::Privacy;
use super::temporal::Temporal;
use super::utility::{TaskScore, Utility};
use crate::record::FlowRecord;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt::Write as _;

/// Description of one flow set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SetInfo {
    pub name: String,
    pub flows: usize,
    pub span_seconds: f64,
    pub host_pairs: usize,
    /// Files it was read from (filled in by the command line; empty for in-memory sets).
    pub files: Vec<String>,
}

impl SetInfo {
    pub fn of(name: &str, flows: &[FlowRecord]) -> SetInfo {
        let first = flows.iter().map(|r| r.start_us).min().unwrap_or(0);
        let last = flows.iter().map(|r| r.end_us()).max().unwrap_or(0);
        SetInfo {
            name: name.to_string(),
            flows: flows.len(),
            span_seconds: (last - first) as f64 / 1e6,
            host_pairs: flows.iter().map(|r| r.pair()).collect::<HashSet<_>>().len(),
            files: Vec::new(),
        }
    }
}

/// Every metric of one synthetic set against the real set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub model: String,
    pub synthetic: SetInfo,
    pub distances: Distances,
    pub dkc: Vec<RuleResult>,
    pub coverage: Coverage,
    pub temporal: Temporal,
    pub hosts: Hosts,
    pub utility: Option<Utility>,
    /// Why utility is missing, or how its real train/test parts were chosen.
    pub utility_note: String,
    pub privacy: Option<Privacy>,
    pub privacy_note: String,
}

/// One real set against one or more synthetic sets.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ComparisonReport {
    pub real: SetInfo,
    pub train: Option<SetInfo>,
    pub attacks: Option<SetInfo>,
    pub models: Vec<EvalReport>,
    /// PNG files written (relative to the report directory).
    pub plots: Vec<String>,
}

/// Number formatting of the tables: `n/a` for NaN, 4 significant-ish digits otherwise.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x == 0.0 {
        "0".into()
    } else if x.abs() >= 1000.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.3}")
    } else if x.abs() >= 0.001 {
        format!("{x:.4}")
    } else {
        format!("{x:.2e}")
    }
}

fn pct(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.1}%")
    } else {
        "n/a".into()
    }
}

/// One table row: metric name, the real set's own figure (or `-`), one cell per model.
type Row = (String, String, Vec<String>);

impl ComparisonReport {
    /// Rows of the summary table (metric, real, one cell per model).
    pub fn summary_rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = Vec::new();
        let dash = || "-".to_string();
        let mut row = |name: String, real: String, f: &dyn Fn(&EvalReport) -> String| {
            rows.push((name, real, self.models.iter().map(f).collect()));
        };
        row("flows".into(), self.real.flows.to_string(), &|m| {
            m.synthetic.flows.to_string()
        });
        for c in Continuous::ALL {
            row(format!("EMD log10 {}", c.name()), dash(), &|m| {
                num(m.distances.continuous(c).map_or(f64::NAN, |d| d.emd_log10))
            });
        }
        row(
            "EMD log10 inter-arrival, busiest pairs".into(),
            dash(),
            &|m| num(m.distances.inter_arrival_per_pair.emd_log10_mean),
        );
        for c in Continuous::ALL {
            let unit = if c.is_time() { " (s)" } else { "" };
            row(format!("EMD raw {}{unit}", c.name()), dash(), &|m| {
                num(m.distances.continuous(c).map_or(f64::NAN, |d| d.emd_raw))
            });
        }
        for c in Continuous::ALL {
            row(format!("KS {}", c.name()), dash(), &|m| {
                num(m.distances.continuous(c).map_or(f64::NAN, |d| d.ks))
            });
        }
        for c in Categorical::ALL {
            row(format!("JSD {}", c.name()), dash(), &|m| {
                num(m.distances.categorical(c).map_or(f64::NAN, |d| d.jsd))
            });
        }
        let n_rules = self.models.first().map_or(0, |m| m.dkc.len());
        for i in 0..n_rules {
            let r0 = &self.models[0].dkc[i];
            row(
                format!("DKC {} pass", r0.rule),
                pct(r0.real_pass_percent),
                &|m| pct(m.dkc[i].synthetic_pass_percent),
            );
        }
        row("coverage: real patterns".into(), dash(), &|m| {
            num(m.coverage.pattern_coverage)
        });
        row("coverage: real host pairs".into(), dash(), &|m| {
            num(m.coverage.host_pair_coverage)
        });
        row("novel patterns (share)".into(), dash(), &|m| {
            num(m.coverage.novel_pattern_share)
        });
        let real_t = self.models.first().map(|m| m.temporal.real.clone());
        let rt = |f: &dyn Fn(&super::temporal::TemporalStats) -> f64| {
            real_t.as_ref().map_or("-".into(), |t| num(f(t)))
        };
        row("ACF lag 1 (flows/s)".into(), rt(&|t| t.acf[0]), &|m| {
            num(m.temporal.synthetic.acf[0])
        });
        row("ACF mean |diff| lags 1-60".into(), dash(), &|m| {
            num(m.temporal.acf_mean_abs_diff)
        });
        row("Hurst exponent".into(), rt(&|t| t.hurst), &|m| {
            num(m.temporal.synthetic.hurst)
        });
        row(
            "burstiness (CV inter-arrival)".into(),
            rt(&|t| t.burstiness_cv),
            &|m| num(m.temporal.synthetic.burstiness_cv),
        );
        row("diurnal correlation".into(), dash(), &|m| {
            m.temporal.diurnal_correlation.map_or("n/a".into(), num)
        });
        let real_h = self.models.first().map(|m| m.hosts.real.clone());
        row(
            "destinations per source p50".into(),
            real_h
                .as_ref()
                .map_or("-".into(), |h| num(h.destinations_per_source.p50)),
            &|m| num(m.hosts.synthetic.destinations_per_source.p50),
        );
        row("EMD log10 destinations per source".into(), dash(), &|m| {
            num(m.hosts.destinations_per_source_emd_log10)
        });
        row("EMD log10 bytes per source".into(), dash(), &|m| {
            num(m.hosts.bytes_per_source_emd_log10)
        });
        row("top-10 TCP ports shared".into(), dash(), &|m| {
            num(m.hosts.top_tcp_overlap)
        });
        row("top-10 UDP ports shared".into(), dash(), &|m| {
            num(m.hosts.top_udp_overlap)
        });
        type Pick = fn(&Utility) -> Option<&TaskScore>;
        let tasks: [(&str, Pick); 3] = [
            ("protocol macro-F1", |u| Some(&u.protocol_classification)),
            ("next-flow bytes MSE", |u| Some(&u.next_flow_bytes)),
            ("IDS F1 (attack)", |u| u.intrusion_detection.as_ref()),
        ];
        for (name, pick) in tasks {
            let trtr = self
                .models
                .iter()
                .find_map(|m| m.utility.as_ref().and_then(pick))
                .map_or("-".into(), |t| num(t.trtr));
            row(
                format!("utility {name} (real: TRTR, model: TSTR)"),
                trtr,
                &|m| {
                    m.utility
                        .as_ref()
                        .and_then(pick)
                        .map_or("n/a".into(), |t| num(t.tstr))
                },
            );
            row(format!("utility {name} ratio TSTR/TRTR"), dash(), &|m| {
                m.utility
                    .as_ref()
                    .and_then(pick)
                    .map_or("n/a".into(), |t| num(t.ratio))
            });
        }
        let pv = |f: fn(&Privacy) -> f64| {
            move |m: &EvalReport| m.privacy.as_ref().map_or("n/a".into(), |p| num(f(p)))
        };
        let real_hold = self.models.iter().find_map(|m| m.privacy.as_ref());
        row(
            "privacy exact-match rate (real: holdout)".into(),
            real_hold.map_or("-".into(), |p| num(p.holdout_exact_match_rate)),
            &pv(|p| p.exact_match_rate),
        );
        row(
            "privacy DCR median (real: holdout)".into(),
            real_hold.map_or("-".into(), |p| num(p.dcr_holdout_median)),
            &pv(|p| p.dcr_synthetic_median),
        );
        row(
            "privacy DCR ratio synthetic/holdout".into(),
            dash(),
            &pv(|p| p.dcr_ratio),
        );
        row(
            "privacy share within holdout DCR p5 (real: holdout)".into(),
            real_hold.map_or("-".into(), |p| num(p.holdout_share_within_p5)),
            &pv(|p| p.share_within_holdout_p5),
        );
        row(
            "privacy membership-inference AUC".into(),
            dash(),
            &pv(|p| p.membership_auc),
        );
        rows
    }

    /// The summary table as Markdown (also what the command line prints).
    pub fn summary_table(&self) -> String {
        let mut s = String::new();
        let _ = write!(s, "| metric | real ({}) |", self.real.name);
        for m in &self.models {
            let _ = write!(s, " {} |", m.model);
        }
        s.push('\n');
        s.push_str("|---|---|");
        for _ in &self.models {
            s.push_str("---|");
        }
        s.push('\n');
        for (name, real, cells) in self.summary_rows() {
            let _ = writeln!(s, "| {name} | {real} | {} |", cells.join(" | "));
        }
        s
    }

    /// The whole report as Markdown: sets, summary table, plots, per-model detail.
    pub fn to_markdown(&self) -> String {
        let mut s = String::from(
            "# temponet evaluation\n\n## Sets\n\n| set | flows | span (s) | host pairs | files |\n|---|---|---|---|---|\n",
        );
        let set_row = |s: &mut String, role: &str, i: &SetInfo| {
            let _ = writeln!(
                s,
                "| {role}: {} | {} | {} | {} | {} |",
                i.name,
                i.flows,
                num(i.span_seconds),
                i.host_pairs,
                i.files.join(", ")
            );
        };
        set_row(&mut s, "real (test)", &self.real);
        if let Some(t) = &self.train {
            set_row(&mut s, "real (train)", t);
        }
        if let Some(a) = &self.attacks {
            set_row(&mut s, "attacks", a);
        }
        for m in &self.models {
            set_row(&mut s, "synthetic", &m.synthetic);
        }
        s.push_str("\n## Summary\n\nDistances: lower is better (0 = identical). DKC: closer to the real column is better. \
                    Utility ratios near 1 are good (for MSE above 1 is worse). Privacy: DCR ratio below 1, a share within the holdout's 5th-percentile \
                    DCR above the holdout's own, or an AUC well above 0.5 mean the synthetic set copies its training data.\n\n");
        s.push_str(&self.summary_table());
        if !self.plots.is_empty() {
            s.push_str("\n## Plots\n\n");
            for p in &self.plots {
                let _ = writeln!(s, "![{p}]({p})\n");
            }
        }
        for m in &self.models {
            let _ = writeln!(
                s,
                "\n## {}\n\n### Domain-knowledge checks\n\n| rule | what | real pass (n) | synthetic pass (n) |\n|---|---|---|---|",
                m.model
            );
            for r in &m.dkc {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} ({}) | {} ({}) |",
                    r.rule,
                    r.description,
                    pct(r.real_pass_percent),
                    r.real.applicable,
                    pct(r.synthetic_pass_percent),
                    r.synthetic.applicable
                );
            }
            let pp = &m.distances.inter_arrival_per_pair;
            let _ = writeln!(
                s,
                "\nBusiest pairs: {} wanted, {} compared, {} missing in the synthetic set.\n",
                pp.pairs_wanted, pp.pairs_used, pp.pairs_missing
            );
            let c = &m.coverage;
            let _ = writeln!(
                s,
                "Coverage: {} real patterns, {} synthetic; {} real host pairs, {} synthetic; novel flows {}.\n",
                c.real_patterns,
                c.synthetic_patterns,
                c.real_host_pairs,
                c.synthetic_host_pairs,
                num(c.novel_flow_share)
            );
            let _ = writeln!(s, "Diurnal profile: {}.\n", m.temporal.diurnal_note);
            let ports = |v: &[super::hosts::PortShare]| {
                v.iter()
                    .map(|p| format!("{} {:.1}%", p.port, p.percent))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                s,
                "Top TCP ports: real {}; synthetic {}.\n\nTop UDP ports: real {}; synthetic {}.\n",
                ports(&m.hosts.real.top_tcp_ports),
                ports(&m.hosts.synthetic.top_tcp_ports),
                ports(&m.hosts.real.top_udp_ports),
                ports(&m.hosts.synthetic.top_udp_ports)
            );
            let _ = writeln!(
                s,
                "Utility: {}\n\nPrivacy: {}",
                m.utility_note, m.privacy_note
            );
        }
        s
    }
}
