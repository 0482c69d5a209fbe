//! Prometheus text exposition format (version 0.0.4).

use std::fmt::Write as _;

/// Builds a `/metrics` body, one metric family after another.
#[derive(Default)]
pub struct Metrics {
    out: String,
}

/// Prometheus metric types used here.
#[derive(Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// Starts a family: its `# HELP` and `# TYPE` lines.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) -> &mut Self {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) -> &mut Self {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let val = val
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.out, "{key}=\"{val}\"");
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
        self
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_exposition_format() {
        let mut m = Metrics::new();
        m.single("hp_shares_total", Kind::Counter, "Shares accepted.", 42.0);
        m.family("hp_miner_hashrate", Kind::Gauge, "Per miner.\nH/s")
            .sample("hp_miner_hashrate", &[("miner", "a\"b\\c")], 1.5)
            .sample(
                "hp_miner_hashrate",
                &[("miner", "x"), ("id", "2")],
                f64::NAN,
            );
        assert_eq!(
            m.finish(),
            "# HELP hp_shares_total Shares accepted.\n\
             # TYPE hp_shares_total counter\n\
             hp_shares_total 42\n\
             # HELP hp_miner_hashrate Per miner.\\nH/s\n\
             # TYPE hp_miner_hashrate gauge\n\
             hp_miner_hashrate{miner=\"a\\\"b\\\\c\"} 1.5\n\
             hp_miner_hashrate{miner=\"x\",id=\"2\"} NaN\n"
        );
    }
}
