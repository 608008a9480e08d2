//! The grammar's tests, ripgrep-style: `Cli::try_parse_from` per flag
//! group (connection, produce and read, consume, group, dlq and shard,
//! janitor, stat and serve, schedule, bench), each typed flag accepted and
//! refused, defaults asserted. A refusal is clap's error, which `main.rs`
//! turns into one line and exit 2.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{CommandFactory, Parser};
use streamkeeper::janitor::Archive;
use streamkeeper::scheduler::Missed;
use streamkeeper::{StartFrom, StreamId};

use super::consume::MaxDeliveries;
use super::{
    AckArg, BenchMode, Cli, Command, DlqAction, GroupAction, ScheduleAction, ShardAction,
    BUILTIN_WORKER,
};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("streamkeeper").chain(args.iter().copied()))
}

/// The command of a line that must parse.
fn ok(args: &[&str]) -> Command {
    match parse(args) {
        Ok(cli) => cli.command,
        Err(e) => panic!("{args:?} was refused: {e}"),
    }
}

/// Asserts that a line is refused as a usage error whose text names
/// `needle` (the flag, or what is wrong with its value).
fn refused(args: &[&str], needle: &str) {
    match parse(args) {
        Ok(cli) => panic!("{args:?} was accepted: {:?}", cli.command),
        Err(e) => {
            assert!(e.use_stderr(), "{args:?}: not a usage error: {e}");
            let text = e.render().to_string();
            assert!(
                text.contains(needle),
                "{args:?}: {needle:?} not in {text:?}"
            );
        }
    }
}

fn id(ms: u64, seq: u64) -> StreamId {
    StreamId::new(ms, seq)
}

fn start(s: &str) -> StartFrom {
    let Command::Tail(t) = ok(&["tail", "s", "--from", s]) else {
        panic!("tail")
    };
    t.from.expect("--from")
}

#[test]
fn the_grammar_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn produce_holds_writes_after_a_failover_only_when_asked() {
    for (args, hold) in [
        (&["produce", "s", "-f", "k=v"][..], false),
        (&["produce", "s", "-f", "k=v", "--hold-writes"], true),
    ] {
        let Command::Produce(p) = parse(args).expect("ok").command else {
            panic!("produce")
        };
        assert_eq!(p.hold_writes, hold, "{args:?}");
    }
}

#[test]
fn typed_values_are_parsed_once_by_clap() {
    let cli = parse(&["consume", "orders", "-g", "billing", "--batch", "5"]).expect("ok");
    let Command::Consume(c) = cli.command else {
        panic!("consume")
    };
    assert_eq!(c.stream.as_str(), "orders");
    assert_eq!(c.group.as_str(), "billing");
    assert_eq!(c.batch, 5);
    let cli = parse(&["group", "reset", "s", "g", "--to", "0-0"]).expect("ok");
    assert!(matches!(
        cli.command,
        Command::Group(super::GroupArgs {
            action: GroupAction::Reset { .. }
        })
    ));
    let cli = parse(&["janitor", "a", "b", "--interval", "2s"]).expect("ok");
    let Command::Janitor(j) = cli.command else {
        panic!("janitor")
    };
    assert_eq!(j.streams.len(), 2);
    assert_eq!(j.interval, Duration::from_secs(2));
}

#[test]
fn lease_needs_ordered_and_half_a_second() {
    let ok = parse(&["consume", "s", "-g", "g", "--ordered", "--lease", "2s"]).expect("ok");
    let Command::Consume(c) = ok.command else {
        panic!("consume")
    };
    assert_eq!(c.lease, Duration::from_secs(2));
    assert!(parse(&["consume", "s", "-g", "g", "--lease", "2s"]).is_err());
    assert!(parse(&["consume", "s", "-g", "g", "--ordered", "--lease", "100ms"]).is_err());
    assert!(parse(&["consume", "s", "-g", "g", "--ordered", "--lease", "0s"]).is_err());
}

