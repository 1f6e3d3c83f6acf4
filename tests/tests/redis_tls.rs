//! The services over TLS to Redis (`rediss://`), configured as an operator
//! would, through `ES__REDIS__*` variables: a TLS-only `redis-server` with
//! certificates made for the test (`testkit::Certificates`), a client
//! certificate it requires, the system's roots taken from `SSL_CERT_FILE`,
//! a CA that signed nothing (live, not ready, saying why in the log),
//! settings that cannot apply (no start), and a 3-master cluster over TLS.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::Path;

use e2e::cluster::{Cluster, Outcome, cluster_service_env, publish};
use e2e::process::Service;
use e2e::subscriber::Subscriber;
use e2e::{PATIENCE, RedisServer, wait_until};
use testkit::{Certificates, ClientAuth, RedisCluster};
use tokio::task::block_in_place;

fn path(file: &Path) -> String {
    file.to_string_lossy().into_owned()
}

/// The status `path` of `service` answers, or `None` without an answer.
async fn status_of(service: &Service, path: &str) -> Option<u16> {
    let response = reqwest::get(format!("{}{path}", service.url()))
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// Publishes `message` to `topic` through `cluster`'s ingest and waits for
/// `subscriber` to get it.
async fn delivered(cluster: &Cluster, subscriber: &Subscriber, topic: &str, message: &str) {
    let outcome = cluster.publish(topic, message).await;
    assert!(
        matches!(outcome, Outcome::Stored(_)),
        "publish over TLS: {outcome:?}; ingest log:\n{}",
        cluster.ingest.log()
    );
    let arrived = wait_until(PATIENCE, || async {
        subscriber.data().iter().any(|data| data == message)
    })
    .await;
    assert!(
        arrived,
        "{message} never reached the subscriber; gateway log:\n{}",
        cluster.gateways[0].log()
    );
}

#[tokio::test]
async fn services_publish_and_stream_over_tls_with_a_ca_file_and_a_client_certificate() {
    let certificates = Certificates::generate();
    let redis = RedisServer::start_tls(&certificates, ClientAuth::Required);
    let (ca, cert, key) = (
        path(&certificates.ca()),
        path(&certificates.client_cert()),
        path(&certificates.client_key()),
    );
    let cluster = Cluster::launch(
        redis,
        1,
        &[
            ("ES__REDIS__TLS_CA_FILE", &ca),
            ("ES__REDIS__TLS_CLIENT_CERT_FILE", &cert),
            ("ES__REDIS__TLS_CLIENT_KEY_FILE", &key),
        ],
    );
    assert!(cluster.redis.url().starts_with("rediss://"));
    cluster.wait_ready().await;
    let subscriber = Subscriber::start(vec![cluster.gateways[0].url()], "topic=secure").await;
    delivered(&cluster, &subscriber, "secure", "over-tls").await;
    let log = cluster.ingest.log();
    assert!(
        log.contains("Redis over TLS") && log.contains("CA file"),
        "the start says how Redis is reached; log:\n{log}"
    );
}

#[tokio::test]
async fn without_a_ca_file_the_system_roots_come_from_ssl_cert_file() {
    let certificates = Certificates::generate();
    let redis = RedisServer::start_tls(&certificates, ClientAuth::No);
    let ca = path(&certificates.ca());
    // Not an ES__ setting: the system's trust store, as rustls-native-certs
    // reads it (OpenSSL's variable).
    let cluster = Cluster::launch(redis, 1, &[("SSL_CERT_FILE", &ca)]);
    cluster.wait_ready().await;
    let subscriber = Subscriber::start(vec![cluster.gateways[0].url()], "topic=roots").await;
    delivered(&cluster, &subscriber, "roots", "system-roots").await;
    assert!(
        cluster.ingest.log().contains("roots=\"system\""),
        "ingest log:\n{}",
        cluster.ingest.log()
    );
}

#[tokio::test]
async fn a_ca_that_signed_nothing_leaves_the_services_live_not_ready_and_saying_why() {
    let certificates = Certificates::generate();
    let redis = RedisServer::start_tls(&certificates, ClientAuth::No);
    let url = format!("rediss://:hunter2@127.0.0.1:{}/", redis.port());
    let other_ca = path(&certificates.other_ca());
    let cluster = Cluster::launch(
        redis,
        1,
        &[
            ("ES__REDIS__URL", &url),
            ("ES__REDIS__TLS_CA_FILE", &other_ca),
        ],
    );
    for service in [&cluster.ingest, &cluster.gateways[0]] {
        let live = wait_until(PATIENCE, || async {
            status_of(service, "/healthz").await == Some(200)
        })
        .await;
        assert!(live, "no 200 from /healthz; log:\n{}", service.log());
        // Still retrying, as for an unreachable Redis: several attempts,
        // each saying why, none with the password.
        let retried = wait_until(PATIENCE, || async {
            service.log().matches("UnknownIssuer").count() >= 2
        })
        .await;
        let log = service.log();
        assert!(retried, "no repeated TLS refusal in the log:\n{log}");
        assert!(
            log.contains("not signed by a CA this client trusts"),
            "log:\n{log}"
        );
        assert!(log.contains("retrying"), "log:\n{log}");
        assert!(!log.contains("hunter2"), "the password leaked:\n{log}");
        assert_eq!(status_of(service, "/readyz").await, Some(503), "{log}");
    }
    let refused = cluster.publish("t", "never").await;
    assert!(
        matches!(refused, Outcome::Refused(ref why) if why.starts_with("503")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn tls_settings_that_cannot_be_used_stop_the_start_naming_the_key() {
    let certificates = Certificates::generate();
    let redis = RedisServer::start_tls(&certificates, ClientAuth::No);
    let ca = path(&certificates.ca());
    let cases = [
        (
            vec![
                ("ES__REDIS__URL", redis.url()),
                ("ES__REDIS__TLS_CA_FILE", "/nonexistent/ca.pem".to_owned()),
            ],
            ["redis.tls_ca_file", "/nonexistent/ca.pem"],
        ),
        (
            vec![
                ("ES__REDIS__URL", "redis://127.0.0.1:6379".to_owned()),
                ("ES__REDIS__TLS_CA_FILE", ca.clone()),
            ],
            ["redis.tls_ca_file", "not rediss://"],
        ),
        (
            vec![
                ("ES__REDIS__URL", redis.url()),
                ("ES__REDIS__TLS_CLIENT_CERT_FILE", ca.clone()),
            ],
            ["redis.tls_client_key_file", "must be set with"],
        ),
    ];
    for (pairs, says) in cases {
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let env = e2e::cluster::service_env(&redis, &pairs);
        for binary in ["ingest", "stream-gateway"] {
            let mut service = Service::start(binary, &env);
            let Some(status) = service.wait_exit(PATIENCE).await else {
                panic!("{binary} started with {pairs:?}; log:\n{}", service.log());
            };
            assert!(!status.success(), "{binary} exited with {status}");
            let log = service.log();
            for said in says {
                assert!(log.contains(said), "{binary}: {said} not in\n{log}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_topics_on_every_master_through_the_services() {
    let certificates = Certificates::generate();
    let redis = block_in_place(|| RedisCluster::start_tls(&certificates, ClientAuth::Required));
    let (ca, cert, key) = (
        path(&certificates.ca()),
        path(&certificates.client_cert()),
        path(&certificates.client_key()),
    );
    let env = cluster_service_env(
        &redis.seeds(),
        &[
            ("ES__REDIS__TLS_CA_FILE", &ca),
            ("ES__REDIS__TLS_CLIENT_CERT_FILE", &cert),
            ("ES__REDIS__TLS_CLIENT_KEY_FILE", &key),
        ],
    );
    let ingest = Service::start("ingest", &env);
    let gateway = Service::start("stream-gateway", &env);
    ingest.wait_ready().await;
    gateway.wait_ready().await;

    // A topic on each master, by the slot of its hash tag (the topic).
    let mut topics: BTreeMap<u16, String> = BTreeMap::new();
    let masters = block_in_place(|| redis.masters());
    for n in 0.. {
        if topics.len() == masters.len() {
            break;
        }
        let name = format!("tls{n}");
        let owner = block_in_place(|| redis.master_of(redis.keyslot(&name))).unwrap();
        topics.entry(owner).or_insert(name);
    }
    let query: Vec<String> = topics.values().map(|t| format!("topic={t}")).collect();
    let subscriber = Subscriber::start(vec![gateway.url()], &query.join("&")).await;
    let client = reqwest::Client::new();
    for topic in topics.values() {
        let outcome = publish(&client, &ingest.url(), topic, &format!("on-{topic}")).await;
        assert!(
            matches!(outcome, Outcome::Stored(_)),
            "{topic}: {outcome:?}; log:\n{}",
            ingest.log()
        );
    }
    let all = wait_until(PATIENCE, || async {
        let data = subscriber.data();
        topics.values().all(|t| data.contains(&format!("on-{t}")))
    })
    .await;
    assert!(
        all,
        "got {:?}; gateway log:\n{}",
        subscriber.data(),
        gateway.log()
    );
}
