//! Logging: the operator's tracing subscriber. It owns two guarantees the
//! `--log-level` filter cannot undo: third-party targets that can write HTTP
//! bodies or headers are capped ([`third_party_caps`]), and each text event is
//! exactly one line ([`OneLine`]), so no user string can forge a log line.

use std::io::{self, Write};

use tracing::level_filters::LevelFilter;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::filter::{FilterExt, ParseError, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// What `--log-level` falls back to when it is not a valid filter.
pub const FALLBACK_LEVEL: &str = "info";

/// How events are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event, control characters escaped.
    Text,
    /// One JSON object per line (serde_json escapes control characters).
    Json,
}

/// The most verbose level keymint lets each third-party target log, whatever
/// `--log-level` says. Read from the sources of the versions in Cargo.lock;
/// a target matches itself and everything under it (prefix match).
const CAPS: &[(&str, LevelFilter)] = &[
    // kube-client 5: `Client::request*` warns with the whole response body it
    // could not parse (a Secret's `data` included), debug-logs unparsable error
    // bodies and traces Status bodies and response headers. Its `error!` lines
    // (the TraceLayer's `on_failure`, in `client::builder`) carry a status code
    // or a transport error only.
    ("kube_client::client", LevelFilter::ERROR),
    // Within it, `tls` warns about a CA bundle that failed to reload (its path)
    // and about a bypassed server certificate: no body, and worth seeing.
    ("kube_client::client::tls", LevelFilter::WARN),
    // The HTTP stack below kube's client. Nothing above INFO is needed to run
    // an operator, and their debug/trace lines print connection internals that
    // may grow to headers (hyper's unstable h1 tracing logs parsed headers; h2
    // logs HPACK-decoded header fields) — the bearer token is a header.
    ("hyper", LevelFilter::INFO),
    ("hyper_util", LevelFilter::INFO),
    ("h2", LevelFilter::INFO),
    ("tower", LevelFilter::INFO),
    ("tower_http", LevelFilter::INFO),
    // rustls (through `log`) traces whole handshake messages, session tickets
    // included; its warnings (alerts, bad SNI) stay.
    ("rustls", LevelFilter::INFO),
    // Not capped: kube_runtime (watcher errors as `kube::Error`, which holds a
    // serde error's message and position, or an API Status, never a body),
    // kube_client::config and kube_lease_manager (Lease patches, identities).
];

/// The fixed caps as a per-layer filter: every other target passes untouched,
/// so the user's filter alone decides for keymint's own code.
pub fn third_party_caps() -> Targets {
    CAPS.iter().fold(
        Targets::new().with_default(LevelFilter::TRACE),
        |caps, (target, level)| caps.with_target(*target, *level),
    )
}

/// Parses `--log-level` (tracing `EnvFilter` syntax).
pub fn user_filter(level: &str) -> Result<EnvFilter, ParseError> {
    EnvFilter::try_new(level)
}

/// The subscriber keymint logs through, writing to `writer`: the user's filter
/// AND the fixed caps, so no directive (however specific) lifts a cap. An
/// invalid `level` falls back to [`FALLBACK_LEVEL`].
pub fn subscriber<W>(format: LogFormat, level: &str, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    with_caps(format, level, writer, third_party_caps())
}

fn with_caps<W>(
    format: LogFormat,
    level: &str,
    writer: W,
    caps: Targets,
) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let user = user_filter(level).unwrap_or_else(|_| EnvFilter::new(FALLBACK_LEVEL));
    // A per-layer filter: `And` asks both, and a user directive can only
    // narrow what the caps allow, never out-rank them as an appended
    // directive could.
    let filter = user.and(caps);
    let layer = match format {
        // No colours: escaping ESC (below) would turn them into text.
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(OneLine(writer))
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_ansi(false)
            .with_writer(writer)
            .with_filter(filter)
            .boxed(),
    };
    Registry::default().with(layer)
}

/// Installs the subscriber on stderr for the whole process; warns (once it can)
/// if `level` was not a valid filter.
pub fn init(format: LogFormat, level: &str) {
    if subscriber(format, level, io::stderr).try_init().is_err() {
        eprintln!("keymint: a logger was already installed; keeping it");
        return;
    }
    if let Err(error) = user_filter(level) {
        tracing::warn!(%error, fallback = FALLBACK_LEVEL, "--log-level is not a valid filter");
    }
}

/// A [`MakeWriter`] that makes each event exactly one line: the formatter
/// writes an event into a [`LineWriter`], which escapes every newline and
/// control character in it and keeps only the final newline.
pub struct OneLine<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLine<M> {
    type Writer = LineWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter::new(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        LineWriter::new(self.0.make_writer_for(meta))
    }
}

