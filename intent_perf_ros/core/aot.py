"""Kernel modules compiled ahead of time, so that a node process need not load numba at all.

numba's JIT costs every process that uses it about 125 MB of RSS whatever the kernels do (measured
on numba 0.68: 63 MB to import numba, 63 MB more to initialise LLVM at the first compiled call,
most of it libllvmlite.so's code pages). ``intent-perf build-kernels`` (run by ``make``) compiles
the explicitly typed ``@njit`` functions of each module in ``KERNEL_MODULES`` into an extension
module with ``numba.pycc``; ``load`` imports that module, which needs neither numba nor LLVM, and
falls back to the JIT module when it is missing. The extension's name carries a digest of the
kernel source and of the sources of its own package's modules that it imports (helpers and constants
compiled into it, found by reading the imports, transitively), so an edited source never runs stale
machine code: it runs the JIT until rebuilt. Like the JIT, the build targets this machine's processor
(AVX2 here: a generic x86-64 build made the GP's distance loop 25 % and its online update 35 % slower);
the name also carries a digest of the processor's model and flags, so a module copied to another
processor is not loaded there (the JIT runs instead of instructions that processor may lack).
``INTENT_PERF_KERNELS=jit`` in the environment forces the JIT (to compare, or to debug a kernel).
``numba.pycc`` is deprecated upstream, one reason numba is pinned in requirements.txt.
"""
from __future__ import annotations

import argparse
import ast
import functools
import hashlib
import importlib
import importlib.util
import os
import sys
import warnings
from pathlib import Path
from types import ModuleType

MPC_KERNELS = "intent_perf_ros.core.mpc.kernels"
BELIEF_BAYES_KERNELS = "intent_perf_ros.core.belief.bayes"
BELIEF_PARTICLE_KERNELS = "intent_perf_ros.core.belief.particles"
GP_KERNELS = "intent_perf_ros.core.gp.loops"
INPUT_KERNELS = "intent_perf_ros.core.input_kernels"  # TrackHistory and HumanSanitizer (gp_inference_node)
KERNEL_MODULES = (MPC_KERNELS, BELIEF_BAYES_KERNELS, BELIEF_PARTICLE_KERNELS, GP_KERNELS, INPUT_KERNELS)
PREFIX = "_aot_"


def _source_path(module_name: str) -> Path:
    spec = importlib.util.find_spec(module_name)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no kernel module {module_name}")
    return Path(spec.origin)


def _imported_modules(module_name: str, source: bytes) -> set[str]:
    """The modules of ``module_name``'s top-level package that its source imports from (no import runs)."""
    package = module_name.rpartition(".")[0]
    top = module_name.partition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package) \
                if node.level else node.module or ""
            # `from .x import y` names module x; `from . import y` may name a module y.
            candidates = [base] if node.module else [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        else:
            continue
        found.update(c for c in candidates if c.partition(".")[0] == top and importlib.util.find_spec(c))
    return found


def _digest(module_name: str) -> str:
    """sha256 of the module's source, then of each module of its package it imports, transitively."""
    source = _source_path(module_name).read_bytes()
    digest = hashlib.sha256(source)
    seen, todo = {module_name}, sorted(_imported_modules(module_name, source))
    deps = []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        text = _source_path(name).read_bytes()
        deps.append((name, text))
        todo.extend(sorted(_imported_modules(name, text) - seen))
    for name, text in sorted(deps):  # none (a self-contained kernel module): the digest of its source alone
        digest.update(name.encode() + b"\0" + text)
    return digest.hexdigest()[:16]


@functools.cache
def cpu_tag() -> str:
    """Digest of this processor's model name and flags (/proc/cpuinfo), or "any" where there is none to
    read: then the build targets a generic processor of the architecture."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return "any"
    model = next((line for line in lines if line.startswith("model name")), "")
    flags = next((line for line in lines if line.startswith(("flags", "Features"))), "")
    if not flags:
        return "any"
    return hashlib.sha256(f"{model}\n{flags}".encode()).hexdigest()[:8]


def compiled_name(module_name: str) -> str:
    """The extension module compiled from ``module_name``'s current sources for this processor
    (package-qualified)."""
    package, _, leaf = module_name.rpartition(".")
    return f"{package}.{PREFIX}{leaf}_{_digest(module_name)}_{cpu_tag()}"


def load(module_name: str) -> ModuleType:
    """The compiled kernels of ``module_name`` if built from its current source, else the JIT module."""
    if os.environ.get("INTENT_PERF_KERNELS", "") == "jit":
        return importlib.import_module(module_name)
    try:
        return importlib.import_module(compiled_name(module_name))
    except ImportError:
        return importlib.import_module(module_name)


def is_compiled(module: ModuleType) -> bool:
    return module.__name__.rpartition(".")[2].startswith(PREFIX)


def exported_kernels(module: ModuleType) -> dict[str, object]:
    """Every ``@njit`` function defined in ``module`` with exactly one explicit signature, by name.

    A kernel called from Python needs its signature spelled out to be compiled ahead of time; helpers
    that only other kernels call are compiled into their callers and need none."""
    from numba.core.registry import CPUDispatcher

    kernels = {}
    for name, value in vars(module).items():
        if isinstance(value, CPUDispatcher) and value.py_func.__module__ == module.__name__ \
                and not value._can_compile:  # explicit signatures given: compiled at import, frozen
            if len(value.nopython_signatures) != 1:
                raise ValueError(f"{module.__name__}.{name} has {len(value.nopython_signatures)} signatures; "
                                 "an ahead-of-time kernel needs exactly one")
            if value.targetoptions.get("fastmath"):  # pycc compiles its exports without it, silently
                raise ValueError(f"{module.__name__}.{name} uses fastmath, which numba.pycc ignores: move its "
                                 "body into a fastmath helper (lazily typed @njit) that it calls")
            kernels[name] = value
    return kernels


def build(module_name: str) -> Path:
    """Compile ``module_name``'s kernels next to its source; older builds of it are removed."""
    from numba.core.errors import NumbaPendingDeprecationWarning

    with warnings.catch_warnings():  # deprecated upstream, pinned here (module docstring)
        warnings.simplefilter("ignore", NumbaPendingDeprecationWarning)
        from numba.pycc import CC
    module = importlib.import_module(module_name)
    kernels = exported_kernels(module)
    if not kernels:
        raise ValueError(f"{module_name} has no @njit function with an explicit signature to compile")
    directory = _source_path(module_name).parent
    leaf = module_name.rpartition(".")[2]
    target = compiled_name(module_name).rpartition(".")[2]
    for old in directory.glob(f"{PREFIX}{leaf}_*"):
        old.unlink()
    cc = CC(target)
    cc.output_dir = str(directory)
    cc.verbose = False
    if cpu_tag() != "any":
        cc.target_cpu = "host"
    for name, kernel in kernels.items():
        cc.export(name, kernel.nopython_signatures[0])(kernel.py_func)
    cc.compile()
    return next(directory.glob(f"{target}.*"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="intent-perf build-kernels", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("modules", nargs="*", default=list(KERNEL_MODULES),
                        help=f"kernel modules (default: {' '.join(KERNEL_MODULES)})")
    args = parser.parse_args(argv)
    for module_name in args.modules:
        path = build(module_name)
        print(f"{module_name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
