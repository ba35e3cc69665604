#!/bin/sh
# A private CA and a broker certificate for trying the TLS listener (compose, tests).
# Production: your organisation's CA, or any CA the devices trust.
# Usage: deploy/make-test-ca.sh DIR [BROKER_HOSTNAME]
set -eu
dir=${1:?directory}; host=${2:-localhost}
mkdir -p "$dir"; cd "$dir"
openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=ioc test CA" -keyout ca.key -out ca.crt
openssl req -newkey rsa:2048 -nodes -subj "/CN=$host" -keyout broker.key -out broker.csr
printf 'subjectAltName = DNS:%s,DNS:mqtt,DNS:localhost,IP:127.0.0.1\n' "$host" > san.ext
openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
    -extfile san.ext -out broker.crt
rm -f broker.csr san.ext
chmod 644 broker.key   # the broker container's user must read it; keep the directory private
echo "CA: $dir/ca.crt (give it to devices); broker: $dir/broker.crt, $dir/broker.key"
