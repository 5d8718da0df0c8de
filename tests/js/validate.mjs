// The second validator: ajv (draft-04, from npm) over the schema folder alone.
//
//   node tests/js/validate.mjs SCHEMAS_DIR SAMPLES_DIR
//
// Loads every SCHEMAS_DIR/*.json with addSchema (each is known by its `id`, its file
// name; `$ref`s name sibling files), then validates every sample of every
// SAMPLES_DIR/<name>.json (a list of {"description", "data", "valid", ...}) against the
// schema with id <name>.json. Prints one JSON object on stdout:
//   {"<name>": [{"valid": bool, "errors": [{"instancePath", "schemaPath", "keyword"}]}, ...]}
// in sample order. Exits 2 on a schema that does not load or compile.
import fs from "node:fs";
import path from "node:path";
import Ajv from "ajv-draft-04";
import addFormats from "ajv-formats";

const [schemasDir, samplesDir] = process.argv.slice(2);
if (!schemasDir || !samplesDir) {
  process.stderr.write("usage: node validate.mjs SCHEMAS_DIR SAMPLES_DIR\n");
  process.exit(2);
}

const jsonFiles = (dir) => fs.readdirSync(dir).filter((name) => name.endsWith(".json")).sort();
const readJson = (file) => JSON.parse(fs.readFileSync(file, "utf8"));

// strict: also reject schemas with unknown keywords or formats and ambiguous types.
const ajv = new Ajv({ allErrors: true, strict: true });
addFormats(ajv);

try {
  for (const file of jsonFiles(schemasDir)) {
    ajv.addSchema(readJson(path.join(schemasDir, file)));
  }
  for (const file of jsonFiles(schemasDir)) {
    ajv.getSchema(file); // compile now: unresolved `$ref`s fail here
  }
} catch (error) {
  process.stderr.write(`schema error: ${error.message}\n`);
  process.exit(2);
}

const results = {};
for (const file of jsonFiles(samplesDir)) {
  const validate = ajv.getSchema(file);
  if (!validate) {
    process.stderr.write(`no schema with id ${file} for ${path.join(samplesDir, file)}\n`);
    process.exit(2);
  }
  results[file.slice(0, -".json".length)] = readJson(path.join(samplesDir, file)).map((sample) => {
    const valid = validate(sample.data);
    const errors = (validate.errors || []).map(({ instancePath, schemaPath, keyword }) => ({
      instancePath, schemaPath, keyword,
    }));
    return { valid, errors };
  });
}
process.stdout.write(JSON.stringify(results) + "\n");
