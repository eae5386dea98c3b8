// Validates Kubernetes manifests against the Kubernetes OpenAPI schemas with the npm package
// kubernetes-models. Usage: node validate_k8s.mjs MODULES_DIR FILE_OR_DIR...
// MODULES_DIR holds node_modules/ with kubernetes-models and js-yaml (scripts/setup-k8s-validator.sh).
// Every document of every *.yaml, *.yml and *.json file is checked, except kustomization files;
// prints one line per object and exits 1 if any object is invalid or of an unknown kind.
import fs from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { pathToFileURL } from "node:url";

const [modulesDir, ...inputs] = process.argv.slice(2);
if (!modulesDir || inputs.length === 0) {
  console.error("usage: node validate_k8s.mjs MODULES_DIR FILE_OR_DIR...");
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(modulesDir), "package.json"));
const yaml = require("js-yaml");
const modelsRoot = path.join(path.resolve(modulesDir), "node_modules", "kubernetes-models");

function files(input) {
  if (fs.statSync(input).isDirectory()) {
    return fs.readdirSync(input).sort().flatMap((f) => files(path.join(input, f)));
  }
  return /\.(ya?ml|json)$/.test(input) && !/kustomization\.ya?ml$/.test(input) ? [input] : [];
}

let objects = 0;
let failures = 0;
for (const file of inputs.flatMap(files)) {
  const text = fs.readFileSync(file, "utf8");
  const docs = file.endsWith(".json") ? [JSON.parse(text)] : yaml.loadAll(text).filter((d) => d != null);
  for (const doc of docs) {
    objects++;
    const where = `${file}: ${doc.kind}/${doc.metadata && doc.metadata.name}`;
    const module = path.join(modelsRoot, ...String(doc.apiVersion).split("/"), `${doc.kind}.js`);
    if (!doc.apiVersion || !doc.kind || !fs.existsSync(module)) {
      console.log(`INVALID ${where}: unknown apiVersion/kind ${doc.apiVersion}/${doc.kind}`);
      failures++;
      continue;
    }
    const Model = (await import(pathToFileURL(module).href))[doc.kind];
    try {
      new Model(doc).validate();
      console.log(`ok ${where}`);
    } catch (e) {
      console.log(`INVALID ${where}: ${e.message}`);
      failures++;
    }
  }
}
console.log(`${objects} object(s), ${failures} invalid`);
process.exit(failures === 0 && objects > 0 ? 0 : 1);
