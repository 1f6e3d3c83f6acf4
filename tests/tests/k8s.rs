//! deploy/k8s, offline: rendered with kustomize, every object validated
//! against the Kubernetes schemas, our own invariants held, and the front
//! door's start script producing a configuration nginx accepts.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::k8s::{KUBERNETES_VERSIONS, Tools, of_kind, readme_env_keys, repository_root, violations};
use serde_json::{Value, json};

fn k8s_dir() -> PathBuf {
    repository_root().join("deploy/k8s")
}

/// The whole deployment, rendered, as JSON objects.
fn deployment(tools: &Tools) -> Vec<Value> {
    tools.objects(&tools.render(&k8s_dir()))
}

fn as_yaml_stream(objects: &[Value]) -> String {
    // JSON is YAML: one document per object.
    objects
        .iter()
        .map(|object| format!("---\n{object}\n"))
        .collect()
}

#[test]
fn every_object_of_the_kustomization_passes_the_kubernetes_schemas() {
    let tools = Tools::find();
    for dir in [k8s_dir(), k8s_dir().join("try-redis")] {
        let yaml = tools.render(&dir);
        let count = tools.objects(&yaml).len();
        assert!(count > 0, "{} rendered nothing", dir.display());
        for version in KUBERNETES_VERSIONS {
            let validation = tools.validate(&yaml, version);
            assert!(
                validation.passed,
                "{} against {version}:\n{}",
                dir.display(),
                validation.report
            );
            assert_eq!(
                validation.objects_passed,
                count,
                "every object of {} must have been validated against {version}:\n{}",
                dir.display(),
                validation.report
            );
        }
    }
}

