//! nginx in front of the services over unix sockets (`http.unix_socket`):
//! deploy/nginx/make-upstreams with `unix:` entries, a publish and a stream
//! through them, the services still on TCP as well; how a socket file left
//! behind, one in use, and a graceful stop are handled.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::cluster::{Outcome, publish, service_env};
use e2e::nginx::Nginx;
use e2e::process::{Service, free_port};
use e2e::{PATIENCE, RedisServer, wait_until};

/// A fresh directory for one test's sockets (short: a socket path is at
/// most 107 bytes), named by this process and the test: never another
/// test binary's.
fn socket_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("es-uds-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `binary` with `env`, listening on `socket` as well as on TCP.
fn start_on(binary: &str, env: &[(String, String)], socket: &Path) -> Service {
    let mut env = env.to_vec();
    env.push((
        "ES__HTTP__UNIX_SOCKET".into(),
        socket.to_str().unwrap().into(),
    ));
    Service::start(binary, &env)
}

fn upstream(socket: &Path) -> String {
    format!("unix:{}", socket.display())
}

/// Reads `response`'s body until `needle` has arrived; all of it so far.
async fn read_until(response: &mut reqwest::Response, body: &mut Vec<u8>, needle: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    while !String::from_utf8_lossy(body).contains(needle) {
        let chunk = tokio::time::timeout_at(deadline.into(), response.chunk())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{needle:?} never came; got {:?}",
                    String::from_utf8_lossy(body)
                )
            })
            .unwrap()
            .unwrap_or_else(|| panic!("the stream ended before {needle:?}"));
        body.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(body).into_owned()
}

/// The one SSE frame (blank-line delimited) in `text` that holds `needle`.
fn frame_with(text: &str, needle: &str) -> String {
    let frames: Vec<&str> = text
        .split("\n\n")
        .filter(|frame| frame.contains(needle))
        .collect();
    assert_eq!(frames.len(), 1, "{needle:?} in {text:?}");
    format!("{}\n\n", frames[0])
}

