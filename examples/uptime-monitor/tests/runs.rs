//! The example runs end to end and its summary tells the sites apart.

#[test]
fn the_monitor_tells_healthy_failing_and_dead_sites_apart() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_uptime-monitor"))
        .args(["--seconds", "3"])
        .env_remove("STREAMKEEPER_REDIS")
        .output()
        .expect("run the example");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |site: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.contains(&format!(" {site} ")))
            .unwrap_or_else(|| panic!("no row for {site} in {text}"))
            .split('┆')
            .map(|c| {
                c.trim_matches(|ch: char| ch == '│' || ch.is_whitespace())
                    .to_string()
            })
            .collect()
    };
    assert_eq!(row("fast")[3], "100.0 %");
    assert_eq!(row("down")[3], "0.0 %");
    assert_eq!(row("down")[6], "unreachable");
    assert_eq!(row("hangs")[6], "timeout");
    let flaky: f64 = row("flaky")[3]
        .trim_end_matches(" %")
        .parse()
        .expect("uptime");
    assert!(flaky > 30.0 && flaky < 90.0, "flaky uptime {flaky}");
    let checks: u64 = row("fast")[2].parse().expect("checks");
    assert!(
        (10..=15).contains(&checks),
        "fast site checked {checks} times in 3 s at 200 ms"
    );
}
