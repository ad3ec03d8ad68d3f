//! The per-certificate metric families, written straight into the Prometheus text
//! exposition format (version 0.0.4).
//!
//! These families are computed from the current state at scrape time (so
//! `ssl_cert_days_until_expiry` counts down between webhooks) and can number hundreds
//! of thousands of samples; writing them directly avoids building a protobuf object per
//! sample as the `prometheus` crate's collectors would. The exporter's own metrics still
//! go through that crate's registry (see `metrics`).

use std::fmt::Write;
use std::sync::Arc;

use crate::state::Certificate;

/// Longest `error` label value of `ssl_cert_install_error_info`, in characters.
pub const MAX_ERROR_LABEL_CHARS: usize = 256;

const SECONDS_PER_DAY: f64 = 86_400.0;

/// How one family gets its sample from a certificate.
enum Sample {
    /// A gauge value, or no sample when `None`.
    Value(fn(&Certificate, f64) -> Option<f64>),
    /// A counter value (always present).
    Count(fn(&Certificate) -> u64),
    /// `ssl_cert_info`: value 1 with the descriptive labels.
    Info,
    /// `ssl_cert_install_error_info`: value 1 with the error, while failing.
    Error,
}

/// One per-certificate metric family.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    sample: Sample,
}

const FAMILIES: [Family; 9] = [
    Family {
        name: "ssl_cert_days_until_expiry",
        help: "Days (fractional) from now until the certificate expires, computed at scrape time; negative once expired.",
        kind: "gauge",
        sample: Sample::Value(|c, now| c.expiry.map(|e| (e - now) / SECONDS_PER_DAY)),
    },
    Family {
        name: "ssl_cert_expiry_timestamp_seconds",
        help: "Expiry of the certificate as a Unix timestamp.",
        kind: "gauge",
        sample: Sample::Value(|c, _| c.expiry),
    },
    Family {
        name: "ssl_install_failures_total",
        help: "Cloud66 ssl_certificate.install.fail events received for the certificate.",
        kind: "counter",
        sample: Sample::Count(|c| c.install_failures),
    },
    Family {
        name: "ssl_install_successes_total",
        help: "Cloud66 ssl_certificate.install.ok events received for the certificate.",
        kind: "counter",
        sample: Sample::Count(|c| c.install_successes),
    },
    Family {
        name: "ssl_expire_soon_notifications_total",
        help: "Cloud66 ssl_certificate.expire.soon events received for the certificate.",
        kind: "counter",
        sample: Sample::Count(|c| c.expire_soon_notifications),
    },
    Family {
        name: "ssl_cert_install_failing",
        help: "1 while the newest install event of the certificate is a failure, else 0.",
        kind: "gauge",
        sample: Sample::Value(|c, _| Some(if c.install_failing { 1.0 } else { 0.0 })),
    },
    Family {
        name: "ssl_cert_last_event_timestamp_seconds",
        help: "Payload timestamp of the newest event received for the certificate.",
        kind: "gauge",
        sample: Sample::Value(|c, _| c.last_event_ts),
    },
    Family {
        name: "ssl_cert_info",
        help: "Descriptive fields of the certificate from its newest event; always 1.",
        kind: "gauge",
        sample: Sample::Info,
    },
    Family {
        name: "ssl_cert_install_error_info",
        help: "The error message of the failed newest install (truncated to 256 characters), present while it fails; always 1.",
        kind: "gauge",
        sample: Sample::Error,
    },
];

/// Where the families are split between two threads: the first five are single
/// numbers, the last four hold the long `_info` lines, so the halves are about equal.
const SPLIT: usize = 5;

/// Every per-certificate family for `certs`, as of Unix time `now`: one text per family,
/// in order, in two halves that follow each other. Each half is written on its own
/// thread (on one if a second cannot be started) in a single pass over the
/// certificates, appending to each of its families' texts in turn: a certificate is
/// read once per half rather than once per family, which matters once the certificates
/// no longer fit in the CPU caches (100,000 of them take about 40 MB).
pub fn write_certificates(certs: &[Arc<Certificate>], now: f64) -> [Vec<String>; 2] {
    let (first, second) = FAMILIES.split_at(SPLIT);
    let write = |families: &[Family]| write_families(families, certs, now);
    let (second, first) = crate::parallel::both(|| write(second), || write(first));
    [first, second]
}

fn write_families(families: &[Family], certs: &[Arc<Certificate>], now: f64) -> Vec<String> {
    let mut texts: Vec<String> = families
        .iter()
        .map(|family| {
            let mut text = String::with_capacity(certs.len() * family.line_bytes() + 512);
            let _ = writeln!(text, "# HELP {} {}", family.name, family.help);
            let _ = writeln!(text, "# TYPE {} {}", family.name, family.kind);
            text
        })
        .collect();
    for cert in certs {
        for (family, text) in families.iter().zip(&mut texts) {
            write_sample(text, family, cert, now);
        }
    }
    texts
}

impl Family {
    /// Room to reserve per certificate: about a line with typical labels (a text
    /// outgrows it only for long names).
    fn line_bytes(&self) -> usize {
        match self.sample {
            Sample::Value(_) | Sample::Count(_) => self.name.len() + 96,
            Sample::Info => self.name.len() + 256,
            // Only failing certificates have a line.
            Sample::Error => 0,
        }
    }
}

