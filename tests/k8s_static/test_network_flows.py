"""The chart's NetworkPolicies, evaluated: a small implementation of the NetworkPolicy semantics
(networking.k8s.io/v1: a pod selected by a policy of a type is isolated for that direction, and a flow needs an
allowing rule on both the sender's egress and the receiver's ingress) decides, flow by flow, that exactly the
flows the demo needs are allowed: clients -> PostgreSQL, DNS, dashboard -> generator, Prometheus -> metrics,
`helm test` -> dashboard/exporter, operator and the credentials Job -> API server, CloudNativePG's operator and
replication, NodePorts from outside (values-kind.yaml); and that the others are not."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from tests.deploy_support import EXTERNAL, chart_values, deep_merge, pod_spec, render_objects

NAMESPACE = "pgtd"
API_SERVER = "172.18.0.2"  # a kind node's address, where the kubernetes Service is DNAT'ed (port 6443)
HOST = "172.18.0.1"  # the docker bridge gateway: NodePort traffic from the laptop arrives from here
EXTERNAL_DB = "10.20.30.40"


@dataclass(frozen=True)
class Pod:
    name: str
    namespace: str
    labels: dict = field(hash=False)


@dataclass(frozen=True)
class Address:
    ip: str


PROMETHEUS = Pod("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"})
KUBE_DNS = Pod("coredns", "kube-system", {"k8s-app": "kube-dns"})
CNPG_OPERATOR = Pod("cnpg-controller-manager", "cnpg-system", {"app.kubernetes.io/name": "cloudnative-pg"})
STRANGER = Pod("stranger", NAMESPACE, {"app": "stranger"})


def _selector_matches(selector: dict, labels: dict) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def _peer_matches(peer: dict, other, policy_ns: str) -> bool:
    if "ipBlock" in peer:
        # Whether an ipBlock matches pod addresses is implementation-defined: only count it for non-pod peers.
        if not isinstance(other, Address):
            return False
        block = peer["ipBlock"]
        ip = ipaddress.ip_address(other.ip)
        inside = ip in ipaddress.ip_network(block["cidr"])
        return inside and not any(ip in ipaddress.ip_network(c) for c in block.get("except") or [])
    if not isinstance(other, Pod):
        return False
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": other.namespace}
        if not _selector_matches(peer["namespaceSelector"], ns_labels):
            return False
    elif other.namespace != policy_ns:
        return False
    return _selector_matches(peer.get("podSelector") or {}, other.labels)


def _port_matches(rule: dict, port: int, protocol: str) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    return any(p.get("protocol", "TCP") == protocol and p.get("port") in (None, port) for p in ports)


def _direction_allows(policies, pod: Pod, direction: str, other, port: int, protocol: str) -> bool:
    """True when `pod` is not isolated for `direction`, or one rule of a policy selecting it allows the flow."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and _selector_matches(p["spec"]["podSelector"], pod.labels)
        and direction in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            peers = rule.get(peers_key)
            if _port_matches(rule, port, protocol) and (
                not peers or any(_peer_matches(peer, other, pod.namespace) for peer in peers)
            ):
                return True
    return False


def allowed(policies, src, dst, port: int, protocol: str = "TCP") -> bool:
    out = not isinstance(src, Pod) or _direction_allows(policies, src, "Egress", dst, port, protocol)
    into = not isinstance(dst, Pod) or _direction_allows(policies, dst, "Ingress", src, port, protocol)
    return out and into


def release(values: dict):
    """(policies, {component: Pod}) of a render; a CloudNativePG instance pod is added in cnpg mode."""
    objects = render_objects(values, namespace=NAMESPACE)
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    pods = {}
    for obj in objects:
        if pod_spec(obj) is None:
            continue
        labels = obj["metadata"]["labels"] if obj["kind"] == "Pod" else obj["spec"]["template"]["metadata"]["labels"]
        pods[labels["app.kubernetes.io/component"]] = Pod(obj["metadata"]["name"], NAMESPACE, labels)
    for obj in objects:
        if obj["kind"] == "Cluster":
            labels = {**obj["spec"]["inheritedMetadata"]["labels"], "cnpg.io/cluster": obj["metadata"]["name"]}
            pods["postgres"] = Pod(f"{obj['metadata']['name']}-1", NAMESPACE, labels)
            pods["postgres-2"] = Pod(f"{obj['metadata']['name']}-2", NAMESPACE, labels)
    return policies, pods


CLIENTS = ("bootstrap", "generator", "dashboard", "exporter", "operator")


