"""The Helm chart, rendered offline with Helm's Go SDK (helm-python-sdk): lint, every values file and the
mode/monitoring/networkPolicy combinations render, and every object validates against Kubernetes 1.30 and 1.33
(kubernetes-validate, strict: a warning counts as a failure); custom resources against their CRD schemas."""

from __future__ import annotations

import json
import re
import shutil

import jsonschema
import pytest
import yaml

from tests.deploy_support import (
    CHART,
    COMBINATIONS,
    CRD_FILE,
    MODES,
    SCENARIO_VALUES,
    chart_values,
    component,
    containers,
    crd_schema,
    env_names,
    helm,
    pod_spec,
    render,
    render_objects,
    workload,
)
from tests.support import ROOT

K8S_VERSIONS = ("1.30", "1.33")
CUSTOM_KINDS = {"ServiceMonitor", "PrometheusRule", "Cluster", "StreamTable"}


@pytest.fixture(scope="module")
def chart_with_dashboard(tmp_path_factory):
    """A copy of the chart with one Grafana dashboard JSON (the real ones come from the monitoring work)."""
    copy = tmp_path_factory.mktemp("chart") / "pg-trickle-demo"
    shutil.copytree(CHART, copy)
    dashboard = {"uid": "pgt-test", "title": "pg_trickle test", "panels": [{"type": "stat", "title": "x"}]}
    (copy / "dashboards" / "pg_trickle_test.json").write_text(yaml.safe_dump(dashboard))
    return copy


@pytest.fixture(scope="module")
def rendered(chart_with_dashboard):
    return {key: render_objects(values, chart=chart_with_dashboard) for key, values in COMBINATIONS.items()}


def test_helm_lint_is_clean_for_every_values_file():
    hp = helm()
    for name in ("values.yaml", *SCENARIO_VALUES, "values-kind.yaml"):
        for version in K8S_VERSIONS:
            values = chart_values("values.yaml", name)
            report = hp.lint(str(CHART), values, strict=True, namespace="pgtd", kube_version=f"v{version}.0")
            problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
            assert report["total_charts_linted"] == 1 and not problems, f"{name} on {version}: {problems}"


@pytest.mark.parametrize("key", list(COMBINATIONS))
def test_every_object_validates_strictly(rendered, key):
    import kubernetes_validate

    objects = rendered[key]
    assert objects, key
    for obj in objects:
        where = f"{key}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] in CUSTOM_KINDS:
            jsonschema.validate(obj, crd_schema(obj["kind"]))
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except Exception as exc:  # ValidationError, SchemaNotFoundError (a WARN on the command line)
                pytest.fail(f"{where} does not validate against Kubernetes {version}: {type(exc).__name__} {exc}")


def test_the_crd_validates_and_defines_streamtables():
    import kubernetes_validate

    (crd,) = [o for o in render_objects({}) if o["kind"] == "CustomResourceDefinition"]
    assert crd == {**yaml.safe_load(CRD_FILE.read_text()), "metadata": crd["metadata"]}, "rendered from files/crds"
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(crd, version, strict=True)
    assert crd["spec"]["group"] == "pgtrickle.io"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"]) == ("StreamTable", "streamtables")
    assert "st" in names.get("shortNames", [])
    assert any(v["name"] == "v1alpha1" and v["served"] for v in crd["spec"]["versions"])


