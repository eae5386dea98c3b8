#!/usr/bin/env bash
# Makes a throwaway CA and one certificate signed by it, for trying TLS and for the tests:
#   DIR/ca.pem, DIR/ca.key           the CA
#   DIR/node.pem, DIR/node.key       a certificate for 127.0.0.1 / localhost, valid for both
#                                    server and client authentication (shards and learners)
#   DIR/other-ca.pem                 an unrelated CA (what a stranger would trust)
# Usage: scripts/make-test-certs.sh DIR [DAYS]. Needs openssl. Never use these in production.
set -euo pipefail
dir=${1:?usage: make-test-certs.sh DIR [DAYS]}
days=${2:-30}
command -v openssl >/dev/null || { echo "make-test-certs.sh: openssl is not installed" >&2; exit 3; }
mkdir -p "$dir"
cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days "$days" \
  -subj "/CN=orrery test CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout node.key -out node.csr -subj "/CN=localhost" 2>/dev/null
cat > node.ext <<EXT
subjectAltName = IP:127.0.0.1, DNS:localhost
extendedKeyUsage = serverAuth, clientAuth
basicConstraints = CA:FALSE
EXT
openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out node.pem \
  -days "$days" -extfile node.ext 2>/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -out other-ca.pem -days "$days" \
  -subj "/CN=someone else's CA" 2>/dev/null
rm -f node.csr node.ext ca.srl other-ca.key
chmod 600 ca.key node.key
echo "$dir: ca.pem node.pem node.key other-ca.pem"
