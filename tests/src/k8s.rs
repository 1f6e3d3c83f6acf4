//! The Kubernetes manifests (`deploy/k8s`), checked offline: rendered by
//! kubectl's kustomize, validated against the Kubernetes OpenAPI schemas by
//! PyPI's `kubernetes-validate`, and held to the invariants no schema
//! knows ([`violations`]).
//!
//! The tools live in a virtualenv that `scripts/test` makes
//! (`target/k8s-tools`, or `ES_K8S_TOOLS`): `kubernetes-validate` and its
//! PyYAML (used here to turn YAML into JSON), and `kubectl` when the
//! machine has none recent enough.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

/// Schema versions every object must pass: the oldest Kubernetes the
/// manifests claim to support (deploy/README.md) and the newest the
/// validator knows.
pub const KUBERNETES_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

/// The image each container (by name) must run, without its tag: the
/// project's own for the services, nginx for the front door, Redis for
/// the try-out Redis.
const IMAGES: [(&str, &str); 4] = [
    ("ingest", "event-stream/ingest"),
    ("stream-gateway", "event-stream/stream-gateway"),
    ("nginx", "nginx"),
    ("redis", "redis"),
];

/// The services' default `http.shutdown_grace_ms` (README).
const DEFAULT_SHUTDOWN_GRACE_MS: u64 = 10_000;

pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// kubectl, kubernetes-validate and the Python beside it.
#[derive(Debug)]
pub struct Tools {
    kubectl: PathBuf,
    validator: PathBuf,
    python: PathBuf,
}

impl Tools {
    /// Finds the tools `scripts/test` installs; panics saying how to get
    /// them.
    pub fn find() -> Self {
        let venv = std::env::var_os("ES_K8S_TOOLS")
            .map(PathBuf::from)
            .unwrap_or_else(|| repository_root().join("target/k8s-tools"));
        let validator = venv.join("bin/kubernetes-validate");
        assert!(
            validator.exists(),
            "no {} : run scripts/test once (it installs the Kubernetes validator), or \
             python3 -m venv {1} && {1}/bin/pip install kubernetes-validate",
            validator.display(),
            venv.display(),
        );
        // scripts/test puts kubectl in the venv only when the machine's is
        // missing or too old.
        let own = venv.join("bin/kubectl");
        let kubectl = if own.exists() {
            own
        } else {
            PathBuf::from("kubectl")
        };
        Self {
            kubectl,
            validator,
            python: venv.join("bin/python"),
        }
    }

