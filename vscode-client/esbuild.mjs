// Bundles src/extension.ts and vscode-languageclient into dist/extension.js (CommonJS, as
// VS Code loads it); `vscode` is provided by the editor at run time, so it stays external.
// `--production` minifies and drops the source map (the .vsix ships no maps); `--watch`
// rebuilds on change.
import * as esbuild from 'esbuild';

const production = process.argv.includes('--production');
const watch = process.argv.includes('--watch');

const options = {
  entryPoints: ['src/extension.ts'],
  bundle: true,
  outfile: 'dist/extension.js',
  external: ['vscode'],
  format: 'cjs',
  platform: 'node',
  target: 'node18',
  minify: production,
  sourcemap: !production,
  sourcesContent: false,
  logLevel: 'info',
};

if (watch) {
  const context = await esbuild.context(options);
  await context.watch();
} else {
  await esbuild.build(options);
}