#[test]
fn zero_empty_and_negative_values_are_refused() {
    for args in [
        &["stat", "--watch", "0s"][..],
        &["janitor", "s", "--interval", "0ms"],
        &["consume", "s", "-g", "g", "--batch", "0"],
        &["consume", "s", "-g", "g", "--concurrency", "0"],
        &["consume", "s", "-g", "g", "--idle-exit", "0s"],
        &["consume", "s", "-g", ""],
        &["produce", "", "--field", "a=1"],
        &["produce", "s", "--field", "a=1", "--maxlen", "0"],
        &["produce", "s", "--field", "a=1", "--count", "-1"],
        &["produce", "s", "--field", "=1"],
        &["tail", "s", "--count", "-5"],
        &["tail", "s", "--from", "yesterday"],
        &["group", "reset", "s", "g", "--to", "soon"],
        &["dlq", "purge", "s", "--before", "x-y"],
    ] {
        assert!(parse(args).is_err(), "{args:?} was accepted");
    }
}

#[test]
fn tz_is_optional_and_only_parsed_as_given() {
    let cli = parse(&["schedule", "add", "n", "--every", "1s", "--to", "t"]).expect("ok");
    let Command::Schedule(s) = cli.command else {
        panic!("schedule")
    };
    let ScheduleAction::Add { tz, .. } = s.action else {
        panic!("add")
    };
    assert_eq!(tz, None);
}

mod connection {
    use super::*;

    #[test]
    fn redis_json_quiet_and_verbose_are_global() {
        let cli = parse(&["doctor", "--redis", "redis://h:1", "--json", "-q", "-vv"]).expect("ok");
        assert_eq!(cli.redis.as_deref(), Some("redis://h:1"));
        assert_eq!(cli.global().url(), "redis://h:1");
        assert!(cli.json && cli.quiet);
        assert_eq!(cli.verbose, 2);
        let cli = parse(&["--redis", "unix:///tmp/r.sock", "stat"]).expect("ok");
        assert_eq!(cli.global().url(), "unix:///tmp/r.sock");
    }

    #[test]
    fn without_redis_the_default_url_is_used() {
        // The environment may name a server; the default applies without it.
        if std::env::var_os("STREAMKEEPER_REDIS").is_some() {
            return;
        }
        let cli = parse(&["doctor"]).expect("ok");
        assert_eq!(cli.redis, None);
        assert_eq!(cli.global().url(), super::super::DEFAULT_URL);
        assert!(!cli.json && !cli.quiet);
        assert_eq!(cli.verbose, 0);
    }

    #[test]
    fn help_lists_every_url_scheme() {
        let mut cmd = Cli::command();
        let redis = cmd
            .get_arguments()
            .find(|a| a.get_id() == "redis")
            .and_then(|a| a.get_help())
            .map(ToString::to_string)
            .expect("--redis has help");
        let long = cmd.render_long_help().to_string();
        for scheme in [
            "redis://",
            "rediss://",
            "unix://",
            "redis+sentinel://",
            "redis+cluster://",
        ] {
            assert!(
                redis.contains(scheme),
                "--redis help lacks {scheme}: {redis}"
            );
            assert!(long.contains(scheme), "--help lacks {scheme}");
        }
    }

    #[test]
    fn a_command_is_required_and_unknown_flags_are_refused() {
        assert!(parse(&[]).is_err());
        refused(&["doctor", "--colour"], "--colour");
        refused(&["fly"], "fly");
    }
}

mod produce_and_read {
    use super::*;

    #[test]
    fn produce_defaults() {
        let Command::Produce(p) = ok(&["produce", "orders"]) else {
            panic!("produce")
        };
        assert_eq!(p.stream, "orders");
        assert!(p.fields.is_empty());
        assert_eq!(
            (p.count, p.rate, p.maxlen, p.wait),
            (None, None, None, None)
        );
        assert_eq!(p.wait_timeout, Duration::from_secs(1));
        assert_eq!((p.key, p.key_field), (None, None));
    }

    #[test]
    fn produce_fields_keep_everything_after_the_first_equals_sign() {
        let Command::Produce(p) =
            ok(&["produce", "s", "-f", "a=1", "--field", "b=x=y", "-f", "c="])
        else {
            panic!("produce")
        };
        let fields: Vec<(&str, &str)> = p
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(fields, [("a", "1"), ("b", "x=y"), ("c", "")]);
        refused(&["produce", "s", "-f", "novalue"], "NAME=VALUE");
        refused(&["produce", "s", "-f", "=1"], "NAME=VALUE");
    }

