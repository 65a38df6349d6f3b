"""The Helm chart, rendered offline with Helm's Go SDK (helm-python-sdk): lint, every values file and the
mode/monitoring/networkPolicy combinations render, and every object validates against Kubernetes 1.30 and 1.33
(kubernetes-validate, strict: a warning counts as a failure); custom resources against their CRD schemas."""

from __future__ import annotations

import shutil

import jsonschema
import pytest
import yaml

from tests.deploy_support import (
    CHART,
    COMBINATIONS,
    SCENARIO_VALUES,
    chart_values,
    component,
    containers,
    crd_schema,
    env_names,
    helm,
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

    crd = yaml.safe_load((CHART / "crds" / "streamtables.pgtrickle.io.yaml").read_text())
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(crd, version, strict=True)
    assert crd["spec"]["group"] == "pgtrickle.io"
    names = crd["spec"]["names"]
    assert (names["kind"], names["plural"]) == ("StreamTable", "streamtables")
    assert "st" in names.get("shortNames", [])
    assert any(v["name"] == "v1alpha1" and v["served"] for v in crd["spec"]["versions"])


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
        assert (("Secret", "credentials") in kinds) == (mode != "external"), key
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
    assert "post-upgrade" in job["metadata"]["annotations"]["helm.sh/hook"]
    assert "before-hook-creation" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never", "a failed attempt keeps its pod and logs"
    connect = next(e["value"] for e in containers(job)[0]["env"] if e["name"] == "BOOTSTRAP_CONNECT_TIMEOUT")
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["activeDeadlineSeconds"] > int(connect)
    assert {"name": "DEMO_SCENARIO", "value": "fraud"} in containers(job)[0]["env"]
    assert workload(before, "StatefulSet", "postgres") == workload(after, "StatefulSet", "postgres")
    configs = [[o for o in objs if o["kind"] == "ConfigMap" and component(o) == "postgres"] for objs in (before, after)]
    assert configs[0] == configs[1] and len(configs[0]) == 1


def test_generated_secret_is_random_and_kept_on_uninstall():
    def secret():
        (obj,) = [o for o in render_objects({}) if o["kind"] == "Secret"]
        return obj

    first, second = secret(), secret()
    assert set(first["data"]) == {"postgres-password", "demo-password", "demo-writer-password", "demo-reader-password"}
    assert first["data"] != second["data"]  # generated per install, never a literal in the chart
    assert len(set(first["data"].values())) == 4
    assert first["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    # the lookup that keeps them across upgrades is in the template (offline rendering cannot exercise it)
    assert 'lookup "v1" "Secret"' in (CHART / "templates" / "secret.yaml").read_text()


def test_existing_secret_is_used_and_no_secret_rendered():
    objects = render_objects({"auth": {"existingSecret": "my-creds"}})
    assert not [o for o in objects if o["kind"] == "Secret"]
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for o in objects
        for c in containers(o)
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert refs == {"my-creds"}


def test_bootstrap_is_a_post_install_and_post_upgrade_hook_with_superuser_url():
    objects = render_objects({})
    job = workload(objects, "Job", "bootstrap")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
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
        if ps is not None and component(obj) != "operator":
            assert ps.get("automountServiceAccountToken") is False, obj["metadata"]["name"]
    (role,) = [o for o in objects if o["kind"] == "Role"]
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("pgtrickle.io",), ("streamtables",)): {"list", "watch", "patch"},
        (("pgtrickle.io",), ("streamtables/status",)): {"patch"},
        (("",), ("events",)): {"create"},
    }
    assert not [o for o in objects if o["kind"] in ("ClusterRole", "ClusterRoleBinding")], (
        "least privilege: no cluster-wide rights"
    )
    (binding,) = [o for o in objects if o["kind"] == "RoleBinding"]
    assert binding["roleRef"]["kind"] == "Role"
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa_name, "namespace": "pgtd"}]
    # operator.enabled=false removes all of it
    off = render_objects({"operator": {"enabled": False}})
    assert not [o for o in off if component(o) == "operator"]


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