#[tokio::test]
async fn nginx_reaches_ingest_and_gateways_over_unix_sockets_and_names_the_client() {
    let redis = RedisServer::start();
    let env = service_env(
        &redis,
        &[
            ("ES__HTTP__TRUSTED_PROXIES", "127.0.0.1"),
            ("ES__PUBLISH__RATE_LIMIT_PER_SEC", "1"),
            ("ES__PUBLISH__RATE_LIMIT_BURST", "2"),
            // nginx's workers run as another user than its master here (as
            // root, nginx's default `user` is nobody): only the mode lets
            // them in. deploy/README.md says how to keep it tighter.
            ("ES__HTTP__UNIX_SOCKET_MODE", "666"),
        ],
    );
    let dir = socket_dir("front");
    let ingest_socket = dir.join("ingest.sock");
    let gateway_sockets = [dir.join("gateway-0.sock"), dir.join("gateway-1.sock")];
    let ingest = start_on("ingest", &env, &ingest_socket);
    let gateways: Vec<Service> = gateway_sockets
        .iter()
        .map(|socket| start_on("stream-gateway", &env, socket))
        .collect();
    // Readiness over TCP, as probes do.
    ingest.wait_ready().await;
    for gateway in &gateways {
        gateway.wait_ready().await;
    }
    let nginx = Nginx::start(
        &[upstream(&ingest_socket)],
        &gateway_sockets
            .iter()
            .map(|socket| upstream(socket))
            .collect::<Vec<_>>(),
    )
    .await;
    let client = reqwest::Client::new();
    let topic = format!("uds-{}", free_port());

    // One stream through nginx, one straight from a gateway over TCP.
    let stream_url = format!("{}/event-stream?topic={topic}", nginx.url());
    let mut through = client.get(&stream_url).send().await.unwrap();
    assert_eq!(through.status(), 200, "nginx log:\n{}", nginx.log());
    let direct_url = format!("{}/event-stream?topic={topic}", gateways[0].url());
    let mut direct = client.get(&direct_url).send().await.unwrap();
    assert_eq!(direct.status(), 200);
    let (mut through_body, mut direct_body) = (Vec::new(), Vec::new());
    read_until(&mut through, &mut through_body, "retry:").await;
    read_until(&mut direct, &mut direct_body, "retry:").await;

    // A unique word to find the event by, among characters a proxy could
    // mangle.
    let word = format!("unix-{}", free_port());
    let message = format!("über {word} ✓ \"quoted\" <tag> 100%");
    let outcome = publish(&client, &nginx.url(), &topic, &message).await;
    assert!(
        matches!(outcome, Outcome::Stored(_)),
        "{outcome:?}; nginx log:\n{}",
        nginx.log()
    );
    // Whole frames only: the data line is the event's last, so the frame
    // is complete with the blank line after the message.
    let frame_end = format!("{message}\n\n");
    let through_text = read_until(&mut through, &mut through_body, &frame_end).await;
    let direct_text = read_until(&mut direct, &mut direct_body, &frame_end).await;
    let frame = frame_with(&direct_text, &word);
    assert!(frame.starts_with("id: "), "{frame:?}");
    assert_eq!(
        frame_with(&through_text, &word),
        frame,
        "the event through nginx and the unix socket, byte for byte"
    );
    drop((through, direct));

    // nginx went over the sockets: its access log names the upstream (a
    // stream's line once nginx has seen it end).
    let ingest_used = format!("upstream={}", upstream(&ingest_socket));
    let gateway_used: Vec<String> = gateway_sockets
        .iter()
        .map(|socket| format!("upstream={}", upstream(socket)))
        .collect();
    let logged = wait_until(PATIENCE, || {
        let log = nginx.log();
        let found = log.contains(&ingest_used) && gateway_used.iter().any(|u| log.contains(u));
        async move { found }
    })
    .await;
    assert!(logged, "{}", nginx.log());

    // Over the socket nginx counts as 127.0.0.1, a trusted proxy: ingest's
    // per-address rate limit applies to the client nginx names. Two clients
    // on other loopback addresses have a bucket each; were nginx's socket
    // not trusted, they would share one.
    let from = |address: [u8; 4]| {
        reqwest::Client::builder()
            .local_address(std::net::IpAddr::from(address))
            .build()
            .unwrap()
    };
    let (first, second) = (from([127, 0, 0, 2]), from([127, 0, 0, 3]));
    // The first client publishes until it is refused: after its burst of
    // two, however slowly a loaded machine sends them (its bucket refills
    // one a second meanwhile).
    let mut stored = 0;
    let refused = loop {
        let outcome = publish(&first, &nginx.url(), &topic, &format!("burst {stored}")).await;
        match outcome {
            Outcome::Stored(_) => stored += 1,
            Outcome::Refused(why) if why.starts_with("429") => break true,
            other => panic!("{other:?}"),
        }
        if stored == 20 {
            break false;
        }
    };
    assert!(refused && stored >= 2, "{stored} stored before a 429");
    // The other client's bucket is its own: were nginx's socket not
    // trusted, both would be 127.0.0.1's, and this would be refused too.
    let outcome = publish(&second, &nginx.url(), &topic, "another client").await;
    assert!(matches!(outcome, Outcome::Stored(_)), "{outcome:?}");
    // Access lines reach the log through its writer thread: a moment later.
    let both = wait_until(PATIENCE, || async {
        let log = ingest.log();
        log.contains("client=127.0.0.2") && log.contains("client=127.0.0.3")
    })
    .await;
    assert!(both, "{}", ingest.log());
    drop(nginx);
    drop(gateways);
    drop(ingest);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_stale_socket_is_replaced_a_live_one_stops_a_second_service_and_a_stop_removes_it() {
    let dir = socket_dir("life");
    let socket = dir.join("event-stream.sock");
    // What a killed process leaves: a socket file nobody listens on.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let env = vec![("ES__HTTP__UNIX_SOCKET_MODE".to_owned(), "600".to_owned())];
    let mut first = start_on("event-stream", &env, &socket);
    first.wait_ready().await;
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "http.unix_socket_mode applied");
    }
    // The new socket answers.
    let healthz = get_over_unix(&socket, "/healthz").await;
    assert!(healthz.starts_with("HTTP/1.1 200 OK\r\n"), "{healthz}");

    // A second service on the same socket stops at start, leaving it be.
    let mut second = start_on("event-stream", &env, &socket);
    let status = second
        .wait_exit(PATIENCE)
        .await
        .expect("a second service on a live socket should exit");
    assert!(!status.success());
    let log = second.log();
    assert!(
        log.contains("in use") && log.contains("http.unix_socket"),
        "{log}"
    );
    let healthz = get_over_unix(&socket, "/healthz").await;
    assert!(healthz.starts_with("HTTP/1.1 200 OK\r\n"), "{healthz}");

    // A path that is not a socket is refused and not touched.
    let plain = dir.join("plain");
    std::fs::write(&plain, "not a socket").unwrap();
    let mut third = start_on("event-stream", &[], &plain);
    let status = third.wait_exit(PATIENCE).await.expect("should exit");
    assert!(!status.success());
    assert!(third.log().contains("not a socket"), "{}", third.log());
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "not a socket");

    // A graceful stop removes the socket file.
    assert!(first.terminate().await.success(), "{}", first.log());
    assert!(!socket.exists(), "the socket file outlived the service");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `GET path` over the unix socket at `socket`; the whole answer.
