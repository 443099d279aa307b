#!/usr/bin/env python3
"""Checks the deployment files of docs/deploy.md (everything under deploy/), as CI does:

    python3 deploy/check.py

Always, with PyYAML and the wtgate binary (built here with `cargo build --bin wtgate`, or given as
WTGATE_BIN): every YAML document parses and has the fields its kind needs; selectors match
labels, Services' target ports and probes' ports exist; the Wt StatefulSet's ordinals, the
session-id prefix its command derives and wtgate's backend list agree; the ConfigMap's wtgate.toml
and the systemd unit's command line pass `wtgate check` (with the Deployment's real arguments);
the keepalived pair mirrors itself; the PrometheusRule equals deploy/prometheus/rules.yml; every
wtgate_* metric named in the rules and in docs/deploy.md is one a running wtgate serves; and
check-wtgate.sh passes against a running wtgate and fails when it should.

Then, where installed (.ci/run installs them from PyPI and Debian's packages), the real
validators: kubernetes-validate (Kubernetes schemas, strict), promtool (rules, rule unit tests,
scrape configs), keepalived --config-test, systemd-analyze verify, shellcheck. A validator that is
missing is reported as skipped; one that is there and objects fails the run.

Ends with the line `deploy: N passed, N failed, N skipped`; exit status 1 if any check failed.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

try:
    import yaml
except ImportError:
    sys.exit("deploy/check.py needs PyYAML: python3 -m pip install pyyaml (or apt-get install python3-yaml)")

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
PROM = DEPLOY / "prometheus"
KEEP = DEPLOY / "keepalived"
DOC = ROOT / "docs" / "deploy.md"

# The apiVersion each kind used here must have.
API_VERSIONS = {
    "Namespace": "v1",
    "Service": "v1",
    "ConfigMap": "v1",
    "Secret": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "PodDisruptionBudget": "policy/v1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}
WORKLOADS = ("Deployment", "StatefulSet")
# Kinds that kubernetes-validate has no schema for (CRDs): their warning is expected.
CRD_KINDS = ("ServiceMonitor", "PrometheusRule")

results = {"passed": 0, "failed": 0, "skipped": 0}


class Skip(Exception):
    """A validator that is not installed: the check is skipped, saying so."""


def check(fn):
    """Runs one check; an AssertionError or any other exception fails it."""
    name = fn.__name__
    try:
        fn()
    except Skip as why:
        results["skipped"] += 1
        print(f"skip  {name}: {why}")
    except Exception as e:  # noqa: BLE001 - every failure is reported, then the next check runs
        results["failed"] += 1
        kind = "" if isinstance(e, AssertionError) else f"{type(e).__name__}: "
        print(f"FAIL  {name}: {kind}{e}")
    else:
        results["passed"] += 1
        print(f"ok    {name}")
    return fn


def run(cmd, **kw):
    """Runs cmd, returning (exit status, stdout and stderr together)."""
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)
    return p.returncode, p.stdout + p.stderr


# ---- loading --------------------------------------------------------------------------------


def k8s_docs():
    """Every Kubernetes document of deploy/kubernetes, as (file name, document)."""
    out = []
    for f in sorted(K8S.glob("*.yaml")):
        try:
            docs = list(yaml.safe_load_all(f.read_text()))
        except yaml.YAMLError as e:
            sys.exit(f"FAIL  {f.relative_to(ROOT)} is no valid YAML: {e}")
        out += [(f.name, d) for d in docs if d is not None]
    return out


DOCS = k8s_docs()


def of_kind(kind):
    return [d for _, d in DOCS if d.get("kind") == kind]


def one(kind, name):
    found = [d for d in of_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_spec(workload):
    return workload["spec"]["template"]["spec"]


def pod_labels(workload):
    return workload["spec"]["template"]["metadata"].get("labels", {})


def container_ports(workload):
    """{port name: number} of every container of the workload's pods."""
    ports = {}
    for c in pod_spec(workload)["containers"]:
        for p in c.get("ports", []):
            assert p.get("name") not in ports, f"port name {p.get('name')} twice in {workload['metadata']['name']}"
            ports[p.get("name")] = p["containerPort"]
    return ports


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def port_exists(ref, ports):
    return ref in ports if isinstance(ref, str) else ref in ports.values()