    #[test]
    fn produce_rates_take_a_unit() {
        for (given, per_second) in [
            ("100", 100.0),
            ("100/s", 100.0),
            ("6000/m", 100.0),
            ("7200/h", 2.0),
        ] {
            let Command::Produce(p) = ok(&["produce", "s", "--rate", given]) else {
                panic!("produce")
            };
            assert_eq!(p.rate, Some(per_second), "{given}");
        }
        refused(&["produce", "s", "--rate", "5/d"], "use /s, /m or /h");
        refused(&["produce", "s", "--rate", "0/s"], "positive");
        refused(&["produce", "s", "--rate", "fast"], "like 100/s");
    }

    #[test]
    fn produce_wait_timeout_needs_wait_and_key_excludes_key_field() {
        let Command::Produce(p) = ok(&["produce", "s", "--wait", "1", "--wait-timeout", "250ms"])
        else {
            panic!("produce")
        };
        assert_eq!(
            (p.wait, p.wait_timeout),
            (Some(1), Duration::from_millis(250))
        );
        refused(&["produce", "s", "--wait-timeout", "2s"], "--wait");
        refused(
            &["produce", "s", "--wait", "1", "--wait-timeout", "1"],
            "500ms",
        );
        refused(&["produce", "s", "--key", "a", "--key-field", "b"], "--key");
    }

    #[test]
    fn tail_from_takes_every_start_spelling() {
        assert_eq!(start("$"), StartFrom::End);
        assert_eq!(start("-"), StartFrom::Beginning);
        assert_eq!(start("0"), StartFrom::Beginning);
        assert_eq!(start("0-0"), StartFrom::Beginning);
        assert_eq!(start("1-0"), StartFrom::After(id(1, 0)));
        assert_eq!(start("1"), StartFrom::After(id(1, 0)));
        assert_eq!(
            start("1700000000000-7"),
            StartFrom::After(id(1_700_000_000_000, 7))
        );
        assert_eq!(
            start("2024-01-01T00:00:00Z"),
            StartFrom::Time(UNIX_EPOCH + Duration::from_secs(1_704_067_200))
        );
        let StartFrom::Time(t) = start("10m ago") else {
            panic!("a relative time")
        };
        let ago = SystemTime::now().duration_since(t).expect("in the past");
        assert!(ago >= Duration::from_secs(600) && ago < Duration::from_secs(660));
        refused(&["tail", "s", "--from", "yesterday"], "invalid start");
        refused(&["tail", "s", "--from", "1-x"], "invalid start");
    }

    #[test]
    fn tail_defaults() {
        let Command::Tail(t) = ok(&["tail", "s"]) else {
            panic!("tail")
        };
        assert_eq!((t.from, t.count, t.follow), (None, None, false));
        refused(&["tail", ""], "stream key must not be empty");
    }

    #[test]
    fn dump_bounds_are_ids_or_times() {
        let Command::Dump(d) = ok(&["dump", "s"]) else {
            panic!("dump")
        };
        assert_eq!((d.from, d.to, d.output), (None, None, None));
        let Command::Dump(d) = ok(&["dump", "s", "--from", "0", "--to", "$"]) else {
            panic!("dump")
        };
        assert_eq!((d.from, d.to), (Some(StreamId::MIN), Some(StreamId::MAX)));
        let Command::Dump(d) = ok(&["dump", "s", "--from", "5-1", "--to", "2024-01-01T00:00:00Z"])
        else {
            panic!("dump")
        };
        assert_eq!(d.from, Some(id(5, 1)));
        assert_eq!(d.to, Some(id(1_704_067_200_000, 0)));
        refused(&["dump", "s", "--from", "soon"], "--from");
        refused(&["dump", "s", "--to", "x-1"], "--to");
    }

    #[test]
    fn restore_defaults() {
        let Command::Restore(r) = ok(&["restore", "s", "-i", "d.jsonl"]) else {
            panic!("restore")
        };
        assert_eq!(r.stream, "s");
        assert_eq!(r.input.as_deref(), Some(std::path::Path::new("d.jsonl")));
        assert!(!r.keep_ids && !r.skip_bad);
        refused(&["restore", ""], "stream key");
    }
}

