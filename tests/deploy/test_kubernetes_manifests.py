"""docs/deploy/k8s/ checked offline, as far as a machine without a cluster can: every object
against the Kubernetes schemas (kubernetes-validate's, strict: an unknown field fails), the
kustomization rendered (:func:`render`, the subset of ``kustomize build`` it uses), every reference
between objects resolved, the KEDA ScaledObject checked against the fields of KEDA's CRD and the
HorizontalPodAutoscaler KEDA makes of it validated, every container's arguments parsed by the
command that will read them (pipeflow's own parser; Dask's), and the server's probes answered by
a real server, ready and then draining."""

from __future__ import annotations

import asyncio
import copy
import re
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml

K8S = Path(__file__).parents[2] / "docs" / "deploy" / "k8s"
#: the Kubernetes version the manifests are checked against (the newest kubernetes-validate
#: ships at the time of writing; the test says so when the installed one lacks it)
KUBERNETES = "1.37.0"
KEDA = "keda.sh/v1alpha1"
KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "labels", "images"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec.get("template", {}).get("spec")


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    return [*spec.get("initContainers", []), *spec["containers"]] if spec else []


def render(folder: Path) -> list[dict[str, Any]]:
    """``kustomize build folder`` for the fields kustomization.yaml uses: ``resources`` (files),
    ``labels`` (pairs added to every object's metadata, not to selectors or templates) and
    ``images`` (a container image named ``name`` becomes ``newName:newTag``). A field this does
    not implement fails the test rather than being ignored."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    unknown = set(kustomization) - KUSTOMIZE_FIELDS
    assert not unknown, f"kustomization.yaml uses {sorted(unknown)}: teach render() them"
    objects = [o for name in kustomization["resources"] for o in documents(folder / name)]
    for labels in kustomization.get("labels", []):
        assert set(labels) == {"pairs"}, "render() adds labels to metadata only"
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(labels["pairs"])
    images = {i["name"]: f"{i['newName']}:{i['newTag']}" for i in kustomization.get("images", [])}
    for obj in objects:
        for c in containers(obj):
            c["image"] = images.get(c["image"], c["image"])
    return objects


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render(K8S)


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"].get("name") == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def validate(obj: dict[str, Any], where: str) -> None:
    try:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)
    except kubernetes_validate.ValidationError as err:
        pytest.fail(f"{where}: {obj['kind']} {obj['metadata']}: {err.message} at {err.path}")


def test_the_kubernetes_version_checked_against_is_shipped() -> None:
    assert kubernetes_validate.utils.major_minor(KUBERNETES) in {
        kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()
    }, f"kubernetes-validate {kubernetes_validate.version.__version__} lacks {KUBERNETES}"


@pytest.mark.parametrize(
    "path", sorted(p.name for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(path: str) -> None:
    objects = documents(K8S / path)
    assert objects
    for obj in objects:
        if obj["apiVersion"] != KEDA:  # a custom resource: test_the_scaled_object...
            validate(obj, path)


def test_the_kustomization_renders_every_manifest_labelled_with_real_images(rendered) -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    for path in sorted(K8S.glob("*.yaml")):
        if path.name != "kustomization.yaml" and path.name not in listed:
            # only Jobs created by hand, a new one each time, stay out of the kustomization
            assert all("generateName" in o["metadata"] for o in documents(path)), path.name
    keys = [(o["kind"], o["metadata"]["name"]) for o in rendered]
    assert len(keys) == len(set(keys)), "an object is defined twice"
    kinds = {kind for kind, _ in keys}
    assert {"Deployment", "Service", "PodDisruptionBudget", "ScaledObject", "CronJob"} <= kinds
    assert {"ConfigMap", "Secret", "PersistentVolumeClaim"} <= kinds
    for obj in rendered:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "pipeflow"
        for c in containers(obj):
            assert c["image"].startswith("registry.example.com/"), c["image"]
        if obj["apiVersion"] != KEDA:
            validate(obj, "kustomize build")


def test_every_reference_between_objects_resolves(rendered) -> None:
    """ConfigMaps, Secrets (and their keys), volume claims, Services' and budgets' selectors and
    named ports: a typo in any of them is a pod that never starts or a Service with no
    endpoints, which no schema catches."""
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for obj in rendered:
        by_kind.setdefault(obj["kind"], {})[obj["metadata"]["name"]] = obj

    def keys(kind: str, name: str) -> set[str]:
        assert name in by_kind.get(kind, {}), f"no {kind} {name}"
        obj = by_kind[kind][name]
        return set(obj.get("data", {})) | set(obj.get("stringData", {}))

    pods = [o for o in rendered if pod_spec(o) is not None]
    for obj in pods:
        for c in containers(obj):
            for source in c.get("envFrom", []):
                if "configMapRef" in source:
                    keys("ConfigMap", source["configMapRef"]["name"])
                else:
                    keys("Secret", source["secretRef"]["name"])
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in keys("Secret", ref["name"]), ref
        for volume in pod_spec(obj).get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert (
                    volume["persistentVolumeClaim"]["claimName"] in by_kind["PersistentVolumeClaim"]
                )

    def selected(selector: dict[str, str]) -> list[dict[str, Any]]:
        return [
            o
            for o in pods
            if "template" in o["spec"]  # a Deployment's pods (a Job's are not served)
            and selector.items() <= o["spec"]["template"]["metadata"]["labels"].items()
        ]

    for service in by_kind["Service"].values():
        (target,) = selected(service["spec"]["selector"])
        ports = {p["name"] for c in containers(target) for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, (service["metadata"]["name"], port)
    for budget in by_kind["PodDisruptionBudget"].values():
        assert selected(budget["spec"]["selector"]["matchLabels"]), budget["metadata"]["name"]
    for deployment in by_kind["Deployment"].values():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


# --------------------------------------------------------------------------------- autoscaling

#: the fields of KEDA's ScaledObject (CRD keda.sh_scaledobjects.yaml, KEDA 2.x) that a manifest
#: may use, with the CRD's required fields and types: KEDA's CRD is not vendored here, so its
#: structure is checked against this transcription, and the HorizontalPodAutoscaler KEDA creates
#: from it against Kubernetes' own schema (below)
SCALED_OBJECT = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": KEDA},
        "kind": {"const": "ScaledObject"},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {
                    "type": "object",
                    "required": ["name"],
                    "additionalProperties": False,
                    "properties": {
                        k: {"type": "string"}
                        for k in ("apiVersion", "kind", "name", "envSourceContainerName")
                    },
                },
                **{
                    k: {"type": "integer", "minimum": 0}
                    for k in (
                        "minReplicaCount",
                        "maxReplicaCount",
                        "idleReplicaCount",
                        "pollingInterval",
                        "cooldownPeriod",
                        "initialCooldownPeriod",
                    )
                },
                "advanced": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "horizontalPodAutoscalerConfig": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {"name": {"type": "string"}, "behavior": {}},
                        },
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "scalingModifiers": {"type": "object"},
                    },
                },
                "fallback": {"type": "object"},
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "metadata"],
                        "additionalProperties": False,
                        "properties": {
                            "type": {"type": "string"},
                            "name": {"type": "string"},
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "authenticationRef": {"type": "object", "required": ["name"]},
                            # the CRD: additionalProperties string (a number must be quoted)
                            "metadata": {
                                "type": "object",
                                "additionalProperties": {"type": "string"},
                            },
                        },
                    },
                },
            },
        },
    },
}


def keda_hpa(scaled: dict[str, Any]) -> dict[str, Any]:
    """The HorizontalPodAutoscaler KEDA creates for ``scaled``: cpu/memory triggers become
    Resource metrics, the others External metrics served by KEDA's metrics adapter."""
    spec, name = scaled["spec"], scaled["metadata"]["name"]
    metrics = []
    for i, trigger in enumerate(spec["triggers"]):
        if trigger["type"] in ("cpu", "memory"):
            assert trigger["metricType"] == "Utilization"
            target = {
                "type": "Utilization",
                "averageUtilization": int(trigger["metadata"]["value"]),
            }
            metrics.append(
                {"type": "Resource", "resource": {"name": trigger["type"], "target": target}}
            )
        else:
            metric = {
                "name": f"s{i}-{trigger['type']}",
                "selector": {"matchLabels": {"scaledobject.keda.sh/name": name}},
            }
            target = {"type": "AverageValue", "averageValue": trigger["metadata"]["threshold"]}
            metrics.append({"type": "External", "external": {"metric": metric, "target": target}})
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": f"keda-hpa-{name}"},
        "spec": {
            "scaleTargetRef": spec["scaleTargetRef"],
            "minReplicas": spec["minReplicaCount"],
            "maxReplicas": spec["maxReplicaCount"],
            "metrics": metrics,
        },
    }
    behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
    if behavior:
        hpa["spec"]["behavior"] = copy.deepcopy(behavior)
    return hpa


