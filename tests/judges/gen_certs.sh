#!/usr/bin/env bash
# Generate an SM2/SM3 test PKI with Debian's openssl 3.0 binary.
#   gen_certs.sh DIR
# Writes into DIR:
#   ca.crt ca.key                          SM2 root CA (SM2-with-SM3, self-signed)
#   server_sign.{crt,key}                  CN=localhost, SAN localhost/127.0.0.1, keyUsage digitalSignature
#   server_enc.{crt,key}                   CN=localhost, keyUsage keyEncipherment,dataEncipherment,keyAgreement
#   client_sign.{crt,key} client_enc.{crt,key}   CN=judge-client, same key usages
# The sign certs double as the single certificate for RFC 8998 (TLS 1.3).
# All signatures use SM3 with the SM2 default distinguishing ID 1234567812345678
# (openssl 3.0 "verify" needs -vfyopt distid:1234567812345678 to check them).
set -euo pipefail
dir=${1:?usage: gen_certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
ID=distid:1234567812345678

openssl ecparam -genkey -name SM2 -noout -out ca.key
openssl req -x509 -new -key ca.key -sm3 -sigopt "$ID" -subj "/CN=Judge SM2 CA" -days 30 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out ca.crt 2>/dev/null

leaf() { # name CN keyUsage [san]
    local name=$1 cn=$2 ku=$3 san=${4:-}
    openssl ecparam -genkey -name SM2 -noout -out "$name.key"
    openssl req -new -key "$name.key" -sm3 -sigopt "$ID" -subj "/CN=$cn" -out "$name.csr" 2>/dev/null
    {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,$ku"
        [ -n "$san" ] && echo "subjectAltName=$san"
        true
    } >"$name.ext"
    openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
        -sm3 -sigopt "$ID" -vfyopt "$ID" -extfile "$name.ext" -out "$name.crt" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

SAN="DNS:localhost,IP:127.0.0.1"
leaf server_sign localhost digitalSignature "$SAN"
leaf server_enc localhost "keyEncipherment,dataEncipherment,keyAgreement" "$SAN"
leaf client_sign judge-client digitalSignature
leaf client_enc judge-client "keyEncipherment,dataEncipherment,keyAgreement"
rm -f ca.srl
for c in server_sign server_enc client_sign client_enc; do
    openssl verify -vfyopt "$ID" -CAfile ca.crt "$c.crt" >/dev/null
done
echo "certificates written to $dir"