def wtgate_bin():
    given = os.environ.get("WTGATE_BIN")
    if given:
        return given
    # A no-op when `cargo test` (CI) has just built it; the tests below use the current source.
    code, out = run(["cargo", "build", "--quiet", "--bin", "wtgate"], cwd=ROOT)
    if code != 0:
        sys.exit(f"cargo build --bin wtgate failed:\n{out}")
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    return str((ROOT / target) / "debug" / "wtgate")


WTGATE = wtgate_bin()


def wtgate_config():
    """The ConfigMap's wtgate.toml: (text, parsed)."""
    cm = one("ConfigMap", "wtgate-config")
    text = cm["data"]["wtgate.toml"]
    return text, tomllib.loads(text)


def wtgate_container():
    dep = one("Deployment", "wtgate")
    (c,) = [c for c in pod_spec(dep)["containers"] if c["name"] == "wtgate"]
    return dep, c


def config_arg(args):
    i = args.index("--config")
    return i + 1, args[i + 1]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---- Kubernetes -----------------------------------------------------------------------------


@check
def k8s_documents_have_kind_version_and_name():
    assert DOCS, "no documents in deploy/kubernetes"
    namespaces = {d["metadata"]["name"] for d in of_kind("Namespace")}
    for f, d in DOCS:
        kind = d.get("kind")
        assert kind in API_VERSIONS, f"{f}: kind {kind!r} is none this check knows"
        assert d.get("apiVersion") == API_VERSIONS[kind], f"{f}: {kind} wants apiVersion {API_VERSIONS[kind]}"
        meta = d.get("metadata") or {}
        assert meta.get("name"), f"{f}: a {kind} without metadata.name"
        if kind != "Namespace":
            assert meta.get("namespace") in namespaces, f"{f}: {kind} {meta['name']} is in no namespace of deploy/kubernetes"
    assert len(namespaces) == 1, f"one namespace expected, found {namespaces}"


@check
def workload_selectors_match_their_pods():
    for kind in WORKLOADS:
        for w in of_kind(kind):
            sel = w["spec"]["selector"]["matchLabels"]
            assert matches(sel, pod_labels(w)), f"{kind} {w['metadata']['name']}: selector {sel} misses its pods' labels"
            ports = container_ports(w)
            for c in pod_spec(w)["containers"]:
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    p = c.get(probe)
                    if p:
                        handler = p.get("tcpSocket") or p.get("httpGet")
                        assert handler, f"{kind} {w['metadata']['name']}: {probe} is neither tcpSocket nor httpGet"
                        assert port_exists(handler["port"], ports), f"{probe} port {handler['port']} is no container port"
    for pdb in of_kind("PodDisruptionBudget"):
        sel = pdb["spec"]["selector"]["matchLabels"]
        assert any(matches(sel, pod_labels(w)) for k in WORKLOADS for w in of_kind(k)), f"PDB {pdb['metadata']['name']} selects no pods"


@check
def services_select_pods_and_their_ports():
    workloads = [w for k in WORKLOADS for w in of_kind(k)]
    for svc in of_kind("Service"):
        name = svc["metadata"]["name"]
        selected = [w for w in workloads if matches(svc["spec"]["selector"], pod_labels(w))]
        assert selected, f"Service {name} selects no workload's pods"
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            for w in selected:
                assert port_exists(target, container_ports(w)), f"Service {name}: targetPort {target} is no port of {w['metadata']['name']}"
    for sts in of_kind("StatefulSet"):
        svc = one("Service", sts["spec"]["serviceName"])
        assert svc["spec"].get("clusterIP") == "None", "a StatefulSet's serviceName must be a headless Service"
        assert svc["spec"].get("publishNotReadyAddresses") is True, "wtgate resolves the names at start: publish them before readiness"
        assert matches(svc["spec"]["selector"], pod_labels(sts))


@check
def wtgate_mounts_its_configmap_as_a_directory():
    dep, c = wtgate_container()
    _, path = config_arg(c["args"])
    vols = {v["name"]: v for v in pod_spec(dep)["volumes"]}
    (mount,) = [m for m in c["volumeMounts"] if Path(path).parent == Path(m["mountPath"])]
    assert "subPath" not in mount, "a subPath mount is never updated when the ConfigMap changes"
    cm_name = vols[mount["name"]]["configMap"]["name"]
    assert Path(path).name in one("ConfigMap", cm_name)["data"], f"ConfigMap {cm_name} has no key {Path(path).name}"


