//! Soak: a long mixed load against one fe-php-host (embedded PHP, FastCGI to a
//! php-fpm it starts, static small and large files, HEAD, 404s, 400s, POSTs with
//! bodies and uploads), watching the whole process tree's memory, descriptors and
//! PHP's temporary files. After warm-up (the first 10%) resident memory may grow
//! by less than 5%, descriptors and temporary files must stay level, and every
//! request must get its expected answer.
//!
//! `soak_short` (50,000 requests) runs with the other tests; `make soak` runs
//! `soak` with 1,000,000 (`SOAK_REQUESTS=N` for another count).

mod common;

use common::load::{Load, LoadSpec, Report, Req};
use common::peers::{FpmListen, PhpFpm};
use common::proc;
use common::*;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const CLIENTS: usize = 8;
const WORKERS: usize = 2;
const FPM_CHILDREN: usize = 4;
/// PHP runners of the embedded backend, fixed so that the tree's memory compares.
const RUNNERS: usize = 4;
/// Resident memory may grow by less than this after warm-up.
const MAX_RSS_GROWTH: f64 = 0.05;

const SCRIPTS: &[(&str, &str)] = &[
    ("hello.php", "<?php echo 'Hello, World!';"),
    (
        "json.php",
        "<?php header('Content-Type: application/json'); $items = []; for ($i = 0; $i < 50; $i++) { $items[] = ['id' => $i, 'name' => 'item ' . $i]; } echo json_encode(['items' => $items]);",
    ),
    (
        "post.php",
        "<?php $in = file_get_contents('php://input'); $f = []; foreach ($_FILES as $k => $v) { $f[] = $k . ':' . $v['error'] . ':' . $v['size'] . ':' . md5_file($v['tmp_name']); } echo 'post ', count($_POST), ' ', strlen($in), ' ', implode(',', $f);",
    ),
];

fn site(www: &Path) {
    for dir in ["", "fpm"] {
        std::fs::create_dir_all(www.join(dir)).unwrap();
        for (name, body) in SCRIPTS {
            std::fs::write(www.join(dir).join(name), body).unwrap();
        }
    }
    std::fs::write(www.join("small.txt"), "s".repeat(1024)).unwrap();
    std::fs::write(www.join("style.css"), "body{color:#333}\n".repeat(40)).unwrap();
    std::fs::write(www.join("large.bin"), vec![b'L'; 512 << 10]).unwrap();
}

/// The mix: each entry once per round, some several times (their weight).
fn mix() -> Vec<Req> {
    let form = b"a=1&b=two&c=%C3%A9";
    let upload = multipart(20 << 10);
    let raw = vec![b'r'; 32 << 10];
    let mut m = Vec::new();
    for _ in 0..3 {
        m.push(Req::get("/hello.php", 200).body(b"Hello, World!"));
        m.push(Req::get("/fpm/hello.php", 200).body(b"Hello, World!"));
        m.push(Req::get("/small.txt", 200).body(b"ssss"));
    }
    for _ in 0..2 {
        m.push(Req::get("/json.php", 200).body(b"{\"items\":[{\"id\":0"));
        m.push(Req::get("/fpm/json.php", 200).body(b"{\"items\":[{\"id\":0"));
        m.push(Req::get("/style.css", 200).body(b"body{color"));
    }
    m.push(Req::get("/large.bin", 200).body(b"LLLL"));
    let mut head = Req::raw(
        b"HEAD /small.txt HTTP/1.1\r\nHost: load\r\n\r\n".to_vec(),
        200,
    );
    head.head = true;
    m.push(head);
    m.push(Req::get("/missing.txt", 404));
    m.push(Req::get("/missing.php", 404));
    m.push(Req::get("/fpm/missing.php", 404));
    // Refused by the engine (NUL in the path), and by the HTTP parser (closes).
    m.push(Req::get("/%00", 400));
    m.push(
        Req::raw(
            b"GET /malformed-header HTTP/1.1\r\nHost: load\r\nNo colon here\r\n\r\n".to_vec(),
            400,
        )
        .closes(),
    );
    m.push(
        Req::post("/post.php", "application/x-www-form-urlencoded", form, 200).body(b"post 3 18 "),
    );
    let boundary = "multipart/form-data; boundary=soakboundary";
    m.push(Req::post("/post.php", boundary, &upload, 200).body(b"post 1 0 up:0:20480:"));
    m.push(Req::post("/fpm/post.php", boundary, &upload, 200).body(b"post 1 0 up:0:20480:"));
    // Past 16 KiB PHP keeps a raw body in a temporary file too.
    m.push(
        Req::post("/post.php", "application/octet-stream", &raw, 200)
            .body(format!("post 0 {} ", raw.len()).as_bytes()),
    );
    m
}

