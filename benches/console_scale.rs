//! console-scale: the console page with a fleet of N nodes (default 1,000 in 100 regions)
//! in a real headless Chromium: time to first render, and the cost of the page's updates
//! while regions change.
//!
//! The page's embedded files are served as a node serves them (`fleetmesh::console`); the
//! API it reads is a stand-in served by this bench: a census of N nodes, and an event
//! stream that pushes one region's census every `--every-ms` (20 ms: 50 updates a second,
//! each region every 2 s as masters publish them), one of its members changing state each
//! time. The page is measured twice: regions collapsed (its default above 300 nodes) and
//! every node drawn.
//!
//!     cargo bench --bench console_scale -- [--nodes N] [--regions R] [--every-ms E]
//!         [--seconds S]
//!
//! Last line: RESULT {json} (times in milliseconds).

#[allow(dead_code)]
#[path = "../tests/console/browser.rs"]
mod browser;
mod common;

use common::arg;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

const STATES: [&str; 7] = [
    "live",
    "delayed",
    "edge_cached",
    "autonomous",
    "disconnected",
    "returning",
    "live",
];

/// Region `r` of `regions`, with `per` members; `tick` varies one member's state.
fn region(r: usize, per: usize, tick: usize) -> Value {
    let members: Vec<Value> = (0..per)
        .map(|i| {
            let changed = i == tick % per;
            let role = ["web", "database", "baseline"][i % 3];
            json!({
                "peer": format!("peer-{r}-{i}"),
                "name": format!("r{r}-n{i}"),
                "role": role,
                "status": if changed && tick.is_multiple_of(5) { "dead" } else { "alive" },
                "connectivity": if changed { STATES[tick % STATES.len()] } else { "live" },
                "backlog": if changed { tick % 100 } else { 0 },
                "replay": null,
                "last_seen_ms": 300,
            })
        })
        .collect();
    let dead = members.iter().filter(|m| m["status"] == "dead").count();
    json!({
        "region": format!("region-{r:03}"),
        "term": 3,
        "master": format!("peer-{r}-0"),
        "sent_unix_ms": 0,
        "members": members,
        "omitted": 0,
        "counts": {"alive": per - dead, "dead": dead},
        "age_ms": 0,
        "source": if r == 0 { "local" } else { "master" },
    })
}

#[derive(Debug, Clone, Copy)]
struct Fleet {
    regions: usize,
    per: usize,
    every: Duration,
}

async fn node() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "peer_id": "peer-0-0", "name": "r0-n0", "region": "region-000", "role": "web",
        "incarnation": 1, "version": "bench",
    }))
}

async fn census(f: web::Data<Fleet>) -> HttpResponse {
    let regions: Vec<Value> = (0..f.regions).map(|r| region(r, f.per, 1)).collect();
    HttpResponse::Ok().json(json!({ "node": {}, "at_unix_ms": 0, "regions": regions }))
}

async fn empty() -> HttpResponse {
    HttpResponse::Ok().json(json!([]))
}

async fn alerts() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "alerts": [] }))
}

async fn events(f: web::Data<Fleet>) -> HttpResponse {
    let f = *f.get_ref();
    let stream = futures::stream::unfold(0usize, move |tick| async move {
        tokio::time::sleep(f.every).await;
        let mut data = region(tick % f.regions, f.per, tick / f.regions + 2);
        data["received_unix_ms"] = json!(1);
        let frame = format!("id: {}\nevent: census\ndata: {data}\n\n", tick + 1);
        Some((Ok::<_, actix_web::Error>(web::Bytes::from(frame)), tick + 1))
    });
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .streaming(stream)
}

/// Main-thread cost while updates flow for `seconds`: long tasks (≥ 50 ms) and frame
/// intervals.
async fn measure(b: &browser::Browser, seconds: u64) -> Value {
    b.js("window.bench = { long: [], frames: [] };
          new PerformanceObserver((l) => { for (const e of l.getEntries()) window.bench.long.push(e.duration); })
            .observe({ type: 'longtask' });
          let last = performance.now();
          const tick = (t) => { window.bench.frames.push(t - last); last = t; if (!window.bench.stop) requestAnimationFrame(tick); };
          requestAnimationFrame(tick);
          return true")
        .await;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    b.js("window.bench.stop = true;
             const f = window.bench.frames.slice(1).sort((a, b) => a - b);
             const p = (q) => f.length ? f[Math.min(f.length - 1, Math.round((f.length - 1) * q))] : null;
             const long = window.bench.long;
             return { frames: f.length, frame_p50_ms: p(0.5), frame_p99_ms: p(0.99), frame_max_ms: f.length ? f[f.length - 1] : null,
                      long_tasks: long.length, long_task_max_ms: long.length ? Math.max(...long) : 0 }")
        .await
}

#[actix_web::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let nodes = arg("--nodes", 1000) as usize;
    let regions = arg("--regions", 100) as usize;
    let seconds = arg("--seconds", 10);
    let fleet = Fleet {
        regions,
        per: nodes.div_ceil(regions),
        every: Duration::from_millis(arg("--every-ms", 20)),
    };
    let data = web::Data::new(fleet);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/", web::get().to(fleetmesh::console::asset))
            .route(
                "/console/{file:.*}",
                web::get().to(fleetmesh::console::asset),
            )
            .route("/api/v1/node", web::get().to(node))
            .route("/api/v1/census", web::get().to(census))
            .route("/api/v1/alerts", web::get().to(alerts))
            .route("/api/v1/spikes", web::get().to(empty))
            .route("/api/v1/decisions", web::get().to(empty))
            .route("/api/v1/events", web::get().to(events))
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("bind");
    let addr = server.addrs()[0];
    let running = server.run();
    let handle = running.handle();
    actix_web::rt::spawn(running);

    let b = browser::Browser::start().await;
    b.client
        .goto(&format!("http://{addr}/"))
        .await
        .expect("the page loads");
    // First render: the graph holds every region (measured from navigation start; the
    // polling adds up to a few ms).
    let first = Arc::new(
        b.until(
            "every region drawn",
            Duration::from_secs(30),
            &format!(
                "return document.querySelectorAll('#graph .region').length === {regions} && performance.now()"
            ),
        )
        .await,
    );
    let collapsed = measure(&b, seconds).await;
    b.js("document.querySelector('#collapse').click(); return true")
        .await;
    b.until(
        "every node drawn",
        Duration::from_secs(30),
        &format!("return document.querySelectorAll('#graph g.node').length >= {nodes}"),
    )
    .await;
    let expanded = measure(&b, seconds).await;
    b.close().await;
    handle.stop(false).await;
    println!(
        "RESULT {}",
        json!({
            "scenario": "console-scale",
            "nodes": regions * fleet.per,
            "regions": regions,
            "updates_per_s": 1000 / fleet.every.as_millis().max(1) as u64,
            "first_render_ms": *first,
            "collapsed": collapsed,
            "expanded": expanded,
        })
    );
}
