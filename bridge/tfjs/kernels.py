"""The per-backend kernel check: every op of a written graph model against the kernels each installed TF.js backend
registers, before any runtime runs the model.

Two facts are read from the installed npm packages (bridge/js/node_modules, or $BRIDGE_NODE_MODULES), never from a
table written by hand:

- the kernels each backend registers (cpu, webgl, wasm, webgpu when installed): a small Node script imports each
  backend package and lists ``getKernelsForBackend(name)``; registration happens when the package is imported, so
  this works in Node for the browser backends too;
- the kernels each TF op needs: the converter's op mapper lists the TF ops it maps (``op_list/*.js``, the modules
  ``operation_mapper.js`` imports) with their category; the category's executor (``executors/*_executor.js``) runs
  one ``case 'Op':`` branch per op, calling tfjs-core ops; each op reaches kernels through
  ``ENGINE.runKernel(KernelName, ...)``, directly or through other ops. The sources are the packages' ES module
  builds, read by a small JavaScript scanner (tokens, imports, exports, top-level declarations) and followed
  transitively. Gradient-only code is left out: ``grad``/``gradFunc`` functions and the unfused fallback of the
  fused ops, which runs only while gradients are recorded (its condition reads ``gradientDepth``).

The result is an upper bound of the kernels an op may reach (every branch of its code counts), which is what a
check before running wants: a kernel it names as missing is one the op's code can call. Both facts are cached per
installed package versions in ``node_modules/.cache/bridge/`` (and in memory).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import subprocess
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from bridge.errors import MissingDependencyError, RuntimeStageError, WebModelError

STAGE = "kernels"
BACKENDS = ("cpu", "webgl", "wasm", "webgpu")
CORE = "@tensorflow/tfjs-core"
CONVERTER = "@tensorflow/tfjs-converter"
CACHE_FORMAT = 2
NODE_TIMEOUT_S = 60.0
# The converter's modules holding the objects control-flow and hash-table ops keep between nodes.
RESOURCE_MODULES = ("tensor_array", "tensor_list", "hash_table")

# Imports each installed backend package and prints {backend: [kernel names]} (argv: node_modules, backends...).
_LIST_KERNELS_JS = r"""
const { createRequire } = require('node:module');
const path = require('node:path');
const [modules, ...backends] = process.argv.slice(1);
const req = createRequire(path.join(modules, '_bridge_kernels.js'));
const core = req('@tensorflow/tfjs-core');
const found = {};
for (const name of backends) {
  req(`@tensorflow/tfjs-backend-${name}`);
  found[name] = core.getKernelsForBackend(name).map((k) => k.kernelName).sort();
}
process.stdout.write(JSON.stringify(found));
"""


# ---------------------------------------------------------------------------------------------------- report

@dataclass(frozen=True)
class MissingKernel:
    """One graph op a backend cannot run: the kernels it needs that the backend lacks, and the nodes using it."""

    op: str
    kernels: tuple[str, ...]
    nodes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json."""
        return {"op": self.op, "missingKernels": list(self.kernels), "nodes": list(self.nodes)}


@dataclass(frozen=True)
class BackendKernels:
    """One installed backend: its package version, how many kernels it registers, the graph ops it cannot run."""

    name: str
    version: str
    registered: int
    missing: tuple[MissingKernel, ...]

    @property
    def ok(self) -> bool:
        """True when the backend registers every kernel the graph's ops need."""
        return not self.missing

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json."""
        return {"name": self.name, "version": self.version, "registeredKernels": self.registered, "ok": self.ok,
                "missing": [m.to_dict() for m in self.missing]}


@dataclass(frozen=True)
class KernelReport:
    """The kernel check of one graph model.

    `ops` maps each op type of the graph (main graph and library functions) to the kernels it needs; `unmapped`
    lists op types the TF.js converter has no executor for (no backend can run them); `backends` holds one entry
    per installed backend, in BACKENDS order; `not_installed` names the backends whose package is absent.
    """

    model: str
    ops: dict[str, tuple[str, ...]]
    unmapped: dict[str, tuple[str, ...]]
    backends: tuple[BackendKernels, ...]
    not_installed: tuple[str, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when every op is mapped and every installed backend has every kernel."""
        return not self.unmapped and all(b.ok for b in self.backends)

    def missing(self, backend: str) -> tuple[MissingKernel, ...]:
        """The findings for `backend` (empty when it has every kernel or is not installed)."""
        return next((b.missing for b in self.backends if b.name == backend), ())

    def findings(self) -> list[str]:
        """One line per problem: an op no backend can run, or a backend lacking kernels for an op."""
        lines = [f"no TF.js executor for op {op} ({_nodes_text(nodes)})" for op, nodes in self.unmapped.items()]
        for backend in self.backends:
            lines += [f"{backend.name} lacks kernel(s) {', '.join(m.kernels)} for op {m.op} ({_nodes_text(m.nodes)})"
                      for m in backend.missing]
        return lines

    def summary(self) -> str:
        """One line for the terminal and the report."""
        names = ", ".join(b.name for b in self.backends) or "no backend"
        if self.ok:
            return f"kernels: {names} register every kernel for the {len(self.ops)} op type(s)"
        parts = [f"{len(self.unmapped)} op type(s) without a TF.js executor ({', '.join(self.unmapped)})"] \
            if self.unmapped else []
        parts += [f"{b.name} lacks {', '.join(sorted({k for m in b.missing for k in m.kernels}))} "
                  f"(op {', '.join(m.op for m in b.missing)})" for b in self.backends if not b.ok]
        return "kernels: " + "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for report.json and `bridge inspect --json`."""
        return {"model": self.model, "ok": self.ok, "summary": self.summary(),
                "ops": {op: list(k) for op, k in self.ops.items()},
                "unmapped": {op: list(nodes) for op, nodes in self.unmapped.items()},
                "backends": [b.to_dict() for b in self.backends], "notInstalled": list(self.not_installed),
                "versions": dict(self.versions), "findings": self.findings()}


