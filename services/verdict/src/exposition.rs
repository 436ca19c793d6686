//! A strict reading of the Prometheus text exposition (format 0.0.4) that
//! `/metrics` serves: every line is a comment, blank, or a sample
//! `name{label="value",...} value [timestamp]`. Anything else is refused
//! with its line number, so a proxy's error page or a truncated body can
//! never read as "0 lost".

use std::collections::BTreeMap;

use crate::names::Metric;

/// Why a body is not an exposition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The body holds no sample at all (an empty answer, an HTML page that
    /// happened to have only comment-like lines).
    #[error("no sample in the body: not a /metrics exposition")]
    Empty,
    /// The body does not end with a newline, as every exposition does: it
    /// was cut short, and its last value may be cut too (`12` read as `1`).
    #[error("the body does not end with a newline: cut short")]
    Truncated,
    /// A series given twice (a doubled or spliced body): which value
    /// counts cannot be told.
    #[error("line {line}: {series} given a second time")]
    Duplicate {
        /// 1-based line number of the second one.
        line: usize,
        /// The series.
        series: String,
    },
    /// A line that is neither a comment nor a sample.
    #[error("line {line}: {why}: {text:?}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        why: &'static str,
        /// The line, cut to 120 characters.
        text: String,
    },
}

/// One sample: a series and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name (`gsd_server_drains_total`).
    pub name: String,
    /// Its labels, sorted by name.
    pub labels: BTreeMap<String, String>,
    /// The value; NaN and ±Inf are kept as such.
    pub value: f64,
}

/// Every sample of one `/metrics` body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Exposition {
    /// In the order of the body.
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// Parses `body`, refusing the first line that is not an exposition's.
    pub fn parse(body: &str) -> Result<Exposition, ParseError> {
        let mut samples = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, raw) in body.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |why| ParseError::Line { line: i + 1, why, text: line.chars().take(120).collect() };
            let s = sample(line).map_err(bad)?;
            if !seen.insert((s.name.clone(), s.labels.clone())) {
                return Err(ParseError::Duplicate {
                    line: i + 1,
                    series: line.rsplitn(2, ' ').last().unwrap_or(line).to_owned(),
                });
            }
            samples.push(s);
        }
        if samples.is_empty() {
            return Err(ParseError::Empty);
        }
        if !body.ends_with('\n') {
            return Err(ParseError::Truncated);
        }
        Ok(Exposition { samples })
    }

    /// The value of `metric` with exactly `labels` (none: the unlabelled
    /// series), if the body has it.
    pub fn get(&self, metric: Metric, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == metric.name()
                    && s.labels.len() == labels.len()
                    && labels.iter().all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
            })
            .map(|s| s.value)
    }

    /// Every series of `metric`, by the value of its label `label`.
    pub fn by_label(&self, metric: Metric, label: &str) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter(|s| s.name == metric.name())
            .filter_map(|s| Some((s.labels.get(label)?.clone(), s.value)))
            .collect()
    }
}

/// One sample line.
fn sample(line: &str) -> Result<Sample, &'static str> {
    let name_end = line.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = label_set(after, &mut labels)?;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|_| "the value is not a number")?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>().map_err(|_| "the timestamp is not an integer")?;
    }
    if fields.next().is_some() || !rest.starts_with([' ', '\t']) {
        return Err("not `name{labels} value [timestamp]`");
    }
    Ok(Sample { name: name.to_owned(), labels, value })
}

/// `k="v",...}`: the labels into `into`, and what follows the `}`.
fn label_set<'a>(mut s: &'a str, into: &mut BTreeMap<String, String>) -> Result<&'a str, &'static str> {
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('}') {
            return Ok(rest);
        }
        let eq = s.find('=').ok_or("a label without `=`")?;
        let key = s[..eq].trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err("a bad label name");
        }
        s = s[eq + 1..].trim_start().strip_prefix('"').ok_or("a label value without quotes")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next().ok_or("an unterminated label value")? {
                (i, '"') => break i,
                (_, '\\') => match chars.next().ok_or("an unterminated label value")?.1 {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    _ => return Err("a bad escape in a label value"),
                },
                (_, c) => value.push(c),
            }
        };
        if into.insert(key.to_owned(), value).is_some() {
            return Err("a label given twice");
        }
        s = s[end + 1..].trim_start();
        if let Some(rest) = s.strip_prefix(',') {
            s = rest;
        } else if !s.starts_with('}') {
            return Err("labels not separated by `,`");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names;

    #[test]
    fn samples_are_read_with_their_labels_comments_skipped() {
        let drains = names::SERVER_DRAINS;
        let body = format!(
            "# HELP {drains} Drained sessions.\n# TYPE {drains} counter\n\
             {} 3\n{} 0\n{} 7 1700000000000\n\
             x{{a=\"q\\\"uote\\\\d\\n\",b=\"\"}} NaN\n",
            drains.at(&[("outcome", "complete")]),
            drains.at(&[("outcome", "incomplete")]),
            names::SERVER_SESSIONS,
        );
        let body = body.as_str();
        let e = Exposition::parse(body).unwrap();
        assert_eq!(e.get(names::SERVER_DRAINS, &[("outcome", "complete")]), Some(3.0));
        assert_eq!(e.get(names::SERVER_SESSIONS, &[]), Some(7.0));
        assert_eq!(e.get(names::SERVER_DRAINS, &[]), None, "labels must match exactly");
        assert_eq!(e.by_label(names::SERVER_DRAINS, "outcome").len(), 2);
        assert_eq!(e.samples[3].labels["a"], "q\"uote\\d\n");
        assert!(e.samples[3].value.is_nan());
    }

    #[test]
    fn garbage_is_refused_with_its_line() {
        for (body, line, why) in [
            ("<html><body>502 Bad Gateway</body></html>", 1, "no metric name"),
            ("sessions 3\nsessions three\n", 2, "the value is not a number"),
            ("sessions\n", 1, "no value"),
            ("x{a=\"1\" 2\n", 1, "labels not separated by `,`"),
            ("x{a=1} 2\n", 1, "a label value without quotes"),
            ("x{a=\"1\",a=\"2\"} 2\n", 1, "a label given twice"),
            ("x{a=\"1} 2\n", 1, "an unterminated label value"),
            ("x 1 2 3\n", 1, "not `name{labels} value [timestamp]`"),
            ("x 1 later\n", 1, "the timestamp is not an integer"),
            ("x{a=\"\\q\"} 1\n", 1, "a bad escape in a label value"),
        ] {
            match Exposition::parse(body) {
                Err(ParseError::Line { line: l, why: w, .. }) => assert_eq!((l, w), (line, why), "{body:?}"),
                other => panic!("{body:?}: {other:?}"),
            }
        }
        assert_eq!(Exposition::parse("x 1\ny 12"), Err(ParseError::Truncated), "cut after `y 12` or `y 1`");
        assert_eq!(
            Exposition::parse("x{a=\"1\"} 1\ny 2\nx{a=\"1\"} 3\n"),
            Err(ParseError::Duplicate { line: 3, series: "x{a=\"1\"}".into() })
        );
        assert_eq!(Exposition::parse(""), Err(ParseError::Empty));
        assert_eq!(Exposition::parse("# only a comment\n\n"), Err(ParseError::Empty));
    }
}