mod consume {
    use super::*;

    #[test]
    fn relative_times_with_a_leading_dash_are_values_not_flags() {
        let Command::Group(g) = ok(&["group", "reset", "s", "g", "--to", "-10m"]) else {
            panic!("group")
        };
        assert!(matches!(
            g.action,
            GroupAction::Reset {
                to: StartFrom::Time(_),
                ..
            }
        ));
        let Command::Consume(c) = ok(&["consume", "s", "-g", "g", "--create", "--from", "now-1h"])
        else {
            panic!("consume")
        };
        assert!(matches!(c.from, StartFrom::Time(_)));
        refused(&["group", "reset", "s", "g", "--to", "-soon"], "-10m");
    }

    #[test]
    fn consume_defaults() {
        let Command::Consume(c) = ok(&["consume", "s", "-g", "g"]) else {
            panic!("consume")
        };
        assert_eq!(
            (c.consumer, c.create, c.from),
            (None, false, StartFrom::End)
        );
        assert_eq!((c.count, c.ack), (None, AckArg::Auto));
        assert_eq!((c.exec, c.pipe, c.concurrency), (None, None, None));
        assert!(!c.ordered);
        assert_eq!(c.lease, Duration::from_secs(5));
        assert_eq!(c.stop_timeout, Duration::from_secs(10));
        assert_eq!(
            (c.timeout, c.max_deliveries, c.max_age, c.idle_exit),
            (None, MaxDeliveries(Some(5)), None, None)
        );
        assert_eq!(c.claim_after, Duration::from_secs(60));
        assert_eq!(c.retry_backoff, Duration::from_secs(1));
        assert_eq!(c.batch, 100);
    }

    #[test]
    fn consumer_names_are_typed_and_never_empty() {
        let Command::Consume(c) = ok(&["consume", "s", "-g", "g", "-c", "worker-1"]) else {
            panic!("consume")
        };
        assert_eq!(c.consumer.expect("-c").as_str(), "worker-1");
        refused(
            &["consume", "s", "-g", "g", "-c", ""],
            "consumer name must not be empty",
        );
        refused(&["consume", "s", "-g", ""], "group name must not be empty");
        refused(&["consume", "", "-g", "g"], "stream key must not be empty");
        refused(&["consume", "s"], "--group");
    }

    #[test]
    fn from_needs_create_and_takes_start_spellings() {
        for (given, want) in [
            ("0", StartFrom::Beginning),
            ("-", StartFrom::Beginning),
            ("$", StartFrom::End),
            ("1-0", StartFrom::After(id(1, 0))),
        ] {
            let Command::Consume(c) = ok(&["consume", "s", "-g", "g", "--create", "--from", given])
            else {
                panic!("consume")
            };
            assert_eq!(c.from, want, "{given}");
        }
        refused(&["consume", "s", "-g", "g", "--from", "0"], "--create");
        refused(
            &["consume", "s", "-g", "g", "--create", "--from", "later"],
            "invalid start",
        );
    }

    #[test]
    fn claim_after_has_a_floor_and_durations_need_units() {
        let Command::Consume(c) = ok(&["consume", "s", "-g", "g", "--claim-after", "250ms"]) else {
            panic!("consume")
        };
        assert_eq!(c.claim_after, Duration::from_millis(250));
        refused(
            &["consume", "s", "-g", "g", "--claim-after", "100ms"],
            "below 250ms",
        );
        refused(
            &["consume", "s", "-g", "g", "--retry-backoff", "5"],
            "e.g. 500ms",
        );
        refused(&["consume", "s", "-g", "g", "--timeout", "0s"], "above 0");
        refused(
            &["consume", "s", "-g", "g", "--max-deliveries", "0"],
            "at least 1",
        );
        refused(
            &["consume", "s", "-g", "g", "--max-deliveries", "many"],
            "or `unlimited`",
        );
        let Command::Consume(c) = ok(&["consume", "s", "-g", "g", "--max-deliveries", "unlimited"])
        else {
            panic!("consume")
        };
        assert_eq!(c.max_deliveries, MaxDeliveries(None));
        let help = Cli::command()
            .find_subcommand_mut("consume")
            .expect("consume")
            .render_long_help()
            .to_string();
        assert!(
            help.contains("[default: 5]"),
            "the default is shown: {help}"
        );
        refused(&["consume", "s", "-g", "g", "--ack", "sometimes"], "--ack");
    }

