"""deploy/kubernetes: the manifests are valid Kubernetes (strict schemas of a pinned version) and agree with each other
and with the service: probes on BentoML's /livez and /readyz, the Service and the scrape annotations on the container
port, the autoscaler on the Deployment."""
from __future__ import annotations
import copy
from pathlib import Path
import pytest
import yaml

try:
    import kubernetes_validate
except ImportError as e:  # a dev dependency: a missing one must fail the suite, not skip the checks
    raise ImportError("kubernetes-validate is missing: pip install -e '.[dev]' (or pip install kubernetes-validate)") from e

K8S_VERSION = "1.33.0"  # the schemas kubernetes-validate checks against (it bundles 1.25 to 1.37)
DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
SERVICE_PORT = 3000  # where `bentoml serve` listens inside the image
MANIFESTS = sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def load(name: str) -> dict:
    "The one resource in `deploy/kubernetes/<name>`."
    docs = [d for d in yaml.safe_load_all((DEPLOY / name).read_text()) if d is not None]
    assert len(docs) == 1, f"{name}: expected one resource, found {len(docs)}"
    return docs[0]


@pytest.fixture(scope="module")
def deployment() -> dict: return load("deployment.yaml")


@pytest.fixture(scope="module")
def container(deployment) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, "deployment.yaml: expected one container"
    return containers[0]


def container_port(container: dict, port: int | str) -> int:
    "The container port number that `port` (a number or a port name) refers to."
    ports = {p["containerPort"]: p for p in container["ports"]}
    if isinstance(port, int):
        assert port in ports, f"port {port} is not a containerPort of {container['name']} ({sorted(ports)})"
        return port
    named = {p.get("name"): n for n, p in ports.items()}
    assert port in named, f"port name {port!r} is not a named containerPort of {container['name']} ({named})"
    return named[port]


def quantity(value: str | int) -> float:
    "A Kubernetes CPU or memory quantity as a number (cores, bytes)."
    value = str(value)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    for suffix in sorted(units, key=len, reverse=True):
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * units[suffix]
    return float(value)


def test_manifests_found():
    assert {"deployment.yaml", "service.yaml", "hpa.yaml"} <= set(MANIFESTS), MANIFESTS


@pytest.mark.parametrize("name", MANIFESTS)
def test_manifest_is_valid_kubernetes(name):
    resource = load(name)
    try:
        kubernetes_validate.validate(resource, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        pytest.fail(f"{name}: not a valid {resource.get('kind')} for Kubernetes {K8S_VERSION} at "
                    f"{'.'.join(map(str, e.path))}: {e.message}")


def test_validation_is_strict(deployment):
    "A misspelled field or a wrong type must fail validation, or the test above proves nothing."
    misspelled = copy.deepcopy(deployment)
    probe = misspelled["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    probe["httpGett"] = probe.pop("httpGet")
    with pytest.raises(kubernetes_validate.ValidationError, match="httpGett"):
        kubernetes_validate.validate(misspelled, K8S_VERSION, strict=True)
    hpa = load("hpa.yaml")
    hpa["spec"]["minReplicas"] = "2"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == MANIFESTS, "kustomization.yaml: resources must list every manifest"
    assert {i["name"] for i in kustomization.get("images", [])} <= {load("deployment.yaml")["spec"]["template"][
        "spec"]["containers"][0]["image"].split(":")[0]}, "kustomization.yaml: images must name the Deployment's image"


def test_deployment_selects_its_pods(deployment):
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items(), f"selector {selector} does not match the pod labels {labels}"


def test_container_serves_on_the_bentoml_port(container):
    assert container_port(container, SERVICE_PORT) == SERVICE_PORT
    assert container["image"], "deployment.yaml: the container needs an image"


@pytest.mark.parametrize("probe, path", [("livenessProbe", "/livez"), ("readinessProbe", "/readyz")])
def test_probes_use_bentoml_health_routes(container, probe, path):
    assert probe in container, f"deployment.yaml: no {probe}"
    get = container[probe]["httpGet"]
    assert get["path"] == path, f"{probe} must GET {path} (BentoML's route), not {get['path']}"
    assert container_port(container, get["port"]) == SERVICE_PORT


def test_startup_probe_allows_model_loading(container):
    probe = container["startupProbe"]
    assert probe["httpGet"]["path"] in ("/livez", "/readyz")
    assert container_port(container, probe["httpGet"]["port"]) == SERVICE_PORT
    budget_s = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
    assert budget_s >= 120, f"startupProbe gives the model only {budget_s}s to load"


def test_env(container):
    env = {e["name"]: e for e in container["env"]}
    assert env["RECNB_MODEL"]["value"], "RECNB_MODEL must name a model tag"
    api_key = env["RECNB_API_KEY"]
    assert "value" not in api_key, "RECNB_API_KEY must come from a Secret, never a literal in the manifest"
    ref = api_key["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"] and ref["optional"] is True, "the API key Secret must be optional"


def test_resources(container):
    resources = container["resources"]
    for kind in ("cpu", "memory"):
        request, limit = resources["requests"][kind], resources["limits"][kind]
        assert quantity(request) <= quantity(limit), f"{kind}: request {request} over limit {limit}"


def test_scrape_annotations(deployment, container):
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert container_port(container, int(annotations["prometheus.io/port"])) == SERVICE_PORT
    assert annotations["prometheus.io/path"] == "/metrics"


def test_service_reaches_the_container(deployment, container):
    service = load("service.yaml")
    assert service["spec"].get("type", "ClusterIP") == "ClusterIP"
    selector = service["spec"]["selector"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items(), f"Service selector {selector} matches no pod of the Deployment"
    (port,) = service["spec"]["ports"]
    assert port["port"] == 80
    assert container_port(container, port["targetPort"]) == SERVICE_PORT, "the Service's targetPort is not 3000"


def test_hpa_scales_the_deployment(deployment, container):
    hpa = load("hpa.yaml")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"]) == ("apps/v1", "Deployment")
    assert target["name"] == deployment["metadata"]["name"], "the HPA scales another Deployment"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    # Utilization is a share of the request: without a CPU request the HPA cannot compute it.
    assert "cpu" in container["resources"]["requests"]
    # A fixed replica count in the Deployment would reset the autoscaler's on every apply.
    assert "replicas" not in deployment["spec"]


def test_disruption_budget_selects_the_pods(deployment):
    pdb = load("pdb.yaml")
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert pdb["spec"]["minAvailable"] < load("hpa.yaml")["spec"]["minReplicas"], "the budget would block drains"


def test_the_sweep_job_is_valid_and_has_one_index_per_parameter_set():
    from recnb.run.sweep import expand
    job = yaml.safe_load((DEPLOY / "sweep" / "job.yaml").read_text())
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    spec = job["spec"]
    command = spec["template"]["spec"]["containers"][0]["command"]
    _, sets = expand(DEPLOY.parents[1] / command[2])
    assert spec["completionMode"] == "Indexed" and spec["completions"] == len(sets) == 3
    assert command[command.index("--index") + 1] == "$(JOB_COMPLETION_INDEX)"