def test_the_scaled_object_scales_the_server_on_in_flight_queue_depth_and_cpu(rendered) -> None:
    from pipeflow.serving.metrics import Metrics

    (scaled,) = [o for o in rendered if o["kind"] == "ScaledObject"]
    jsonschema.validate(scaled, SCALED_OBJECT)
    target = scaled["spec"]["scaleTargetRef"]
    deployment = find(rendered, target["kind"], target["name"])
    validate(keda_hpa(scaled), "the HorizontalPodAutoscaler KEDA makes of scaledobject.yaml")
    assert 2 <= scaled["spec"]["minReplicaCount"] < scaled["spec"]["maxReplicaCount"]

    triggers = scaled["spec"]["triggers"]
    assert {t["type"] for t in triggers} == {"prometheus", "cpu"}
    (server,) = containers(deployment)
    assert "cpu" in server["resources"]["requests"]  # Utilization is a share of the request
    exposed = Metrics().exposition()[0].decode()
    queried = set()
    for trigger in triggers:
        if trigger["type"] != "prometheus":
            continue
        query = trigger["metadata"]["query"]
        names = re.findall(r"pipeflow_\w+", query)
        assert names and all(f"\n{n} " in exposed for n in names), (query, exposed)
        queried |= set(names)
        pods = re.search(r'pod=~"([^"]+)"', query).group(1)
        assert re.fullmatch(pods, f"{target['name']}-7d9c8f6b5-x2x4q"), query
        assert float(trigger["metadata"]["threshold"]) > 0
    assert queried == {"pipeflow_requests_in_flight", "pipeflow_queue_depth"}