fn write_sample(out: &mut String, family: &Family, cert: &Certificate, now: f64) {
    let (stack, name) = (("stack", cert.stack.as_str()), ("name", cert.name.as_str()));
    match family.sample {
        Sample::Value(value) => {
            if let Some(value) = value(cert, now) {
                write_line(out, family.name, &[stack, name], value);
            }
        }
        Sample::Count(count) => {
            out.push_str(family.name);
            write_labels(out, &[stack, name]);
            let _ = writeln!(out, " {}", count(cert));
        }
        Sample::Info => {
            let info = &cert.info;
            fn field(value: &Option<String>) -> &str {
                value.as_deref().unwrap_or("")
            }
            let labels = [
                stack,
                name,
                ("server_names", field(&info.server_names)),
                ("lets_encrypt", field(&info.lets_encrypt)),
                ("has_intermediate_cert", field(&info.has_intermediate_cert)),
                ("ssl_termination", field(&info.ssl_termination)),
                ("status", field(&info.status)),
            ];
            write_line(out, family.name, &labels, 1.0);
        }
        Sample::Error => {
            if cert.install_failing {
                let error = truncate_chars(cert.error_message.as_deref().unwrap_or(""));
                write_line(out, family.name, &[stack, name, ("error", error)], 1.0);
            }
        }
    }
}

fn write_line(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    write_labels(out, labels);
    out.push(' ');
    write_float(out, value);
    out.push('\n');
}

fn write_labels(out: &mut String, labels: &[(&str, &str)]) {
    out.push('{');
    for (i, (key, value)) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(key);
        out.push_str("=\"");
        escape_label_value(out, value);
        out.push('"');
    }
    out.push('}');
}

/// Escapes a label value as the text format requires: backslash, double quote and
/// line feed; everything else (any UTF-8) is written as is.
fn escape_label_value(out: &mut String, value: &str) {
    if !value.bytes().any(|b| matches!(b, b'\\' | b'"' | b'\n')) {
        out.push_str(value);
        return;
    }
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            _ => out.push(ch),
        }
    }
}

/// Writes a sample value the way Prometheus parses it (`+Inf`, `-Inf`, `NaN`).
fn write_float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{value}");
    }
}

/// The first `MAX_ERROR_LABEL_CHARS` characters of `text` (never splitting a character).
fn truncate_chars(text: &str) -> &str {
    match text.char_indices().nth(MAX_ERROR_LABEL_CHARS) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::CertInfo;

    fn render(certs: Vec<Certificate>, now: f64) -> String {
        let certs: Vec<_> = certs.into_iter().map(Arc::new).collect();
        write_certificates(&certs, now).concat().concat()
    }

    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn a_failing_certificate_without_expiry() {
        let mut cert = Certificate::new("123", "web");
        cert.install_failing = true;
        cert.install_failures = 1;
        cert.last_event_ts = Some(1_640_995_200.0);
        cert.error_message = Some("bad".into());
        cert.info = CertInfo {
            status: Some("failed".into()),
            ..CertInfo::default()
        };
        let text = render(vec![cert], 0.0);
        assert_eq!(
            samples(&text),
            vec![
                r#"ssl_install_failures_total{stack="123",name="web"} 1"#,
                r#"ssl_install_successes_total{stack="123",name="web"} 0"#,
                r#"ssl_expire_soon_notifications_total{stack="123",name="web"} 0"#,
                r#"ssl_cert_install_failing{stack="123",name="web"} 1"#,
                r#"ssl_cert_last_event_timestamp_seconds{stack="123",name="web"} 1640995200"#,
                r#"ssl_cert_info{stack="123",name="web",server_names="",lets_encrypt="",has_intermediate_cert="",ssl_termination="",status="failed"} 1"#,
                r#"ssl_cert_install_error_info{stack="123",name="web",error="bad"} 1"#,
            ]
        );
        assert_eq!(text.matches("# TYPE ").count(), 9);
    }

    #[test]
    fn days_until_expiry_counts_down_from_now() {
        let mut cert = Certificate::new("1", "a");
        cert.expiry = Some(10.0 * SECONDS_PER_DAY);
        let text = render(vec![cert.clone()], 2.5 * SECONDS_PER_DAY);
        assert!(text.contains("ssl_cert_days_until_expiry{stack=\"1\",name=\"a\"} 7.5\n"));
        let text = render(vec![cert], 11.0 * SECONDS_PER_DAY);
        assert!(text.contains("ssl_cert_days_until_expiry{stack=\"1\",name=\"a\"} -1\n"));
        assert!(
            text.contains("ssl_cert_expiry_timestamp_seconds{stack=\"1\",name=\"a\"} 864000\n")
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let cert = Certificate::new("1", "a\"b\\c\nd ü");
        let text = render(vec![cert], 0.0);
        assert!(text.contains(r#"name="a\"b\\c\nd ü""#), "{text}");
    }

    #[test]
    fn error_label_is_truncated_on_a_character_boundary() {
        let mut cert = Certificate::new("1", "a");
        cert.install_failing = true;
        cert.error_message = Some("é".repeat(300));
        let text = render(vec![cert], 0.0);
        let expected = format!("error=\"{}\"", "é".repeat(256));
        assert!(text.contains(&expected));
        assert!(!text.contains(&"é".repeat(257)));
    }

    #[test]
    fn floats_use_prometheus_spelling() {
        let mut out = String::new();
        for v in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, 0.25, 3.0] {
            write_float(&mut out, v);
            out.push(' ');
        }
        assert_eq!(out, "NaN +Inf -Inf 0.25 3 ");
    }
}