#[test]
fn the_deployment_has_every_part_the_topology_needs() {
    let tools = Tools::find();
    let objects = deployment(&tools);
    let deployments = of_kind(&objects, "Deployment");
    let replicas: Vec<(&str, u64)> = deployments
        .iter()
        .map(|(name, d)| (name.as_str(), d["spec"]["replicas"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        replicas,
        [("front-door", 2), ("ingest", 2), ("stream-gateway", 3)]
    );

    let gateway = &deployments["stream-gateway"]["spec"]["template"]["spec"];
    let anti = &gateway["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0]["podAffinityTerm"];
    assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
    assert_eq!(
        anti["labelSelector"]["matchLabels"]["app.kubernetes.io/name"],
        "stream-gateway"
    );

    let budgets = of_kind(&objects, "PodDisruptionBudget");
    assert_eq!(
        budgets["stream-gateway"]["spec"]["selector"]["matchLabels"],
        deployments["stream-gateway"]["spec"]["selector"]["matchLabels"]
    );

    // front-door-start relies on these: gateways headless (every pod's
    // address), ingest one ClusterIP, the front door public.
    let services = of_kind(&objects, "Service");
    assert_eq!(services["stream-gateway"]["spec"]["clusterIP"], "None");
    assert_eq!(services["ingest"]["spec"]["type"], "ClusterIP");
    assert_eq!(services["front-door"]["spec"]["type"], "LoadBalancer");
    assert_eq!(
        services["front-door"]["spec"]["externalTrafficPolicy"],
        "Local"
    );

    // The nginx ConfigMap holds deploy/nginx's files byte for byte.
    let nginx = of_kind(&objects, "ConfigMap")
        .into_iter()
        .find(|(name, _)| name.starts_with("front-door-nginx-"))
        .map(|(_, map)| map)
        .expect("the front-door-nginx ConfigMap");
    for file in ["nginx.conf", "listen.conf"] {
        let on_disk =
            std::fs::read_to_string(repository_root().join("deploy/nginx").join(file)).unwrap();
        assert_eq!(nginx["data"][file], on_disk.as_str(), "{file} differs");
    }

    // Both secrets come from the Secrets deploy/README.md tells to create.
    for (name, container) in [("ingest", "ingest"), ("stream-gateway", "stream-gateway")] {
        let env = &deployments[name]["spec"]["template"]["spec"]["containers"][0]["env"];
        let secret = |variable: &str| {
            env.as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == variable)
                .map(|e| e["valueFrom"]["secretKeyRef"].clone())
                .unwrap_or_else(|| panic!("{container} has no {variable}"))
        };
        assert_eq!(
            secret("ES__REDIS__URL"),
            json!({"name": "event-stream-redis", "key": "url"})
        );
        assert_eq!(
            secret("ES__AUTH__HS256_SECRETS"),
            json!({"name": "event-stream-auth", "key": "hs256-secrets"})
        );
    }
}

#[test]
fn the_manifests_keep_every_invariant_the_schemas_cannot_check() {
    let tools = Tools::find();
    let keys = readme_env_keys();
    assert!(
        keys.contains("ES__HTTP__SHUTDOWN_GRACE_MS") && keys.len() > 30,
        "the README's configuration table could not be read: {keys:?}"
    );
    for dir in [k8s_dir(), k8s_dir().join("try-redis")] {
        let objects = tools.objects(&tools.render(&dir));
        assert_eq!(
            violations(&objects, &keys),
            Vec::<String>::new(),
            "{}",
            dir.display()
        );
    }
}

/// Applies `change` to the named Deployment's first container (or, when
/// `container` is false, to its pod spec).
fn break_deployment(
    objects: &mut [Value],
    name: &str,
    container: bool,
    change: impl Fn(&mut Value),
) {
    let object = objects
        .iter_mut()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name)
        .unwrap();
    let pod = &mut object["spec"]["template"]["spec"];
    if container {
        change(&mut pod["containers"][0]);
    } else {
        change(pod);
    }
}

#[test]
fn each_invariant_reports_a_manifest_that_breaks_it() {
    let tools = Tools::find();
    let keys = readme_env_keys();
    let good = deployment(&tools);
    type Change = fn(&mut Value);
    let cases: [(&str, bool, Change, &str, &str); 9] = [
        (
            "stream-gateway",
            false,
            |pod| pod["terminationGracePeriodSeconds"] = json!(15),
            "terminationGracePeriodSeconds 15 is not above preStop sleep 5 s + shutdown grace 10000 ms",
            "a grace period that the preStop sleep and the drain do not fit in",
        ),
        (
            "ingest",
            true,
            |c| c["readinessProbe"]["httpGet"]["path"] = json!("/healthz"),
            "readiness probe path is \"/healthz\", not /readyz",
            "a readiness probe on /healthz",
        ),
        (
            "ingest",
            true,
            |c| c["image"] = json!("evil/ingest:latest"),
            "image \"evil/ingest:latest\" is not event-stream/ingest:TAG",
            "another project's image",
        ),
        (
            "stream-gateway",
            true,
            |c| c["image"] = json!("event-stream/stream-gateway"),
            "is not event-stream/stream-gateway:TAG",
            "an image without a tag",
        ),
        (
            "stream-gateway",
            true,
            |c| {
                c["env"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "ES__STREAM__MAX_STREEMS", "value": "1"}))
            },
            "ES__STREAM__MAX_STREEMS is not in README.md's configuration table",
            "a misspelled setting",
        ),
        (
            "ingest",
            true,
            |c| c["lifecycle"] = json!({}),
            "preStop does not `sleep N`",
            "no preStop sleep",
        ),
        (
            "front-door",
            false,
            |pod| pod["terminationGracePeriodSeconds"] = json!(10),
            "terminationGracePeriodSeconds 10 is not above preStop sleep 10 s",
            "a front door killed before its preStop sleep ends",
        ),
        (
            "ingest",
            true,
            |c| c["securityContext"]["readOnlyRootFilesystem"] = json!(false),
            "root filesystem is writable",
            "a writable root filesystem",
        ),
        (
            "stream-gateway",
            true,
            |c| c["envFrom"][0]["configMapRef"]["name"] = json!("no-such-settings"),
            "reads ConfigMap no-such-settings, which is not there",
            "settings from a ConfigMap that is not rendered",
        ),
    ];
    for (name, container, change, expected, why) in cases {
        let mut objects = good.clone();
        break_deployment(&mut objects, name, container, change);
        let found = violations(&objects, &keys);
        assert!(
            found.iter().any(|v| v.contains(expected)),
            "expected a violation for {why} ({expected}), got {found:?}"
        );
    }

    // A shutdown grace raised in the shared settings outgrows every pod's.
    let mut objects = good.clone();
    let settings = objects
        .iter_mut()
        .find(|o| {
            o["kind"] == "ConfigMap"
                && o["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("event-stream-settings-")
        })
        .unwrap();
    settings["data"]["ES__HTTP__SHUTDOWN_GRACE_MS"] = json!("30000");
    let found = violations(&objects, &keys);
    assert_eq!(
        found.len(),
        2,
        "ingest and stream-gateway both outgrown: {found:?}"
    );

    // A Service that selects nothing.
    let mut objects = good;
    let service = objects
        .iter_mut()
        .find(|o| o["kind"] == "Service" && o["metadata"]["name"] == "stream-gateway")
        .unwrap();
    service["spec"]["selector"]["app.kubernetes.io/name"] = json!("stream-gateways");
    assert!(
        violations(&objects, &keys)
            .iter()
            .any(|v| v == "Service stream-gateway: selects no workload's pods")
    );
}

#[test]
fn the_schema_validation_fails_a_broken_object() {
    let tools = Tools::find();
    let gateway = deployment(&tools)
        .into_iter()
        .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "stream-gateway")
        .unwrap();
    type Change = fn(&mut Value);
    let cases: [(Change, &str); 4] = [
        (
            |d| d["spec"]["replicas"] = json!("three"),
            "replicas as a string",
        ),
        (
            |d| {
                d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = json!("Always")
            },
            "a misspelled field",
        ),
        (
            |d| {
                let container = &mut d["spec"]["template"]["spec"]["containers"][0];
                container.as_object_mut().unwrap().remove("name");
            },
            "a container without its required name",
        ),
        (
            |d| d["kind"] = json!("Deploymnet"),
            "a kind that does not exist",
        ),
    ];
    for (change, why) in cases {
        let mut object = gateway.clone();
        change(&mut object);
        let validation = tools.validate(&as_yaml_stream(&[object]), KUBERNETES_VERSIONS[0]);
        assert!(
            !validation.passed,
            "{why} passed validation:\n{}",
            validation.report
        );
    }
}

