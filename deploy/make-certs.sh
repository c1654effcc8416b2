#!/bin/sh
# Makes the sync link's certificates for one director pair (docs/deployment.md, "Certificates"):
# a CA, and for each director a key and a certificate signed by the CA whose subject
# alternative name is the director's DNS name, with both serverAuth and clientAuth (each
# tandem-syncd is a TLS server for its peer and a TLS client of it). EC P-256, PEM.
#
#   deploy/make-certs.sh OUTDIR [NAME_A [NAME_B]]     (defaults: director-a.tandem director-b.tandem)
#
# Writes OUTDIR/ca.pem, OUTDIR/ca.key (keep it offline), and OUTDIR/<name>.pem and
# OUTDIR/<name>.key per director (name without the domain: director-a.pem, director-a.key).
# Director A's syncd.toml then has cert/key = director-a.*, ca = ca.pem and
# peer_name = NAME_B; director B's the other way round. Refuses to overwrite an existing CA.
set -eu

usage() { echo "usage: $0 OUTDIR [NAME_A [NAME_B]]" >&2; exit 2; }
[ $# -ge 1 ] && [ $# -le 3 ] || usage
out=$1
name_a=${2:-director-a.tandem}
name_b=${3:-director-b.tandem}
days_ca=${TANDEM_CA_DAYS:-3650}
days_cert=${TANDEM_CERT_DAYS:-825}

for n in "$name_a" "$name_b"; do
  case $n in
    *[!A-Za-z0-9.-]* | "" | .* | -*) echo "$0: invalid DNS name '$n'" >&2; exit 2 ;;
  esac
done
[ "$name_a" != "$name_b" ] || { echo "$0: the two directors need different names" >&2; exit 2; }
command -v openssl >/dev/null || { echo "$0: openssl not found (apt-get install openssl)" >&2; exit 1; }

mkdir -p "$out"
umask 077
if [ -e "$out/ca.key" ]; then
  echo "$0: $out/ca.key exists; refusing to make a new CA (remove it to start over)" >&2
  exit 1
fi

openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
  -keyout "$out/ca.key" -out "$out/ca.pem" -days "$days_ca" -subj "/CN=Tandem sync CA" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null

for name in "$name_a" "$name_b"; do
  base=${name%%.*}
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$out/$base.key" -out "$out/$base.csr" -subj "/CN=$name" 2>/dev/null
  printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n' \
    "$name" > "$out/$base.ext"
  openssl x509 -req -in "$out/$base.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" \
    -CAcreateserial -out "$out/$base.pem" -days "$days_cert" -extfile "$out/$base.ext" 2>/dev/null
  rm -f "$out/$base.csr" "$out/$base.ext"
  openssl verify -CAfile "$out/ca.pem" "$out/$base.pem" >/dev/null
done
rm -f "$out/ca.srl"
chmod 0644 "$out/ca.pem" "$out"/*.pem
echo "made: $out/ca.pem $out/ca.key (keep offline)"
for name in "$name_a" "$name_b"; do
  base=${name%%.*}
  echo "      $out/$base.pem $out/$base.key  (SAN DNS:$name)"
done
