//! TLS to Redis (`rediss://`): real `redis-server` processes serving TLS
//! only, with certificates made for the test (`testkit::Certificates`):
//! publish and stream with a CA file, client certificates, each refusal
//! (another CA, another name, a plain server, no client certificate) with
//! the error that says why, and a 3-master cluster over TLS.

use std::time::Duration;

use bus::{Bus, Error, RedisConfig, RedisMode, RedisTls, Role, TlsFile, TlsFiles};
use shared_types::Position;
use testkit::{Certificates, ClientAuth, RedisCluster, RedisServer};

use crate::helpers::{
    assert_first_commands_after_a_restart_succeed, cluster_config, connected, next_event,
    redis_config, subscriber,
};

/// How long a bus refused by the server is given to (wrongly) become
/// ready; a refused handshake fails in milliseconds.
const REFUSED_FOR: Duration = Duration::from_millis(1500);

/// TLS material trusting `ca`, presenting `client` (certificate, key).
fn tls(
    ca: Option<std::path::PathBuf>,
    client: Option<(std::path::PathBuf, std::path::PathBuf)>,
) -> RedisTls {
    RedisTls::load(&TlsFiles {
        ca_file: ca,
        client_cert: client,
    })
    .expect("the test's certificates load")
}

/// The test CA, no client certificate.
fn trusting(certificates: &Certificates) -> RedisTls {
    tls(Some(certificates.ca()), None)
}

/// The test CA and the client certificate it signed.
fn with_client_certificate(certificates: &Certificates) -> RedisTls {
    tls(
        Some(certificates.ca()),
        Some((certificates.client_cert(), certificates.client_key())),
    )
}

/// A config for a TLS `server` with `tls`, short timings.
fn tls_config(server: &RedisServer, tls: RedisTls) -> RedisConfig {
    RedisConfig {
        tls: Some(tls),
        startup_timeout: REFUSED_FOR,
        ..redis_config(server)
    }
}

