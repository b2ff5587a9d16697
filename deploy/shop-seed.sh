#!/bin/sh
# Creates the storefront's six products (the gateway shows SKUs starting with `shop-`) unless they exist:
# the same products as `cargo xtask up` seeds (xtask/src/stack/mod.rs, SHOP).
set -eu
seed() {
  sku=$1 name=$2 price=$3 stock=$4
  if curl -fsS -o /dev/null "http://inventory:8082/products/$sku"; then
    echo "$sku exists"
  else
    curl -fsS -o /dev/null -X PUT -H 'content-type: application/json' \
      -d "{\"name\":\"$name\",\"price_cents\":$price,\"stock\":$stock}" \
      "http://inventory:8082/products/$sku"
    echo "$sku seeded"
  fi
}
seed shop-hoodie "distlab hoodie" 5500 200
seed shop-mug "Two-phase mug" 1200 500
seed shop-notebook "Paxos notebook" 900 300
seed shop-poster "CAP poster" 1500 300
seed shop-stickers "Raft stickers" 300 2000
seed shop-tshirt "Eventually consistent T-shirt" 2500 400