async fn get_over_unix(socket: &Path, path: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut io = tokio::net::UnixStream::connect(socket).await.unwrap();
    io.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), io.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn make_upstreams_takes_absolute_unix_paths_mixed_with_tcp_and_nginx_accepts_the_result() {
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx");
    let make = |args: &[&str]| {
        std::process::Command::new(deploy.join("make-upstreams"))
            .args(args)
            .output()
            .unwrap()
    };
    for (bad, why) in [
        ("unix:run/ingest.sock", "absolute path"),
        ("unix:/run/a:b.sock", "no ':'"),
    ] {
        let out = make(&["--ingest", bad, "--gateway", "127.0.0.1:8082"]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{bad}: {stderr}");
    }
    let out = make(&[
        "--ingest",
        "unix:/run/event-stream/ingest.sock",
        "--gateway",
        "unix:/run/event-stream/gateway-1.sock",
        "--gateway",
        "127.0.0.1:8083",
    ]);
    assert!(out.status.success());
    let upstreams = String::from_utf8(out.stdout).unwrap();
    assert!(
        upstreams.contains("server unix:/run/event-stream/ingest.sock max_fails=1")
            && upstreams.contains("server unix:/run/event-stream/gateway-1.sock max_fails=0;")
            && upstreams.contains("server 127.0.0.1:8083 max_fails=0;"),
        "{upstreams}"
    );
    // `nginx -t`: the sockets need not exist for the configuration to hold.
    let prefix = socket_dir("conf");
    std::fs::copy(deploy.join("nginx.conf"), prefix.join("nginx.conf")).unwrap();
    std::fs::write(prefix.join("listen.conf"), "listen 127.0.0.1:9;\n").unwrap();
    std::fs::write(prefix.join("upstreams.conf"), upstreams).unwrap();
    let tested = std::process::Command::new(e2e::nginx::nginx_binary())
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(prefix.join("nginx.conf"))
        .args(["-e", "stderr", "-t"])
        .output()
        .unwrap();
    assert!(
        tested.status.success(),
        "{}",
        String::from_utf8_lossy(&tested.stderr)
    );
    let _ = std::fs::remove_dir_all(&prefix);
}