@check
def secret_references_agree():
    refs = set()
    for w in (w for k in WORKLOADS for w in of_kind(k)):
        for c in pod_spec(w)["containers"]:
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
    for sm in of_kind("ServiceMonitor"):
        for ep in sm["spec"]["endpoints"]:
            cred = ep["authorization"]["credentials"]
            refs.add((cred["name"], cred["key"]))
    assert refs == {("wtgate-admin", "token")}, f"the admin token must come from one Secret key, found {refs}"
    assert "create secret generic wtgate-admin --from-literal=token=" in DOC.read_text(), "docs/deploy.md must say how to make the Secret"


@check
def configmap_config_passes_wtgate_check_with_the_deployment_args():
    text, cfg = wtgate_config()
    _, c = wtgate_container()
    env = {}
    for e in c.get("env", []):
        env[e["name"]] = e.get("value", "token-from-the-secret")
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "wtgate.toml"
        conf.write_text(text)
        args = [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in c["args"]]
        i, _ = config_arg(args)
        args[i] = str(conf)
        # The backends' cluster names do not resolve here: WTGATE_TEST_HOSTS (debug builds) gives
        # each its own loopback address, so that `wtgate check` checks everything else as is.
        hosts = Path(tmp) / "hosts"
        hosts.write_text("".join(f"{b['address'].rsplit(':', 1)[0]} 127.0.0.{n + 1}\n" for n, b in enumerate(cfg["backend"])))
        code, out = run([WTGATE, "check", *args], env={**os.environ, "WTGATE_TEST_HOSTS": str(hosts)})
    hint = "\n(WTGATE_TEST_HOSTS works in debug builds only)" if "cannot resolve" in out else ""
    assert code == 0, f"wtgate check {' '.join(c['args'])}:\n{out}{hint}"
    assert "(bearer token required)" in out, out


@check
def configmap_ports_and_threads_match_the_deployment():
    _, cfg = wtgate_config()
    dep, c = wtgate_container()
    ports = container_ports(dep)
    (listen,) = cfg["listen"]
    assert int(listen["address"].rsplit(":", 1)[1]) == ports["http"], "listen port != container port http"
    assert int(cfg["admin"]["listen"].rsplit(":", 1)[1]) == ports["admin"], "admin port != container port admin"
    assert "token" not in cfg["admin"], "the token belongs in the Secret, not the ConfigMap"
    assert cfg["threads"] == int(c["resources"]["requests"]["cpu"]), "threads should be the CPUs the pod requests"
    assert cfg.get("pin") is False, "pods share cores: pin = false"


@check
def backends_are_the_statefulset_pods_with_their_prefixes():
    _, cfg = wtgate_config()
    (sts,) = of_kind("StatefulSet")
    name, ns, svc = sts["metadata"]["name"], sts["metadata"]["namespace"], sts["spec"]["serviceName"]
    port = container_ports(sts)["http"]
    (c,) = pod_spec(sts)["containers"]
    script = " ".join(c.get("command", []) + c.get("args", []))
    m = re.search(r"--session-id-prefix[= ]+(\"[^\"]*\"|'[^']*'|\S+)", script)
    assert m, "the Wt container's command sets no --session-id-prefix"
    want = []
    for i in range(sts["spec"]["replicas"]):
        # What the container's shell makes of the prefix in pod name-i.
        code, prefix = run(["sh", "-c", f"printf %s {m.group(1)}"], env={"HOSTNAME": f"{name}-{i}", "PATH": os.environ["PATH"]})
        assert code == 0, prefix
        want.append((prefix, f"{name}-{i}.{svc}.{ns}.svc.cluster.local:{port}"))
    got = [(b["prefix"], b["address"]) for b in cfg["backend"]]
    assert got == want, f"wtgate's backends {got} are not the StatefulSet's pods {want}"


