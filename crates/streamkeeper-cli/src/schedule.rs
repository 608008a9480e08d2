//! `streamkeeper schedule add|ls|rm|pause|resume|run` (import and export
//! live in `schedule_io.rs`).

use std::time::{Duration, UNIX_EPOCH};

use comfy_table::Table;
use streamkeeper::scheduler::{Schedule, Scheduler};
use tokio_util::sync::CancellationToken;

use crate::cli::{Global, ScheduleAction, ScheduleArgs};
use crate::output;
use crate::signal;
use crate::Exit;

/// A due time for people; `never` past the year 9999 (a definition
/// stored before such schedules were refused), so nothing panics.
fn time(ms: Option<u64>) -> String {
    match ms {
        None => "-".into(),
        Some(ms) if ms > streamkeeper::scheduler::MAX_DUE_MS => "never".into(),
        Some(ms) => {
            humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
        }
    }
}

pub async fn run(global: &Global, args: ScheduleArgs) -> anyhow::Result<Exit> {
    let ns = args.namespace;
    match args.action {
        ScheduleAction::Add {
            name,
            every,
            cron,
            tz,
            to,
            fields,
            missed,
            jitter,
        } => {
            // Validate everything before connecting: nothing is stored on error.
            let mut schedule = match (every, cron) {
                (Some(_), None) if tz.is_some() => {
                    anyhow::bail!("--tz applies to --cron only: an --every interval has no time zone; drop --tz")
                }
                (Some(d), None) => Schedule::every(&name, d, to.as_str())?,
                (None, Some(expr)) => {
                    Schedule::cron(&name, &expr, tz.as_deref().unwrap_or("UTC"), to.as_str())?
                }
                _ => anyhow::bail!("give exactly one of --every DURATION or --cron EXPR"),
            };
            for (k, v) in &fields {
                schedule = schedule.field(k, v);
            }
            schedule = schedule.missed(missed);
            if let Some(j) = jitter {
                schedule = schedule.jitter(j);
            }
            schedule.validate()?;
            let redis = global.connect().await?;
            // A target that exists and is not a stream would never take a
            // tick (the claim script skips it): refuse it now.
            crate::append::check_is_stream(&redis, &schedule.target).await?;
            let scheduler = Scheduler::new(&redis, &ns);
            scheduler.add(&schedule).await?;
            if global.json {
                output::json_line(&serde_json::to_value(&schedule)?);
            } else {
                println!("schedule {name} → {to} added");
            }
        }
        ScheduleAction::Import { input } => {
            crate::schedule_io::run_import(global, &ns, input.as_deref()).await?
        }
        ScheduleAction::Export => crate::schedule_io::run_export(global, &ns).await?,
        ScheduleAction::Ls => {
            let redis = global.connect().await?;
            let list = Scheduler::new(&redis, &ns).list().await?;
            if global.json {
                for s in &list {
                    let mut v = serde_json::to_value(s)?;
                    v["lateness_ms"] = s.lateness_ms().into();
                    output::json_line(&v);
                }
            } else if list.is_empty() {
                println!("no schedules in namespace {ns}");
            } else {
                let mut t = Table::new();
                t.load_preset(comfy_table::presets::NOTHING);
                t.set_header([
                    "name",
                    "when",
                    "to",
                    "missed",
                    "next due",
                    "last fired",
                    "lateness",
                ]);
                for s in &list {
                    let when = match &s.schedule.spec {
                        streamkeeper::scheduler::Spec::EveryMs(ms) => {
                            format!(
                                "every {}",
                                humantime::format_duration(Duration::from_millis(*ms))
                            )
                        }
                        streamkeeper::scheduler::Spec::Cron { expr, tz } => {
                            format!("cron {expr} ({tz})")
                        }
                    };
                    t.add_row([
                        s.schedule.name.clone(),
                        when,
                        s.schedule.target.to_string(),
                        s.schedule.missed.to_string(),
                        if s.schedule.paused {
                            "paused".into()
                        } else {
                            time(s.next_due_ms)
                        },
                        time(s.last_fired_ms),
                        s.lateness_ms().map_or("-".into(), |l| format!("{l}ms")),
                    ]);
                }
                println!("{t}");
            }
        }
        ScheduleAction::Rm { name } => {
            let redis = global.connect().await?;
            if !Scheduler::new(&redis, &ns).remove(&name).await? {
                anyhow::bail!(
                    "no schedule named {name:?} in namespace {ns} (see `streamkeeper schedule ls`)"
                );
            }
            if global.json {
                output::json_line(&serde_json::json!({"name": name, "removed": true}));
            } else {
                println!("schedule {name} removed");
            }
        }
        ScheduleAction::Pause { name } => set_paused(global, &ns, &name, true).await?,
        ScheduleAction::Resume { name } => set_paused(global, &ns, &name, false).await?,
        ScheduleAction::Run { instance, .. } => {
            let redis = global
                .connect_with(streamkeeper::ConnectorOptions {
                    reconnect_timeout: None,
                    ..Default::default()
                })
                .await?;
            let instance =
                instance.unwrap_or_else(|| streamkeeper::ConsumerName::unique().to_string());
            let stop = CancellationToken::new();
            let interrupted = signal::cancel_on_signal(stop.clone());
            let stats = Scheduler::new(&redis, &ns).run(&instance, stop).await?;
            tracing::debug!(emitted = stats.emitted, "instance stopped");
            return Ok(if interrupted.get() {
                Exit::Interrupted
            } else {
                Exit::Ok
            });
        }
    }
    Ok(Exit::Ok)
}

async fn set_paused(global: &Global, ns: &str, name: &str, paused: bool) -> anyhow::Result<()> {
    let redis = global.connect().await?;
    if !Scheduler::new(&redis, ns).set_paused(name, paused).await? {
        anyhow::bail!(
            "no schedule named {name:?} in namespace {ns} (see `streamkeeper schedule ls`)"
        );
    }
    if global.json {
        output::json_line(&serde_json::json!({"name": name, "paused": paused}));
    } else {
        println!(
            "schedule {name} {}",
            if paused { "paused" } else { "resumed" }
        );
    }
    Ok(())
}
