"""How kd_ref's modules may import each other: no private helpers across modules, bench and experiments apart."""
import ast
from pathlib import Path

import kd_ref

PACKAGE = Path(kd_ref.__file__).parent


def _imports():
    """(module path relative to kd_ref, absolute module imported, names imported) for every import in kd_ref."""
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        here = ["kd_ref", *rel.parent.parts]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = here[:len(here) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                yield rel, module, [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                for a in node.names:
                    yield rel, a.name, []


def test_no_module_imports_another_modules_private_names():
    private = [(str(rel), module, name) for rel, module, names in _imports() if module.startswith("kd_ref")
               for name in names if name.startswith("_")]
    assert private == []


def test_bench_and_experiments_do_not_import_each_other():
    crossing = [(str(rel), module) for rel, module, names in _imports()
                for a, b in (("bench", "experiments"), ("experiments", "bench"))
                if rel.parts[0] == a and (module.startswith(f"kd_ref.{b}")
                                          or any(module == "kd_ref" and n == b for n in names))]
    assert crossing == []


def test_the_scan_sees_the_imports_it_checks():
    """Control: the scan resolves relative imports (a scan that found nothing would pass the tests above)."""
    found = {(str(rel), module) for rel, module, _ in _imports()}
    assert ("rbm.py", "kd_ref.nonlinearities") in found
    assert ("bench/mlp.py", "kd_ref.timing") in found
    assert ("experiments/compress.py", "kd_ref.experiments._report") in found
