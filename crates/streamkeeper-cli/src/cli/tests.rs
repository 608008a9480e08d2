//! The grammar's tests, ripgrep-style: `Cli::try_parse_from` per flag
//! group, each typed flag accepted and refused, defaults asserted.

use std::time::Duration;

use clap::{CommandFactory, Parser};

use super::{Cli, Command, GroupAction, ScheduleAction};

fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
    Cli::try_parse_from(std::iter::once("streamkeeper").chain(args.iter().copied()))
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
