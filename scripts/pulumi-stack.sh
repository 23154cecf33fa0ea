#!/usr/bin/env bash
# Runs a pulumi command for one stack on the project's local file backend (or PULUMI_BACKEND_URL),
# after checking what a first-time user is most likely to be missing.
set -euo pipefail
cd "$(dirname "$0")/.."
stack=${1:?usage: scripts/pulumi-stack.sh STACK up|preview|destroy|kubeconfig [pulumi args]}
action=${2:?usage: scripts/pulumi-stack.sh STACK up|preview|destroy|kubeconfig [pulumi args]}
shift 2

fail() { echo "error: $*" >&2; exit 1; }

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
  destroy) exec pulumi destroy --stack "$stack" "$@" ;;
  kubeconfig)
    umask 077
    pulumi stack output kubeconfig --show-secrets --stack "$stack" > kubeconfig.yaml
    chmod 600 kubeconfig.yaml
    echo "wrote kubeconfig.yaml (mode 0600); try: kubectl --kubeconfig kubeconfig.yaml get nodes --context <cluster>" ;;
  *) fail "unknown action $action (up, preview, destroy, kubeconfig)" ;;
esac