# ------------------------------------------------------------------------ the containers' args


def expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in args, from the container's environment."""
    return re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg)


def environment(container: dict[str, Any], objects: list[dict[str, Any]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env |= find(objects, "ConfigMap", source["configMapRef"]["name"])["data"]
        else:
            env |= find(objects, "Secret", source["secretRef"]["name"])["stringData"]
    for item in container.get("env", []):
        env[item["name"]] = item.get("value", "from-the-pod")
    return env


def test_every_container_s_arguments_parse_with_the_command_that_reads_them(rendered) -> None:
    from distributed.cli.dask_scheduler import main as dask_scheduler
    from distributed.cli.dask_worker import main as dask_worker

    from pipeflow.cli import _parser

    hand_made = [o for p in K8S.glob("*-job.yaml") for o in documents(p)]
    commands = set()
    for obj in [*rendered, *hand_made]:
        for c in containers(obj):
            args = [expand(a, environment(c, rendered)) for a in c["args"]]
            if c.get("command") == ["dask"]:
                command = {"scheduler": dask_scheduler, "worker": dask_worker}[args[0]]
                command.make_context(f"dask {args[0]}", args[1:])  # click: raises on a bad option
            else:
                assert "command" not in c, "the image's entrypoint is pipeflow"
                parsed = _parser().parse_args(args)
                assert parsed.handler is not None
            commands.add(args[0])
    assert {"serve", "watch", "run", "models", "scheduler", "worker"} <= commands


def test_watch_is_one_leader_over_standbys_by_its_lease(rendered) -> None:
    from pipeflow.cli import _parser

    watch = find(rendered, "Deployment", "claims-watch")
    (c,) = containers(watch)
    args = _parser().parse_args(c["args"])
    assert watch["spec"]["replicas"] >= 2 and args.lease > 0 and not args.once
    assert watch["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > args.lease
    assert "PGPASSWORD" in environment(c, rendered)  # it records runs


def test_dask_has_a_scheduler_and_cpu_and_gpu_worker_pools(rendered) -> None:
    scheduler = find(rendered, "Service", "dask-scheduler")
    address = f"tcp://dask-scheduler:{scheduler['spec']['ports'][0]['port']}"
    assert find(rendered, "ConfigMap", "pipeflow-store")["data"]["PIPEFLOW_DASK_ADDRESS"] == address
    cpu, gpu = (find(rendered, "Deployment", f"dask-worker-{pool}") for pool in ("cpu", "gpu"))
    for pool in (cpu, gpu):
        (c,) = containers(pool)
        assert c["args"][:2] == ["worker", address]
        assert "PGPASSWORD" not in environment(c, rendered)  # workers never open the history
    (g,) = containers(gpu)
    assert g["resources"]["limits"]["nvidia.com/gpu"] == "1" and "--resources=GPU=1" in g["args"]
    assert not any("GPU" in a for a in containers(cpu)[0]["args"])


# ------------------------------------------------------------- the server: spread and probes


def test_the_server_spreads_over_zones_and_nodes_and_drains_within_its_grace(rendered) -> None:
    from pipeflow.cli import _parser

    deployment = find(rendered, "Deployment", "claims-categoriser")
    pod = deployment["spec"]["template"]["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    zones = [
        s
        for s in pod["topologySpreadConstraints"]
        if s["topologyKey"] == "topology.kubernetes.io/zone"
    ]
    assert zones and zones[0]["labelSelector"]["matchLabels"].items() <= labels.items()
    (anti,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert anti["podAffinityTerm"]["labelSelector"]["matchLabels"].items() <= labels.items()
    (c,) = containers(deployment)
    args = _parser().parse_args([expand(a, environment(c, rendered)) for a in c["args"]])
    assert args.workers == 1 and args.drain_seconds > 0
    assert args.audit_dir == "/audit/from-the-pod"  # one folder per pod
    assert pod["terminationGracePeriodSeconds"] >= args.drain_seconds + 30
    readiness = c["readinessProbe"]
    assert readiness["periodSeconds"] * readiness["failureThreshold"] < args.drain_seconds
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_the_probes_are_answered_by_the_server_and_readiness_fails_while_draining(
    rendered, trained: Path, tmp_path: Path
) -> None:
    from pipeflow.serving.app import create_app
    from pipeflow.serving.config import ServeConfig

    (c,) = containers(find(rendered, "Deployment", "claims-categoriser"))
    port = c["ports"][0]
    paths = {}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = c[probe]["httpGet"]
        assert get["port"] in (port["name"], port["containerPort"])
        paths[probe] = get["path"]
    app = create_app(
        ServeConfig(str(trained / ".pipeflow"), "tumours", audit_dir=str(tmp_path / "audit"))
    )

    async def statuses() -> dict[str, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://pod") as client:
            return {probe: (await client.get(path)).status_code for probe, path in paths.items()}

    assert asyncio.run(statuses()) == dict.fromkeys(paths, 200)
    app.state.drain.begin()
    assert asyncio.run(statuses()) == {
        "startupProbe": 200,
        "readinessProbe": 503,
        "livenessProbe": 200,
    }
