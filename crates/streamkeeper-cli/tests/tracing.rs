//! W3C Trace Context end to end (docs/design.md §11), against a real
//! redis-server and, with the `otel` feature, a local OTLP/HTTP receiver
//! in this test (a TCP listener decoding the protobuf export requests with
//! `opentelemetry-proto`, not a mock of the exporter):
//! - `produce` exports a `send` span and writes its context into each
//!   entry's `traceparent`;
//! - `consume` exports a `process` span per handler run, a child of the
//!   producer's span and linked to it, and hands the run's context on:
//!   `TRACEPARENT` to `--exec`, a `traceparent` key to `--pipe` workers
//!   (same trace id, the process span's id);
//! - without export, a caller's `TRACEPARENT` still flows into entries and
//!   handlers get the same trace id with a new span id.

use streamkeeper_testkit::RedisServer;

mod common;

use common::{cli, command, stderr};

/// `00-trace-span-flags` → (trace, span).
fn ids(traceparent: &str) -> (String, String) {
    let p: Vec<&str> = traceparent.trim().split('-').collect();
    assert_eq!(p.len(), 4, "{traceparent:?}");
    (p[1].to_string(), p[2].to_string())
}

/// The `traceparent` field of the first entry of `stream`.
fn entry_traceparent(server: &RedisServer, stream: &str) -> String {
    let out = cli(server, &["XRANGE", stream, "-", "+", "COUNT", "1"]);
    let lines: Vec<&str> = out.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == "traceparent")
        .unwrap_or_else(|| panic!("no traceparent field: {out}"));
    lines[at + 1].to_string()
}

#[test]
fn without_export_a_callers_traceparent_flows_into_entries_and_handlers() {
    let server = RedisServer::start().expect("redis");
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let o = command(&server, &["produce", "s", "--field", "k=v", "--quiet"])
        .env("TRACEPARENT", caller)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .expect("produce");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(entry_traceparent(&server, "s"), caller);
    let dir = tempfile::tempdir().expect("dir");
    let seen = dir.path().join("seen");
    let exec = format!("printf %s \"$TRACEPARENT\" > {}", seen.display());
    let o = command(
        &server,
        &[
            "consume", "s", "-g", "g", "--create", "--from", "-", "--count", "1", "--exec", &exec,
        ],
    )
    .env_remove("TRACEPARENT")
    .output()
    .expect("consume");
    assert!(o.status.success(), "{}", stderr(&o));
    let handed = std::fs::read_to_string(&seen).expect("the command ran");
    let (trace, span) = ids(&handed);
    assert_eq!(trace, "4bf92f3577b34da6a3ce929d0e0e4736", "same trace");
    assert_ne!(span, "00f067aa0ba902b7", "a span of its own");
    // An entry without a traceparent: the command gets none (not the
    // consumer's own environment's).
    cli(&server, &["XADD", "s", "*", "k", "v"]);
    let o = command(
        &server,
        &[
            "consume",
            "s",
            "-g",
            "g",
            "--count",
            "1",
            "--exec",
            &format!("printf %s \"${{TRACEPARENT-none}}\" > {}", seen.display()),
        ],
    )
    .env("TRACEPARENT", caller)
    .output()
    .expect("consume");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&seen).expect("ran"), "none");
    // --otlp-endpoint in a build without export is refused, one line, exit 2.
    #[cfg(not(feature = "otel"))]
    {
        let o = command(
            &server,
            &["--otlp-endpoint", "http://127.0.0.1:4318", "stat"],
        )
        .output()
        .expect("stat");
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("--features otel"), "{}", stderr(&o));
    }
}

#[cfg(feature = "otel")]
mod otlp {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    use streamkeeper_testkit::RedisServer;

    use super::common::{command, stderr};
    use super::{entry_traceparent, ids};