    #[test]
    fn pipe_flags_parse_as_typed_values() {
        let Command::Consume(a) = ok(&[
            "consume",
            "s",
            "-g",
            "g",
            "--pipe",
            "python3 w.py",
            "--stop-timeout",
            "3s",
        ]) else {
            panic!("not consume")
        };
        assert_eq!(a.pipe.as_deref(), Some("python3 w.py"));
        assert_eq!(a.stop_timeout, Duration::from_secs(3));
        assert_eq!(a.concurrency, None);
        assert!(parse(&["consume", "s", "-g", "g", "--pipe", "x", "--exec", "y"]).is_err());
        assert!(parse(&[
            "consume",
            "s",
            "-g",
            "g",
            "--pipe",
            "x",
            "--stop-timeout",
            "soon"
        ])
        .is_err());
    }
}

mod groups_dlq_shards {
    use super::*;

    #[test]
    fn group_create_starts_at_the_end_unless_told() {
        let Command::Group(g) = ok(&["group", "create", "s", "g"]) else {
            panic!("group")
        };
        let GroupAction::Create {
            stream,
            group,
            from,
        } = g.action
        else {
            panic!("create")
        };
        assert_eq!(
            (stream.as_str(), group.as_str(), from),
            ("s", "g", StartFrom::End)
        );
        let Command::Group(g) = ok(&["group", "create", "s", "g", "--from", "-"]) else {
            panic!("group")
        };
        assert!(matches!(
            g.action,
            GroupAction::Create {
                from: StartFrom::Beginning,
                ..
            }
        ));
        refused(
            &["group", "create", "s", ""],
            "group name must not be empty",
        );
        refused(
            &["group", "create", "", "g"],
            "stream key must not be empty",
        );
    }

    #[test]
    fn group_reset_needs_a_start_and_consumers_a_duration() {
        let Command::Group(g) = ok(&["group", "reset", "s", "g", "--to", "7"]) else {
            panic!("group")
        };
        let GroupAction::Reset { to, dry_run, .. } = g.action else {
            panic!("reset")
        };
        assert_eq!((to, dry_run), (StartFrom::After(id(7, 0)), false));
        refused(&["group", "reset", "s", "g"], "--to");
        let Command::Group(g) = ok(&["group", "consumers", "s", "g", "--remove-idle", "1h"]) else {
            panic!("group")
        };
        let GroupAction::Consumers { remove_idle, .. } = g.action else {
            panic!("consumers")
        };
        assert_eq!(remove_idle, Some(Duration::from_secs(3600)));
        refused(
            &["group", "consumers", "s", "g", "--remove-idle", "idle"],
            "e.g. 500ms",
        );
    }

    #[test]
    fn dlq_replay_ids_are_stream_ids() {
        let Command::Dlq(d) = ok(&["dlq", "replay", "s", "--id", "1-2", "--id", "5"]) else {
            panic!("dlq")
        };
        let DlqAction::Replay { ids, all, .. } = d.action else {
            panic!("replay")
        };
        assert_eq!((ids, all), (vec![id(1, 2), id(5, 0)], false));
        refused(&["dlq", "replay", "s", "--id", "x-1"], "invalid stream ID");
        refused(&["dlq", "replay", "s", "--id", "-"], "--id");
        refused(&["dlq", "replay", "s"], "--id");
        refused(&["dlq", "replay", "s", "--all", "--id", "1-0"], "--all");
    }

    #[test]
    fn dlq_purge_before_is_an_inclusive_bound() {
        for (given, want) in [
            ("-", StreamId::MIN),
            ("$", StreamId::MAX),
            ("3-4", id(3, 4)),
            ("1970-01-01T00:00:01Z", id(1000, 0)),
        ] {
            let Command::Dlq(d) = ok(&["dlq", "purge", "s", "--before", given]) else {
                panic!("dlq")
            };
            let DlqAction::Purge { before, .. } = d.action else {
                panic!("purge")
            };
            assert_eq!(before, Some(want), "{given}");
        }
        let Command::Dlq(d) = ok(&["dlq", "ls", "s"]) else {
            panic!("dlq")
        };
        assert!(matches!(d.action, DlqAction::Ls { count: 100, .. }));
        refused(&["dlq", "purge", "s", "--before", "x-y"], "invalid start");
    }