    /// `kubectl kustomize DIR`: every object, as YAML.
    pub fn render(&self, dir: &Path) -> String {
        let output = Command::new(&self.kubectl)
            .arg("kustomize")
            .arg(dir)
            .output()
            .unwrap_or_else(|error| {
                panic!(
                    "running {} ({error}): run scripts/test",
                    self.kubectl.display()
                )
            });
        assert!(
            output.status.success(),
            "kubectl kustomize {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("kustomize prints UTF-8")
    }

    /// The objects of a YAML stream, as JSON values (PyYAML does the YAML).
    pub fn objects(&self, yaml: &str) -> Vec<Value> {
        let script = "import json, sys, yaml\n\
                      json.dump([o for o in yaml.safe_load_all(sys.stdin) if o], sys.stdout)";
        let stdout = self.pipe(Command::new(&self.python).args(["-c", script]), yaml);
        serde_json::from_str(&stdout).expect("PyYAML's JSON")
    }

    /// Validates every object of `yaml` (YAML or JSON) against the schemas
    /// of `version`, strictly: an unknown field fails, and so does a kind
    /// the validator has no schema for (which it only warns about).
    pub fn validate(&self, yaml: &str, version: &str) -> Validation {
        let file = std::env::temp_dir().join(format!("es-k8s-{}.yaml", testkit::unique_prefix()));
        std::fs::write(&file, yaml).expect("writing the objects to validate");
        let output = Command::new(&self.validator)
            .args(["--strict", "-k", version])
            .arg(&file)
            .output()
            .expect("running kubernetes-validate");
        let _ = std::fs::remove_file(&file);
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let clean = !report.lines().any(|line| {
            ["WARN", "ERROR", "FATAL"]
                .iter()
                .any(|w| line.starts_with(w))
        });
        Validation {
            passed: output.status.success() && clean,
            objects_passed: report
                .lines()
                .filter(|line| line.starts_with("INFO") && line.contains(" passed "))
                .count(),
            report,
        }
    }

    fn pipe(&self, command: &mut Command, input: &str) -> String {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the venv's python");
        child
            .stdin
            .take()
            .expect("piped stdin")
            .write_all(input.as_bytes())
            .expect("writing to python");
        let output = child.wait_with_output().expect("waiting for python");
        assert!(
            output.status.success(),
            "python: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("python prints UTF-8")
    }
}

/// What `kubernetes-validate` said about a set of objects.
#[derive(Debug)]
pub struct Validation {
    /// Exit 0 and no warning or error line.
    pub passed: bool,
    pub objects_passed: usize,
    pub report: String,
}

/// Every `ES__...` variable the README's configuration table names.
pub fn readme_env_keys() -> BTreeSet<String> {
    let readme =
        std::fs::read_to_string(repository_root().join("README.md")).expect("reading README.md");
    readme
        .lines()
        .filter(|line| line.starts_with("| `"))
        .filter_map(|line| line.split('|').nth(2))
        .map(|cell| cell.trim().trim_matches('`').to_owned())
        .filter(|name| name.starts_with("ES__"))
        .collect()
}

/// The objects of one kind, by name.
pub fn of_kind<'a>(objects: &'a [Value], kind: &str) -> BTreeMap<String, &'a Value> {
    objects
        .iter()
        .filter(|object| object["kind"] == kind)
        .map(|object| (text(&object["metadata"]["name"]).to_owned(), object))
        .collect()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("")
}

fn list(value: &Value) -> &[Value] {
    value.as_array().map_or(&[], Vec::as_slice)
}

/// The seconds a container's preStop hook sleeps (`exec: sleep N`), if
/// that is what it does.
fn pre_stop_sleep(container: &Value) -> Option<u64> {
    let command = list(&container["lifecycle"]["preStop"]["exec"]["command"]);
    match command {
        [program, seconds] if text(program) == "sleep" => text(seconds).parse().ok(),
        _ => None,
    }
}

/// A container's environment: its `env` values (a reference counts as
/// set, with no value) and the data of every ConfigMap it reads with
/// `envFrom`. Names of missing ConfigMaps are returned apart.
fn environment(
    container: &Value,
    config_maps: &BTreeMap<String, &Value>,
) -> (BTreeMap<String, Option<String>>, Vec<String>) {
    let mut env = BTreeMap::new();
    let mut missing = Vec::new();
    for source in list(&container["envFrom"]) {
        let name = text(&source["configMapRef"]["name"]);
        if name.is_empty() {
            continue;
        }
        match config_maps.get(name) {
            Some(map) => {
                if let Some(data) = map["data"].as_object() {
                    for (key, value) in data {
                        env.insert(key.clone(), value.as_str().map(str::to_owned));
                    }
                }
            }
            None => missing.push(name.to_owned()),
        }
    }
    for variable in list(&container["env"]) {
        env.insert(
            text(&variable["name"]).to_owned(),
            variable["value"].as_str().map(str::to_owned),
        );
    }
    (env, missing)
}

