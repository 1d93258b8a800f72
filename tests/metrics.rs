//! `/metrics`: the families an operator's dashboards and alerts rely on, named as
//! Prometheus asks, accepted by `promtool check metrics`, and moving with the traffic.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// The value of the first sample line starting with `prefix`.
fn sample(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_has_every_family_and_passes_promtool() {
    let origin = TestOrigin::start().await;
    let node = Strata::start(&NodeConfig::new(&origin.url()));
    origin.put("/m", Object::new("metrics"));
    origin.put("/big", Object::generated(3 << 20, 4));
    let stored = "strata_fills_total{result=\"stored\"}";
    for p in ["/m", "/m", "/big"] {
        get(&node.url(p)).await;
    }
    // A fill stores its slices beside the next one's, so its client may have every byte
    // before the first slices are in the tiers: the second read waits for all four (one of
    // the small object, three of the large one).
    assert!(
        node.wait_metric(stored, 4.0, Duration::from_secs(10)).await,
        "the slices were never all stored"
    );
    for p in ["/big", "/nothing"] {
        get(&node.url(p)).await;
    }
    reqwest::Client::new()
        .post(node.url("/m"))
        .send()
        .await
        .unwrap();
    // A request is counted when its exchange ends, which may be just after its client has its
    // last byte: wait until all six are in (the counts are then checked exactly).
    assert!(
        node.wait_metric(
            "strata_request_duration_seconds_count{route=\"test\"}",
            6.0,
            Duration::from_secs(10)
        )
        .await,
        "the requests were never all counted"
    );
    let text = node.metrics().await;
    for family in [
        "strata_requests_total",
        "strata_response_bytes_total",
        "strata_request_duration_seconds",
        "strata_time_to_first_byte_seconds",
        "strata_origin_requests_total",
        "strata_origin_errors_total",
        "strata_origin_duration_seconds",
        "strata_coalesced_requests_total",
        "strata_fills_total",
        "strata_cache_hits_total",
        "strata_cache_misses_total",
        "strata_cache_inserts_total",
        "strata_cache_evictions_total",
        "strata_cache_used_bytes",
        "strata_cache_capacity_bytes",
        "strata_cache_items",
        "strata_disk_io_errors_total",
        "strata_disk_checksum_failures_total",
        "strata_disk_regions_retired_total",
        "strata_disk_write_suspensions_total",
        "strata_disk_writes_shed_total",
        "strata_disk_write_queue_bytes",
        "strata_refused_connections_total",
        "strata_client_timeouts_total",
        "strata_limited_requests_total",
        "strata_recovery_duration_seconds",
        "strata_recovered_items",
        "strata_requests_in_flight",
        "strata_open_connections",
        "strata_build_info",
        "process_resident_memory_bytes",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    let get = |p: &str| sample(&text, p).unwrap_or(-1.0);
    assert_eq!(
        get("strata_requests_total{cache=\"hit\",route=\"test\",status_class=\"2xx\"}"),
        2.0,
        "{text}"
    );
    assert_eq!(
        get("strata_requests_total{cache=\"miss\",route=\"test\",status_class=\"2xx\"}"),
        2.0
    );
    assert_eq!(
        get("strata_requests_total{cache=\"miss\",route=\"test\",status_class=\"4xx\"}"),
        1.0
    );
    assert_eq!(
        get("strata_requests_total{cache=\"pass\",route=\"test\",status_class=\"2xx\"}"),
        1.0
    );
    // The 3 MiB object's second read came from the tiers (the small one's may still have come
    // from its fill, which counts as the origin's); every byte is counted once.
    let source = |s: &str| {
        sample(
            &text,
            &format!("strata_response_bytes_total{{route=\"test\",source=\"{s}\"}}"),
        )
        .unwrap_or(0.0)
    };
    let (memory, disk, from_origin) = (source("memory"), source("disk"), source("origin"));
    assert!(memory + disk >= (3 << 20) as f64, "{text}");
    assert!(from_origin >= (3 << 20) as f64 + 7.0, "{text}");
    assert_eq!(
        memory + disk + from_origin,
        2.0 * ((3 << 20) as f64 + 7.0) + 10.0,
        "{text}"
    );
    assert!(get("strata_request_duration_seconds_count{route=\"test\"}") >= 6.0);
    assert!(get("strata_cache_used_bytes{tier=\"memory\"}") > 0.0);
    assert_eq!(
        get("strata_cache_capacity_bytes{tier=\"memory\"}"),
        (64u64 << 20) as f64
    );
    assert!(text.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))));

    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        eprintln!("skipping promtool: not installed (Debian package prometheus)");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