def _nodes_text(nodes: Sequence[str], shown: int = 3) -> str:
    listed = ", ".join(nodes[:shown]) + (", ..." if len(nodes) > shown else "")
    return f"{len(nodes)} node(s): {listed}"


# ---------------------------------------------------------------------------------------------------- entry point

def check_kernels(web_model_dir: Path | str, *, node_modules: Path | None = None,
                  backends: Sequence[str] = BACKENDS) -> KernelReport:
    """Check every op of the graph model in `web_model_dir` (a folder holding model.json, or model.json itself)
    against the kernels each installed TF.js backend in `backends` registers.

    `node_modules` defaults to bridge's pinned packages (``bridge.runtime.node.node_modules_dir()``). Raises
    `WebModelError` for an unreadable or non-graph model.json and `MissingDependencyError` when Node or the
    TF.js packages are missing; a backend whose package is not installed is listed in `not_installed`.
    """
    model_json_path = _model_json_path(Path(web_model_dir))
    model_json = _read_model_json(model_json_path)
    graph_ops = graph_op_nodes(model_json)
    complex_dtype = uses_complex(model_json)
    modules = _modules_dir(node_modules)
    facts = installed_kernel_facts(modules, tuple(backends))
    op_kernels: dict[str, tuple[str, ...]] = {}
    unmapped: dict[str, tuple[str, ...]] = {}
    for op, nodes in graph_ops.items():
        if op in facts.op_kernels:
            op_kernels[op] = facts.kernels_for(op, complex_dtype)
        else:
            unmapped[op] = nodes
    results = []
    for name in (b for b in backends if b in facts.registered):
        registered = facts.registered[name]
        missing = [MissingKernel(op, tuple(k for k in kernels if k not in registered), graph_ops[op])
                   for op, kernels in op_kernels.items() if any(k not in registered for k in kernels)]
        results.append(BackendKernels(name, facts.versions[f"@tensorflow/tfjs-backend-{name}"], len(registered),
                                      tuple(missing)))
    return KernelReport(model=str(model_json_path), ops=op_kernels, unmapped=unmapped, backends=tuple(results),
                        not_installed=tuple(b for b in backends if b not in facts.registered),
                        versions=dict(facts.versions))


def _model_json_path(path: Path) -> Path:
    return path if path.suffix == ".json" and not path.is_dir() else path / "model.json"


def _read_model_json(path: Path) -> dict[str, Any]:
    try:
        model = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WebModelError(f"cannot read {path}: {exc}", stage=STAGE,
                            hint="pass the web model folder holding model.json") from exc
    if not isinstance(model, dict) or model.get("format", "graph-model") != "graph-model" \
            or not isinstance(model.get("modelTopology"), dict):
        raise WebModelError(f"{path} is not a TF.js graph model", stage=STAGE,
                            hint="the kernel check reads graph models (tf.loadGraphModel), as bridge writes them")
    return model