/// Collects one event and writes it, escaped, in one `write_all` when dropped
/// (the formatter drops it after each event), so concurrent events on stderr
/// do not interleave inside a line either.
pub struct LineWriter<W: Write> {
    inner: W,
    buffer: Vec<u8>,
}

impl<W: Write> LineWriter<W> {
    fn new(inner: W) -> Self {
        LineWriter {
            inner,
            buffer: Vec::with_capacity(256),
        }
    }
}

impl<W: Write> Write for LineWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // Nothing leaves before the event is whole: a partial line could be
        // followed by another thread's.
        Ok(())
    }
}

impl<W: Write> Drop for LineWriter<W> {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buffer);
        let mut line = escape_line(text.strip_suffix('\n').unwrap_or(&text));
        line.push('\n');
        // A logger has nowhere to report its own write errors.
        let _ = self.inner.write_all(line.as_bytes());
        let _ = self.inner.flush();
    }
}

/// `text` with newlines, carriage returns, tabs, every other control character
/// and the characters that reorder or break lines in viewers (Unicode line
/// separators, bidirectional overrides) escaped as `\n`, `\r`, `\t`, `\u{..}`.
pub fn escape_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if must_escape(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tracing::Level;

    /// Everything the subscriber wrote, shared with the test.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("capture").extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Capture {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().expect("capture").clone()).expect("utf-8")
        }
    }

    /// Runs `emit` under a subscriber (with `caps`) and returns what it wrote.
    fn capture_with(format: LogFormat, level: &str, caps: Targets, emit: impl FnOnce()) -> String {
        let capture = Capture::default();
        let writer = capture.clone();
        let subscriber = with_caps(format, level, move || writer.clone(), caps);
        tracing::subscriber::with_default(subscriber, emit);
        capture.text()
    }

    fn capture(format: LogFormat, level: &str, emit: impl FnOnce()) -> String {
        capture_with(format, level, third_party_caps(), emit)
    }

    /// The caps removed: what the user's filter alone lets through.
    fn uncapped() -> Targets {
        Targets::new().with_default(LevelFilter::TRACE)
    }

    /// Targets emitted by [`emit_everywhere`], with the cap each must obey
    /// (`None`: not capped).
    const EMITTED: &[(&str, Option<LevelFilter>)] = &[
        ("kube_client::client", Some(LevelFilter::ERROR)),
        ("kube_client::client::builder", Some(LevelFilter::ERROR)),
        ("kube_client::client::tls", Some(LevelFilter::WARN)),
        ("hyper::proto::h1::role", Some(LevelFilter::INFO)),
        ("hyper_util::client::legacy::pool", Some(LevelFilter::INFO)),
        ("h2::codec", Some(LevelFilter::INFO)),
        ("tower::buffer", Some(LevelFilter::INFO)),
        ("tower_http::trace", Some(LevelFilter::INFO)),
        ("rustls::client::hs", Some(LevelFilter::INFO)),
        ("kube_client::config", None),
        ("kube_runtime::watcher", None),
        ("keymint::controller", None),
    ];

    /// Emits one event per level for `$target`, tagged `<target>@<LEVEL>`.
    macro_rules! every_level {
        ($target:literal) => {
            tracing::error!(target: $target, tag = concat!($target, "@ERROR"));
            tracing::warn!(target: $target, tag = concat!($target, "@WARN"));
            tracing::info!(target: $target, tag = concat!($target, "@INFO"));
            tracing::debug!(target: $target, tag = concat!($target, "@DEBUG"));
            tracing::trace!(target: $target, tag = concat!($target, "@TRACE"));
        };
    }

    fn emit_everywhere() {
        every_level!("kube_client::client");
        every_level!("kube_client::client::builder");
        every_level!("kube_client::client::tls");
        every_level!("hyper::proto::h1::role");
        every_level!("hyper_util::client::legacy::pool");
        every_level!("h2::codec");
        every_level!("tower::buffer");
        every_level!("tower_http::trace");
        every_level!("rustls::client::hs");
        every_level!("kube_client::config");
        every_level!("kube_runtime::watcher");
        every_level!("keymint::controller");
        // The same inside a span the user may name in a span directive.
        let span = tracing::info_span!(target: "keymint::controller", "HTTP");
        let _entered = span.enter();
        tracing::debug!(target: "kube_client::client", tag = "in-span:kube_client::client@DEBUG");
        tracing::trace!(target: "keymint::controller", tag = "in-span:keymint::controller@TRACE");
    }

    const LEVELS: [Level; 5] = [
        Level::ERROR,
        Level::WARN,
        Level::INFO,
        Level::DEBUG,
        Level::TRACE,
    ];

    fn reached(output: &str, target: &str, level: Level) -> bool {
        output.contains(&format!("tag=\"{target}@{level}\""))
    }

    /// Every level string the operator is documented or tested with, and the
    /// most verbose level keymint's own events must reach at (`None`: none).
    const CASES: &[(&str, Option<Level>)] = &[
        ("trace", Some(Level::TRACE)),
        ("debug", Some(Level::DEBUG)),
        ("info", Some(Level::INFO)),
        ("warn", Some(Level::WARN)),
        ("error", Some(Level::ERROR)),
        ("kube_client=trace", None),
        ("kube_client::client=trace", None),
        (
            "trace,kube_client=trace,hyper=trace,h2=trace,rustls=trace,tower=trace",
            Some(Level::TRACE),
        ),
        ("kube_client::client=trace,hyper=trace,h2=trace", None),
        (
            "debug,kube_client::client::builder=trace,kube_client::client::tls=trace,tower_http=trace,hyper_util=trace",
            Some(Level::DEBUG),
        ),
        ("keymint=debug,kube_client=trace", Some(Level::DEBUG)),
        // The default the e2e tests ran with before this module.
        (
            "debug,hyper=info,tower=info,kube_client=info,rustls=info,h2=info",
            Some(Level::DEBUG),
        ),
        (
            "info,[HTTP]=trace,kube_client::client[HTTP]=trace",
            Some(Level::INFO),
        ),
    ];

    #[test]
    fn caps_hold_whatever_the_level_string() {
        for (level, own) in CASES {
            let output = capture(LogFormat::Text, level, emit_everywhere);
            for (target, cap) in EMITTED {
                for event_level in LEVELS {
                    if cap.is_some_and(|cap| event_level > cap) {
                        assert!(
                            !reached(&output, target, event_level),
                            "--log-level {level}: {target} at {event_level} passed its cap:\n{output}"
                        );
                    }
                }
            }
            for event_level in LEVELS {
                let expected = own.is_some_and(|own| event_level <= own);
                assert_eq!(
                    reached(&output, "keymint::controller", event_level),
                    expected,
                    "--log-level {level}: keymint's own {event_level} event:\n{output}"
                );
            }
            assert!(
                !output.contains("in-span:kube_client::client"),
                "{level}: {output}"
            );
            if level.contains("[HTTP]=trace") {
                // Span directives still work for keymint's own code.
                assert!(
                    output.contains("in-span:keymint::controller@TRACE"),
                    "{level}: {output}"
                );
            }
        }
    }

    /// With the caps, the output is exactly the user's filter minus what is
    /// above a cap; and at the verbose levels the caps remove something, so
    /// the assertions above would fail without them.
    #[test]
    fn caps_remove_exactly_what_is_above_them() {
        for (level, _) in CASES {
            let capped = capture(LogFormat::Text, level, emit_everywhere);
            let user_only = capture_with(LogFormat::Text, level, uncapped(), emit_everywhere);
            for (target, cap) in EMITTED {
                for event_level in LEVELS {
                    let allowed_by_user = reached(&user_only, target, event_level);
                    let under_cap = cap.is_none_or(|cap| event_level <= cap);
                    assert_eq!(
                        reached(&capped, target, event_level),
                        allowed_by_user && under_cap,
                        "--log-level {level}: {target} at {event_level}"
                    );
                }
            }
        }
        for level in ["trace", "kube_client=trace", "kube_client::client=trace"] {
            let user_only = capture_with(LogFormat::Text, level, uncapped(), emit_everywhere);
            assert!(
                reached(&user_only, "kube_client::client", Level::TRACE),
                "without the caps, {level} lets kube_client::client trace through"
            );
        }
    }

    #[test]
    fn kube_clients_body_warning_never_reaches_the_log() {
        // kube-client's own line, at the level it uses, with a Secret's body.
        let body = r#"{"kind":"Secret","apiVersion":"v1","data":{"key":"YWtfc2VjcmV0"}}"#;
        for (level, _) in CASES {
            for format in [LogFormat::Text, LogFormat::Json] {
                let output = capture(format, level, || {
                    tracing::warn!(target: "kube_client::client", "{}, {:?}", body, "Error(\"input is out of range\")");
                    tracing::debug!(target: "kube_client::client", "Unsuccessful data error parse: {body}");
                    tracing::trace!(target: "kube_client::client", "Status from {}", body);
                    tracing::trace!(target: "kube_client::client", "headers: {:?}", "authorization: Bearer x");
                    tracing::error!(target: "kube_client::client::builder", "failed with status {}", 500);
                });
                assert!(
                    !output.contains("YWtfc2VjcmV0"),
                    "{level} {format:?}: {output}"
                );
                assert!(!output.contains("Bearer"), "{level} {format:?}: {output}");
                assert!(
                    output.contains("failed with status 500"),
                    "{level} {format:?}: kube's error lines stay: {output}"
                );
            }
        }
        let uncapped = capture_with(LogFormat::Text, "warn", uncapped(), || {
            tracing::warn!(target: "kube_client::client", "{}, {:?}", body, "e");
        });
        assert!(
            uncapped.contains("YWtfc2VjcmV0"),
            "the harness sees the line without caps"
        );
    }

    #[test]
    fn a_text_event_is_one_line_whatever_its_fields_hold() {
        let forged = "x\nFORGED line";
        let output = capture(LogFormat::Text, "info", || {
            let span = tracing::info_span!("reconcile", owner = %"a\r\nINFO forged span");
            let _entered = span.enter();
            tracing::info!(owner = %forged, "message\nwith\u{1b}[31m escapes\u{2028}and\u{0}");
            tracing::warn!("{}", forged);
        });
        assert_eq!(
            output.matches('\n').count(),
            2,
            "two events, two lines: {output:?}"
        );
        assert!(output.ends_with('\n'));
        for line in output.lines() {
            assert!(
                !line.contains(['\r', '\u{1b}', '\u{2028}', '\u{0}']),
                "{line:?}"
            );
            assert!(
                line.contains(r"a\r\nINFO forged span"),
                "span fields escaped: {line:?}"
            );
        }
        assert!(output.contains(r"owner=x\nFORGED line"), "{output}");
        // tracing-subscriber writes a message's ESC as `\x1b` itself; the rest is ours.
        assert!(output.contains(r"message\nwith"), "{output}");
        assert!(output.contains(r"[31m escapes\u{2028}and\u{0}"), "{output}");
        assert!(!output.lines().any(|l| l.starts_with("FORGED")), "{output}");
    }

    #[test]
    fn a_json_event_is_one_line_and_keeps_the_value() {
        let forged = "x\nFORGED line\u{1b}";
        let output = capture(LogFormat::Json, "info", || {
            tracing::info!(owner = %forged, "done");
        });
        assert_eq!(output.matches('\n').count(), 1, "{output:?}");
        let event: serde_json::Value = serde_json::from_str(output.trim_end()).expect("json");
        assert_eq!(event["fields"]["owner"], forged);
    }

    #[test]
    fn an_invalid_level_falls_back_to_info() {
        for level in ["keymint=loud", "[unclosed", "info,=debug=trace"] {
            assert!(user_filter(level).is_err(), "{level} is invalid");
            let output = capture(LogFormat::Text, level, || {
                tracing::info!(target: "keymint::controller", tag = "own@INFO");
                tracing::debug!(target: "keymint::controller", tag = "own@DEBUG");
                tracing::info!(target: "kube_client::client", tag = "kube@INFO");
            });
            assert!(output.contains("own@INFO"), "{level}: {output}");
            assert!(!output.contains("own@DEBUG"), "{level}: {output}");
            assert!(!output.contains("kube@INFO"), "{level}: {output}");
        }
    }

    #[test]
    fn escape_line_escapes_controls_and_line_breakers_only() {
        assert_eq!(
            escape_line("plain ünïcode / \\ \"q\""),
            "plain ünïcode / \\ \"q\""
        );
        assert_eq!(escape_line("a\nb\rc\td"), r"a\nb\rc\td");
        assert_eq!(
            escape_line("\u{1b}[2J\u{7f}\u{85}"),
            r"\u{1b}[2J\u{7f}\u{85}"
        );
        assert_eq!(
            escape_line("\u{2028}\u{202e}\u{2066}"),
            r"\u{2028}\u{202e}\u{2066}"
        );
    }

    #[test]
    fn line_writer_writes_once_per_event() {
        let capture = Capture::default();
        {
            let mut writer = LineWriter::new(capture.clone());
            writer.write_all(b"part one\n").expect("write");
            writer.write_all(b"part two\n").expect("write");
            writer.flush().expect("flush");
            assert!(
                capture.text().is_empty(),
                "nothing before the event is whole"
            );
        }
        assert_eq!(capture.text(), "part one\\npart two\n");
    }
}
