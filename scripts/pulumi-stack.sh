#!/usr/bin/env bash
# Runs a pulumi command for one stack on the project's local file backend (or PULUMI_BACKEND_URL),
# after checking what a first-time user is most likely to be missing.
set -euo pipefail
cd "$(dirname "$0")/.."
stack=${1:?usage: scripts/pulumi-stack.sh STACK up|preview|refresh|destroy|kubeconfig [pulumi args]}
action=${2:?usage: scripts/pulumi-stack.sh STACK up|preview|refresh|destroy|kubeconfig [pulumi args]}
shift 2

fail() { echo "error: $*" >&2; exit 1; }

# Kubernetes objects are read and deleted with the admin kubeconfigs stored in the state, and only
# `up` renews them: after a pause longer than kubeconfigTtlSeconds every call is Unauthorized. A
# targeted `up` of the kubeconfigs and the providers built from them re-issues a kubeconfig that
# is expired or within kubeconfigEarlyRenewalSeconds of it, and touches nothing else.
renew_kubeconfigs() {
  # RENEW=0: the renewal cannot run (a cluster deleted outside Pulumi, a config that no longer
  # validates); go ahead with the stored kubeconfigs.
  [ "${RENEW:-1}" != 0 ] || return 0
  local urns targets=()
  urns=$(pulumi stack export --stack "$stack" | python3 -c '
import json, sys
renewed = {"exoscale:index/sksKubeconfig:SksKubeconfig", "pulumi:providers:kubernetes"}
for resource in json.load(sys.stdin).get("deployment", {}).get("resources") or []:
    if resource.get("type") in renewed:
        print(resource["urn"])')
  while IFS= read -r urn; do
    [ -z "$urn" ] || targets+=(--target "$urn")
  done <<< "$urns"
  [ ${#targets[@]} -eq 0 ] || pulumi up --stack "$stack" --yes "${targets[@]}"
}

command -v pulumi >/dev/null || fail "the Pulumi CLI is not installed: see https://www.pulumi.com/docs/install/"
[ -f "Pulumi.$stack.yaml" ] || fail "no Pulumi.$stack.yaml: pick one of $(ls Pulumi.*.yaml | sed -n 's/^Pulumi\.\(.*\)\.yaml$/\1/p' | grep -v '^$' | tr '\n' ' ')"
if [ -z "${PULUMI_CONFIG_PASSPHRASE:-}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
  fail "set PULUMI_CONFIG_PASSPHRASE (or PULUMI_CONFIG_PASSPHRASE_FILE): it encrypts this stack's secrets"
fi
if [ "$action" != kubeconfig ]; then
  [ -n "${EXOSCALE_API_KEY:-}" ] && [ -n "${EXOSCALE_API_SECRET:-}" ] \
    || fail "set EXOSCALE_API_KEY and EXOSCALE_API_SECRET (an Exoscale API key with SKS and NLB rights)"
fi

# The default backend (Pulumi.yaml) is a directory beside the project; it must exist.
[ -n "${PULUMI_BACKEND_URL:-}" ] || mkdir -p .pulumi-state
pulumi stack select --create --secrets-provider passphrase "$stack" >/dev/null

case "$action" in
  # The policy pack guards every change; destroy needs no guard.
  up) exec pulumi up --stack "$stack" --policy-pack policy "$@" ;;
  preview) exec pulumi preview --stack "$stack" --policy-pack policy "$@" ;;
  refresh) renew_kubeconfigs; exec pulumi refresh --stack "$stack" "$@" ;;
  destroy) renew_kubeconfigs; exec pulumi destroy --stack "$stack" "$@" ;;
  kubeconfig)
    umask 077
    pulumi stack output kubeconfig --show-secrets --stack "$stack" > kubeconfig.yaml
    chmod 600 kubeconfig.yaml
    echo "wrote kubeconfig.yaml (mode 0600); try: kubectl --kubeconfig kubeconfig.yaml get nodes --context <cluster>" ;;
  *) fail "unknown action $action (up, preview, refresh, destroy, kubeconfig)" ;;
esac
