// Typeset LaTeX with KaTeX: reads a JSON list of strings on stdin, prints a JSON list of errors (null = fine).
// Used by tests/test_display.py, which puts a KaTeX install on NODE_PATH.
const katex = require("katex");

let input = "";
process.stdin.on("data", (chunk) => { input += chunk; });
process.stdin.on("end", () => {
  const errors = JSON.parse(input).map((latex) => {
    try {
      katex.renderToString(latex, { displayMode: true, throwOnError: true, strict: "error" });
      return null;
    } catch (error) {
      return String(error.message || error);
    }
  });
  process.stdout.write(JSON.stringify(errors));
});