@check
def service_monitor_scrapes_the_admin_port_as_job_wtgate():
    (sm,) = of_kind("ServiceMonitor")
    svcs = [s for s in of_kind("Service") if matches(sm["spec"]["selector"]["matchLabels"], s["metadata"].get("labels", {}))]
    assert len(svcs) == 1, f"the ServiceMonitor should select the admin Service alone, selects {[s['metadata']['name'] for s in svcs]}"
    (svc,) = svcs
    assert svc["spec"]["type"] == "ClusterIP", "the admin listener must not be behind the LoadBalancer"
    names = {p["name"] for p in svc["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        assert ep["port"] in names, f"ServiceMonitor port {ep['port']} is not a port of {svc['metadata']['name']}"
        assert ep["path"] == "/metrics"
    assert svc["metadata"]["labels"][sm["spec"]["jobLabel"]] == "wtgate", "rules.yml expects job=\"wtgate\""
    admin = ("admin", container_ports(one("Deployment", "wtgate"))["admin"])
    for s in of_kind("Service"):
        if s["spec"].get("type") == "LoadBalancer":
            assert all(p.get("targetPort") not in admin for p in s["spec"]["ports"]), "the admin port is behind the LoadBalancer"


@check
def prometheus_rule_equals_rules_yml():
    (pr,) = of_kind("PrometheusRule")
    rules = yaml.safe_load((PROM / "rules.yml").read_text())
    assert pr["spec"] == rules, "deploy/kubernetes/wtgate-monitoring.yaml's PrometheusRule differs from deploy/prometheus/rules.yml"


# ---- a running wtgate: its metric names, and keepalived's check script ----------------------


class Running:
    """A wtgate on loopback with one backend that accepts connections, admin with a token."""

    TOKEN = "check-token-0123"

    def __enter__(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.backend = socket.socket()
        self.backend.bind(("127.0.0.1", 0))
        self.backend.listen(64)
        self.listen, self.admin = free_port(), free_port()
        self.config = Path(self.tmp.name) / "wtgate.toml"
        self.config.write_text(
            f'threads = 1\n[[listen]]\naddress = "127.0.0.1:{self.listen}"\n'
            f'[[backend]]\nprefix = "wt1"\naddress = "127.0.0.1:{self.backend.getsockname()[1]}"\n'
            f'[admin]\nlisten = "127.0.0.1:{self.admin}"\ntoken = "{self.TOKEN}"\n'
        )
        self.proc = subprocess.Popen([WTGATE, "--config", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.admin}/", timeout=1).read()
                return self
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError(f"wtgate did not start: {self.proc.stderr.read()}")
                time.sleep(0.1)

    def get(self, path):
        req = urllib.request.Request(f"http://127.0.0.1:{self.admin}{path}", headers={"Authorization": f"Bearer {self.TOKEN}"})
        return urllib.request.urlopen(req, timeout=5).read().decode()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __exit__(self, *exc):
        self.stop()
        self.backend.close()
        self.tmp.cleanup()


def metric_families(text):
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def metric_names_in(text):
    """wtgate_* metric names in text, not those inside recording-rule names (job:wtgate_x:rate5m)."""
    return set(re.findall(r"(?<![:\w])wtgate_[a-z0-9_]*[a-z0-9](?![:\w])", text))


@check
def metric_names_used_are_served_by_wtgate():
    with Running() as w:
        families = metric_families(w.get("/metrics"))
    assert "wtgate_backend_requests_total" in families, families
    served = set(families)
    for f in families:
        served |= {f + "_sum", f + "_count"}
    files = [PROM / "rules.yml", PROM / "rules_test.yml", K8S / "wtgate-monitoring.yaml", DOC]
    for f in files:
        unknown = metric_names_in(f.read_text()) - served
        assert not unknown, f"{f.relative_to(ROOT)} names metrics wtgate does not serve: {sorted(unknown)}"


@check
def check_wtgate_sh_passes_on_a_live_wtgate_and_fails_otherwise():
    script = str(KEEP / "check-wtgate.sh")
    base = {k: v for k, v in os.environ.items() if not k.startswith("WTGATE_")}
    with Running() as w:
        env = {**base, "WTGATE_LISTEN": f"127.0.0.1:{w.listen}", "WTGATE_ADMIN": f"http://127.0.0.1:{w.admin}", "WTGATE_CONFIG": str(w.config)}
        code, out = run([script], env=env)
        assert code == 0, f"check-wtgate.sh failed on a live wtgate (token from its config): {out}"
        code, out = run([script], env={**env, "WTGATE_ADMIN_TOKEN": "wrong"})
        assert code == 1 and "401" in out, f"a wrong token must fail: {code} {out}"
        code, out = run([script], env={**env, "WTGATE_LISTEN": f"127.0.0.1:{free_port()}"})
        assert code == 1 and "listener" in out, f"no listener must fail: {code} {out}"
        w.stop()
        code, out = run([script], env=env)
        assert code == 1, f"a stopped wtgate must fail: {code} {out}"


# ---- keepalived pair, systemd ---------------------------------------------------------------


def keepalived_conf(name):
    text = (KEEP / name).read_text()

    def block(key):
        m = re.search(key + r"\s*\{([^}]*)\}", text)
        assert m, f"{name}: no {key} block"
        return m.group(1).split()

    def value(key):
        m = re.search(rf"^\s*{key}\s+(.+?)\s*$", text, re.M)
        assert m, f"{name}: no {key}"
        return m.group(1)

    return text, block, value


@check
def keepalived_pair_mirrors_itself():
    t1, b1, v1 = keepalived_conf("keepalived-lb1.conf")
    t2, b2, v2 = keepalived_conf("keepalived-lb2.conf")
    for key in ("virtual_router_id", "interface", "advert_int", "state"):
        assert v1(key) == v2(key), f"{key} differs between the two machines"
    assert v1("state") == "BACKUP" and "nopreempt" in t1 and "nopreempt" in t2, "both BACKUP with nopreempt"
    assert v1("priority") != v2("priority")
    assert b1("virtual_ipaddress") == b2("virtual_ipaddress")
    assert b1("unicast_peer") == [v2("unicast_src_ip")] and b2("unicast_peer") == [v1("unicast_src_ip")]
    assert v1("script") == v2("script") == '"/etc/keepalived/check-wtgate.sh"'
    # The check script's defaults reach the wtgate that wtgate.toml configures.
    cfg = tomllib.loads((KEEP / "wtgate.toml").read_text())
    sh = (KEEP / "check-wtgate.sh").read_text()
    listen_port = re.search(r"WTGATE_LISTEN:-[\d.]+:(\d+)", sh).group(1)
    admin_port = re.search(r"WTGATE_ADMIN:-http://[\d.]+:(\d+)", sh).group(1)
    assert [listen_port] == [a["address"].rsplit(":", 1)[1] for a in cfg["listen"]]
    assert admin_port == cfg["admin"]["listen"].rsplit(":", 1)[1]
    # Prometheus scrapes both machines at their own addresses.
    scrape = yaml.safe_load((PROM / "prometheus-keepalived.yml").read_text())["scrape_configs"][0]
    targets = scrape["static_configs"][0]["targets"]
    assert sorted(targets) == sorted(f"{v(k)}:{admin_port}" for v in (v1, v2) for k in ("unicast_src_ip",))


@check
def keepalived_config_test():
    if not shutil.which("keepalived"):
        raise Skip("keepalived is not installed (apt-get install keepalived)")
    with tempfile.TemporaryDirectory() as tmp:
        # keepalived wants the check script to exist, owned by root and writable by no one else.
        sh = Path(tmp) / "check-wtgate.sh"
        shutil.copy(KEEP / "check-wtgate.sh", sh)
        for name in ("keepalived-lb1.conf", "keepalived-lb2.conf"):
            conf = Path(tmp) / name
            conf.write_text((KEEP / name).read_text().replace("/etc/keepalived/check-wtgate.sh", str(sh)))
            code, out = run(["keepalived", "--config-test", "-f", str(conf)])
            assert code == 0 and not out.strip(), f"keepalived --config-test {name}: exit {code}\n{out}"


def unit_lines():
    return [line.strip() for line in (DEPLOY / "systemd" / "wtgate.service").read_text().splitlines()]


@check
def systemd_unit_runs_wtgate_check_clean():
    lines = unit_lines()
    for want in ("Restart=on-failure", "LimitNOFILE=65536", "LimitMEMLOCK=infinity", "User=wtgate"):
        assert want in lines, f"wtgate.service lacks {want}"
    (start,) = [line[len("ExecStart="):] for line in lines if line.startswith("ExecStart=")]
    argv = start.split()
    assert argv[0] == "/usr/local/bin/wtgate"
    i, path = config_arg(argv)
    assert path == "/etc/wtgate/wtgate.toml"
    argv[i] = str(KEEP / "wtgate.toml")
    code, out = run([WTGATE, "check", *argv[1:]])
    assert code == 0, f"wtgate check {start}:\n{out}"


@check
def systemd_analyze_verify():
    if not shutil.which("systemd-analyze"):
        raise Skip("systemd-analyze is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        unit = Path(tmp) / "wtgate.service"
        unit.write_text((DEPLOY / "systemd" / "wtgate.service").read_text().replace("/usr/local/bin/wtgate", WTGATE))
        code, out = run(["systemd-analyze", "verify", str(unit)])
    # Unknown keys are only warnings there: any output fails.
    assert code == 0 and not out.strip(), f"systemd-analyze verify: exit {code}\n{out}"


@check
def shell_scripts():
    script = KEEP / "check-wtgate.sh"
    assert os.access(script, os.X_OK), "check-wtgate.sh must be executable"
    code, out = run(["bash", "-n", str(script)])
    assert code == 0, out
    if not shutil.which("shellcheck"):
        raise Skip("bash -n passed; shellcheck is not installed (apt-get install shellcheck)")
    code, out = run(["shellcheck", str(script)])
    assert code == 0, out


# ---- the real validators ----------------------------------------------------------------------


@check
def kubernetes_validate_strict():
    try:
        import kubernetes_validate  # noqa: F401
    except ImportError:
        raise Skip("kubernetes-validate is not installed (python3 -m pip install kubernetes-validate)") from None
    files = [str(f) for f in sorted(K8S.glob("*.yaml"))]
    for version in ("1.28.0", "1.37.0"):
        code, out = run([sys.executable, "-m", "kubernetes_validate", "--strict", "--quiet", "-k", version, *files])
        assert code == 0, f"kubernetes-validate {version}:\n{out}"
        for line in out.splitlines():
            assert any(f"kind {k} " in line for k in CRD_KINDS), f"kubernetes-validate {version}: {line}"


def promtool():
    if not shutil.which("promtool"):
        raise Skip("promtool is not installed (apt-get install prometheus)")
    return "promtool"


@check
def promtool_rules_and_their_tests():
    tool = promtool()
    code, out = run([tool, "check", "rules", "rules.yml"], cwd=PROM)
    assert code == 0, out
    code, out = run([tool, "test", "rules", "rules_test.yml"], cwd=PROM)
    assert code == 0, out


@check
def promtool_scrape_configs():
    tool = promtool()
    code, out = run([tool, "check", "config", "--syntax-only", "prometheus-keepalived.yml"], cwd=PROM)
    assert code == 0, out
    code, out = run([tool, "check", "config", "--syntax-only", "prometheus-kubernetes.yml"], cwd=PROM)
    if code != 0 and "field kubernetes_sd_configs not found" in out:
        # Debian's Prometheus is built without Kubernetes discovery: check the rest with static
        # targets in its place, and the discovery block by hand.
        cfg = yaml.safe_load((PROM / "prometheus-kubernetes.yml").read_text())
        for sc in cfg["scrape_configs"]:
            sd = sc.pop("kubernetes_sd_configs")
            assert all(s["role"] == "pod" and s["namespaces"]["names"] for s in sd), sd
            sc["static_configs"] = [{"targets": ["pod.example:8404"]}]
        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "p.yml").write_text(yaml.safe_dump(cfg))
            code, out = run([tool, "check", "config", "--syntax-only", "p.yml"], cwd=tmp)
    assert code == 0, out


# ---- the document ----------------------------------------------------------------------------


@check
def docs_name_every_file_and_link_to_existing_ones():
    text = DOC.read_text()
    for f in sorted(p for p in DEPLOY.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        rel = f.relative_to(ROOT).as_posix()
        assert rel in text, f"docs/deploy.md does not mention {rel}"
    for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" not in link:
            assert (DOC.parent / link).exists(), f"docs/deploy.md links to {link}, which does not exist"


print(f"deploy: {results['passed']} passed, {results['failed']} failed, {results['skipped']} skipped")
sys.exit(1 if results["failed"] else 0)