def test_the_crd_is_templated_upgraded_with_the_chart_and_kept_on_uninstall():
    """Not under crds/ (which Helm never upgrades): a template behind crds.create, kept on uninstall (Helm's
    resource-policy, Argo CD's Delete=false/Prune=false) and in the first Argo CD sync wave."""
    assert not (CHART / "crds").exists(), "Helm never upgrades files under crds/"
    (crd,) = [o for o in render_objects({}) if o["kind"] == "CustomResourceDefinition"]
    annotations = crd["metadata"]["annotations"]
    assert annotations["helm.sh/resource-policy"] == "keep"
    assert set(annotations["argocd.argoproj.io/sync-options"].split(",")) == {"Delete=false", "Prune=false"}
    assert int(annotations["argocd.argoproj.io/sync-wave"]) < 0
    assert crd["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    off = render_objects({"crds": {"create": False}})
    assert not [o for o in off if o["kind"] == "CustomResourceDefinition"]
    assert [o for o in off if o["kind"] == "Deployment" and component(o) == "operator"], "the operator stays"


@pytest.mark.parametrize("example", sorted((ROOT / "examples" / "streamtables").glob("*.yaml")), ids=lambda p: p.name)
def test_streamtable_examples_validate_against_the_crd(example):
    for doc in yaml.safe_load_all(example.read_text()):
        if doc and doc.get("kind") == "StreamTable":
            jsonschema.validate(doc, crd_schema("StreamTable"))


def test_each_combination_renders_what_it_asks_for(rendered):
    for key, objects in rendered.items():
        kinds = {(o["kind"], component(o)) for o in objects}
        mode = key.split("-")[0] if key in {k for k in COMBINATIONS if not k.startswith("values")} else "statefulset"
        assert (("StatefulSet", "postgres") in kinds) == (mode == "statefulset"), key
        assert (("Cluster", "postgres") in kinds) == (mode == "cnpg"), key
        assert not [k for k in kinds if k[0] == "Secret"], f"{key}: the chart never renders a Secret"
        assert (("Job", "credentials") in kinds) == (mode != "external"), key
        for comp in ("generator", "dashboard", "exporter", "operator"):
            assert ("Deployment", comp) in kinds, (key, comp)
        assert ("Job", "bootstrap") in kinds, key
        if "monitoring_on" in key:
            assert {("ServiceMonitor", "exporter"), ("ServiceMonitor", "generator")} <= kinds, key
            assert ("PrometheusRule", "alerts") in kinds and ("Ingress", "dashboard") in kinds, key
            assert ("ConfigMap", "grafana-dashboard") in kinds, key
        if "monitoring_off" in key:
            assert not {k for k in kinds if k[0] in {"ServiceMonitor", "PrometheusRule", "Ingress"}}, key
        has_netpol = any(k[0] == "NetworkPolicy" for k in kinds)
        assert has_netpol == ("netpol_off" not in key), key


def test_values_schema_rejects_bad_values():
    hp = helm()
    bad = [
        {"scenario": "retail"},
        {"generator": {"rate": -5}},
        {"generator": {"rate": 0}},
        {"postgres": {"mode": "sqlite"}},
        {"postgres": {"image": {"tag": "latest"}}},
        {"image": {"tag": "latest"}},
        {"unknownTopLevelKey": True},
        {"exporter": {"scrapeTimeout": -1}},
        {"dashboard": {"workers": 0}},
        {"generator": {"burstInterval": -3}},
        {"generator": {"slowChangeEvery": -1}},
        {"generator": {"bogus": 1}},
        {"generator": {"service": {"type": "NodePort", "nodePort": 80}}},
        {"bootstrap": {"backoffLimit": -1}},
        {"postgres": {"config": {"shared_preload_libraries": "pg_stat_statements"}}},
        {"image": {"pullPolicy": "Sometimes"}},
        {"crds": {"create": "yes"}},
        {"crds": {"keep": True}},
        {"bootstrap": {"ttlSecondsAfterFinished": 0}},
        {"auth": {"existingSecret": "Not_A_Secret_Name"}},
        {"auth": {"password": "hunter2"}},
    ]
    for values in bad:
        with pytest.raises(hp.HelmError):
            render(values)
    # and the good ones still render
    for scenario in ("ecommerce", "fraud", "finance"):
        assert render({"scenario": scenario, "generator": {"rate": 250, "seed": 7}})


def test_external_mode_without_existing_secret_fails_with_a_message():
    hp = helm()
    with pytest.raises(hp.HelmError, match="existingSecret"):
        render({"postgres": {"mode": "external", "external": {"host": "db"}}})
    with pytest.raises(hp.HelmError, match=r"postgres\.external\.host"):
        render({"postgres": {"mode": "external"}, "auth": {"existingSecret": "mine"}})


def test_scenario_values_file_sets_demo_scenario_everywhere():
    for scenario in ("ecommerce", "fraud", "finance"):
        objects = render_objects(chart_values("values.yaml", f"values-{scenario}.yaml"))
        seen = 0
        for obj in objects:
            for c in containers(obj):
                for e in c.get("env", []):
                    if e["name"] == "DEMO_SCENARIO":
                        assert e["value"] == scenario
                        seen += 1
        assert seen == 5  # bootstrap, generator, dashboard, exporter, operator


def test_switching_scenario_rolls_the_services_and_keeps_postgres():
    """`helm upgrade -f values-fraud.yaml` after an ecommerce install: every service's pod template changes (so
    they restart with the new DEMO_SCENARIO), the bootstrap hook runs again with it, and the PostgreSQL
    StatefulSet (pod template, volume claim, config) is untouched, so its volume and data stay."""
    before = render_objects(chart_values("values.yaml", "values-ecommerce.yaml"), namespace="pgtd")
    after = render_objects(chart_values("values.yaml", "values-fraud.yaml"), namespace="pgtd")
    for comp in ("generator", "dashboard", "exporter", "operator"):
        old, new = workload(before, "Deployment", comp), workload(after, "Deployment", comp)
        assert old["spec"]["template"] != new["spec"]["template"], comp
        assert {"name": "DEMO_SCENARIO", "value": "fraud"} in containers(new)[0]["env"], comp
    job = workload(after, "Job", "bootstrap")
    assert job["metadata"]["name"] != workload(before, "Job", "bootstrap")["metadata"]["name"], "a new Job, not a patch"
    assert not [k for k in job["metadata"]["annotations"] if k.startswith("helm.sh/")], "an ordinary Job"
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never", "a failed attempt keeps its pod and logs"
    connect = next(e["value"] for e in containers(job)[0]["env"] if e["name"] == "BOOTSTRAP_CONNECT_TIMEOUT")
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["activeDeadlineSeconds"] > int(connect)
    assert {"name": "DEMO_SCENARIO", "value": "fraud"} in containers(job)[0]["env"]
    assert workload(before, "StatefulSet", "postgres") == workload(after, "StatefulSet", "postgres")
    configs = [[o for o in objs if o["kind"] == "ConfigMap" and component(o) == "postgres"] for objs in (before, after)]
    assert configs[0] == configs[1] and len(configs[0]) == 1


def _password_literals(objects: list[dict]) -> list[str]:
    """Every place a render could carry a password: Secrets, and env values of *PASSWORD* variables."""
    found = [f"Secret/{o['metadata']['name']}" for o in objects if o["kind"] == "Secret"]
    for obj in objects:
        for c in containers(obj):
            found += [f"{obj['metadata']['name']}: {e['name']}" for e in c.get("env", [])
                      if "PASSWORD" in e["name"].upper() and "value" in e]  # fmt: skip
    return found


@pytest.mark.parametrize("key", ["statefulset-monitoring_off-netpol_on", "cnpg-monitoring_on-netpol_on",
                                 "external-monitoring_off-netpol_on", "values-fraud.yaml"])  # fmt: skip
def test_two_renders_without_a_cluster_never_rotate_passwords(key):
    """Argo CD renders the chart without cluster access (no `lookup`), and so do `helm template` and ct: two such
    renders must be byte-identical and hold no password at all, so a sync can never replace the passwords the
    database volume was initialised with. The credentials Job creates them in the cluster, once."""
    values = COMBINATIONS[key]
    first, second = render(values), render(values)
    assert first == second
    assert not _password_literals(render_objects(values)), "no password in any render"
    for template, text in first.items():
        assert "randAlpha" not in text and "lookup" not in text, template
    for path in (CHART / "templates").glob("*"):
        text = path.read_text() if path.is_file() else ""
        assert not re.search(r"\b(randAlphaNum|randAlpha|randAscii|randBytes|genPrivateKey)\b", text), path.name
        assert not re.search(r"\blookup\b", text), f"{path.name}: lookup renders differently with and without a cluster"


def test_credentials_job_creates_the_secret_once_with_create_only_rights():
    objects = render_objects({})
    job = workload(objects, "Job", "credentials")
    (c,) = containers(job)
    assert c["command"] == ["python", "-m", "services.bootstrap.credentials"]
    assert c["image"] == workload(objects, "Job", "bootstrap")["spec"]["template"]["spec"]["containers"][0]["image"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["CREDENTIALS_NAME"] == "demo-pg-trickle-demo-credentials"
    # the Secret the pods read is the one the Job creates
    refs = {e["valueFrom"]["secretKeyRef"]["name"] for o in objects for k in containers(o) for e in k.get("env", [])
            if "secretKeyRef" in e.get("valueFrom", {})}  # fmt: skip
    assert refs == {"demo-pg-trickle-demo-credentials"}
    # Argo CD tracks (and prunes) objects by app.kubernetes.io/instance: the created Secret must not carry it
    labels = json.loads(env["CREDENTIALS_LABELS"])
    assert "app.kubernetes.io/instance" not in labels and labels["pgtrickle.io/release"] == "demo"
    spec = job["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is True
    roles = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Role"}
    assert roles[spec["serviceAccountName"]]["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}
    ], "create only: it can neither read nor change an existing Secret"
    bindings = [o for o in objects if o["kind"] == "RoleBinding" and o["roleRef"]["name"] == spec["serviceAccountName"]]
    assert [b["subjects"][0]["name"] for b in bindings] == [spec["serviceAccountName"]]
    assert job["spec"]["ttlSecondsAfterFinished"] > 0 and spec["restartPolicy"] == "Never"
    # before the database in Argo CD's order; the database pod simply waits for the Secret under Helm and Flux
    assert _wave(job) < _wave(workload(objects, "StatefulSet", "postgres"))


def test_existing_secret_is_used_and_no_secret_rendered():
    objects = render_objects({"auth": {"existingSecret": "my-creds"}})
    assert not [o for o in objects if o["kind"] == "Secret"]
    assert not [o for o in objects if component(o) == "credentials"], "no credentials Job, RBAC or policy"
    assert not [o for o in objects if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-credentials")]
    notes = render({"auth": {"existingSecret": "my-creds"}})["pg-trickle-demo/templates/NOTES.txt"]
    assert "my-creds" in notes and "demo-reader-password" in notes
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for o in objects
        for c in containers(o)
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {"my-creds"}


def test_bootstrap_is_an_ordinary_job_with_superuser_url():
    objects = render_objects({})
    job = workload(objects, "Job", "bootstrap")
    assert "helm.sh/hook" not in job["metadata"]["annotations"]
    (c,) = containers(job)
    assert {"PGHOST", "PGUSER", "PGPASSWORD", "PGDATABASE", "DEMO_PASSWORD", "DEMO_WRITER_PASSWORD",
            "DEMO_READER_PASSWORD", "DEMO_SCENARIO", "DEMO_ENGINE"} <= env_names(c)  # fmt: skip
    env = {e["name"]: e for e in c["env"]}
    assert env["PGUSER"]["value"] == "postgres" and env["DEMO_ENGINE"]["value"] == "extension"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "postgres-password"
    cnpg = workload(render_objects({"postgres": {"mode": "cnpg"}}), "Job", "bootstrap")
    (c,) = containers(cnpg)
    env = {e["name"]: e for e in c["env"]}
    assert env["PGHOST"]["value"] == "demo-pg-trickle-demo-pg-rw"
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "demo-pg-trickle-demo-pg-superuser",
        "key": "password",
    }


def test_postgres_statefulset_preloads_pg_trickle_and_pins_the_image():
    objects = render_objects({})
    sts = workload(objects, "StatefulSet", "postgres")
    (c,) = containers(sts)
    assert c["image"] == "ghcr.io/trickle-labs/pg_trickle:0.67.0-pg18.3"
    assert "config_file=/etc/postgresql/postgresql.conf" in c["args"]
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "2Gi"
    (conf,) = [o for o in objects if o["kind"] == "ConfigMap" and component(o) == "postgres"]
    assert "shared_preload_libraries = 'pg_trickle'" in conf["data"]["postgresql.conf"]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert c[probe]["exec"]["command"][0] == "pg_isready"
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service" and component(o) == "postgres"}
    assert services["demo-pg-trickle-demo-postgres-headless"]["spec"]["clusterIP"] == "None"
    assert services["demo-pg-trickle-demo-postgres"]["spec"]["type"] == "ClusterIP"


def test_cnpg_cluster_uses_the_extension_image_and_preloads():
    objects = render_objects({"postgres": {"mode": "cnpg"}})
    (cluster,) = [o for o in objects if o["kind"] == "Cluster"]
    pg = cluster["spec"]["postgresql"]
    assert pg["shared_preload_libraries"] == ["pg_trickle"]
    assert pg["extensions"][0]["image"]["reference"] == "ghcr.io/trickle-labs/pg_trickle-ext:0.67.0"


def test_operator_deployment_rbac_and_service_account():
    objects = render_objects({})
    dep = workload(objects, "Deployment", "operator")
    assert dep["spec"]["replicas"] == 1 and dep["spec"]["strategy"]["type"] == "Recreate"
    spec = dep["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is True
    (c,) = spec["containers"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["ports"][0]["containerPort"] == 8081
    env = {e["name"]: e for e in c["env"]}
    assert env["OPERATOR_HEALTH_PORT"]["value"] == "8081"
    assert env["OPERATOR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["DEMO_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == "demo-password"
    assert env["PGUSER"]["value"] == "demo"
    sa_name = spec["serviceAccountName"]
    (sa,) = [o for o in objects if o["kind"] == "ServiceAccount" and o["metadata"]["name"] == sa_name]
    assert sa["automountServiceAccountToken"] is True
    # every other pod runs without an API token
    for obj in objects:
        ps = obj.get("spec", {}).get("template", {}).get("spec") if obj["kind"] != "Pod" else obj["spec"]
        if ps is not None and component(obj) not in {"operator", "credentials"}:
            assert ps.get("automountServiceAccountToken") is False, obj["metadata"]["name"]
    (role,) = [o for o in objects if o["kind"] == "Role" and component(o) == "operator"]
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("pgtrickle.io",), ("streamtables",)): {"list", "watch", "patch"},
        (("pgtrickle.io",), ("streamtables/status",)): {"patch"},
        (("",), ("events",)): {"create"},
    }
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")], (
        "least privilege: no cluster-wide rights"
    )
    (binding,) = [o for o in objects if o["kind"] == "RoleBinding" and component(o) == "operator"]
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": "pgtd"}]
    # operator.enabled=false removes all of it
    off = render_objects({"operator": {"enabled": False}})
    # (the CRD is governed by crds.create, not by operator.enabled)
    assert not [o for o in off if component(o) == "operator" and o["kind"] != "CustomResourceDefinition"]


def test_servicemonitor_labels_and_notes_warn_about_the_release_label():
    out = render({"monitoring": {"serviceMonitor": {"enabled": True, "labels": {"team": "x"}}}})
    notes = out["pg-trickle-demo/templates/NOTES.txt"]
    assert "release: <its release name>" in notes
    out = render({"monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}})
    assert "WARNING" not in out["pg-trickle-demo/templates/NOTES.txt"]
    monitors = [
        o
        for o in render_objects({"monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "kps"}}}})
        if o["kind"] == "ServiceMonitor"
    ]
    assert monitors and all(m["metadata"]["labels"]["release"] == "kps" for m in monitors)


def test_grafana_dashboards_become_sidecar_configmaps(chart_with_dashboard):
    values = {"monitoring": {"grafanaDashboards": {"enabled": True, "label": "my_dash", "labelValue": "yes"}}}
    objects = render_objects(values, chart=chart_with_dashboard)
    maps = [o for o in objects if o["kind"] == "ConfigMap" and component(o) == "grafana-dashboard"]
    files = sorted(p.name for p in (chart_with_dashboard / "dashboards").glob("*.json"))
    assert sorted(k for m in maps for k in m["data"]) == files
    for m in maps:
        assert m["metadata"]["labels"]["my_dash"] == "yes"
        for name, text in m["data"].items():
            assert yaml.safe_load(text) == yaml.safe_load((chart_with_dashboard / "dashboards" / name).read_text())


def test_notes_give_urls_and_port_forwards():
    notes = render({})["pg-trickle-demo/templates/NOTES.txt"]
    assert "port-forward svc/demo-pg-trickle-demo-dashboard 8080:8080" in notes
    assert "port-forward svc/demo-pg-trickle-demo-exporter 9188:9188" in notes
    assert "helm test demo" in notes
    assert "--wait" not in notes.replace("--wait --wait-for-jobs` waits", ""), "no advice against --wait"
    assert "Do not" not in notes
    kind_notes = render(chart_values("values.yaml", "values-kind.yaml"))["pg-trickle-demo/templates/NOTES.txt"]
    assert "http://localhost:8080/" in kind_notes
    assert "http://localhost:9188/metrics" in kind_notes and "localhost:8000/control" in kind_notes
    assert "port-forward" not in kind_notes.split("Switch scenario")[0], "kind needs no port-forward"
    ingress_notes = render({"ingress": {"enabled": True, "host": "demo.example"}})[
        "pg-trickle-demo/templates/NOTES.txt"
    ]
    assert "http://demo.example/" in ingress_notes


def test_helm_test_pod_checks_dashboard_and_exporter():
    (pod,) = [o for o in render_objects({}) if o["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    assert "demo-pg-trickle-demo-dashboard:8080/readyz" in script
    assert "demo-pg-trickle-demo-exporter:9188/metrics" in script
    compile(script, "helm-test", "exec")  # the check is valid Python


def _serve(routes: dict[str, tuple[int, str]]):
    """A throw-away HTTP server on 127.0.0.1 answering `routes` ({path: (status, body)})."""
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = routes.get(self.path, (404, "not found"))
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.parametrize(
    ("readyz", "metrics", "passes"),
    [
        ((200, "ok"), "# HELP pg_trickle_up x\n# TYPE pg_trickle_up gauge\npg_trickle_up 1.0\n", True),
        ((200, "ok"), "# TYPE pg_trickle_up gauge\npg_trickle_up 0.0\npg_trickle_info 1.0\n", False),
        ((503, "not ready"), "pg_trickle_up 1.0\n", False),
        ((200, "ok"), "python_info 1.0\n", False),
    ],
)
def test_helm_test_script_passes_only_when_ready_and_up(readyz, metrics, passes):
    """The rendered `helm test` script, pointed at local stand-ins for the two Services."""
    import subprocess
    import sys

    (pod,) = [o for o in render_objects({}) if o["kind"] == "Pod"]
    script = pod["spec"]["containers"][0]["args"][0]
    server = _serve({"/readyz": readyz, "/metrics": (200, metrics)})
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        script = script.replace("http://demo-pg-trickle-demo-dashboard:8080", base)
        script = script.replace("http://demo-pg-trickle-demo-exporter:9188", base)
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert (result.returncode == 0) == passes, result.stdout + result.stderr


# -- install paths: helm --wait, Argo CD, Flux --------------------------------------------------------------
def _wave(obj: dict) -> int:
    return int((obj["metadata"].get("annotations") or {}).get("argocd.argoproj.io/sync-wave", "0"))


@pytest.mark.parametrize("key", list(COMBINATIONS))
def test_no_helm_hook_that_readiness_depends_on(rendered, key):
    """`helm install --wait`, Flux (waits by default) and `ct install` wait for every object to be ready before
    post-install hooks run: a bootstrap hook that readiness depends on stalls them all. Only `helm test` is a
    hook."""
    hooks = {
        f"{o['kind']}/{o['metadata']['name']}": o["metadata"]["annotations"]["helm.sh/hook"]
        for o in rendered[key]
        if "helm.sh/hook" in (o["metadata"].get("annotations") or {})
    }
    assert set(hooks.values()) <= {"test"}, hooks
    kinds = {(o["kind"], component(o)) for o in rendered[key]}
    assert ("Job", "bootstrap") in kinds


def test_bootstrap_job_is_named_per_scenario_and_revision():
    names = {}
    for scenario in ("ecommerce", "fraud", "finance"):
        for revision in (1, 2):
            objects = render_objects({"scenario": scenario}, revision=revision)
            job = workload(objects, "Job", "bootstrap")
            names[(scenario, revision)] = job["metadata"]["name"]
            assert job["spec"]["ttlSecondsAfterFinished"] == 86400
            assert {"name": "DEMO_SCENARIO", "value": scenario} in containers(job)[0]["env"]
    assert len(set(names.values())) == 6, names
    assert names[("fraud", 1)] == "demo-pg-trickle-demo-bootstrap-fraud-1"
    # a Job name becomes the job-name label of its pods: at most 63 characters, even with a long release name
    long = render_objects({"fullnameOverride": "x" * 63, "scenario": "ecommerce"}, revision=12345)
    name = workload(long, "Job", "bootstrap")["metadata"]["name"]
    assert len(name) <= 63 and name.endswith("-ecommerce-12345"), name
    assert len(workload(long, "Job", "credentials")["metadata"]["name"]) <= 63
    # and NOTES point at the Job of this revision
    notes = render({"scenario": "fraud"}, revision=3)["pg-trickle-demo/templates/NOTES.txt"]
    assert "job/demo-pg-trickle-demo-bootstrap-fraud-3" in notes


@pytest.mark.parametrize("mode", ["statefulset", "cnpg"])
def test_argo_cd_sync_waves_put_the_database_first_then_the_bootstrap_then_the_services(mode):
    objects = render_objects(MODES[mode])
    bootstrap = workload(objects, "Job", "bootstrap")
    credentials = workload(objects, "Job", "credentials")
    database = [o for o in objects if component(o) == "postgres"]
    assert database and {_wave(o) for o in database} == {-1}
    assert _wave(credentials) < -1 < _wave(bootstrap) == 0
    for comp in ("generator", "dashboard", "exporter", "operator"):
        assert _wave(workload(objects, "Deployment", comp)) == 1, comp
    # whatever a pod of an early wave needs exists in an earlier wave (Argo CD waits for a wave to be healthy)
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None or obj["kind"] == "Pod":
            continue
        sa = by_name.get(("ServiceAccount", spec["serviceAccountName"]))
        assert sa is not None and _wave(sa) <= _wave(obj), obj["metadata"]["name"]
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert _wave(by_name[("ConfigMap", volume["configMap"]["name"])]) <= _wave(obj)
    # the one-shot Jobs are Argo CD Sync hooks: re-created on each sync, never reported missing after their TTL
    for job in (bootstrap, credentials):
        annotations = job["metadata"]["annotations"]
        assert annotations["argocd.argoproj.io/hook"] == "Sync"
        assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
