#!/usr/bin/env bash
# Test certificates for the TLS client matrix, made with the openssl CLI into
# OUTDIR (nothing here is committed but this script).
#
#   bash tests/clients/tls/gen_certs.sh OUTDIR
#
# Writes (PEM; every client certificate also as NAME.p12, password
# $TLS_P12_PASS, for the Java client):
#   ca.pem ca.key            the test CA (ca.pem only, a copy, with CA_CERT)
#   inter.pem inter.key      an intermediate CA signed by the CA
#   server.pem server.key    CN localhost, SAN DNS:localhost IP:127.0.0.1 IP:::1,
#                            signed by the intermediate: server.pem is the chain
#                            (leaf, then the intermediate), clients trust ca.pem
#   client.pem client.key    CN $CLIENT_CN, signed by the CA (the good client)
#   chain-client.pem .key    CN $CLIENT_CN, signed by the intermediate; the
#                            .pem (and .p12) hold the leaf and the intermediate
#   nouser.pem nouser.key    CN $NOUSER_CN, signed by the CA (no such user)
#   expired.pem expired.key  CN $CLIENT_CN, signed by the CA, valid only in 2020
#   wrongca.pem              a second CA nobody trusts
#   wrongca-client.pem .key  CN $CLIENT_CN, signed by that second CA
#
# CA_CERT and CA_KEY (optional) sign the client certificates with an existing
# CA instead of a new one (how the suite gets certificates RabbitMQ's fixed
# configuration trusts; the key is read in place, not copied); the server
# certificate is then signed by it too.
set -euo pipefail

OUT="${1:?usage: gen_certs.sh OUTDIR}"
CLIENT_CN="${CLIENT_CN:-tlc-user}"
NOUSER_CN="${NOUSER_CN:-tlc-nobody}"
P12_PASS="${TLS_P12_PASS:-lepus-test}"
DAYS=30

# An existing CA's files, found before the cd below.
[ -n "${CA_CERT:-}" ] && CA_CERT="$(realpath "$CA_CERT")" && CA_KEY="$(realpath "${CA_KEY:?CA_KEY is needed with CA_CERT}")"
mkdir -p "$OUT"
cd "$OUT"
exec 3>gen_certs.log  # openssl's chatter, shown when a step fails
trap 'echo "gen_certs.sh: failed; openssl said:" >&2; tail -n 15 gen_certs.log >&2' ERR

# sign NAME CSR CA_PEM CA_KEY EXT_SECTION [START END]: `openssl ca` so that the
# validity period can be set to any dates (the expired certificate).
sign() {
  local name="$1" csr="$2" ca="$3" cakey="$4" ext="$5" start="${6:-}" end="${7:-}"
  local db="ca-db-$name"
  rm -rf "$db"
  mkdir -p "$db"
  : >"$db/index.txt"
  cat >"$db/openssl.cnf" <<CNF
[ca]
default_ca = test_ca
[test_ca]
database = $db/index.txt
new_certs_dir = $db
serial = $db/serial
default_md = sha256
policy = any_name
unique_subject = no
copy_extensions = none
[any_name]
commonName = supplied
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[inter_ext]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF
  openssl rand -hex 16 >"$db/serial"
  local dates=(-days "$DAYS")
  [ -n "$start" ] && dates=(-startdate "$start" -enddate "$end")
  openssl ca -batch -notext -config "$db/openssl.cnf" -cert "$ca" -keyfile "$cakey" \
    -extensions "$ext" "${dates[@]}" -in "$csr" -out "$name.pem" >&3 2>&1
  rm -rf "$db" "$csr"
}

# new_ca NAME CN
new_ca() {
  openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.pem" -days "$DAYS" \
    -subj "/CN=$2" -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -addext "subjectKeyIdentifier=hash" >&3 2>&1
}

# leaf NAME CN KEYSPEC EXT CA_PEM CA_KEY [START END]: a key and a certificate
# signed by that CA.
leaf() {
  local name="$1" cn="$2" keyspec="$3" ext="$4" ca="$5" cakey="$6"
  local keyopts=(-newkey "$keyspec")
  [ "$keyspec" = ec ] && keyopts+=(-pkeyopt ec_paramgen_curve:prime256v1)
  openssl req -new "${keyopts[@]}" -nodes -keyout "$name.key" -out "$name.csr" -subj "/CN=$cn" >&3 2>&1
  sign "$name" "$name.csr" "$ca" "$cakey" "$ext" "${7:-}" "${8:-}"
}

# p12 NAME: NAME.pem (leaf first, then any chain) and NAME.key as PKCS#12.
p12() {
  openssl pkcs12 -export -in "$1.pem" -inkey "$1.key" -name "$1" \
    -passout "pass:$P12_PASS" -out "$1.p12" >&3 2>&1
}

if [ -n "${CA_CERT:-}" ]; then
  cp "$CA_CERT" ca.pem  # the existing CA's key is used where it is, not copied
  ca_key="$CA_KEY"
else
  new_ca ca lepus-test-ca
  ca_key="$PWD/ca.key"
fi
new_ca wrongca lepus-test-wrong-ca

# The server key is RSA (the usual deployment), client keys are ECDSA P-256,
# so both key types go through the broker's TLS stack.
leaf inter lepus-test-intermediate rsa:2048 inter_ext ca.pem "$ca_key"
leaf server localhost rsa:2048 server_ext inter.pem inter.key
cat inter.pem >>server.pem
leaf client "$CLIENT_CN" ec client_ext ca.pem "$ca_key"
leaf chain-client "$CLIENT_CN" ec client_ext inter.pem inter.key
cat inter.pem >>chain-client.pem
leaf nouser "$NOUSER_CN" ec client_ext ca.pem "$ca_key"
leaf expired "$CLIENT_CN" ec client_ext ca.pem "$ca_key" 20200101000000Z 20200102000000Z
leaf wrongca-client "$CLIENT_CN" ec client_ext wrongca.pem wrongca.key
for c in client chain-client nouser expired wrongca-client; do p12 "$c"; done
rm -f wrongca.key
chmod 600 ./*.key
echo "certificates in $OUT"
