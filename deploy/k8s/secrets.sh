#!/bin/sh
# The CURVE key Secrets of the Kubernetes deployment, from a keys folder made by `magicmask keys generate`.
#   magicmask keys generate keys --agents 4
#   deploy/k8s/secrets.sh keys | kubectl apply -n NAMESPACE -f -
# Four Secrets, so that each pod holds only what it needs:
#   magicmask-public-keys  every public key (the allow-list)   -> every pod, /etc/magicmask/keys/public_keys
#   magicmask-broker-key   broker.key_secret                   -> the broker pod, .../private_keys
#   magicmask-learner-key  learner.key_secret                  -> the learner pod, .../private_keys
#   magicmask-actor-keys   actor-<i>.key_secret for every i    -> the actor pods (one template for all)
# Writes YAML only (kubectl --dry-run=client, no cluster needed); nothing secret is written to disk.
set -eu
if [ $# -ne 1 ] || [ ! -d "$1/public_keys" ] || [ ! -d "$1/private_keys" ]; then
  echo "usage: $0 KEYS_DIR   (a folder made by 'magicmask keys generate KEYS_DIR --agents N')" >&2
  exit 2
fi
d=$1
secret() {
  kubectl create secret generic "$@" --dry-run=client -o yaml
  echo "---"
}
for f in "$d/private_keys/broker.key_secret" "$d/private_keys/learner.key_secret" "$d/private_keys/actor-0.key_secret"; do
  [ -f "$f" ] || { echo "$0: missing $f (run magicmask keys generate $d --agents N)" >&2; exit 2; }
done
secret magicmask-public-keys --from-file="$d/public_keys"
secret magicmask-broker-key --from-file="$d/private_keys/broker.key_secret"
secret magicmask-learner-key --from-file="$d/private_keys/learner.key_secret"
set --
for f in "$d"/private_keys/actor-*.key_secret; do set -- "$@" --from-file="$f"; done
secret magicmask-actor-keys "$@"