    #[test]
    fn shards_are_one_to_1024() {
        let Command::Shard(s) = ok(&["shard", "create", "s", "--shards", "1024"]) else {
            panic!("shard")
        };
        assert!(matches!(s.action, ShardAction::Create { shards: 1024, .. }));
        refused(&["shard", "create", "s", "--shards", "0"], "--shards");
        refused(&["shard", "create", "s", "--shards", "1025"], "--shards");
        refused(&["shard", "ls", ""], "stream key must not be empty");
    }
}

mod janitor_stat_serve {
    use super::*;

    #[test]
    fn janitor_defaults_and_archives() {
        let Command::Janitor(j) = ok(&["janitor", "s"]) else {
            panic!("janitor")
        };
        assert_eq!(j.interval, Duration::from_secs(10));
        assert_eq!(
            (j.once, j.dry_run, j.max_len, j.max_age),
            (false, false, None, None)
        );
        assert_eq!(j.archive, None);
        for (given, want) in [
            ("stream:old", Archive::Stream("old".parse().expect("key"))),
            ("out.jsonl", Archive::File("out.jsonl".into())),
        ] {
            let Command::Janitor(j) = ok(&["janitor", "s", "--archive", given]) else {
                panic!("janitor")
            };
            assert_eq!(j.archive, Some(want), "{given}");
        }
        refused(&["janitor", "s", "--archive", "stream:"], "stream:KEY");
        refused(&["janitor", "s", "--archive", ""], "stream:KEY");
        refused(&["janitor"], "STREAMS");
        refused(&["janitor", "s", ""], "stream key must not be empty");
    }

    #[test]
    fn stat_streams_are_keys_and_thresholds_typed() {
        let Command::Stat(s) = ok(&["stat"]) else {
            panic!("stat")
        };
        assert!(s.streams.is_empty());
        assert_eq!((s.watch, s.max_lag, s.max_time_lag), (None, None, None));
        assert_eq!(s.dead_after, Duration::from_secs(300));
        assert!(!s.exact_memory && !s.shards);
        let Command::Stat(s) = ok(&["stat", "a", "b", "--max-time-lag", "30s"]) else {
            panic!("stat")
        };
        let names: Vec<&str> = s.streams.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(s.max_time_lag, Some(Duration::from_secs(30)));
        refused(&["stat", "a", ""], "stream key must not be empty");
        refused(&["stat", "--max-lag", "ten"], "--max-lag");
    }

    #[test]
    fn serve_listens_on_loopback_by_default() {
        let Command::Serve(s) = ok(&["serve"]) else {
            panic!("serve")
        };
        assert_eq!(s.listen, "127.0.0.1:9187".parse().expect("addr"));
        assert!(s.streams.is_empty() && !s.allow_actions);
        let Command::Serve(s) = ok(&["serve", "--streams", "a", "b", "--listen", "[::1]:80"])
        else {
            panic!("serve")
        };
        assert_eq!(s.streams.len(), 2);
        assert_eq!(s.listen, "[::1]:80".parse().expect("addr"));
        refused(&["serve", "--streams", ""], "stream key must not be empty");
        refused(&["serve", "--listen", "localhost"], "--listen");
    }
}

mod schedule {
    use super::*;

    fn add(extra: &[&str]) -> ScheduleAction {
        let args = [&["schedule", "add", "n", "--to", "ticks"][..], extra].concat();
        let Command::Schedule(s) = ok(&args) else {
            panic!("schedule")
        };
        s.action
    }

    #[test]
    fn add_defaults_and_typed_target() {
        let Command::Schedule(s) = ok(&["schedule", "ls"]) else {
            panic!("schedule")
        };
        assert_eq!(s.namespace, "streamkeeper");
        let ScheduleAction::Add {
            to,
            every,
            missed,
            jitter,
            ..
        } = add(&["--every", "30s"])
        else {
            panic!("add")
        };
        assert_eq!(
            (to.as_str(), every),
            ("ticks", Some(Duration::from_secs(30)))
        );
        assert_eq!((missed, jitter), (Missed::Skip, None));
        refused(
            &["schedule", "add", "n", "--every", "1s", "--to", ""],
            "stream key",
        );
        refused(&["schedule", "add", "n", "--to", "t"], "--every");
        refused(
            &[
                "schedule",
                "add",
                "n",
                "--to",
                "t",
                "--every",
                "1s",
                "--cron",
                "* * * * *",
            ],
            "--cron",
        );
    }