fn multipart(file_size: usize) -> Vec<u8> {
    let mut b = b"--soakboundary\r\nContent-Disposition: form-data; name=\"field\"\r\n\r\nvalue\r\n--soakboundary\r\nContent-Disposition: form-data; name=\"up\"; filename=\"up.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    b.extend((0..file_size).map(|i| b'a' + (i % 26) as u8));
    b.extend_from_slice(b"\r\n--soakboundary--\r\n");
    b
}

/// One look at the server while the load runs.
#[derive(Clone, Copy, Debug)]
struct Point {
    done: u64,
    host: proc::TreeSample,
    fpm_rss_kib: u64,
    temp_files: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn soak(requests: u64) {
    let root = tempfile::tempdir().unwrap();
    let www = root.path().join("www");
    site(&www);
    let uploads = root.path().join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    let upload_dir = uploads.display().to_string();
    let fpm = PhpFpm::builder(&www, FpmListen::Unix)
        .max_children(FPM_CHILDREN)
        .ini("upload_tmp_dir", &upload_dir)
        .start();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{{port}}"
workers = {WORKERS}
access_log = "off"

[backend]
default_backend = "embedded"

[backend.static_files]
enable = true
root = "{www}"

[[backend.routing_rules]]
pattern = {{ type = "prefix", value = "/fpm/" }}
backend = "fastcgi"

[php]
fpm_socket = "{fpm}"
fpm_max_connections = {per_worker}
document_root = "{www}"

[php.pool]
min_runners = {RUNNERS}
max_runners = {RUNNERS}

[php.ini]
upload_tmp_dir = "{upload_dir}"
upload_max_filesize = "16M"
post_max_size = "64M"
"#,
        www = www.display(),
        fpm = fpm.address(),
        per_worker = FPM_CHILDREN / WORKERS,
    );
    let h = Host::start(&config, |_| {});
    let master = h.child.id() as i32;
    let fpm_pid = fpm.pid().unwrap();

    let mix = mix();
    let labels: Vec<String> = mix
        .iter()
        .map(|r| {
            let text = String::from_utf8_lossy(&r.raw);
            let line = text.lines().next().unwrap_or("");
            let line = line.trim_end_matches(" HTTP/1.1");
            match text.lines().find_map(|l| l.strip_prefix("Content-Type: ")) {
                Some(t) => format!("{line} ({})", t.split(';').next().unwrap()),
                None => line.to_owned(),
            }
        })
        .collect();
    let mut spec = LoadSpec::new(h.port, CLIENTS, mix);
    spec.total = Some(requests);
    spec.keep_samples = false;
    let load = Load::start(spec);
    let mut points: Vec<Point> = Vec::new();
    let sample = |done| Point {
        done,
        host: proc::sample_tree(master),
        fpm_rss_kib: proc::sample_tree(fpm_pid).rss_kib,
        temp_files: std::fs::read_dir(&uploads).unwrap().count(),
    };
    let interval = Duration::from_millis(100);
    while load.done.load(Ordering::SeqCst) < requests {
        std::thread::sleep(interval);
        points.push(sample(load.done.load(Ordering::SeqCst).min(requests)));
    }
    let report: Report = load.join();
    std::thread::sleep(Duration::from_millis(500));
    let after = sample(requests);

