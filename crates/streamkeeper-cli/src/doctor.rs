//! `streamkeeper doctor`: the server settings that matter for streams,
//! each with what it means. Exit 1 when something needs attention.

use std::collections::HashMap;

use crate::cli::Global;
use crate::output;
use crate::Exit;

/// One finding.
struct Check {
    name: &'static str,
    ok: bool,
    value: String,
    meaning: String,
}

fn info_map(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

pub async fn run(global: &Global) -> anyhow::Result<Exit> {
    let redis = global.connect().await?;
    let mut conn = redis.shared();
    let info: String = redis::cmd("INFO")
        .arg("everything")
        .query_async(&mut conn)
        .await
        .map_err(|e| streamkeeper::Error::redis("INFO", e))?;
    let info = info_map(&info);
    let get = |k: &str| info.get(k).cloned().unwrap_or_default();
    // CONFIG may be renamed or disabled on managed servers: say so.
    let policy: Option<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .query_async::<Vec<String>>(&mut conn)
        .await
        .ok()
        .and_then(|v| v.get(1).cloned());
    let version = get("redis_version");
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let mut checks = vec![Check {
        name: "version",
        ok: major >= 7,
        value: version.clone(),
        meaning: if major >= 7 {
            "XAUTOCLAIM, XINFO lag and XADD NOMKSTREAM are available (XTRIM … ACKED needs 8.2)"
                .into()
        } else {
            "older than 7.0: XAUTOCLAIM and group lag are missing; streamkeeper needs Redis 7.0 or newer".into()
        },
    }];
    let role = get("role");
    checks.push(Check {
        name: "role",
        ok: role == "master",
        value: role.clone(),
        meaning: if role == "master" {
            format!("writable master with {} connected replica(s)", get("connected_slaves"))
        } else {
            "a replica: writes and XREADGROUP fail with READONLY; point streamkeeper at the master (or use a Sentinel URL)".into()
        },
    });
    let aof = get("aof_enabled") == "1";
    checks.push(Check {
        name: "persistence",
        ok: aof,
        value: format!("aof={}", if aof { "on" } else { "off" }),
        meaning: if aof {
            "append-only file on: acknowledged entries and consumer-group state survive a restart (up to the fsync policy)".into()
        } else {
            "no AOF: a restart loses everything since the last RDB snapshot, including acks and pending lists; enable appendonly yes".into()
        },
    });
    match policy {
        Some(p) => {
            let evicts_any = p.starts_with("allkeys");
            let evicts_volatile = p.starts_with("volatile");
            checks.push(Check {
                name: "maxmemory-policy",
                ok: !evicts_any,
                value: format!("{p} (maxmemory {})", get("maxmemory_human")),
                meaning: if evicts_any {
                    "Redis may evict whole streams under memory pressure; use noeviction so writes fail loudly instead".into()
                } else if evicts_volatile {
                    "only keys with a TTL are evicted; streams have none, so they are safe (dedupe keys of send_once may go early)".into()
                } else {
                    "noeviction: when memory runs out writes fail with OOM instead of losing streams; run the janitor".into()
                },
            });
        }
        None => checks.push(Check {
            name: "maxmemory-policy",
            ok: true,
            value: "unknown (CONFIG GET is not allowed)".into(),
            meaning: "check with your provider that streams cannot be evicted".into(),
        }),
    }
    // Through a Sentinel URL the server answering is the master the
    // sentinels named: its INFO says "standalone", the setup is Sentinel.
    let through_sentinel = match redis.topology() {
        streamkeeper::Topology::Sentinel { master, sentinels } => {
            Some(format!("{master} via {} sentinel(s)", sentinels.len()))
        }
        _ => None,
    };
    let mode = if get("redis_mode") == "sentinel" {
        "sentinel".to_string()
    } else if through_sentinel.is_some() {
        "sentinel-managed master".to_string()
    } else if get("cluster_enabled") == "1" {
        "cluster".to_string()
    } else {
        "standalone".to_string()
    };
    checks.push(Check {
        name: "mode",
        ok: mode != "cluster",
        value: mode.clone(),
        meaning: match mode.as_str() {
            "cluster" => "Redis Cluster: streamkeeper's cluster support is not there yet".into(),
            "sentinel" => {
                "this is a sentinel, not a data server: use redis+sentinel://…/<master>".into()
            }
            "sentinel-managed master" => format!(
                "sentinel mode: master {} (failover is followed automatically)",
                through_sentinel.as_deref().unwrap_or("?")
            ),
            _ => "single server (use redis+sentinel:// URLs for failover)".into(),
        },
    });
    let bad = checks.iter().filter(|c| !c.ok).count();
    for c in &checks {
        if global.json {
            output::json_line(
                &serde_json::json!({"check": c.name, "ok": c.ok, "value": c.value, "meaning": c.meaning}),
            );
        } else {
            println!(
                "{:4} {:<17} {:<28} {}",
                if c.ok { "ok" } else { "WARN" },
                c.name,
                c.value,
                c.meaning
            );
        }
    }
    Ok(if bad == 0 {
        Exit::Ok
    } else {
        Exit::CheckFailed
    })
}
