"""The chart's metadata and README: `helm show readme` shows the README generated from values.yaml's comments
(devenv/chart_readme.py) and it is current; Chart.yaml carries what `ct lint` and Artifact Hub need."""

from __future__ import annotations

import yaml

from devenv import chart_readme
from tests.deploy_support import CHART, helm


def test_the_chart_readme_is_current():
    assert (CHART / "README.md").read_text() == chart_readme.render(), "run python -m devenv.chart_readme"
    assert chart_readme.main(["--check"]) == 0


def test_helm_show_readme_is_the_generated_readme():
    shown = helm().show(str(CHART), output_format="readme")
    assert shown.strip() == (CHART / "README.md").read_text().strip()
    assert "helm install demo oci://ghcr.io/" in shown and "--wait --wait-for-jobs" in shown


def test_every_value_is_in_the_table_with_its_default():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows = {row.key: row for row in chart_readme.value_rows((CHART / "values.yaml").read_text())}

    def leaves(node, prefix=""):
        for key, value in node.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value and rows.get(path, chart_readme.Row("", "", "", "")).default == "":
                yield from leaves(value, f"{path}.")  # a section (a map written inline is one row)
            else:
                yield path, value

    for path, value in leaves(values):
        assert path in rows, path
        assert rows[path].default.strip("`") == chart_readme.json.dumps(value, separators=(", ", ": ")), path
    assert rows["scenario"].description.startswith("The demo scenario")
    assert rows["crds.create"].type == "bool" and rows["crds.create"].default == "`true`"
    assert rows["bootstrap.ttlSecondsAfterFinished"].default == "`86400`"


def test_generator_reads_helm_docs_comments():
    text = (
        "# not documentation\n"
        "# -- The first key,\n# over two lines.\na: 1\n"
        "b:\n  # -- Nested.\n  c: [x, y]\n  d:\n    - e: 1\n      f: 2\n  g: {h: i}\n"
    )
    rows = {r.key: r for r in chart_readme.value_rows(text)}
    assert list(rows) == ["a", "b.c", "b.d", "b.g"]
    assert rows["a"].description == "The first key, over two lines." and rows["a"].type == "int"
    assert rows["b.c"].description == "Nested." and rows["b.c"].default == '`["x", "y"]`'
    assert rows["b.d"].type == "list" and rows["b.g"].type == "object" and rows["b.g"].description == ""


def test_chart_metadata_for_ct_lint_and_artifact_hub():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["maintainers"] and all(m.get("name") for m in chart["maintainers"])
    assert chart["home"].startswith("https://") and chart["sources"] and chart["icon"].startswith("https://")
    assert chart["icon"].endswith("/helm/pg-trickle-demo/icon.svg") and (CHART / "icon.svg").exists()
    annotations = chart["annotations"]
    for key in ("artifacthub.io/license", "artifacthub.io/images", "artifacthub.io/links", "artifacthub.io/crds",
                "artifacthub.io/changes"):  # fmt: skip
        assert key in annotations, key
    images = yaml.safe_load(annotations["artifacthub.io/images"])
    assert {i["name"] for i in images} == {"pg_trickle", "bootstrap", "generator", "dashboard", "exporter", "operator"}
    for image in images:
        if image["name"] != "pg_trickle":
            assert image["image"].endswith(f"/{image['name']}:{chart['appVersion']}"), image
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    pinned = f"{values['postgres']['image']['repository']}:{values['postgres']['image']['tag']}"
    assert {"name": "pg_trickle", "image": pinned} in images
    crds = yaml.safe_load(annotations["artifacthub.io/crds"])
    assert crds[0]["name"] == "streamtables.pgtrickle.io"