    // Windows of the run: just after warm-up, and the end.
    let window = |from: f64, to: f64| -> Vec<Point> {
        points
            .iter()
            .filter(|p| {
                let at = p.done as f64 / requests as f64;
                at >= from && at <= to
            })
            .copied()
            .collect()
    };
    let warm = window(0.10, 0.15);
    let end = window(0.95, 1.0);
    assert!(
        !warm.is_empty() && !end.is_empty(),
        "too few samples: the run was too short to judge ({} samples)",
        points.len()
    );
    let rss = |w: &[Point]| median(w.iter().map(|p| p.host.rss_kib as f64).collect());
    let fpm_rss = |w: &[Point]| median(w.iter().map(|p| p.fpm_rss_kib as f64).collect());
    let (rss_start, rss_end) = (rss(&warm), rss(&end));
    let growth = (rss_end - rss_start) / rss_start;
    let post_warmup = window(0.10, 1.0);
    let fds_start = warm[0].host.fds;
    let fds_max = post_warmup.iter().map(|p| p.host.fds).max().unwrap();
    let fds_end = end.last().unwrap().host.fds;
    let temp_max = points.iter().map(|p| p.temp_files).max().unwrap_or(0);
    let rate = report.total() as f64 / report.elapsed.as_secs_f64();

    println!("soak summary");
    println!("  requests      {} in {:.1} s ({rate:.0} req/s), {CLIENTS} keep-alive clients, {WORKERS} workers, php-fpm {FPM_CHILDREN} children", report.total(), report.elapsed.as_secs_f64());
    println!("  errors        {}", report.failed.len());
    println!(
        "  RSS           fe-php-host (master + workers) {:.1} MiB after warm-up -> {:.1} MiB at the end ({:+.2}%); php-fpm {:.1} -> {:.1} MiB",
        rss_start / 1024.0,
        rss_end / 1024.0,
        growth * 100.0,
        fpm_rss(&warm) / 1024.0,
        fpm_rss(&end) / 1024.0
    );
    println!(
        "  descriptors   {fds_start} after warm-up, {fds_max} at most, {fds_end} at the end, {} after the clients left",
        after.host.fds
    );
    println!(
        "  temp files    {temp_max} at most, {} after the run",
        after.temp_files
    );
    println!(
        "  processes     {} (master, {WORKERS} workers, pool manager, {RUNNERS} runners)",
        after.host.processes
    );
    let mut answers: std::collections::BTreeMap<(String, u16), u64> = Default::default();
    for ((req, status), n) in &report.statuses {
        *answers
            .entry((labels[*req as usize].clone(), *status))
            .or_default() += n;
    }
    println!("  answers");
    for ((label, status), n) in answers {
        println!("    {n:>8} × {status} {label}");
    }

    assert!(
        report.failed.is_empty(),
        "{} requests failed, first: {:#?}\nstderr:\n{}",
        report.failed.len(),
        &report.failed[..report.failed.len().min(5)],
        h.stderr()
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(report.total(), requests);
    assert!(
        growth < MAX_RSS_GROWTH,
        "resident memory grew by {:.2}% after warm-up",
        growth * 100.0
    );
    // Level: at most the clients' own connections more than after warm-up.
    assert!(
        fds_max <= fds_start + CLIENTS && fds_end <= fds_start + CLIENTS,
        "descriptors grew: {fds_start} after warm-up, {fds_max} at most, {fds_end} at the end"
    );
    // Only the uploads in flight (one per PHP process, and one body on its way
    // to a runner per worker) may exist at a time.
    assert!(
        temp_max <= RUNNERS + WORKERS + FPM_CHILDREN,
        "{temp_max} temporary files at once"
    );
    assert_eq!(after.temp_files, 0, "temporary files left behind");
    assert_eq!(
        after.host.processes,
        1 + WORKERS + 1 + RUNNERS,
        "a worker died or was replaced"
    );
    let m = get(&h.url("/_metrics")).text();
    assert_eq!(metric_sum(&m, "fephp_worker_crashes_total", &[]), 0.0);
    assert!(!h.stderr().contains("panicked"), "{}", h.stderr());
}

/// Runs with the other tests: 50,000 requests (SOAK_SHORT_REQUESTS to change).
#[test]
fn soak_short() {
    let n = std::env::var("SOAK_SHORT_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    soak(n);
}

/// `make soak`: 1,000,000 requests, or SOAK_REQUESTS.
#[test]
#[ignore = "long: run with `make soak`"]
fn soak_full() {
    let n = std::env::var("SOAK_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let started = Instant::now();
    soak(n);
    println!("  wall time     {:.0} s", started.elapsed().as_secs_f64());
}