    #[test]
    fn missed_takes_skip_once_or_catch_up() {
        for (given, want) in [
            ("skip", Missed::Skip),
            ("once", Missed::Once),
            ("catch-up:3", Missed::CatchUp(3)),
        ] {
            let ScheduleAction::Add { missed, .. } = add(&["--every", "1s", "--missed", given])
            else {
                panic!("add")
            };
            assert_eq!(missed, want, "{given}");
        }
        refused(
            &[
                "schedule",
                "add",
                "n",
                "--to",
                "t",
                "--every",
                "1s",
                "--missed",
                "catch-up:0",
            ],
            "catch-up:N",
        );
        refused(
            &[
                "schedule",
                "add",
                "n",
                "--to",
                "t",
                "--every",
                "1s",
                "--missed",
                "sometimes",
            ],
            "missed",
        );
    }
}

mod bench {
    use super::*;

    #[test]
    fn bench_defaults() {
        let Command::Bench(b) = ok(&["bench", "produce"]) else {
            panic!("bench")
        };
        assert_eq!(b.mode, BenchMode::Produce);
        assert_eq!((b.messages, b.size, b.baseline), (200_000, 100, false));
        assert_eq!((b.schedules, b.instances), (10_000, 3));
        assert_eq!(
            (b.every, b.duration),
            (Duration::from_secs(1), Duration::from_secs(10))
        );
        assert_eq!((b.rate, b.pipe, b.shards), (None, None, None));
        refused(&["bench", "produce", "--shards", "0"], "--shards");
        refused(&["bench", "fastest"], "fastest");
        let Command::Demo(d) = ok(&["demo"]) else {
            panic!("demo")
        };
        assert_eq!(d.messages, 5_000);
    }

    #[test]
    fn pipe_without_a_command_is_the_builtin_worker() {
        let Command::Bench(b) = ok(&["bench", "consume", "--pipe"]) else {
            panic!("not bench")
        };
        assert_eq!(b.pipe.as_deref(), Some(BUILTIN_WORKER));
        let Command::Bench(b) = ok(&["bench", "e2e", "--rate", "5000/s"]) else {
            panic!("not bench")
        };
        assert_eq!(b.rate, Some(5000.0));
        assert_eq!(b.pipe, None);
    }
}

#[test]
fn metrics_takes_a_socket_address_on_the_long_running_commands() {
    let addr: std::net::SocketAddr = "127.0.0.1:9464".parse().expect("addr");
    let with = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--metrics", "127.0.0.1:9464"]);
        ok(&all)
    };
    match with(&["consume", "s", "-g", "g"]) {
        Command::Consume(a) => assert_eq!(a.metrics, Some(addr)),
        other => panic!("{other:?}"),
    }
    match with(&["janitor", "s"]) {
        Command::Janitor(a) => assert_eq!(a.metrics, Some(addr)),
        other => panic!("{other:?}"),
    }
    match with(&["serve"]) {
        Command::Serve(a) => assert_eq!(a.metrics, Some(addr)),
        other => panic!("{other:?}"),
    }
    match with(&["schedule", "run"]) {
        Command::Schedule(a) => match a.action {
            ScheduleAction::Run { metrics, .. } => assert_eq!(metrics, Some(addr)),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    match ok(&["consume", "s", "-g", "g"]) {
        Command::Consume(a) => assert_eq!(a.metrics, None),
        other => panic!("{other:?}"),
    }
    refused(
        &["consume", "s", "-g", "g", "--metrics", "not-an-address"],
        "--metrics",
    );
    refused(&["janitor", "s", "--metrics", "127.0.0.1"], "--metrics");
    refused(
        &["schedule", "ls", "--metrics", "127.0.0.1:9464"],
        "--metrics",
    );
}
