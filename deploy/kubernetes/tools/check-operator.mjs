// Validates ServiceMonitor and PrometheusRule objects for deploy/kubernetes/check with the
// JSON schemas of @kubernetes-models/prometheus-operator (generated from the operator's
// Go API types).
//
// usage: node check-operator.mjs NODE_MODULES FILE.json...   (each a JSON array of objects)
//
// Two passes per object: the package's public validate() (types, enums, patterns,
// required fields), then the same schema again through a Proxy that records every field
// the validator looks at. Those schemas allow unknown fields, but the API server rejects
// them (kubectl's default field validation is Strict), so a field the schema never looked
// at, usually a typo such as `intervall`, fails here too.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [modules, ...files] = process.argv.slice(2);
const pkg = join(modules, "@kubernetes-models/prometheus-operator");
const load = (path) => import(pathToFileURL(join(pkg, path)).href);
const schemaFile = (kind) =>
  `_schemas/ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1${kind}.js`;
const kinds = {};
for (const kind of ["ServiceMonitor", "PrometheusRule"]) {
  const model = (await load(`monitoring.coreos.com/v1/${kind}.js`))[kind];
  const { validate } = await load(schemaFile(kind));
  kinds[kind] = { model, validate };
}

// Wraps `value` so that reading a field (at any depth) adds its path to `seen`.
function watched(value, path, seen) {
  if (value === null || typeof value !== "object") return value;
  return new Proxy(value, {
    get(target, key, receiver) {
      const child = Reflect.get(target, key, receiver);
      if (typeof key !== "string" || !Object.hasOwn(target, key)) return child;
      seen.add(`${path}/${key}`);
      return watched(child, `${path}/${key}`, seen);
    },
  });
}

function* fields(value, path) {
  if (value === null || typeof value !== "object") return;
  for (const [key, child] of Object.entries(value)) {
    yield `${path}/${key}`;
    yield* fields(child, `${path}/${key}`);
  }
}

let failed = 0;
for (const file of files) {
  for (const object of JSON.parse(readFileSync(file, "utf8"))) {
    const what = `${file.replace(/.*\//, "")}: ${object.kind}/${object.metadata?.name}`;
    const kind = kinds[object.kind];
    if (!kind || object.apiVersion !== "monitoring.coreos.com/v1") {
      console.log(`  FAIL ${what}: no schema for ${object.apiVersion} ${object.kind}`);
      failed++;
      continue;
    }
    try {
      new kind.model(object).validate();
    } catch (error) {
      console.log(`  FAIL ${what}: ${error.message}`);
      failed++;
      continue;
    }
    const seen = new Set();
    kind.validate(watched(object, "", seen));
    const all = [...fields(object, "")];
    const unknown = all.filter((path) => !seen.has(path));
    // Name an unknown field once, not each field below it too.
    const top = unknown.filter((path) => !unknown.includes(path.replace(/\/[^/]*$/, "")));
    if (top.length) {
      console.log(`  FAIL ${what}: fields the schema does not know: ${top.join(", ")}`);
      failed++;
      continue;
    }
    console.log(`  ok ${what} (${all.length} fields)`);
  }
}
process.exit(failed ? 1 : 0);
