// Bundle the face viewer (express4d_hf/assets/viewer/src/viewer.js) with the parts of three.js it uses
// into one minified ES module that the Gradio app serves itself: no CDN, no import map at run time.
// `npm ci && npm run build` rewrites the bundle; `npm run check` fails when the committed bundle is stale.
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync, copyFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const viewerDir = join(here, '..', '..', 'express4d_hf', 'assets', 'viewer');
const outfile = join(viewerDir, 'express4d-viewer.min.js');
const threePackage = JSON.parse(readFileSync(join(here, 'node_modules', 'three', 'package.json'), 'utf8'));

const result = await build({
  entryPoints: [join(viewerDir, 'src', 'viewer.js')],
  bundle: true,
  nodePaths: [join(here, 'node_modules')], // the source lives in the package, its npm dependencies here
  format: 'esm',
  minify: true,
  target: ['es2020'],
  legalComments: 'eof', // keeps three.js' @license notice in the bundle
  banner: { js: `/* Express4D face viewer + three.js ${threePackage.version} (MIT, Copyright 2010-2026 Three.js Authors). Built by spaces/express4d/build-viewer.mjs. */` },
  write: false,
  logLevel: 'warning',
});
const code = result.outputFiles[0].contents;
const sha = createHash('sha256').update(code).digest('hex');

if (process.argv.includes('--check')) {
  let current = '';
  try { current = createHash('sha256').update(readFileSync(outfile)).digest('hex'); } catch {}
  if (current !== sha) {
    console.error(`${outfile} is stale: run \`npm run build\` in spaces/express4d`);
    process.exit(1);
  }
  console.log(`${outfile} is up to date (sha256 ${sha.slice(0, 16)})`);
} else {
  writeFileSync(outfile, code);
  copyFileSync(join(here, 'node_modules', 'three', 'LICENSE'), join(viewerDir, 'LICENSE.three.txt'));
  writeFileSync(join(viewerDir, 'BUILD.json'), JSON.stringify({
    bundle: 'express4d-viewer.min.js', sha256: sha, bytes: code.length,
    three: threePackage.version, esbuild: (await import('esbuild')).version,
  }, null, 2) + '\n');
  console.log(`wrote ${outfile} (${(code.length / 1024).toFixed(0)} KB, three ${threePackage.version})`);
}