    /// A span as the receiver decoded it.
    #[derive(Debug, Clone)]
    struct Span {
        name: String,
        kind: i32,
        trace: String,
        id: String,
        parent: String,
        links: Vec<(String, String)>,
        attributes: Vec<(String, String)>,
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// An OTLP/HTTP receiver: answers every POST with 200 and keeps the spans
    /// of `/v1/traces` requests (protobuf).
    fn receiver() -> (String, Arc<Mutex<Vec<Span>>>) {
        use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
        use prost::Message;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let kept = spans.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let kept = kept.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                    let mut conn = conn;
                    loop {
                        let mut request = String::new();
                        if reader.read_line(&mut request).unwrap_or(0) == 0 {
                            return;
                        }
                        let mut length = 0usize;
                        loop {
                            let mut h = String::new();
                            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                if k.eq_ignore_ascii_case("content-length") {
                                    length = v.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0u8; length];
                        if reader.read_exact(&mut body).is_err() {
                            return;
                        }
                        if request.contains("/v1/traces") {
                            let req = ExportTraceServiceRequest::decode(body.as_slice())
                                .expect("protobuf");
                            let mut out = kept.lock().expect("lock");
                            for rs in req.resource_spans {
                                for ss in rs.scope_spans {
                                    for s in ss.spans {
                                        out.push(Span {
                                            name: s.name,
                                            kind: s.kind,
                                            trace: hex(&s.trace_id),
                                            id: hex(&s.span_id),
                                            parent: hex(&s.parent_span_id),
                                            links: s
                                                .links
                                                .iter()
                                                .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
                                                .collect(),
                                            attributes: s
                                                .attributes
                                                .iter()
                                                .map(|a| (a.key.clone(), format!("{:?}", a.value)))
                                                .collect(),
                                        });
                                    }
                                }
                            }
                        }
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n");
                    }
                });
            }
        });
        (url, spans)
    }

    #[test]
    fn a_produced_entry_is_one_trace_through_consume_exec_and_a_pipe_worker() {
        let server = RedisServer::start().expect("redis");
        let (url, spans) = receiver();
        let o = command(
            &server,
            &[
                "--otlp-endpoint",
                &url,
                "produce",
                "orders",
                "--field",
                "sku=a-1",
                "--count",
                "2",
                "--quiet",
            ],
        )
        .env_remove("TRACEPARENT")
        .output()
        .expect("produce");
        assert!(o.status.success(), "{}", stderr(&o));
        let written = entry_traceparent(&server, "orders");
        let (trace, producer_span) = ids(&written);
        let send: Vec<Span> = spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.name == "send orders")
            .cloned()
            .collect();
        assert_eq!(
            send.len(),
            1,
            "one send span, exported before produce exits: {:?}",
            spans.lock()
        );
        assert_eq!(
            (send[0].trace.as_str(), send[0].id.as_str()),
            (trace.as_str(), producer_span.as_str())
        );
        assert_eq!(send[0].kind, 4, "SPAN_KIND_PRODUCER");

        // --exec: the command gets the process span's context.
        let dir = tempfile::tempdir().expect("dir");
        let seen = dir.path().join("exec");
        let exec = format!("printf '%s\\n' \"$TRACEPARENT\" >> {}", seen.display());
        let o = command(
            &server,
            &[
                "--otlp-endpoint",
                &url,
                "consume",
                "orders",
                "-g",
                "billing",
                "--create",
                "--from",
                "-",
                "--count",
                "2",
                "--exec",
                &exec,
            ],
        )
        .output()
        .expect("consume");
        assert!(o.status.success(), "{}", stderr(&o));
        let handed: Vec<(String, String)> = std::fs::read_to_string(&seen)
            .expect("ran")
            .lines()
            .map(ids)
            .collect();
        assert_eq!(handed.len(), 2);
        let process: Vec<Span> = spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.name == "process orders")
            .cloned()
            .collect();
        assert_eq!(process.len(), 2, "a process span per handler run");
        for p in &process {
            assert_eq!(p.kind, 5, "SPAN_KIND_CONSUMER");
            assert_eq!(p.trace, trace, "the producer's trace");
            assert_eq!(p.parent, producer_span, "a child of the send span");
            assert_eq!(
                p.links,
                vec![(trace.clone(), producer_span.clone())],
                "linked to it"
            );
            assert!(
                p.attributes
                    .iter()
                    .any(|(k, v)| k == "messaging.consumer.group.name" && v.contains("billing")),
                "{:?}",
                p.attributes
            );
            assert!(
                handed.contains(&(trace.clone(), p.id.clone())),
                "TRACEPARENT names the process span: {handed:?} {p:?}"
            );
        }

        // --pipe: the worker's line carries the run's context.
        let worker = dir.path().join("worker.sh");
        let lines = dir.path().join("pipe");
        std::fs::write(
        &worker,
        format!(
            "while IFS= read -r line; do printf '%s\\n' \"$line\" >> {}; id=$(printf '%s' \"$line\" | sed 's/.*\"id\":\"\\([^\"]*\\)\".*/\\1/'); echo \"ack $id\"; done\n",
            lines.display()
        ),
    )
    .expect("worker");
        let o = command(
            &server,
            &[
                "--otlp-endpoint",
                &url,
                "consume",
                "orders",
                "-g",
                "audit",
                "--create",
                "--from",
                "-",
                "--count",
                "2",
                "--pipe",
                &format!("sh {}", worker.display()),
            ],
        )
        .output()
        .expect("consume --pipe");
        assert!(o.status.success(), "{}", stderr(&o));
        // What the receiver got (the README shows it).
        for s in spans.lock().expect("lock").iter() {
            let group = s
                .attributes
                .iter()
                .find(|(k, _)| k == "messaging.consumer.group.name")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            eprintln!(
                "span {:<15} kind={} trace={} span={} parent={:<16} {}",
                s.name, s.kind, s.trace, s.id, s.parent, group
            );
        }
        let fed: Vec<serde_json::Value> = std::fs::read_to_string(&lines)
            .expect("fed")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(fed.len(), 2);
        let audit: Vec<Span> = spans
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| {
                s.name == "process orders"
                    && s.attributes
                        .iter()
                        .any(|(k, v)| k == "messaging.consumer.group.name" && v.contains("audit"))
            })
            .cloned()
            .collect();
        assert_eq!(audit.len(), 2);
        for line in &fed {
            let (t, s) = ids(line["traceparent"].as_str().expect("traceparent key"));
            assert_eq!(t, trace);
            assert!(
                audit.iter().any(|p| p.id == s),
                "the key names a process span: {line}"
            );
        }
    }

    /// An endpoint nobody listens on: every entry is still handled, and
    /// stderr says once that spans are not exported.
    #[test]
    fn an_unreachable_collector_is_said_once_and_stops_nothing() {
        let server = RedisServer::start().expect("redis");
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", closed.local_addr().expect("addr"));
        drop(closed);
        let o = command(
            &server,
            &[
                "produce", "jobs", "--field", "n={i}", "--count", "600", "-q",
            ],
        )
        .output()
        .expect("produce");
        assert!(o.status.success(), "{}", stderr(&o));
        let o = command(
            &server,
            &[
                "--otlp-endpoint",
                &url,
                "consume",
                "jobs",
                "-g",
                "g",
                "--create",
                "--from",
                "-",
                "--count",
                "600",
                "--exec",
                "true",
            ],
        )
        .output()
        .expect("consume");
        assert!(o.status.success(), "{}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(
            err.matches("spans not exported").count(),
            1,
            "said once: {err}"
        );
        let pending = server.cli(&["XPENDING", "jobs", "g"]).expect("xpending");
        assert_eq!(pending.lines().next(), Some("0"), "all handled and acked");
    }
}
