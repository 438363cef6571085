#!/usr/bin/env bash
# Builds the dashboard's plotly.js bundle, autotune/dashboard/static/plotly-dashboard.min.js:
# plotly.js's core (scatter) with bar, heatmap and contour, the traces autotune.plots draws, and
# nothing else. Reproducible: plotly.js and esbuild at the exact versions of
# scripts/plotly_bundle/package.json, every other package as scripts/plotly_bundle/package-lock.json
# pins it (npm ci checks their hashes), built in a temporary directory. Needs node and npm (the
# npm registry); prints the bundle's sha256 for autotune/dashboard/static/README.md.
#
# To move to another plotly.js (the version inside the installed Python plotly package: the
# first line of plotly/package_data/plotly.min.js), change it in package.json, run
# `npm install --package-lock-only --ignore-scripts` in scripts/plotly_bundle, then this script.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=scripts/plotly_bundle
OUT=autotune/dashboard/static
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cp "$SRC/package.json" "$SRC/package-lock.json" "$SRC/entry.js" "$WORK/"
# --ignore-scripts: no package's install script runs; the build is esbuild's alone.
(cd "$WORK" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
VERSION=$(node -p "require('$WORK/node_modules/plotly.js/package.json').version")
BANNER="/**
* plotly.js (autotune dashboard: scatter, bar, heatmap, contour - minified) v$VERSION
* Copyright 2012-2026, Plotly, Inc.
* All rights reserved.
* Licensed under the MIT license
* Built by scripts/build_plotly_bundle.sh from the npm package plotly.js@$VERSION
*/"
# The options of plotly.js's own esbuild-config.js (its style sheet is a JS module; maplibre's,
# which only map traces load, is left out), minified, as one script defining window.Plotly.
(cd "$WORK" && node_modules/.bin/esbuild entry.js --bundle --minify --format=iife \
  --global-name=Plotly --target=es2016 --define:global=window --define:define.amd=false \
  --alias:stream=stream-browserify --alias:regl=@plotly/regl --loader:.css=empty \
  --legal-comments=eof --banner:js="$BANNER" --log-level=warning \
  --outfile=plotly-dashboard.min.js)
cp "$WORK/plotly-dashboard.min.js" "$OUT/plotly-dashboard.min.js"
cp "$WORK/node_modules/plotly.js/LICENSE" "$OUT/plotly-dashboard.LICENSE"
echo "plotly.js $VERSION: $OUT/plotly-dashboard.min.js ($(wc -c <"$OUT/plotly-dashboard.min.js") bytes)"
sha256sum "$OUT/plotly-dashboard.min.js"
