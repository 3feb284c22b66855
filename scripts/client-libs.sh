#!/usr/bin/env bash
# Installs the current releases of the popular Redis clients for Python
# (redis-py) and Node (node-redis, ioredis) into target/client-libs, where
# tests/cache_server.rs finds them and drives cache_server with each one's
# default settings, and Python's portpicker, which tests/portserver.rs
# points at the portserver. Nothing is installed system-wide.
#
#   bash scripts/client-libs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
dest=target/client-libs
mkdir -p "$dest"
if command -v python3 >/dev/null 2>&1; then
  PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --upgrade --target "$dest/python" redis portpicker
  python3 -c "import sys; sys.path.insert(0, '$dest/python'); import redis; print('redis-py', redis.__version__)"
  python3 -c "import sys; sys.path.insert(0, '$dest/python'); import portpicker; print('portpicker', getattr(portpicker, '__version__', 'installed'))"
else
  echo "note: no python3, so redis-py is not installed"
fi
if command -v npm >/dev/null 2>&1; then
  mkdir -p "$dest/node"
  npm install --silent --no-audit --no-fund --prefix "$dest/node" redis@latest ioredis@latest >/dev/null
  for p in redis ioredis; do
    printf '%s %s\n' "$p" "$(node -p "require('./$dest/node/node_modules/$p/package.json').version")"
  done
else
  echo "note: no npm, so node-redis and ioredis are not installed"
fi
