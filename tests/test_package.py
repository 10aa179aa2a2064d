"""The public surface: what ``import ltfunc`` loads, and that every exported name resolves."""

from __future__ import annotations

import subprocess
import sys

import ltfunc


def test_import_ltfunc_loads_neither_studies_nor_matplotlib_nor_jax() -> None:
    code = (
        "import sys, ltfunc\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'jax', 'optax') "
        "or m.startswith(('ltfunc.studies', 'ltfunc.plot', 'ltfunc.interop')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_lazy_submodules_load_on_first_use() -> None:
    code = (
        "import sys, ltfunc\n"
        "assert 'ltfunc.plot' not in sys.modules\n"
        "assert callable(ltfunc.plot.plot_runs) and 'ltfunc.plot' in sys.modules\n"
        "assert callable(ltfunc.studies.run_study)\n"
        "assert ltfunc.interop.torch_prune.from_pruned\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_every_exported_name_resolves_and_unknown_names_raise() -> None:
    for name in ltfunc.__all__:
        assert getattr(ltfunc, name) is not None, name
    assert len(set(ltfunc.__all__)) == len(ltfunc.__all__)
    try:
        ltfunc.no_such_thing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:  # pragma: no cover
        raise AssertionError("ltfunc.no_such_thing did not raise AttributeError")