@pytest.mark.parametrize("mode", ["statefulset", "cnpg"])
def test_the_needed_flows_are_allowed_and_no_other(mode):
    values = {} if mode == "statefulset" else {"postgres": {"mode": "cnpg"}}
    policies, pods = release(values)
    pg = pods["postgres"]
    for client in CLIENTS:
        assert allowed(policies, pods[client], pg, 5432), f"{client} -> postgres"
    for comp, pod in pods.items():
        assert allowed(policies, pod, KUBE_DNS, 53, "UDP") and allowed(policies, pod, KUBE_DNS, 53), f"{comp} DNS"
    assert allowed(policies, pods["dashboard"], pods["generator"], 8000)
    assert allowed(policies, PROMETHEUS, pods["generator"], 8000)
    assert allowed(policies, PROMETHEUS, pods["exporter"], 9188)
    assert allowed(policies, pods["test"], pods["dashboard"], 8080)
    assert allowed(policies, pods["test"], pods["exporter"], 9188)
    assert allowed(policies, Address(HOST), pods["dashboard"], 8080), "dashboardFrom empty: anyone"
    assert allowed(policies, pods["operator"], Address(API_SERVER), 6443)
    assert allowed(policies, pods["operator"], Address(API_SERVER), 443)
    # the credentials Job creates the Secret through the API server, and reaches nothing else
    assert allowed(policies, pods["credentials"], Address(API_SERVER), 6443)
    assert not allowed(policies, pods["credentials"], pg, 5432)
    # (like the operator's, its API rule is networkPolicy.apiServer: 0.0.0.0/0 on 443/6443 unless narrowed)
    assert not allowed(policies, pods["credentials"], Address("93.184.216.34"), 80)
    assert not allowed(policies, STRANGER, pods["credentials"], 8080)
    # and nothing else
    for outsider in (PROMETHEUS, STRANGER, pods["test"], Address(HOST)):
        assert not allowed(policies, outsider, pg, 5432), f"{outsider} -> postgres"
    assert not allowed(policies, Address(HOST), pods["exporter"], 9188), "ClusterIP services are not exposed"
    assert not allowed(policies, Address(HOST), pods["generator"], 8000)
    assert not allowed(policies, pods["generator"], pods["exporter"], 9188)
    assert not allowed(policies, pods["generator"], pods["dashboard"], 8080)
    assert not allowed(policies, pods["test"], pods["generator"], 8000)
    assert not allowed(policies, pods["test"], pg, 5432)
    for comp in ("bootstrap", "generator", "dashboard", "exporter", "test"):
        assert not allowed(policies, pods[comp], Address(API_SERVER), 6443), f"{comp} -> API server"
        assert not allowed(policies, pods[comp], Address("93.184.216.34"), 443), f"{comp} -> internet"
    if mode == "cnpg":
        # CloudNativePG: its operator reaches the instances, they replicate and report to the API server.
        assert allowed(policies, CNPG_OPERATOR, pg, 8000) and allowed(policies, CNPG_OPERATOR, pg, 5432)
        assert allowed(policies, pods["postgres-2"], pg, 5432) and allowed(policies, pg, pods["postgres-2"], 8000)
        assert allowed(policies, pg, Address(API_SERVER), 6443)
        assert not allowed(policies, PROMETHEUS, pg, 8000)
        assert not allowed(policies, pg, pods["generator"], 8000)
    else:
        assert not allowed(policies, pg, Address(API_SERVER), 6443), "the StatefulSet needs no API access"


def test_kind_nodeports_are_reachable_from_the_laptop():
    """values-kind.yaml exposes the generator, dashboard and exporter as NodePorts that kind-config.yaml maps to
    localhost: that traffic reaches the pods from a node address, which no pod or namespace selector matches
    (kind's kindnet enforces NetworkPolicies since kind 0.24)."""
    values = chart_values("values.yaml", "values-ecommerce.yaml", "values-kind.yaml")
    policies, pods = release(values)
    for comp, port in (("dashboard", 8080), ("exporter", 9188), ("generator", 8000)):
        assert allowed(policies, Address(HOST), pods[comp], port), comp
    assert not allowed(policies, Address(HOST), pods["postgres"], 5432)
    assert not allowed(policies, Address(HOST), pods["exporter"], 8000)
    # one NodePort only opens its own port
    only_exporter = deep_merge(values, {"generator": {"service": {"type": "ClusterIP", "nodePort": None}}})
    policies, pods = release(only_exporter)
    assert allowed(policies, Address(HOST), pods["exporter"], 9188)
    assert not allowed(policies, Address(HOST), pods["generator"], 8000)


def test_restricting_the_dashboard_keeps_helm_test_working():
    ingress_nginx = Pod("ingress-nginx-controller", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    only_ingress = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    policies, pods = release({"networkPolicy": {"dashboardFrom": only_ingress}})
    assert allowed(policies, ingress_nginx, pods["dashboard"], 8080)
    assert allowed(policies, pods["test"], pods["dashboard"], 8080)
    assert not allowed(policies, PROMETHEUS, pods["dashboard"], 8080)
    assert not allowed(policies, Address(HOST), pods["dashboard"], 8080)


def test_external_mode_lets_clients_reach_the_external_server():
    policies, pods = release(EXTERNAL)
    for client in CLIENTS:
        assert allowed(policies, pods[client], Address(EXTERNAL_DB), 5432), client
    assert not allowed(policies, pods["test"], Address(EXTERNAL_DB), 5432)