def graph_op_nodes(model_json: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
    """Op type -> the node names using it, over the main graph and its library functions (``function/node``),
    sorted by op type."""
    topology = model_json.get("modelTopology") or {}
    found: dict[str, list[str]] = {}
    for node in topology.get("node") or []:
        found.setdefault(str(node.get("op")), []).append(str(node.get("name")))
    for function in (topology.get("library") or {}).get("function") or []:
        scope = (function.get("signature") or {}).get("name", "function")
        for node in function.get("nodeDef") or []:
            found.setdefault(str(node.get("op")), []).append(f"{scope}/{node.get('name')}")
    return {op: tuple(names) for op, names in sorted(found.items())}


def uses_complex(model_json: Mapping[str, Any]) -> bool:
    """Whether any node attribute or signature entry of the graph names the complex64 dtype."""
    text = json.dumps([model_json.get("modelTopology"), model_json.get("signature")])
    return "DT_COMPLEX64" in text


def _modules_dir(node_modules: Path | None) -> Path:
    if node_modules is not None:
        return Path(node_modules).resolve()
    from bridge.runtime.node import node_modules_dir

    return node_modules_dir()


# ---------------------------------------------------------------------------------------------------- facts + cache

@dataclass(frozen=True)
class KernelFacts:
    """What the installed packages say: TF op -> kernels it needs (`complex_kernels`: the extra ones complex64
    tensors reach), backend -> kernels it registers, package versions."""

    op_kernels: dict[str, tuple[str, ...]]
    complex_kernels: dict[str, tuple[str, ...]]
    registered: dict[str, frozenset[str]]
    versions: dict[str, str]

    def kernels_for(self, op: str, complex_dtype: bool) -> tuple[str, ...]:
        """The kernels `op` needs; with `complex_dtype`, those of its complex64 branches too."""
        extra = self.complex_kernels.get(op, ()) if complex_dtype else ()
        return tuple(sorted({*self.op_kernels[op], *extra}))


def installed_kernel_facts(node_modules: Path, backends: tuple[str, ...] = BACKENDS) -> KernelFacts:
    """The op -> kernel map and each installed backend's kernels, read once per installed package versions."""
    versions = _versions(node_modules, backends)
    if CORE not in versions or CONVERTER not in versions:
        from bridge.runtime.node import SETUP_HINT

        raise MissingDependencyError(f"TF.js is not installed in {node_modules} (need {CORE} and {CONVERTER})",
                                     stage=STAGE, hint=SETUP_HINT)
    return _facts(str(node_modules), tuple(sorted(versions.items())),
                  tuple(b for b in backends if f"@tensorflow/tfjs-backend-{b}" in versions))


def _versions(node_modules: Path, backends: Iterable[str]) -> dict[str, str]:
    found = {}
    for package in (CORE, CONVERTER, *(f"@tensorflow/tfjs-backend-{b}" for b in backends)):
        try:
            found[package] = str(json.loads((node_modules / package / "package.json").read_text())["version"])
        except (OSError, ValueError, KeyError):
            continue
    return found


@lru_cache(maxsize=8)
def _facts(node_modules: str, versions: tuple[tuple[str, str], ...], backends: tuple[str, ...]) -> KernelFacts:
    modules = Path(node_modules)
    cache = modules / ".cache" / "bridge" / f"kernels-{_cache_key(node_modules, versions, backends)}.json"
    data = _read_cache(cache)
    if data is None:
        graph = ModuleGraph()
        plain = derive_op_kernels(modules, graph=graph)
        with_complex = derive_op_kernels(modules, complex_dtype=True, graph=graph)
        data = {"format": CACHE_FORMAT, "versions": dict(versions), "opKernels": plain,
                "complexKernels": {op: sorted(set(k) - set(plain[op])) for op, k in with_complex.items()
                                   if set(k) - set(plain[op])},
                "registered": registered_kernels(modules, backends)}
        _write_cache(cache, data)
    return KernelFacts(op_kernels={op: tuple(k) for op, k in data["opKernels"].items()},
                       complex_kernels={op: tuple(k) for op, k in data.get("complexKernels", {}).items()},
                       registered={b: frozenset(k) for b, k in data["registered"].items()},
                       versions=dict(data["versions"]))


def _cache_key(node_modules: str, versions: tuple[tuple[str, str], ...], backends: tuple[str, ...]) -> str:
    text = json.dumps([CACHE_FORMAT, node_modules, versions, backends])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_cache(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and data.get("format") == CACHE_FORMAT and isinstance(data.get("opKernels"), dict) \
        and isinstance(data.get("registered"), dict)
    return data if ok else None


def _write_cache(path: Path, data: Mapping[str, Any]) -> None:
    """Best effort: a read-only node_modules only costs the derivation again next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        partial.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
        partial.replace(path)
    except OSError:
        pass


def registered_kernels(node_modules: Path, backends: Sequence[str]) -> dict[str, list[str]]:
    """backend -> the kernel names it registers, from a Node process importing each backend package."""
    from bridge.runtime.node import NODE_HINT, node_executable

    node = node_executable()
    if node is None:
        raise MissingDependencyError("Node.js is needed to list the kernels of the TF.js backends", stage=STAGE,
                                     hint=NODE_HINT)
    try:
        done = subprocess.run([node, "-e", _LIST_KERNELS_JS, str(node_modules), *backends], check=False,
                              capture_output=True, text=True, timeout=NODE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeStageError(f"listing the TF.js kernels failed: {exc}", stage=STAGE) from exc
    if done.returncode != 0:
        raise RuntimeStageError("listing the TF.js kernels failed", stage=STAGE,
                                details=done.stderr.strip().splitlines()[-5:])
    found = json.loads(done.stdout)
    return {name: list(found[name]) for name in backends}


# ---------------------------------------------------------------------------------------------------- JS scanner

@dataclass(frozen=True)
class Token:
    """One JavaScript token: kind ``id``, ``str`` (value without quotes), ``num``, ``p`` (punctuator), ``tpl``
    (a whole template literal) or ``re`` (a regular expression literal)."""

    kind: str
    value: str


_SPACE = re.compile(r"\s+|//[^\n]*|/\*.*?\*/", re.DOTALL)
_IDENT = re.compile(r"[A-Za-z_$][\w$]*")
_NUMBER = re.compile(r"\d[\w.]*|\.\d[\w]*")
_STRING = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"", re.DOTALL)
_PUNCT = re.compile(r">>>=|\.\.\.|===|!==|\*\*=|<<=|>>=|>>>|=>|==|!=|<=|>=|&&|\|\||\?\?|\?\.|\+\+|--|[-+*/%&|^]=|"
                    r"<<|>>|\*\*|[{}()\[\];,.:?=<>!+\-*/%&|^~@#]")
# After these a '/' starts a regular expression, not a division.
_REGEX_AFTER = set("( , = : [ ! & | ? { } ; + - * % < > ~ ^ => == === != !== && || ?? return typeof case do else "
                   "in of new delete void throw".split())


def tokenize(source: str) -> list[Token]:
    """The tokens of a JavaScript module; comments and whitespace dropped."""
    tokens: list[Token] = []
    i, n = 0, len(source)
    while i < n:
        space = _SPACE.match(source, i)
        if space:
            i = space.end()
            continue
        ch = source[i]
        if ch == "`":
            end = _template_end(source, i)
            tokens.append(Token("tpl", source[i:end]))
            i = end
        elif ch in "'\"":
            match = _STRING.match(source, i)
            end = match.end() if match else n
            tokens.append(Token("str", source[i + 1:end - 1]))
            i = end
        elif ch == "/" and (not tokens or tokens[-1].value in _REGEX_AFTER and tokens[-1].kind in ("p", "id")):
            end = _regex_end(source, i)
            tokens.append(Token("re", source[i:end]))
            i = end
        elif match := _IDENT.match(source, i):
            tokens.append(Token("id", match.group()))
            i = match.end()
        elif match := _NUMBER.match(source, i):
            tokens.append(Token("num", match.group()))
            i = match.end()
        elif match := _PUNCT.match(source, i):
            tokens.append(Token("p", match.group()))
            i = match.end()
        else:
            i += 1  # a character no rule covers (e.g. a BOM): skipped
    return tokens


def _template_end(source: str, start: int) -> int:
    """The index after the template literal opening at `start`, skipping its ``${...}`` expressions."""
    i = start + 1
    while i < len(source):
        ch = source[i]
        if ch == "\\":
            i += 2
        elif ch == "`":
            return i + 1
        elif source.startswith("${", i):
            i = _expression_end(source, i + 2)
        else:
            i += 1
    return len(source)


def _expression_end(source: str, i: int) -> int:
    """The index after the '}' closing a template expression that starts at `i`."""
    depth = 1
    while i < len(source) and depth:
        ch = source[i]
        if ch in "'\"":
            match = _STRING.match(source, i)
            i = match.end() if match else i + 1
            continue
        if ch == "`":
            i = _template_end(source, i)
            continue
        depth += {"{": 1, "}": -1}.get(ch, 0)
        i += 1
    return i


def _regex_end(source: str, start: int) -> int:
    i, in_class = start + 1, False
    while i < len(source) and source[i] != "\n":
        ch = source[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        elif ch == "/" and not in_class:
            i += 1
            while i < len(source) and (source[i].isalnum() or source[i] in "_$"):
                i += 1
            return i
        i += 1
    return i


_OPEN, _CLOSE = {"(": ")", "[": "]", "{": "}"}, {")", "]", "}"}


def matching(tokens: Sequence[Token], i: int) -> int:
    """The index of the bracket closing the one at `i`."""
    depth = 0
    for j in range(i, len(tokens)):
        token = tokens[j]
        if token.kind == "p" and token.value in _OPEN:
            depth += 1
        elif token.kind == "p" and token.value in _CLOSE:
            depth -= 1
            if depth == 0:
                return j
    return len(tokens) - 1


def _statement_end(tokens: Sequence[Token], i: int) -> int:
    """The index of the ';' ending the statement starting at `i` (or of its last token)."""
    j = i
    while j < len(tokens):
        token = tokens[j]
        if token.kind == "p" and token.value in _OPEN:
            j = matching(tokens, j) + 1
            continue
        if token.kind == "p" and token.value == ";":
            return j
        if token.kind == "p" and token.value in _CLOSE:
            return j - 1
        if j > i and token.kind == "id" and token.value in ("export", "import") and tokens[j - 1].value != "." \
                and (j + 1 >= len(tokens) or tokens[j + 1].value not in ("(", ".")):
            return j - 1  # a statement without ';' (ASI) before the next import/export
        j += 1
    return len(tokens) - 1


# ---------------------------------------------------------------------------------------------------- JS modules

@dataclass
class Module:
    """What the scanner needs of one ES module: its tokens, imports, exports and top-level declarations.

    `imports`: local name -> (resolved file or None, imported name or ``*``). `exports`: exported name ->
    (file or None for this module, name there or ``*``). `decls`: top-level name -> token span (start, end).
    `strings`: top-level ``const NAME = 'text'``. `objects`: top-level ``const NAME = {key: ident, ...}``.
    `methods`: method name -> the ``Class.method`` declarations of the module's classes.
    """

    path: Path
    tokens: list[Token]
    imports: dict[str, tuple[Path | None, str]] = field(default_factory=dict)
    exports: dict[str, tuple[Path | None, str]] = field(default_factory=dict)
    star_exports: list[Path] = field(default_factory=list)
    decls: dict[str, tuple[int, int]] = field(default_factory=dict)
    strings: dict[str, str] = field(default_factory=dict)
    objects: dict[str, dict[str, str]] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)
    methods: dict[str, list[str]] = field(default_factory=dict)


def _strip_source_map(text: str) -> str:
    return re.sub(r"^//# sourceMappingURL=.*$", "", text, flags=re.MULTILINE)


def resolve_specifier(spec: str, importer: Path) -> Path | None:
    """The file an import specifier names: relative paths (``./x`` -> x.js or x/index.js) and packages in the
    nearest node_modules (a package's ``module`` entry, else ``main``); None for anything else (node: builtins)."""
    if spec.startswith("."):
        return _file_for(importer.parent / spec)
    if spec.startswith("node:") or not re.match(r"^(@[\w.-]+/)?[\w.-]+", spec):
        return None
    parts = spec.split("/")
    package, rest = ("/".join(parts[:2]), parts[2:]) if spec.startswith("@") else (parts[0], parts[1:])
    for folder in (importer.parent, *importer.parents):
        root = folder / "node_modules" / package
        if root.is_dir():
            return _file_for(root / "/".join(rest)) if rest else _package_entry(root)
    return None


def _file_for(base: Path) -> Path | None:
    for candidate in (base.with_name(base.name + ".js"), base / "index.js", base):
        if candidate.is_file():
            return candidate.resolve()
    return None


def _package_entry(root: Path) -> Path | None:
    try:
        meta = json.loads((root / "package.json").read_text())
    except (OSError, ValueError):
        return None
    for key in ("module", "main"):
        if isinstance(meta.get(key), str) and (found := _file_for(root / meta[key])):
            return found
    return None


class ModuleGraph:
    """Parsed modules by path (each file read once), and name resolution across imports and re-exports."""

    def __init__(self) -> None:
        self._modules: dict[Path, Module] = {}

    def module(self, path: Path) -> Module:
        """The parsed module at `path`."""
        path = path.resolve()
        if path not in self._modules:
            self._modules[path] = parse_module(path)
        return self._modules[path]

    def resolve(self, path: Path, name: str, seen: frozenset[tuple[Path, str]] = frozenset()
                ) -> tuple[Path, str] | None:
        """Where the top-level name `name` of module `path` is defined: (module, local name) or (module, ``*``)
        for a namespace; None when it is not found or lies outside the readable modules."""
        if (path, name) in seen:
            return None
        seen = seen | {(path, name)}
        module = self.module(path)
        if name in module.aliases:
            return self.resolve(path, module.aliases[name], seen)
        if name in module.decls or name in module.strings or name in module.objects:
            return path, name
        if name in module.imports:
            source, imported = module.imports[name]
            if source is None:
                return None
            return (source, "*") if imported == "*" else self.resolve_export(source, imported, seen)
        return None

    def resolve_export(self, path: Path, name: str, seen: frozenset[tuple[Path, str]] = frozenset()
                       ) -> tuple[Path, str] | None:
        """Where the exported name `name` of module `path` is defined (following ``export ... from`` chains)."""
        module = self.module(path)
        if name in module.exports:
            source, local = module.exports[name]
            if source is None:
                return self.resolve(path, local, seen)
            return (source, "*") if local == "*" else self.resolve_export(source, local, seen | {(path, name)})
        if name in module.decls or name in module.strings or name in module.objects:
            return path, name
        for star in module.star_exports:
            if (path, f"*{star}") in seen:
                continue
            found = self.resolve_export(star, name, seen | {(path, f"*{star}")})
            if found is not None:
                return found
        return None

    def member(self, target: tuple[Path, str], name: str) -> tuple[Path, str] | None:
        """``target.name`` where target is a namespace (``import * as``) or an object-literal constant."""
        path, local = target
        if local == "*":
            return self.resolve_export(path, name)
        props = self.module(path).objects.get(local)
        if props is not None and name in props:
            return self.resolve(path, props[name])
        return None


def parse_module(path: Path) -> Module:
    """Read and scan the ES module at `path`."""
    module = Module(path=path, tokens=tokenize(_strip_source_map(path.read_text(encoding="utf-8"))))
    tokens = module.tokens
    i = 0
    while i < len(tokens):
        i = _top_level(module, tokens, i) + 1
    _find_aliases(module)
    return module


def _top_level(module: Module, tokens: list[Token], i: int) -> int:
    """Record the top-level statement starting at `i`; returns the index of its last token."""
    token = tokens[i]
    if token.kind == "id" and token.value == "import" and i + 1 < len(tokens) and tokens[i + 1].value != "(":
        end = _statement_end(tokens, i)
        _record_import(module, tokens[i + 1:end + 1])
        return end
    if token.kind == "id" and token.value == "export":
        return _record_export(module, tokens, i)
    if token.kind == "id" and token.value in ("function", "async", "class", "const", "let", "var"):
        return _record_declaration(module, tokens, i)
    if token.kind == "id" and token.value in _COMPOUND:
        return _compound_end(tokens, i)
    if token.kind == "p" and token.value in _OPEN:
        return matching(tokens, i)
    return _statement_end(tokens, i) if token.kind != "p" else i


_COMPOUND = ("if", "for", "while", "switch", "try")


def _compound_end(tokens: list[Token], i: int) -> int:
    """The last token of an if/for/while/switch/try statement starting at `i` (its blocks and else/catch parts)."""
    j = i + 1
    if j < len(tokens) and tokens[j].value == "(":
        j = matching(tokens, j) + 1
    end = matching(tokens, j) if j < len(tokens) and tokens[j].value == "{" else _statement_end(tokens, j)
    nxt = tokens[end + 1].value if end + 1 < len(tokens) else ""
    if nxt == "else":
        return _compound_end(tokens, end + 1) if tokens[end + 2].value != "if" else _compound_end(tokens, end + 2)
    if nxt in ("catch", "finally"):
        return _compound_end(tokens, end + 1)
    return end


def _strings_from(tokens: Sequence[Token]) -> list[str]:
    return [t.value for t in tokens if t.kind == "str"]


def _record_import(module: Module, clause: Sequence[Token]) -> None:
    specs = _strings_from(clause)
    if not specs:
        return
    source = resolve_specifier(specs[-1], module.path)
    values = [t.value for t in clause]
    if "*" in values and "as" in values:
        module.imports[values[values.index("as") + 1]] = (source, "*")
        return
    if values and clause[0].kind == "id" and values[0] not in ("from",):
        module.imports[values[0]] = (source, "default")  # import name from '...'
    if "{" in values:
        for imported, local in _name_pairs(clause[values.index("{") + 1:values.index("}")]):
            module.imports[local] = (source, imported)


def _name_pairs(tokens: Sequence[Token]) -> Iterator[tuple[str, str]]:
    """``a as b, c`` -> (a, b), (c, c)."""
    group: list[str] = []
    for token in (*tokens, Token("p", ",")):
        if token.value == ",":
            if group:
                yield (group[0], group[-1])
            group = []
        elif token.kind in ("id", "str") and token.value != "as":
            group.append(token.value)


def _record_export(module: Module, tokens: list[Token], i: int) -> int:
    nxt = tokens[i + 1] if i + 1 < len(tokens) else Token("p", ";")
    if nxt.value == "*":
        end = _statement_end(tokens, i)
        clause = [t.value for t in tokens[i:end + 1]]
        source = resolve_specifier(_strings_from(tokens[i:end + 1])[-1], module.path)
        if "as" in clause and source is not None:
            module.exports[clause[clause.index("as") + 1]] = (source, "*")
        elif source is not None:
            module.star_exports.append(source)
        return end
    if nxt.value == "{":
        close = matching(tokens, i + 1)
        end = _statement_end(tokens, i)
        specs = _strings_from(tokens[close + 1:end + 1])
        source = resolve_specifier(specs[0], module.path) if specs else None
        for local, exported in _name_pairs(tokens[i + 2:close]):
            if specs and source is None:
                continue
            module.exports[exported] = (source, local) if specs else (None, local)
        return end
    if nxt.value == "default":
        end = _statement_end(tokens, i + 2)
        module.decls["default"] = (i + 2, end)
        return end
    return _record_declaration(module, tokens, i + 1, exported=True)


def _record_declaration(module: Module, tokens: list[Token], i: int, exported: bool = False) -> int:
    start = i
    if tokens[i].value == "async":
        i += 1
    kind = tokens[i].value
    if kind in ("function", "class"):
        j = i + 1 + (tokens[i + 1].value == "*")
        name = tokens[j].value
        body = matching(tokens, j + 1) + 1 if kind == "function" else j  # past the parameters: ({a, b}) has braces
        brace = next(k for k in range(body, len(tokens)) if tokens[k].value == "{")
        end = matching(tokens, brace)
        module.decls[name] = (start, end)
        if kind == "class":
            module.decls[name] = _record_methods(module, name, tokens, brace, end) or (start, brace)
        if exported:
            module.exports[name] = (None, name)
        return end
    end = _statement_end(tokens, i)
    for name, lo, hi in _declarators(tokens, i + 1, end):
        value = tokens[lo:hi + 1]
        if len(value) == 1 and value[0].kind == "str":
            module.strings[name] = value[0].value
        elif value and value[0].value == "{" and matching(tokens, lo) == hi:
            module.objects[name] = dict(_object_props(value[1:-1]))
        module.decls[name] = (lo, hi)
        if exported:
            module.exports[name] = (None, name)
    return end


def _record_methods(module: Module, cls: str, tokens: list[Token], brace: int, end: int) -> tuple[int, int] | None:
    """Record each method of the class body tokens[brace..end] as ``Class.method``; returns the constructor's
    span (what ``new Class(...)`` runs), or None."""
    constructor = None
    k = brace + 1
    while k < end:
        while tokens[k].value in ("static", "async", "get", "set", "*") and tokens[k + 1].value not in ("(", "="):
            k += 1
        if tokens[k].kind == "id" and tokens[k + 1].value == "(":
            close = matching(tokens, k + 1)
            body_end = matching(tokens, close + 1)
            module.decls[f"{cls}.{tokens[k].value}"] = (k, body_end)
            module.methods.setdefault(tokens[k].value, []).append(f"{cls}.{tokens[k].value}")
            if tokens[k].value == "constructor":
                constructor = (k, body_end)
            k = body_end + 1
        else:
            k = _statement_end(tokens, k) + 1
    return constructor


def _declarators(tokens: Sequence[Token], i: int, end: int) -> Iterator[tuple[str, int, int]]:
    """(name, value start, value end) of each ``name = value`` in a const/let/var statement."""
    j = i
    while j <= end:
        if tokens[j].kind != "id" or j + 1 > end or tokens[j + 1].value != "=":
            if tokens[j].kind == "p" and tokens[j].value in _OPEN:
                j = matching(tokens, j)
            j += 1
            continue
        name, lo = tokens[j].value, j + 2
        k = lo
        while k <= end and not (tokens[k].kind == "p" and tokens[k].value in (",", ";")):
            k = matching(tokens, k) + 1 if tokens[k].kind == "p" and tokens[k].value in _OPEN else k + 1
        yield name, lo, k - 1
        j = k + 1


def _object_props(tokens: Sequence[Token]) -> Iterator[tuple[str, str]]:
    """``{a, b: c}`` -> (a, a), (b, c) for identifier-valued properties."""
    group: list[Token] = []
    for token in (*tokens, Token("p", ",")):
        if token.value == ",":
            values = [t.value for t in group]
            if len(group) == 1 and group[0].kind == "id":
                yield values[0], values[0]
            elif len(group) == 3 and values[1] == ":" and group[2].kind == "id":
                yield values[0], values[2]
            group = []
        else:
            group.append(token)


def _find_aliases(module: Module) -> None:
    """``ops = tfOps`` (a parameter defaulting to a namespace import) makes ``ops`` an alias of ``tfOps``."""
    tokens = module.tokens
    for j in range(1, len(tokens) - 1):
        if tokens[j].value == "=" and tokens[j - 1].kind == "id" and tokens[j + 1].kind == "id":
            local, target = tokens[j - 1].value, tokens[j + 1].value
            known = module.decls.keys() | module.imports.keys()
            if target in module.imports and module.imports[target][1] == "*" and local not in known:
                module.aliases[local] = target


# ---------------------------------------------------------------------------------------------------- reachability

class KernelTracer:
    """The kernels reachable from a span of code, following references into the readable modules.

    Only declarations inside `roots` (tfjs-core's ops and the converter's operations/executor folders) are
    followed into; anything else (engine, tensor utilities) is a leaf that runs no kernel itself. With
    `complex_dtype`, the branches for complex64 tensors count too.
    """

    def __init__(self, graph: ModuleGraph, roots: Sequence[Path], *, complex_dtype: bool = False,
                 resources: Sequence[Path] = ()) -> None:
        self.graph = graph
        self.roots = tuple(r.resolve() for r in roots)
        self.complex_dtype = complex_dtype
        # Executors reach the converter's resource objects (TensorArray, TensorList, HashTable) through lookups
        # like context.getTensorList(id), so a call `.name(` counts as a call of every resource method `name`.
        self.methods: dict[str, set[tuple[Path, str]]] = {}
        for path in resources:
            for name, decls in graph.module(path).methods.items():
                self.methods.setdefault(name, set()).update((path.resolve(), d) for d in decls)
        self._deps: dict[tuple[Path, str], tuple[set[tuple[Path, str]], set[str]]] = {}

    def kernels_of_span(self, path: Path, start: int, end: int) -> set[str]:
        """Every kernel the code tokens[start..end] of module `path` may run, directly or through what it calls."""
        refs, kernels = self._scan(path, start, end, with_methods=True)
        seen: set[tuple[Path, str]] = set()
        todo = list(refs)
        while todo:
            symbol = todo.pop()
            if symbol in seen:
                continue
            seen.add(symbol)
            more, found = self._decl_deps(symbol)
            kernels |= found
            todo.extend(more - seen)
        return kernels

    def _followed(self, path: Path) -> bool:
        return any(root == path or root in path.parents for root in self.roots)

    def _decl_deps(self, symbol: tuple[Path, str]) -> tuple[set[tuple[Path, str]], set[str]]:
        if symbol not in self._deps:
            path, name = symbol
            module = self.graph.module(path)
            span = module.decls.get(name)
            inside_resource = any(path == p for _, p in self._resource_decls())
            self._deps[symbol] = self._scan(path, *span, with_methods=inside_resource) \
                if span and self._followed(path) else (set(), set())
        return self._deps[symbol]

    def _resource_decls(self) -> Iterator[tuple[str, Path]]:
        for name, decls in self.methods.items():
            for path, _ in decls:
                yield name, path

    def _scan(self, path: Path, start: int, end: int, *, with_methods: bool = False
              ) -> tuple[set[tuple[Path, str]], set[str]]:
        """References and directly run kernels of tokens[start..end], gradient-only code left out. With
        `with_methods` (an executor's case, a resource class's own code), ``.name(`` calls count as calls of the
        resource methods of that name."""
        module = self.graph.module(path)
        tokens = module.tokens
        refs: set[tuple[Path, str]] = set()
        kernels: set[str] = set()
        i = start
        while i <= end:
            skip = _skipped_end(tokens, i, self.complex_dtype)
            if skip is not None:
                i = skip + 1
                continue
            token = tokens[i]
            if token.kind == "id" and token.value == "runKernel" and i + 2 <= end and tokens[i + 1].value == "(":
                kernels |= self._kernel_name(path, tokens[i + 2])
            if with_methods and token.kind == "id" and i + 1 <= end and tokens[i + 1].value == "(" and i and \
                    tokens[i - 1].value in (".", "?.") and token.value in self.methods:
                refs |= self.methods[token.value]
            if token.kind == "id" and not _is_property(tokens, i):
                target = self.graph.resolve(path, token.value)
                j = i
                while target is not None and j + 2 <= end and tokens[j + 1].value in (".", "?.") \
                        and tokens[j + 2].kind == "id":
                    member = self.graph.member(target, tokens[j + 2].value)
                    if member is None:
                        break
                    target, j = member, j + 2
                if target is not None and target[1] != "*":
                    refs.add(target)
                i = j
            i += 1
        return refs, kernels

    def _kernel_name(self, path: Path, token: Token) -> set[str]:
        if token.kind == "str":
            return {token.value}
        if token.kind != "id":
            return set()
        target = self.graph.resolve(path, token.value)
        if target is None:
            return set()
        value = self.graph.module(target[0]).strings.get(target[1])
        return {value} if value is not None else set()


def _is_property(tokens: Sequence[Token], i: int) -> bool:
    """A member name (``x.name``) or an object key (``{name: ...}``), not a reference to a variable."""
    before = tokens[i - 1].value if i else ""
    after = tokens[i + 1].value if i + 1 < len(tokens) else ""
    return before in (".", "?.") or (after == ":" and before in ("{", ","))


def _skipped_end(tokens: Sequence[Token], i: int, complex_dtype: bool) -> int | None:
    """If tokens[i] starts code an inference of this graph does not run, the index of its last token.

    Three shapes: a ``const grad = ...`` / ``const gradFunc = ...`` function (what customGrad calls in backprop);
    an ``if (...)`` whose condition reads ``gradientDepth`` (the fused ops' unfused fallback, taken only while
    gradients are recorded); and, unless `complex_dtype`, an ``if (... === 'complex64')`` block (complex tensors
    only exist in graphs that make them, e.g. with FFT)."""
    token = tokens[i]
    if token.kind == "id" and token.value in ("const", "let") and i + 2 < len(tokens) \
            and tokens[i + 1].value in ("grad", "gradFunc") and tokens[i + 2].value == "=":
        return _statement_end(tokens, i)
    if token.kind == "id" and token.value == "if" and i + 1 < len(tokens) and tokens[i + 1].value == "(":
        close = matching(tokens, i + 1)
        condition = tokens[i + 1:close]
        gradient_only = any(t.value == "gradientDepth" for t in condition)
        complex_only = any(a.value == "===" and b.kind == "str" and b.value == "complex64"
                           for a, b in itertools.pairwise(condition))
        if (gradient_only or (complex_only and not complex_dtype)) and close + 1 < len(tokens):
            body = close + 1
            return matching(tokens, body) if tokens[body].value == "{" else _statement_end(tokens, body)
    return None


# ---------------------------------------------------------------------------------------------------- TF ops

def derive_op_kernels(node_modules: Path, *, complex_dtype: bool = False,
                      graph: ModuleGraph | None = None) -> dict[str, list[str]]:
    """TF op name -> the sorted kernels its TF.js executor may run, for every op the installed converter maps
    (with `complex_dtype`, also those only complex64 tensors reach). `graph` shares parsed modules between
    calls."""
    converter = _package_dir(node_modules, CONVERTER)
    operations = converter / "dist" / "operations"
    core = _package_dir(node_modules, CORE)
    graph = graph if graph is not None else ModuleGraph()
    resources = sorted((converter / "dist" / "executor").glob("*.js"))
    tracer = KernelTracer(graph, [core / "dist" / "ops", operations, converter / "dist" / "executor"],
                          complex_dtype=complex_dtype,
                          resources=[p for p in resources if p.stem in RESOURCE_MODULES])
    executors = _category_executors(graph, operations / "operation_executor.js")
    table: dict[str, list[str]] = {}
    for op, category in mapped_ops(graph, operations / "operation_mapper.js").items():
        executor = executors.get(category)
        span = _case_span(graph.module(executor), op) if executor is not None else None
        table[op] = sorted(tracer.kernels_of_span(executor, *span)) if span and executor else []
    return dict(sorted(table.items()))


def _package_dir(node_modules: Path, package: str) -> Path:
    folder = node_modules / package
    if not (folder / "package.json").is_file():
        from bridge.runtime.node import SETUP_HINT

        raise MissingDependencyError(f"{package} is not installed in {node_modules}", stage=STAGE, hint=SETUP_HINT)
    return folder


def mapped_ops(graph: ModuleGraph, mapper: Path) -> dict[str, str]:
    """TF op name -> category, from the op_list modules the converter's operation mapper imports."""
    found: dict[str, str] = {}
    for source, imported in graph.module(mapper).imports.values():
        if imported != "*" or source is None or source.parent.name != "op_list":
            continue
        text = _strip_source_map(source.read_text(encoding="utf-8"))
        for entry in re.finditer(r"'tfOpName':\s*'(\w+)',\s*'category':\s*'(\w+)'", text):
            found.setdefault(entry.group(1), entry.group(2))
    return found


def _switch_cases(tokens: Sequence[Token], start: int, end: int) -> Iterator[tuple[list[str], int, int]]:
    """The ``case 'A': case 'B': body`` groups of every ``switch`` in tokens[start..end] (labels, body span)."""
    i = start
    while i <= end:
        if tokens[i].value == "switch" and tokens[i].kind == "id":
            brace = matching(tokens, i + 1) + 1
            yield from _case_groups(tokens, brace, matching(tokens, brace))
            i = matching(tokens, brace)
        i += 1


def _case_groups(tokens: Sequence[Token], brace: int, close: int) -> Iterator[tuple[list[str], int, int]]:
    labels: list[str] = []
    body_start: int | None = None
    i = brace + 1
    while i < close:
        token = tokens[i]
        if token.kind == "id" and token.value in ("case", "default"):
            if body_start is not None and labels and i - 1 >= body_start:  # else: fall through to this label
                yield labels, body_start, i - 1
                labels, body_start = [], None
            if token.value == "case" and tokens[i + 1].kind == "str":
                labels.append(tokens[i + 1].value)
            i = next(k for k in range(i, close) if tokens[k].value == ":")
            body_start = i + 1
        elif token.kind == "p" and token.value in _OPEN:
            i = matching(tokens, i)
        i += 1
    if body_start is not None and labels:
        yield labels, body_start, close - 1


def _case_span(module: Module, op: str) -> tuple[int, int] | None:
    for labels, lo, hi in _switch_cases(module.tokens, 0, len(module.tokens) - 1):
        if op in labels:
            return lo, hi
    return None


def _category_executors(graph: ModuleGraph, operation_executor: Path) -> dict[str, Path]:
    """Category -> executor module, from the ``case 'category': ... ns.executeOp(...)`` branches of
    operation_executor.js."""
    module = graph.module(operation_executor)
    tokens = module.tokens
    found: dict[str, Path] = {}
    for labels, lo, hi in _switch_cases(tokens, 0, len(tokens) - 1):
        for j in range(lo, hi - 1):
            if tokens[j + 1].value == "." and tokens[j + 2].value == "executeOp":
                source = module.imports.get(tokens[j].value, (None, ""))[0]
                if source is not None:
                    found.update({label: source for label in labels})
                break
    return found