/// The error of a publish through a bus that cannot get through, after
/// checking that neither role becomes ready.
async fn refusal(config: RedisConfig) -> String {
    let ingest = Bus::redis(config.clone(), Role::Publisher).expect("created without I/O");
    let gateway = Bus::redis(config, Role::Subscriber).expect("created without I/O");
    assert!(
        ingest.wait_ready().await.is_err(),
        "a refused publisher became ready"
    );
    assert!(
        gateway.wait_ready().await.is_err(),
        "a refused subscriber became ready"
    );
    assert!(!ingest.is_ready().await && !gateway.is_ready().await);
    match ingest.publish("t", "message", "refused").await {
        Err(Error::Unavailable(why)) => why,
        other => panic!("expected the bus to be unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn events_are_published_streamed_and_replayed_over_tls_with_a_ca_file() {
    let certificates = Certificates::generate();
    let server = RedisServer::start_tls(&certificates, ClientAuth::No);
    assert!(server.url().starts_with("rediss://"));
    let config = tls_config(&server, trusting(&certificates));
    let gateway = subscriber(config.clone()).await;
    let ingest = connected(config, Role::Publisher).await;
    let mut subscription = gateway.subscribe("t").await.unwrap();
    let first = ingest.publish("t", "message", "one").await.unwrap();
    let second = ingest.publish("t", "message", "two").await.unwrap();
    assert_eq!(next_event(&mut subscription).await.position, first);
    let event = next_event(&mut subscription).await;
    assert_eq!((event.position, event.data.as_ref()), (second, "two"));
    assert_eq!(gateway.head("t").await.unwrap(), second);
    let replay = gateway.replay("t", Position::START).await.unwrap();
    let data: Vec<&str> = replay.events.iter().map(|e| e.data.as_ref()).collect();
    assert_eq!(data, ["one", "two"]);
}

#[tokio::test]
async fn a_server_requiring_client_certificates_takes_ours_and_refuses_none_or_a_strangers() {
    let certificates = Certificates::generate();
    let server = RedisServer::start_tls(&certificates, ClientAuth::Required);

    let config = tls_config(&server, with_client_certificate(&certificates));
    let gateway = subscriber(config.clone()).await;
    let ingest = connected(config, Role::Publisher).await;
    let mut subscription = gateway.subscribe("t").await.unwrap();
    let position = ingest.publish("t", "message", "signed").await.unwrap();
    assert_eq!(next_event(&mut subscription).await.position, position);

    let without = refusal(tls_config(&server, trusting(&certificates))).await;
    assert!(
        without.contains("wants a client certificate"),
        "no client certificate: {without}"
    );
    let stranger = tls(
        Some(certificates.ca()),
        Some((
            certificates.other_client_cert(),
            certificates.other_client_key(),
        )),
    );
    let refused = refusal(tls_config(&server, stranger)).await;
    assert!(
        refused.contains("wants a client certificate"),
        "a certificate of another CA: {refused}"
    );
}

#[tokio::test]
async fn a_server_signed_by_another_ca_is_refused_saying_so_without_the_password() {
    let certificates = Certificates::generate();
    let server = RedisServer::start_tls(&certificates, ClientAuth::No);
    let config = RedisConfig {
        url: format!("rediss://:hunter2@127.0.0.1:{}/", server.port()),
        ..tls_config(&server, tls(Some(certificates.other_ca()), None))
    };
    let why = refusal(config.clone()).await;
    assert!(why.contains("UnknownIssuer"), "{why}");
    assert!(
        why.contains("not signed by a CA this client trusts"),
        "{why}"
    );
    assert!(!why.contains("hunter2"), "{why}");

    let waited = Bus::redis(config, Role::Publisher)
        .unwrap()
        .wait_ready()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        waited.contains(&format!("rediss://:***@127.0.0.1:{}/", server.port())),
        "{waited}"
    );
    assert!(!waited.contains("hunter2"), "{waited}");
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_saying_so() {
    let certificates = Certificates::generate_for(&["DNS:elsewhere.example"]);
    let server = RedisServer::start_tls(&certificates, ClientAuth::No);
    let why = refusal(tls_config(&server, trusting(&certificates))).await;
    assert!(
        why.contains("does not name the host"),
        "127.0.0.1 against a certificate for elsewhere.example: {why}"
    );
}

#[tokio::test]
async fn a_plain_server_is_refused_saying_it_does_not_speak_tls() {
    let certificates = Certificates::generate();
    let server = RedisServer::start();
    let config = RedisConfig {
        url: format!("rediss://127.0.0.1:{}/", server.port()),
        tls: Some(trusting(&certificates)),
        startup_timeout: REFUSED_FOR,
        ..redis_config(&server)
    };
    let why = refusal(config).await;
    assert!(why.contains("does not speak TLS on this port"), "{why}");
}

#[tokio::test]
async fn after_a_tls_redis_restart_the_first_command_on_each_connection_succeeds() {
    // A TLS connection's end is noticed like a plain one's (the plain
    // variant of this test is in `redis_outages`).
    let certificates = Certificates::generate();
    let mut server = RedisServer::start_tls(&certificates, ClientAuth::No);
    let config = tls_config(&server, trusting(&certificates));
    assert_first_commands_after_a_restart_succeed(&mut server, config).await;
}

#[tokio::test]
async fn tls_settings_that_cannot_apply_are_refused_when_the_bus_is_created() {
    let certificates = Certificates::generate();
    let plain = RedisConfig {
        url: "redis://:hunter2@127.0.0.1:1/".into(),
        tls: Some(trusting(&certificates)),
        ..RedisConfig::default()
    };
    let insecure = RedisConfig {
        url: "rediss://127.0.0.1:1/#insecure".into(),
        tls: Some(trusting(&certificates)),
        ..RedisConfig::default()
    };
    let mixed = RedisConfig {
        mode: RedisMode::Cluster,
        cluster_nodes: vec!["rediss://127.0.0.1:1".into(), "redis://127.0.0.1:2".into()],
        ..RedisConfig::default()
    };
    for (config, says) in [
        (plain, "not rediss://"),
        (insecure, "cannot be turned off"),
        (mixed, "all rediss:// or all redis://"),
    ] {
        let error = Bus::redis(config, Role::Publisher).unwrap_err().to_string();
        assert!(error.contains(says), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}

#[test]
fn tls_files_that_cannot_be_used_are_refused_naming_the_file_not_its_content() {
    let certificates = Certificates::generate();
    let dir = certificates.dir();
    let not_pem = dir.join("not.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    // A key file holding something secret-looking that is not a key: the
    // error must not quote it.
    let broken_key = dir.join("broken.key");
    std::fs::write(
        &broken_key,
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==!!\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let client = |cert, key| Some((cert, key));
    let cases = [
        (
            TlsFiles {
                ca_file: Some(dir.join("missing.pem")),
                client_cert: None,
            },
            TlsFile::Ca,
            "missing.pem",
        ),
        (
            TlsFiles {
                ca_file: Some(not_pem.clone()),
                client_cert: None,
            },
            TlsFile::Ca,
            "holds no PEM certificate",
        ),
        (
            TlsFiles {
                ca_file: Some(certificates.ca()),
                client_cert: client(not_pem.clone(), certificates.client_key()),
            },
            TlsFile::ClientCert,
            "not.pem",
        ),
        (
            TlsFiles {
                ca_file: Some(certificates.ca()),
                client_cert: client(certificates.client_cert(), broken_key.clone()),
            },
            TlsFile::ClientKey,
            "holds no PEM private key",
        ),
        (
            TlsFiles {
                ca_file: Some(certificates.ca()),
                client_cert: client(certificates.client_cert(), certificates.server_key()),
            },
            TlsFile::ClientKey,
            "is not the key of the certificate",
        ),
    ];
    for (files, file, says) in cases {
        let error = RedisTls::load(&files).unwrap_err();
        let text = error.to_string();
        assert_eq!(error.file(), file, "{text}");
        assert!(text.contains(says), "{text}");
        assert!(!text.contains("c2VjcmV0"), "key content leaked: {text}");
    }
}

#[tokio::test]
async fn a_tls_cluster_delivers_publishes_on_every_master_with_a_client_certificate() {
    let certificates = Certificates::generate();
    let cluster = RedisCluster::start_tls(&certificates, ClientAuth::Required);
    let config = RedisConfig {
        tls: Some(with_client_certificate(&certificates)),
        ..cluster_config(&cluster)
    };
    assert!(
        config
            .cluster_nodes
            .iter()
            .all(|n| n.starts_with("rediss://"))
    );
    let gateway = subscriber(config.clone()).await;
    let ingest = connected(config.clone(), Role::Publisher).await;
    // One topic on each master, by the slot of the hash tag its keys carry.
    let masters: Vec<u16> = cluster.masters().iter().map(|(port, _, _)| *port).collect();
    let mut topics = Vec::new();
    for master in &masters {
        let topic = (0..)
            .map(|n| format!("tls{n}"))
            .find(|name| cluster.master_of(cluster.keyslot(name)) == Some(*master))
            .unwrap();
        topics.push(topic);
    }
    let mut subscriptions = Vec::new();
    for topic in &topics {
        let mut subscription = gateway.subscribe(topic).await.unwrap();
        let position = ingest.publish(topic, "message", topic).await.unwrap();
        let event = next_event(&mut subscription).await;
        assert_eq!(
            (event.position, event.data.as_ref()),
            (position, topic.as_str())
        );
        subscriptions.push(subscription);
    }

    // A slot moved to another master: the publish follows the MOVED, and
    // the open subscription follows the topic, both over TLS.
    let slot = cluster.keyslot(&topics[0]);
    cluster.move_slot(slot, masters[1]);
    assert_eq!(cluster.master_of(slot), Some(masters[1]));
    let moved = ingest
        .publish(&topics[0], "message", "moved")
        .await
        .unwrap();
    let event = next_event(&mut subscriptions[0]).await;
    assert_eq!((event.position, event.data.as_ref()), (moved, "moved"));

    // The same cluster with another CA: refused, saying why.
    let stranger = RedisConfig {
        tls: Some(tls(
            Some(certificates.other_ca()),
            Some((certificates.client_cert(), certificates.client_key())),
        )),
        startup_timeout: REFUSED_FOR,
        ..config.clone()
    };
    let why = refusal(stranger).await;
    assert!(
        why.contains("not signed by a CA this client trusts"),
        "{why}"
    );
    // And without a client certificate, which these nodes require.
    let anonymous = RedisConfig {
        tls: Some(trusting(&certificates)),
        startup_timeout: REFUSED_FOR,
        ..config
    };
    let why = refusal(anonymous).await;
    assert!(why.contains("wants a client certificate"), "{why}");
}