/// Every rule of ours the schemas cannot check, broken by `objects`; each
/// entry names the object and the container.
///
/// For every container of every Deployment and StatefulSet:
/// - its image is the one its name calls for ([`IMAGES`]), with a tag;
/// - every `ES__` variable it gets (env or envFrom) is a key of the
///   README's configuration table, and every ConfigMap it reads exists;
/// - it has a liveness probe on `/healthz` and a readiness probe; a
///   project service's readiness is `/readyz` (nginx's is its own
///   `/healthz`);
/// - it runs as non-root on a read-only root filesystem without privilege
///   escalation, and has a memory request and limit;
/// - in a Deployment, its preStop hook sleeps, and the pod's
///   terminationGracePeriodSeconds exceeds that sleep plus the service's
///   `http.shutdown_grace_ms`.
///
/// And every Service selects the pods of some workload.
pub fn violations(objects: &[Value], readme_keys: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    let config_maps = of_kind(objects, "ConfigMap");
    let mut pod_labels = Vec::new();
    for kind in ["Deployment", "StatefulSet"] {
        for (name, workload) in of_kind(objects, kind) {
            let pod = &workload["spec"]["template"]["spec"];
            pod_labels.push(&workload["spec"]["template"]["metadata"]["labels"]);
            let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
            let pod_non_root = pod["securityContext"]["runAsNonRoot"] == true;
            for container in list(&pod["containers"]) {
                let at = format!("{kind} {name}, container {}", text(&container["name"]));
                let mut broken = |rule: String| found.push(format!("{at}: {rule}"));

                let image = text(&container["image"]);
                match IMAGES.iter().find(|(c, _)| *c == text(&container["name"])) {
                    None => broken("no image is known for this container name".into()),
                    Some((_, expected)) => match image.split_once(':') {
                        Some((repository, tag)) if repository == *expected && !tag.is_empty() => {}
                        _ => broken(format!("image {image:?} is not {expected}:TAG")),
                    },
                }
                let project = image.starts_with("event-stream/");

                let (env, missing) = environment(container, &config_maps);
                for config_map in missing {
                    broken(format!("reads ConfigMap {config_map}, which is not there"));
                }
                for key in env.keys().filter(|key| key.starts_with("ES__")) {
                    if !readme_keys.contains(key) {
                        broken(format!("{key} is not in README.md's configuration table"));
                    }
                }

                let probe_path = |probe: &str| text(&container[probe]["httpGet"]["path"]);
                if probe_path("livenessProbe") != "/healthz"
                    && container["livenessProbe"]["tcpSocket"].is_null()
                {
                    broken("liveness probe is not GET /healthz".into());
                }
                if container["readinessProbe"].is_null() {
                    broken("no readiness probe".into());
                } else if project && probe_path("readinessProbe") != "/readyz" {
                    broken(format!(
                        "readiness probe path is {:?}, not /readyz",
                        probe_path("readinessProbe")
                    ));
                }

                let security = &container["securityContext"];
                if !(pod_non_root || security["runAsNonRoot"] == true) {
                    broken("may run as root (runAsNonRoot)".into());
                }
                if security["readOnlyRootFilesystem"] != true {
                    broken("root filesystem is writable".into());
                }
                if security["allowPrivilegeEscalation"] != false {
                    broken("allows privilege escalation".into());
                }
                let resources = &container["resources"];
                if resources["requests"]["memory"].is_null()
                    || resources["limits"]["memory"].is_null()
                {
                    broken("no memory request and limit".into());
                }

                if kind == "Deployment" {
                    let drain_ms = if project {
                        match env.get("ES__HTTP__SHUTDOWN_GRACE_MS") {
                            Some(Some(value)) => value.parse().unwrap_or(u64::MAX),
                            Some(None) => u64::MAX,
                            None => DEFAULT_SHUTDOWN_GRACE_MS,
                        }
                    } else {
                        0
                    };
                    match pre_stop_sleep(container) {
                        None => broken("preStop does not `sleep N`".into()),
                        Some(sleep) => {
                            let needed_ms = (sleep * 1000).saturating_add(drain_ms);
                            if grace * 1000 <= needed_ms {
                                broken(format!(
                                    "terminationGracePeriodSeconds {grace} is not above preStop \
                                     sleep {sleep} s + shutdown grace {drain_ms} ms"
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    for (name, service) in of_kind(objects, "Service") {
        let selector = service["spec"]["selector"].as_object();
        let selects = |labels: &&Value| {
            selector.is_some_and(|selector| {
                selector
                    .iter()
                    .all(|(key, value)| labels.get(key) == Some(value))
            })
        };
        if !pod_labels.iter().any(selects) {
            found.push(format!("Service {name}: selects no workload's pods"));
        }
    }
    found
}
