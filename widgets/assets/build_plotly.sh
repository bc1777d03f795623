#!/usr/bin/env bash
# Rebuild widgets/assets/plotly-workbench-<version>.min.js: a partial plotly.js bundle of the trace types the
# dashboard draws (widgets/plotly_bundle.py: TRACES, PLOTLY_VERSION), built with plotly.js's own esbuild config
# from its npm package. Needs node and npm; run from anywhere: bash widgets/assets/build_plotly.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
read -r version traces < <(cd "$root" && python -c \
  "from widgets.plotly_bundle import PLOTLY_VERSION as v, TRACES as t; print(v, ','.join(t))")
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm init -y >/dev/null
npm install --no-audit --no-fund --silent "plotly.js@$version" esbuild@0.25 esbuild-plugin-glsl@1 \
  esbuild-plugin-environment@0.4 esbuild-style-plugin@1 stream-browserify@3 sass@1
{
  echo "var Plotly = require('plotly.js/lib/core');"
  echo "Plotly.register(["
  for t in ${traces//,/ }; do [ "$t" = scatter ] || echo "  require('plotly.js/lib/$t'),"; done
  echo "]);"
  echo "module.exports = Plotly;"
} > entry.js
cat > build.js <<JS
const esbuild = require('esbuild');
const cfg = require('./node_modules/plotly.js/esbuild-config.js');
esbuild.build({...cfg, entryPoints: ['./entry.js'], minify: true, logLevel: 'warning',
  outfile: '$here/plotly-workbench-$version.min.js',
  banner: {js: '/*! plotly.js $version (MIT License, Copyright (c) 2021 Plotly, Inc.): a partial bundle with the '
    + 'traces $traces, built by widgets/assets/build_plotly.sh for the workbench dashboard */'}})
  .catch(() => process.exit(1));
JS
node build.js
rm -f "$here/plotly-workbench-$version.min.css"     # maplibre-gl's CSS, imported by the core: no map trace is bundled
cp node_modules/plotly.js/LICENSE "$here/plotly.js-LICENSE"
echo "built $here/plotly-workbench-$version.min.js ($traces)"
