"""The generated ES module beside a web model: model.js (load, predict, fromImage, with the model's inputs,
outputs and preprocessing baked in), model.d.ts (TypeScript declarations for exactly this model) and package.json
(so the folder installs with npm and imports by name). `write_web_module` is the entry point."""

from bridge.webmodule.writer import MODULE_FILES, write_web_module

__all__ = ["MODULE_FILES", "write_web_module"]
