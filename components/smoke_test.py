"""The deploy gate: a Job in the client cluster that makes `pulumi up` fail unless the curl client
reaches exo-webtest in the server cluster across the mesh."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.demo import WEBTEST_URL, app_labels, curl_container
from components.readiness import Readiness
from mesh_constants import SMOKE_TEST_TYPE

EXPECTED_GREETING = "Hello World from host exo-webtest"
SMOKE_ATTEMPTS = 30
SMOKE_DELAY_SECONDS = 10
CURL_TIMEOUT_SECONDS = 5
# Scheduling, pulling the curl and proxy images and starting the native sidecar.
START_UP_SECONDS = 120
# A failing test fails the Job at once: a broken mesh fails every pod the same way, so a retry
# would only double the wait before `pulumi up` reports it.
BACKOFF_LIMIT = 0
# ... except for a pod lost with its node (drained, evicted, the node gone): Kubernetes marks it
# with the DisruptionTarget condition and the policy ignores that failure, so a new pod runs.
# Every other failure fails the Job. A pod failure policy needs restartPolicy Never.
POD_FAILURE_POLICY = {"rules": [
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}},
]}
# The deadline holds one such loss; a second one ends the Job at the deadline.
NODE_LOSSES_HELD = 1
# A pod on a node that stops answering fails only once the node controller evicts it: the node
# turns NotReady after node-monitor-grace-period (50 s) and pods tolerate that for 300 s by default.
NODE_LOSS_EVICTION_SECONDS = 50 + 300
# Kubernetes waits 10 s before the first pod retry (doubling after that).
POD_RETRY_DELAY_SECONDS = 10
# The longest one pod takes: start-up, every attempt with its timeout and delay, the sidecar's quit.
POD_SECONDS = START_UP_SECONDS + SMOKE_ATTEMPTS * (CURL_TIMEOUT_SECONDS + SMOKE_DELAY_SECONDS) + CURL_TIMEOUT_SECONDS
# The deadline counts from the Job's start across its pods, so it must hold a pod lost at the end of
# its run, its eviction, the retry delay and the new pod's every attempt, or it kills the retry early.
SMOKE_DEADLINE_SECONDS = ((NODE_LOSSES_HELD + 1) * POD_SECONDS
                          + NODE_LOSSES_HELD * (NODE_LOSS_EVICTION_SECONDS + POD_RETRY_DELAY_SECONDS))
# Pulumi waits longer than the Job's deadline, so a failure shows the script's own message
# rather than Pulumi's 10-minute default timeout.
SMOKE_AWAIT = f"{SMOKE_DEADLINE_SECONDS // 60 + 5}m"


@dataclass(frozen=True)
class SmokeTestArgs:
    cluster_name: str
    provider: k8s.Provider
    # The client cluster's exodemo namespace.
    namespace: pulumi.Input[str]
    curl_image: str
    # Changes whenever the mesh does; the Job's name carries it, so the test runs again exactly then.
    mesh_fingerprint: pulumi.Input[str]
    # Everything the test proves: the demo app, the east-west gateways, the remote secrets.
    proves: tuple[pulumi.Resource, ...]
    # The client cluster's MeshCluster.nodes_ready: the Job's pod needs nodes.
    nodes_ready: Readiness


def mesh_fingerprint(parts: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:10]


def smoke_test_script() -> str:
    return f"""set -u
url={WEBTEST_URL}
body=""
for attempt in $(seq 1 {SMOKE_ATTEMPTS}); do
  body=$(curl -sS --max-time {CURL_TIMEOUT_SECONDS} "$url" 2>&1) && case "$body" in
    *"{EXPECTED_GREETING}"*) echo "attempt $attempt: $url answered: $body"; ok=1; break;;
  esac
  echo "attempt $attempt: $url answered: $body" >&2
  sleep {SMOKE_DELAY_SECONDS}
done
# Let the sidecar exit even where native sidecars are off, so the Job can complete.
curl -fsS --max-time {CURL_TIMEOUT_SECONDS} -X POST http://127.0.0.1:15020/quitquitquit >/dev/null 2>&1 || true
if [ "${{ok:-0}}" = 1 ]; then exit 0; fi
msg="cross-cluster smoke test failed: called $url {SMOKE_ATTEMPTS} times, \
expected '{EXPECTED_GREETING}', last answer: $body"
echo "$msg" | tee "${{TERMINATION_LOG:-/dev/termination-log}}" >&2
exit 1
"""


class SmokeTest(pulumi.ComponentResource):
    job_name: pulumi.Output[str]

    def __init__(self, name: str, args: SmokeTestArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(SMOKE_TEST_TYPE, name, None, opts)
        job = k8s.batch.v1.Job(
            f"{args.cluster_name}-exodemo-smoke-test",
            metadata={
                "name": pulumi.Output.from_input(args.mesh_fingerprint).apply(
                    lambda fingerprint: f"exodemo-smoke-{fingerprint}"
                ),
                "namespace": args.namespace,
                "labels": app_labels("exodemo-smoke-test"),
                # A failed test is run again by the next `pulumi up` instead of being awaited forever.
                "annotations": {"pulumi.com/replaceUnready": "true"},
            },
            spec={
                "backoffLimit": BACKOFF_LIMIT,
                "podFailurePolicy": POD_FAILURE_POLICY,
                "activeDeadlineSeconds": SMOKE_DEADLINE_SECONDS,
                "template": {
                    "metadata": {
                        "labels": app_labels("exodemo-smoke-test"),
                        "annotations": {
                            # The proxy runs as a native sidecar that Kubernetes stops when the
                            # test ends, and the test starts only once the proxy is ready.
                            "sidecar.istio.io/nativeSidecar": "true",
                            "proxy.istio.io/config": json.dumps({"holdApplicationUntilProxyStarts": True}),
                        },
                    },
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{
                            **curl_container(args.curl_image),
                            "name": "smoke-test",
                            "command": ["sh", "-c", smoke_test_script()],
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                        }],
                    },
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=args.provider,
                depends_on=[*args.proves, args.nodes_ready],
                custom_timeouts=pulumi.CustomTimeouts(create=SMOKE_AWAIT, update=SMOKE_AWAIT),
            ),
        )
        self.job_name = job.metadata.name
        self.register_outputs({"job_name": self.job_name})