/// Runs deploy/k8s/front-door-start outside a pod: its ConfigMap files
/// from deploy/nginx, `resolv_conf` as the pod's, and an `nginx` on the
/// PATH that only tests the configuration (`nginx -t`). Returns the exit
/// status, the output, and the upstreams.conf it wrote.
fn run_front_door_start(resolv_conf: &str, namespace: &str) -> (bool, String, Option<String>) {
    let dir = std::env::temp_dir().join(format!("es-front-door-{}", testkit::unique_prefix()));
    let (run, bin) = (dir.join("run"), dir.join("bin"));
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::write(dir.join("resolv.conf"), resolv_conf).unwrap();
    let shim = bin.join("nginx");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\nexec {} -t \"$@\"\n",
            e2e::nginx::nginx_binary().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("sh")
        .arg(k8s_dir().join("front-door-start"))
        .env("PATH", path)
        .env("POD_NAMESPACE", namespace)
        .env(
            "FRONT_DOOR_CONF_DIR",
            repository_root().join("deploy/nginx"),
        )
        .env("FRONT_DOOR_RUN_DIR", &run)
        .env("FRONT_DOOR_RESOLV_CONF", dir.join("resolv.conf"))
        .output()
        .unwrap();
    let upstreams = std::fs::read_to_string(run.join("upstreams.conf")).ok();
    let _ = std::fs::remove_dir_all(&dir);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text, upstreams)
}

#[test]
fn the_front_door_start_script_writes_upstreams_that_nginx_accepts() {
    // What kubelet writes into a pod of namespace `live` (cluster domain
    // `example.internal`, not the usual cluster.local).
    let resolv = "search live.svc.example.internal svc.example.internal example.internal\n\
                  nameserver 10.32.0.10\n\
                  options ndots:5\n";
    let (ok, output, upstreams) = run_front_door_start(resolv, "live");
    assert!(ok, "front-door-start or nginx -t failed:\n{output}");
    assert!(output.contains("test is successful"), "{output}");
    let upstreams = upstreams.unwrap();
    for line in [
        "resolver 10.32.0.10 valid=5s ipv6=off;",
        "default ingest.live.svc.example.internal:8081;",
        "default stream-gateway.live.svc.example.internal:8082;",
    ] {
        assert!(upstreams.contains(line), "no {line:?} in:\n{upstreams}");
    }

    // An IPv6 DNS server goes in brackets.
    let (ok, output, upstreams) = run_front_door_start(
        "nameserver fd00:10:96::a\nsearch live.svc.cluster.local\n",
        "live",
    );
    assert!(ok, "{output}");
    assert!(
        upstreams
            .unwrap()
            .contains("resolver [fd00:10:96::a] valid=5s")
    );
}

#[test]
fn the_front_door_start_script_refuses_a_pod_without_cluster_dns() {
    let cases = [
        (
            "nameserver 10.96.0.10\n",
            "live",
            "no search line (dnsPolicy Default)",
        ),
        (
            "search other.svc.cluster.local\nnameserver 10.96.0.10\n",
            "live",
            "another namespace's search domain",
        ),
        ("search live.svc.cluster.local\n", "live", "no nameserver"),
    ];
    for (resolv, namespace, why) in cases {
        let (ok, output, upstreams) = run_front_door_start(resolv, namespace);
        assert!(!ok, "started with {why}:\n{output}");
        assert!(
            output.contains("dnsPolicy must be ClusterFirst"),
            "{why}: {output}"
        );
        assert_eq!(upstreams, None, "{why}: wrote upstreams.conf");
    }
    let (ok, output, _) =
        run_front_door_start("search live.svc.cluster.local\nnameserver 10.96.0.10\n", "");
    assert!(!ok && output.contains("POD_NAMESPACE"), "{output}");
}

#[test]
fn the_kustomizations_name_only_files_that_exist() {
    // kustomize fails on a missing file too; this says which, and keeps
    // the nginx ConfigMap's sources in deploy/nginx (kustomize refuses
    // generator files outside a kustomization's own directory).
    let tools = Tools::find();
    for dir in ["deploy/k8s", "deploy/k8s/try-redis", "deploy/nginx"] {
        let dir = repository_root().join(dir);
        let kustomization = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
        let parsed = tools.objects(&kustomization);
        let mut named: Vec<String> = parsed[0]["resources"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r.as_str().unwrap().to_owned())
            .collect();
        for generator in parsed[0]["configMapGenerator"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for key in ["files", "envs"] {
                for file in generator[key].as_array().into_iter().flatten() {
                    let file = file.as_str().unwrap();
                    assert!(
                        !file.contains(".."),
                        "{}: generator file {file} is outside its directory",
                        dir.display()
                    );
                    named.push(file.to_owned());
                }
            }
        }
        assert!(!named.is_empty());
        for path in named {
            assert!(
                Path::new(&dir).join(&path).exists(),
                "{} names {path}, which does not exist",
                dir.display()
            );
        }
    }
}
